//! `sockmatrix merge OUT DIR...`: one result set from the result sets of shards.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::resultset::results;

#[derive(clap::Args)]
pub struct MergeArgs {
    /// Where the merged set is written (<kernel>/result.json).
    pub out: PathBuf,
    /// The shards' result-set folders.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
}

pub fn merge(args: &MergeArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::input_or_write_failed(&e),
    }
}

fn run(args: &MergeArgs) -> Result<()> {
    let sets = args
        .dirs
        .iter()
        .map(|d| results::load_set(d))
        .collect::<Result<Vec<_>>>()?;
    for k in crate::resultset::merge::merge(sets)? {
        let path = results::save(&args.out, &k, &[]).context(super::WriteFailed)?;
        println!(
            "{}: {} cases -> {}",
            k.kernel,
            k.cases.len(),
            path.display()
        );
    }
    Ok(())
}
