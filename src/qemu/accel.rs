//! Chooses the accelerator: `--accel auto|kvm|tcg`.
//!
//! On this kind of host /dev/kvm can exist and answer ioctls while guests hang
//! under it, so `auto` only picks KVM after a real trial boot succeeded. The
//! verdict is computed once per process and cached.

use super::args::{self, QemuPlan, ResolvedAccel};
use super::initramfs::{base_entries, write_initramfs};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;
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

/// Why `auto` chose what it chose (for logs/reports).
#[derive(Debug, Clone)]
pub struct AutoVerdict {
    pub accel: ResolvedAccel,
    pub reason: String,
}

static AUTO: OnceLock<AutoVerdict> = OnceLock::new();

/// A KVM trial boot that takes longer than this is a hang (a real one takes < 2 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

impl Accel {
    /// Resolves to the accelerator to use. `kernel` is only used by the one-time
    /// auto probe (any bootable bzImage will do).
    pub fn resolve(self, kernel: &Path) -> Result<ResolvedAccel> {
        match self {
            Accel::Tcg => Ok(ResolvedAccel::Tcg),
            Accel::Kvm => {
                kvm_api_version().context("--accel kvm requested but KVM is unusable")?;
                Ok(ResolvedAccel::Kvm)
            }
            Accel::Auto => Ok(auto_verdict(kernel).accel),
        }
    }
}

/// The cached `auto` verdict, probing on first use (concurrent callers wait for it).
pub fn auto_verdict(kernel: &Path) -> &'static AutoVerdict {
    AUTO.get_or_init(|| {
        let (accel, reason) = match probe_kvm(kernel) {
            Ok(after) => (
                ResolvedAccel::Kvm,
                format!("KVM trial boot reached init stage in {after:?}"),
            ),
            Err(e) => (ResolvedAccel::Tcg, format!("KVM not used: {e:#}")),
        };
        AutoVerdict { accel, reason }
    })
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
    let dir = std::env::temp_dir().join(format!("sockmatrix-kvm-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let initrd = dir.join("probe.cpio");
        let log = dir.join("console.log");
        write_initramfs(&initrd, &base_entries())?;
        let plan = QemuPlan {
            accel: ResolvedAccel::Kvm,
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
            bail!("trial boot hung for {PROBE_TIMEOUT:?}");
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
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
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
        assert_eq!(
            Accel::Tcg.resolve(Path::new("/nonexistent")).unwrap(),
            ResolvedAccel::Tcg
        );
    }
}
