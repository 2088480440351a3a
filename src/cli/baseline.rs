//! `sockmatrix baseline update`: makes a result set the committed reference that
//! `sockmatrix diff --baseline` gates against.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::exit;
use crate::resultset::results;

#[derive(clap::Subcommand)]
pub enum Action {
    /// Copy each kernel's result.json (not the console logs) into the baseline.
    Update {
        #[arg(long, default_value = results::DEFAULT_DIR)]
        from: PathBuf,
        #[arg(long, default_value = results::BASELINE_DIR)]
        to: PathBuf,
    },
}

pub fn baseline(action: Action) -> ExitCode {
    let Action::Update { from, to } = action;
    match update(&from, &to) {
        Ok(0) => {
            eprintln!("error: nothing copied: no kernel in {} ran", from.display());
            ExitCode::from(exit::BAD_INPUT)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => super::input_or_write_failed(&e),
    }
}

/// Kernels that could not run are left out, so the baseline keeps their last good
/// result instead of a boot failure. Baseline kernels absent from `from` stay as they are.
fn update(from: &std::path::Path, to: &std::path::Path) -> Result<usize> {
    // Every file is parsed first: a bad one stops the update before anything is written.
    let set = results::load_set(from)?;
    let mut copied = 0;
    for k in &set {
        if let Some(why) = &k.could_not_run {
            println!(
                "{}: not copied, it could not run: {}",
                k.kernel,
                why.lines().next().unwrap_or_default()
            );
            continue;
        }
        let src = results::result_path(from, &k.kernel);
        let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
        let dst = results::result_path(to, &k.kernel);
        crate::atomic_file::write_atomic(&dst, &bytes)
            .context(super::WriteFailed)
            .with_context(|| format!("updating the baseline of kernel {}", k.kernel))?;
        let release = k.release.as_deref().unwrap_or("release unknown");
        println!(
            "{}: {} ({release}, {} cases)",
            k.kernel,
            dst.display(),
            k.cases.len()
        );
        copied += 1;
    }
    Ok(copied)
}
