//! `sockmatrix explore`: random programs run on every kernel in batches (one boot
//! per kernel per batch), differences confirmed by a rerun, shrunk by delta
//! debugging, deduplicated by signature and written as case files. The state lives
//! in `--out` after every batch, so an interrupted run keeps its findings and a
//! later run with the same `--out` continues.

pub mod compare;
pub mod finding;
pub mod grammar;
mod guests;
pub mod program;
pub mod shrink;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::case::{Case, KernelVersion};
use crate::observe::{Observations, Outcome};
use compare::{comparable, differences, Difference};
use finding::{Finding, Tally, Unjudged};
pub use guests::Guests;
use program::Program;

/// How one exploration runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Wall time of this invocation; a batch in progress at the end finishes.
    pub budget: Duration,
    pub out: PathBuf,
    /// Programs per batch (fresh ones fill what confirmations and shrinking leave).
    pub batch: usize,
    /// Stop generating after this many fresh programs in all (for tests and bench).
    pub max_programs: Option<u64>,
}

/// One kernel's share of a batch: each case id's outcome and observations.
#[derive(Debug, Clone)]
pub struct KernelBatch {
    pub kernel: String,
    pub version: Option<KernelVersion>,
    /// Why the kernel ran nothing (no boot), if so.
    pub could_not_run: Option<String>,
    pub runs: BTreeMap<String, (Outcome, Observations)>,
}

/// Runs a batch of cases on every kernel, in the kernels' order.
pub trait Backend {
    fn run(&mut self, cases: &[Case]) -> Vec<KernelBatch>;
    /// A termination signal asked the run to stop.
    fn interrupted(&self) -> bool;
}

/// `sockmatrix bench`'s figure: a fixed-seed exploration of `programs` programs on
/// `kernels` (into a scratch folder), and the tally it ends with.
pub fn bench(kernels: &[String], run: &crate::runner::RunOptions, programs: u64) -> Result<Tally> {
    let scratch = crate::runner::scratch_dir("explore-bench")?;
    let mut guests = Guests {
        kernels: kernels.to_vec(),
        labels: kernels.to_vec(),
        run: crate::runner::RunOptions {
            results_dir: scratch.path().join("results"),
            history_dir: None,
            ..run.clone()
        },
        verbose: false,
    };
    let opts = Options {
        seed: 1,
        budget: Duration::from_secs(3600),
        out: scratch.path().join("out"),
        batch: programs as usize,
        max_programs: Some(programs),
    };
    let mut state = State::new(opts.seed, kernels);
    match explore(&opts, &mut state, &mut guests, &|_| {})? {
        End::CouldNotRun(why) => anyhow::bail!("kernels could not run: {why}"),
        End::Done | End::Interrupted => Ok(state.tally),
    }
}

/// Work carried from one batch to the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Work {
    /// A difference seen once: run the program again before believing it.
    Confirm {
        index: u64,
        program: Program,
        target: Difference,
    },
    /// A confirmed difference: try smaller variants of `best` each batch.
    Shrink {
        index: u64,
        original_steps: usize,
        best: Program,
        target: Difference,
        observations: Vec<(String, Observations)>,
        rounds: u32,
    },
}

impl Work {
    fn target(&self) -> &Difference {
        match self {
            Work::Confirm { target, .. } | Work::Shrink { target, .. } => target,
        }
    }
}

/// Everything a later run with the same `--out` needs to continue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub seed: u64,
    /// Kernel ids, in order, with the upstream version each ran as (once known).
    pub kernels: Vec<(String, Option<String>)>,
    /// Index of the next fresh program.
    pub next_index: u64,
    pub tally: Tally,
    pub findings: Vec<Finding>,
    pub work: Vec<Work>,
}

const STATE_FILE: &str = "state.json";
pub const REPORT_FILE: &str = "report.md";
/// Shrink candidates tried per confirmed difference and batch.
const CANDIDATES: usize = 24;
/// A shrink that still finds smaller programs after this many batches stops there.
const MAX_SHRINK_ROUNDS: u32 = 12;
/// Batches in a row in which some kernel could not run before giving up.
const MAX_FAILED_BATCHES: u32 = 3;

impl State {
    pub fn new(seed: u64, kernels: &[String]) -> State {
        State {
            seed,
            kernels: kernels.iter().map(|k| (k.clone(), None)).collect(),
            next_index: 0,
            tally: Tally::default(),
            findings: Vec::new(),
            work: Vec::new(),
        }
    }

    /// The state kept in `out`, if a run was there before.
    pub fn load(out: &Path) -> Result<Option<State>> {
        let path = out.join(STATE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let state = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an explore state", path.display()))?;
        Ok(Some(state))
    }

    pub fn kernel_versions(&self) -> Vec<(String, Option<KernelVersion>)> {
        self.kernels
            .iter()
            .map(|(k, v)| (k.clone(), v.as_deref().and_then(|v| v.parse().ok())))
            .collect()
    }

    /// Findings, and the confirmed differences still being shrunk (written as they
    /// stand, marked unfinished), in signature order.
    pub fn all_findings(&self) -> Vec<Finding> {
        let mut out = self.findings.clone();
        for w in &self.work {
            if let Work::Shrink {
                index,
                original_steps,
                best,
                target,
                observations,
                ..
            } = w
            {
                if !out.iter().any(|f| f.signature == target.signature()) {
                    out.push(Finding {
                        signature: target.signature(),
                        difference: target.clone(),
                        program: best.clone(),
                        observations: observations.clone(),
                        seed: self.seed,
                        index: *index,
                        original_steps: *original_steps,
                        minimal: false,
                        seen: 1,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.signature.cmp(&b.signature));
        out
    }

    /// Saves the state, every finding as a case file, and the report, each file
    /// replaced atomically: an interruption never leaves one half-written.
    pub fn save(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let kernels = self.kernel_versions();
        let findings = self.all_findings();
        for f in &findings {
            let text = finding::case_file(f, &kernels);
            crate::atomic_file::write_atomic(&out.join(f.file_name()), text.as_bytes())?;
        }
        let report = finding::report(self.seed, &kernels, &self.tally, &findings);
        crate::atomic_file::write_atomic(&out.join(REPORT_FILE), report.as_bytes())?;
        let state = serde_json::to_string_pretty(self)?;
        crate::atomic_file::write_atomic(&out.join(STATE_FILE), state.as_bytes())
    }

    fn known(&self, signature: &str) -> bool {
        self.findings.iter().any(|f| f.signature == signature)
            || self
                .work
                .iter()
                .any(|w| w.target().signature() == signature)
    }

    fn finish(&mut self, f: Finding) {
        match self
            .findings
            .iter_mut()
            .find(|g| g.signature == f.signature)
        {
            Some(g) if f.program.size() < g.program.size() => {
                let seen = g.seen;
                *g = Finding {
                    seen: seen + f.seen,
                    ..f
                };
            }
            Some(g) => g.seen += f.seen,
            None => self.findings.push(f),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The budget or the program limit was reached.
    Done,
    /// A signal stopped it; the state before the unfinished batch is saved.
    Interrupted,
    /// Some kernel could not run several batches in a row.
    CouldNotRun(String),
}

/// What each program of a batch is for.
#[derive(Debug, Clone, Copy)]
enum Role {
    Fresh(u64),
    Confirm(usize),
    Candidate(usize),
}

/// Runs batches until the budget is spent, saving the state after each.
pub fn explore(
    opts: &Options,
    state: &mut State,
    backend: &mut dyn Backend,
    progress: &dyn Fn(&str),
) -> Result<End> {
    let started = Instant::now();
    let elapsed_before = state.tally.elapsed_ms;
    let mut last_batch = Duration::ZERO;
    let mut failed_batches = 0;
    loop {
        let spent = started.elapsed();
        if spent >= opts.budget {
            return Ok(End::Done);
        }
        // Near the end only confirmations and shrinking run, so that what was
        // found is finished rather than more found and left raw.
        let winding_down = spent + last_batch * 2 >= opts.budget;
        let fresh_allowed = !winding_down && opts.max_programs.is_none_or(|m| state.next_index < m);
        let mut items: Vec<(Role, Program)> = Vec::new();
        for (w, work) in state.work.iter().enumerate() {
            match work {
                Work::Confirm { program, .. } => items.push((Role::Confirm(w), program.clone())),
                Work::Shrink { best, target, .. } => {
                    let keep = compare::step_of(best, &target.key);
                    for c in shrink::candidates(best, keep, CANDIDATES) {
                        items.push((Role::Candidate(w), c));
                    }
                }
            }
        }
        let mut fresh = 0;
        if fresh_allowed {
            let room = opts
                .batch
                .saturating_sub(items.len())
                .max(opts.batch / 4)
                .max(1);
            let limit = opts.max_programs.map_or(u64::MAX, |m| m - state.next_index);
            while fresh < room as u64 && fresh < limit {
                let index = state.next_index + fresh;
                items.push((Role::Fresh(index), grammar::program(state.seed, index)));
                fresh += 1;
            }
        }
        if items.is_empty() {
            return Ok(End::Done);
        }
        let round = state.tally.rounds;
        let ids: Vec<String> = (0..items.len())
            .map(|i| format!("explore/r{round}p{i}"))
            .collect();
        let cases: Vec<Case> = items
            .iter()
            .zip(&ids)
            .map(|((_, p), id)| {
                p.to_case(id).map_err(|e| {
                    anyhow::anyhow!(
                        "a generated program is not a valid case (a sockmatrix bug):\n{e}\n{}",
                        p.body_yaml()
                    )
                })
            })
            .collect::<Result<_>>()?;
        let batch_start = Instant::now();
        let results = backend.run(&cases);
        last_batch = batch_start.elapsed();
        if backend.interrupted() {
            return Ok(End::Interrupted);
        }
        if let Some(dead) = results.iter().find(|k| k.could_not_run.is_some()) {
            failed_batches += 1;
            let why = format!(
                "{}: {}",
                dead.kernel,
                dead.could_not_run.as_deref().unwrap_or_default()
            );
            progress(&format!("batch lost, a kernel could not run: {why}"));
            if failed_batches >= MAX_FAILED_BATCHES {
                return Ok(End::CouldNotRun(why));
            }
            continue;
        }
        failed_batches = 0;
        for k in &results {
            if let (Some(slot), Some(v)) = (
                state.kernels.iter_mut().find(|(id, _)| *id == k.kernel),
                k.version,
            ) {
                slot.1 = Some(v.to_string());
            }
        }
        apply(state, &items, &ids, &results);
        state.next_index += fresh;
        state.tally.elapsed_ms = elapsed_before + started.elapsed().as_millis() as u64;
        state.save(&opts.out)?;
        let shrinking = state.work.len();
        progress(&format!(
            "[{}] batch {}: {} programs ({:.2}/s), {} runs, {} signature(s), {} in confirmation or shrinking, {} flaky, {} inconclusive",
            clock(state.tally.elapsed_ms),
            state.tally.rounds,
            state.tally.programs,
            state.tally.per_second(state.tally.programs),
            state.tally.runs,
            state.findings.len(),
            shrinking,
            state.tally.flaky,
            state.tally.inconclusive
        ));
    }
}

fn clock(ms: u64) -> String {
    format!("{}:{:02}", ms / 60_000, ms / 1000 % 60)
}

/// A program's observations on every kernel, if every kernel can be compared.
fn runs_of(id: &str, results: &[KernelBatch]) -> Option<Vec<(String, Observations)>> {
    results
        .iter()
        .map(|k| {
            let (outcome, obs) = k.runs.get(id)?;
            comparable(outcome).then(|| (k.kernel.clone(), obs.clone()))
        })
        .collect()
}

/// Each kernel that could not judge a program, with why.
fn why_not_judged(program: &Program, id: &str, results: &[KernelBatch]) -> Vec<(String, String)> {
    results
        .iter()
        .filter_map(|k| {
            let why = compare::why_not_comparable(program, k.runs.get(id).map(|(o, _)| o))?;
            Some((k.kernel.clone(), why))
        })
        .collect()
}

fn diffs_of(program: &Program, runs: &[(String, Observations)]) -> Vec<Difference> {
    let view: Vec<(String, &Observations)> = runs.iter().map(|(k, o)| (k.clone(), o)).collect();
    differences(program, &view)
}

/// Whether the first difference of `program`'s runs is `target` (a difference
/// after another one would only follow from it).
fn first_is(program: &Program, runs: &[(String, Observations)], target: &Difference) -> bool {
    diffs_of(program, runs)
        .first()
        .is_some_and(|d| d.same_as(target))
}

/// Takes a batch's results into the state: new differences to confirm, confirmed
/// ones to shrink, the smallest candidate that keeps its difference, findings.
fn apply(state: &mut State, items: &[(Role, Program)], ids: &[String], results: &[KernelBatch]) {
    state.tally.rounds += 1;
    state.tally.runs += items.len() as u64;
    // Per shrink work: the smallest candidate that still shows its difference.
    let mut smallest: BTreeMap<usize, (Program, Vec<(String, Observations)>)> = BTreeMap::new();
    let mut confirmed: BTreeMap<usize, Option<Vec<(String, Observations)>>> = BTreeMap::new();
    let mut new_work: Vec<Work> = Vec::new();
    for ((role, program), id) in items.iter().zip(ids) {
        let runs = runs_of(id, results);
        match *role {
            Role::Fresh(index) => {
                state.tally.programs += 1;
                let Some(runs) = runs else {
                    state.tally.inconclusive += 1;
                    state.tally.unjudged.push(Unjudged {
                        index,
                        program: program.clone(),
                        reasons: why_not_judged(program, id, results),
                    });
                    continue;
                };
                // The first difference only: later ones follow from it (a connect
                // that differs because a socket option failed on one kernel is not a
                // difference of its own).
                if let Some(d) = diffs_of(program, &runs).into_iter().next() {
                    let sig = d.signature();
                    if let Some(f) = state.findings.iter_mut().find(|f| f.signature == sig) {
                        f.seen += 1;
                    } else if !state.known(&sig)
                        && !new_work.iter().any(|w| w.target().signature() == sig)
                    {
                        new_work.push(Work::Confirm {
                            index,
                            program: program.clone(),
                            target: d,
                        });
                    }
                }
            }
            Role::Confirm(w) => {
                let target = state.work[w].target();
                let repeated = runs.filter(|r| first_is(program, r, target));
                confirmed.insert(w, repeated);
            }
            Role::Candidate(w) => {
                let target = state.work[w].target();
                let Some(runs) = runs else { continue };
                if first_is(program, &runs, target)
                    && smallest
                        .get(&w)
                        .is_none_or(|(p, _)| program.size() < p.size())
                {
                    smallest.insert(w, (program.clone(), runs));
                }
            }
        }
    }
    let seed = state.seed;
    let mut kept: Vec<Work> = Vec::new();
    let mut finished: Vec<Finding> = Vec::new();
    for (w, work) in std::mem::take(&mut state.work).into_iter().enumerate() {
        match work {
            Work::Confirm {
                index,
                program,
                target,
            } => match confirmed.remove(&w).flatten() {
                Some(observations) => kept.push(Work::Shrink {
                    index,
                    original_steps: program.steps.len(),
                    best: program,
                    target,
                    observations,
                    rounds: 0,
                }),
                None => {
                    state.tally.flaky += 1;
                    *state
                        .tally
                        .flaky_signatures
                        .entry(target.signature())
                        .or_default() += 1;
                }
            },
            Work::Shrink {
                index,
                original_steps,
                best,
                target,
                observations,
                rounds,
            } => match smallest.remove(&w) {
                Some((program, runs)) if rounds + 1 < MAX_SHRINK_ROUNDS => {
                    kept.push(Work::Shrink {
                        index,
                        original_steps,
                        best: program,
                        target,
                        observations: runs,
                        rounds: rounds + 1,
                    })
                }
                smaller => {
                    let minimal = smaller.is_none();
                    let (program, observations) = smaller.unwrap_or((best, observations));
                    finished.push(Finding {
                        signature: target.signature(),
                        difference: target,
                        program,
                        observations,
                        seed,
                        index,
                        original_steps,
                        minimal,
                        seen: 1,
                    });
                }
            },
        }
    }
    kept.extend(new_work);
    state.work = kept;
    for f in finished {
        state.finish(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(kernel: &str, id: &str, outcome: Outcome) -> KernelBatch {
        KernelBatch {
            kernel: kernel.into(),
            version: None,
            could_not_run: None,
            runs: [(id.to_string(), (outcome, Observations::default()))]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn a_program_not_judged_is_kept_with_each_kernels_reason() {
        let program = grammar::program(11, 3);
        let last = program.steps.len() - 1;
        let line = program.to_case("x").unwrap().plan.steps[last].line;
        let mut state = State::new(11, &["6.1".into(), "6.12".into(), "7.2".into()]);
        let id = "explore/r0p0".to_string();
        let results = [
            batch(
                "6.1",
                &id,
                Outcome::Timeout {
                    after_ms: 5000,
                    line: Some(line),
                },
            ),
            batch(
                "6.12",
                &id,
                Outcome::Timeout {
                    after_ms: 5000,
                    line: Some(line),
                },
            ),
            KernelBatch {
                runs: BTreeMap::new(),
                ..batch("7.2", &id, Outcome::Ran)
            },
        ];
        apply(
            &mut state,
            &[(Role::Fresh(3), program.clone())],
            &[id],
            &results,
        );
        assert_eq!(state.tally.inconclusive, 1);
        let step = program.steps[last].clone();
        let want = Unjudged {
            index: 3,
            program,
            reasons: vec![
                (
                    "6.1".into(),
                    format!(
                        "timed out after 5000 ms in step {} (`{}: {}`)",
                        last + 1,
                        step.verb,
                        step.subject
                    ),
                ),
                (
                    "6.12".into(),
                    format!(
                        "timed out after 5000 ms in step {} (`{}: {}`)",
                        last + 1,
                        step.verb,
                        step.subject
                    ),
                ),
                ("7.2".into(), "no result for it".into()),
            ],
        };
        assert_eq!(state.tally.unjudged, std::slice::from_ref(&want));
        let report = finding::report(11, &state.kernel_versions(), &state.tally, &[]);
        assert!(
            report.contains(&format!(
                "- program 3: 6.1, 6.12: {}; 7.2: no result for it\n",
                want.reasons[0].1
            )),
            "{report}"
        );
        // A state saved before the reasons were kept still loads.
        let mut old = serde_json::to_value(&state).unwrap();
        old["tally"].as_object_mut().unwrap().remove("unjudged");
        let old: State = serde_json::from_value(old).unwrap();
        assert!(old.tally.unjudged.is_empty());
    }
}
