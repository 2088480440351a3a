//! `sockmatrix bisect-run`: one case on one kernel image, answered in `git bisect run`
//! exit codes: 0 pass (good), 1 fail (bad), 125 could not boot or run (skip this
//! commit), 128 the case itself is wrong (abort the bisection).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{exit, AccelArg};
use crate::case::{self, Case};
use crate::judge::{Explain, Verdict};
use crate::runner::{self, Progress, RunOptions};

#[derive(clap::Args)]
pub struct BisectArgs {
    /// The kernel to boot: a bzImage (arch/x86/boot/bzImage of a kernel tree).
    #[arg(long)]
    pub kernel_image: PathBuf,
    /// The case: an id under --cases, or a path to a case file.
    #[arg(long)]
    pub case: String,
    #[arg(long, default_value = "cases")]
    pub cases: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// Restore a saved guest of this image if there is one (default: boot cold).
    #[arg(long)]
    pub restore: bool,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    pub memory: u32,
    /// QEMU machine: microvm or pc (default microvm, falling back to pc).
    #[arg(long)]
    pub machine: Option<crate::qemu::Machine>,
}

pub fn bisect_run(args: &BisectArgs) -> ExitCode {
    let case = match find_case(&args.case, &args.cases) {
        Ok(case) => case,
        Err(e) => {
            eprintln!("bisect-run: {e:#}");
            // Exit 2 would make git bisect call every commit bad; 128 stops it instead.
            return ExitCode::from(exit::BISECT_ABORT);
        }
    };
    if let Err(e) = runner::check_memory(args.memory) {
        eprintln!("bisect-run: {e}");
        return ExitCode::from(exit::BISECT_ABORT);
    }
    // A build that produced no image is a commit to skip, not a bad one.
    let image = match std::fs::canonicalize(&args.kernel_image) {
        Ok(path) => path,
        Err(e) => {
            return skip(&format!(
                "no kernel image at {}: {e}",
                args.kernel_image.display()
            ))
        }
    };
    crate::interrupt::install();
    let scratch = match runner::scratch_dir("bisect") {
        Ok(dir) => dir,
        Err(e) => return skip(&format!("no scratch folder: {e}")),
    };
    // A bisection step is not a run of the matrix: keep results/ as it is.
    let opts = RunOptions {
        memory_mb: args.memory,
        cold: !args.restore,
        machine: args.machine,
        ..RunOptions::bisection(args.accel.into(), scratch.path().to_path_buf(), false)
    };
    let cases = [case];
    let work = [(image.to_string_lossy().into_owned(), &cases[..])];
    let results = runner::run_each(&work, &opts, &progress);
    if let Some(signal) = crate::interrupt::requested() {
        eprintln!("bisect-run: interrupted by {signal}");
        return ExitCode::from(signal.exit_code());
    }
    let Some(kernel) = results.first() else {
        return skip("the runner returned nothing");
    };
    if let Some(why) = &kernel.could_not_run {
        return skip(why);
    }
    let release = kernel.release.as_deref().unwrap_or("release unknown");
    let Some(result) = kernel.cases.first() else {
        return skip("the case did not run");
    };
    match &result.verdict {
        Verdict::Pass { .. } => {
            println!("bisect-run: {} passes on {release} (good)", result.case);
            ExitCode::SUCCESS
        }
        Verdict::Fail { .. } => {
            println!(
                "{}",
                Explain {
                    file: &result.file,
                    verdict: &result.verdict
                }
            );
            println!("bisect-run: {} fails on {release} (bad)", result.case);
            ExitCode::from(exit::FAILED)
        }
        Verdict::Skip { reason } => {
            skip(&format!("{} skipped on {release}: {reason}", result.case))
        }
        Verdict::Error { message } => skip(&format!(
            "{} could not run on {release}: {message}",
            result.case
        )),
    }
}

fn skip(why: &str) -> ExitCode {
    eprintln!(
        "bisect-run: cannot judge this kernel ({}); exit 125 = skip",
        why.lines().next().unwrap_or_default()
    );
    ExitCode::from(exit::BISECT_SKIP)
}

/// A path to a case file, or an id under the case library.
pub(super) fn find_case(name: &str, library: &Path) -> Result<Case> {
    let path = Path::new(name);
    if path.is_file() {
        return case::load_file(path).map_err(|e| anyhow::anyhow!("{e}"));
    }
    let cases = crate::select::load(&[library.to_path_buf()], None)
        .with_context(|| format!("loading the cases in {}", library.display()))?;
    cases.into_iter().find(|c| c.id == name).with_context(|| {
        format!(
            "no case `{name}`: neither a case file nor a case id under {}",
            library.display()
        )
    })
}

fn progress(event: Progress) {
    super::run::print_boot_progress(&event);
}
