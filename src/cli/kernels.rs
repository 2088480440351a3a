//! `sockmatrix kernels`: what the catalogue holds, fetching, refreshing the lock.

use std::process::ExitCode;

use clap::Subcommand;

use super::exit;
use crate::kernel;
use crate::runner;

#[derive(Subcommand)]
pub enum Action {
    /// Every kernel in the catalogue: source, pinned version, cached or not.
    List,
    /// Download, verify and unpack kernels into the cache (default: the default set).
    Fetch { ids: Vec<String> },
    /// Re-read the Debian indexes and pin the newest matching packages in vm/kernels.lock.
    Lock {
        /// Required: rewriting the lock changes what every run boots.
        #[arg(long)]
        refresh: bool,
    },
}

pub fn kernels(action: Action) -> ExitCode {
    let (catalogue, lock) = match runner::load_catalogue() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    let cache = kernel::cache_dir();
    match action {
        Action::List => {
            println!("{}", super::doctor::accel_line());
            println!(
                "{:<6} {:<13} {:<8} {:<7} pinned",
                "id", "source", "default", "cached"
            );
            for k in kernel::list(&catalogue, &lock, &cache) {
                let pinned = match (&k.pinned_package, &k.pinned_version) {
                    (Some(p), Some(v)) => format!("{p} {v}"),
                    _ => "-".to_string(),
                };
                let yes = |b: bool| if b { "yes" } else { "no" };
                println!(
                    "{:<6} {:<13} {:<8} {:<7} {pinned}",
                    k.id,
                    k.kind,
                    yes(k.default),
                    yes(k.cached)
                );
            }
            println!("cache: {}", cache.display());
            ExitCode::SUCCESS
        }
        Action::Fetch { ids } => {
            let ids = if ids.is_empty() {
                catalogue.default_ids()
            } else {
                ids
            };
            let mut failed = false;
            for id in &ids {
                match runner::provision(id, &catalogue, &lock, true) {
                    Ok(image) => println!("{id}: {}", image.vmlinuz.display()),
                    Err(e) => {
                        eprintln!("{id}: {e:#}");
                        failed = true;
                    }
                }
            }
            if failed {
                ExitCode::from(exit::COULD_NOT_RUN)
            } else {
                ExitCode::SUCCESS
            }
        }
        Action::Lock { refresh } => {
            if !refresh {
                eprintln!("error: `kernels lock --refresh` rewrites vm/kernels.lock; say --refresh to do it");
                return ExitCode::from(exit::BAD_INPUT);
            }
            let path = match runner::chosen_catalogue_dir() {
                Ok(Some(dir)) => dir.join("kernels.lock"),
                Ok(None) => {
                    eprintln!("error: the built-in catalogue cannot be rewritten; run this in a sockmatrix checkout (./vm) or give --catalogue DIR");
                    return ExitCode::from(exit::BAD_INPUT);
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(exit::BAD_INPUT);
                }
            };
            match kernel::refresh_lock(&catalogue, &cache)
                .and_then(|new| new.save(&path).map(|()| new))
            {
                Ok(new) => {
                    for (id, k) in &new.kernels {
                        println!("{id}: {} {}", k.package, k.version);
                    }
                    println!("wrote {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(exit::COULD_NOT_RUN)
                }
            }
        }
    }
}
