//! `sockmatrix bisect-releases`: which released kernel of a series changed a case's
//! behaviour, and the changelog entries that came with it, ranked against the case.
//! Exit 0 found, 1 no change in the range, 2 bad input, 3 could not run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::{exit, AccelArg};
use crate::bisect_releases::{self, rank, Outcome, Probe};
use crate::case::Case;
use crate::judge::Verdict;
use crate::kernel::{self, changelog, Release};
use crate::resultset::diff::{self, Volatile};
use crate::resultset::results::KernelResult;
use crate::runner::{self, Progress, RunOptions};

#[derive(clap::Args)]
pub struct BisectReleasesArgs {
    /// The case: an id under --cases, or a path to a case file.
    pub case: String,
    /// Search every release of this series (`6.1`, `6.12`, `mainline`).
    #[arg(long)]
    pub series: Option<String>,
    /// One end of the range: a release (`6.12.74-2`, `6.12.85`). With --bad; either
    /// order (the older is where the search starts).
    #[arg(long, requires = "bad")]
    pub good: Option<String>,
    /// The other end of the range.
    #[arg(long, requires = "good")]
    pub bad: Option<String>,
    /// Compare only the observations starting with this key (default: the `detects`
    /// check, else the verdict and every stable observation).
    #[arg(long)]
    pub obs: Option<String>,
    #[arg(long, default_value = "cases")]
    pub cases: PathBuf,
    /// How many candidate commits to print.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    pub memory: u32,
}

pub fn bisect_releases(args: &BisectReleasesArgs) -> ExitCode {
    let bad = |msg: String| {
        eprintln!("bisect-releases: {msg}");
        ExitCode::from(exit::BAD_INPUT)
    };
    let case = match super::bisect::find_case(&args.case, &args.cases) {
        Ok(case) => case,
        Err(e) => return bad(format!("{e:#}")),
    };
    let (catalogue, _) = match runner::load_catalogue() {
        Ok(pair) => pair,
        Err(e) => return bad(format!("{e:#}")),
    };
    let index = match runner::load_releases(&catalogue, false, !args.json) {
        Ok(index) => index,
        Err(e) => {
            eprintln!("bisect-releases: {e:#}");
            return ExitCode::from(exit::COULD_NOT_RUN);
        }
    };
    let releases = match range(&index, args) {
        Ok(r) => r,
        Err(e) => return bad(format!("{e:#}")),
    };
    if releases.len() < 2 {
        return bad(format!(
            "the range holds {} release(s); a bisection needs two",
            releases.len()
        ));
    }
    let volatile = Volatile::from_cases(std::slice::from_ref(&case));
    let budget = (releases.len() as f64).log2().ceil() as usize + 2;
    eprintln!(
        "bisect-releases: {} over {} releases ({} .. {}), at most {budget} boots without skips",
        case.id,
        releases.len(),
        releases[0].label,
        releases[releases.len() - 1].label
    );
    let scratch = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bisect-releases: no scratch folder: {e}");
            return ExitCode::from(exit::COULD_NOT_RUN);
        }
    };
    let opts = RunOptions {
        memory_mb: args.memory,
        ..RunOptions::bisection(args.accel.into(), scratch.path().to_path_buf(), !args.json)
    };
    let mut runs: BTreeMap<usize, KernelResult> = BTreeMap::new();
    let search = bisect_releases::search(releases.len(), |i| {
        let r = releases[i];
        let probe = match run_release(r, &case, &opts) {
            Ok(result) => {
                let p = judge(&case, &result, args.obs.as_deref());
                runs.insert(i, result);
                p
            }
            Err(why) => Probe::CannotJudge(why),
        };
        match &probe {
            Probe::Behaved(sig) => eprintln!("bisect-releases: {} -> {}", r.label, short(sig)),
            Probe::CannotJudge(why) => {
                eprintln!("bisect-releases: {} skipped: {why}", r.label)
            }
        }
        probe
    });
    let skipped: Vec<serde_json::Value> = search
        .skipped()
        .iter()
        .map(|(i, why)| json!({"release": releases[*i].label, "why": why}))
        .collect();
    let probed: Vec<&str> = search
        .probes
        .iter()
        .map(|(i, _)| releases[*i].label.as_str())
        .collect();
    match search.outcome {
        Outcome::CouldNotRun => {
            let why = if skipped.len() == search.probed() && !skipped.is_empty() {
                "no release could judge the case (skipped or could not boot on every one probed)"
            } else {
                "fewer than two releases could judge the case"
            };
            if args.json {
                println!(
                    "{}",
                    json!({"case": case.id, "result": "could_not_run", "why": why, "skipped": skipped, "probed": probed})
                );
            } else {
                println!("{}: {why}", case.id);
                for s in &skipped {
                    println!(
                        "  {}: {}",
                        s["release"].as_str().unwrap_or(""),
                        s["why"].as_str().unwrap_or("")
                    );
                }
            }
            ExitCode::from(exit::COULD_NOT_RUN)
        }
        Outcome::NoChange { first, last } => {
            let sig = runs
                .get(&first)
                .map(|r| judge(&case, r, args.obs.as_deref()));
            let what = match sig {
                Some(Probe::Behaved(s)) => short(&s),
                _ => String::new(),
            };
            if args.json {
                println!(
                    "{}",
                    json!({"case": case.id, "result": "no_change", "first": releases[first].label,
                        "last": releases[last].label, "behaviour": what, "skipped": skipped, "probed": probed})
                );
            } else {
                println!(
                    "{}: no change from {} to {} (both {what}); nothing to bisect",
                    case.id, releases[first].label, releases[last].label
                );
            }
            ExitCode::from(exit::FAILED)
        }
        Outcome::Found { old, new } => {
            let (ro, rn) = (&runs[&old], &runs[&new]);
            let direction = direction(&case, ro, rn);
            let kd = diff::diff_kernels(ro, rn, &volatile);
            let changes: Vec<String> = kd
                .cases
                .iter()
                .flat_map(|c| {
                    let verdict = c.verdict.map(|(a, b)| format!("verdict: {a} -> {b}"));
                    let fix = c.fix.map(|(a, b)| format!("fix: {a} -> {b}"));
                    verdict
                        .into_iter()
                        .chain(fix)
                        .chain(
                            // Volatile values are shown too (marked): here they may be the change.
                            c.changes.iter().map(|ch| {
                                let noisy = ch.volatile && !is_detect_obs(&case, &ch.key);
                                let mark = if noisy { "  (volatile)" } else { "" };
                                format!("{}{mark}", diff::show_change(ch))
                            }),
                        )
                        .collect::<Vec<_>>()
                })
                .collect();
            let between: Vec<&str> = (old + 1..new).map(|i| releases[i].label.as_str()).collect();
            let (candidates, source) = candidates(&case, &releases, old, new, !args.json);
            let total = candidates.len();
            let top: Vec<&rank::Candidate> = candidates.iter().take(args.top).collect();
            if args.json {
                println!(
                    "{}",
                    json!({
                        "case": case.id,
                        "result": "found",
                        "direction": direction,
                        "old": release_json(releases[old], ro),
                        "new": release_json(releases[new], rn),
                        "not_judged_between": between,
                        "changes": changes,
                        "changelog": source,
                        "candidates_total": total,
                        "candidates": top,
                        "skipped": skipped,
                        "probed": probed,
                        "boots": search.probed(),
                    })
                );
            } else {
                let line = |r: &Release| {
                    format!(
                        "{} (Debian {}, {}, ABI {})",
                        r.label, r.pin.version, r.pin.package, r.abi
                    )
                };
                println!("{}: a {direction} between adjacent releases", case.id);
                println!("  last old behaviour:  {}", line(releases[old]));
                println!("  first new behaviour: {}", line(releases[new]));
                if !between.is_empty() {
                    println!("  (could not judge in between: {})", between.join(", "));
                }
                println!("changed:");
                for c in &changes {
                    println!("  {c}");
                }
                match &source {
                    Some(src) => println!(
                        "candidate commits: {total} changelog entries after {} up to {} (from {src}), best first:",
                        releases[old].pin.version, releases[new].pin.version
                    ),
                    None => println!("candidate commits: no changelog found for {}", releases[new].label),
                }
                for (n, c) in top.iter().enumerate() {
                    let why = if c.matched.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", c.matched.join(", "))
                    };
                    println!(
                        "  {:>2}. {:>7.2}  {}  ({}){why}",
                        n + 1,
                        c.score,
                        c.text,
                        c.version
                    );
                }
                println!("{} boot(s): {}", search.probed(), probed.join(", "));
            }
            ExitCode::SUCCESS
        }
    }
}

/// The releases to search, in version order.
fn range<'a>(
    index: &'a kernel::ReleaseIndex,
    args: &BisectReleasesArgs,
) -> anyhow::Result<Vec<&'a Release>> {
    let ends = match (&args.good, &args.bad) {
        (Some(g), Some(b)) => Some((index.find(g)?, index.find(b)?)),
        _ => None,
    };
    let series = match (&args.series, ends) {
        (Some(s), _) => s.clone(),
        (None, Some((g, b))) if g.series() == b.series() => g.series(),
        (None, Some((g, b))) => {
            let main = index.series(kernel::releases::MAINLINE).unwrap_or_default();
            let both = [g, b]
                .iter()
                .all(|r| main.iter().any(|m| m.label == r.label));
            if !both {
                anyhow::bail!(
                    "{} and {} are not in one series; give --series (e.g. mainline)",
                    g.label,
                    b.label
                );
            }
            kernel::releases::MAINLINE.to_string()
        }
        (None, None) => anyhow::bail!("give --series S, or --good X --bad Y"),
    };
    let all = index.series(&series)?;
    let Some((g, b)) = ends else { return Ok(all) };
    let pos = |r: &Release| {
        all.iter()
            .position(|x| x.label == r.label)
            .ok_or_else(|| anyhow::anyhow!("release {} is not in series {series}", r.label))
    };
    let (i, j) = (pos(g)?, pos(b)?);
    if i == j {
        anyhow::bail!("--good and --bad are the same release ({})", g.label);
    }
    let (lo, hi) = (i.min(j), i.max(j));
    Ok(all[lo..=hi].to_vec())
}

/// Boots one release with the case; Err says why it could not judge.
pub(super) fn run_release(
    r: &Release,
    case: &Case,
    opts: &RunOptions,
) -> Result<KernelResult, String> {
    // Pins the release in the lock (a used release is pinned).
    runner::resolve_kernels(std::slice::from_ref(&r.label), opts.show_downloads)
        .map_err(|e| format!("{e}"))?;
    let cases = [case.clone()];
    let work = [(r.label.clone(), &cases[..])];
    let results = runner::run_each(&work, opts, &progress);
    let result = results
        .into_iter()
        .next()
        .ok_or("the runner returned nothing")?;
    if let Some(why) = &result.could_not_run {
        let first = why.lines().next().unwrap_or_default();
        let gone = if why.contains("no longer serves") {
            " (404: the mirror no longer serves it)"
        } else {
            ""
        };
        return Err(format!("could not run{gone}: {first}"));
    }
    Ok(result)
}

/// The case's behaviour on one release, as a signature.
fn judge(case: &Case, result: &KernelResult, obs: Option<&str>) -> Probe {
    let Some(run) = result.cases.first() else {
        return Probe::CannotJudge("the case did not run".into());
    };
    match &run.verdict {
        Verdict::Skip { reason } => return Probe::CannotJudge(format!("skipped: {reason}")),
        Verdict::Error { message } => {
            return Probe::CannotJudge(format!(
                "error: {}",
                message.lines().next().unwrap_or_default()
            ))
        }
        Verdict::Pass { .. } | Verdict::Fail { .. } => {}
    }
    if let Some(prefix) = obs {
        let picked: BTreeMap<&String, &serde_json::Value> = run
            .observations
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        return Probe::Behaved(serde_json::to_string(&picked).unwrap_or_default());
    }
    if let Some(fix) = &case.detects {
        return Probe::Behaved(format!("fix {}", diff::fix_state(fix, Some(run))));
    }
    let volatile = Volatile::from_cases(std::slice::from_ref(case));
    let stable: BTreeMap<&String, &serde_json::Value> = run
        .observations
        .iter()
        .filter(|(k, _)| !volatile.is_volatile(&case.id, k))
        .collect();
    Probe::Behaved(format!(
        "{} {}",
        run.verdict.label(),
        serde_json::to_string(&stable).unwrap_or_default()
    ))
}

fn short(sig: &str) -> String {
    if sig.len() > 80 {
        format!(
            "{}...",
            &sig[..sig.char_indices().nth(77).map_or(sig.len(), |(i, _)| i)]
        )
    } else {
        sig.to_string()
    }
}

fn is_detect_obs(case: &Case, key: &str) -> bool {
    case.detects.as_ref().is_some_and(|f| f.check.obs == key)
}

/// A fix (the detected fix appeared, or a failing case started passing), a
/// regression (the reverse), or a change.
fn direction(case: &Case, old: &KernelResult, new: &KernelResult) -> &'static str {
    let (a, b) = (old.cases.first(), new.cases.first());
    if let Some(fix) = &case.detects {
        match (diff::fix_state(fix, a), diff::fix_state(fix, b)) {
            ("absent", "present") => return "fix",
            ("present", "absent") => return "regression",
            _ => {}
        }
    }
    match (a.map(|c| c.verdict.is_ok()), b.map(|c| c.verdict.is_ok())) {
        (Some(false), Some(true)) => "fix",
        (Some(true), Some(false)) => "regression",
        _ => "change",
    }
}

fn release_json(r: &Release, result: &KernelResult) -> serde_json::Value {
    json!({
        "release": r.label,
        "upstream": r.upstream,
        "debian_version": r.pin.version,
        "package": r.pin.package,
        "abi": r.abi,
        "uname": result.release,
        "verdict": result.cases.first().map(|c| c.verdict.label()),
    })
}

/// The changelog entries after `old` up to `new`, ranked; and the package the
/// changelog came from. The changelog is cumulative, so when `new`'s package
/// holds none (or one that does not list it yet), a newer release's is read.
fn candidates(
    case: &Case,
    releases: &[&Release],
    old: usize,
    new: usize,
    progress: bool,
) -> (Vec<rank::Candidate>, Option<String>) {
    let cache = kernel::cache_dir();
    for r in &releases[new..] {
        let (path, source) = match kernel::changelog(r, &cache, progress) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("bisect-releases: no changelog from {}: {e:#}", r.label);
                continue;
            }
        };
        let entries = match changelog::read_gz(&path) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("bisect-releases: {e:#}");
                continue;
            }
        };
        if !changelog::covers(&entries, &releases[new].pin.version) {
            // A backport built from a version the changelog skips (7.0.4 after 7.0.3):
            // the range is still right when a later version is listed.
            let new_version = kernel::releases::split_version(&releases[new].pin.version).1;
            let later = entries.iter().any(|e| {
                let v = kernel::releases::split_version(&e.version).1;
                kernel::compare_debian_versions(&v, &new_version).is_gt()
            });
            if !later {
                continue;
            }
        }
        let picked = changelog::between(
            &entries,
            &releases[old].pin.version,
            &releases[new].pin.version,
        );
        return (rank::rank(case, &picked), Some(source));
    }
    (Vec::new(), None)
}

fn progress(event: Progress) {
    super::run::print_boot_progress(&event);
}
