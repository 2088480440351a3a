//! The case x kernel matrix as libtest trials: `cargo test --test matrix` shows one
//! trial per case and kernel, named `<kernel>::<case id>`. Filters, `--list`,
//! `--exact`, `--skip`, `--ignored` and `--format` work as in libtest.
//!
//! Kernels: `SOCKMATRIX_KERNELS` (comma-separated ids from vm/kernels.yaml, bzImage
//! paths, or `host`), else the catalogue's default set, plus `host` when run as root.
//! Only the selected trials' kernels boot, once each, running only their selected
//! cases; `--list` boots nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, Once};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use sockmatrix::case::Case;
use sockmatrix::judge::{Explain, Verdict};
use sockmatrix::resultset::results::KernelResult;
use sockmatrix::runner::{self, Progress, RunOptions};

/// A kernel's result, filled in by the background runner, awaited by its trials.
#[derive(Default)]
struct Slot {
    result: Mutex<Option<Arc<KernelResult>>>,
    ready: Condvar,
}

impl Slot {
    fn fill(&self, result: KernelResult) {
        *self.result.lock().unwrap() = Some(Arc::new(result));
        self.ready.notify_all();
    }

    fn wait(&self) -> Arc<KernelResult> {
        let mut guard = self.result.lock().unwrap();
        loop {
            if let Some(result) = guard.as_ref() {
                return result.clone();
            }
            guard = self.ready.wait(guard).unwrap();
        }
    }
}

fn kernels() -> Vec<String> {
    if let Ok(list) = std::env::var("SOCKMATRIX_KERNELS") {
        return list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    }
    let (catalogue, _) = runner::load_catalogue().expect("vm/kernels.yaml must load");
    let mut ids = Vec::new();
    if nix::unistd::geteuid().is_root() {
        ids.push(runner::HOST.to_string());
    }
    ids.extend(catalogue.default_ids());
    ids
}

fn main() {
    let args = Arguments::from_args();
    let cases = match sockmatrix::select::load(&[], None) {
        Ok(cases) => cases,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let kernels = kernels();

    // Case-major order, so that the first trials each need a different kernel.
    let mut names = Vec::new();
    for case in &cases {
        for kernel in &kernels {
            names.push((kernel.clone(), case.id.clone()));
        }
    }
    // Which cases each kernel must run: those of the trials the arguments select.
    let mut wanted: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    for (kernel, case_id) in &names {
        let probe = Trial::test(format!("{kernel}::{case_id}"), || Ok(()));
        if !args.list && !args.is_filtered_out(&probe) && !args.is_ignored(&probe) {
            let case = cases.iter().find(|c| &c.id == case_id).unwrap().clone();
            wanted.entry(kernel.clone()).or_default().push(case);
        }
    }
    let slots: Arc<BTreeMap<String, Slot>> = Arc::new(
        wanted
            .keys()
            .map(|k| (k.clone(), Slot::default()))
            .collect(),
    );
    let start = Arc::new(Once::new());

    let trials = names
        .into_iter()
        .map(|(kernel, case_id)| {
            let (slots, start, wanted) = (slots.clone(), start.clone(), wanted.clone());
            Trial::ignorable_test(format!("{kernel}::{case_id}"), move || {
                start.call_once(|| start_runner(wanted, slots.clone()));
                let slot = slots
                    .get(&kernel)
                    .expect("a running trial's kernel was selected");
                judge_trial(&slot.wait(), &case_id)
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Interrupted: the guests were stopped and temporary files removed; say so the
    // shell's way (130 SIGINT, 143 SIGTERM) rather than as failed trials.
    if let Some(signal) = sockmatrix::interrupt::requested() {
        eprintln!("interrupted by {signal}");
        std::process::exit(signal.exit_code().into());
    }
    conclusion.exit();
}

/// Boots every selected kernel in the background (the runner bounds how many at once)
/// and hands each kernel's result to its trials as soon as it is done.
fn start_runner(wanted: BTreeMap<String, Vec<Case>>, slots: Arc<BTreeMap<String, Slot>>) {
    sockmatrix::interrupt::install();
    std::thread::spawn(move || {
        let opts = RunOptions {
            show_downloads: false,
            ..RunOptions::default()
        };
        let work: Vec<(String, &[Case])> = wanted
            .iter()
            .map(|(k, c)| (k.clone(), c.as_slice()))
            .collect();
        let progress = |event: Progress| match event {
            Progress::Retrying { kernel, reason } => eprintln!("[{kernel}] {reason}; retrying"),
            Progress::KernelDone { kernel, result, .. } => slots[&kernel].fill(*result),
            _ => {}
        };
        let results = runner::run_each(&work, &opts, &progress);
        // Every kernel has a result (a panicked runner's says why): release its trials.
        for ((kernel, _), result) in work.iter().zip(results) {
            if slots[kernel].result.lock().unwrap().is_none() {
                slots[kernel].fill(result);
            }
        }
    });
}

fn judge_trial(result: &KernelResult, case_id: &str) -> Result<Completion, Failed> {
    let Some(case) = result.cases.iter().find(|c| c.case == case_id) else {
        return Err(format!(
            "{case_id} was not part of the run on kernel {}",
            result.kernel
        )
        .into());
    };
    let release = result.release.as_deref().unwrap_or("release unknown");
    match &case.verdict {
        Verdict::Pass { .. } => Ok(Completion::Completed),
        Verdict::Skip { reason } => Ok(Completion::ignored_with(reason)),
        verdict => Err(format!(
            "kernel {} ({release}), case {case_id}\n{}",
            result.kernel,
            Explain {
                file: &case.file,
                verdict
            }
        )
        .into()),
    }
}
