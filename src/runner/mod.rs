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

/// Expands the `--kernel` values into the kernel ids to run, in order: catalogue ids
/// and bzImage paths as given, a release (`6.1.176`, `6.1.192-3`) as its label, a
/// whole series (`6.1/all`, `mainline/all`) as every release of it. Releases are
/// pinned in the lock (written when new pins were added), so later runs need no
/// index. Errors (unknown series or release) are bad input.
pub fn resolve_kernels(
    specs: &[String],
    show_downloads: bool,
) -> std::result::Result<Vec<String>, ResolveError> {
    let (catalogue, mut lock) = load_catalogue().map_err(ResolveError::BadInput)?;
    let mut index: Option<kernel::ReleaseIndex> = None;
    let mut out: Vec<String> = Vec::new();
    let mut pinned_new = false;
    for spec in specs {
        let series = spec.strip_suffix("/all");
        let is_release = kernel::releases::looks_like_release(spec);
        if catalogue.get(spec).is_some() || (series.is_none() && !is_release) {
            out.push(spec.clone());
            continue;
        }
        if let (Some(label), None) = (pinned_release(&lock, spec), series) {
            out.push(label);
            continue;
        }
        if index.is_none() {
            let idx = load_releases(&catalogue, false, show_downloads)
                .map_err(ResolveError::Unreachable)?;
            index = Some(idx);
        }
        let idx = index.as_ref().expect("loaded above");
        let picked: Vec<&kernel::Release> = match series {
            Some(name) => idx.series(name).map_err(ResolveError::BadInput)?,
            None => vec![idx.find(spec).map_err(ResolveError::BadInput)?],
        };
        for r in picked {
            if lock.releases.get(&r.label) != Some(&r.pin) {
                lock.releases.insert(r.label.clone(), r.pin.clone());
                pinned_new = true;
            }
            out.push(r.label.clone());
        }
    }
    if pinned_new {
        let dir = catalogue_dir().map_err(ResolveError::Unreachable)?;
        lock.save(&dir.join("kernels.lock"))
            .map_err(ResolveError::Unreachable)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|k| seen.insert(k.clone()));
    Ok(out)
}

/// Why `--kernel` values could not be turned into kernels.
#[derive(Debug)]
pub enum ResolveError {
    /// An unknown series or release, a broken catalogue: the user's input.
    BadInput(anyhow::Error),
    /// The mirror's indexes could not be read, or the lock not written.
    Unreachable(anyhow::Error),
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::BadInput(e) | ResolveError::Unreachable(e) => write!(f, "{e:#}"),
        }
    }
}

/// A release already pinned in the lock, by label or upstream version (the newest
/// pinned Debian revision).
fn pinned_release(lock: &Lock, spec: &str) -> Option<String> {
    if lock.releases.contains_key(spec) {
        return Some(spec.to_string());
    }
    lock.releases
        .iter()
        .filter(|(_, pin)| kernel::releases::split_version(&pin.version).0 == spec)
        .max_by(|a, b| kernel::compare_debian_versions(&a.1.version, &b.1.version))
        .map(|(label, _)| label.clone())
}

/// The mirror's releases (cached for hours; `refresh` reads the indexes again).
pub fn load_releases(
    catalogue: &Catalogue,
    refresh: bool,
    progress: bool,
) -> Result<kernel::ReleaseIndex> {
    let suites = catalogue.releases.as_ref().with_context(|| {
        format!(
            "{} has no `releases:` section naming the suites to list releases from",
            catalogue.path.display()
        )
    })?;
    kernel::releases::load(suites, &kernel::cache_dir(), refresh, progress)
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
    let release = catalogue.get(id).is_none() && lock.releases.contains_key(id);
    if catalogue.get(id).is_none() && !release && (id.contains('/') || as_path.is_file()) {
        kernel::bzimage::inspect_file(as_path).with_context(|| format!("kernel {id}"))?;
        return Ok(KernelImage {
            id: result_label(id),
            vmlinuz: as_path.to_path_buf(),
            package_version: None,
        });
    }
    if catalogue.get(id).is_none() && !release {
        anyhow::bail!(
            "unknown kernel `{id}`: not in the kernel catalogue ({}), not a release (`6.1.176`, `6.1/all`) and not a bzImage path",
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
