//! Comparing result sets: per case, the observations that changed, appeared or
//! vanished, the verdicts that flipped, the cases added or removed; and which of
//! those differences are regressions. Pure: no files, no kernels.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::Value;

use crate::case::{Case, Fix, Matcher};
use crate::judge::fix_presence;
use crate::resultset::results::{CaseResult, KernelResult};
use crate::value;

/// Observation keys whose values legitimately vary from run to run (hash placement).
/// They are shown only on request and are never a regression.
#[derive(Debug, Default, Clone)]
pub struct Volatile {
    keys: BTreeMap<String, BTreeSet<String>>,
    /// The fix each case detects, to say what a change means for it.
    fixes: BTreeMap<String, Fix>,
}

impl Volatile {
    /// A key is volatile where its case bounds it with `min`/`max` or relates it with
    /// `same_as`: the case author said the number itself is not the behaviour.
    pub fn from_cases(cases: &[Case]) -> Volatile {
        let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for case in cases {
            let set = keys.entry(case.id.clone()).or_default();
            // The case's own `volatile:` prefixes, kept with a trailing `*`.
            set.extend(case.volatile.iter().map(|p| format!("{p}*")));
            for e in &case.expect {
                match &e.matcher {
                    Matcher::Range { .. } => {
                        set.insert(e.obs.clone());
                    }
                    // Both ends of a relation vary together (queue.b and the resets it causes).
                    Matcher::SameAs(other) => {
                        set.insert(e.obs.clone());
                        set.insert(other.clone());
                    }
                    Matcher::Eq(_) | Matcher::OneOf(_) => {}
                }
            }
        }
        let fixes = cases
            .iter()
            .filter_map(|c| c.detects.clone().map(|f| (c.id.clone(), f)))
            .collect();
        Volatile { keys, fixes }
    }

    pub fn is_volatile(&self, case: &str, key: &str) -> bool {
        key.ends_with(".fairness")
            || crate::timing::is_timing(key)
            || self.keys.get(case).is_some_and(|keys| {
                keys.contains(key)
                    || keys
                        .iter()
                        .any(|k| k.strip_suffix('*').is_some_and(|p| key.starts_with(p)))
            })
    }
}

/// One observation that differs; `None` on a side where it was not observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ObsChange {
    pub key: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
    pub volatile: bool,
}

/// Everything that differs about one case present on both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseDiff {
    pub case: String,
    /// Verdict labels (`pass` -> `FAIL`) when they differ.
    pub verdict: Option<(&'static str, &'static str)>,
    /// pass/skip became fail/error.
    pub worse: bool,
    pub changes: Vec<ObsChange>,
    /// The detected fix's state on each side (`absent` -> `present`), when it differs.
    pub fix: Option<(&'static str, &'static str)>,
}

impl CaseDiff {
    fn is_empty(&self) -> bool {
        self.verdict.is_none() && self.changes.is_empty() && self.fix.is_none()
    }
}

/// One kernel's result against another's (the same kernel id, or two named files).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelDiff {
    pub a: String,
    pub b: String,
    pub release_a: Option<String>,
    pub release_b: Option<String>,
    /// Cases only in B.
    pub added: Vec<String>,
    /// Cases only in A.
    pub removed: Vec<String>,
    /// Cases on both sides that differ in any way, by case id.
    pub cases: Vec<CaseDiff>,
}

/// Two result sets compared kernel by kernel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SetDiff {
    pub kernels: Vec<KernelDiff>,
    /// Kernels with results only in A / only in B.
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
}

pub fn diff_kernels(a: &KernelResult, b: &KernelResult, volatile: &Volatile) -> KernelDiff {
    let by_id = |k: &'_ KernelResult| -> BTreeMap<String, CaseResult> {
        k.cases
            .iter()
            .map(|c| (c.case.clone(), c.clone()))
            .collect()
    };
    let (cases_a, cases_b) = (by_id(a), by_id(b));
    let added = cases_b
        .keys()
        .filter(|id| !cases_a.contains_key(*id))
        .cloned()
        .collect();
    let removed = cases_a
        .keys()
        .filter(|id| !cases_b.contains_key(*id))
        .cloned()
        .collect();
    let cases = cases_a
        .iter()
        .filter_map(|(id, ca)| cases_b.get(id).map(|cb| diff_case(ca, cb, volatile)))
        .filter(|d| !d.is_empty())
        .collect();
    KernelDiff {
        a: a.kernel.clone(),
        b: b.kernel.clone(),
        release_a: a.release.clone(),
        release_b: b.release.clone(),
        added,
        removed,
        cases,
    }
}

fn diff_case(a: &CaseResult, b: &CaseResult, volatile: &Volatile) -> CaseDiff {
    let keys: BTreeSet<&String> = a.observations.keys().chain(b.observations.keys()).collect();
    let changes = keys
        .into_iter()
        .filter_map(|key| {
            let (va, vb) = (a.observations.get(key), b.observations.get(key));
            let same = matches!((va, vb), (Some(x), Some(y)) if value::same(x, y));
            (!same).then(|| ObsChange {
                key: key.clone(),
                a: va.cloned(),
                b: vb.cloned(),
                volatile: volatile.is_volatile(&a.case, key),
            })
        })
        .collect();
    let (la, lb) = (a.verdict.label(), b.verdict.label());
    let fix = volatile.fixes.get(&a.case).and_then(|f| {
        let (fa, fb) = (
            fix_presence(f, &a.outcome, &a.observations),
            fix_presence(f, &b.outcome, &b.observations),
        );
        (fa != fb).then_some((fa, fb))
    });
    CaseDiff {
        case: a.case.clone(),
        verdict: (la != lb).then_some((la, lb)),
        worse: a.verdict.is_ok() && !b.verdict.is_ok(),
        changes,
        fix,
    }
}

/// Pairs kernels by id; kernels present on one side only are listed as such.
pub fn diff_sets(a: &[KernelResult], b: &[KernelResult], volatile: &Volatile) -> SetDiff {
    let mut out = SetDiff::default();
    for ka in a {
        match b.iter().find(|kb| kb.kernel == ka.kernel) {
            Some(kb) => out.kernels.push(diff_kernels(ka, kb, volatile)),
            None => out.only_a.push(ka.kernel.clone()),
        }
    }
    out.only_b = b
        .iter()
        .filter(|kb| !a.iter().any(|ka| ka.kernel == kb.kernel))
        .map(|k| k.kernel.clone())
        .collect();
    out
}

impl SetDiff {
    /// What makes the gate fail, one line each: a verdict that got worse, a
    /// non-volatile observation that changed, appeared or vanished, a case or a whole
    /// kernel that vanished. A is the baseline.
    pub fn regressions(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .only_a
            .iter()
            .map(|k| format!("{k}: no current results for this kernel"))
            .collect();
        for k in &self.kernels {
            for case in &k.removed {
                out.push(format!("{}: {case}: case vanished", k.b));
            }
            for c in &k.cases {
                if let (true, Some((va, vb))) = (c.worse, c.verdict) {
                    out.push(format!("{}: {}: verdict {va} -> {vb}", k.b, c.case));
                }
                for ch in c.changes.iter().filter(|ch| !ch.volatile) {
                    out.push(format!("{}: {}: {}", k.b, c.case, show_change(ch)));
                }
            }
        }
        out
    }

    /// The readable report. Volatile changes are counted, and listed only with `all`;
    /// verdict flips of cases that detect a fix also say what that means for the fix.
    pub fn render(&self, all: bool, fixes: &BTreeMap<String, Fix>) -> String {
        let mut out = String::new();
        for k in &self.kernels {
            let mut hidden = 0;
            let mut timings = false;
            let show = |kernel: &str, release: &Option<String>| match release {
                Some(r) => format!("{kernel} ({r})"),
                None => format!("{kernel} (release unknown)"),
            };
            let _ = writeln!(
                out,
                "== {} -> {}",
                show(&k.a, &k.release_a),
                show(&k.b, &k.release_b)
            );
            let mut any = false;
            for c in &k.cases {
                // Timings are volatile, but how they compare is the point: always shown.
                let shown: Vec<&ObsChange> = c
                    .changes
                    .iter()
                    .filter(|ch| all || !ch.volatile || crate::timing::is_timing(&ch.key))
                    .collect();
                hidden += c.changes.len() - shown.len();
                if c.verdict.is_none() && c.fix.is_none() && shown.is_empty() {
                    continue;
                }
                any = true;
                let _ = writeln!(out, "{}", c.case);
                if let Some((va, vb)) = c.verdict {
                    let _ = writeln!(out, "  verdict: {va} -> {vb}");
                }
                if let (Some((fa, fb)), Some(f)) = (c.fix, fixes.get(&c.case)) {
                    let _ = writeln!(out, "  fix \"{}\" ({}): {fa} -> {fb}", f.commit, f.version);
                }
                for ch in shown {
                    let timing = match (&ch.a, &ch.b) {
                        (Some(a), Some(b)) if crate::timing::is_timing(&ch.key) => {
                            crate::timing::change(a, b, &k.b)
                        }
                        _ => None,
                    };
                    match timing {
                        Some(ratio) => {
                            timings = true;
                            let _ = writeln!(out, "  {} µs: {ratio}", show_change(ch));
                        }
                        None => {
                            let mark = if ch.volatile { "   (volatile)" } else { "" };
                            let _ = writeln!(out, "  {}{mark}", show_change(ch));
                        }
                    }
                }
            }
            if !k.added.is_empty() {
                any = true;
                let _ = writeln!(out, "cases only in {}: {}", k.b, k.added.join(", "));
            }
            if !k.removed.is_empty() {
                any = true;
                let _ = writeln!(out, "cases only in {}: {}", k.a, k.removed.join(", "));
            }
            if !any {
                let _ = writeln!(out, "no differences");
            }
            if timings {
                let _ = writeln!(out, "({})", crate::timing::TCG_NOTE);
            }
            if hidden > 0 {
                let _ = writeln!(
                    out,
                    "({hidden} volatile observation change(s) not shown; --all shows them)"
                );
            }
            out.push('\n');
        }
        if !self.only_a.is_empty() {
            let _ = writeln!(out, "kernels only in A: {}", self.only_a.join(", "));
        }
        if !self.only_b.is_empty() {
            let _ = writeln!(out, "kernels only in B: {}", self.only_b.join(", "));
        }
        out
    }
}

pub fn show_change(ch: &ObsChange) -> String {
    let side = |v: &Option<Value>| {
        v.as_ref()
            .map(value::show)
            .unwrap_or_else(|| "(absent)".into())
    };
    format!("{}: {} -> {}", ch.key, side(&ch.a), side(&ch.b))
}

/// A fix's state in one case result ("-" where the case did not run at all).
pub fn fix_state(fix: &Fix, run: Option<&CaseResult>) -> &'static str {
    run.map_or("-", |r| fix_presence(fix, &r.outcome, &r.observations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case;
    use crate::judge::Verdict;
    use crate::observe::Outcome;
    use serde_json::json;
    use std::path::Path;

    fn result(kernel: &str, cases: &[(&str, Verdict, Value)]) -> KernelResult {
        KernelResult {
            kernel: kernel.into(),
            release: Some(format!("{kernel}.0-test")),
            uname_version: None,
            package_version: None,
            built: None,
            could_not_run: None,
            boot: None,
            cases: cases
                .iter()
                .map(|(id, verdict, obs)| CaseResult {
                    case: id.to_string(),
                    file: format!("cases/{id}.yaml").into(),
                    outcome: Outcome::Ran,
                    observations: obs.as_object().unwrap().clone().into_iter().collect(),
                    elapsed_ms: 1,
                    verdict: verdict.clone(),
                })
                .collect(),
            finished_at: 0,
        }
    }

    fn pass() -> Verdict {
        Verdict::Pass { checked: 1 }
    }

    fn fail() -> Verdict {
        Verdict::Fail { mismatches: vec![] }
    }

    fn volatile_case() -> Volatile {
        let text = "summary: t\nsteps:\n  - socket: a\n  - bind: a\n    addr: 127.0.0.1\n  - listen: a\n  - queue: a\n  - clients: c\n    count: 4\n    to: a\n  - account: c\nexpect:\n  - obs: account.c.accepted.a\n    min: 1\n  - obs: account.c.reset\n    same_as: queue.a\n";
        Volatile::from_cases(&[case::load_str("r/t", Path::new("cases/r/t.yaml"), text).unwrap()])
    }

    #[test]
    fn volatile_keys_come_from_ranges_relations_and_fairness() {
        let v = volatile_case();
        assert!(v.is_volatile("r/t", "account.c.accepted.a"));
        assert!(v.is_volatile("r/t", "account.c.reset"));
        assert!(
            v.is_volatile("r/t", "queue.a"),
            "the other end of same_as varies too"
        );
        assert!(v.is_volatile("other", "tally.g.fairness"));
        assert!(!v.is_volatile("r/t", "bind.a"));
        assert!(
            !v.is_volatile("other", "account.c.accepted.a"),
            "volatility is per case"
        );
    }

    #[test]
    fn lists_changed_one_sided_and_flipped() {
        let a = result(
            "5.10",
            &[
                (
                    "r/t",
                    pass(),
                    json!({"bind.a": "ok", "queue.a": 3, "gone": 1}),
                ),
                ("old", pass(), json!({})),
            ],
        );
        let b = result(
            "7.2",
            &[
                (
                    "r/t",
                    fail(),
                    json!({"bind.a": "EADDRINUSE", "queue.a": 5, "new": "ok"}),
                ),
                ("fresh", pass(), json!({})),
            ],
        );
        let d = diff_kernels(&a, &b, &volatile_case());
        assert_eq!(d.added, vec!["fresh"]);
        assert_eq!(d.removed, vec!["old"]);
        let c = &d.cases[0];
        assert_eq!(c.verdict, Some(("pass", "FAIL")));
        assert!(c.worse);
        let keys: Vec<(&str, bool)> = c
            .changes
            .iter()
            .map(|ch| (ch.key.as_str(), ch.volatile))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("bind.a", false),
                ("gone", false),
                ("new", false),
                ("queue.a", true)
            ]
        );
        let text = SetDiff {
            kernels: vec![d.clone()],
            ..Default::default()
        }
        .render(false, &BTreeMap::new());
        assert!(text.contains("  bind.a: ok -> EADDRINUSE\n"), "{text}");
        assert!(text.contains("  gone: 1 -> (absent)\n"), "{text}");
        assert!(text.contains("  new: (absent) -> ok\n"), "{text}");
        assert!(
            !text.contains("queue.a"),
            "volatile hidden without --all: {text}"
        );
        assert!(
            text.contains("1 volatile observation change(s) not shown"),
            "{text}"
        );
        let all = SetDiff {
            kernels: vec![d],
            ..Default::default()
        }
        .render(true, &BTreeMap::new());
        assert!(all.contains("  queue.a: 3 -> 5   (volatile)\n"), "{all}");
    }

    #[test]
    fn numbers_compare_by_value() {
        let a = result("6.1", &[("x", pass(), json!({"n": 3}))]);
        let b = result("6.1", &[("x", pass(), json!({"n": 3.0}))]);
        assert!(diff_kernels(&a, &b, &Volatile::default()).cases.is_empty());
    }

    #[test]
    fn regressions_only_for_worse_verdicts_and_stable_changes() {
        let vol = volatile_case();
        let base = vec![
            result(
                "6.1",
                &[
                    ("r/t", pass(), json!({"queue.a": 3})),
                    ("gone", pass(), json!({})),
                ],
            ),
            result("5.10", &[]),
        ];
        // Volatile change, and a fail that became a pass: no regression there.
        let cur = vec![result("6.1", &[("r/t", pass(), json!({"queue.a": 7}))])];
        let d = diff_sets(&base, &cur, &vol);
        assert_eq!(
            d.regressions(),
            vec![
                "5.10: no current results for this kernel",
                "6.1: gone: case vanished"
            ]
        );
        let improved = diff_sets(
            &[result("6.1", &[("x", fail(), json!({}))])],
            &[result("6.1", &[("x", pass(), json!({}))])],
            &vol,
        );
        assert!(improved.regressions().is_empty());
        let skip = Verdict::Skip {
            reason: "no ipv6".into(),
        };
        let worse = diff_sets(
            &[result("6.1", &[("x", skip, json!({}))])],
            &[result(
                "6.1",
                &[(
                    "x",
                    Verdict::Error {
                        message: "died".into(),
                    },
                    json!({"k": 1}),
                )],
            )],
            &vol,
        );
        assert_eq!(
            worse.regressions(),
            vec!["6.1: x: verdict skip -> ERROR", "6.1: x: k: (absent) -> 1"]
        );
    }

    /// The gate ignores how long a repeated step took, never how many of its binds
    /// succeeded; the readable diff shows the timing as a ratio.
    #[test]
    fn timing_drift_is_not_a_regression_but_a_bind_count_is() {
        let vol = Volatile::default();
        let base = vec![result(
            "5.10",
            &[(
                "s/x",
                pass(),
                json!({"bind.l.ok": 12000, "time.listen.l": 2_392_149}),
            )],
        )];
        let slower = vec![result(
            "5.10",
            &[(
                "s/x",
                pass(),
                json!({"bind.l.ok": 12000, "time.listen.l": 9_000_000}),
            )],
        )];
        let d = diff_sets(&base, &slower, &vol);
        assert!(d.regressions().is_empty(), "{:?}", d.regressions());
        let text = d.render(false, &BTreeMap::new());
        assert!(
            text.contains("time.listen.l: 2392149 -> 9000000 µs: 5.10 is 3.8× slower"),
            "{text}"
        );
        assert!(text.contains("under TCG"), "{text}");
        let fewer = vec![result(
            "5.10",
            &[(
                "s/x",
                pass(),
                json!({"bind.l.ok": 11990, "bind.l.EADDRINUSE": 10, "time.listen.l": 2_392_149}),
            )],
        )];
        assert_eq!(
            diff_sets(&base, &fewer, &vol).regressions(),
            vec![
                "5.10: s/x: bind.l.EADDRINUSE: (absent) -> 10",
                "5.10: s/x: bind.l.ok: 12000 -> 11990"
            ]
        );
    }

    #[test]
    fn fix_changes_are_named() {
        let text = "summary: t\nsteps:\n  - socket: a\n  - bind: a\n    addr: 127.0.0.1\ndetects:\n  commit: \"tcp: fix it\"\n  version: \"5.14\"\n  obs: bind.a\n  eq: ok\n";
        let case = case::load_str("m", Path::new("cases/m.yaml"), text).unwrap();
        let vol = Volatile::from_cases(std::slice::from_ref(&case));
        // Both pass (version-bound expectations), but the observation shows the fix.
        let a = result("5.10", &[("m", pass(), json!({"bind.a": "EADDRINUSE"}))]);
        let b = result("6.1", &[("m", pass(), json!({"bind.a": "ok"}))]);
        let d = SetDiff {
            kernels: vec![diff_kernels(&a, &b, &vol)],
            ..Default::default()
        };
        let fixes = BTreeMap::from([("m".to_string(), case.detects.clone().unwrap())]);
        let text = d.render(false, &fixes);
        assert!(
            text.contains("fix \"tcp: fix it\" (5.14): absent -> present"),
            "{text}"
        );
    }
}
