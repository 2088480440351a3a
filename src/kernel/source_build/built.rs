//! The cache of built kernels: `<cache>/built/<key>/{vmlinuz,config,build.json,build.log}`,
//! keyed by the build's inputs, committed by one rename so a failed build leaves nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kernel::download;

pub const META: &str = "build.json";
pub const VMLINUZ: &str = "vmlinuz";
pub const LOG: &str = "build.log";
pub const CONFIG: &str = "config";
/// Kbuild's list of what the config built in (`kernel/drivers/net/veth.ko`), if any.
pub const MODULES_BUILTIN: &str = "modules.builtin";

/// What decides a build's output. Equal inputs, equal key: the build is reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInputs {
    /// `git:<commit>[+dirty:<diff hash>]`, `tarball:<sha256>`, `debian:<pkg>=<ver>:<sha256>`
    /// or `tree:<hash>`.
    pub source_identity: String,
    /// sha256 of the final `.config` (after the fragment and olddefconfig).
    pub config_sha256: String,
    /// First line of `<cc> --version`.
    pub compiler: String,
}

impl BuildInputs {
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        for part in [&self.source_identity, &self.config_sha256, &self.compiler] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())[..16].to_string()
    }
}

/// `build.json`: written last, so its presence marks a complete entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltKernel {
    /// How `run --kernel` names it (`--name`, or `built-<version>-<config>-<key8>`).
    pub id: String,
    pub key: String,
    pub inputs: BuildInputs,
    /// What the user gave: a folder, tarball, URL or Debian package.
    pub source: String,
    /// The tree's Makefile version (`6.1.192`).
    pub version: String,
    /// `make kernelrelease`.
    pub release: Option<String>,
    /// `minimal`, `defconfig` or `file:NAME`.
    pub config: String,
    pub built_at: String,
    pub build_seconds: u64,
    pub vmlinuz_sha256: String,
    /// The QEMU machine this kernel needs, when not microvm (`pc` for old kernels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<crate::qemu::Machine>,
    /// Filled in by `load`: the entry's folder.
    #[serde(skip)]
    pub dir: PathBuf,
}

impl BuiltKernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join(VMLINUZ)
    }

    /// What a result records of this build.
    pub fn built_from(&self) -> crate::resultset::results::BuiltFrom {
        crate::resultset::results::BuiltFrom {
            source_identity: self.inputs.source_identity.clone(),
            config: self.config.clone(),
            config_sha256: self.inputs.config_sha256.clone(),
            compiler: self.inputs.compiler.clone(),
        }
    }
}

pub fn root(cache: &Path) -> PathBuf {
    cache.join("built")
}

/// A complete entry whose vmlinuz still hashes right (`verify`), or None.
pub fn load(dir: &Path, verify: bool) -> Option<BuiltKernel> {
    let text = std::fs::read_to_string(dir.join(META)).ok()?;
    let mut k: BuiltKernel = serde_json::from_str(&text).ok()?;
    k.dir = dir.to_path_buf();
    if verify && download::sha256_file(&k.vmlinuz()).ok()? != k.vmlinuz_sha256 {
        return None;
    }
    Some(k)
}

/// The cached build of these inputs.
pub fn find_by_key(cache: &Path, key: &str) -> Option<BuiltKernel> {
    load(&root(cache).join(key), true)
}

/// Every complete built kernel, newest first.
pub fn list(cache: &Path) -> Vec<BuiltKernel> {
    let mut out: Vec<BuiltKernel> = std::fs::read_dir(root(cache))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| load(&e.path(), false))
        .collect();
    out.sort_by(|a, b| b.built_at.cmp(&a.built_at).then(a.id.cmp(&b.id)));
    out
}

/// The newest built kernel named `id` (or whose key is `id`), verified.
pub fn find_by_id(cache: &Path, id: &str) -> Option<BuiltKernel> {
    list(cache)
        .into_iter()
        .find(|k| k.id == id || k.key == id)
        .and_then(|k| load(&k.dir, true))
}

/// A folder under `built/` to assemble an entry in; removed unless committed. Its
/// name carries our pid (`.sockmatrix-staging-<pid>-XXXXXX`): the staging folder of a
/// build that was killed (SIGKILL, a second Ctrl-C) is removed here by the next one.
pub fn staging(cache: &Path) -> Result<tempfile::TempDir> {
    let root = root(cache);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    sweep_staging(cache);
    tempfile::Builder::new()
        .prefix(&format!(".{}", crate::leftovers::prefix("staging")))
        .tempdir_in(&root)
        .with_context(|| format!("creating a staging folder in {}", root.display()))
}

/// Removes the staging folders of builds whose process is gone.
pub fn sweep_staging(cache: &Path) {
    crate::leftovers::sweep(&root(cache));
}

/// Writes `meta` into the staged folder and renames it to its key: readers see the
/// whole entry or none of it. When another build of the same inputs committed first
/// (two builds at once), its entry stays and ours is dropped; an incomplete or
/// corrupt entry is moved aside first, never removed under a reader's feet.
pub fn commit(cache: &Path, staged: tempfile::TempDir, meta: &BuiltKernel) -> Result<BuiltKernel> {
    let text = serde_json::to_string_pretty(meta)? + "\n";
    let meta_path = staged.path().join(META);
    std::fs::write(&meta_path, text).with_context(|| format!("writing {}", meta_path.display()))?;
    let dest = root(cache).join(&meta.key);
    if let Some(existing) = load(&dest, true) {
        return Ok(existing);
    }
    if dest.exists() {
        let aside = tempfile::Builder::new()
            .prefix(&format!(".{}", crate::leftovers::prefix("staging")))
            .tempdir_in(root(cache))
            .context("creating a folder to move a broken entry aside")?;
        std::fs::rename(&dest, aside.path().join("old"))
            .with_context(|| format!("moving the broken {} aside", dest.display()))?;
    }
    let staged = staged.keep();
    if let Err(e) = std::fs::rename(&staged, &dest) {
        let _ = std::fs::remove_dir_all(&staged);
        // Another build of the same inputs got there between our check and rename.
        return load(&dest, true)
            .with_context(|| format!("moving {} to {}: {e}", staged.display(), dest.display()));
    }
    let mut k = meta.clone();
    k.dir = dest;
    Ok(k)
}

/// Saves a changed `build.json` of a committed entry (atomically).
pub fn rewrite_meta(k: &BuiltKernel) -> Result<()> {
    let text = serde_json::to_string_pretty(k)? + "\n";
    crate::atomic_file::write_atomic(&k.dir.join(META), text.as_bytes())
        .with_context(|| format!("writing {}", k.dir.join(META).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(source: &str) -> BuildInputs {
        BuildInputs {
            source_identity: source.into(),
            config_sha256: "c".into(),
            compiler: "gcc (Debian 12.2.0-14) 12.2.0".into(),
        }
    }

    #[test]
    fn key_changes_with_every_input() {
        let a = inputs("git:1");
        let keys = [
            a.key(),
            inputs("git:2").key(),
            BuildInputs {
                config_sha256: "d".into(),
                ..a.clone()
            }
            .key(),
            BuildInputs {
                compiler: "gcc 13".into(),
                ..a.clone()
            }
            .key(),
        ];
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(k.len(), 16);
            assert!(keys[i + 1..].iter().all(|o| o != k), "{keys:?}");
        }
        assert_eq!(a.key(), inputs("git:1").key());
    }

    fn meta(key: &str, id: &str, at: &str, vmlinuz_sha256: String) -> BuiltKernel {
        BuiltKernel {
            id: id.into(),
            key: key.into(),
            inputs: inputs("git:1"),
            source: "/src/linux".into(),
            version: "6.1.192".into(),
            release: Some("6.1.192".into()),
            config: "minimal".into(),
            built_at: at.into(),
            build_seconds: 1,
            vmlinuz_sha256,
            machine: None,
            dir: PathBuf::new(),
        }
    }

    #[test]
    fn commit_then_find_and_a_dropped_staging_leaves_nothing() {
        let cache = tempfile::tempdir().unwrap();
        let staged = staging(cache.path()).unwrap();
        std::fs::write(staged.path().join(VMLINUZ), b"kernel").unwrap();
        let sha = download::sha256_file(&staged.path().join(VMLINUZ)).unwrap();
        commit(
            cache.path(),
            staged,
            &meta("k1", "built-a", "2026-01-01", sha.clone()),
        )
        .unwrap();
        assert_eq!(find_by_key(cache.path(), "k1").unwrap().id, "built-a");
        assert_eq!(find_by_id(cache.path(), "built-a").unwrap().key, "k1");
        assert!(find_by_id(cache.path(), "built-b").is_none());

        // A failed build drops its staging folder: no entry, no leftovers.
        let failed = staging(cache.path()).unwrap();
        std::fs::write(failed.path().join(VMLINUZ), b"half").unwrap();
        drop(failed);
        let names: Vec<_> = std::fs::read_dir(root(cache.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["k1"]);

        // A second build of the same inputs (two at once) keeps the first entry.
        let second = staging(cache.path()).unwrap();
        std::fs::write(second.path().join(VMLINUZ), b"kernel").unwrap();
        let kept = commit(
            cache.path(),
            second,
            &meta("k1", "built-b", "2026-01-02", sha.clone()),
        )
        .unwrap();
        assert_eq!(
            (kept.id.as_str(), kept.built_at.as_str()),
            ("built-a", "2026-01-01")
        );
        assert_eq!(std::fs::read_dir(root(cache.path())).unwrap().count(), 1);

        // A corrupted image is not served.
        std::fs::write(root(cache.path()).join("k1").join(VMLINUZ), b"changed").unwrap();
        assert!(find_by_key(cache.path(), "k1").is_none());
        // ... and a new build replaces it.
        let fixed = staging(cache.path()).unwrap();
        std::fs::write(fixed.path().join(VMLINUZ), b"kernel").unwrap();
        let k = commit(
            cache.path(),
            fixed,
            &meta("k1", "built-c", "2026-01-03", sha),
        )
        .unwrap();
        assert_eq!(k.id, "built-c");
        assert_eq!(find_by_key(cache.path(), "k1").unwrap().id, "built-c");
    }

    #[test]
    fn list_is_newest_first() {
        let cache = tempfile::tempdir().unwrap();
        for (key, at) in [("k1", "2026-01-01"), ("k2", "2026-02-01")] {
            let staged = staging(cache.path()).unwrap();
            std::fs::write(staged.path().join(VMLINUZ), key).unwrap();
            let sha = download::sha256_file(&staged.path().join(VMLINUZ)).unwrap();
            commit(cache.path(), staged, &meta(key, "same", at, sha)).unwrap();
        }
        let keys: Vec<_> = list(cache.path()).into_iter().map(|k| k.key).collect();
        assert_eq!(keys, ["k2", "k1"]);
        assert_eq!(find_by_id(cache.path(), "same").unwrap().key, "k2");
    }
}
