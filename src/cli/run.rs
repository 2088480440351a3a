//! `sockmatrix run`: the cases on each selected kernel, progress on stderr, then the
//! matrix, the failures explained, and the closing tally.

use std::process::ExitCode;
use std::time::Duration;

use super::{exit, FormatArg, RunArgs};
use crate::case::Case;
use crate::judge::Explain;
use crate::output::{self, Tally};
use crate::resultset::results::KernelResult;
use crate::resultset::shard::Shard;
use crate::runner::{self, Progress, RunOptions, SaveError};

pub fn run(args: &RunArgs) -> ExitCode {
    let mut cases = match super::load_cases(&args.paths, args.filter.as_deref()) {
        Ok(cases) => cases,
        Err(code) => return code,
    };
    if args.verbose {
        // Every index of a repeated step, not only the aggregate (results grow).
        for case in &mut cases {
            crate::case::repeat::record_each(&mut case.plan.steps);
        }
    }
    if let Err(e) = runner::check_memory(args.memory) {
        eprintln!("error: {e}");
        return ExitCode::from(exit::BAD_INPUT);
    }
    let max_guests = args
        .max_guests
        .unwrap_or_else(|| runner::default_guests(args.memory));
    if max_guests == 0 {
        eprintln!("error: --max-guests must be at least 1");
        return ExitCode::from(exit::BAD_INPUT);
    }
    let kernels: Vec<String> = if args.host {
        if let Err(why) = crate::host::preflight() {
            eprintln!("error: {why}");
            return ExitCode::from(exit::COULD_NOT_RUN);
        }
        vec![runner::HOST.to_string()]
    } else {
        match choose_kernels(&args.kernel) {
            Ok(kernels) => kernels,
            Err(code) => return code,
        }
    };
    crate::interrupt::install();
    let opts = RunOptions {
        accel: args.accel.into(),
        memory_mb: args.memory,
        max_guests,
        results_dir: args.results.clone(),
        history_dir: Some(crate::resultset::history::dir_for(&args.results)),
        cold: args.cold,
        machine: args.machine,
        ..RunOptions::default()
    };
    let results = match args.shard {
        None => {
            eprintln!(
                "{} case(s) on {}: {}",
                cases.len(),
                plural(kernels.len(), "kernel"),
                kernels.join(", ")
            );
            runner::run_kernels(&kernels, &cases, &opts, &report_progress)
        }
        Some(shard) => {
            let work = shard_work(&kernels, &cases, shard);
            let pairs: usize = work.iter().map(|(_, c)| c.len()).sum();
            let booted: Vec<&str> = work.iter().map(|(k, _)| k.as_str()).collect();
            eprintln!(
                "shard {shard}: {pairs} case x kernel pair(s) on {}: {}",
                plural(work.len(), "kernel"),
                booted.join(", ")
            );
            if work.is_empty() {
                return ExitCode::SUCCESS;
            }
            let work: Vec<(String, &[Case])> = work
                .iter()
                .map(|(k, c)| (k.clone(), c.as_slice()))
                .collect();
            runner::run_each(&work, &opts, &report_progress)
        }
    };
    if let Some(signal) = crate::interrupt::requested() {
        return interrupted(&results, signal);
    }
    print_results(&results, &cases, args);
    exit_code(&results)
}

/// The kernels to run: the catalogue's default set, or the `--kernel` values expanded
/// (releases, series) and each checked (a catalogue id, a pinned release or a bzImage
/// file) before anything boots. Two values naming the same kernel run it once.
pub(super) fn choose_kernels(args: &[String]) -> Result<Vec<String>, ExitCode> {
    if args.is_empty() {
        return match runner::load_catalogue() {
            Ok((catalogue, _)) => Ok(catalogue.default_ids()),
            Err(e) => {
                eprintln!("error: {e:#}");
                Err(ExitCode::from(exit::BAD_INPUT))
            }
        };
    }
    let ids = runner::resolve_kernels(args, true).map_err(|e| super::resolve_failed(&e))?;
    let catalogue = runner::load_catalogue().ok();
    let mut chosen: Vec<runner::KernelChoice> = Vec::new();
    let mut bad = false;
    for id in &ids {
        match runner::choose_kernel(id, catalogue.as_ref()) {
            Ok(choice) if chosen.iter().any(|c| c.label() == choice.label()) => {}
            Ok(choice) => chosen.push(choice),
            Err(e) => {
                eprintln!("error: {e:#}");
                bad = true;
            }
        }
    }
    if bad {
        return Err(ExitCode::from(exit::BAD_INPUT));
    }
    Ok(chosen.iter().map(|c| c.arg()).collect())
}

/// After SIGINT/SIGTERM: which kernels were stopped (their earlier results kept),
/// which finished and were saved; exit 128 + the signal.
fn interrupted(results: &[KernelResult], signal: crate::interrupt::Interrupt) -> ExitCode {
    let (stopped, finished): (Vec<&KernelResult>, Vec<&KernelResult>) =
        results.iter().partition(|k| {
            k.could_not_run
                .as_deref()
                .is_some_and(|w| w.starts_with("interrupted"))
        });
    let names = |ks: &[&KernelResult]| {
        ks.iter()
            .map(|k| k.kernel.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!("\ninterrupted by {signal}: guests stopped, temporary files removed");
    if !stopped.is_empty() {
        eprintln!(
            "  not finished (earlier results, if any, left as they were): {}",
            names(&stopped)
        );
    }
    if !finished.is_empty() {
        eprintln!("  finished before the signal: {}", names(&finished));
    }
    ExitCode::from(signal.exit_code())
}

/// This shard's cases per kernel; kernels without any are left out (not booted).
fn shard_work(kernels: &[String], cases: &[Case], shard: Shard) -> Vec<(String, Vec<Case>)> {
    let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    crate::resultset::shard::split(kernels, &ids, shard)
        .into_iter()
        .map(|(kernel, picked)| {
            (
                kernel,
                picked.into_iter().map(|i| cases[i].clone()).collect(),
            )
        })
        .collect()
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The guest's life as stderr lines (shared with `bisect-run`); false for the
/// events it does not print.
pub(super) fn print_boot_progress(event: &Progress) -> bool {
    match event {
        Progress::Booting {
            kernel,
            attempt,
            accel,
        } => eprintln!("[{kernel}] booting (attempt {attempt}, {accel})"),
        Progress::Retrying { kernel, reason } => eprintln!("[{kernel}] {reason}; retrying"),
        Progress::AgentUp { kernel, release } => eprintln!("[{kernel}] agent up on {release}"),
        Progress::SavingSnapshot { kernel, modules } if modules.is_empty() => {
            eprintln!("[{kernel}] saving a snapshot to restore from")
        }
        Progress::SavingSnapshot { kernel, modules } => eprintln!(
            "[{kernel}] saving a snapshot to restore from (with modules {})",
            modules.join(", ")
        ),
        Progress::ConsoleProblem { kernel, line } => eprintln!("[{kernel}] console: {line}"),
        _ => return false,
    }
    true
}

fn report_progress(event: Progress) {
    if print_boot_progress(&event) {
        return;
    }
    match event {
        Progress::Provisioned { kernel, vmlinuz } => {
            eprintln!("[{kernel}] kernel {}", vmlinuz.display())
        }
        Progress::KernelDone {
            kernel,
            saved,
            result,
        } => {
            let tally = Tally::of(result.cases.iter().map(|c| &c.verdict));
            let took = result
                .boot
                .as_ref()
                .map(|b| {
                    format!(
                        " in {:.1} s",
                        Duration::from_millis(b.total_ms).as_secs_f64()
                    )
                })
                .unwrap_or_default();
            eprintln!("[{kernel}] done{took}: {tally}");
            if let Err(SaveError::Failed(why)) = &saved {
                eprintln!("[{kernel}] error: {why}");
            } else if let Some(why) = &result.could_not_run {
                eprintln!(
                    "[{kernel}] could not run: {}",
                    why.lines().next().unwrap_or_default()
                );
            }
            match saved {
                Ok(path) => eprintln!("[{kernel}] results in {}", path.display()),
                Err(SaveError::Failed(_)) => {}
                Err(SaveError::NotSaved) => eprintln!("[{kernel}] results not saved"),
            }
        }
        _ => {}
    }
}

fn print_results(results: &[KernelResult], cases: &[Case], args: &RunArgs) {
    if args.format == FormatArg::Ktap {
        let report = crate::report::Report::new(results.to_vec(), cases).from_dir(&args.results);
        print!("{}", crate::report::ktap::render(&report));
        return;
    }
    if args.format == FormatArg::Github {
        print!("{}", crate::report::github::annotations(results));
    }
    if args.json || args.format == FormatArg::Json {
        for kernel in results {
            for case in &kernel.cases {
                println!("{}", output::json_line(kernel, case));
            }
        }
        return;
    }
    for kernel in results {
        let release = kernel.release.as_deref().unwrap_or("release unknown");
        println!("\n== {} ({release})", kernel.kernel);
        // As vmtest and virtme-ng do: the exact QEMU command, to repeat a boot by hand.
        let command = kernel.boot.as_ref().and_then(|b| b.qemu_command.as_deref());
        if let (true, Some(command)) = (args.verbose, command) {
            println!("   qemu: {command}");
        }
        for case in &kernel.cases {
            // One kernel: show what it did. Many: the matrix says it, failures get detail.
            let detail = args.verbose || results.len() == 1 || !case.verdict.is_ok();
            print!("{}", output::human_case(case, detail));
        }
    }
    if results.len() > 1 {
        println!("\n{}", output::matrix(results));
    }
    for kernel in results {
        for case in kernel.cases.iter().filter(|c| !c.verdict.is_ok()) {
            println!(
                "\n--- {} on {}\n{}",
                case.case,
                kernel.kernel,
                Explain {
                    file: &case.file,
                    verdict: &case.verdict
                }
            );
        }
    }
    let tally = Tally::of(
        results
            .iter()
            .flat_map(|k| k.cases.iter().map(|c| &c.verdict)),
    );
    println!("\n{tally}");
}

fn exit_code(results: &[KernelResult]) -> ExitCode {
    let tally = Tally::of(
        results
            .iter()
            .flat_map(|k| k.cases.iter().map(|c| &c.verdict)),
    );
    if tally.failed > 0 {
        ExitCode::from(exit::FAILED)
    } else if tally.errors > 0 {
        ExitCode::from(exit::COULD_NOT_RUN)
    } else {
        ExitCode::SUCCESS
    }
}
