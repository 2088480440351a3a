//! Joining result sets from shards into one: per kernel, the union of the cases.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::resultset::results::KernelResult;

/// Merges sets (each one kernel result per kernel) into one set, by kernel id. The
/// same kernel in several sets must be the same kernel (release, package); the same
/// case twice is an error unless both results are identical.
pub fn merge(sets: Vec<Vec<KernelResult>>) -> Result<Vec<KernelResult>> {
    let mut out: BTreeMap<String, KernelResult> = BTreeMap::new();
    for result in sets.into_iter().flatten() {
        let Some(into) = out.get_mut(&result.kernel) else {
            out.insert(result.kernel.clone(), result);
            continue;
        };
        if into.release != result.release || into.package_version != result.package_version {
            bail!(
                "kernel {}: the shards ran different kernels ({} and {})",
                result.kernel,
                into.release.as_deref().unwrap_or("release unknown"),
                result.release.as_deref().unwrap_or("release unknown")
            );
        }
        for case in result.cases {
            match into.cases.iter().find(|c| c.case == case.case) {
                Some(same) if *same == case => {}
                Some(_) => bail!(
                    "kernel {}: case {} is in several shards with different results",
                    result.kernel,
                    case.case
                ),
                None => into.cases.push(case),
            }
        }
        // A shard that could not run keeps saying so in the merged result.
        into.could_not_run = match (into.could_not_run.take(), result.could_not_run) {
            (Some(a), Some(b)) if a != b => Some(format!("{a}\n{b}")),
            (a, b) => a.or(b),
        };
        into.boot = into.boot.take().or(result.boot);
        into.finished_at = into.finished_at.max(result.finished_at);
    }
    let mut merged: Vec<KernelResult> = out.into_values().collect();
    for k in &mut merged {
        k.cases.sort_by(|a, b| a.case.cmp(&b.case));
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Verdict;
    use crate::observe::Outcome;
    use crate::resultset::results::CaseResult;

    fn kernel(id: &str, release: &str, cases: &[(&str, u64)]) -> KernelResult {
        KernelResult {
            kernel: id.into(),
            release: Some(release.into()),
            uname_version: None,
            package_version: None,
            built: None,
            could_not_run: None,
            boot: None,
            cases: cases
                .iter()
                .map(|(c, ms)| CaseResult {
                    case: c.to_string(),
                    file: "cases/x.yaml".into(),
                    outcome: Outcome::Ran,
                    observations: Default::default(),
                    elapsed_ms: *ms,
                    verdict: Verdict::Pass { checked: 0 },
                })
                .collect(),
            finished_at: 5,
        }
    }

    #[test]
    fn unions_cases_per_kernel() {
        let merged = merge(vec![
            vec![
                kernel("6.1", "r", &[("b", 1)]),
                kernel("5.10", "q", &[("a", 1)]),
            ],
            vec![kernel("6.1", "r", &[("a", 2), ("b", 1)])],
        ])
        .unwrap();
        let shape: Vec<(&str, Vec<&str>)> = merged
            .iter()
            .map(|k| {
                (
                    k.kernel.as_str(),
                    k.cases.iter().map(|c| c.case.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(shape, vec![("5.10", vec!["a"]), ("6.1", vec!["a", "b"])]);
    }

    #[test]
    fn conflicts_are_errors() {
        let twice = merge(vec![
            vec![kernel("6.1", "r", &[("a", 1)])],
            vec![kernel("6.1", "r", &[("a", 2)])],
        ]);
        assert!(twice
            .unwrap_err()
            .to_string()
            .contains("case a is in several shards"));
        let other = merge(vec![
            vec![kernel("host", "r1", &[])],
            vec![kernel("host", "r2", &[])],
        ]);
        assert!(other.unwrap_err().to_string().contains("different kernels"));
    }
}
