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
    /// The Debian package version, for pinned kernels.
    pub package_version: Option<String>,
    /// None when the kernel ran the plan; else why it could not.
    pub could_not_run: Option<String>,
    pub boot: Option<BootFacts>,
    pub cases: Vec<CaseResult>,
    /// Seconds since the epoch when the run finished.
    pub finished_at: u64,
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

/// Writes the file next to its final name and renames it: readers see the old file
/// or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("result path has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn save(results_dir: &Path, result: &KernelResult) -> Result<PathBuf> {
    let path = result_path(results_dir, &result.kernel);
    let mut text = serde_json::to_string_pretty(result)?;
    text.push('\n');
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
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
