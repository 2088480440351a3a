//! Folding a series: consecutive releases whose every case behaved the same (same
//! verdicts, same stable observations) become one column named by the first and
//! last of them, so twenty releases read as the few places where something changed.
//! Both renderers read the folded result set like any other.

use std::collections::BTreeMap;

use crate::case::Case;
use crate::judge::Verdict;
use crate::resultset::diff::Volatile;
use crate::resultset::results::KernelResult;

/// `kernels` in version order, with runs of identical neighbours folded into the
/// first of each run, renamed `first..last` (its package version likewise).
/// Kernels that could not run never fold, nor do releases of two series (6.1, 6.12).
pub fn fold(mut kernels: Vec<KernelResult>, cases: &[Case]) -> Vec<KernelResult> {
    let volatile = &Volatile::from_cases(cases);
    let behaviour = |k: &KernelResult| behaviour(k, volatile, cases);
    kernels.sort_by_key(|k| super::kernel_order(&k.kernel));
    let mut out: Vec<(KernelResult, Option<KernelResult>)> = Vec::new();
    for k in kernels {
        let joins = out.last().is_some_and(|(first, _)| {
            first.could_not_run.is_none()
                && k.could_not_run.is_none()
                && series(&first.kernel) == series(&k.kernel)
                && behaviour(first) == behaviour(&k)
        });
        if joins {
            out.last_mut().expect("checked").1 = Some(k);
        } else {
            out.push((k, None));
        }
    }
    out.into_iter()
        .map(|(mut first, last)| {
            if let Some(last) = last {
                first.kernel = format!("{}..{}", first.kernel, last.kernel);
                if let (Some(a), Some(b)) = (&first.package_version, &last.package_version) {
                    first.package_version = Some(format!("{a}..{b}"));
                }
            }
            first
        })
        .collect()
}

/// `6.1.176` -> `6.1`; other ids are their own series.
fn series(id: &str) -> &str {
    match id.match_indices('.').nth(1) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

/// Per case: the verdict's kind and the observations that are not volatile.
fn behaviour(k: &KernelResult, volatile: &Volatile, cases: &[Case]) -> BTreeMap<String, String> {
    k.cases
        .iter()
        .map(|c| {
            let kind = match &c.verdict {
                Verdict::Pass { .. } => "pass",
                Verdict::Fail { .. } => "fail",
                Verdict::Skip { .. } => "skip",
                Verdict::Error { .. } => "error",
            };
            let obs: BTreeMap<&String, &serde_json::Value> = c
                .observations
                .iter()
                .filter(|(key, _)| !volatile.is_volatile(&c.case, key))
                .collect();
            let text = serde_json::to_string(&obs).unwrap_or_default();
            let fix = cases
                .iter()
                .find(|x| x.id == c.case)
                .and_then(|x| x.detects.as_ref())
                .map_or("", |f| crate::resultset::diff::fix_state(f, Some(c)));
            (c.case.clone(), format!("{kind} {fix} {text}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{case, fail, kernel, pass};
    use super::*;
    use serde_json::json;

    #[test]
    fn folds_identical_neighbours_only() {
        let same = || vec![case("c", pass(), json!({"bind.a": "ok", "socket.a": 3}))];
        let mut noisy = same();
        noisy[0].observations.insert("socket.a".into(), json!(7));
        let set = vec![
            kernel("6.1.192-3", same()),
            kernel(
                "6.1.170-3",
                vec![case("c", fail(), json!({"bind.a": "EADDRINUSE"}))],
            ),
            kernel("6.1.176", same()),
            kernel("6.1.190", noisy),
            kernel("6.1.192", same()),
            kernel("6.12.43", same()),
        ];
        let cases = [crate::case::load_str(
            "c",
            std::path::Path::new("cases/c.yaml"),
            "summary: t\nvolatile: [socket.]\nsteps:\n  - socket: a\n",
        )
        .unwrap()];
        let folded = fold(set.clone(), &cases);
        let names: Vec<&str> = folded.iter().map(|k| k.kernel.as_str()).collect();
        assert_eq!(names, ["6.1.170-3", "6.1.176..6.1.192-3", "6.12.43"]);
        // Without the volatile prefix, socket.a differs and 6.1.190 stands apart.
        let folded = fold(set, &[]);
        let names: Vec<&str> = folded.iter().map(|k| k.kernel.as_str()).collect();
        assert_eq!(
            names,
            [
                "6.1.170-3",
                "6.1.176",
                "6.1.190",
                "6.1.192..6.1.192-3",
                "6.12.43"
            ]
        );
    }
}
