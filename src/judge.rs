//! Judging: compares a run's observations with the case's expectations for a given
//! kernel version. Pure, so it is tested without any kernel.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::case::{Case, Expectation, KernelVersion, Matcher};
use crate::observe::{CaseRun, Observations, Outcome};
use crate::value::{same, show};

/// One expectation that did not hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mismatch {
    /// Line of the expectation in the case file.
    pub line: usize,
    pub obs: String,
    pub expected: String,
    /// None when the observation was never made.
    pub observed: Option<Value>,
    pub why: Option<String>,
}

/// All the ways a case can end on one kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    Pass {
        checked: usize,
    },
    Fail {
        mismatches: Vec<Mismatch>,
    },
    Skip {
        reason: String,
    },
    /// The case could not run to the end: not a statement about the kernel.
    Error {
        message: String,
    },
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass { .. } => "pass",
            Verdict::Fail { .. } => "FAIL",
            Verdict::Skip { .. } => "skip",
            Verdict::Error { .. } => "ERROR",
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Pass { .. } | Verdict::Skip { .. })
    }
}

pub fn judge(case: &Case, run: &CaseRun, kernel: Option<KernelVersion>) -> Verdict {
    match &run.outcome {
        Outcome::Skipped { reason } => {
            return Verdict::Skip {
                reason: reason.clone(),
            }
        }
        Outcome::Error { message, line } => {
            // A failed step is named by its file:line, as packetdrill names the
            // script line of a syscall that failed.
            let message = match line {
                Some(l) => format!("{}:{l}: {message}", case.file.display()),
                None => message.clone(),
            };
            return Verdict::Error { message };
        }
        Outcome::Timeout { after_ms, line } => {
            let at = line
                .map(|l| format!("{}:{l}: ", case.file.display()))
                .unwrap_or_default();
            return Verdict::Error {
                message: format!(
                    "{at}timed out after {after_ms} ms{}; observed so far: {}",
                    if line.is_some() { " in this step" } else { "" },
                    summarize(&run.observations)
                ),
            };
        }
        Outcome::Ran => {}
    }
    let applicable: Vec<&Expectation> = case
        .expect
        .iter()
        .filter(|e| match (&e.kernel, kernel) {
            (None, _) => true,
            (Some(req), Some(v)) => req.matches(v),
            // Unknown kernel version: a version-bound expectation cannot be judged.
            (Some(_), None) => false,
        })
        .collect();
    let mismatches: Vec<Mismatch> = applicable
        .iter()
        .filter_map(|e| check(e, &run.observations))
        .collect();
    if mismatches.is_empty() {
        Verdict::Pass {
            checked: applicable.len(),
        }
    } else {
        Verdict::Fail { mismatches }
    }
}

fn check(e: &Expectation, obs: &Observations) -> Option<Mismatch> {
    let observed = obs.get(&e.obs);
    let (holds, expected) = match &e.matcher {
        Matcher::Eq(want) => (observed.is_some_and(|v| same(v, want)), show(want)),
        Matcher::OneOf(wants) => (
            observed.is_some_and(|v| wants.iter().any(|w| same(v, w))),
            format!(
                "one of {}",
                wants.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
        ),
        Matcher::Range { min, max } => {
            let n = observed.and_then(Value::as_f64);
            let holds = n.is_some_and(|n| min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m));
            let expected = match (min, max) {
                (Some(a), Some(b)) => format!("between {a} and {b}"),
                (Some(a), None) => format!(">= {a}"),
                (None, Some(b)) => format!("<= {b}"),
                (None, None) => "a number".to_string(),
            };
            (holds, expected)
        }
        Matcher::SameAs(other) => {
            let want = obs.get(other);
            let holds = matches!((observed, want), (Some(a), Some(b)) if same(a, b));
            let shown = want.map(show).unwrap_or_else(|| "not observed".into());
            (holds, format!("same as {other} (= {shown})"))
        }
    };
    (!holds).then(|| Mismatch {
        line: e.line,
        obs: e.obs.clone(),
        expected,
        observed: observed.cloned(),
        why: e.why.clone(),
    })
}

/// Whether a case's run shows the fix it detects: "present", "absent", or
/// "unknown" (the case did not run, or never made the observation).
pub fn fix_presence(fix: &crate::case::Fix, outcome: &Outcome, obs: &Observations) -> &'static str {
    if *outcome != Outcome::Ran || !obs.contains_key(&fix.check.obs) {
        return "unknown";
    }
    match check(&fix.check, obs) {
        None => "present",
        Some(_) => "absent",
    }
}

fn summarize(obs: &Observations) -> String {
    if obs.is_empty() {
        return "nothing".to_string();
    }
    obs.iter()
        .map(|(k, v)| format!("{k}={}", show(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A failure as a person reads it: where the expectation is, and -expected / +observed.
pub struct Explain<'a> {
    /// The case file, for `file:line` pointers.
    pub file: &'a std::path::Path,
    pub verdict: &'a Verdict,
}

impl fmt::Display for Explain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let file = self.file.display();
        match self.verdict {
            Verdict::Pass { checked } => write!(f, "{checked} expectations hold"),
            Verdict::Skip { reason } => write!(f, "skipped: {reason}"),
            Verdict::Error { message } if message.starts_with(&*file.to_string()) => {
                write!(f, "could not run: {message}")
            }
            Verdict::Error { message } => write!(f, "{file}: could not run: {message}"),
            Verdict::Fail { mismatches } => {
                for (i, m) in mismatches.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    writeln!(f, "{file}:{}: {}", m.line, m.obs)?;
                    writeln!(f, "  - expected: {}", m.expected)?;
                    let observed = m
                        .observed
                        .as_ref()
                        .map(show)
                        .unwrap_or_else(|| "(not observed)".into());
                    write!(f, "  + observed: {observed}")?;
                    if let Some(why) = &m.why {
                        write!(f, "\n    why: {why}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case;
    use serde_json::json;
    use std::path::Path;

    fn case_with(expect: &str) -> Case {
        let text = format!(
            "summary: t\nsteps:\n  - socket: a\n  - bind: a\n    addr: 127.0.0.1\n  - socket: b\n  - bind: b\n    addr: 127.0.0.1\n    port: a\n  - listen: a\n  - queue: a\nexpect:\n{expect}"
        );
        case::load_str("t", Path::new("cases/t.yaml"), &text).unwrap()
    }

    fn run(obs: serde_json::Value) -> CaseRun {
        let observations = obs.as_object().unwrap().clone().into_iter().collect();
        CaseRun {
            id: "t".into(),
            outcome: Outcome::Ran,
            observations,
            elapsed_ms: 1,
        }
    }

    #[test]
    fn eq_and_errno() {
        let c = case_with("  - obs: bind.b\n    eq: EADDRINUSE\n");
        assert!(matches!(
            judge(&c, &run(json!({"bind.b": "EADDRINUSE"})), None),
            Verdict::Pass { checked: 1 }
        ));
        let v = judge(&c, &run(json!({"bind.b": "ok"})), None);
        let Verdict::Fail { mismatches } = v else {
            panic!("{v:?}")
        };
        assert_eq!(mismatches[0].line, 13);
        assert_eq!(mismatches[0].observed, Some(json!("ok")));
    }

    #[test]
    fn missing_observation_fails() {
        let c = case_with("  - obs: bind.b\n    eq: ok\n");
        let v = judge(&c, &run(json!({})), None);
        assert!(matches!(v, Verdict::Fail { .. }));
        let text = Explain {
            file: &c.file,
            verdict: &v,
        }
        .to_string();
        assert!(text.contains("cases/t.yaml:13: bind.b"), "{text}");
        assert!(text.contains("(not observed)"), "{text}");
    }

    #[test]
    fn kernel_conditions_select_expectations() {
        let c = case_with(
            "  - obs: bind.b\n    kernel: '>= 5.14'\n    eq: ok\n  - obs: bind.b\n    kernel: '< 5.14'\n    eq: EADDRINUSE\n",
        );
        let r = run(json!({"bind.b": "ok"}));
        assert!(judge(&c, &r, Some(KernelVersion(6, 1, 0))).is_ok());
        assert!(!judge(&c, &r, Some(KernelVersion(5, 10, 0))).is_ok());
        // With no known version, neither conditional expectation is judged.
        assert!(matches!(judge(&c, &r, None), Verdict::Pass { checked: 0 }));
    }

    #[test]
    fn ranges_and_relations() {
        let c = case_with(
            "  - obs: queue.a\n    min: 1\n    max: 3\n  - obs: queue.a\n    same_as: bind.a\n",
        );
        assert!(judge(&c, &run(json!({"queue.a": 2, "bind.a": 2.0})), None).is_ok());
        let Verdict::Fail { mismatches } =
            judge(&c, &run(json!({"queue.a": 4, "bind.a": 2})), None)
        else {
            panic!()
        };
        assert_eq!(
            mismatches.len(),
            2,
            "every mismatch is reported, not only the first"
        );
    }

    #[test]
    fn skips_and_errors_are_not_failures_of_the_kernel() {
        let c = case_with("  - obs: bind.b\n    eq: ok\n");
        let mut r = run(json!({}));
        r.outcome = Outcome::Skipped {
            reason: "needs IPv6".into(),
        };
        assert!(matches!(judge(&c, &r, None), Verdict::Skip { .. }));
        r.outcome = Outcome::Timeout {
            after_ms: 5,
            line: None,
        };
        assert!(matches!(judge(&c, &r, None), Verdict::Error { .. }));
    }
}
