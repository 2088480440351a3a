//! How results are shown: a readable line per case with its observations, the
//! closing tally, and the JSON form for machines.

use std::fmt;

use serde_json::{json, Value};

use crate::case::Case;
use crate::judge::Verdict;
use crate::observe::CaseRun;

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
        write!(f, "{} passed, {} failed, {} skipped, {} could not run", self.passed, self.failed, self.skipped, self.errors)
    }
}

pub fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One case: verdict, id, and every observation, wrapped to a readable width.
pub fn human_case(case: &Case, run: &CaseRun, verdict: &Verdict) -> String {
    let detail = match verdict {
        Verdict::Pass { checked } => format!("{checked} checks"),
        Verdict::Fail { mismatches } => format!("{} mismatches", mismatches.len()),
        Verdict::Skip { reason } => reason.clone(),
        Verdict::Error { .. } => "could not run".to_string(),
    };
    let mut out = format!("{:<5} {}  ({detail}, {} ms)\n", verdict.label(), case.id, run.elapsed_ms);
    let mut line = String::from("      ");
    for (key, value) in &run.observations {
        let item = format!("{key}={}  ", show_value(value));
        if line.len() + item.len() > 110 && line.trim().len() > 0 {
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

/// One case as a JSON object: everything needed to judge or diff it later.
pub fn json_line(kernel: &str, release: &str, case: &Case, run: &CaseRun, verdict: &Verdict) -> String {
    json!({
        "kernel": kernel,
        "release": release,
        "case": case.id,
        "file": case.file,
        "outcome": run.outcome,
        "observations": run.observations,
        "elapsed_ms": run.elapsed_ms,
        "verdict": verdict,
    })
    .to_string()
}
