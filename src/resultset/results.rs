//! Result sets on disk: one JSON file per kernel with every case's observations and
//! verdict, the release string, boot facts and timings. Written atomically.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::judge::Verdict;
use crate::observe::{Observations, Outcome};

/// Where `run` writes by default; `results/baseline` is the committed reference.
pub const DEFAULT_DIR: &str = "results/latest";
/// The committed reference `sockmatrix diff --baseline` gates against.
pub const BASELINE_DIR: &str = "results/baseline";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KernelResult {
    /// Catalogue id (`6.1`) or `host`.
    pub kernel: String,
    /// `uname -r` inside the guest, when the agent got that far.
    pub release: Option<String>,
    /// `uname -v`: where distributions name the upstream version (Debian's
    /// "... Debian 6.1.192-2 ..."), which verdicts and `requires` are decided by.
    /// Absent in results written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uname_version: Option<String>,
    /// The Debian package version, for pinned kernels (the tree's version for a
    /// kernel built from source).
    pub package_version: Option<String>,
    /// For a kernel `sockmatrix kernels build` made: what it was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built: Option<BuiltFrom>,
    /// None when the kernel ran the plan; else why it could not.
    pub could_not_run: Option<String>,
    pub boot: Option<BootFacts>,
    pub cases: Vec<CaseResult>,
    /// Seconds since the epoch when the run finished.
    pub finished_at: u64,
}

/// A source-built kernel's inputs, as `kernels build` recorded them: enough to say
/// which tree and config a result came from, and to rebuild it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuiltFrom {
    /// `git:<commit>[+dirty:<diff hash>]`, `tarball:<sha256>`,
    /// `debian:<package>=<version>:<sha256>` or `tree:<hash>`.
    pub source_identity: String,
    /// `minimal`, `defconfig` or `file:NAME`.
    pub config: String,
    /// sha256 of the final `.config`.
    pub config_sha256: String,
    /// First line of the compiler's `--version`.
    pub compiler: String,
}

impl BuiltFrom {
    /// The commit a git-tree build came from, when the tree was clean.
    pub fn git_commit(&self) -> Option<&str> {
        let commit = self.source_identity.strip_prefix("git:")?;
        (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())).then_some(commit)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BootFacts {
    /// The accelerator the guest really ran under (`tcg`, `kvm`); older results say
    /// what was asked for (`Auto`).
    pub accel: String,
    /// Why that accelerator (the `--accel` flag, or the `auto` verdict and its source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel_reason: Option<String>,
    pub attempts: u32,
    pub hung_attempts: Vec<String>,
    pub boot_to_ready_ms: Option<u64>,
    pub total_ms: u64,
    /// How the guest ended (`PoweredOff`, `Panicked ...`).
    pub exit: String,
    /// Panics, oopses, BUG and WARN lines from the console.
    pub console_problems: Vec<String>,
    pub console_log: PathBuf,
    /// Guests that died mid-plan before this one (one line each); the cases they
    /// had not reported ran again in a new boot.
    #[serde(default)]
    pub resumes: Vec<String>,
    /// The QEMU command line that ran the guest (shell-quoted), to repeat a boot by
    /// hand; older results do not have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_command: Option<String>,
    /// The agent's clock and RNG at its start (see `resume::Freshness`); older
    /// results do not have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh: Option<crate::resume::Freshness>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaseResult {
    pub case: String,
    pub file: PathBuf,
    pub outcome: Outcome,
    pub observations: Observations,
    pub elapsed_ms: u64,
    pub verdict: Verdict,
}

impl CaseResult {
    /// A case's run on one kernel together with its verdict.
    pub fn new(
        case: &crate::case::Case,
        run: crate::observe::CaseRun,
        verdict: Verdict,
    ) -> CaseResult {
        CaseResult {
            case: case.id.clone(),
            file: case.file.clone(),
            outcome: run.outcome,
            observations: run.observations,
            elapsed_ms: run.elapsed_ms,
            verdict,
        }
    }
}

pub fn kernel_dir(results_dir: &Path, kernel: &str) -> PathBuf {
    results_dir.join(kernel)
}

pub fn result_path(results_dir: &Path, kernel: &str) -> PathBuf {
    kernel_dir(results_dir, kernel).join("result.json")
}

pub use crate::atomic_file::write_atomic;

/// A console log of this run, written elsewhere during the boot, that `save` moves
/// into the kernel's folder as `name` together with the result that points to it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingLog {
    pub from: PathBuf,
    pub name: String,
}

/// Saves a kernel's result and this run's console logs so that the folder is always
/// self-consistent: the logs go in first under names unique to this run (no result
/// points to them yet), then `result.json` is replaced atomically, then the logs of
/// earlier runs are removed. If anything fails, the earlier result and its logs stay
/// as they were and this run's logs are removed. The error names the file and the
/// OS error.
pub fn save(results_dir: &Path, result: &KernelResult, logs: &[PendingLog]) -> Result<PathBuf> {
    let dir = kernel_dir(results_dir, &result.kernel);
    let path = result_path(results_dir, &result.kernel);
    let mut text = serde_json::to_string_pretty(result)?;
    text.push('\n');
    let mut placed: Vec<PathBuf> = Vec::new();
    let saved = (|| -> Result<()> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for log in logs {
            let dest = dir.join(&log.name);
            crate::atomic_file::move_into_place(&log.from, &dest)?;
            placed.push(dest);
        }
        write_atomic(&path, text.as_bytes())
    })();
    if let Err(e) = saved {
        for dest in placed {
            let _ = std::fs::remove_file(dest);
        }
        return Err(e);
    }
    let mut keep: Vec<String> = logs.iter().map(|l| l.name.clone()).collect();
    // A result saved again elsewhere (merge) keeps the log it names.
    keep.extend(
        result
            .boot
            .as_ref()
            .and_then(|b| b.console_log.file_name())
            .map(|n| n.to_string_lossy().into_owned()),
    );
    remove_stale_logs(&dir, &keep);
    Ok(path)
}

/// Console logs of earlier runs (`console*.log`) that the new result does not name.
fn remove_stale_logs(dir: &Path, keep: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_log = name.starts_with("console") && name.ends_with(".log");
        if is_log && !keep.iter().any(|k| *k == name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

pub fn load(path: &Path) -> Result<KernelResult> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a sockmatrix result file", path.display()))
}

/// A result set: every `<kernel>/result.json` directly under `dir`, by kernel id.
/// Other files (console logs, stray folders) are ignored.
pub fn load_set(dir: &Path) -> Result<Vec<KernelResult>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading result set {}", dir.display()))?;
    let mut set = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading result set {}", dir.display()))?
            .path()
            .join("result.json");
        if path.is_file() {
            set.push(load(&path)?);
        }
    }
    anyhow::ensure!(
        !set.is_empty(),
        "{} holds no <kernel>/result.json",
        dir.display()
    );
    set.sort_by(|a, b| a.kernel.cmp(&b.kernel));
    Ok(set)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn result(kernel: &str, log: &Path) -> KernelResult {
        KernelResult {
            kernel: kernel.into(),
            release: Some("6.1.0-test".into()),
            uname_version: None,
            package_version: None,
            built: None,
            could_not_run: None,
            boot: Some(BootFacts {
                accel: "tcg".into(),
                accel_reason: None,
                attempts: 1,
                hung_attempts: Vec::new(),
                boot_to_ready_ms: None,
                total_ms: 1,
                exit: "PoweredOff".into(),
                console_problems: Vec::new(),
                console_log: log.to_path_buf(),
                resumes: Vec::new(),
                qemu_command: None,
                fresh: None,
            }),
            cases: Vec::new(),
            finished_at: 1,
        }
    }

    fn pending(scratch: &Path, name: &str, text: &str) -> PendingLog {
        let from = scratch.join(name);
        std::fs::write(&from, text).unwrap();
        PendingLog {
            from,
            name: name.into(),
        }
    }

    #[test]
    fn a_result_and_its_logs_replace_the_old_ones_together() {
        let dir = tempfile::tempdir().unwrap();
        let (results, scratch) = (dir.path().join("results"), dir.path().join("scratch"));
        std::fs::create_dir_all(&scratch).unwrap();
        let kdir = kernel_dir(&results, "6.1");

        let first = [pending(&scratch, "console-r1.log", "run 1")];
        save(
            &results,
            &result("6.1", &kdir.join("console-r1.log")),
            &first,
        )
        .unwrap();
        // A log of the layout before per-run names: stale once a new result is in.
        std::fs::write(kdir.join("console.2.log"), "older").unwrap();

        let second = [
            pending(&scratch, "console-r2.log", "run 2"),
            pending(&scratch, "console-r2.2.log", "run 2, resumed"),
        ];
        let path = save(
            &results,
            &result("6.1", &kdir.join("console-r2.log")),
            &second,
        )
        .unwrap();
        let saved = load(&path).unwrap();
        let log = &saved.boot.unwrap().console_log;
        assert_eq!(std::fs::read_to_string(log).unwrap(), "run 2");
        let mut names: Vec<String> = std::fs::read_dir(&kdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["console-r2.2.log", "console-r2.log", "result.json"]);
        // Results are readable by others, like the logs (tempfile would give 0600).
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "mode {mode:o}");
        assert!(
            !scratch.join("console-r2.log").exists(),
            "moved, not copied"
        );
    }

    #[test]
    fn a_failed_save_leaves_the_earlier_result_and_log_intact() {
        let dir = tempfile::tempdir().unwrap();
        let (results, scratch) = (dir.path().join("results"), dir.path().join("scratch"));
        std::fs::create_dir_all(&scratch).unwrap();
        let kdir = kernel_dir(&results, "6.1");
        let first = [pending(&scratch, "console-r1.log", "run 1")];
        save(
            &results,
            &result("6.1", &kdir.join("console-r1.log")),
            &first,
        )
        .unwrap();

        // result.json cannot be replaced: a folder squats its temporary name's place.
        let squat = [pending(&scratch, "console-r2.log", "run 2")];
        let blocked = result_path(&results, "6.1");
        let saved_before = std::fs::read(&blocked).unwrap();
        std::fs::remove_file(&blocked).unwrap();
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), "").unwrap();
        let err = format!(
            "{:#}",
            save(
                &results,
                &result("6.1", &kdir.join("console-r2.log")),
                &squat
            )
            .unwrap_err()
        );
        assert!(err.contains(&blocked.display().to_string()), "{err}");
        std::fs::remove_dir_all(&blocked).unwrap();
        std::fs::write(&blocked, saved_before).unwrap();
        // The new run's log was taken back; the old log is still there.
        assert!(!kdir.join("console-r2.log").exists());
        assert_eq!(
            std::fs::read_to_string(kdir.join("console-r1.log")).unwrap(),
            "run 1"
        );
    }
}
