//! The kernel cache's size: what it holds, when each kernel was last used, and
//! pruning the least recently used kernels (with their packages) and source builds'
//! object folders down to a cap.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use super::source_build::{BUILD_LOCK, BUILD_LOG};
use super::store;

/// The cap when `$SOCKMATRIX_CACHE_MAX` is not set: every reachable release of the
/// cloud flavour (about ninety, 40–60 MB each with its package) fits.
pub const DEFAULT_CAP: u64 = 6 << 30;

/// Kernels used this recently are never pruned: another run may be booting them.
const IN_USE: Duration = Duration::from_secs(15 * 60);

const STAMP: &str = ".used";

/// Marks a cached kernel as used now (its last-use time orders pruning).
pub fn touch(dir: &Path) {
    let _ = std::fs::write(dir.join(STAMP), b"");
}

/// The cap: `$SOCKMATRIX_CACHE_MAX` (`800M`, `6G`, bytes) or the default.
pub fn cap() -> Result<u64> {
    match std::env::var("SOCKMATRIX_CACHE_MAX") {
        Ok(v) if !v.trim().is_empty() => {
            parse_size(&v).with_context(|| format!("SOCKMATRIX_CACHE_MAX={v:?}"))
        }
        _ => Ok(DEFAULT_CAP),
    }
}

/// `800M`, `6G`, `1.5G`, `123456` (bytes).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("`{t}`: a size is a number with K, M, G or T"),
            };
            (&t[..i], mult)
        }
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .with_context(|| format!("`{t}` is not a size like 800M or 6G"))?;
    Ok((n * mult as f64) as u64)
}

/// One prunable thing: an extracted kernel with its package, a lone package, or a
/// source build's object folder.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Kernel id-version folder name, the package file name, or `build-work/<folder>`.
    pub name: String,
    pub paths: Vec<PathBuf>,
    pub bytes: u64,
    pub last_used: SystemTime,
    /// A file a user of the entry holds locked (a build in its object folder).
    pub lock: Option<PathBuf>,
}

/// What the cache holds, least recently used first: kernels and packages, and the
/// object folders `kernels build` keeps for fast rebuilds (often the largest part;
/// pruning one only makes the next build of that tree a full one). Indexes, snapshots
/// (capped on their own) and built kernels, which users name, are not counted.
pub fn entries(cache: &Path) -> Vec<Entry> {
    let mut debs: Vec<PathBuf> = read_dir(&cache.join("debs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    let mut out = Vec::new();
    for dir in read_dir(&cache.join("kernels")) {
        if !dir.is_dir() {
            continue;
        }
        let mut paths = vec![dir.clone()];
        if let Some(meta) = read_meta(&dir) {
            let prefix = format!("{}_{}_", meta.origin, meta.version.unwrap_or_default());
            debs.retain(|d| {
                let mine = file_name(d).starts_with(&prefix);
                if mine {
                    paths.push(d.clone());
                }
                !mine
            });
        }
        let stamp = [dir.join(STAMP), dir.join(store::META), dir.clone()];
        let last_used = stamp
            .iter()
            .find_map(|p| mtime(p))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        out.push(Entry {
            name: file_name(&dir),
            bytes: paths.iter().map(|p| size_of(p)).sum(),
            paths,
            last_used,
            lock: None,
        });
    }
    for deb in debs {
        out.push(Entry {
            name: file_name(&deb),
            bytes: size_of(&deb),
            last_used: mtime(&deb).unwrap_or(SystemTime::UNIX_EPOCH),
            paths: vec![deb],
            lock: None,
        });
    }
    for dir in read_dir(&cache.join("build-work")) {
        if !dir.is_dir() {
            continue;
        }
        // Every build appends to its log: its time is the folder's last use.
        let last_used = [dir.join(BUILD_LOG), dir.clone()]
            .iter()
            .find_map(|p| mtime(p))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        out.push(Entry {
            name: format!("build-work/{}", file_name(&dir)),
            bytes: size_of(&dir),
            lock: Some(dir.join(BUILD_LOCK)),
            paths: vec![dir],
            last_used,
        });
    }
    out.sort_by_key(|e| e.last_used);
    out
}

/// Total bytes of `entries`.
pub fn total(entries: &[Entry]) -> u64 {
    entries.iter().map(|e| e.bytes).sum()
}

/// Removes least recently used entries until the cache is at most `cap` bytes,
/// sparing those used in the last fifteen minutes. Returns what was removed.
pub fn prune(cache: &Path, cap: u64) -> Result<Vec<Entry>> {
    prune_entries(entries(cache), cap, SystemTime::now())
}

fn prune_entries(entries: Vec<Entry>, cap: u64, now: SystemTime) -> Result<Vec<Entry>> {
    let mut size = total(&entries);
    let mut removed = Vec::new();
    for e in entries {
        if size <= cap {
            break;
        }
        let recent = now
            .duration_since(e.last_used)
            .map_or(true, |age| age < IN_USE);
        if recent || e.lock.as_deref().is_some_and(locked) {
            continue;
        }
        for p in &e.paths {
            let res = if p.is_dir() {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
            res.with_context(|| format!("removing {}", p.display()))?;
        }
        size -= e.bytes;
        removed.push(e);
    }
    Ok(removed)
}

/// Whether another process holds `lock` (a build running in that folder).
fn locked(lock: &Path) -> bool {
    std::fs::File::open(lock)
        .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
}

/// `1.4 GiB`, `530 MiB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", b / (1u64 << 20) as f64)
    }
}

fn read_meta(dir: &Path) -> Option<store::KernelMeta> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(store::META)).ok()?).ok()
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn size_of(p: &Path) -> u64 {
    if p.is_dir() {
        read_dir(p).iter().map(|c| size_of(c)).sum()
    } else {
        std::fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("800M").unwrap(), 800 << 20);
        assert_eq!(parse_size("6g").unwrap(), 6 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("-1G").is_err());
    }

    #[test]
    fn prunes_least_recently_used_first_and_spares_recent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        for (name, origin, age_days) in [("a-1", "pa", 3u64), ("b-1", "pb", 1), ("c-1", "pc", 2)] {
            let k = cache.join("kernels").join(name);
            std::fs::create_dir_all(&k).unwrap();
            std::fs::write(k.join("vmlinuz"), vec![0u8; 1000]).unwrap();
            let meta = format!(
                r#"{{"id":"x","origin":"{origin}","version":"1","release":null,"origin_sha256":null,"vmlinuz_sha256":"00"}}"#
            );
            std::fs::write(k.join(store::META), meta).unwrap();
            std::fs::create_dir_all(cache.join("debs")).unwrap();
            std::fs::write(
                cache.join("debs").join(format!("{origin}_1_amd64.deb")),
                vec![0u8; 4000],
            )
            .unwrap();
            touch(&k);
            let t = now - day * age_days as u32;
            std::fs::File::options()
                .write(true)
                .open(k.join(STAMP))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        // A fresh kernel: spared even though the cap would want it gone.
        let fresh = cache.join("kernels").join("d-1");
        std::fs::create_dir_all(&fresh).unwrap();
        std::fs::write(fresh.join("vmlinuz"), vec![0u8; 1000]).unwrap();
        touch(&fresh);

        let all = entries(cache);
        let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a-1", "c-1", "b-1", "d-1"], "oldest first");
        assert!(
            all[0].bytes >= 5000,
            "the package counts with its kernel: {}",
            all[0].bytes
        );
        let removed = prune_entries(all, 8000, now).unwrap();
        let gone: Vec<&str> = removed.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(gone, ["a-1", "c-1"]);
        assert!(!cache.join("debs/pa_1_amd64.deb").exists());
        assert!(cache.join("debs/pb_1_amd64.deb").exists());
        let removed = prune_entries(entries(cache), 0, now).unwrap();
        assert_eq!(removed.len(), 1, "the recent one stays");
        assert!(fresh.exists());
    }

    /// Source builds' object folders are counted and pruned like kernels, by their
    /// log's time, except one a running build holds locked.
    #[test]
    fn object_folders_are_pruned_unless_a_build_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let now = SystemTime::now();
        let old = now - Duration::from_secs(86400);
        for name in ["linux-minimal-aaaa", "linux-minimal-bbbb"] {
            let w = cache.join("build-work").join(name);
            std::fs::create_dir_all(w.join("net")).unwrap();
            std::fs::write(w.join("net/tcp.o"), vec![0u8; 3000]).unwrap();
            let log = std::fs::File::create(w.join(BUILD_LOG)).unwrap();
            log.set_modified(old).unwrap();
            std::fs::write(w.join(BUILD_LOCK), b"").unwrap();
        }
        let busy = cache.join("build-work/linux-minimal-bbbb");
        let held = std::fs::File::open(busy.join(BUILD_LOCK)).unwrap();
        held.lock().unwrap();

        let all = entries(cache);
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|e| e.bytes >= 3000), "{all:?}");
        let removed = prune_entries(all, 0, now).unwrap();
        let gone: Vec<&str> = removed.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(gone, ["build-work/linux-minimal-aaaa"]);
        assert!(!cache.join("build-work/linux-minimal-aaaa").exists());
        assert!(busy.exists(), "a running build's folder stays");
        drop(held);
        assert_eq!(prune_entries(entries(cache), 0, now).unwrap().len(), 1);
    }
}
