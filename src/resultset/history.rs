//! Run history: every kernel result also kept as
//! `results/history/<kernel>/<release>/<UTC timestamp>.json`, and the timeline of one
//! case's observations across those runs ("when did this observation change?").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::resultset::results::{self, KernelResult};
use crate::value;

/// Where runs are kept by default (not committed).
pub const DEFAULT_DIR: &str = "results/history";

/// The history kept beside a result set: its sibling folder `history`
/// (`results/latest` -> `results/history`, `out/shard-1` -> `out/history`).
pub fn dir_for(results_dir: &Path) -> PathBuf {
    match results_dir.parent() {
        Some(parent) => parent.join("history"),
        None => results_dir.join("history"),
    }
}

/// Keeps `result` in the history; never replaces an earlier run's file.
pub fn record(history_dir: &Path, result: &KernelResult) -> Result<PathBuf> {
    let release = result
        .release
        .as_deref()
        .unwrap_or("unknown")
        .replace('/', "_");
    let dir = history_dir.join(&result.kernel).join(release);
    let stamp = file_stamp(result.finished_at);
    let mut path = dir.join(format!("{stamp}.json"));
    // Two runs of a kernel in the same second (shards, retries) both stay.
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{stamp}-{n}.json"));
        n += 1;
    }
    let mut text = serde_json::to_string_pretty(result)?;
    text.push('\n');
    crate::atomic_file::write_atomic(&path, text.as_bytes())
        .with_context(|| format!("keeping kernel {} in the history", result.kernel))?;
    Ok(path)
}

/// Every kept run (of `kernel`, or of all kernels), by kernel then time.
pub fn load(history_dir: &Path, kernel: Option<&str>) -> Result<Vec<KernelResult>> {
    let kernels: Vec<PathBuf> = match kernel {
        Some(k) => vec![history_dir.join(k)],
        None => subdirs(history_dir)?,
    };
    let mut runs = Vec::new();
    for kdir in kernels {
        for rdir in subdirs(&kdir)? {
            let files =
                std::fs::read_dir(&rdir).with_context(|| format!("reading {}", rdir.display()))?;
            for file in files {
                let path = file?.path();
                if path.extension().is_some_and(|e| e == "json") {
                    runs.push(results::load(&path)?);
                }
            }
        }
    }
    runs.sort_by(|a, b| (&a.kernel, a.finished_at).cmp(&(&b.kernel, b.finished_at)));
    Ok(runs)
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("no run history in {}", dir.display()))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    Ok(out)
}

/// One run of the case in the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub kernel: String,
    pub at: u64,
    pub release: Option<String>,
    pub verdict: &'static str,
    /// The selected observations; None where the run did not make it.
    pub values: BTreeMap<String, Option<Value>>,
    /// Keys whose value differs from the previous run of the same kernel.
    pub changed: Vec<String>,
    pub first: bool,
}

/// The runs of `case` in time order, per kernel. `obs` selects one key, or else a
/// prefix (`account.c` = every `account.c.*`); None selects every key the case ever had.
pub fn timeline(runs: &[KernelResult], case: &str, obs: Option<&str>) -> Vec<Row> {
    let all: BTreeSet<&String> = runs
        .iter()
        .flat_map(|k| k.cases.iter().filter(|c| c.case == case))
        .flat_map(|c| c.observations.keys())
        .collect();
    // An exact key means that key alone (`accept.l1`, not also `accept.l1.error`).
    let keys: BTreeSet<String> = match obs {
        None => all.into_iter().cloned().collect(),
        Some(o) if all.iter().any(|k| *k == o) => BTreeSet::from([o.to_string()]),
        Some(o) => all
            .into_iter()
            .filter(|k| k.strip_prefix(o).is_some_and(|rest| rest.starts_with('.')))
            .cloned()
            .collect(),
    };
    let mut rows: Vec<Row> = Vec::new();
    for run in runs {
        // Runs that did not include the case (a filtered run) say nothing about it.
        let Some(result) = run.cases.iter().find(|c| c.case == case) else {
            continue;
        };
        let values: BTreeMap<String, Option<Value>> = keys
            .iter()
            .map(|k| (k.clone(), result.observations.get(k).cloned()))
            .collect();
        let previous = rows.iter().rev().find(|r| r.kernel == run.kernel);
        let changed = match previous {
            Some(p) => keys
                .iter()
                .filter(|k| p.values[*k] != values[*k])
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        rows.push(Row {
            kernel: run.kernel.clone(),
            at: run.finished_at,
            release: run.release.clone(),
            verdict: result.verdict.label(),
            values,
            changed,
            first: previous.is_none(),
        });
    }
    rows
}

/// One kernel per block; each run's values, with `<- changed` where they moved.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    let show = |v: &Option<Value>| {
        v.as_ref()
            .map(value::show)
            .unwrap_or_else(|| "(absent)".into())
    };
    for (i, row) in rows.iter().enumerate() {
        if row.first {
            let _ = writeln!(out, "{}== {}", if i > 0 { "\n" } else { "" }, row.kernel);
        }
        let release = row.release.as_deref().unwrap_or("release unknown");
        let prev = rows[..i].iter().rev().find(|r| r.kernel == row.kernel);
        let release_moved = prev.is_some_and(|p| p.release != row.release);
        let verdict_moved = prev.is_some_and(|p| p.verdict != row.verdict);
        let _ = write!(
            out,
            "{}  {release}{}  {}{}",
            utc_iso(row.at),
            if release_moved { " (new release)" } else { "" },
            row.verdict,
            if verdict_moved {
                " (verdict changed)"
            } else {
                ""
            }
        );
        if row.values.len() == 1 {
            let (key, value) = row.values.iter().next().unwrap();
            let mark = if row.changed.is_empty() {
                ""
            } else {
                "   <- changed"
            };
            let _ = writeln!(out, "  {key}={}{mark}", show(value));
        } else if row.first {
            let all: Vec<String> = row
                .values
                .iter()
                .map(|(k, v)| format!("{k}={}", show(v)))
                .collect();
            let _ = writeln!(out, "\n    {}", all.join("  "));
        } else if row.changed.is_empty() {
            let _ = writeln!(out, "  (no change)");
        } else {
            let _ = writeln!(out, "   <- changed:");
            let prev = prev.expect("a changed row has a previous one");
            for key in &row.changed {
                let _ = writeln!(
                    out,
                    "    {key}: {} -> {}",
                    show(&prev.values[key]),
                    show(&row.values[key])
                );
            }
        }
    }
    out
}

/// `20261127T084101Z`: sorts as time, safe in a file name.
pub fn file_stamp(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc(secs);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// `2026-11-27T08:41:01Z`.
pub fn utc_iso(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Seconds since the epoch as a UTC civil date and time (Howard Hinnant's algorithm).
fn utc(secs: u64) -> (i64, u64, u64, u64, u64, u64) {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Verdict;
    use crate::observe::Outcome;
    use crate::resultset::results::CaseResult;
    use serde_json::json;

    #[test]
    fn history_sits_beside_the_result_set() {
        assert_eq!(
            dir_for(Path::new(crate::resultset::results::DEFAULT_DIR)),
            Path::new(DEFAULT_DIR)
        );
        assert_eq!(
            dir_for(Path::new("/tmp/x/results")),
            Path::new("/tmp/x/history")
        );
        assert_eq!(dir_for(Path::new("out")), Path::new("history"));
    }

    #[test]
    fn utc_stamps() {
        assert_eq!(file_stamp(0), "19700101T000000Z");
        assert_eq!(utc_iso(951_782_400 + 3661), "2000-02-29T01:01:01Z");
        assert_eq!(utc_iso(1_795_768_861), "2026-11-27T08:41:01Z");
    }

    fn run(kernel: &str, at: u64, release: &str, obs: Option<Value>) -> KernelResult {
        KernelResult {
            kernel: kernel.into(),
            release: Some(release.into()),
            uname_version: None,
            package_version: None,
            built: None,
            could_not_run: None,
            boot: None,
            cases: obs
                .into_iter()
                .map(|o| CaseResult {
                    case: "c".into(),
                    file: "cases/c.yaml".into(),
                    outcome: Outcome::Ran,
                    observations: o.as_object().unwrap().clone().into_iter().collect(),
                    elapsed_ms: 0,
                    verdict: Verdict::Pass { checked: 0 },
                })
                .collect(),
            finished_at: at,
        }
    }

    #[test]
    fn marks_the_run_where_a_value_changed() {
        let runs = [
            run(
                "6.1",
                10,
                "r1",
                Some(json!({"a.x": 1, "a.y": "ok", "b": 0})),
            ),
            run("6.1", 20, "r1", None), // a filtered run without the case: skipped
            run(
                "6.1",
                30,
                "r1",
                Some(json!({"a.x": 1, "a.y": "ok", "b": 5})),
            ),
            run(
                "6.1",
                40,
                "r2",
                Some(json!({"a.x": 2, "a.y": "ok", "b": 5})),
            ),
            run("7.2", 15, "r9", Some(json!({"a.x": 2}))),
        ];
        let rows = timeline(&runs, "c", Some("a"));
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0].values.keys().collect::<Vec<_>>(),
            vec!["a.x", "a.y"],
            "prefix selects a.*, not b"
        );
        let changed: Vec<&Vec<String>> = rows.iter().map(|r| &r.changed).collect();
        assert_eq!(
            changed,
            vec![&vec![], &vec![], &vec!["a.x".to_string()], &vec![]]
        );
        assert!(rows[3].first, "7.2 starts its own timeline");
        let exact = timeline(
            &[run("6.1", 1, "r", Some(json!({"a": 1, "a.error": "ok"})))],
            "c",
            Some("a"),
        );
        assert_eq!(
            exact[0].values.keys().collect::<Vec<_>>(),
            vec!["a"],
            "an exact key selects only itself"
        );
        let text = render(&timeline(&runs, "c", Some("a.x")));
        assert!(
            text.contains("1970-01-01T00:00:40Z  r2 (new release)  pass  a.x=2   <- changed"),
            "{text}"
        );
        assert!(
            text.contains("1970-01-01T00:00:30Z  r1  pass  a.x=1\n"),
            "{text}"
        );
    }
}
