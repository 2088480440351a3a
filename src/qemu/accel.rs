//! Chooses the accelerator: `--accel auto|kvm|tcg`, and says why.
//!
//! On this kind of host /dev/kvm can exist and answer ioctls while guests hang
//! under it, so `auto` only picks KVM after a real trial boot succeeded. The
//! verdict is kept on disk (`<cache>/accel.json`), keyed by everything that decides
//! it (host kernel, QEMU binary, /dev/kvm identity, boot id), so only the first run
//! after a change pays for the trial; that run starts its guests under TCG at once
//! while the trial runs in the background.

use super::args::{self, QemuPlan, ResolvedAccel};
use super::initramfs::{base_entries, write_initramfs};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl FromStr for Accel {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => bail!("unknown accel {other:?} (expected auto, kvm or tcg)"),
        }
    }
}

impl ResolvedAccel {
    /// How results and output name it.
    pub fn name(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "kvm",
            ResolvedAccel::Tcg => "tcg",
        }
    }
}

/// The accelerator a boot uses and why (for results, logs and `doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoVerdict {
    pub accel: ResolvedAccel,
    pub reason: String,
}

/// A KVM trial boot that takes longer than this is a hang: under KVM the kernel
/// reaches "no working init" in well under a second.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Name of the verdict file in the cache.
const VERDICT_FILE: &str = "accel.json";

/// What decides the verdict: when any part changes, the trial boot runs again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictKey {
    pub host_release: String,
    /// `qemu-system-x86_64` as found on PATH: path, size and mtime (changes on upgrade).
    pub qemu: String,
    /// /dev/kvm's device, inode and ctime (a reloaded kvm module is a new node).
    pub kvm_node: String,
    pub boot_id: String,
}

/// The verdict file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredVerdict {
    key: VerdictKey,
    accel: String,
    reason: String,
    /// Seconds since the epoch.
    probed_at: u64,
}

/// Verdicts settled in this process (from the cache, the probe or no /dev/kvm).
static SETTLED: OnceLock<AutoVerdict> = OnceLock::new();
/// The background trial boot, while it runs.
static PROBE: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

impl Accel {
    /// Resolves to the accelerator to use and why. `kernel` is only used by the
    /// one-time auto trial (any bootable bzImage will do).
    pub fn resolve(self, kernel: &Path) -> Result<AutoVerdict> {
        match self {
            Accel::Tcg => Ok(AutoVerdict {
                accel: ResolvedAccel::Tcg,
                reason: "--accel tcg".into(),
            }),
            Accel::Kvm => {
                kvm_api_version().context("--accel kvm requested but KVM is unusable")?;
                Ok(AutoVerdict {
                    accel: ResolvedAccel::Kvm,
                    reason: "--accel kvm".into(),
                })
            }
            Accel::Auto => Ok(auto_verdict(kernel)),
        }
    }
}

/// The `auto` verdict without waiting: settled (cache or earlier trial) if known,
/// else TCG for now while a trial boot of `kernel` runs in the background.
pub fn auto_verdict(kernel: &Path) -> AutoVerdict {
    if let Some(v) = SETTLED.get() {
        return v.clone();
    }
    if let Err(e) = kvm_api_version() {
        return SETTLED
            .get_or_init(|| AutoVerdict {
                accel: ResolvedAccel::Tcg,
                reason: format!("no usable /dev/kvm: {e:#}"),
            })
            .clone();
    }
    let path = verdict_path();
    match verdict_key() {
        Ok(key) => {
            if let Some(mut v) = load_verdict(&path, &key) {
                v.reason = format!("{} (cached in {})", v.reason, path.display());
                return SETTLED.get_or_init(|| v).clone();
            }
            start_probe(kernel.to_path_buf(), key, path);
            AutoVerdict {
                accel: ResolvedAccel::Tcg,
                reason: "KVM trial boot still running (first run on this host): TCG for now".into(),
            }
        }
        Err(e) => AutoVerdict {
            accel: ResolvedAccel::Tcg,
            reason: format!("cannot tell whether KVM works ({e:#}): TCG"),
        },
    }
}

/// Waits for a background trial boot, if one runs, so its verdict reaches the
/// cache before the process ends (it is bounded by the trial's own timeout).
pub fn finish_probe() {
    let handle = PROBE.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(h) = handle {
        let _ = h.join();
    }
}

/// Runs the trial boot now (doctor, `--reprobe`) and stores the verdict.
pub fn probe_now(kernel: &Path) -> Result<AutoVerdict> {
    kvm_api_version()?;
    let key = verdict_key()?;
    let v = probe_verdict(kernel);
    store_verdict(&verdict_path(), &key, &v)?;
    Ok(v)
}

/// Where the verdict is kept.
pub fn verdict_path() -> PathBuf {
    crate::kernel::cache_dir().join(VERDICT_FILE)
}

/// The stored verdict if it is valid for this host as it is now, with when it
/// was made; for `doctor`.
pub fn cached_verdict() -> Option<(AutoVerdict, u64)> {
    let key = verdict_key().ok()?;
    let text = std::fs::read_to_string(verdict_path()).ok()?;
    let stored: StoredVerdict = serde_json::from_str(&text).ok()?;
    let at = stored.probed_at;
    from_stored(stored, &key).map(|v| (v, at))
}

fn start_probe(kernel: PathBuf, key: VerdictKey, path: PathBuf) {
    let mut slot = PROBE.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return;
    }
    *slot = Some(std::thread::spawn(move || {
        let v = probe_verdict(&kernel);
        // A verdict that cannot be stored is still good for this process.
        let _ = store_verdict(&path, &key, &v);
        let _ = SETTLED.set(v);
    }));
}

fn probe_verdict(kernel: &Path) -> AutoVerdict {
    match probe_kvm(kernel) {
        Ok(after) => AutoVerdict {
            accel: ResolvedAccel::Kvm,
            reason: format!(
                "KVM trial boot reached the init stage in {} ms",
                after.as_millis()
            ),
        },
        Err(e) => AutoVerdict {
            accel: ResolvedAccel::Tcg,
            reason: format!("KVM trial boot failed: {e:#}"),
        },
    }
}

fn load_verdict(path: &Path, key: &VerdictKey) -> Option<AutoVerdict> {
    let text = std::fs::read_to_string(path).ok()?;
    from_stored(serde_json::from_str(&text).ok()?, key)
}

/// A stored verdict counts only under the same key.
fn from_stored(stored: StoredVerdict, key: &VerdictKey) -> Option<AutoVerdict> {
    if &stored.key != key {
        return None;
    }
    let accel = match stored.accel.as_str() {
        "kvm" => ResolvedAccel::Kvm,
        "tcg" => ResolvedAccel::Tcg,
        _ => return None,
    };
    Some(AutoVerdict {
        accel,
        reason: stored.reason,
    })
}

fn store_verdict(path: &Path, key: &VerdictKey, v: &AutoVerdict) -> Result<()> {
    let stored = StoredVerdict {
        key: key.clone(),
        accel: v.accel.name().into(),
        reason: v.reason.clone(),
        probed_at: crate::resultset::results::now(),
    };
    let dir = path.parent().context("verdict path has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, &stored)?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The key for this host as it is now.
pub fn verdict_key() -> Result<VerdictKey> {
    use std::os::unix::fs::MetadataExt;
    let kvm = std::fs::metadata("/dev/kvm").context("stat /dev/kvm")?;
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .context("reading the boot id")?;
    Ok(VerdictKey {
        host_release: crate::host::release(),
        qemu: qemu_identity()?,
        kvm_node: format!(
            "dev {:#x} ino {} ctime {}.{:09}",
            kvm.rdev(),
            kvm.ino(),
            kvm.ctime(),
            kvm.ctime_nsec()
        ),
        boot_id: boot_id.trim().to_string(),
    })
}

/// The QEMU binary on PATH as path, size and mtime: cheaper than running
/// `--version` on every run, and it changes whenever QEMU is upgraded.
pub fn qemu_identity() -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let path = find_on_path(args::QEMU_BINARY)
        .with_context(|| format!("{} not found on PATH", args::QEMU_BINARY))?;
    let real = std::fs::canonicalize(&path).unwrap_or(path);
    let m = std::fs::metadata(&real)?;
    Ok(format!(
        "{} size {} mtime {}.{:09}",
        real.display(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// KVM_GET_API_VERSION on /dev/kvm; the stable API answers 12.
fn kvm_api_version() -> Result<i32> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .context("open /dev/kvm")?;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    // SAFETY: this ioctl takes no argument and only returns an int.
    let v = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if v != 12 {
        bail!("KVM_GET_API_VERSION returned {v}, expected 12");
    }
    Ok(v)
}

/// Boots `kernel` under KVM with an initramfs holding no init: a working guest
/// reaches "Kernel panic ... No working init found" and panic=-1 ends QEMU at once.
/// A hang, an early QEMU error, or no panic line means KVM is not usable.
fn probe_kvm(kernel: &Path) -> Result<Duration> {
    kvm_api_version()?;
    let dir = tempfile::Builder::new()
        .prefix(&crate::leftovers::prefix("kvm-probe"))
        .tempdir()
        .context("creating the trial boot's scratch folder")?;
    let initrd = dir.path().join("probe.cpio");
    let log = dir.path().join("console.log");
    write_initramfs(&initrd, &base_entries())?;
    let plan = QemuPlan {
        accel: ResolvedAccel::Kvm,
        machine: args::Machine::Microvm,
        cpus: 1,
        memory_mb: 256,
        kernel,
        initramfs: &initrd,
        cmdline: args::kernel_cmdline(&[], &["rdinit=/nonexistent".into()], &[]),
        console_log: &log,
    };
    let start = Instant::now();
    let handle = super::boot::qemu_expression(&args::qemu_args(&plan))
        .stdout_null()
        .start()
        .context("spawn QEMU")?;
    let out = handle.wait_timeout(PROBE_TIMEOUT)?;
    let Some(out) = out else {
        let _ = handle.kill();
        let _ = handle.wait();
        bail!("no panic-without-init within {PROBE_TIMEOUT:?} (guests hang under KVM here)");
    };
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    if !out.status.success() {
        bail!(
            "QEMU failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if !console.contains("Kernel panic") {
        bail!("trial boot ended without reaching init stage");
    }
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_table() {
        for (s, want) in [
            ("auto", Accel::Auto),
            ("kvm", Accel::Kvm),
            ("tcg", Accel::Tcg),
        ] {
            assert_eq!(s.parse::<Accel>().unwrap(), want);
        }
        assert!("KVM".parse::<Accel>().is_err());
    }

    #[test]
    fn tcg_needs_no_probe() {
        let v = Accel::Tcg.resolve(Path::new("/nonexistent")).unwrap();
        assert_eq!(v.accel, ResolvedAccel::Tcg);
    }

    fn key(boot_id: &str) -> VerdictKey {
        VerdictKey {
            host_release: "6.1.0".into(),
            qemu: "/usr/bin/qemu size 1 mtime 2.0".into(),
            kvm_node: "dev 0xa00 ino 3 ctime 4.0".into(),
            boot_id: boot_id.into(),
        }
    }

    #[test]
    fn stored_verdict_round_trips_only_under_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accel.json");
        let v = AutoVerdict {
            accel: ResolvedAccel::Kvm,
            reason: "trial ok".into(),
        };
        store_verdict(&path, &key("a"), &v).unwrap();
        assert_eq!(load_verdict(&path, &key("a")), Some(v));
        // Any part of the key changing (here: a reboot) means probing again.
        assert_eq!(load_verdict(&path, &key("b")), None);
        std::fs::write(&path, "{ truncated").unwrap();
        assert_eq!(load_verdict(&path, &key("a")), None);
    }

    #[test]
    fn host_key_has_every_part() {
        // Only meaningful where /dev/kvm exists (it does on the CI and dev hosts).
        if let Ok(k) = verdict_key() {
            assert!(!k.boot_id.is_empty() && k.kvm_node.contains("ino"));
            assert!(k.qemu.contains("size"));
            assert_eq!(verdict_key().unwrap(), k, "the key is stable");
        }
    }
}
