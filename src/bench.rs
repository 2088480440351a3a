//! `sockmatrix bench`: figures, not pass/fail. Per kernel: the floor (the same QEMU
//! flags booting a do-nothing init that powers off), boot-to-agent, per-case times,
//! the whole run; then the hang count over many floor boots.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::case::Case;
use crate::qemu::{self, BootSpec, Gate, GuestExit};
use crate::resultset::results::KernelResult;
use crate::runner::{self, KernelImage, Progress, RunOptions};

pub struct FloorBoot {
    /// Launch to the init's first line.
    pub ready: Option<Duration>,
    /// Launch to QEMU's exit, retries included.
    pub total: Duration,
    pub attempts: u32,
    pub exit: GuestExit,
}

pub struct KernelFigures {
    pub kernel: String,
    pub floor: Option<FloorBoot>,
    pub result: KernelResult,
}

pub struct HangFigures {
    pub boots: u32,
    /// Boots that needed a retry because the first attempt never reached init.
    pub retried: u32,
    /// Boots that did not end with a clean power-off even after retries.
    pub failed: u32,
}

pub struct Report {
    pub kernels: Vec<KernelFigures>,
    pub matrix_wall: Duration,
    pub hangs: Option<HangFigures>,
}

/// Boots `image` with the agent in floor mode: up, one line, power off.
pub fn floor_boot(image: &KernelImage, opts: &RunOptions, scratch: &Path) -> Result<FloorBoot> {
    let agent = runner::agent_binary()?;
    let initramfs = scratch.join(format!("floor-{}.cpio", image.id));
    runner::write_guest_image(&initramfs, &agent, None, &[])?;
    let mut spec = BootSpec::new(
        &image.vmlinuz,
        &initramfs,
        scratch.join(format!("floor-{}.console.log", image.id)),
    );
    spec.accel = opts.accel;
    spec.memory_mb = opts.memory_mb;
    spec.cpus = opts.cpus;
    spec.retries = opts.retries;
    spec.ready_timeout = opts.ready_timeout;
    spec.total_timeout = Duration::from_secs(60);
    spec.init_args = vec!["floor".into()];
    let outcome = qemu::boot(&spec, &mut |_| {})?;
    Ok(FloorBoot {
        ready: outcome.boot_to_ready,
        total: outcome.total,
        attempts: outcome.attempts,
        exit: outcome.exit,
    })
}

pub fn run(
    kernels: &[String],
    cases: &[Case],
    opts: &RunOptions,
    hang_boots: u32,
) -> Result<Report> {
    let (catalogue, lock) = runner::load_catalogue()?;
    let images: Vec<KernelImage> = kernels
        .iter()
        .map(|id| runner::provision(id, &catalogue, &lock, opts.show_downloads))
        .collect::<Result<_>>()?;
    let scratch = tempfile::tempdir().context("scratch folder for floor images")?;

    // Floors first, as many at once as the matrix will run.
    let gate = Gate::new(opts.max_guests.max(1));
    let floors: Vec<Option<FloorBoot>> = std::thread::scope(|scope| {
        let handles: Vec<_> = images
            .iter()
            .map(|image| {
                let (gate, scratch) = (&gate, scratch.path());
                scope.spawn(move || {
                    let _permit = gate.acquire();
                    floor_boot(image, opts, scratch).ok()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });

    let started = Instant::now();
    let results = runner::run_kernels(kernels, cases, opts, &|_: Progress| {});
    let matrix_wall = started.elapsed();

    let hangs = (hang_boots > 0).then(|| count_hangs(&images, opts, scratch.path(), hang_boots));
    let kernels = kernels
        .iter()
        .zip(floors)
        .zip(results)
        .map(|((kernel, floor), result)| KernelFigures {
            kernel: kernel.clone(),
            floor,
            result,
        })
        .collect();
    Ok(Report {
        kernels,
        matrix_wall,
        hangs,
    })
}

/// Floor boots round-robin over the kernels, `max_guests` at a time.
fn count_hangs(
    images: &[KernelImage],
    opts: &RunOptions,
    scratch: &Path,
    boots: u32,
) -> HangFigures {
    let next = std::sync::atomic::AtomicU32::new(0);
    let (retried, failed) = (
        std::sync::atomic::AtomicU32::new(0),
        std::sync::atomic::AtomicU32::new(0),
    );
    std::thread::scope(|scope| {
        for worker in 0..opts.max_guests.max(1) {
            let (next, retried, failed) = (&next, &retried, &failed);
            scope.spawn(move || loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= boots {
                    break;
                }
                let image = &images[n as usize % images.len()];
                let dir = scratch.join(format!("hang-{worker}"));
                let _ = std::fs::create_dir_all(&dir);
                match floor_boot(image, opts, &dir) {
                    Ok(floor) => {
                        if floor.attempts > 1 {
                            retried.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        if floor.exit != GuestExit::PoweredOff {
                            failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    HangFigures {
        boots,
        retried: retried.into_inner(),
        failed: failed.into_inner(),
    }
}

fn ms(d: Duration) -> String {
    format!("{}", d.as_millis())
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        writeln!(
            f,
            "{:<6} {:>9} {:>10} {:>6} {:>9} {:>9} {:>10}  slowest case",
            "kernel", "floor ms", "agent ms", "ratio", "cases ms", "boot ms", "attempts"
        )?;
        for k in &self.kernels {
            let floor_ready = k.floor.as_ref().and_then(|f| f.ready);
            let boot = k.result.boot.as_ref();
            let agent = boot
                .and_then(|b| b.boot_to_ready_ms)
                .map(Duration::from_millis);
            let ratio = match (agent, floor_ready) {
                (Some(a), Some(fl)) if !fl.is_zero() => {
                    format!("{:.2}", a.as_secs_f64() / fl.as_secs_f64())
                }
                _ => "-".into(),
            };
            let cases: u64 = k.result.cases.iter().map(|c| c.elapsed_ms).sum();
            let slowest = k.result.cases.iter().max_by_key(|c| c.elapsed_ms);
            writeln!(
                f,
                "{:<6} {:>9} {:>10} {:>6} {:>9} {:>9} {:>10}  {}",
                k.kernel,
                floor_ready.map(ms).unwrap_or("-".into()),
                agent.map(ms).unwrap_or("-".into()),
                ratio,
                cases,
                boot.map(|b| b.total_ms.to_string()).unwrap_or("-".into()),
                boot.map(|b| b.attempts.to_string()).unwrap_or("-".into()),
                slowest
                    .map(|c| format!("{} ({} ms)", c.case, c.elapsed_ms))
                    .unwrap_or_default(),
            )?;
        }
        writeln!(
            f,
            "\nfloor ms: launch to the do-nothing init's first line; agent ms: launch to the agent's first line;\n\
             ratio: boot overhead against the floor (target <= 1.30); cases ms: time inside the guest running cases;\n\
             boot ms: launch to power-off for the whole plan."
        )?;
        let n = self
            .kernels
            .iter()
            .map(|k| k.result.cases.len())
            .max()
            .unwrap_or(0);
        writeln!(
            f,
            "whole matrix: {} kernels x {n} cases in {:.1} s wall (target < 60 s)",
            self.kernels.len(),
            self.matrix_wall.as_secs_f64()
        )?;
        if let Some(h) = &self.hangs {
            writeln!(f, "hangs: {} of {} floor boots needed a retry, {} did not power off cleanly (target 0)", h.retried, h.boots, h.failed)?;
        }
        Ok(())
    }
}
