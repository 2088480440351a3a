//! The clock `time: true` reads. CLOCK_MONOTONIC, except in a TCG guest whose kernel
//! gave up on the TSC clocksource (5.10 to 6.17 under TCG run on `refined-jiffies`:
//! 4 ms steps, so a 1 ms close reads 0 or 4000 µs). There the TSC itself is read: under
//! TCG the guest's RDTSC is the host's TSC, at the rate the host put on the kernel
//! command line (`tsc_early_khz=`, vm/qemu.md), which is exact and steady.

use std::sync::OnceLock;
use std::time::Instant;

/// A point in time on the chosen clock.
#[derive(Debug, Clone, Copy)]
pub enum Stamp {
    Monotonic(Instant),
    /// TSC cycles, with the rate in kHz (cycles per millisecond).
    Tsc {
        cycles: u64,
        khz: u64,
    },
}

impl Stamp {
    pub fn now() -> Stamp {
        match tsc_khz() {
            Some(khz) => Stamp::Tsc {
                cycles: rdtsc(),
                khz,
            },
            None => Stamp::Monotonic(Instant::now()),
        }
    }

    /// Microseconds since this stamp.
    pub fn elapsed_us(&self) -> u64 {
        match *self {
            Stamp::Monotonic(at) => at.elapsed().as_micros() as u64,
            Stamp::Tsc { cycles, khz } => cycles_to_us(rdtsc().saturating_sub(cycles), khz),
        }
    }
}

fn cycles_to_us(cycles: u64, khz: u64) -> u64 {
    (u128::from(cycles) * 1000 / u128::from(khz.max(1))) as u64
}

/// The TSC rate when the TSC is the better clock: the command line names the rate
/// and the kernel's clocksource is not the TSC. Read once per process.
fn tsc_khz() -> Option<u64> {
    static KHZ: OnceLock<Option<u64>> = OnceLock::new();
    *KHZ.get_or_init(|| {
        let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
        let source = std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .unwrap_or_default();
        choose(&cmdline, source.trim())
    })
}

/// `tsc_early_khz=K` from the command line, unless the clocksource is the TSC
/// already (CLOCK_MONOTONIC is then as fine and needs no rate) or the CPU has none.
fn choose(cmdline: &str, clocksource: &str) -> Option<u64> {
    if clocksource == "tsc" || !cfg!(target_arch = "x86_64") {
        return None;
    }
    cmdline
        .split_whitespace()
        .find_map(|p| p.strip_prefix("tsc_early_khz="))
        .and_then(|k| k.parse().ok())
        .filter(|k| *k > 0)
}

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86-64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn rdtsc() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tsc_only_where_the_kernel_clock_is_coarse() {
        let line = "console=ttyS0 tsc_early_khz=2445400 lpj=9781600 -- serial-plan";
        assert_eq!(choose(line, "refined-jiffies"), Some(2_445_400));
        assert_eq!(
            choose(line, "tsc"),
            None,
            "CLOCK_MONOTONIC is the TSC already"
        );
        assert_eq!(choose("console=ttyS0", "refined-jiffies"), None);
        assert_eq!(choose("tsc_early_khz=0", "jiffies"), None);
        assert_eq!(cycles_to_us(2_445_400 * 3, 2_445_400), 3000);
    }

    #[test]
    fn tsc_stamps_measure_microseconds() {
        // The host TSC at the rate measured against CLOCK_MONOTONIC reads what
        // CLOCK_MONOTONIC reads over the same 20 ms sleep (not 0 or 4,000 µs as a
        // jiffies clock would), however long a loaded host makes the sleep.
        let Some(khz) = crate::qemu::tsc::host_tsc_khz() else {
            return;
        };
        let monotonic = Instant::now();
        let stamp = Stamp::Tsc {
            cycles: rdtsc(),
            khz: u64::from(khz),
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        let us = stamp.elapsed_us();
        let reference = monotonic.elapsed().as_micros() as u64;
        assert!(us >= 19_000, "{us} µs");
        assert!(
            us.abs_diff(reference) <= reference / 50 + 500,
            "{us} µs against {reference} µs"
        );
    }
}
