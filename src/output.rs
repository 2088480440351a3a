//! How results are shown: a readable line per case with its observations, the
//! closing tally, and the JSON form for machines.

use std::fmt;

use serde_json::json;

use crate::judge::Verdict;
use crate::resultset::results::{CaseResult, KernelResult};
use crate::value;

/// Counts of verdicts, printed as the run's closing line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub errors: usize,
}

impl Tally {
    pub fn of<'a>(verdicts: impl Iterator<Item = &'a Verdict>) -> Tally {
        let mut t = Tally::default();
        for v in verdicts {
            match v {
                Verdict::Pass { .. } => t.passed += 1,
                Verdict::Fail { .. } => t.failed += 1,
                Verdict::Skip { .. } => t.skipped += 1,
                Verdict::Error { .. } => t.errors += 1,
            }
        }
        t
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped, {} could not run",
            self.passed, self.failed, self.skipped, self.errors
        )
    }
}

/// One case: verdict, id, and (when `observations`) every observation, wrapped.
pub fn human_case(result: &CaseResult, observations: bool) -> String {
    let verdict = &result.verdict;
    let detail = match verdict {
        Verdict::Pass { checked } => format!("{checked} checks"),
        Verdict::Fail { mismatches } => format!("{} mismatches", mismatches.len()),
        Verdict::Skip { reason } => reason.clone(),
        Verdict::Error { .. } => "could not run".to_string(),
    };
    let mut out = format!(
        "{:<5} {}  ({detail}, {} ms)\n",
        verdict.label(),
        result.case,
        result.elapsed_ms
    );
    if !observations {
        return out;
    }
    let mut line = String::from("      ");
    for (key, value) in &result.observations {
        let item = format!("{key}={}  ", value::show(value));
        if line.len() + item.len() > 110 && !line.trim().is_empty() {
            out.push_str(line.trim_end());
            out.push('\n');
            line = String::from("      ");
        }
        line.push_str(&item);
    }
    if !line.trim().is_empty() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One case on one kernel as a JSON object: everything needed to judge or diff it.
pub fn json_line(kernel: &KernelResult, result: &CaseResult) -> String {
    json!({
        "kernel": kernel.kernel,
        "release": kernel.release,
        "case": result.case,
        "file": result.file,
        "outcome": result.outcome,
        "observations": result.observations,
        "elapsed_ms": result.elapsed_ms,
        "verdict": result.verdict,
    })
    .to_string()
}

/// The case x kernel table of verdicts.
pub fn matrix(results: &[KernelResult]) -> String {
    let mut cases: Vec<&str> = results
        .iter()
        .flat_map(|k| k.cases.iter().map(|c| c.case.as_str()))
        .collect();
    cases.sort_unstable();
    cases.dedup();
    let width = cases.iter().map(|c| c.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:<width$}", "case");
    for k in results {
        out.push_str(&format!("  {:>6}", k.kernel));
    }
    out.push('\n');
    for case in cases {
        out.push_str(&format!("{case:<width$}"));
        for k in results {
            let cell = k
                .cases
                .iter()
                .find(|c| c.case == case)
                .map_or("-", |c| c.verdict.label());
            out.push_str(&format!("  {cell:>6}"));
        }
        out.push('\n');
    }
    out
}
