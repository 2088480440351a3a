//! `sockmatrix explore`: generated programs on every kernel, differences shrunk into
//! case files under `--out`; progress on stderr, the report on stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{exit, AccelArg};
use crate::explore::{self, End, Guests, Options, State};
use crate::runner::{self, RunOptions};

#[derive(clap::Args)]
pub struct ExploreArgs {
    /// Kernels to compare, as for `run` (default: the catalogue's default set); at
    /// least two.
    #[arg(long, short)]
    pub kernel: Vec<String>,
    /// Wall time to spend: `90s`, `10m`, `1h`. A batch under way at the end finishes.
    #[arg(long, default_value = "10m", value_parser = parse_budget)]
    pub budget: Duration,
    /// Seed of the generated programs: the same seed generates the same programs.
    /// Default: the seed of the run kept in --out, else one from the clock (printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where findings (one case file per signature), report.md and the state go; a
    /// later run with the same --out continues this one.
    #[arg(long, default_value = "explore")]
    pub out: PathBuf,
    /// Programs per batch, each batch one boot per kernel.
    #[arg(long, default_value_t = 48)]
    pub batch: usize,
    /// Stop generating after this many programs in all (confirmations and shrinking
    /// of what they found still run).
    #[arg(long)]
    pub max_programs: Option<u64>,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// How many guests may run at once (default: from the cores and memory).
    #[arg(long)]
    pub max_guests: Option<usize>,
    /// Boot every guest from scratch instead of restoring a saved one.
    #[arg(long)]
    pub cold: bool,
    /// Print each boot's progress too.
    #[arg(long, short)]
    pub verbose: bool,
}

/// `90s`, `10m`, `1h`, `1.5m`; a bare number is seconds.
pub fn parse_budget(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 10m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{text}`: the unit is s, m or h")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("`{text}`: the budget must be more than 0"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn explore(args: &ExploreArgs) -> ExitCode {
    let kernels = match super::run::choose_kernels(&args.kernel) {
        Ok(kernels) => kernels,
        Err(code) => return code,
    };
    let catalogue = runner::load_catalogue().ok();
    let labels: Vec<String> = kernels
        .iter()
        .map(|k| {
            runner::choose_kernel(k, catalogue.as_ref()).map_or_else(|_| k.clone(), |c| c.label())
        })
        .collect();
    if labels.len() < 2 {
        eprintln!("error: explore compares kernels: give at least two (--kernel A --kernel B)");
        return ExitCode::from(exit::BAD_INPUT);
    }
    if args.batch == 0 || args.max_guests == Some(0) {
        eprintln!("error: --batch and --max-guests must be at least 1");
        return ExitCode::from(exit::BAD_INPUT);
    }
    let mut state = match State::load(&args.out) {
        Ok(Some(state)) => {
            let kept: Vec<&String> = state.kernels.iter().map(|(k, _)| k).collect();
            if kept != labels.iter().collect::<Vec<_>>() {
                eprintln!(
                    "error: {} holds a run on {}; explore the same kernels to continue it, or use another --out",
                    args.out.display(),
                    kept.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                );
                return ExitCode::from(exit::BAD_INPUT);
            }
            if args.seed.is_some_and(|s| s != state.seed) {
                eprintln!(
                    "error: {} holds a run with seed {}; give that seed (or none) to continue it, or use another --out",
                    args.out.display(),
                    state.seed
                );
                return ExitCode::from(exit::BAD_INPUT);
            }
            eprintln!(
                "continuing the run in {}: seed {}, {} programs tried, {} signature(s)",
                args.out.display(),
                state.seed,
                state.tally.programs,
                state.findings.len()
            );
            state
        }
        Ok(None) => {
            let seed = args.seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            });
            State::new(seed, &labels)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    let scratch = match runner::scratch_dir("explore") {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::COULD_NOT_RUN);
        }
    };
    crate::interrupt::install();
    let opts = Options {
        seed: state.seed,
        budget: args.budget,
        out: args.out.clone(),
        batch: args.batch,
        max_programs: args.max_programs,
    };
    let mut guests = Guests {
        kernels: kernels.clone(),
        labels: labels.clone(),
        run: RunOptions {
            accel: args.accel.into(),
            max_guests: args
                .max_guests
                .unwrap_or_else(|| runner::default_guests(512)),
            results_dir: scratch.path().to_path_buf(),
            history_dir: None,
            show_downloads: true,
            cold: args.cold,
            // Many boots under load: a slow one is waited for rather than retried.
            ready_timeout: Duration::from_secs(60),
            ..RunOptions::default()
        },
        verbose: args.verbose,
    };
    eprintln!(
        "explore: seed {} on {} for {:?}, {} programs a batch, findings in {}",
        state.seed,
        labels.join(", "),
        args.budget,
        args.batch,
        args.out.display()
    );
    let end = explore::explore(&opts, &mut state, &mut guests, &|line| eprintln!("{line}"));
    // What the last batch left is on disk already; save again in case none finished.
    let saved = state.save(&args.out);
    let report = std::fs::read_to_string(args.out.join(explore::REPORT_FILE)).unwrap_or_default();
    print!("{report}");
    if let Err(e) = saved {
        eprintln!("error: could not save the findings: {e:#}");
        return ExitCode::from(exit::COULD_NOT_RUN);
    }
    match end {
        Ok(End::Done) => ExitCode::SUCCESS,
        Ok(End::Interrupted) => {
            let signal = crate::interrupt::requested().expect("interrupted");
            eprintln!(
                "\ninterrupted by {signal}: guests stopped; findings kept in {}; run again with --out {} to continue",
                args.out.display(),
                args.out.display()
            );
            ExitCode::from(signal.exit_code())
        }
        Ok(End::CouldNotRun(why)) => {
            eprintln!("error: kernels could not run: {why}");
            ExitCode::from(exit::COULD_NOT_RUN)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::COULD_NOT_RUN)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_read_as_people_write_them() {
        assert_eq!(parse_budget("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_budget("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_budget("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_budget("1.5m"), Ok(Duration::from_secs(90)));
        for bad in ["", "m", "0s", "-1m", "10x", "ten"] {
            assert!(parse_budget(bad).is_err(), "{bad}");
        }
    }
}
