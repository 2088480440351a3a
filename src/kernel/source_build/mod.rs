//! Building kernels from source (`sockmatrix kernels build`): a tree, a tarball, a URL
//! or Debian's linux-source-X.Y package; tinyconfig / x86_64_defconfig / a user's
//! .config plus the guest fragment; out of tree, cached by its inputs.
//!
//! Steps: materialise the tree (`fetch`), configure in `<cache>/build-work/<folder>`
//! (base config, `merge_config.sh`, `olddefconfig`), check the fragment's required
//! options survived (`config`), derive the key from (source identity, final config,
//! compiler) and reuse a cached build (`built`), else `make bzImage` with the log
//! kept (`kbuild`), then commit vmlinuz + config + log + build.json in one rename.

pub mod built;
pub mod config;
mod fetch;
pub mod kbuild;
pub mod source;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use sha2::{Digest, Sha256};

pub use built::BuiltKernel;
pub use config::BaseConfig;
pub use source::SourceSpec;

use super::catalogue::{Catalogue, SourceBuildSpec};
use super::{bzimage, download, ProvisionedKernel};

/// Why a build did not produce a kernel; `exit_code` maps it to the CLI's codes.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Not a kernel tree, no such file, an unusable source or config argument.
    #[error("{0}")]
    BadSource(String),
    /// Options the guest needs that the final .config does not have.
    #[error(
        "the kernel config lacks options the guest needs, after merging {} and `make olddefconfig`: {}\n\
         (their dependencies are unmet in this tree or config; add what they depend on to your config)",
        fragment.display(),
        missing.join(", ")
    )]
    MissingOptions {
        missing: Vec<String>,
        fragment: PathBuf,
    },
    /// No usable compiler or build tool.
    #[error("{0}")]
    Toolchain(String),
    /// make failed: a compiler error, a tool the tree needs, ...
    #[error("{step} failed; full log: {}\n--- last lines ---\n{}", log.display(), tail.join("\n"))]
    MakeFailed {
        step: String,
        log: PathBuf,
        tail: Vec<String>,
    },
    /// SIGINT or SIGTERM arrived: make was stopped, nothing was added to the cache.
    #[error("interrupted by {signal} during {during}; nothing was added to the cache")]
    Interrupted {
        signal: crate::interrupt::Interrupt,
        during: String,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl BuildError {
    /// 2 for bad input (source, config), 3 when it could not be built.
    pub fn exit_code(&self) -> u8 {
        match self {
            BuildError::BadSource(_) | BuildError::MissingOptions { .. } => 2,
            BuildError::Toolchain(_) | BuildError::MakeFailed { .. } | BuildError::Other(_) => 3,
            BuildError::Interrupted { signal, .. } => signal.exit_code(),
        }
    }

    /// The typed error inside an anyhow chain, if any.
    pub fn find(e: &anyhow::Error) -> Option<&BuildError> {
        e.chain().find_map(|c| c.downcast_ref::<BuildError>())
    }
}

/// Everything `kernels build` was asked.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub source: SourceSpec,
    pub config: BaseConfig,
    /// The guest fragment merged over the base config.
    pub fragment: PathBuf,
    /// The id `run --kernel` will know it by (default `built-<version>-<config>-<key8>`).
    pub name: Option<String>,
    /// When another built kernel (other inputs) has `name`: true takes the name from it
    /// (it gets its default id back: a catalogue entry's rebuild), false refuses (exit
    /// 2: a user's `--name` must not make `run --kernel NAME` ambiguous).
    pub name_taken_over: bool,
    pub cc: String,
    /// Use ccache when it is installed.
    pub ccache: bool,
    pub jobs: usize,
    /// QEMU machine this kernel needs, recorded with it (`pc` for old kernels).
    pub machine: Option<crate::qemu::Machine>,
    pub progress: bool,
}

/// What `build` did.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub kernel: BuiltKernel,
    /// True when the same inputs were built before and nothing was compiled.
    pub reused: bool,
}

/// The kernel tree `req` names, fetched and unpacked if need be (nothing is built).
pub fn source_tree(
    req: &BuildRequest,
    cat: &Catalogue,
    cache: &Path,
) -> Result<PathBuf, BuildError> {
    let tree = fetch::tree(&req.source, cat, cache, req.progress).map_err(lift)?;
    source::tree_version(&tree.dir)?;
    Ok(tree.dir)
}

/// Builds (or finds in the cache) the kernel `req` describes. After SIGINT/SIGTERM
/// (`interrupt::install`) every error is `Interrupted`: a download, an unpack or make
/// stopped by the signal fails for that reason, not for its own.
pub fn build(req: &BuildRequest, cat: &Catalogue, cache: &Path) -> Result<BuildResult, BuildError> {
    let result = build_steps(req, cat, cache);
    match (result, crate::interrupt::requested()) {
        (Err(BuildError::Interrupted { signal, during }), _) => {
            Err(BuildError::Interrupted { signal, during })
        }
        (Err(e), Some(signal)) => Err(BuildError::Interrupted {
            signal,
            during: format!("the build ({})", first_line(&format!("{e:#}"))),
        }),
        (result, _) => result,
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// `Interrupted` once SIGINT/SIGTERM arrived, checked between the steps.
fn check_interrupt(during: &str) -> Result<(), BuildError> {
    match crate::interrupt::requested() {
        Some(signal) => Err(BuildError::Interrupted {
            signal,
            during: during.to_string(),
        }),
        None => Ok(()),
    }
}

fn build_steps(
    req: &BuildRequest,
    cat: &Catalogue,
    cache: &Path,
) -> Result<BuildResult, BuildError> {
    let started = Instant::now();
    built::sweep_staging(cache);
    let missing = kbuild::missing_tools();
    if !missing.is_empty() {
        return Err(BuildError::Toolchain(format!(
            "building a kernel needs {} on PATH (Debian: apt-get install build-essential flex bison bc libelf-dev libssl-dev)",
            missing.join(", ")
        )));
    }
    let compiler = kbuild::compiler_version(&req.cc)?;
    let fragment = req.fragment.canonicalize().map_err(|e| {
        BuildError::BadSource(format!("config fragment {}: {e}", req.fragment.display()))
    })?;
    let wanted = config::parse_fragment(
        &std::fs::read_to_string(&fragment).map_err(io_error("reading", &fragment))?,
    );

    // 1. The tree.
    let tree = fetch::tree(&req.source, cat, cache, req.progress).map_err(lift)?;
    let version = source::tree_version(&tree.dir)?;
    source::check_clean_for_o(&tree.dir)?;
    let identity = match &tree.identity {
        Some(id) => id.clone(),
        None => source::tree_identity(&tree.dir)?,
    };

    // 2. Configure out of tree; one output folder per (tree, base config) so a
    //    rebuild after a commit (git bisect) only compiles what changed.
    let out = work_dir(cache, &tree.dir, &req.config);
    check_kbuild_path(
        &out,
        "the build folder: set SOCKMATRIX_CACHE to a path without them",
    )?;
    check_kbuild_path(&tree.dir, "the kernel tree: move it")?;
    std::fs::create_dir_all(&out).map_err(io_error("creating", &out))?;
    let _lock = lock_work_dir(&out)?;
    let log = out.join(BUILD_LOG);
    std::fs::write(
        &log,
        format!(
            "# sockmatrix kernels build: {} ({})\n",
            tree.described, identity
        ),
    )
    .map_err(io_error("writing", &log))?;
    let kb = kbuild::Kbuild {
        tree: tree.dir.clone(),
        out: out.clone(),
        cc: req.cc.clone(),
        ccache: req.ccache && kbuild::on_path("ccache"),
        jobs: req.jobs.max(1),
        log: log.clone(),
    };
    if req.progress {
        eprintln!(
            "configuring {version} ({}) in {}",
            req.config.label(),
            out.display()
        );
    }
    match (&req.config, req.config.make_target()) {
        (_, Some(target)) => kb.run(&[target], "base config", false)?,
        (BaseConfig::File(f), None) => {
            std::fs::copy(f, out.join(".config"))
                .map_err(|e| BuildError::BadSource(format!("--config {}: {e}", f.display())))?;
        }
        _ => unreachable!("only a file has no make target"),
    }
    kb.merge_fragment(&fragment)?;
    kb.run(&["olddefconfig"], "olddefconfig", false)?;
    let final_config = out.join(".config");
    config::check_survived(&final_config, &fragment, &wanted, &tree.dir).map_err(lift)?;
    let config_sha256 = download::sha256_file(&final_config)?;

    // 3. Same inputs, same kernel.
    let inputs = built::BuildInputs {
        source_identity: identity,
        config_sha256,
        compiler,
    };
    let key = inputs.key();
    if let Some(name) = &req.name {
        claim_name(cache, name, &key, req.name_taken_over)?;
    }
    if let Some(mut kernel) = built::find_by_key(cache, &key) {
        // The same kernel asked for under another name: it takes the new name.
        if let Some(name) = req.name.as_ref().filter(|n| **n != kernel.id) {
            kernel.id = name.clone();
            built::rewrite_meta(&kernel)?;
        }
        return Ok(BuildResult {
            kernel,
            reused: true,
        });
    }

    // 4. Compile.
    if req.progress {
        eprintln!(
            "building {version} with {} jobs{} (log: {})",
            kb.jobs,
            if kb.ccache { ", ccache" } else { "" },
            log.display()
        );
    }
    let jobs = format!("-j{}", kb.jobs);
    kb.run(&[&jobs, "bzImage"], "compiling", req.progress)?;
    let release = kb.query(&["-s", "kernelrelease"]);
    let image = out.join("arch/x86/boot/bzImage");
    bzimage::inspect_file(&image).map_err(|e| BuildError::Other(e.context("the built bzImage")))?;

    // 5. Into the cache, all or nothing.
    let staged = built::staging(cache)?;
    let vmlinuz = staged.path().join(built::VMLINUZ);
    std::fs::copy(&image, &vmlinuz).map_err(io_error("copying the kernel to", &vmlinuz))?;
    let config_copy = staged.path().join(built::CONFIG);
    std::fs::copy(&final_config, &config_copy).map_err(io_error("writing", &config_copy))?;
    kbuild::keep_log(&log, &staged.path().join(built::LOG))?;
    // What the config built in (`=y`), for cases that require a module. Kbuild writes
    // it with vmlinux.o (5.x and later); older trees make it on request.
    let builtin = out.join(built::MODULES_BUILTIN);
    if !builtin.is_file() {
        // Optional (module requirements are then judged as unavailable), but a
        // signal stops the build.
        if let Err(e @ BuildError::Interrupted { .. }) =
            kb.run(&[built::MODULES_BUILTIN], "modules.builtin", false)
        {
            return Err(e);
        }
    }
    if builtin.is_file() {
        let copy = staged.path().join(built::MODULES_BUILTIN);
        std::fs::copy(&builtin, &copy).map_err(io_error("writing", &copy))?;
    }
    let vmlinuz_sha256 = download::sha256_file(&staged.path().join(built::VMLINUZ))?;
    let id = req
        .name
        .clone()
        .unwrap_or_else(|| default_id(&version, &req.config.label(), &key));
    let meta = BuiltKernel {
        id,
        key,
        inputs,
        source: tree.described,
        version,
        release,
        config: req.config.label(),
        built_at: now_utc(),
        build_seconds: started.elapsed().as_secs(),
        vmlinuz_sha256,
        machine: req.machine,
        dir: PathBuf::new(),
    };
    check_interrupt("saving the kernel")?;
    let mut kernel = built::commit(cache, staged, &meta)?;
    // Another build of the same inputs (from another folder) committed first.
    if let Some(name) = req.name.as_ref().filter(|n| **n != kernel.id) {
        kernel.id = name.clone();
        built::rewrite_meta(&kernel)?;
    }
    Ok(BuildResult {
        kernel,
        reused: false,
    })
}

/// An I/O error naming what was done to which file ("writing X: No space left on
/// device"): a bare OS error does not say where the disk is full.
fn io_error<'a>(doing: &'a str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |e| BuildError::Other(anyhow::anyhow!("{doing} {}: {e}", path.display()))
}

/// In an object folder: the log every build appends to, and the lock a build holds
/// (`kernels prune` reads both).
pub const BUILD_LOG: &str = "sockmatrix-build.log";
pub const BUILD_LOCK: &str = ".sockmatrix-lock";

/// Holds the work folder for this build: two makes in one output folder overwrite
/// each other's `.config` and objects (and the second truncated the first's log). A
/// second build of the same tree and config waits, then finds the first's kernel.
fn lock_work_dir(out: &Path) -> Result<std::fs::File, BuildError> {
    let path = out.join(BUILD_LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| BuildError::Other(anyhow::anyhow!("opening {}: {e}", path.display())))?;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(BuildError::Other(anyhow::anyhow!(
                    "locking {}: {e}",
                    path.display()
                )))
            }
        }
        if !said {
            eprintln!("waiting for another build in {} to finish", out.display());
            said = true;
        }
        check_interrupt("waiting for another build")?;
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// An anyhow error from fetching keeps its typed cause (bad source = exit 2).
fn lift(e: anyhow::Error) -> BuildError {
    match e.downcast::<BuildError>() {
        Ok(b) => b,
        Err(e) => BuildError::Other(e),
    }
}

/// Kbuild splits its source and output paths on spaces and colons (the kernel's
/// Makefile stops with "source directory cannot contain spaces or colons"; an output
/// path with a space makes `mkdir -p` create stray folders): say so before make runs.
fn check_kbuild_path(path: &Path, what: &str) -> Result<(), BuildError> {
    let text = path.to_string_lossy();
    if text.contains(|c: char| c.is_whitespace() || c == ':') {
        return Err(BuildError::BadSource(format!(
            "{text:?}: Kbuild cannot build with spaces or colons in the path of {what}"
        )));
    }
    Ok(())
}

/// `built-<version>-<minimal|defconfig|custom>-<key8>`, from a config's label.
fn default_id(version: &str, config_label: &str, key: &str) -> String {
    let config = match config_label {
        "minimal" | "defconfig" => config_label,
        _ => "custom",
    };
    format!("built-{version}-{config}-{}", &key[..8.min(key.len())])
}

/// Makes `name` free for the kernel of `key`: another built kernel with that name is
/// refused (bad input), or with `take_over` goes back to its default id.
fn claim_name(cache: &Path, name: &str, key: &str, take_over: bool) -> Result<(), BuildError> {
    for mut other in built::list(cache)
        .into_iter()
        .filter(|k| k.id == name && k.key != key)
    {
        if !take_over {
            return Err(BuildError::BadSource(format!(
                "--name {name}: already the name of another built kernel ({} {}, from {}, built {}, in {}); choose another name, or remove that folder",
                other.version,
                other.config,
                other.source,
                other.built_at,
                other.dir.display()
            )));
        }
        other.id = default_id(&other.version, &other.config, &other.key);
        eprintln!(
            "note: the earlier {name} (from {}) is now {}",
            other.source, other.id
        );
        built::rewrite_meta(&other)?;
    }
    Ok(())
}

/// `<cache>/build-work/<hash of the tree's path and the base config>`.
pub fn work_dir(cache: &Path, tree: &Path, config: &BaseConfig) -> PathBuf {
    let mut h = Sha256::new();
    h.update(tree.to_string_lossy().as_bytes());
    h.update([0]);
    h.update(config.label().as_bytes());
    if let BaseConfig::File(f) = config {
        h.update(
            f.canonicalize()
                .unwrap_or(f.clone())
                .to_string_lossy()
                .as_bytes(),
        );
    }
    // Only folder-safe characters: Kbuild refuses an output path with a space or colon.
    let name = crate::kernel::folder_safe(
        &tree
            .file_name()
            .map_or("linux".into(), |n| n.to_string_lossy().into_owned()),
    );
    cache.join("build-work").join(format!(
        "{name}-{}-{}",
        config.label().replace([':', '/'], "_"),
        &hex::encode(h.finalize())[..12]
    ))
}

fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The kernel a catalogue `source_build` entry names, once built (`kernels build ID`).
pub fn cached(cache: &Path, id: &str, _spec: &SourceBuildSpec) -> Option<ProvisionedKernel> {
    built::find_by_id(cache, id).map(provisioned)
}

/// Where a built kernel's modules come from: its entry's `modules.builtin`.
pub fn module_source(k: &BuiltKernel) -> super::ModuleSource {
    super::ModuleSource::Built {
        id: k.id.clone(),
        dir: k.dir.clone(),
    }
}

/// A built kernel as the provisioning layer sees it.
pub fn provisioned(k: BuiltKernel) -> ProvisionedKernel {
    ProvisionedKernel {
        id: k.id.clone(),
        vmlinuz: k.vmlinuz(),
        release: k.release.clone(),
        version: Some(k.version.clone()),
    }
}

/// The request for a catalogue `source_build` entry: its tarball URL (or the user's
/// `--source`), its compiler, defconfig plus its fragment, named by its id.
pub fn catalogue_request(
    cat: &Catalogue,
    entry: &super::KernelEntry,
    spec: &SourceBuildSpec,
    source: Option<SourceSpec>,
) -> BuildRequest {
    let id = &entry.id;
    let source = source.unwrap_or_else(|| SourceSpec::Url {
        url: spec.url.clone(),
        sha256: spec.sha256.clone(),
    });
    BuildRequest {
        source,
        config: BaseConfig::Defconfig,
        fragment: cat.resolve(&spec.config_fragment),
        name: Some(id.to_string()),
        name_taken_over: true,
        cc: spec.gcc.clone().unwrap_or_else(|| "gcc".into()),
        ccache: true,
        jobs: kbuild::jobs(),
        machine: entry.machine,
        progress: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_say_bad_input_or_could_not_build() {
        assert_eq!(BuildError::BadSource("x".into()).exit_code(), 2);
        let missing = BuildError::MissingOptions {
            missing: vec!["CONFIG_NET_NS=y".into()],
            fragment: "f".into(),
        };
        assert_eq!(missing.exit_code(), 2);
        assert!(missing.to_string().contains("CONFIG_NET_NS=y"));
        let failed = BuildError::MakeFailed {
            step: "compiling".into(),
            log: "/l".into(),
            tail: vec!["error: x".into()],
        };
        assert_eq!(failed.exit_code(), 3);
        assert!(failed.to_string().contains("error: x"));
        let wrapped = anyhow::Error::from(BuildError::BadSource("y".into())).context("outer");
        assert_eq!(BuildError::find(&wrapped).unwrap().exit_code(), 2);
    }

    /// A user's --name taken by another build is refused; a catalogue rebuild takes
    /// it, and the earlier kernel gets its default id back.
    #[test]
    fn a_taken_name_is_refused_or_taken_over() {
        let cache = tempfile::tempdir().unwrap();
        let staged = built::staging(cache.path()).unwrap();
        std::fs::write(staged.path().join(built::VMLINUZ), b"k").unwrap();
        let meta = BuiltKernel {
            id: "4.13".into(),
            key: "0123456789abcdef".into(),
            inputs: built::BuildInputs {
                source_identity: "tarball:1".into(),
                config_sha256: "c".into(),
                compiler: "gcc-6".into(),
            },
            source: "linux-4.13.tar.xz".into(),
            version: "4.13".into(),
            release: None,
            config: "defconfig".into(),
            built_at: "2026-01-01T00:00:00Z".into(),
            build_seconds: 1,
            vmlinuz_sha256: download::sha256_file(&staged.path().join(built::VMLINUZ)).unwrap(),
            machine: None,
            dir: PathBuf::new(),
        };
        built::commit(cache.path(), staged, &meta).unwrap();
        claim_name(cache.path(), "4.13", "0123456789abcdef", false).unwrap();
        let e = claim_name(cache.path(), "4.13", "fedcba9876543210", false).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("linux-4.13.tar.xz"), "{e}");
        claim_name(cache.path(), "4.13", "fedcba9876543210", true).unwrap();
        let ids: Vec<_> = built::list(cache.path())
            .into_iter()
            .map(|k| k.id)
            .collect();
        assert_eq!(ids, ["built-4.13-defconfig-01234567"]);
    }

    #[test]
    fn work_dirs_differ_by_tree_and_config() {
        let c = Path::new("/c");
        let a = work_dir(c, Path::new("/src/linux"), &BaseConfig::Minimal);
        assert_eq!(
            a,
            work_dir(c, Path::new("/src/linux"), &BaseConfig::Minimal)
        );
        assert_ne!(
            a,
            work_dir(c, Path::new("/src/linux"), &BaseConfig::Defconfig)
        );
        assert_ne!(
            a,
            work_dir(c, Path::new("/src/other"), &BaseConfig::Minimal)
        );
        assert!(a.starts_with("/c/build-work"));
        let spaced = work_dir(c, Path::new("/src/my linux:2"), &BaseConfig::Minimal);
        assert!(!spaced.to_string_lossy().contains([' ', ':']), "{spaced:?}");
    }
}
