//! `sockmatrix diff`: what changed between two result sets, and the regression gate
//! against a committed baseline (`--baseline`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::exit;
use crate::case::{Case, Fix};
use crate::resultset::diff::{self, SetDiff, Volatile};
use crate::resultset::results::{self, KernelResult};

#[derive(clap::Args)]
pub struct DiffArgs {
    /// A: a result file, a kernel folder, a result-set folder (<kernel>/result.json), or a kernel id
    /// (its results/latest/<id>/result.json). With --baseline: the current results
    /// (default: results/latest).
    pub a: Option<String>,
    /// B: like A.
    pub b: Option<String>,
    /// Gate mode: compare the current results against this baseline; exit 1 when a
    /// verdict got worse, a stable observation changed, or a case vanished.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Also show volatile observations (bounded by min/max or same_as, or *.fairness).
    #[arg(long)]
    pub all: bool,
    /// The case library, to know which observations are volatile and which fixes
    /// cases detect (default: ./cases when present; comparing two results works
    /// without one, with every observation compared exactly).
    #[arg(long)]
    pub cases: Option<PathBuf>,
}

/// What a command-line argument names: one kernel's result, or a whole set.
pub enum Side {
    File(Box<KernelResult>),
    Set(Vec<KernelResult>),
}

impl Side {
    pub fn into_set(self) -> Vec<KernelResult> {
        match self {
            Side::File(k) => vec![*k],
            Side::Set(s) => s,
        }
    }
}

/// A path (file or folder) wins over a kernel id of the same name.
pub fn resolve(arg: &str) -> Result<Side> {
    let path = Path::new(arg);
    if path.is_file() {
        return Ok(Side::File(Box::new(results::load(path)?)));
    }
    // A kernel's own folder (`results/latest/6.1`) means its result file.
    if path.join("result.json").is_file() {
        return Ok(Side::File(Box::new(results::load(
            &path.join("result.json"),
        )?)));
    }
    if path.is_dir() {
        return Ok(Side::Set(results::load_set(path)?));
    }
    let latest = results::result_path(Path::new(results::DEFAULT_DIR), arg);
    if latest.is_file() {
        return Ok(Side::File(Box::new(results::load(&latest)?)));
    }
    bail!(
        "`{arg}` is not a result file, a result-set folder, or a kernel with results in {}",
        results::DEFAULT_DIR
    )
}

/// Two files are compared whatever their kernels; otherwise kernel by kernel.
fn compare(a: Side, b: Side, volatile: &Volatile) -> SetDiff {
    match (a, b) {
        (Side::File(a), Side::File(b)) => SetDiff {
            kernels: vec![diff::diff_kernels(&a, &b, volatile)],
            ..Default::default()
        },
        (Side::File(a), Side::Set(b)) => {
            let b: Vec<KernelResult> = b.into_iter().filter(|k| k.kernel == a.kernel).collect();
            diff::diff_sets(&[*a], &b, volatile)
        }
        (Side::Set(a), Side::File(b)) => {
            let a: Vec<KernelResult> = a.into_iter().filter(|k| k.kernel == b.kernel).collect();
            diff::diff_sets(&a, &[*b], volatile)
        }
        (Side::Set(a), Side::Set(b)) => diff::diff_sets(&a, &b, volatile),
    }
}

pub fn fixes_of(cases: &[Case]) -> BTreeMap<String, Fix> {
    cases
        .iter()
        .filter_map(|c| c.detects.clone().map(|f| (c.id.clone(), f)))
        .collect()
}

pub fn diff(args: &DiffArgs) -> ExitCode {
    let cases = match case_library(args) {
        Ok(cases) => cases,
        Err(code) => return code,
    };
    let (a, b) = match (&args.baseline, &args.a, &args.b) {
        (Some(base), current, None) => (
            base.clone(),
            current
                .clone()
                .unwrap_or_else(|| results::DEFAULT_DIR.into()),
        ),
        (Some(_), _, Some(_)) => {
            return bad("with --baseline, give at most one result set (the current one)")
        }
        (None, Some(a), Some(b)) => (a.clone(), b.clone()),
        (None, _, _) => {
            return bad("give two results to compare (A B), or --baseline DIR [CURRENT]")
        }
    };
    let sides = resolve(&a).and_then(|a| Ok((a, resolve(&b)?)));
    let (side_a, side_b) = match sides {
        Ok(sides) => sides,
        Err(e) => return bad(&format!("{e:#}")),
    };
    let d = compare(side_a, side_b, &Volatile::from_cases(&cases));
    print!("{}", d.render(args.all, &fixes_of(&cases)));
    if args.baseline.is_none() {
        return ExitCode::SUCCESS;
    }
    let regressions = d.regressions();
    if regressions.is_empty() {
        println!("no regressions: {b} against baseline {a}");
        return ExitCode::SUCCESS;
    }
    println!(
        "{} regression(s): {b} against baseline {a}",
        regressions.len()
    );
    for r in &regressions {
        println!("  {r}");
    }
    println!("(if these are intended: sockmatrix baseline update --from {b} --to {a})");
    ExitCode::from(exit::FAILED)
}

/// The cases of `--cases` (which must load), else of ./cases if it loads. The
/// regression gate needs them (volatile observations); comparing two results does not.
fn case_library(args: &DiffArgs) -> Result<Vec<Case>, ExitCode> {
    if let Some(dir) = &args.cases {
        return super::load_cases(std::slice::from_ref(dir), None);
    }
    let default = PathBuf::from("cases");
    if args.baseline.is_some() {
        return super::load_cases(&[default], None);
    }
    if !default.is_dir() {
        return Ok(Vec::new());
    }
    crate::select::load(&[default], None).or_else(|e| {
        let first = e.to_string();
        eprintln!(
            "note: ./cases does not load ({}); comparing every observation exactly",
            first.lines().next().unwrap_or_default()
        );
        Ok(Vec::new())
    })
}

fn bad(why: &str) -> ExitCode {
    eprintln!("error: {why}");
    ExitCode::from(exit::BAD_INPUT)
}
