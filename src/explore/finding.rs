//! A shrunk difference as a ready case file (the steps, a summary naming the
//! difference, the observed values as expectations per kernel version range), and
//! the run's short report.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::compare::{masked, step_of, Difference};
use super::program::{scalar, Program};
use crate::case::KernelVersion;
use crate::observe::Observations;
use crate::value;

/// One signature, with the smallest program found to show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub signature: String,
    /// The difference, keyed as in `program`.
    pub difference: Difference,
    pub program: Program,
    /// Each kernel's observations of `program`, in kernel order.
    pub observations: Vec<(String, Observations)>,
    /// The program it was shrunk from: seed and index.
    pub seed: u64,
    pub index: u64,
    pub original_steps: usize,
    /// Shrinking finished (false: the budget ran out on the way).
    pub minimal: bool,
    /// Fresh programs that showed the same signature.
    pub seen: u32,
}

impl Finding {
    /// The file name under --out: the observation and a short hash of the signature.
    pub fn file_name(&self) -> String {
        let readable: String = self
            .difference
            .pattern
            .replace(".*", "")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        // FNV-1a: stable across runs and platforms, which is all a name needs.
        let hash = self
            .signature
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        format!("{readable}_{:08x}.yaml", hash as u32)
    }
}

/// The kernels of a run with the version each was judged as.
pub type Kernels = [(String, Option<KernelVersion>)];

/// The finding as a case file: canonical socket names, every observation that is
/// not masked as an expectation (one per run of kernels, in version order, sharing
/// a value), masked ones listed as volatile.
pub fn case_file(f: &Finding, kernels: &Kernels) -> String {
    let canon = f.program.canonical();
    let rename = |key: &str| match step_of(&f.program, key) {
        Some(i) => format!(
            "{}{}",
            canon.step_key(i),
            &key[f.program.step_key(i).len()..]
        ),
        None => key.to_string(),
    };
    let target = rename(&f.difference.key);
    let pattern = &f.difference.pattern;
    let summary = format!(
        "Found by sockmatrix explore (seed {}, program {}, {} steps shrunk to {}{}): {pattern} is {}.",
        f.seed,
        f.index,
        f.original_steps,
        f.program.steps.len(),
        if f.minimal { "" } else { ", shrinking unfinished" },
        f.difference.describe()
    );
    let mut keys: Vec<&String> = f.observations.iter().flat_map(|(_, o)| o.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    let volatile: Vec<String> = keys
        .iter()
        .filter(|k| masked(k))
        .map(|k| rename(k))
        .collect();
    let mut expect = String::new();
    // The difference first, then the rest in key order.
    keys.sort_by_key(|k| rename(k) != target);
    for key in keys.into_iter().filter(|k| !masked(k)) {
        let values: Vec<(String, Option<&Value>)> = f
            .observations
            .iter()
            .map(|(k, o)| (k.clone(), o.get(key.as_str())))
            .collect();
        for (range, v) in expectations(&values, kernels) {
            expect.push_str(&format!("  - obs: {}\n", rename(key)));
            if let Some(range) = range {
                expect.push_str(&format!("    kernel: \"{range}\"\n"));
            }
            expect.push_str(&format!("    eq: {}\n", yaml_value(v)));
        }
    }
    let mut extra = String::from("tags: [explore]\n");
    if !volatile.is_empty() {
        let v: Vec<String> = volatile.iter().map(|k| scalar(k)).collect();
        extra.push_str(&format!("volatile: [{}]\n", v.join(", ")));
    }
    let mut out = format!(
        "# Written by `sockmatrix explore`: {}\n# Kernels: {}\n",
        f.signature,
        kernels
            .iter()
            .map(|(k, v)| format!("{k} ({})", v.map_or("?".into(), |v| v.to_string())))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push_str(&canon.case_yaml(&summary, ""));
    out.push_str(&extra);
    if !expect.is_empty() {
        out.push_str("expect:\n");
        out.push_str(&expect);
    }
    out
}

fn yaml_value(v: &Value) -> String {
    match v {
        Value::String(s) => scalar(s),
        other => other.to_string(),
    }
}

/// Expectations for one observation: a single one without a kernel condition when
/// every kernel agrees; else one per run of consecutive kernels (in version order)
/// sharing a value, bounded by the versions of the kernels around it. A kernel
/// that did not produce the observation gets none.
pub fn expectations<'v>(
    values: &[(String, Option<&'v Value>)],
    kernels: &Kernels,
) -> Vec<(Option<String>, &'v Value)> {
    let Some(first) = values.first().and_then(|(_, v)| *v) else {
        return Vec::new();
    };
    if values
        .iter()
        .all(|(_, v)| v.is_some_and(|v| value::same(v, first)))
    {
        return vec![(None, first)];
    }
    let version = |k: &str| kernels.iter().find(|(id, _)| id == k).and_then(|(_, v)| *v);
    let mut sorted: Vec<(KernelVersion, Option<&Value>)> = Vec::new();
    for (k, v) in values {
        match version(k) {
            Some(ver) => sorted.push((ver, *v)),
            // Without every version no range can be stated.
            None => return Vec::new(),
        }
    }
    sorted.sort_by_key(|(ver, _)| *ver);
    let mut out = Vec::new();
    let mut start = 0;
    while start < sorted.len() {
        let mut end = start;
        while end + 1 < sorted.len() && same_opt(sorted[end + 1].1, sorted[start].1) {
            end += 1;
        }
        if let Some(v) = sorted[start].1 {
            let mut terms = Vec::new();
            if start > 0 {
                terms.push(format!(">= {}", sorted[start].0));
            }
            if end + 1 < sorted.len() {
                terms.push(format!("< {}", sorted[end + 1].0));
            }
            out.push(((!terms.is_empty()).then(|| terms.join(", ")), v));
        }
        start = end + 1;
    }
    out
}

fn same_opt(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => value::same(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// A fresh program that some kernel could not run to a comparable end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unjudged {
    /// Its index under the run's seed (the program is drawn again from the pair).
    pub index: u64,
    pub program: Program,
    /// Each kernel that could not judge it, with why (`timed out after 5000 ms in
    /// step 3 (`accept: s1`)`).
    pub reasons: Vec<(String, String)>,
}

/// Counts of a run, kept in the state and shown in the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Fresh programs run on every kernel.
    pub programs: u64,
    /// Every program run on every kernel: fresh, confirmations, shrink candidates.
    pub runs: u64,
    /// Differences that did not repeat.
    pub flaky: u64,
    /// How often each signature did not repeat, so that the report says what was
    /// dropped (a tool artefact shows up here again and again).
    #[serde(default)]
    pub flaky_signatures: std::collections::BTreeMap<String, u64>,
    /// Programs some kernel could not judge (timeout, guest death).
    pub inconclusive: u64,
    /// Each of them with why, so that a user can tell a program that cannot work
    /// from a harness fault or a kernel that hangs.
    #[serde(default)]
    pub unjudged: Vec<Unjudged>,
    pub rounds: u64,
    pub elapsed_ms: u64,
}

impl Tally {
    pub fn per_second(&self, n: u64) -> f64 {
        if self.elapsed_ms == 0 {
            0.0
        } else {
            n as f64 * 1000.0 / self.elapsed_ms as f64
        }
    }
}

/// The short report: signatures, kernels, programs tried, flaky ones dropped, time.
pub fn report(seed: u64, kernels: &Kernels, tally: &Tally, findings: &[Finding]) -> String {
    let mut out = String::from("# sockmatrix explore\n\n");
    out.push_str(&format!(
        "- seed: {seed}\n- kernels: {}\n",
        kernels
            .iter()
            .map(|(k, v)| format!("{k} ({})", v.map_or("?".into(), |v| v.to_string())))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out.push_str(&format!(
        "- programs tried: {} ({} runs in all with confirmations and shrinking)\n",
        tally.programs, tally.runs
    ));
    out.push_str(&format!(
        "- flaky differences dropped: {}; programs a kernel could not judge: {}\n",
        tally.flaky, tally.inconclusive
    ));
    let secs = tally.elapsed_ms / 1000;
    out.push_str(&format!(
        "- time spent: {}m {:02}s in {} rounds; {:.2} programs/s ({:.2} runs/s)\n",
        secs / 60,
        secs % 60,
        tally.rounds,
        tally.per_second(tally.programs),
        tally.per_second(tally.runs)
    ));
    out.push_str(&format!("- signatures: {}\n\n", findings.len()));
    let mut flaky = String::new();
    for (signature, times) in &tally.flaky_signatures {
        flaky.push_str(&format!("- `{signature}`: {times}×\n"));
    }
    for f in findings {
        out.push_str(&format!(
            "- `{}`: {} — {} step(s){} (from {}), seen {}× — [{}]({})\n",
            f.difference.pattern,
            f.difference.describe(),
            f.program.steps.len(),
            if f.minimal { "" } else { ", not fully shrunk" },
            f.original_steps,
            f.seen,
            f.file_name(),
            f.file_name()
        ));
    }
    if !flaky.is_empty() {
        out.push_str(&format!(
            "\nDropped, as they did not repeat when run again:\n\n{flaky}"
        ));
    }
    if !tally.unjudged.is_empty() {
        out.push_str("\nNot judged, as some kernel could not run them to the end:\n\n");
        for u in &tally.unjudged {
            // Kernels that give the same reason share it (a hang on every kernel
            // reads as one line, not five).
            let mut groups: Vec<(Vec<&str>, &str)> = Vec::new();
            for (kernel, why) in &u.reasons {
                match groups.iter_mut().find(|(_, w)| w == why) {
                    Some((kernels, _)) => kernels.push(kernel),
                    None => groups.push((vec![kernel], why)),
                }
            }
            let why: Vec<String> = groups
                .iter()
                .map(|(kernels, why)| format!("{}: {why}", kernels.join(", ")))
                .collect();
            out.push_str(&format!("- program {}: {}\n", u.index, why.join("; ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::program::{Draft, Val};
    use serde_json::json;

    fn kernels() -> Vec<(String, Option<KernelVersion>)> {
        ["5.10.262", "6.1.192", "6.12.117", "6.17.13", "7.2.12"]
            .iter()
            .map(|v| {
                let id = v.rsplit_once('.').unwrap().0.to_string();
                (id, Some(v.parse().unwrap()))
            })
            .collect()
    }

    #[test]
    fn the_report_names_what_was_dropped_as_flaky() {
        let mut tally = Tally {
            flaky: 2,
            ..Tally::default()
        };
        tally
            .flaky_signatures
            .insert("connect.* 5.10=ok 6.1=ETIMEDOUT".into(), 2);
        let text = report(1, &kernels(), &tally, &[]);
        assert!(text.contains("flaky differences dropped: 2"), "{text}");
        assert!(
            text.contains("- `connect.* 5.10=ok 6.1=ETIMEDOUT`: 2×"),
            "{text}"
        );
        let quiet = report(1, &kernels(), &Tally::default(), &[]);
        assert!(!quiet.contains("Dropped"), "{quiet}");
    }

    #[test]
    fn ranges_cover_runs_of_kernels_sharing_a_value() {
        let (ok, inuse) = (json!("ok"), json!("EADDRINUSE"));
        let values: Vec<(String, Option<&Value>)> = vec![
            ("5.10".into(), Some(&inuse)),
            ("6.1".into(), Some(&ok)),
            ("6.12".into(), Some(&inuse)),
            ("6.17".into(), Some(&inuse)),
            ("7.2".into(), Some(&inuse)),
        ];
        let e = expectations(&values, &kernels());
        let shown: Vec<(Option<&str>, String)> = e
            .iter()
            .map(|(r, v)| (r.as_deref(), value::show(v)))
            .collect();
        assert_eq!(
            shown,
            [
                (Some("< 6.1.192"), "EADDRINUSE".to_string()),
                (Some(">= 6.1.192, < 6.12.117"), "ok".to_string()),
                (Some(">= 6.12.117"), "EADDRINUSE".to_string()),
            ]
        );
        let same = vec![
            ("5.10".to_string(), Some(&ok)),
            ("6.1".to_string(), Some(&ok)),
        ];
        assert_eq!(expectations(&same, &kernels()), vec![(None, &ok)]);
    }

    #[test]
    fn a_finding_is_a_case_that_check_accepts_and_its_expectations_hold() {
        let program = Program {
            sysctls: vec![],
            steps: vec![Draft::new("socket", "s2").with(
                "local_port_range",
                Val::Seq(vec!["5000".into(), "5000".into()]),
            )],
        };
        let obs = |v: &str| -> Observations {
            [
                ("socket.s2".to_string(), json!("ok")),
                ("socket.s2.local_port_range".to_string(), json!(v)),
            ]
            .into_iter()
            .collect()
        };
        let observations: Vec<(String, Observations)> = kernels()
            .iter()
            .map(|(k, _)| {
                (
                    k.clone(),
                    obs(if k == "5.10" { "ENOPROTOOPT" } else { "ok" }),
                )
            })
            .collect();
        let runs: Vec<(String, &Observations)> =
            observations.iter().map(|(k, o)| (k.clone(), o)).collect();
        let diff = crate::explore::compare::differences(&program, &runs).remove(0);
        let f = Finding {
            signature: diff.signature(),
            difference: diff,
            program,
            observations: observations.clone(),
            seed: 7,
            index: 12,
            original_steps: 6,
            minimal: true,
            seen: 1,
        };
        let text = case_file(&f, &kernels());
        let case = crate::case::load_str("explore/x", std::path::Path::new("x.yaml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(
            case.summary.contains(
                "socket.*.local_port_range is ENOPROTOOPT on 5.10; ok on 6.1, 6.12, 6.17, 7.2"
            ),
            "{}",
            case.summary
        );
        assert_eq!(case.expect[0].obs, "socket.a.local_port_range");
        // Judged against what each kernel showed, every expectation holds; against
        // another kernel's observations, the difference fails.
        // (The case file names the socket `a`, as its run will.)
        let renamed = |o: &Observations| -> Observations {
            o.iter()
                .map(|(k, v)| (k.replace(".s2", ".a"), v.clone()))
                .collect()
        };
        for ((k, v), (_, o)) in kernels().iter().zip(&observations) {
            let run = crate::observe::CaseRun {
                id: "x".into(),
                outcome: crate::observe::Outcome::Ran,
                observations: renamed(o),
                elapsed_ms: 1,
            };
            assert!(crate::judge::judge(&case, &run, *v).is_ok(), "{k}\n{text}");
            let wrong = crate::observe::CaseRun {
                observations: renamed(&observations[if k == "5.10" { 1 } else { 0 }].1),
                ..run
            };
            assert!(!crate::judge::judge(&case, &wrong, *v).is_ok(), "{k}");
        }
        assert!(
            f.file_name().starts_with("socket_local_port_range_"),
            "{}",
            f.file_name()
        );
    }
}
