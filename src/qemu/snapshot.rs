//! Saved guests: each (kernel, initramfs with agent, QEMU binary, machine options,
//! memory, cpus, command line) is booted once into an agent that waits for its
//! plan, and its VM state is kept in `<cache>/snapshots`. Later runs restore it in
//! a fraction of a second instead of booting. A state file is checked before use
//! (key, size, stream magic, fingerprint of both ends); anything odd is deleted and
//! the caller boots cold. The folder is pruned, least recently used first.

use super::args::ResolvedAccel;
use super::{BootSpec, GuestExit, StateFile};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// QEMU's migration stream starts with "QEVM" and format version 3.
const STREAM_MAGIC: [u8; 8] = *b"QEVM\0\0\0\x03";
/// How much of each end of the state file the fingerprint covers.
const FINGERPRINT_SPAN: u64 = 1 << 20;
/// Default size cap of the snapshot folder; `$SOCKMATRIX_SNAPSHOT_CAP_MB` overrides.
const DEFAULT_CAP_MB: u64 = 2048;

/// A usable snapshot: the state and the initramfs it was booted with (QEMU needs
/// the same -kernel/-initrd/-append to accept the state).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: PathBuf,
    pub initramfs: PathBuf,
    pub key: String,
}

/// A kernel module file a saved image carries, identified by its content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModuleFile {
    pub name: String,
    pub sha256: String,
    /// Where it was on the host when the snapshot was made (to carry it again).
    pub path: PathBuf,
}

impl ModuleFile {
    pub fn hash(name: &str, path: &Path) -> Result<ModuleFile> {
        Ok(ModuleFile {
            name: name.to_string(),
            sha256: crate::kernel::sha256_file(path)
                .with_context(|| format!("module {}", path.display()))?,
            path: path.to_path_buf(),
        })
    }

    fn same(&self, other: &ModuleFile) -> bool {
        self.name == other.name && self.sha256 == other.sha256
    }
}

/// What the snapshot is of.
pub struct Request<'a> {
    pub kernel: &'a Path,
    /// The initramfs without a plan and without modules (the agent waits for its
    /// plan on the port); the base key is made from it.
    pub initramfs: &'a Path,
    pub accel: ResolvedAccel,
    pub machine: super::args::Machine,
    pub memory_mb: u32,
    pub cpus: u32,
    /// Kernel command line as `boot` builds it (accelerator parameters included).
    pub cmdline: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    key: String,
    /// The key without the module set (empty in snapshots made before modules).
    #[serde(default)]
    base: String,
    /// The module files its image carries.
    #[serde(default)]
    modules: Vec<ModuleFile>,
    /// Everything the key was made of, readable (for `doctor` and debugging).
    parts: Vec<String>,
    state_size: u64,
    fingerprint: String,
    created_at: u64,
}

pub fn dir() -> PathBuf {
    crate::kernel::cache_dir().join("snapshots")
}

/// The base key: a digest of every part that makes a saved state usable, but the
/// kernel modules its image carries (see `full_key`).
pub fn key(req: &Request) -> Result<(String, Vec<String>)> {
    use std::os::unix::fs::MetadataExt;
    let kernel = std::fs::canonicalize(req.kernel).unwrap_or(req.kernel.to_path_buf());
    let km = std::fs::metadata(&kernel).with_context(|| format!("kernel {}", kernel.display()))?;
    let initramfs = std::fs::read(req.initramfs)
        .with_context(|| format!("reading {}", req.initramfs.display()))?;
    let parts = vec![
        format!(
            "kernel {} size {} mtime {}.{:09}",
            kernel.display(),
            km.size(),
            km.mtime(),
            km.mtime_nsec()
        ),
        format!(
            "initramfs sha256 {}",
            hex::encode(Sha256::digest(&initramfs))
        ),
        format!("qemu {}", super::accel::qemu_identity()?),
        format!(
            "machine {:?}",
            super::args::machine_args(req.machine, req.accel)
                .into_iter()
                .chain(super::args::cpu_args(req.accel, req.cpus))
                .chain(super::args::memory_args(req.memory_mb))
                .collect::<Vec<_>>()
        ),
        format!("cmdline {}", req.cmdline),
        format!(
            "snapshot format 1, agent protocol {}",
            crate::resume::WAITING_LINE
        ),
    ];
    let digest = Sha256::digest(parts.join("\n").as_bytes());
    Ok((hex::encode(&digest[..12]), parts))
}

/// The key of a snapshot of `base` carrying `modules`: the base key itself when it
/// carries none.
pub fn full_key(base: &str, modules: &[ModuleFile]) -> String {
    if modules.is_empty() {
        return base.to_string();
    }
    let mut ids: Vec<String> = modules
        .iter()
        .map(|m| format!("{} {}", m.name, m.sha256))
        .collect();
    ids.sort();
    let digest = Sha256::digest(ids.join("\n").as_bytes());
    format!("{base}-{}", hex::encode(&digest[..6]))
}

/// The snapshots of `base` on disk (unchecked), most modules first.
fn of_base(dir: &Path, base: &str) -> Vec<Meta> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Meta> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(base) && name.ends_with(".json")
        })
        .filter_map(|e| serde_json::from_slice::<Meta>(&std::fs::read(e.path()).ok()?).ok())
        .filter(|m| m.base == base)
        .collect();
    found.sort_by(|a, b| {
        b.modules
            .len()
            .cmp(&a.modules.len())
            .then(a.key.cmp(&b.key))
    });
    found
}

fn covers(have: &[ModuleFile], needed: &[ModuleFile]) -> bool {
    needed.iter().all(|n| have.iter().any(|h| h.same(n)))
}

/// A checked snapshot of `base` whose image carries every module in `needed`.
/// Ok(None): there is none. Err(why): the best one could not be trusted (deleted).
pub fn lookup_covering(
    dir: &Path,
    base: &str,
    needed: &[ModuleFile],
) -> std::result::Result<Option<Snapshot>, String> {
    match of_base(dir, base)
        .into_iter()
        .find(|m| covers(&m.modules, needed))
    {
        Some(meta) => lookup(dir, &meta.key),
        None => Ok(None),
    }
}

/// The modules a new snapshot of `base` should carry: `needed`, and every module
/// an existing snapshot of `base` carries whose file is still there unchanged (so
/// the new one replaces them all).
pub fn modules_to_save(dir: &Path, base: &str, needed: &[ModuleFile]) -> Vec<ModuleFile> {
    let mut all: Vec<ModuleFile> = needed.to_vec();
    for meta in of_base(dir, base) {
        for m in meta.modules {
            if all.iter().any(|a| a.name == m.name) {
                continue;
            }
            if crate::kernel::sha256_file(&m.path).is_ok_and(|sha| sha == m.sha256) {
                all.push(m);
            }
        }
    }
    all.sort();
    all
}

/// Removes the snapshots of `base` other than `keep` whose modules `keep` carries too.
fn remove_covered(dir: &Path, base: &str, keep: &str, kept_modules: &[ModuleFile]) {
    for meta in of_base(dir, base) {
        if meta.key != keep && covers(kept_modules, &meta.modules) {
            remove(dir, &meta.key);
        }
    }
}

fn paths(dir: &Path, key: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("{key}.state")),
        dir.join(format!("{key}.cpio")),
        dir.join(format!("{key}.json")),
    )
}

/// The snapshot under `key`, checked. Ok(None): there is none. Err(why): there was
/// one but it cannot be trusted (it has been deleted).
pub fn lookup(dir: &Path, key: &str) -> std::result::Result<Option<Snapshot>, String> {
    let (state, cpio, meta_path) = paths(dir, key);
    if !meta_path.exists() {
        return Ok(None);
    }
    let _lock = key_lock(dir, key);
    match check(&state, &cpio, &meta_path, key) {
        Ok(()) => {
            // Recently used snapshots are pruned last.
            if let Ok(f) = std::fs::File::options().append(true).open(&meta_path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            Ok(Some(Snapshot {
                state,
                initramfs: cpio,
                key: key.to_string(),
            }))
        }
        Err(e) => {
            remove(dir, key);
            Err(format!("snapshot {} unusable ({e:#})", state.display()))
        }
    }
}

/// `key`'s lock, held while a snapshot is committed or checked: two runs saving the
/// same kernel at once otherwise interleave their state files and descriptions (one's
/// size beside the other's file, which the next run finds unusable and saves again).
/// Best effort: without a lock file the checks still catch a mismatch.
fn key_lock(dir: &Path, key: &str) -> Option<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{key}.lock")))
        .ok()?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).ok()
}

fn check(state: &Path, cpio: &Path, meta_path: &Path, key: &str) -> Result<()> {
    let meta: Meta =
        serde_json::from_slice(&std::fs::read(meta_path)?).context("bad snapshot description")?;
    if meta.key != key {
        bail!("it belongs to key {}", meta.key);
    }
    if !cpio.is_file() {
        bail!("its initramfs is missing");
    }
    let size = std::fs::metadata(state).context("state file")?.len();
    if size != meta.state_size {
        bail!("state file is {size} bytes, {} when saved", meta.state_size);
    }
    let mut magic = [0u8; 8];
    std::fs::File::open(state)?.read_exact(&mut magic)?;
    if magic != STREAM_MAGIC {
        bail!("not a QEMU state stream");
    }
    if fingerprint(state)? != meta.fingerprint {
        bail!("state file changed since it was saved");
    }
    Ok(())
}

/// sha256 of the first and last MiB: catches truncation, overwrites at either end
/// and foreign files, without reading ~100 MB on every run.
fn fingerprint(state: &Path) -> Result<String> {
    let mut f = std::fs::File::open(state)?;
    let len = f.metadata()?.len();
    let mut h = Sha256::new();
    h.update(len.to_le_bytes());
    let mut buf = vec![0u8; FINGERPRINT_SPAN.min(len) as usize];
    f.read_exact(&mut buf)?;
    h.update(&buf);
    f.seek(SeekFrom::Start(len - buf.len() as u64))?;
    f.read_exact(&mut buf)?;
    h.update(&buf);
    Ok(hex::encode(h.finalize()))
}

pub fn remove(dir: &Path, key: &str) {
    let (state, cpio, meta) = paths(dir, key);
    for p in [meta, state, cpio] {
        let _ = std::fs::remove_file(p);
    }
}

/// What a new snapshot is saved under: its base key and parts, and the image to
/// boot (the base image plus `modules`).
pub struct Saving<'a> {
    pub base: &'a str,
    pub parts: Vec<String>,
    pub modules: Vec<ModuleFile>,
    pub image: &'a Path,
}

/// Boots `req` (with `saving.image`) cold into a waiting agent and saves it under
/// its full key; snapshots of the same base that it supersedes are removed.
pub fn create(dir: &Path, saving: Saving, req: &Request, console_log: &Path) -> Result<Snapshot> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = full_key(saving.base, &saving.modules);
    let key = key.as_str();
    let mut parts = saving.parts;
    parts.extend(
        saving
            .modules
            .iter()
            .map(|m| format!("module {} sha256 {}", m.name, m.sha256)),
    );
    let (state, cpio, meta_path) = paths(dir, key);
    let cpio_tmp = cpio.with_extension(format!("cpio.tmp-{}", std::process::id()));
    std::fs::copy(saving.image, &cpio_tmp).context("keeping the snapshot's initramfs")?;
    std::fs::rename(&cpio_tmp, &cpio)?;
    let mut spec = BootSpec::new(req.kernel, &cpio, console_log);
    spec.accel = match req.accel {
        ResolvedAccel::Tcg => super::Accel::Tcg,
        ResolvedAccel::Kvm => super::Accel::Kvm,
    };
    spec.machine = req.machine;
    spec.memory_mb = req.memory_mb;
    spec.cpus = req.cpus;
    spec.init_args = vec![crate::resume::SERIAL_PLAN_ARG.into()];
    spec.total_timeout = Duration::from_secs(180);
    // Saved once per image and restored by every later run: under load (seven
    // builds and guests on two cores) a cold boot can take longer than a run's 20 s,
    // and a snapshot that is never saved costs every later run a failed boot first.
    spec.ready_timeout = Duration::from_secs(60);
    // Saved under this process's own name, described from that file, then committed
    // with its description under the key's lock.
    let saved = state.with_extension(format!("state.tmp-{}", std::process::id()));
    spec.state = Some(StateFile::SaveTo(saved.clone()));
    let outcome = super::boot(&spec, &mut |_| {});
    let failed = match &outcome {
        Err(e) => Some(format!("{e:#}")),
        Ok(o) => match (&o.state_error, &o.exit) {
            (Some(e), _) => Some(format!("saving the guest failed: {e}")),
            (None, GuestExit::PoweredOff) if saved.is_file() => None,
            (None, exit) => Some(format!("the guest did not reach a saved state ({exit})")),
        },
    };
    if let Some(why) = failed {
        let _ = std::fs::remove_file(&saved);
        let _lock = key_lock(dir, key);
        remove(dir, key);
        bail!("{why}");
    }
    let meta = Meta {
        key: key.to_string(),
        base: saving.base.to_string(),
        modules: saving.modules.clone(),
        parts,
        state_size: std::fs::metadata(&saved)?.len(),
        fingerprint: fingerprint(&saved)?,
        created_at: crate::resultset::results::now(),
    };
    let lock = key_lock(dir, key);
    std::fs::rename(&saved, &state).with_context(|| format!("keeping {}", state.display()))?;
    crate::resultset::results::write_atomic(&meta_path, &serde_json::to_vec_pretty(&meta)?)?;
    drop(lock);
    remove_covered(dir, saving.base, key, &saving.modules);
    prune(dir, cap_bytes(), key);
    Ok(Snapshot {
        state,
        initramfs: cpio,
        key: key.to_string(),
    })
}

fn cap_bytes() -> u64 {
    std::env::var("SOCKMATRIX_SNAPSHOT_CAP_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CAP_MB)
        * 1024
        * 1024
}

/// Deletes the least recently used snapshots (never `keep`) until the folder fits
/// under `cap` bytes; also clears temporary files of saves that never finished.
pub fn prune(dir: &Path, cap: u64, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut snaps: Vec<(std::time::SystemTime, String, u64)> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(key) = name.strip_suffix(".json") {
            let (state, cpio, _) = paths(dir, key);
            let size = [state, cpio]
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            let used = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            snaps.push((used, key.to_string(), size));
        } else if name.contains(".tmp-") && stale(&e.path()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    snaps.sort();
    let mut total: u64 = snaps.iter().map(|s| s.2).sum();
    for (_, key, size) in snaps {
        if total <= cap {
            break;
        }
        if key != keep {
            remove(dir, &key);
            total -= size;
        }
    }
}

/// Removes the temporary files (`<key>.tmp-<pid>`, `<key>.cpio.tmp-<pid>`) of saves
/// that died (killed mid-save): their process is gone, or nothing wrote them for
/// an hour.
pub fn sweep_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().contains(".tmp-") && stale(&e.path()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A temporary file whose writer is gone (by the pid in its name), or that nobody
/// has written for an hour, belongs to a save that died.
fn stale(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let pid = name.rsplit_once(".tmp-").and_then(|(_, p)| p.parse().ok());
    if pid.is_some_and(|pid| !crate::leftovers::alive(pid)) {
        return true;
    }
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > Duration::from_secs(3600))
}

/// Snapshot count and total bytes (for `doctor`).
pub fn usage(dir: &Path) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let (mut n, mut bytes) = (0, 0);
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().ends_with(".json") {
            n += 1;
        }
        bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
    }
    (n, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(dir: &Path, key: &str, body: &[u8]) {
        fake_with(dir, key, "", &[], body)
    }

    fn fake_with(dir: &Path, key: &str, base: &str, modules: &[ModuleFile], body: &[u8]) {
        let (state, cpio, meta) = paths(dir, key);
        std::fs::write(&state, body).unwrap();
        std::fs::write(&cpio, b"cpio").unwrap();
        let m = Meta {
            key: key.into(),
            base: base.into(),
            modules: modules.to_vec(),
            parts: vec![],
            state_size: body.len() as u64,
            fingerprint: fingerprint(&state).unwrap(),
            created_at: 0,
        };
        std::fs::write(meta, serde_json::to_vec(&m).unwrap()).unwrap();
    }

    #[test]
    fn a_damaged_state_is_refused_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = STREAM_MAGIC.to_vec();
        body.extend(std::iter::repeat_n(7u8, 3 << 20));
        fake(dir.path(), "k", &body);
        assert!(lookup(dir.path(), "k").unwrap().is_some());
        assert!(lookup(dir.path(), "other").unwrap().is_none());

        // Truncated.
        let (state, _, _) = paths(dir.path(), "k");
        std::fs::write(&state, &body[..body.len() - 10]).unwrap();
        let why = lookup(dir.path(), "k").unwrap_err();
        assert!(why.contains("bytes"), "{why}");
        assert!(!state.exists(), "a bad snapshot is deleted");

        // Same size, one byte changed at the end.
        fake(dir.path(), "k", &body);
        let mut bad = body.clone();
        *bad.last_mut().unwrap() ^= 1;
        std::fs::write(&state, &bad).unwrap();
        assert!(lookup(dir.path(), "k").unwrap_err().contains("changed"));

        // A foreign file.
        let foreign = vec![0u8; body.len()];
        fake(dir.path(), "k", &body);
        std::fs::write(&state, &foreign).unwrap();
        assert!(lookup(dir.path(), "k").unwrap_err().contains("not a QEMU"));
    }

    #[test]
    fn prune_keeps_the_newest_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let body = [STREAM_MAGIC.to_vec(), vec![1u8; 1000]].concat();
        for k in ["a", "b", "c"] {
            fake(dir.path(), k, &body);
            std::thread::sleep(Duration::from_millis(20));
        }
        prune(dir.path(), 2 * 1012 + 10, "a");
        assert!(paths(dir.path(), "a").2.exists(), "kept on request");
        assert!(!paths(dir.path(), "b").2.exists(), "oldest other one goes");
        assert!(paths(dir.path(), "c").2.exists());
    }

    fn module(dir: &Path, name: &str, body: &[u8]) -> ModuleFile {
        let path = dir.join(format!("{name}.ko"));
        std::fs::write(&path, body).unwrap();
        ModuleFile::hash(name, &path).unwrap()
    }

    /// A plan restores from a snapshot of its base carrying all its modules (more is
    /// fine, fewer or other contents is not), and a new snapshot carries the union.
    #[test]
    fn a_snapshot_serves_every_plan_whose_modules_it_carries() {
        let dir = tempfile::tempdir().unwrap();
        let mods = tempfile::tempdir().unwrap();
        let body = [STREAM_MAGIC.to_vec(), vec![1u8; 100]].concat();
        let sctp = module(mods.path(), "sctp", b"sctp v1");
        let crc = module(mods.path(), "libcrc32c", b"crc");
        let veth = module(mods.path(), "veth", b"veth");

        let with_sctp = vec![crc.clone(), sctp.clone()];
        let key = full_key("base", &with_sctp);
        assert_ne!(key, "base");
        assert_eq!(full_key("base", &[]), "base");
        fake_with(dir.path(), &key, "base", &with_sctp, &body);
        let found = |needed: &[ModuleFile]| {
            lookup_covering(dir.path(), "base", needed)
                .unwrap()
                .map(|s| s.key)
        };
        assert_eq!(found(&[]), Some(key.clone()), "no modules: any snapshot");
        assert_eq!(found(std::slice::from_ref(&sctp)), Some(key.clone()));
        assert_eq!(
            found(std::slice::from_ref(&veth)),
            None,
            "veth is not in it"
        );
        assert!(lookup_covering(dir.path(), "other", &[]).unwrap().is_none());
        let mut changed = sctp.clone();
        changed.sha256 = "0".repeat(64);
        assert_eq!(found(&[changed]), None, "another build of sctp.ko");

        // Needing veth: the new snapshot carries sctp and its dependency too.
        let union = modules_to_save(dir.path(), "base", std::slice::from_ref(&veth));
        let names: Vec<&str> = union.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["libcrc32c", "sctp", "veth"]);
        // A module file that changed on the host is not carried over.
        std::fs::write(&sctp.path, b"sctp v2").unwrap();
        let union = modules_to_save(dir.path(), "base", std::slice::from_ref(&veth));
        assert!(!union.iter().any(|m| m.name == "sctp"), "{union:?}");

        // Once saved, the bigger one is found first and the one it covers goes.
        let all = vec![crc.clone(), sctp.clone(), veth.clone()];
        let big = full_key("base", &all);
        fake_with(dir.path(), &big, "base", &all, &body);
        assert_eq!(found(std::slice::from_ref(&sctp)), Some(big.clone()));
        remove_covered(dir.path(), "base", &big, &all);
        assert!(!paths(dir.path(), &key).2.exists());
        assert!(paths(dir.path(), &big).2.exists());
    }

    /// A save killed mid-way leaves `<key>.tmp-<pid>`: removed once that pid is gone.
    #[test]
    fn temporaries_of_dead_saves_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let ours = dir.path().join(format!("k.tmp-{}", std::process::id()));
        let theirs = dir.path().join(format!("k.cpio.tmp-{dead}"));
        std::fs::write(&ours, b"x").unwrap();
        std::fs::write(&theirs, b"x").unwrap();
        sweep_temporaries(dir.path());
        assert!(ours.exists(), "a live save's file is kept");
        assert!(!theirs.exists(), "a dead save's file is removed");
    }
}
