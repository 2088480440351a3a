//! The matrix runner: provisions the selected kernels, boots each once for all the
//! selected cases (at most `max_guests` at a time), judges and saves the results.
//! Progress goes out as events; the runner never prints.

mod agent_binary;
mod catalogue_source;
mod guest;
mod modules;
mod restore;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::case::{Case, KernelVersion};
use crate::kernel::{self, Catalogue, Lock};
use crate::qemu::{Accel, Gate};
use crate::resultset::results::{self, CaseResult, KernelResult};

pub use agent_binary::agent_binary;
pub use catalogue_source::{catalogue_dir, chosen_dir as chosen_catalogue_dir, set_catalogue_dir};
pub use guest::{scratch_dir, write_guest_image, KernelImage, KernelRun};

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
    /// Boot every guest from scratch; else restore a saved guest where one can be.
    pub cold: bool,
    /// QEMU machine for every guest (`--machine`); None: what each kernel declares,
    /// else microvm with a fallback to pc.
    pub machine: Option<crate::qemu::Machine>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            accel: Accel::Auto,
            memory_mb: 512,
            cpus: 2,
            retries: 2,
            ready_timeout: Duration::from_secs(20),
            max_guests: default_guests(512),
            results_dir: PathBuf::from(results::DEFAULT_DIR),
            history_dir: Some(PathBuf::from(crate::resultset::history::DEFAULT_DIR)),
            show_downloads: true,
            cold: false,
            machine: None,
        }
    }
}

impl RunOptions {
    /// A bisection step (bisect-run, bisect-releases, fixes --bisect): one kernel at
    /// a time, each booted once, so it boots cold (saving a snapshot of an image
    /// booted once would only cost time and cache space); it waits longer for a slow
    /// boot, since a false skip costs a bisection more; and it keeps no history.
    pub fn bisection(accel: Accel, results_dir: PathBuf, show_downloads: bool) -> Self {
        RunOptions {
            accel,
            max_guests: 1,
            ready_timeout: Duration::from_secs(60),
            results_dir,
            history_dir: None,
            show_downloads,
            cold: true,
            ..RunOptions::default()
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
    /// No snapshot to restore: booting one to save (carrying these modules).
    SavingSnapshot {
        kernel: String,
        modules: Vec<String>,
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
        saved: std::result::Result<PathBuf, SaveError>,
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

/// The name a bzImage file's results go under: `local-<release>-<sha256 prefix>`
/// (the file name when the header carries no release). The hash makes it unique to
/// the image: two trees' `arch/x86/boot/bzImage` never share a folder, the same image
/// always gets the same one, and a path never becomes a folder path under results/.
pub fn image_label(path: &Path) -> Result<String> {
    let release = kernel::bzimage::inspect_file(path)?;
    let name = release.unwrap_or_else(|| {
        path.file_name()
            .map_or_else(|| "kernel".into(), |n| n.to_string_lossy().into_owned())
    });
    let name = kernel::folder_safe(&name);
    let sha = kernel::sha256_file(path)?;
    Ok(format!("local-{name}-{}", &sha[..12]))
}

/// What a `--kernel` argument names, decided before anything boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// The kernel this machine runs (`host`).
    Host,
    /// A catalogue id, or a release pinned in the lock (`6.1.176`).
    Catalogue(String),
    /// A bzImage file, with the label its results go under.
    Image { path: PathBuf, label: String },
}

impl KernelChoice {
    /// The name its results go under.
    pub fn label(&self) -> String {
        match self {
            KernelChoice::Host => HOST.into(),
            KernelChoice::Catalogue(id) => id.clone(),
            KernelChoice::Image { label, .. } => label.clone(),
        }
    }

    /// The argument the runner takes (`run_each`'s kernel strings).
    pub fn arg(&self) -> String {
        match self {
            KernelChoice::Host => HOST.into(),
            KernelChoice::Catalogue(id) => id.clone(),
            KernelChoice::Image { path, .. } => path.to_string_lossy().into_owned(),
        }
    }
}

/// Checks a kernel id (after `resolve_kernels`): `host`, a catalogue id, a release
/// pinned in the lock, a kernel built from source, or an existing file that is a bzImage. Errors are bad input
/// (exit 2), said before anything boots.
pub fn choose_kernel(arg: &str, catalogue: Option<&(Catalogue, Lock)>) -> Result<KernelChoice> {
    if arg == HOST {
        return Ok(KernelChoice::Host);
    }
    if let Some((cat, lock)) = catalogue {
        if cat.get(arg).is_some() || lock.releases.contains_key(arg) {
            return Ok(KernelChoice::Catalogue(arg.into()));
        }
    }
    let catalogue = catalogue.map(|(c, _)| c);
    // A kernel built by `kernels build`, by its id.
    let cache = kernel::cache_dir();
    if kernel::source_build::built::find_by_id(&cache, arg).is_some() {
        return Ok(KernelChoice::Catalogue(arg.into()));
    }
    if let Some(damaged) = kernel::source_build::built::list(&cache)
        .into_iter()
        .find(|k| k.id == arg || k.key == arg)
    {
        anyhow::bail!(
            "--kernel {arg}: the built kernel's {} no longer matches the sha256 recorded when it was built (changed or damaged since); build it again with the same inputs",
            damaged.vmlinuz().display()
        );
    }
    let path = Path::new(arg);
    if path.is_file() {
        let label = image_label(path).with_context(|| format!("--kernel {arg}"))?;
        return Ok(KernelChoice::Image {
            path: path.to_path_buf(),
            label,
        });
    }
    let known = catalogue.map_or_else(
        || "the catalogue did not load".into(),
        |c| c.ids().join(", "),
    );
    if path.exists() {
        anyhow::bail!("--kernel {arg}: not a file (a kernel is a catalogue id or a bzImage file)");
    }
    anyhow::bail!(
        "--kernel {arg}: no such kernel: not in the kernel catalogue ({known}), not a release, not a built kernel (`kernels list`), and no file of that name"
    )
}

/// Guest memory that the kernels boot with and this host can give.
pub const MEMORY_MB: std::ops::RangeInclusive<u32> = crate::case::model::GUEST_MEMORY_MB;

/// The memory of a kernel's guest: `--memory`, or more when a case asks for more
/// (`requires: [{memory: 1G}]`), rounded up to a power of two. One guest runs every
/// case of a kernel, so the largest need sizes it; the rounding keeps the sizes, and
/// so the saved guests (snapshots are keyed by memory), to a few.
pub fn guest_memory_mb(default_mb: u32, cases: &[crate::case::Case]) -> u32 {
    let needed = cases
        .iter()
        .flat_map(|c| &c.plan.requires)
        .filter_map(|r| match r {
            crate::case::Requirement::Memory(mb) => Some(*mb),
            _ => None,
        })
        .max();
    match needed {
        Some(mb) if mb > default_mb => mb.next_power_of_two().min(*MEMORY_MB.end()),
        _ => default_mb,
    }
}

/// Checks `--memory` (MiB) against `MEMORY_MB`.
pub fn check_memory(mb: u32) -> Result<()> {
    anyhow::ensure!(
        MEMORY_MB.contains(&mb),
        "--memory {mb}: guest memory must be between {} and {} MiB",
        MEMORY_MB.start(),
        MEMORY_MB.end()
    );
    Ok(())
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
        // `git bisect run` hands over the path `kernels build` printed: that build.
        if let Some(built) = built_at_path(as_path) {
            return Ok(built_image(&built));
        }
        let label = image_label(as_path).with_context(|| format!("kernel {id}"))?;
        return Ok(KernelImage {
            id: label,
            vmlinuz: as_path.to_path_buf(),
            package_version: None,
            built: None,
            modules: kernel::ModuleSource::Unavailable("kernel given as a bzImage path".into()),
            machine: None,
        });
    }
    if catalogue.get(id).is_none() && !release {
        if let Some(built) = kernel::source_build::built::find_by_id(&kernel::cache_dir(), id) {
            return Ok(built_image(&built));
        }
    }
    if catalogue.get(id).is_none() && !release {
        anyhow::bail!(
            "unknown kernel `{id}`: not in the kernel catalogue ({}), not a release (`6.1.176`, `6.1/all`), not a built kernel (`kernels list`) and not a bzImage path",
            catalogue.ids().join(", ")
        );
    }
    let p = kernel::provision(catalogue, lock, id, &kernel::cache_dir(), show_downloads)
        .with_context(|| format!("provisioning kernel {id}"))?;
    let modules = kernel::module_source(catalogue, lock, id, &kernel::cache_dir());
    Ok(KernelImage {
        id: p.id,
        vmlinuz: p.vmlinuz,
        package_version: p.version,
        built: None,
        modules,
        machine: catalogue.get(id).and_then(|e| e.machine),
    })
}

/// A kernel `kernels build` made, with its modules.builtin and declared machine.
fn built_image(built: &kernel::source_build::built::BuiltKernel) -> KernelImage {
    KernelImage {
        id: built.id.clone(),
        vmlinuz: built.vmlinuz(),
        package_version: Some(built.version.clone()),
        built: Some(built.built_from()),
        modules: kernel::source_build::module_source(built),
        machine: built.machine,
    }
}

/// The build a vmlinuz path belongs to, when it is one in the built-kernel cache.
fn built_at_path(vmlinuz: &Path) -> Option<kernel::source_build::built::BuiltKernel> {
    let vmlinuz = std::fs::canonicalize(vmlinuz).ok()?;
    let built = kernel::source_build::built::load(vmlinuz.parent()?, false)?;
    (std::fs::canonicalize(built.vmlinuz()).ok()? == vmlinuz).then_some(built)
}

/// The label of a kernel argument that could not even be provisioned.
fn fallback_label(id: &str) -> String {
    if !id.contains('/') {
        return id.to_string();
    }
    image_label(Path::new(id)).unwrap_or_else(|_| {
        let name = Path::new(id)
            .file_name()
            .map_or_else(|| "kernel".into(), |n| n.to_string_lossy().into_owned());
        format!("local-{name}")
    })
}

/// How much longer than on an idle machine a guest may take to reach its agent:
/// the 1-minute load average per core, between 1 and 6. A TCG guest gets a share of
/// a core, so on a machine busy with builds a cold boot that takes 4 s idle takes
/// 20 s or more, and a fixed timeout then reports a healthy kernel as dead.
pub fn boot_patience() -> f64 {
    patience(load_average(), cores())
}

/// The host's cores (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The host's 1-minute load average (NaN when unknown).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn patience(load: f64, cores: usize) -> f64 {
    let per_core = load / cores.max(1) as f64;
    if per_core.is_nan() {
        return 1.0;
    }
    per_core.clamp(1.0, 6.0)
}

/// Guests at once when not told: restored guests mostly wait, so more than one
/// per core (2 per core + 1), bounded by the memory available (guest size + 25%).
pub fn default_guests(memory_mb: u32) -> usize {
    let cores = cores();
    let available_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kb| kb / 1024);
    let by_memory = available_mb / (u64::from(memory_mb) * 5 / 4).max(1);
    (cores * 2 + 1).min(by_memory as usize).max(1)
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

/// Like `run_kernels`, with a case list of its own for each kernel. Every kernel has
/// a result, even one whose runner thread panicked (could not run, with the panic
/// message). A kernel stopped by an interrupt is reported but not saved.
pub fn run_each(
    work: &[(String, &[Case])],
    opts: &RunOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<KernelResult> {
    // Scratch folders of runs that were killed (SIGKILL leaves them) go first.
    crate::leftovers::sweep_temp_once();
    let gate = Gate::new(opts.max_guests.max(1));
    let catalogue = load_catalogue();
    let mut out: Vec<KernelResult> = Vec::with_capacity(work.len());
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (id, cases) in work {
            let (gate, catalogue) = (&gate, &catalogue);
            handles.push((
                id,
                cases,
                scope.spawn(move || run_one(id, cases, opts, gate, catalogue, progress)),
            ));
        }
        for (id, cases, handle) in handles {
            let result = handle.join().unwrap_or_else(|panic| {
                let why = format!(
                    "the runner for this kernel panicked: {}",
                    panic_message(&*panic)
                );
                let result = could_not_run(&fallback_label(id), cases, why);
                // The progress callback may be what panicked: it must not take the
                // other kernels' results down with it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    progress(Progress::KernelDone {
                        kernel: id.clone(),
                        saved: Err(SaveError::NotSaved),
                        result: Box::new(result.clone()),
                    })
                }));
                result
            });
            out.push(result);
        }
    });
    // A first run's KVM trial boot keeps its verdict for the next runs.
    crate::qemu::finish_probe();
    out
}

/// The text a panic was raised with.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Why a kernel's result is not on disk.
#[derive(Debug, Clone)]
pub enum SaveError {
    /// Writing failed: the message names the file and the OS error.
    Failed(String),
    /// Interrupted or panicked: deliberately not saved, earlier results are kept.
    NotSaved,
}

/// At most two kernels are downloaded and unpacked at a time, whatever the run's size.
static PROVISIONING: std::sync::LazyLock<Gate> = std::sync::LazyLock::new(|| Gate::new(2));

fn run_one(
    id: &str,
    cases: &[Case],
    opts: &RunOptions,
    gate: &Gate,
    catalogue: &Result<(Catalogue, Lock)>,
    progress: &(dyn Fn(Progress) + Sync),
) -> KernelResult {
    let run = if id == HOST {
        KernelRun::without_boot(host_result(cases))
    } else {
        let image = catalogue
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|(cat, lock)| {
                // Thirty releases must not download and unpack all at once on two cores.
                let _slot = PROVISIONING.acquire();
                provision(id, cat, lock, opts.show_downloads)
            });
        match image {
            Ok(image) => {
                progress(Progress::Provisioned {
                    kernel: id.into(),
                    vmlinuz: image.vmlinuz.clone(),
                });
                guest::run_on_kernel(&image, cases, opts, gate, progress)
            }
            Err(e) => {
                KernelRun::without_boot(could_not_run(&fallback_label(id), cases, format!("{e:#}")))
            }
        }
    };
    let mut result = run.result.clone();
    let saved = if let Some(signal) = crate::interrupt::requested() {
        // An interrupted kernel's result is partial: the earlier one stays in place.
        result.could_not_run = Some(format!("interrupted by {signal}; results not saved"));
        Err(SaveError::NotSaved)
    } else {
        match results::save(&opts.results_dir, &result, &run.logs) {
            Ok(path) => {
                // History is a convenience: losing it must not lose the run.
                if let Some(dir) = &opts.history_dir {
                    let _ = crate::resultset::history::record(dir, &result);
                }
                Ok(path)
            }
            Err(e) => {
                let why = format!("results could not be saved: {e:#}");
                mark_unsaved(&mut result, &why);
                Err(SaveError::Failed(why))
            }
        }
    };
    drop(run);
    progress(Progress::KernelDone {
        kernel: id.into(),
        saved,
        result: Box::new(result.clone()),
    });
    result
}

/// A kernel whose result could not be written counts as could-not-run: each case
/// becomes an error that still says what the run saw.
pub fn mark_unsaved(result: &mut KernelResult, why: &str) {
    result.could_not_run = Some(why.to_string());
    for case in &mut result.cases {
        let seen = case.verdict.label();
        case.verdict = crate::judge::Verdict::Error {
            message: format!("{why} (the case ran: {seen})"),
        };
    }
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
        built: None,
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
        built: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_patience_grows_with_the_load_per_core_within_bounds() {
        assert_eq!(patience(0.3, 2), 1.0);
        assert_eq!(patience(2.0, 2), 1.0);
        assert_eq!(patience(9.0, 2), 4.5);
        assert_eq!(patience(40.0, 2), 6.0);
        assert_eq!(patience(f64::NAN, 2), 1.0);
    }

    /// A file with a bzImage header carrying `release` and some bytes of its own.
    fn fake_bzimage(path: &Path, release: &str, body: &[u8]) {
        let mut b = vec![0u8; 0x1000];
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x20E..0x210].copy_from_slice(&0x200u16.to_le_bytes());
        b[0x400..0x400 + release.len()].copy_from_slice(release.as_bytes());
        b.extend_from_slice(body);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b).unwrap();
    }

    #[test]
    fn two_images_of_one_file_name_get_two_folders() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, a2) = (
            dir.path().join("tree-a/arch/x86/boot/bzImage"),
            dir.path().join("tree-b/arch/x86/boot/bzImage"),
            dir.path().join("copy/vmlinuz"),
        );
        fake_bzimage(&a, "6.1.0-test", b"one");
        fake_bzimage(&b, "6.1.0-test", b"two");
        fake_bzimage(&a2, "6.1.0-test", b"one");
        let (la, lb, la2) = (
            image_label(&a).unwrap(),
            image_label(&b).unwrap(),
            image_label(&a2).unwrap(),
        );
        assert_ne!(la, lb, "same file name and release, different images");
        assert_eq!(la, la2, "the same image gets the same folder");
        assert!(la.starts_with("local-6.1.0-test-"), "{la}");
        assert!(!la.contains('/'));
    }

    #[test]
    fn kernel_arguments_are_checked_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("bzImage");
        fake_bzimage(&image, "6.1.0-test", b"");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not a kernel").unwrap();
        let catalogue = load_catalogue().unwrap();
        let id = catalogue.0.ids()[0].clone();
        assert_eq!(
            choose_kernel(&id, Some(&catalogue)).unwrap(),
            KernelChoice::Catalogue(id)
        );
        assert_eq!(choose_kernel("host", None).unwrap(), KernelChoice::Host);
        assert!(matches!(
            choose_kernel(image.to_str().unwrap(), Some(&catalogue)).unwrap(),
            KernelChoice::Image { .. }
        ));
        for bad in ["9.9", junk.to_str().unwrap(), "/nonexistent", "/etc"] {
            assert!(choose_kernel(bad, Some(&catalogue)).is_err(), "{bad}");
        }
        assert!(check_memory(1).is_err() && check_memory(999_999).is_err());
        assert!(check_memory(512).is_ok());
    }

    #[test]
    fn a_case_needing_more_memory_sizes_its_kernels_guest() {
        let case = |requires: &str| {
            let text = format!("summary: t\nrequires: {requires}\nsteps:\n  - socket: a\n");
            crate::case::load_str("t", std::path::Path::new("cases/t.yaml"), &text).unwrap()
        };
        let small = case("[root]");
        assert_eq!(guest_memory_mb(512, std::slice::from_ref(&small)), 512);
        assert_eq!(
            guest_memory_mb(512, &[small.clone(), case("[{memory: 256M}]")]),
            512
        );
        let big = case("[{memory: 1G}]");
        assert_eq!(guest_memory_mb(512, &[small.clone(), big.clone()]), 1024);
        assert_eq!(
            guest_memory_mb(512, &[case("[{memory: 700}]")]),
            1024,
            "a power of two"
        );
        assert_eq!(
            guest_memory_mb(2048, &[big]),
            2048,
            "--memory above the need stays"
        );
    }

    #[test]
    fn a_panicking_runner_thread_leaves_a_could_not_run_result() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("bzImage");
        fake_bzimage(&image, "6.1.0-test", b"");
        let case = crate::case::load_file(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("cases/bind/wildcard_vs_specific_tcp.yaml"),
        )
        .unwrap();
        let cases = [case];
        let opts = RunOptions {
            results_dir: dir.path().join("results"),
            history_dir: None,
            show_downloads: false,
            ..RunOptions::default()
        };
        let work = [(image.to_string_lossy().into_owned(), &cases[..])];
        // The progress callback panics once the kernel is provisioned (before any
        // boot): the thread running the kernel dies.
        let progress = |event: Progress| {
            if let Progress::Provisioned { .. } = event {
                panic!("progress exploded");
            }
        };
        let results = run_each(&work, &opts, &progress);
        assert_eq!(results.len(), 1, "the kernel vanished from the results");
        let why = results[0].could_not_run.as_deref().unwrap_or_default();
        assert!(why.contains("panicked: progress exploded"), "{why}");
        assert!(results[0]
            .cases
            .iter()
            .all(|c| c.verdict.label() == "ERROR"));
        assert!(results[0].kernel.starts_with("local-6.1.0-test-"));
    }
}
