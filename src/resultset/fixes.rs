//! The fixes view: for each case that detects a kernel fix, whether each kernel of a
//! result set has it: the case's `detects` check holds (present) or not (absent), or
//! the case did not run (unknown).

use std::fmt::Write as _;

use crate::case::Case;
use crate::resultset::diff::fix_state;
use crate::resultset::results::KernelResult;

/// One row per case with `detects`, one column per kernel; `-` where the case did not
/// run on that kernel.
pub fn table(cases: &[Case], set: &[KernelResult]) -> String {
    let rows: Vec<(&Case, &crate::case::Fix, String)> = cases
        .iter()
        .filter_map(|c| {
            c.detects
                .as_ref()
                .map(|f| (c, f, format!("{} ({})", f.commit, f.version)))
        })
        .collect();
    if rows.is_empty() {
        return "no case names a fix it detects (`detects:` in the case file)\n".to_string();
    }
    let fix_w = rows
        .iter()
        .map(|(_, _, f)| f.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let case_w = rows
        .iter()
        .map(|(c, _, _)| c.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:<fix_w$}  {:<case_w$}", "fix", "case");
    for k in set {
        let _ = write!(out, "  {:>7}", k.kernel);
    }
    out.push('\n');
    for (case, fix, title) in rows {
        let _ = write!(out, "{title:<fix_w$}  {:<case_w$}", case.id);
        for k in set {
            let cell = fix_state(fix, k.cases.iter().find(|r| r.case == case.id));
            let _ = write!(out, "  {cell:>7}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case;
    use crate::judge::Verdict;
    use crate::observe::Outcome;
    use crate::resultset::results::CaseResult;
    use std::path::Path;

    fn case(id: &str, detects: bool) -> Case {
        let fix = if detects {
            "detects:\n  commit: \"tcp: fix\"\n  version: \"5.14\"\n  obs: socket.a\n  eq: ok\n"
        } else {
            ""
        };
        let text = format!("summary: t\n{fix}steps:\n  - socket: a\n");
        case::load_str(id, Path::new("cases/x.yaml"), &text).unwrap()
    }

    /// Each case result: its outcome and the `socket.a` observation the fix is read from.
    fn kernel(id: &str, runs: &[(&str, Outcome, &str)]) -> KernelResult {
        KernelResult {
            kernel: id.into(),
            release: None,
            uname_version: None,
            package_version: None,
            built: None,
            could_not_run: None,
            boot: None,
            cases: runs
                .iter()
                .map(|(c, outcome, obs)| CaseResult {
                    case: c.to_string(),
                    file: "cases/x.yaml".into(),
                    outcome: outcome.clone(),
                    observations: [("socket.a".to_string(), serde_json::json!(obs))]
                        .into_iter()
                        .collect(),
                    elapsed_ms: 0,
                    // The verdict does not decide the fix: the observation does.
                    verdict: Verdict::Pass { checked: 0 },
                })
                .collect(),
            finished_at: 0,
        }
    }

    #[test]
    fn states_per_kernel() {
        let cases = [case("m", true), case("plain", false)];
        let set = [
            kernel("5.10", &[("m", Outcome::Ran, "EINVAL")]),
            kernel("6.1", &[("m", Outcome::Ran, "ok")]),
            kernel(
                "6.12",
                &[("m", Outcome::Skipped { reason: "r".into() }, "ok")],
            ),
            kernel("7.2", &[]),
        ];
        let text = table(&cases, &set);
        let row = text
            .lines()
            .find(|l| l.starts_with("tcp: fix (5.14)"))
            .expect(&text);
        let cells: Vec<&str> = row.split_whitespace().rev().take(4).collect();
        assert_eq!(cells, vec!["-", "unknown", "present", "absent"], "{text}");
        assert!(!text.contains("plain"), "{text}");
    }
}
