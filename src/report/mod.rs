//! Reports on a result set (a folder of `<kernel>/result.json`): the shared model —
//! kernels in order, every case with what its file says, per-case differences — that
//! the Markdown, HTML and JUnit renderers read.

pub mod charts;
pub mod compare;
pub mod fold;
pub mod github;
pub mod html;
pub mod junit;
pub mod kcidb;
pub mod ktap;
pub mod markdown;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::case::{self, Case, Fix, Reference};
use crate::resultset::diff::Volatile;
use crate::resultset::results::{CaseResult, KernelResult};
use compare::CaseAcrossKernels;

/// What a case file says about a case; absent when the file is gone or invalid.
#[derive(Debug, Clone)]
pub struct CaseInfo {
    pub summary: String,
    pub references: Vec<Reference>,
    pub detects: Option<Fix>,
}

/// One row of the matrix: a case, its runs per kernel (in `Report::kernels` order)
/// and how they differ.
#[derive(Debug)]
pub struct Row<'a> {
    pub case: String,
    pub info: Option<&'a CaseInfo>,
    pub runs: Vec<Option<&'a CaseResult>>,
    pub diff: CaseAcrossKernels,
}

#[derive(Debug)]
pub struct Report {
    /// Sorted by version, non-version ids (`host`, bzImage paths) last.
    pub kernels: Vec<KernelResult>,
    pub info: BTreeMap<String, CaseInfo>,
    /// Observations the cases say vary from run to run; the same notion as `diff`'s.
    pub volatile: Volatile,
    /// The result set's folder, where each kernel's console log is kept.
    pub dir: Option<PathBuf>,
}

/// A fix on one kernel, as `sockmatrix fixes` says it: present, absent, unknown, or
/// `-` where the case did not run.
pub fn fix_cell(fix: &Fix, run: Option<&CaseResult>) -> &'static str {
    crate::resultset::diff::fix_state(fix, run)
}

impl Report {
    pub fn new(mut kernels: Vec<KernelResult>, cases: &[Case]) -> Report {
        kernels.sort_by_key(|a| kernel_order(&a.kernel));
        let info = cases
            .iter()
            .map(|c| {
                let info = CaseInfo {
                    summary: c.summary.clone(),
                    references: c.references.clone(),
                    detects: c.detects.clone(),
                };
                (c.id.clone(), info)
            })
            .collect();
        Report {
            kernels,
            info,
            volatile: Volatile::from_cases(cases),
            dir: None,
        }
    }

    /// The same report, knowing the folder its results came from (for console logs).
    pub fn from_dir(mut self, dir: &std::path::Path) -> Report {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// The last `lines` lines of a kernel's console: the log next to its result.json
    /// in the result set, else where the run wrote it. None when neither is there.
    pub fn console_tail(&self, kernel: &KernelResult, lines: usize) -> Option<String> {
        let written = kernel.boot.as_ref().map(|b| b.console_log.clone());
        // The log keeps its per-run name (`console-<time>-<pid>.log`) beside the
        // result; result sets written before that have `console.log`.
        let name = written
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_os_string());
        let beside = self.dir.as_ref().into_iter().flat_map(|d| {
            let kdir = d.join(&kernel.kernel);
            name.iter()
                .map(|n| kdir.join(n))
                .chain([kdir.join("console.log")])
                .collect::<Vec<_>>()
        });
        let text = beside
            .chain(written.clone())
            .find_map(|p| std::fs::read(p).ok())?;
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        Some(all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// Every case any kernel ran, sorted by id.
    pub fn case_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .kernels
            .iter()
            .flat_map(|k| k.cases.iter().map(|c| c.case.clone()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn rows(&self) -> Vec<Row<'_>> {
        self.case_ids()
            .into_iter()
            .map(|case| {
                let runs: Vec<Option<&CaseResult>> = self
                    .kernels
                    .iter()
                    .map(|k| k.cases.iter().find(|c| c.case == case))
                    .collect();
                let diff = compare::compare(&runs, |key| self.volatile.is_volatile(&case, key));
                Row {
                    info: self.info.get(&case),
                    case,
                    runs,
                    diff,
                }
            })
            .collect()
    }
}

/// One timed observation (`time.<key>`) of a case: each kernel's microseconds, in
/// the report's kernel order, kernels that did not time it left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub key: String,
    pub times: Vec<(String, u64)>,
}

impl Timing {
    /// "5.10 is 19× slower than 6.12" (None with one kernel).
    pub fn summary(&self) -> Option<String> {
        crate::timing::slowest_vs_fastest(&self.times)
    }

    pub fn max(&self) -> u64 {
        self.times.iter().map(|(_, us)| *us).max().unwrap_or(0)
    }
}

impl Report {
    /// The rows with at least one timed observation, each with its timings.
    pub fn timed_rows<'r, 'a>(&self, rows: &'r [Row<'a>]) -> Vec<(&'r Row<'a>, Vec<Timing>)> {
        rows.iter()
            .map(|r| (r, self.timings(r)))
            .filter(|(_, t)| !t.is_empty())
            .collect()
    }

    /// The timed observations of a row, sorted by key.
    pub fn timings(&self, row: &Row) -> Vec<Timing> {
        let runs = self
            .kernels
            .iter()
            .map(|k| k.kernel.as_str())
            .zip(row.runs.iter().copied());
        crate::timing::per_kernel(runs)
            .into_iter()
            .map(|(key, times)| Timing { key, times })
            .collect()
    }
}

/// When a kernel's run started, from its end and its length (seconds since the epoch).
pub fn started_at(k: &KernelResult) -> u64 {
    let ms = k
        .boot
        .as_ref()
        .map(|b| b.total_ms)
        .unwrap_or_else(|| k.cases.iter().map(|c| c.elapsed_ms).sum());
    k.finished_at.saturating_sub(ms / 1000)
}

/// The kernel's upstream version: what `uname -v` names (Debian's "... Debian
/// 6.1.192-2 ..."), else the upstream part of the package version, else what the
/// release string says (`6.1.0-56-...` is only 6.1.0).
/// What the "package" column says: Debian's package version, or for a kernel built
/// from source its tree and config (`built: git:3f33a818a6f3 minimal`).
pub fn package(k: &KernelResult) -> String {
    match (&k.built, &k.package_version) {
        (Some(b), _) => {
            let (kind, id) = b
                .source_identity
                .split_once(':')
                .unwrap_or(("", &b.source_identity));
            let short: String = id.chars().take(12).collect();
            format!("built: {kind}:{short} {}", b.config)
        }
        (None, Some(p)) => p.clone(),
        (None, None) => "-".into(),
    }
}

pub fn upstream_version(k: &KernelResult) -> Option<String> {
    let release = k.release.as_deref();
    if let (Some(r), Some(v)) = (release, k.uname_version.as_deref()) {
        if let Some(version) = crate::case::KernelVersion::from_uname(r, v) {
            return Some(version.to_string());
        }
    }
    if let Some(p) = &k.package_version {
        let no_epoch = p.split_once(':').map_or(p.as_str(), |(_, v)| v);
        let upstream = no_epoch.rsplit_once('-').map_or(no_epoch, |(u, _)| u);
        return Some(upstream.to_string());
    }
    crate::case::KernelVersion::from_release(release?).map(|v| v.to_string())
}

/// The accelerator the guest ran under, as its result records it.
pub fn accel(k: &KernelResult) -> Option<&str> {
    k.boot.as_ref().map(|b| b.accel.as_str())
}

/// A timestamp as RFC 3339 in UTC (`2026-11-27T10:00:00+00:00`).
pub fn rfc3339(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .unwrap_or_default()
        .to_rfc3339()
}

/// Version-like ids by their numbers (5.10 before 6.1 before 6.12), then the rest by name.
/// Releases (`6.1.192-3`: upstream, then Debian revision) and folded runs of them
/// (`6.1.176..6.1.190`, by their first) sort among the ids.
fn kernel_order(id: &str) -> (bool, Vec<u64>, String) {
    let first = id.split("..").next().unwrap_or(id);
    let numbers: Option<Vec<u64>> = first.split(['.', '-']).map(|p| p.parse().ok()).collect();
    match numbers {
        Some(n) => (false, n, String::new()),
        None => (true, Vec::new(), id.to_string()),
    }
}

/// The cases under `dirs`, skipping files that no longer parse: a report describes
/// results, and an edited case must not stop it. Returns the warnings too.
pub fn load_cases_leniently(dirs: &[PathBuf]) -> (Vec<Case>, Vec<String>) {
    let files = match case::discover(dirs) {
        Ok(files) => files,
        Err(e) => {
            return (
                Vec::new(),
                vec![format!("{e:#}; cases are shown without summaries")],
            )
        }
    };
    let mut cases = Vec::new();
    let mut warnings = Vec::new();
    for file in files {
        match case::load_file(&file) {
            Ok(c) => cases.push(c),
            Err(e) => warnings.push(format!(
                "{}: invalid, shown without its summary",
                e.file.display()
            )),
        }
    }
    (cases, warnings)
}

/// A reference as one line of text.
pub fn reference_text(r: &Reference) -> String {
    match r {
        Reference::Commit { title, version } => format!("commit \"{title}\" ({version})"),
        Reference::Selftest { path } => format!("selftest {path}"),
        Reference::Article { url } => url.clone(),
    }
}

#[cfg(test)]
pub(crate) mod testdata {
    use serde_json::json;

    use super::*;
    use crate::judge::Verdict;
    use crate::observe::Outcome;

    pub fn case(id: &str, verdict: Verdict, obs: serde_json::Value) -> CaseResult {
        CaseResult {
            case: id.into(),
            file: format!("cases/{id}.yaml").into(),
            outcome: Outcome::Ran,
            observations: obs.as_object().unwrap().clone().into_iter().collect(),
            elapsed_ms: 1500,
            verdict,
        }
    }

    pub fn kernel(id: &str, cases: Vec<CaseResult>) -> KernelResult {
        KernelResult {
            kernel: id.into(),
            release: Some(format!("{id}.0-1-cloud-amd64")),
            uname_version: None,
            package_version: None,
            built: None,
            could_not_run: None,
            boot: None,
            cases,
            finished_at: 0,
        }
    }

    pub fn pass() -> Verdict {
        Verdict::Pass { checked: 1 }
    }

    pub fn fail() -> Verdict {
        Verdict::Fail {
            mismatches: vec![crate::judge::Mismatch {
                line: 7,
                obs: "account.c.reset".into(),
                expected: "0".into(),
                observed: Some(json!(14)),
                why: Some("a <b> & \"c\"".into()),
            }],
        }
    }

    /// `two_kernels` plus `s/timed`, whose listen took 2.4 s on 5.10 and 0.12 s on 6.1.
    pub fn timed() -> Report {
        let mut report = two_kernels();
        for (k, us) in [(0, 2_400_000), (1, 120_000)] {
            report.kernels[k].cases.push(case(
                "s/timed",
                pass(),
                json!({"listen.l.ok": 6000, "time.listen.l": us}),
            ));
        }
        report
    }

    /// Two kernels; `r/migrate` differs on `account.c.reset`, `b/same` does not.
    pub fn two_kernels() -> Report {
        let k510 = kernel(
            "5.10",
            vec![
                case(
                    "r/migrate",
                    fail(),
                    json!({"account.c.reset": 14, "bind.a": "ok"}),
                ),
                case("b/same", pass(), json!({"bind.b": "EADDRINUSE"})),
            ],
        );
        let k61 = kernel(
            "6.1",
            vec![
                case(
                    "r/migrate",
                    pass(),
                    json!({"account.c.reset": 0, "bind.a": "ok"}),
                ),
                case("b/same", pass(), json!({"bind.b": "EADDRINUSE"})),
            ],
        );
        Report::new(vec![k61, k510], &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_column_names_a_build_by_tree_and_config() {
        let mut k = testdata::two_kernels().kernels.remove(0);
        k.package_version = Some("6.1.192-2".into());
        assert_eq!(package(&k), "6.1.192-2");
        k.built = Some(crate::resultset::results::BuiltFrom {
            source_identity: "git:3f33a818a6f32f180061c0a65e660ce5d0824d66".into(),
            config: "minimal".into(),
            config_sha256: "60446eb0".into(),
            compiler: "gcc 12".into(),
        });
        assert_eq!(package(&k), "built: git:3f33a818a6f3 minimal");
        k.built = None;
        k.package_version = None;
        assert_eq!(package(&k), "-");
    }

    #[test]
    fn the_console_tail_is_found_beside_a_moved_result_by_its_run_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut kernel = testdata::two_kernels().kernels.remove(0);
        // Written elsewhere (a CI shard's folder), now in `dir`.
        kernel.boot = Some(crate::resultset::results::BootFacts {
            accel: "tcg".into(),
            accel_reason: None,
            attempts: 1,
            hung_attempts: Vec::new(),
            boot_to_ready_ms: None,
            total_ms: 1,
            exit: "PoweredOff".into(),
            console_problems: Vec::new(),
            console_log: "/elsewhere/6.1/console-20261201T000000Z-1.log".into(),
            resumes: Vec::new(),
            qemu_command: None,
            fresh: None,
        });
        let kdir = dir.path().join(&kernel.kernel);
        std::fs::create_dir_all(&kdir).unwrap();
        std::fs::write(kdir.join("console-20261201T000000Z-1.log"), "one\ntwo\n").unwrap();
        let report = Report::new(vec![kernel.clone()], &[]).from_dir(dir.path());
        assert_eq!(report.console_tail(&kernel, 1).as_deref(), Some("two"));
    }

    #[test]
    fn kernels_sort_by_version_then_name() {
        let mut ids = vec!["host", "6.12", "5.10", "7.2", "6.1", "/tmp/bzImage"];
        ids.sort_by_key(|id| kernel_order(id));
        assert_eq!(ids, ["5.10", "6.1", "6.12", "7.2", "/tmp/bzImage", "host"]);
    }

    #[test]
    fn volatile_keys_come_from_the_cases() {
        let steps = "  - socket: a\n  - bind: a\n    addr: 127.0.0.1\n  - listen: a\n  - clients: c\n    count: 2\n    to: a\n  - account: c\n";
        let text =
            format!("summary: t\nsteps:\n{steps}expect:\n  - obs: account.c.reset\n    max: 20\n");
        let case = crate::case::load_str(
            "r/migrate",
            std::path::Path::new("cases/r/migrate.yaml"),
            &text,
        )
        .unwrap();
        let report = Report::new(testdata::two_kernels().kernels, &[case]);
        let rows = report.rows();
        let migrate = rows.iter().find(|r| r.case == "r/migrate").unwrap();
        assert!(migrate.diff.differences[0].volatile);
        assert!(
            !migrate.diff.odd(0),
            "a bounded count moving is not a difference of behaviour"
        );
    }

    #[test]
    fn rows_cover_every_case_of_every_kernel() {
        let mut report = testdata::two_kernels();
        report.kernels[1].cases.push(testdata::case(
            "only/new",
            testdata::pass(),
            serde_json::json!({}),
        ));
        let rows = report.rows();
        let ids: Vec<&str> = rows.iter().map(|r| r.case.as_str()).collect();
        assert_eq!(ids, ["b/same", "only/new", "r/migrate"]);
        assert_eq!(
            report.kernels[0].kernel, "5.10",
            "sorted by version, not input order"
        );
        assert!(rows[1].runs[0].is_none() && rows[1].runs[1].is_some());
    }
}
