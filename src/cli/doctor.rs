//! `sockmatrix doctor`: what this host gives the guests (accelerator and why, QEMU,
//! cache, snapshots), so a slow or odd run can be explained.

use std::process::ExitCode;

use super::exit;
use crate::qemu::{self, accel};
use crate::runner;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Run the KVM trial boot again even if a verdict is cached.
    #[arg(long)]
    pub reprobe: bool,
}

pub fn doctor(args: &DoctorArgs) -> ExitCode {
    let cache = crate::kernel::cache_dir();
    println!("cache: {}", cache.display());
    match accel::qemu_identity() {
        Ok(q) => println!("qemu: {q}"),
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::COULD_NOT_RUN);
        }
    }
    let cached = if args.reprobe {
        None
    } else {
        accel::cached_verdict()
    };
    match cached {
        Some((v, at)) => {
            println!("accelerator (auto): {} -- {}", v.accel.name(), v.reason);
            println!(
                "  from cache entry {} (probed at {at}, epoch seconds)",
                accel::verdict_path().display()
            );
        }
        None => match trial_kernel().and_then(|k| accel::probe_now(&k)) {
            Ok(v) => {
                println!("accelerator (auto): {} -- {}", v.accel.name(), v.reason);
                println!(
                    "  trial boot just now; stored in {}",
                    accel::verdict_path().display()
                );
            }
            Err(e) => {
                // No /dev/kvm (or it does not answer): nothing to cache, auto is TCG.
                let v = qemu::auto_verdict(std::path::Path::new("/nonexistent"));
                println!(
                    "accelerator (auto): {} -- {} ({e:#})",
                    v.accel.name(),
                    v.reason
                );
            }
        },
    }
    match accel::verdict_key() {
        Ok(k) => println!(
            "  decided by: host kernel {}, {}, /dev/kvm {}, boot id {}",
            k.host_release, k.qemu, k.kvm_node, k.boot_id
        ),
        Err(e) => println!("  no verdict key: {e:#}"),
    }
    ExitCode::SUCCESS
}

/// A kernel for the trial boot: the first of the default set (fetched if needed).
fn trial_kernel() -> anyhow::Result<std::path::PathBuf> {
    let (catalogue, lock) = runner::load_catalogue()?;
    let id = catalogue
        .default_ids()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the catalogue has no default kernel"))?;
    Ok(runner::provision(&id, &catalogue, &lock, true)?.vmlinuz)
}

/// One line for `kernels list`: the accelerator `auto` would use, and from where.
pub fn accel_line() -> String {
    match accel::cached_verdict() {
        Some((v, _)) => format!(
            "accelerator (auto): {} -- {} [{}]",
            v.accel.name(),
            v.reason,
            accel::verdict_path().display()
        ),
        None => "accelerator (auto): not decided yet on this host (the next run or `sockmatrix doctor` decides)".into(),
    }
}
