//! One program's observations across kernels: what is masked as volatile by nature,
//! which observations differ, and the signature a difference is known by.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::program::Program;
use crate::observe::{Observations, Outcome};
use crate::value;

/// Observations whose values vary by nature, never a difference between kernels:
/// ports the kernel chose, placement by hash, timings.
pub fn masked(key: &str) -> bool {
    key.starts_with("local_port.")
        || key.starts_with("tally.")
        || key.ends_with(".fairness")
        || key.contains(".accepted.")
        || key.ends_with("_ms")
}

/// Whether a kernel's run of a program can be compared with others: it ran to the
/// end, or a step could not be done (that is the kernel's doing too). A timeout, a
/// skip or a guest that died says nothing about the program.
pub fn comparable(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Ran | Outcome::Error { line: Some(_), .. })
}

/// Why a kernel's run of `program` cannot be compared, or None when it can: what
/// the report tells a user about a program that was not judged (the program, the
/// harness or the kernel may be at fault; the reason says which to look at).
/// `outcome` is None when the kernel's results lack the program altogether.
pub fn why_not_comparable(program: &Program, outcome: Option<&Outcome>) -> Option<String> {
    let at = |line: &Option<usize>| {
        line.and_then(|l| program.step_at_line(l))
            .map(|i| {
                let step = &program.steps[i];
                format!(" in step {} (`{}: {}`)", i + 1, step.verb, step.subject)
            })
            .unwrap_or_default()
    };
    match outcome {
        None => Some("no result for it".to_string()),
        Some(o) if comparable(o) => None,
        Some(Outcome::Timeout { after_ms, line }) => {
            Some(format!("timed out after {after_ms} ms{}", at(line)))
        }
        Some(Outcome::Skipped { reason }) => Some(format!("skipped: {reason}")),
        Some(Outcome::Error { message, line }) => Some(format!("error{}: {message}", at(line))),
        Some(Outcome::Ran) => None,
    }
}

/// One observation that is not the same on every kernel, with each kernel's value
/// (None: that kernel did not produce it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub key: String,
    /// The key with the step's subject as `*` (`bind.*`, `socket.*.reuseport`).
    pub pattern: String,
    pub values: Vec<(String, Option<Value>)>,
}

impl Difference {
    /// How it is known and deduplicated: which observation, and each kernel's value.
    pub fn signature(&self) -> String {
        let values: Vec<String> = self
            .values
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_ref().map_or("-".into(), value::show)))
            .collect();
        format!("{} {}", self.pattern, values.join(" "))
    }

    /// The same observation with the same value on every kernel.
    pub fn same_as(&self, other: &Difference) -> bool {
        self.key == other.key
            && self.values.len() == other.values.len()
            && self.values.iter().zip(&other.values).all(|(a, b)| {
                a.0 == b.0 && value::group_key(a.1.as_ref()) == value::group_key(b.1.as_ref())
            })
    }

    /// Values grouped, in order of first kernel: `ENOPROTOOPT on 5.10; ok on 6.1, 6.12`.
    pub fn describe(&self) -> String {
        let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
        for (kernel, v) in &self.values {
            let shown = v.as_ref().map_or("nothing".into(), value::show);
            match groups.iter_mut().find(|(s, _)| *s == shown) {
                Some((_, ks)) => ks.push(kernel),
                None => groups.push((shown, vec![kernel])),
            }
        }
        groups
            .iter()
            .map(|(v, ks)| format!("{v} on {}", ks.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Which step of `program` made observation `key` (None for sysctls and unknown keys).
pub fn step_of(program: &Program, key: &str) -> Option<usize> {
    (0..program.steps.len()).find(|&i| {
        let prefix = program.step_key(i);
        key == prefix || key.starts_with(&format!("{prefix}."))
    })
}

fn pattern(program: &Program, key: &str) -> String {
    match step_of(program, key) {
        Some(i) => {
            let rest = &key[program.step_key(i).len()..];
            format!("{}.*{rest}", program.steps[i].verb)
        }
        None => key.to_string(),
    }
}

/// The observations that differ between kernels, masked ones left out, in the order
/// of the steps that made them (sysctls first). `runs` holds each kernel's
/// observations in kernel order; every run must be comparable.
pub fn differences(program: &Program, runs: &[(String, &Observations)]) -> Vec<Difference> {
    let mut keys: Vec<&String> = runs.iter().flat_map(|(_, o)| o.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut out: Vec<(Option<usize>, Difference)> = keys
        .into_iter()
        .filter(|k| !masked(k))
        .filter_map(|key| {
            let values: Vec<(String, Option<Value>)> = runs
                .iter()
                .map(|(kernel, obs)| (kernel.clone(), obs.get(key).cloned()))
                .collect();
            let first = value::group_key(values[0].1.as_ref());
            if values
                .iter()
                .all(|(_, v)| value::group_key(v.as_ref()) == first)
            {
                return None;
            }
            Some((
                step_of(program, key),
                Difference {
                    key: key.clone(),
                    pattern: pattern(program, key),
                    values,
                },
            ))
        })
        .collect();
    out.sort_by_key(|(step, _)| step.map_or(0, |s| s + 1));
    out.into_iter().map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::program::{Draft, Val};
    use serde_json::json;

    fn program() -> Program {
        Program {
            sysctls: vec![],
            steps: vec![
                Draft::new("socket", "s0").with(
                    "local_port_range",
                    Val::Seq(vec!["5000".into(), "5000".into()]),
                ),
                Draft::new("bind", "s0").with("addr", Val::s("127.0.0.1")),
                Draft::new("local_port", "s0"),
            ],
        }
    }

    fn obs(pairs: &[(&str, Value)]) -> Observations {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn masked_values_never_differ_and_real_ones_do_in_step_order() {
        let old = obs(&[
            ("socket.s0", json!("ok")),
            ("socket.s0.local_port_range", json!("ENOPROTOOPT")),
            ("bind.s0", json!("EADDRINUSE")),
            ("local_port.s0", json!(40000)),
        ]);
        let new = obs(&[
            ("socket.s0", json!("ok")),
            ("socket.s0.local_port_range", json!("ok")),
            ("bind.s0", json!("ok")),
            ("local_port.s0", json!(5000)),
        ]);
        let runs = [("5.10".to_string(), &old), ("6.1".to_string(), &new)];
        let diffs = differences(&program(), &runs);
        let keys: Vec<&str> = diffs.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["socket.s0.local_port_range", "bind.s0"]);
        assert_eq!(diffs[0].pattern, "socket.*.local_port_range");
        assert_eq!(
            diffs[0].signature(),
            "socket.*.local_port_range 5.10=ENOPROTOOPT 6.1=ok"
        );
        assert_eq!(diffs[0].describe(), "ENOPROTOOPT on 5.10; ok on 6.1");
        // The same kernels agreeing: nothing differs.
        assert!(differences(&program(), &[("a".into(), &new), ("b".into(), &new)]).is_empty());
    }

    #[test]
    fn an_observation_one_kernel_lacks_is_a_difference() {
        let a = obs(&[("socket.s0", json!("ok")), ("bind.s0", json!("ok"))]);
        let b = obs(&[("socket.s0", json!("ok"))]);
        let d = differences(&program(), &[("x".into(), &a), ("y".into(), &b)]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].signature(), "bind.* x=ok y=-");
        assert!(d[0].same_as(&d[0].clone()));
        let mut other = d[0].clone();
        other.values[1].1 = Some(json!("EADDRINUSE"));
        assert!(!d[0].same_as(&other));
    }

    #[test]
    fn timeouts_and_dead_guests_are_not_compared() {
        assert!(comparable(&Outcome::Ran));
        assert!(comparable(&Outcome::Error {
            message: "x".into(),
            line: Some(3)
        }));
        assert!(!comparable(&Outcome::Error {
            message: "guest died".into(),
            line: None
        }));
        assert!(!comparable(&Outcome::Timeout {
            after_ms: 5000,
            line: Some(2)
        }));
    }

    #[test]
    fn why_a_run_is_not_compared_names_the_step() {
        let p = program();
        let bind_line = p.to_case("x").unwrap().plan.steps[1].line;
        let why = |o: Outcome| why_not_comparable(&p, Some(&o));
        assert_eq!(why(Outcome::Ran), None);
        assert_eq!(
            why(Outcome::Timeout {
                after_ms: 5000,
                line: Some(bind_line)
            })
            .as_deref(),
            Some("timed out after 5000 ms in step 2 (`bind: s0`)")
        );
        assert_eq!(
            why(Outcome::Error {
                message: "the guest died".into(),
                line: None
            })
            .as_deref(),
            Some("error: the guest died")
        );
        assert_eq!(
            why(Outcome::Skipped {
                reason: "no IPv6".into()
            })
            .as_deref(),
            Some("skipped: no IPv6")
        );
        assert_eq!(
            why_not_comparable(&p, None).as_deref(),
            Some("no result for it")
        );
    }
}
