//! The `sockmatrix` command line: parses arguments and dispatches; the work lives in
//! the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use sockmatrix::judge::{Explain, Verdict};
use sockmatrix::select::{self, SelectError};
use sockmatrix::{host, output};

/// How sockmatrix exits: scripts and CI tell these apart.
mod exit {
    pub const FAILED: u8 = 1;
    /// Bad input: a case file, a command-line value, a kernel file.
    pub const BAD_INPUT: u8 = 2;
    /// Something could not run (no root, a guest that died): not a verdict on a kernel.
    pub const COULD_NOT_RUN: u8 = 3;
}

#[derive(Parser)]
#[command(name = "sockmatrix", version, about = "How does this Linux kernel behave when several sockets share a port?")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate case files: every error of every file, with line and column.
    Check {
        /// Case files or folders (default: cases).
        paths: Vec<PathBuf>,
    },
    /// Run cases and print what the kernel did.
    Run {
        /// Case files or folders (default: cases).
        paths: Vec<PathBuf>,
        /// Only cases whose id contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Run on the kernel this machine runs, in-process (needs root).
        #[arg(long)]
        host: bool,
        /// Print one JSON object per case instead of the readable summary.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { paths } => check(&paths),
        Command::Run { paths, filter, host, json } => {
            if !host {
                eprintln!("error: say where to run: --host (this kernel)");
                return ExitCode::from(exit::BAD_INPUT);
            }
            run_host(&paths, filter.as_deref(), json)
        }
    }
}

fn load_or_exit(paths: &[PathBuf], filter: Option<&str>) -> Result<Vec<sockmatrix::case::Case>, ExitCode> {
    select::load(paths, filter).map_err(|e| {
        eprintln!("{e}");
        match e {
            SelectError::Invalid(_) | SelectError::NothingSelected(_) | SelectError::Io(_) => ExitCode::from(exit::BAD_INPUT),
        }
    })
}

fn check(paths: &[PathBuf]) -> ExitCode {
    match load_or_exit(paths, None) {
        Ok(cases) => {
            println!("ok: {} case(s) valid", cases.len());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run_host(paths: &[PathBuf], filter: Option<&str>, json: bool) -> ExitCode {
    let cases = match load_or_exit(paths, filter) {
        Ok(cases) => cases,
        Err(code) => return code,
    };
    if let Err(why) = host::preflight() {
        eprintln!("error: {why}");
        return ExitCode::from(exit::COULD_NOT_RUN);
    }
    let release = host::release();
    if !json {
        println!("running {} case(s) on this kernel ({release})", cases.len());
    }
    let outcome = host::run(&cases, |case, run, verdict| {
        if json {
            println!("{}", output::json_line(host::HOST_KERNEL, &release, case, run, verdict));
        } else {
            print!("{}", output::human_case(case, run, verdict));
        }
    });
    let verdicts: Vec<&Verdict> = outcome.results.iter().map(|(_, v)| v).collect();
    let tally = output::Tally::of(verdicts.iter().copied());
    if !json {
        for ((_, verdict), case) in outcome.results.iter().zip(&cases) {
            if !verdict.is_ok() {
                println!("\n--- {} on {}\n{}", case.id, outcome.release, Explain { case, verdict });
            }
        }
        println!("\n{tally}");
    }
    if tally.failed > 0 {
        ExitCode::from(exit::FAILED)
    } else if tally.errors > 0 {
        ExitCode::from(exit::COULD_NOT_RUN)
    } else {
        ExitCode::SUCCESS
    }
}
