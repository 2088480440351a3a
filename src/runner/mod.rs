//! The matrix runner: provisions the selected kernels, boots each once for all the
//! selected cases (at most `max_guests` at a time), judges and saves the results.
//! Progress goes out as events; the runner never prints.

mod agent_binary;
mod catalogue_source;
mod guest;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::case::{Case, KernelVersion};
use crate::kernel::{self, Catalogue, Lock};
use crate::qemu::{Accel, Gate};
use crate::results::{self, CaseResult, KernelResult};

pub use agent_binary::agent_binary;
pub use catalogue_source::{catalogue_dir, chosen_dir as chosen_catalogue_dir, set_catalogue_dir};
pub use guest::{write_guest_image, KernelImage};

/// The id that means "the kernel this machine runs", in-process.
pub const HOST: &str = crate::host::HOST_KERNEL;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub accel: Accel,
    pub memory_mb: u32,
    pub cpus: u32,
    pub retries: u32,
    pub ready_timeout: Duration,
    pub max_guests: usize,
    pub results_dir: PathBuf,
    /// Where each kernel's result is also kept, per run (None: not kept).
    pub history_dir: Option<PathBuf>,
    pub show_downloads: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            accel: Accel::Auto,
            memory_mb: 512,
            cpus: 2,
            retries: 2,
            ready_timeout: Duration::from_secs(20),
            max_guests: 2,
            results_dir: PathBuf::from(results::DEFAULT_DIR),
            history_dir: Some(PathBuf::from(crate::history::DEFAULT_DIR)),
            show_downloads: true,
        }
    }
}

/// What the runner reports as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    Provisioned {
        kernel: String,
        vmlinuz: PathBuf,
    },
    Booting {
        kernel: String,
        attempt: u32,
        accel: String,
    },
    Retrying {
        kernel: String,
        reason: String,
    },
    AgentUp {
        kernel: String,
        release: String,
    },
    CaseDone {
        kernel: String,
        case: String,
    },
    ConsoleProblem {
        kernel: String,
        line: String,
    },
    KernelDone {
        kernel: String,
        saved: Option<PathBuf>,
        result: Box<KernelResult>,
    },
}

pub fn load_catalogue() -> Result<(Catalogue, Lock)> {
    let dir = catalogue_dir()?;
    let catalogue = Catalogue::load(&dir.join("kernels.yaml"))?;
    let lock = Lock::load(&dir.join("kernels.lock"))?;
    Ok((catalogue, lock))
}

/// The name a kernel's results go under: its id, or `local-<file name>` for a path
/// to a bzImage (a path must never become a folder path under results/).
pub fn result_label(id: &str) -> String {
    if !id.contains('/') {
        return id.to_string();
    }
    let name = Path::new(id).file_name().map_or_else(
        || "kernel".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    format!("local-{name}")
}

/// Turns a kernel id (or a path to a bzImage) into something to boot.
pub fn provision(
    id: &str,
    catalogue: &Catalogue,
    lock: &Lock,
    show_downloads: bool,
) -> Result<KernelImage> {
    let as_path = Path::new(id);
    if catalogue.get(id).is_none() && (id.contains('/') || as_path.is_file()) {
        kernel::bzimage::inspect_file(as_path).with_context(|| format!("kernel {id}"))?;
        return Ok(KernelImage {
            id: result_label(id),
            vmlinuz: as_path.to_path_buf(),
            package_version: None,
        });
    }
    if catalogue.get(id).is_none() {
        anyhow::bail!(
            "unknown kernel `{id}`: not in the kernel catalogue ({}) and not a bzImage path",
            catalogue.ids().join(", ")
        );
    }
    let p = kernel::provision(catalogue, lock, id, &kernel::cache_dir(), show_downloads)
        .with_context(|| format!("provisioning kernel {id}"))?;
    Ok(KernelImage {
        id: p.id,
        vmlinuz: p.vmlinuz,
        package_version: p.version,
    })
}

/// Runs `cases` on every kernel in `kernels`, booting at most `opts.max_guests` at
/// once. A kernel that cannot be provisioned or booted is reported as such in its
/// result; the others go on. Each kernel's result is saved as soon as it is done.
pub fn run_kernels(
    kernels: &[String],
    cases: &[Case],
    opts: &RunOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<KernelResult> {
    let work: Vec<(String, &[Case])> = kernels.iter().map(|k| (k.clone(), cases)).collect();
    run_each(&work, opts, progress)
}

/// Like `run_kernels`, with a case list of its own for each kernel.
pub fn run_each(
    work: &[(String, &[Case])],
    opts: &RunOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<KernelResult> {
    let gate = Gate::new(opts.max_guests.max(1));
    let catalogue = load_catalogue();
    let mut out: Vec<Option<KernelResult>> = vec![None; work.len()];
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (slot, (id, cases)) in work.iter().enumerate() {
            let (gate, catalogue) = (&gate, &catalogue);
            handles.push((
                slot,
                scope.spawn(move || run_one(id, cases, opts, gate, catalogue, progress)),
            ));
        }
        for (slot, handle) in handles {
            out[slot] = handle.join().ok();
        }
    });
    // A first run's KVM trial boot keeps its verdict for the next runs.
    crate::qemu::finish_probe();
    out.into_iter().flatten().collect()
}

fn run_one(
    id: &str,
    cases: &[Case],
    opts: &RunOptions,
    gate: &Gate,
    catalogue: &Result<(Catalogue, Lock)>,
    progress: &(dyn Fn(Progress) + Sync),
) -> KernelResult {
    let result = if id == HOST {
        host_result(cases)
    } else {
        let image = catalogue
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|(cat, lock)| provision(id, cat, lock, opts.show_downloads));
        match image {
            Ok(image) => {
                progress(Progress::Provisioned {
                    kernel: id.into(),
                    vmlinuz: image.vmlinuz.clone(),
                });
                guest::run_on_kernel(&image, cases, opts, gate, progress)
            }
            Err(e) => could_not_run(&result_label(id), cases, format!("{e:#}")),
        }
    };
    let saved = results::save(&opts.results_dir, &result).ok();
    // History is a convenience: losing it must not lose the run.
    if let Some(dir) = &opts.history_dir {
        let _ = crate::history::record(dir, &result);
    }
    progress(Progress::KernelDone {
        kernel: id.into(),
        saved,
        result: Box::new(result.clone()),
    });
    result
}

/// Host mode as a result set, so that it is saved, diffed and reported like a guest's.
pub fn host_result(cases: &[Case]) -> KernelResult {
    if let Err(why) = crate::host::preflight() {
        return could_not_run(HOST, cases, why);
    }
    let run = crate::host::run(cases, |_, _, _| {});
    let cases = cases
        .iter()
        .zip(run.results)
        .map(|(case, (run, verdict))| CaseResult::new(case, run, verdict))
        .collect();
    KernelResult {
        kernel: HOST.into(),
        release: Some(run.release),
        uname_version: Some(run.uname_version),
        package_version: None,
        could_not_run: None,
        boot: None,
        cases,
        finished_at: results::now(),
    }
}

pub fn could_not_run(id: &str, cases: &[Case], why: String) -> KernelResult {
    let verdict = crate::judge::Verdict::Error {
        message: why.clone(),
    };
    KernelResult {
        kernel: id.into(),
        release: None,
        uname_version: None,
        package_version: None,
        could_not_run: Some(why.clone()),
        boot: None,
        cases: cases
            .iter()
            .map(|c| CaseResult {
                case: c.id.clone(),
                file: c.file.clone(),
                outcome: crate::observe::Outcome::Error {
                    message: why.clone(),
                    line: None,
                },
                observations: Default::default(),
                elapsed_ms: 0,
                verdict: verdict.clone(),
            })
            .collect(),
        finished_at: results::now(),
    }
}

/// The kernel version a result was judged against: the upstream version of
/// `uname -v` where the result recorded it, else the release's.
pub fn version_of(result: &KernelResult) -> Option<KernelVersion> {
    let release = result.release.as_deref()?;
    KernelVersion::from_uname(release, result.uname_version.as_deref().unwrap_or_default())
}
