//! The extracted-kernel cache: `<cache>/kernels/<id>-<version>/{vmlinuz,config,kernel.json}`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::download;

/// Written last, so its presence marks a complete entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelMeta {
    pub id: String,
    /// Debian package name, or the source tarball URL for source builds.
    pub origin: String,
    pub version: Option<String>,
    pub release: Option<String>,
    /// sha256 of what the kernel came from (the .deb or the tarball), to detect a re-pin.
    pub origin_sha256: Option<String>,
    pub vmlinuz_sha256: String,
}

pub fn kernel_dir(cache: &Path, id: &str, version: &str) -> PathBuf {
    // Epochs ("1:2.3") would put a colon in the path; nothing else needs escaping.
    cache
        .join("kernels")
        .join(format!("{id}-{}", version.replace(':', "_")))
}

pub const META: &str = "kernel.json";
pub const VMLINUZ: &str = "vmlinuz";

/// The cached entry in `dir`, if it is complete and its vmlinuz still hashes right.
pub fn load_verified(dir: &Path, origin_sha256: Option<&str>) -> Option<KernelMeta> {
    let text = std::fs::read_to_string(dir.join(META)).ok()?;
    let meta: KernelMeta = serde_json::from_str(&text).ok()?;
    if origin_sha256.is_some() && meta.origin_sha256.as_deref() != origin_sha256 {
        return None;
    }
    let got = download::sha256_file(&dir.join(VMLINUZ)).ok()?;
    (got == meta.vmlinuz_sha256).then_some(meta)
}

/// Cheap "is it there" check for listings (no hashing).
pub fn is_present(dir: &Path) -> bool {
    dir.join(META).is_file() && dir.join(VMLINUZ).is_file()
}

pub fn save_meta(dir: &Path, meta: &KernelMeta) -> Result<()> {
    let text = serde_json::to_string_pretty(meta)? + "\n";
    crate::atomic_file::write_atomic(&dir.join(META), text.as_bytes())
        .with_context(|| format!("writing {}", dir.join(META).display()))
}
