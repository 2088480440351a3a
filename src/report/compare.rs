//! Which observations of a case differ between kernels, which kernels stand out, and
//! the compact `reset=14` form a matrix cell shows. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::observe::Outcome;
use crate::resultset::results::CaseResult;
use crate::value;

/// One observation whose value is not the same on every compared kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub obs: String,
    /// The shortest dotted suffix that still tells it apart (`reset` for `account.c.reset`).
    pub short: String,
    /// Per kernel; None where it was not observed (or the case was not compared there).
    pub values: Vec<Option<Value>>,
    /// Per kernel: the value is not the one most compared kernels share.
    pub odd: Vec<bool>,
    /// The case says the value varies from run to run (a bound, a relation, a
    /// fairness): listed, but never what makes a kernel stand out.
    pub volatile: bool,
    distinct: usize,
}

/// One case across every compared kernel of a report (not `diff::CaseDiff`, which
/// is one case between two result sets).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseAcrossKernels {
    /// Per kernel: the case ran to the end there, so its observations count.
    pub compared: Vec<bool>,
    /// Stable before volatile, clean splits (fewest distinct values) first, then by name.
    pub differences: Vec<Difference>,
}

impl CaseAcrossKernels {
    /// Whether kernel `k`'s observations differ from what most kernels saw.
    pub fn odd(&self, k: usize) -> bool {
        self.differences.iter().any(|d| !d.volatile && d.odd[k])
    }

    /// Up to `limit` differing stable observations of kernel `k` as `short=value`, and how many
    /// more there are. An observation that moves in lockstep with an earlier one on
    /// every kernel (`accept.a` and `account.c.accepted.a`) waits until the others are shown.
    pub fn key_observations(&self, k: usize, limit: usize) -> (Vec<String>, usize) {
        if !self.compared.get(k).copied().unwrap_or(false) {
            return (Vec::new(), 0);
        }
        let mut seen: BTreeSet<Vec<String>> = BTreeSet::new();
        let (mut first, mut lockstep) = (Vec::new(), Vec::new());
        for d in self.differences.iter().filter(|d| !d.volatile) {
            let pattern: Vec<String> = d
                .values
                .iter()
                .map(|v| value::group_key(v.as_ref()))
                .collect();
            if seen.insert(pattern) {
                first.push(d)
            } else {
                lockstep.push(d)
            }
        }
        let all: Vec<&Difference> = first.into_iter().chain(lockstep).collect();
        let shown = all
            .iter()
            .take(limit)
            .map(|d| format!("{}={}", d.short, display(d.values[k].as_ref())))
            .collect();
        (shown, all.len().saturating_sub(limit))
    }
}

/// An observation's value as shown in reports; `-` when it was not observed.
pub fn display(v: Option<&Value>) -> String {
    v.map(value::show).unwrap_or_else(|| "-".into())
}

/// Compares the runs of one case, one per kernel (None: the kernel did not run it).
/// Only runs that ran to the end are compared: a skip or an error has no behaviour.
pub fn compare(
    runs: &[Option<&CaseResult>],
    is_volatile: impl Fn(&str) -> bool,
) -> CaseAcrossKernels {
    let compared: Vec<bool> = runs
        .iter()
        .map(|r| r.is_some_and(|r| r.outcome == Outcome::Ran))
        .collect();
    let ran: Vec<&CaseResult> = runs
        .iter()
        .zip(&compared)
        .filter(|(_, c)| **c)
        .filter_map(|(r, _)| *r)
        .collect();
    if ran.len() < 2 {
        return CaseAcrossKernels {
            compared,
            differences: Vec::new(),
        };
    }
    let keys: BTreeSet<&String> = ran.iter().flat_map(|r| r.observations.keys()).collect();
    let mut differences = Vec::new();
    for key in keys {
        let values: Vec<Option<Value>> = runs
            .iter()
            .zip(&compared)
            .map(|(r, c)| {
                if *c {
                    r.and_then(|r| r.observations.get(key).cloned())
                } else {
                    None
                }
            })
            .collect();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (v, _) in values.iter().zip(&compared).filter(|(_, c)| **c) {
            *counts.entry(value::group_key(v.as_ref())).or_default() += 1;
        }
        if counts.len() < 2 {
            continue;
        }
        let top = counts.values().copied().max().unwrap_or(0);
        // A value shared by more kernels than any other is "the usual"; on a tie none is.
        let usual = (counts.values().filter(|n| **n == top).count() == 1)
            .then(|| {
                counts
                    .iter()
                    .find(|(_, n)| **n == top)
                    .map(|(v, _)| v.clone())
            })
            .flatten();
        let odd = values
            .iter()
            .zip(&compared)
            .map(|(v, c)| *c && usual.as_deref() != Some(value::group_key(v.as_ref()).as_str()))
            .collect();
        let volatile = is_volatile(key);
        differences.push(Difference {
            obs: key.clone(),
            short: String::new(),
            values,
            odd,
            volatile,
            distinct: counts.len(),
        });
    }
    // `accept.a` moving in lockstep with a bounded `account.c.accepted.a` is the same
    // run-to-run number under another name.
    let pattern = |d: &Difference| {
        d.values
            .iter()
            .map(|v| value::group_key(v.as_ref()))
            .collect::<Vec<_>>()
    };
    let volatile_patterns: BTreeSet<Vec<String>> = differences
        .iter()
        .filter(|d| d.volatile)
        .map(pattern)
        .collect();
    for d in &mut differences {
        if volatile_patterns.contains(&pattern(d)) {
            d.volatile = true;
        }
    }
    let names: Vec<String> = differences.iter().map(|d| d.obs.clone()).collect();
    for (d, short) in differences.iter_mut().zip(short_keys(&names)) {
        d.short = short;
    }
    differences
        .sort_by(|a, b| (a.volatile, a.distinct, &a.obs).cmp(&(b.volatile, b.distinct, &b.obs)));
    CaseAcrossKernels {
        compared,
        differences,
    }
}

/// For each key, its shortest dotted suffix that no other key of `keys` ends with.
pub fn short_keys(keys: &[String]) -> Vec<String> {
    let ends_with = |key: &str, suffix: &str| key == suffix || key.ends_with(&format!(".{suffix}"));
    keys.iter()
        .map(|key| {
            let parts: Vec<&str> = key.split('.').collect();
            (1..=parts.len())
                .map(|n| parts[parts.len() - n..].join("."))
                .find(|suffix| keys.iter().filter(|other| ends_with(other, suffix)).count() == 1)
                .unwrap_or_else(|| key.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::report::testdata::{case, pass};

    fn diff_of(obs: &[serde_json::Value]) -> CaseAcrossKernels {
        let runs: Vec<CaseResult> = obs.iter().map(|o| case("c", pass(), o.clone())).collect();
        compare(&runs.iter().map(Some).collect::<Vec<_>>(), |key| {
            key.ends_with(".fairness")
        })
    }

    #[test]
    fn short_keys_stay_unambiguous() {
        let keys: Vec<String> = [
            "account.c.reset",
            "accept.a",
            "account.c.accepted.a",
            "tally.d.u1",
        ]
        .map(String::from)
        .into();
        assert_eq!(short_keys(&keys), ["reset", "accept.a", "accepted.a", "u1"]);
        let same_tail: Vec<String> = ["x.a", "a"].map(String::from).into();
        assert_eq!(
            short_keys(&same_tail),
            ["x.a", "a"],
            "a key that is another's suffix keeps its full name"
        );
    }

    #[test]
    fn only_differing_observations_are_listed() {
        let d = diff_of(&[
            json!({"bind.a": "ok", "reset": 14}),
            json!({"bind.a": "ok", "reset": 0}),
            json!({"bind.a": "ok", "reset": 0.0}),
        ]);
        assert_eq!(d.differences.len(), 1);
        assert_eq!(d.differences[0].obs, "reset");
        assert_eq!(
            d.differences[0].odd,
            [true, false, false],
            "0 and 0.0 are the same value"
        );
        assert!(d.odd(0) && !d.odd(1));
        assert_eq!(d.key_observations(0, 3), (vec!["reset=14".to_string()], 0));
    }

    #[test]
    fn a_missing_observation_is_a_difference() {
        let d = diff_of(&[json!({"bind.a": "ok"}), json!({})]);
        assert_eq!(d.differences[0].values, [Some(json!("ok")), None]);
        assert_eq!(d.key_observations(1, 3).0, ["a=-"]);
        assert!(
            d.odd(0) && d.odd(1),
            "two kernels, two values: neither is the usual one"
        );
    }

    #[test]
    fn skipped_and_missing_runs_are_not_compared() {
        let mut skipped = case("c", pass(), json!({}));
        skipped.outcome = Outcome::Skipped {
            reason: "needs IPv6".into(),
        };
        let a = case("c", pass(), json!({"x": 1}));
        let b = case("c", pass(), json!({"x": 1}));
        let d = compare(&[Some(&a), Some(&skipped), None, Some(&b)], |_| false);
        assert_eq!(d.compared, [true, false, false, true]);
        assert!(d.differences.is_empty());
        assert!(
            compare(&[Some(&a), Some(&skipped)], |_| false)
                .differences
                .is_empty(),
            "one compared run has nothing to differ from"
        );
    }

    #[test]
    fn cells_show_clean_splits_first_without_lockstep_duplicates() {
        let d = diff_of(&[
            json!({"accept.a": 10, "account.c.accepted.a": 10, "account.c.reset": 14, "noise": 1}),
            json!({"accept.a": 24, "account.c.accepted.a": 24, "account.c.reset": 0, "noise": 2}),
            json!({"accept.a": 24, "account.c.accepted.a": 24, "account.c.reset": 0, "noise": 3}),
        ]);
        let (shown, more) = d.key_observations(0, 3);
        assert_eq!(
            shown,
            ["accept.a=10", "reset=14", "noise=1"],
            "lockstep accepted.a waits; noise has more values"
        );
        assert_eq!(more, 1);
        assert_eq!(d.key_observations(0, 4).0[3], "accepted.a=10");
        assert!(d.odd(2), "noise makes every kernel differ");
    }

    #[test]
    fn volatile_observations_are_listed_but_single_no_kernel_out() {
        let d = diff_of(&[
            json!({"c.fairness": 0.9, "bind.b": "ok"}),
            json!({"c.fairness": 1.0, "bind.b": "ok"}),
        ]);
        assert_eq!(d.differences.len(), 1);
        assert!(d.differences[0].volatile);
        assert!(!d.odd(0) && !d.odd(1));
        assert_eq!(d.key_observations(0, 3), (vec![], 0));
        let d = diff_of(&[
            json!({"c.fairness": 0.9, "z": 1}),
            json!({"c.fairness": 1.0, "z": 2}),
        ]);
        let order: Vec<&str> = d.differences.iter().map(|d| d.obs.as_str()).collect();
        assert_eq!(order, ["z", "c.fairness"], "stable differences come first");
        let d = diff_of(&[
            json!({"c.fairness": 0.9, "accepted": 3}),
            json!({"c.fairness": 1.0, "accepted": 4}),
        ]);
        assert!(
            !d.differences
                .iter()
                .any(|d| d.obs == "accepted" && d.volatile),
            "different patterns stay apart"
        );
        let d = diff_of(&[
            json!({"c.fairness": 0.9, "copy": 0.9}),
            json!({"c.fairness": 1.0, "copy": 1}),
        ]);
        assert!(
            d.differences.iter().all(|d| d.volatile),
            "lockstep with a volatile observation: {d:?}"
        );
    }
}
