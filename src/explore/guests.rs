//! The explorer's batches on real guests, through the runner's plan machinery: one
//! boot (or restore) per kernel per batch, each program a case.

use super::{Backend, KernelBatch};
use crate::case::Case;
use crate::runner::{self, Progress, RunOptions};

/// Batches run on real guests through the runner's plan machinery.
pub struct Guests {
    /// The runner's kernel arguments (ids or bzImage paths).
    pub kernels: Vec<String>,
    /// What each is called in results and findings.
    pub labels: Vec<String>,
    pub run: RunOptions,
    /// Print each boot too.
    pub verbose: bool,
}

impl Backend for Guests {
    fn run(&mut self, cases: &[Case]) -> Vec<KernelBatch> {
        let work: Vec<(String, &[Case])> =
            self.kernels.iter().map(|k| (k.clone(), cases)).collect();
        let verbose = self.verbose;
        let progress = move |event: Progress| {
            if verbose {
                if let Progress::Booting {
                    kernel,
                    attempt,
                    accel,
                } = &event
                {
                    eprintln!("[{kernel}] booting (attempt {attempt}, {accel})");
                }
            }
            if let Progress::Retrying { kernel, reason } = &event {
                eprintln!("[{kernel}] {reason}");
            }
        };
        let results = runner::run_each(&work, &self.run, &progress);
        results
            .into_iter()
            .zip(&self.labels)
            .map(|(r, label)| KernelBatch {
                kernel: label.clone(),
                version: runner::version_of(&r),
                could_not_run: r.could_not_run.clone(),
                runs: r
                    .cases
                    .into_iter()
                    .map(|c| (c.case, (c.outcome, c.observations)))
                    .collect(),
            })
            .collect()
    }

    fn interrupted(&self) -> bool {
        crate::interrupt::requested().is_some()
    }
}
