//! `sockmatrix fixes`: per kernel, whether each fix a case detects is present; with
//! `--series`, the first release of a series that has each fix.

use std::path::PathBuf;
use std::process::ExitCode;

use super::exit;
use crate::resultset::results;

#[derive(clap::Args)]
pub struct FixesArgs {
    /// A result-set folder, a result file, or a kernel id (default: results/latest).
    #[arg(default_value = results::DEFAULT_DIR)]
    pub results: String,
    /// The case library (where `detects:` is read).
    #[arg(long, default_value = "cases")]
    pub cases: PathBuf,
    /// For each fix, the first release of this series (`6.1`, `6.12`, `mainline`)
    /// that has it, read from the result set's `<release>/result.json` files.
    #[arg(long)]
    pub series: Option<String>,
    /// With --series: where kept results do not settle it, bisect the releases (boots).
    #[arg(long, requires = "series")]
    pub bisect: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: super::AccelArg,
}

pub fn fixes(args: &FixesArgs) -> ExitCode {
    let cases = match super::load_cases(std::slice::from_ref(&args.cases), None) {
        Ok(cases) => cases,
        Err(code) => return code,
    };
    if let Some(series) = &args.series {
        return by_series(args, series, &cases);
    }
    match super::diff::resolve(&args.results) {
        Ok(side) => {
            print!(
                "{}",
                crate::resultset::fixes::table(&cases, &side.into_set())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::BAD_INPUT)
        }
    }
}

/// The first release with each fix, from kept results (and bisections with --bisect).
fn by_series(args: &FixesArgs, series: &str, cases: &[crate::case::Case]) -> ExitCode {
    use crate::bisect_releases::{search, Outcome, Probe};
    let catalogue = match crate::runner::load_catalogue() {
        Ok((catalogue, _)) => catalogue,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::COULD_NOT_RUN);
        }
    };
    let (_, releases) = match super::series_releases(&catalogue, series, false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let dir = std::path::Path::new(&args.results);
    let kept: Vec<Option<results::KernelResult>> = releases
        .iter()
        .map(|r| results::load(&results::result_path(dir, &r.label)).ok())
        .collect();
    let have = kept.iter().filter(|k| k.is_some()).count();
    println!(
        "series {series}: {} releases, results for {have} in {}",
        releases.len(),
        dir.display()
    );
    // Bisection boots write into a scratch folder (removed at the end), never into
    // the result set being read.
    let scratch = match crate::runner::scratch_dir("fixes") {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::COULD_NOT_RUN);
        }
    };
    let opts =
        crate::runner::RunOptions::bisection(args.accel.into(), scratch.path().to_path_buf(), true);
    let mut could_not = false;
    for case in cases {
        let Some(fix) = &case.detects else { continue };
        let state = |i: usize| -> Option<&'static str> {
            let k = kept[i].as_ref()?;
            let s =
                crate::resultset::diff::fix_state(fix, k.cases.iter().find(|c| c.case == case.id));
            matches!(s, "present" | "absent").then_some(s)
        };
        let known = (0..releases.len()).filter(|&i| state(i).is_some()).count();
        let mut booted = 0;
        let outcome = if known == releases.len() || !args.bisect {
            // Only the kept results: skip what is unknown.
            search(releases.len(), |i| match state(i) {
                Some(s) => Probe::Behaved(s.into()),
                None => Probe::CannotJudge("no kept result".into()),
            })
        } else {
            search(releases.len(), |i| match state(i) {
                Some(s) => Probe::Behaved(s.into()),
                None => {
                    booted += 1;
                    match super::bisect_releases::run_release(&releases[i], case, &opts) {
                        Ok(k) => match crate::resultset::diff::fix_state(fix, k.cases.first()) {
                            s @ ("present" | "absent") => Probe::Behaved(s.into()),
                            other => Probe::CannotJudge(other.into()),
                        },
                        Err(why) => Probe::CannotJudge(why),
                    }
                }
            })
        };
        let probes = outcome.probes.clone();
        let first_state = |i: usize| {
            probes.iter().find_map(|(j, p)| match p {
                Probe::Behaved(s) if *j == i => Some(s.clone()),
                _ => None,
            })
        };
        let answer = match outcome.outcome {
            Outcome::Found { old, new } => {
                let gap = if new - old > 1 {
                    " (releases between not judged)"
                } else {
                    ""
                };
                if first_state(new).as_deref() == Some("absent") {
                    format!(
                        "lost in {} (after {}){gap}",
                        releases[new].label, releases[old].label
                    )
                } else {
                    format!(
                        "first in {} (Debian {}; absent in {}){gap}",
                        releases[new].label, releases[new].pin.version, releases[old].label
                    )
                }
            }
            Outcome::NoChange { first, last } => {
                let s = first_state(first).unwrap_or_default();
                format!(
                    "{s} from {} to {}",
                    releases[first].label, releases[last].label
                )
            }
            Outcome::CouldNotRun => {
                could_not = true;
                "unknown: fewer than two releases judged (run the series, or --bisect)".to_string()
            }
        };
        let boots = if booted > 0 {
            format!("  [{booted} boot(s)]")
        } else {
            String::new()
        };
        println!(
            "{} ({})  {}: {answer}{boots}",
            fix.commit, fix.version, case.id
        );
    }
    if could_not {
        ExitCode::from(exit::COULD_NOT_RUN)
    } else {
        ExitCode::SUCCESS
    }
}
