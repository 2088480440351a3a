//! The command line: argument types and dispatch. Each command lives in its own file.

mod baseline;
mod bisect;
mod bisect_releases;
mod diff;
mod doctor;
mod explore;
mod fixes;
mod history;
mod kernels;
mod kernels_build;
mod merge;
mod report;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::case::Case;
use crate::select;

/// How sockmatrix exits: scripts and CI tell these apart.
pub mod exit {
    pub const FAILED: u8 = 1;
    /// Bad input: a case file, a command-line value, a kernel file.
    pub const BAD_INPUT: u8 = 2;
    /// Something could not run (no root, a guest that died): not a verdict on a kernel.
    pub const COULD_NOT_RUN: u8 = 3;
    /// `bisect-run`: this kernel cannot be judged; `git bisect run` skips the commit.
    pub const BISECT_SKIP: u8 = 125;
    /// `bisect-run`: the case is wrong; `git bisect run` stops (any code above 127).
    pub const BISECT_ABORT: u8 = 128;
}

#[derive(Parser)]
#[command(
    name = "sockmatrix",
    version,
    about = "How does this Linux kernel behave when several sockets share a port?"
)]
struct Cli {
    /// Kernel catalogue folder (kernels.yaml, kernels.lock) instead of the built-in
    /// one; also $SOCKMATRIX_CATALOGUE. Default: ./vm if it holds one, else built-in.
    #[arg(long, global = true, value_name = "DIR")]
    catalogue: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AccelArg {
    /// KVM if a trial boot works, else TCG.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Human,
    Json,
    Ktap,
    Github,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Case files or folders (default: cases).
    pub paths: Vec<PathBuf>,
    /// Only cases whose id contains this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Run on the kernel this machine runs, in-process (needs root).
    #[arg(long, conflicts_with = "kernel")]
    pub host: bool,
    /// Kernel ids from vm/kernels.yaml, or paths to bzImages; repeatable.
    /// Default: the catalogue's default set.
    #[arg(long, short)]
    pub kernel: Vec<String>,
    /// Print one JSON object per case and kernel instead of the readable summary
    /// (the same as --format json).
    #[arg(long)]
    pub json: bool,
    /// What to print: the readable summary, JSON lines, KTAP version 1, or the
    /// summary with GitHub Actions `::error` annotations for failed expectations.
    #[arg(long, value_enum, default_value = "human")]
    pub format: FormatArg,
    /// Print every case's observations, not only the failures; repeated steps also
    /// record each index's own observation (`bind.l[17]`), not only the aggregate.
    #[arg(long, short)]
    pub verbose: bool,
    /// Where results are written, one folder per kernel.
    #[arg(long, default_value = crate::resultset::results::DEFAULT_DIR)]
    pub results: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// How many guests may run at once (default: from the cores and memory, see
    /// `sockmatrix doctor`).
    #[arg(long)]
    pub max_guests: Option<usize>,
    /// Boot every guest from scratch instead of restoring a saved one.
    #[arg(long)]
    pub cold: bool,
    /// QEMU machine for every guest: microvm or pc (default: what each kernel's
    /// catalogue entry or build declares, else microvm, falling back to pc when
    /// microvm cannot boot the kernel).
    #[arg(long)]
    pub machine: Option<crate::qemu::Machine>,
    /// Guest memory in MiB (128 to 16384).
    #[arg(long, default_value_t = 512)]
    pub memory: u32,
    /// Run only shard i of n (`2/3`) of the sorted (kernel, case) pairs; join the
    /// shards' result sets with `sockmatrix merge`.
    #[arg(long)]
    pub shard: Option<crate::resultset::shard::Shard>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate case files: every error of every file, with line and column.
    Check {
        /// Case files or folders (default: cases).
        paths: Vec<PathBuf>,
    },
    /// Run cases (in QEMU guests, or on this kernel with --host) and print what the
    /// kernels did.
    Run(RunArgs),
    /// Print timing figures: floor boot, boot-to-agent, per-case, whole matrix, hangs.
    Bench {
        /// Kernels to measure (default: the catalogue's default set).
        #[arg(long, short)]
        kernel: Vec<String>,
        /// Extra floor boots to count hangs over (0 to skip).
        #[arg(long, default_value_t = 50)]
        hang_boots: u32,
        #[arg(long, value_enum, default_value = "auto")]
        accel: AccelArg,
    },
    /// Generated socket programs on every kernel: differences confirmed, shrunk and
    /// written as case files under --out, with a short report.
    Explore(explore::ExploreArgs),
    /// Render a result set as Markdown, self-contained HTML and/or JUnit XML.
    Report(report::ReportArgs),
    /// What changed between two result sets; with --baseline, exit 1 on a regression.
    Diff(diff::DiffArgs),
    /// Maintain the committed baseline (results/baseline).
    Baseline {
        #[command(subcommand)]
        action: baseline::Action,
    },
    /// Per kernel, whether each fix a case detects (`detects:`) is present.
    Fixes(fixes::FixesArgs),
    /// Join shards' result sets into one.
    Merge(merge::MergeArgs),
    /// One case's observations across every kept run, marking where they changed.
    History(history::HistoryArgs),
    /// One case on one kernel image, for `git bisect run`: 0 pass, 1 fail, 125 skip.
    BisectRun(bisect::BisectArgs),
    /// What this host gives the guests: the accelerator `auto` picks and why, QEMU, cache.
    Doctor(doctor::DoctorArgs),
    /// Which released kernel of a series changed a case, and the changelog entries
    /// that explain it: 0 found, 1 no change in range, 2 bad input, 3 could not run.
    BisectReleases(bisect_releases::BisectReleasesArgs),
    /// List, fetch or pin the kernels of vm/kernels.yaml.
    Kernels {
        #[command(subcommand)]
        action: kernels::Action,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = cli.catalogue {
        if let Err(e) = crate::runner::set_catalogue_dir(dir) {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    }
    match cli.command {
        Command::Check { paths } => check(&paths),
        Command::Run(args) => run::run(&args),
        Command::Explore(args) => explore::explore(&args),
        Command::Kernels { action } => kernels::kernels(action),
        Command::Doctor(args) => doctor::doctor(&args),
        Command::Diff(args) => diff::diff(&args),
        Command::Baseline { action } => baseline::baseline(action),
        Command::Fixes(args) => fixes::fixes(&args),
        Command::Merge(args) => merge::merge(&args),
        Command::History(args) => history::history(&args),
        Command::BisectRun(args) => bisect::bisect_run(&args),
        Command::BisectReleases(args) => bisect_releases::bisect_releases(&args),
        Command::Report(args) => report::report(&args),
        Command::Bench {
            kernel,
            hang_boots,
            accel,
        } => bench(kernel, hang_boots, accel),
    }
}

/// Prints why `--kernel` values could not be resolved; bad input or could not run.
pub fn resolve_failed(e: &crate::runner::ResolveError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        crate::runner::ResolveError::BadInput(_) => ExitCode::from(exit::BAD_INPUT),
        crate::runner::ResolveError::Unreachable(_) => ExitCode::from(exit::COULD_NOT_RUN),
    }
}

/// Marks an error as a failure to write output (disk full, read-only folder): exit 3,
/// where an error reading the input is exit 2.
#[derive(Debug)]
pub struct WriteFailed;

impl std::fmt::Display for WriteFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("could not write the output")
    }
}

/// Prints `e` and says how to exit: 3 when writing failed, else 2.
pub fn input_or_write_failed(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    if e.downcast_ref::<WriteFailed>().is_some() {
        ExitCode::from(exit::COULD_NOT_RUN)
    } else {
        ExitCode::from(exit::BAD_INPUT)
    }
}

/// Loads the selected cases, or prints why not and says how to exit.
pub fn load_cases(paths: &[PathBuf], filter: Option<&str>) -> Result<Vec<Case>, ExitCode> {
    select::load(paths, filter).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(exit::BAD_INPUT)
    })
}

/// The mirror's index (as last read, or `refresh`ed) and the releases of `series`
/// in it, or the exit code after saying why not: could not run when the index
/// cannot be had, bad input for a series it does not hold.
fn series_releases(
    catalogue: &crate::kernel::Catalogue,
    series: &str,
    refresh: bool,
) -> Result<
    (
        crate::kernel::ReleaseIndex,
        Vec<crate::kernel::releases::Release>,
    ),
    ExitCode,
> {
    let index = crate::runner::load_releases(catalogue, refresh, true).map_err(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(exit::COULD_NOT_RUN)
    })?;
    let releases = match index.series(series) {
        Ok(releases) => releases.into_iter().cloned().collect(),
        Err(e) => {
            eprintln!("error: {e:#}");
            return Err(ExitCode::from(exit::BAD_INPUT));
        }
    };
    Ok((index, releases))
}

fn check(paths: &[PathBuf]) -> ExitCode {
    match load_cases(paths, None) {
        Ok(cases) => {
            println!("ok: {} case(s) valid", cases.len());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn bench(kernels: Vec<String>, hang_boots: u32, accel: AccelArg) -> ExitCode {
    let cases = match load_cases(&[], None) {
        Ok(cases) => cases,
        Err(code) => return code,
    };
    let kernels = match run::choose_kernels(&kernels) {
        Ok(kernels) => kernels,
        Err(code) => return code,
    };
    let opts = crate::runner::RunOptions {
        accel: accel.into(),
        // Bench results are figures, not a result set: keep them out of results/latest.
        results_dir: std::env::temp_dir().join("sockmatrix-bench"),
        history_dir: None,
        show_downloads: false,
        ..Default::default()
    };
    let one: Vec<Case> = cases
        .iter()
        .filter(|c| c.id == "reuseport/migrate_on_close")
        .cloned()
        .collect();
    eprintln!(
        "bench: today's way against the new way ({} guests at a time), 1 case and {} cases on {}",
        opts.max_guests,
        cases.len(),
        kernels.join(", ")
    );
    print!(
        "{}",
        crate::bench_compare::compare(&kernels, &one, &cases, &opts)
    );
    println!();
    // Exploration speed: generated programs per second on the same kernels.
    const EXPLORE_PROGRAMS: u64 = 48;
    eprintln!(
        "bench: explore, seed 1, {EXPLORE_PROGRAMS} programs on {}",
        kernels.join(", ")
    );
    match crate::explore::bench(&kernels, &opts, EXPLORE_PROGRAMS) {
        Ok(t) => println!(
            "explore: {} programs ({} runs with confirmations and shrinking) on {} kernels in {:.1} s: {:.2} programs/s, {:.2} runs/s\n",
            t.programs,
            t.runs,
            kernels.len(),
            t.elapsed_ms as f64 / 1000.0,
            t.per_second(t.programs),
            t.per_second(t.runs)
        ),
        Err(e) => println!("explore: could not run: {e:#}\n"),
    }
    eprintln!(
        "bench: {} cases on {}, then {hang_boots} floor boots",
        cases.len(),
        kernels.join(", ")
    );
    match crate::bench::run(&kernels, &cases, &opts, hang_boots) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::COULD_NOT_RUN)
        }
    }
}

impl From<AccelArg> for crate::qemu::Accel {
    fn from(a: AccelArg) -> Self {
        match a {
            AccelArg::Auto => crate::qemu::Accel::Auto,
            AccelArg::Kvm => crate::qemu::Accel::Kvm,
            AccelArg::Tcg => crate::qemu::Accel::Tcg,
        }
    }
}
