//! Kernel provisioning: from the catalogue (`vm/kernels.yaml`) and its lock to a vmlinuz on disk.
//!
//! Debian kernels are fetched exactly as pinned in `vm/kernels.lock` (a refresh
//! re-reads the archive indexes and rewrites the pins); `local` kernels are
//! checked in place; `source_build` kernels must be built first (`source_build`).

pub mod bzimage;
mod catalogue;
pub mod changelog;
mod deb_extract;
mod debian_index;
mod debversion;
mod download;
pub use download::sha256_file;
mod lock;
pub mod modules;
pub mod prune;
pub mod releases;
pub mod source_build;
mod store;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use catalogue::{
    Catalogue, DebianSource, KernelEntry, KernelSource, LocalSource, Mirror, ReleaseSuites,
    SourceBuildSpec, SuiteRef,
};
pub use deb_extract::{extract_changelog, with_data_tar};
pub use debversion::compare as compare_debian_versions;
pub use lock::{refresh_lock, refresh_lock_with_progress, Lock, LockedKernel};
pub use releases::{Release, ReleaseIndex};

/// A kernel ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedKernel {
    pub id: String,
    pub vmlinuz: PathBuf,
    /// `uname -r` of the kernel, when known.
    pub release: Option<String>,
    /// Debian package version (or source version for source builds).
    pub version: Option<String>,
}

/// Where a kernel's own modules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// The pinned package that carries `lib/modules/<release>/`, and the cache
    /// folder its index and extracted modules go to.
    Package {
        id: String,
        pin: LockedKernel,
        dir: PathBuf,
    },
    /// A kernel built by `kernels build`: its cache entry, whose `modules.builtin`
    /// (copied from the build) names what the config built in (`=y`).
    Built { id: String, dir: PathBuf },
    /// Why this kernel has no modules (a bare bzImage, a local image).
    Unavailable(String),
}

/// The modules of kernel `id` (nothing is downloaded or extracted here: that waits
/// until a case needs a module, `modules::resolve`).
pub fn module_source(cat: &Catalogue, lock: &Lock, id: &str, cache: &Path) -> ModuleSource {
    let package = |pin: &LockedKernel| {
        let dir = store::kernel_dir(cache, id, &pin.version).join("modules");
        let carrier = match lock::modules_package(&pin.package) {
            None => pin,
            Some(modules) => match lock.modules.get(&pin.package) {
                Some(modules_pin) => modules_pin,
                None => {
                    return ModuleSource::Unavailable(format!(
                        "kernel {id}: {modules} (where {} keeps its modules) is not pinned in the lock; refresh the lock",
                        pin.package
                    ))
                }
            },
        };
        ModuleSource::Package {
            id: id.to_string(),
            pin: carrier.clone(),
            dir,
        }
    };
    match cat.get(id).map(|e| &e.source) {
        None => match lock.releases.get(id) {
            Some(pin) => package(pin),
            None => ModuleSource::Unavailable(format!("kernel {id} is not in the catalogue")),
        },
        Some(KernelSource::Debian(src)) => match lock.pinned(cat, id, src) {
            Ok(pin) => package(pin),
            Err(e) => ModuleSource::Unavailable(format!("{e:#}")),
        },
        Some(KernelSource::Local(_)) => {
            ModuleSource::Unavailable(format!("kernel {id} is a local image"))
        }
        Some(KernelSource::SourceBuild(_)) => match source_build::built::find_by_id(cache, id) {
            Some(built) => source_build::module_source(&built),
            None => ModuleSource::Unavailable(format!("kernel {id} is not built yet")),
        },
    }
}

/// One row of `sockmatrix kernels list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelStatus {
    pub id: String,
    /// "debian", "local" or "source_build".
    pub kind: &'static str,
    pub default: bool,
    pub pinned_package: Option<String>,
    pub pinned_version: Option<String>,
    /// Ready without network (or, for `local`, the file exists).
    pub cached: bool,
    /// Where the vmlinuz is or will be.
    pub path: Option<PathBuf>,
}

/// `$SOCKMATRIX_CACHE`, else `$XDG_CACHE_HOME/sockmatrix`, else `~/.cache/sockmatrix`.
pub fn cache_dir() -> PathBuf {
    cache_dir_from(|k| std::env::var_os(k))
}

fn cache_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("SOCKMATRIX_CACHE") {
        return p;
    }
    // The XDG spec says to ignore relative values.
    if let Some(p) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return p.join("sockmatrix");
    }
    match var("HOME") {
        Some(home) => home.join(".cache").join("sockmatrix"),
        None => std::env::temp_dir().join("sockmatrix-cache"),
    }
}

/// Makes kernel `id` available as a file, downloading/extracting into `cache` if needed.
pub fn provision(
    cat: &Catalogue,
    lock: &Lock,
    id: &str,
    cache: &Path,
    progress: bool,
) -> Result<ProvisionedKernel> {
    if cat.get(id).is_none() {
        if let Some(pin) = lock.releases.get(id) {
            return provision_pin(id, pin, cache, progress);
        }
    }
    let entry = cat.entry(id)?;
    let ctx = || format!("kernel '{id}' in {}", cat.path.display());
    match &entry.source {
        KernelSource::Debian(src) => provision_debian(cat, lock, id, src, cache, progress),
        KernelSource::Local(local) => {
            let path = cat.resolve(&local.path);
            if !path.is_file() {
                bail!("{}: local kernel {} does not exist", ctx(), path.display());
            }
            let release = bzimage::inspect_file(&path).with_context(ctx)?;
            Ok(ProvisionedKernel {
                id: id.to_string(),
                vmlinuz: path,
                release,
                version: None,
            })
        }
        KernelSource::SourceBuild(spec) => {
            source_build::cached(cache, id, spec).with_context(|| {
                format!(
                    "{} is built from source and has not been built yet; run \
                 `sockmatrix kernels build {id}` (downloads {}) or \
                 `sockmatrix kernels build {id} --source TREE|TARBALL` with gcc {} (see vm/README.md)",
                    ctx(),
                    spec.url,
                    spec.gcc.as_deref().unwrap_or("(any)")
                )
            })
        }
    }
}

fn provision_debian(
    cat: &Catalogue,
    lock: &Lock,
    id: &str,
    src: &DebianSource,
    cache: &Path,
    progress: bool,
) -> Result<ProvisionedKernel> {
    let pin = lock.pinned(cat, id, src)?;
    provision_pin(id, pin, cache, progress)
}

/// Where a pinned package's `.deb` is cached.
pub fn deb_path(cache: &Path, pin: &LockedKernel) -> PathBuf {
    let deb_name = pin.filename.rsplit('/').next().unwrap_or(&pin.filename);
    cache.join("debs").join(deb_name)
}

/// Downloads a pinned package into the cache (sha256-verified; a cached one is reused).
pub fn fetch_deb(id: &str, pin: &LockedKernel, cache: &Path, progress: bool) -> Result<PathBuf> {
    let deb = deb_path(cache, pin);
    let expect = download::Expect {
        sha256: Some(&pin.sha256),
        size: Some(pin.size),
    };
    if let Err(e) = download::fetch(
        &pin.url(),
        &deb,
        &expect,
        &format!("kernel '{id}'"),
        progress,
    ) {
        let hint = if download::is_not_found(&e) {
            " (the mirror no longer serves this version: refresh the lock, or pick another release)"
        } else {
            ""
        };
        return Err(e.context(format!(
            "fetching pinned {} {}{hint}",
            pin.package, pin.version
        )));
    }
    Ok(deb)
}

/// Whether an error came from the mirror answering 404 (a release it no longer serves).
pub fn is_not_found(e: &anyhow::Error) -> bool {
    download::is_not_found(e)
}

fn provision_pin(
    id: &str,
    pin: &LockedKernel,
    cache: &Path,
    progress: bool,
) -> Result<ProvisionedKernel> {
    let dir = store::kernel_dir(cache, id, &pin.version);
    let done = |meta: store::KernelMeta| ProvisionedKernel {
        id: id.to_string(),
        vmlinuz: dir.join(store::VMLINUZ),
        release: meta.release,
        version: meta.version,
    };
    if let Some(meta) = store::load_verified(&dir, Some(&pin.sha256)) {
        prune::touch(&dir);
        return Ok(done(meta));
    }

    let what = format!("kernel '{id}'");
    let deb = fetch_deb(id, pin, cache, progress)?;

    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp_image = crate::atomic_file::temp_sibling(&dir.join(store::VMLINUZ));
    let tmp_config = crate::atomic_file::temp_sibling(&dir.join("config"));
    let extracted = (|| -> Result<deb_extract::Extracted> {
        let x = deb_extract::extract_vmlinuz(&deb, &tmp_image, &tmp_config)?;
        bzimage::inspect_file(&tmp_image)?;
        std::fs::rename(&tmp_image, dir.join(store::VMLINUZ))?;
        if x.config {
            std::fs::rename(&tmp_config, dir.join("config"))?;
        }
        Ok(x)
    })();
    let _ = std::fs::remove_file(&tmp_image);
    let _ = std::fs::remove_file(&tmp_config);
    let extracted =
        extracted.with_context(|| format!("{what}: extracting vmlinuz from {}", deb.display()))?;

    let meta = store::KernelMeta {
        id: id.to_string(),
        origin: pin.package.clone(),
        version: Some(pin.version.clone()),
        release: Some(extracted.release),
        origin_sha256: Some(pin.sha256.clone()),
        vmlinuz_sha256: download::sha256_file(&dir.join(store::VMLINUZ))?,
    };
    store::save_meta(&dir, &meta)?;
    prune::touch(&dir);
    Ok(done(meta))
}

/// The Debian changelog that lists `release` (gzip), from the cache or extracted
/// from its package: the image package in the classic layout, `linux-base-*` in the
/// split one. None when neither holds one.
pub fn changelog(
    release: &Release,
    cache: &Path,
    progress: bool,
) -> Result<Option<(PathBuf, String)>> {
    let dir = store::kernel_dir(cache, &release.label, &release.pin.version);
    let dest = dir.join("changelog.gz");
    let from = dir.join("changelog.from");
    if dest.is_file() {
        let source = std::fs::read_to_string(&from).unwrap_or_default();
        return Ok(Some((dest, source.trim().to_string())));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for pin in std::iter::once(&release.pin).chain(release.doc.as_ref()) {
        let deb = fetch_deb(&release.label, pin, cache, progress)?;
        let tmp = crate::atomic_file::temp_sibling(&dest);
        let found = extract_changelog(&deb, &tmp);
        let found = match found {
            Ok(true) => std::fs::rename(&tmp, &dest)
                .map(|()| true)
                .map_err(anyhow::Error::from),
            other => other,
        };
        let _ = std::fs::remove_file(&tmp);
        if found? {
            let source = format!("{} {}", pin.package, pin.version);
            let _ = std::fs::write(&from, &source);
            return Ok(Some((dest, source)));
        }
    }
    Ok(None)
}

/// Whether kernel `id` at Debian `version` is extracted in the cache (no hashing).
pub fn is_cached(cache: &Path, id: &str, version: &str) -> bool {
    store::is_present(&store::kernel_dir(cache, id, version))
}

/// Status of every catalogue kernel, without network or hashing.
pub fn list(cat: &Catalogue, lock: &Lock, cache: &Path) -> Vec<KernelStatus> {
    cat.kernels
        .iter()
        .map(|k| {
            let mut s = KernelStatus {
                id: k.id.clone(),
                kind: k.source.kind(),
                default: cat.default.contains(&k.id),
                pinned_package: None,
                pinned_version: None,
                cached: false,
                path: None,
            };
            match &k.source {
                KernelSource::Debian(_) => {
                    if let Some(pin) = lock.kernels.get(&k.id) {
                        let dir = store::kernel_dir(cache, &k.id, &pin.version);
                        s.cached = store::is_present(&dir);
                        s.path = Some(dir.join(store::VMLINUZ));
                        s.pinned_package = Some(pin.package.clone());
                        s.pinned_version = Some(pin.version.clone());
                    }
                }
                KernelSource::Local(l) => {
                    let p = cat.resolve(&l.path);
                    s.cached = p.is_file();
                    s.path = Some(p);
                }
                KernelSource::SourceBuild(_) => {
                    let found = source_build::built::list(cache)
                        .into_iter()
                        .find(|b| b.id == k.id);
                    s.cached = found.is_some();
                    s.path = found.map(|b| b.vmlinuz());
                }
            }
            s
        })
        .collect()
}

/// `name` with every character that is not safe and readable in a folder name (or
/// in a Kbuild output path: no space, no colon) replaced by `_`.
pub fn folder_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue(dir: &Path) -> Catalogue {
        let text = r#"
default: []
kernels:
  - id: "good"
    source: { local: { path: good.bzImage } }
  - id: "elf"
    source: { local: { path: elf } }
  - id: "missing"
    source: { local: { path: nope } }
  - id: "3.9"
    source:
      source_build: { url: "https://cdn.kernel.org/pub/linux/kernel/v3.x/linux-3.9.tar.xz", config_fragment: c.config }
"#;
        Catalogue::parse(text, &dir.join("kernels.yaml"), dir).unwrap()
    }

    #[test]
    fn local_and_source_build_kernels() {
        let dir = std::env::temp_dir().join(format!("kk-mod-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut img = vec![0u8; 0x300];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        std::fs::write(dir.join("good.bzImage"), &img).unwrap();
        std::fs::write(
            dir.join("elf"),
            b"\x7fELF not a bzImage at all, long enough? no",
        )
        .unwrap();
        let cat = catalogue(&dir);
        let lock = Lock::default();

        let k = provision(&cat, &lock, "good", &dir, false).unwrap();
        assert_eq!(k.vmlinuz, dir.join("good.bzImage"));
        let err = format!(
            "{:#}",
            provision(&cat, &lock, "elf", &dir, false).unwrap_err()
        );
        assert!(
            err.contains("kernel 'elf'") && err.contains("not a bzImage"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            provision(&cat, &lock, "missing", &dir, false).unwrap_err()
        );
        assert!(err.contains("does not exist"), "{err}");
        let err = format!(
            "{:#}",
            provision(&cat, &lock, "3.9", &dir, false).unwrap_err()
        );
        assert!(err.contains("sockmatrix kernels build 3.9"), "{err}");
        assert!(provision(&cat, &lock, "nope", &dir, false).is_err());

        let rows = list(&cat, &lock, &dir);
        assert_eq!(
            rows.iter().map(|r| r.cached).collect::<Vec<_>>(),
            [true, true, false, false]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Real mirror: refresh a one-kernel catalogue and provision it (13 MB).
    #[test]
    #[ignore = "network: deb.debian.org"]
    fn network_refresh_and_provision_forky() {
        let dir = std::env::temp_dir().join(format!("kk-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = r#"
default: ["7.2"]
kernels:
  - id: "7.2"
    source: { debian: { suite: forky, mirror: debian, package: '^linux-(image|binary)-7\.2\.\d+\+deb14-cloud-amd64$' } }
"#;
        let cat = Catalogue::parse(text, &dir.join("kernels.yaml"), &dir).unwrap();
        let lock = refresh_lock_with_progress(&cat, &dir, false).unwrap();
        assert!(lock.kernels["7.2"].package.starts_with("linux-binary-7.2."));
        let k = provision(&cat, &lock, "7.2", &dir, false).unwrap();
        assert!(k.release.unwrap().starts_with("7.2."));
        assert_eq!(
            provision(&cat, &lock, "7.2", &dir, false).unwrap().vmlinuz,
            k.vmlinuz
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cache_dir_order() {
        fn env<'a>(pairs: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
            move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.into())
        }
        let all = [
            ("SOCKMATRIX_CACHE", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_dir_from(env(&all)), Path::new("/c"));
        assert_eq!(cache_dir_from(env(&all[1..])), Path::new("/x/sockmatrix"));
        let relative_xdg = [
            ("SOCKMATRIX_CACHE", ""),
            ("XDG_CACHE_HOME", "rel"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            cache_dir_from(env(&relative_xdg)),
            Path::new("/h/.cache/sockmatrix")
        );
    }
}
