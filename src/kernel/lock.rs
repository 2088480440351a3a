//! `vm/kernels.lock`: the exact Debian package pinned for each Debian kernel, and its refresh.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::catalogue::{Catalogue, DebianSource, KernelSource, Mirror};
use super::debian_index;

const FORMAT: u32 = 1;

/// Pinned packages, keyed (and so sorted) by kernel id. Stored as pretty JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub format: u32,
    pub kernels: BTreeMap<String, LockedKernel>,
    /// Releases of a series that have been used, by label (`6.1.176`); a refresh keeps them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub releases: BTreeMap<String, LockedKernel>,
    /// For the linux-binary layout (6.19 on), whose modules live in another package:
    /// the `linux-modules-*` pin, keyed by the pinned binary package's name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub modules: BTreeMap<String, LockedKernel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedKernel {
    pub mirror: Mirror,
    pub suite: String,
    pub package: String,
    pub version: String,
    /// Pool path, relative to the mirror base.
    pub filename: String,
    pub sha256: String,
    pub size: u64,
}

impl LockedKernel {
    pub fn url(&self) -> String {
        format!("{}/{}", self.mirror.base_url(), self.filename)
    }
}

impl Lock {
    pub fn load(path: &Path) -> Result<Lock> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading kernel lock {} (create it with a lock refresh)",
                path.display()
            )
        })?;
        let lock: Lock = serde_json::from_str(&text)
            .with_context(|| format!("parsing kernel lock {}", path.display()))?;
        if lock.format != FORMAT {
            bail!(
                "{}: lock format {} is not supported (expected {FORMAT})",
                path.display(),
                lock.format
            );
        }
        Ok(lock)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        crate::atomic_file::write_atomic(path, text.as_bytes())
            .with_context(|| format!("writing kernel lock {}", path.display()))
    }

    /// The pin for a Debian kernel, checked against what the catalogue asks for.
    pub fn pinned(&self, cat: &Catalogue, id: &str, src: &DebianSource) -> Result<&LockedKernel> {
        let hint = "run the kernel lock refresh (`sockmatrix kernels lock --refresh`)";
        let pin = self.kernels.get(id).with_context(|| {
            format!(
                "kernel '{id}' in {} has no entry in the lock; {hint}",
                cat.path.display()
            )
        })?;
        let re = regex::Regex::new(&src.package)?;
        if pin.suite != src.suite || pin.mirror != src.mirror || !re.is_match(&pin.package) {
            bail!(
                "kernel '{id}': the lock pins {} from {}/{} but {} now asks for {:?} from {}/{}; {hint}",
                pin.package, pin.mirror, pin.suite, cat.path.display(), src.package, src.mirror, src.suite
            );
        }
        Ok(pin)
    }
}

/// Re-reads the suites' indexes and pins the newest matching package for every Debian kernel.
pub fn refresh_lock(cat: &Catalogue, cache: &Path) -> Result<Lock> {
    refresh_lock_with_progress(cat, cache, true)
}

pub fn refresh_lock_with_progress(cat: &Catalogue, cache: &Path, progress: bool) -> Result<Lock> {
    let old = Lock::load(&cat.base_dir.join("kernels.lock")).unwrap_or_default();
    let mut lock = Lock {
        format: FORMAT,
        kernels: BTreeMap::new(),
        // Releases are exact builds already: nothing newer to pin.
        releases: old.releases,
        modules: old.modules,
    };
    for k in &cat.kernels {
        let KernelSource::Debian(src) = &k.source else {
            continue;
        };
        let ctx = || format!("kernel '{}' in {}", k.id, cat.path.display());
        let index =
            debian_index::fetch_index(src.mirror, &src.suite, cache, progress).with_context(ctx)?;
        let re = regex::Regex::new(&src.package).with_context(ctx)?;
        let entries = debian_index::read_index(&index, &re).with_context(ctx)?;
        let best = debian_index::pick_newest(&entries).with_context(|| {
            format!(
                "{}: no package in {}/{} matches {:?}",
                ctx(),
                src.mirror,
                src.suite,
                src.package
            )
        })?;
        let pin = |e: &debian_index::IndexEntry| LockedKernel {
            mirror: src.mirror,
            suite: src.suite.clone(),
            package: e.package.clone(),
            version: e.version.clone(),
            filename: e.filename.clone(),
            sha256: e.sha256.clone(),
            size: e.size,
        };
        if let Some(modules) = modules_package(&best.package) {
            // The same build's modules, from the same index.
            let re = regex::Regex::new(&format!("^{}$", regex::escape(&modules)))?;
            let entries = debian_index::read_index(&index, &re).with_context(ctx)?;
            let found = entries.iter().find(|e| e.version == best.version);
            let found = found.with_context(|| {
                format!(
                    "{}: {} {} has no {modules} of the same version in {}/{}",
                    ctx(),
                    best.package,
                    best.version,
                    src.mirror,
                    src.suite
                )
            })?;
            lock.modules.insert(best.package.clone(), pin(found));
        }
        lock.kernels.insert(k.id.clone(), pin(best));
    }
    Ok(lock)
}

/// `linux-binary-X` keeps its modules in `linux-modules-X`; the older layout's
/// `linux-image-X` carries them itself.
pub fn modules_package(package: &str) -> Option<String> {
    package
        .strip_prefix("linux-binary-")
        .map(|rest| format!("linux-modules-{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_sorted() {
        let mut lock = Lock {
            format: FORMAT,
            kernels: BTreeMap::new(),
            releases: BTreeMap::new(),
            modules: BTreeMap::new(),
        };
        for id in ["7.2", "5.10", "6.1"] {
            lock.kernels.insert(
                id.to_string(),
                LockedKernel {
                    mirror: Mirror::DebianSecurity,
                    suite: "bookworm-security".into(),
                    package: format!("linux-image-{id}-cloud-amd64"),
                    version: "6.1.158-1".into(),
                    filename: "pool/main/l/x.deb".into(),
                    sha256: "ab".repeat(32),
                    size: 42,
                },
            );
        }
        let path = std::env::temp_dir().join(format!("kk-lock-{}.json", std::process::id()));
        lock.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.find("\"5.10\"").unwrap() < text.find("\"6.1\"").unwrap());
        assert!(text.contains("\"mirror\": \"debian-security\""));
        assert_eq!(Lock::load(&path).unwrap(), lock);
        std::fs::remove_file(&path).unwrap();
    }
}
