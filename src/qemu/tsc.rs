//! Host TSC rate, handed to TCG guests as `tsc_early_khz=` (see vm/qemu.md).
//!
//! Under TCG the guest's RDTSC returns the host TSC, so the host rate is the
//! guest rate. Giving it to the kernel skips the PIT-based TSC calibration,
//! which fails on a loaded host and then leaves the guest hung with no timer tick.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static HOST_TSC_KHZ: OnceLock<Option<u32>> = OnceLock::new();

/// The host TSC rate in kHz, rounded to 100 kHz (so the kernel command line is the
/// same from run to run), measured once per process (~300 ms); None if unknown.
pub fn host_tsc_khz() -> Option<u32> {
    *HOST_TSC_KHZ.get_or_init(measure)
}

#[cfg(target_arch = "x86_64")]
fn measure() -> Option<u32> {
    // Best of a few tries: a try counts only if both samples were taken without
    // the thread being preempted between the clock read and the TSC read.
    let mut rates: Vec<f64> = (0..5)
        .filter_map(|_| one_try(Duration::from_millis(100)))
        .take(3)
        .collect();
    if rates.is_empty() {
        return None;
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    let khz = rates[rates.len() / 2];
    // Sanity: anything outside 100 MHz..10 GHz is a broken measurement.
    (100_000.0..10_000_000.0)
        .contains(&khz)
        .then_some(((khz / 100.0).round() * 100.0) as u32)
}

#[cfg(target_arch = "x86_64")]
fn one_try(span: Duration) -> Option<f64> {
    let sample = || {
        let t0 = Instant::now();
        // SAFETY: RDTSC is available on every x86-64 CPU.
        let c = unsafe { core::arch::x86_64::_rdtsc() };
        let t1 = Instant::now();
        ((t1 - t0) < Duration::from_micros(20)).then_some((t0 + (t1 - t0) / 2, c))
    };
    let (ta, ca) = sample()?;
    std::thread::sleep(span);
    let (tb, cb) = sample()?;
    let secs = (tb - ta).as_secs_f64();
    Some((cb.wrapping_sub(ca)) as f64 / secs / 1000.0)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure() -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn measures_a_plausible_rate() {
        let khz = super::host_tsc_khz().expect("x86-64 host has a TSC");
        assert!((100_000..10_000_000).contains(&khz), "{khz}");
        assert_eq!(super::host_tsc_khz(), Some(khz), "cached");
    }
}
