//! `sockmatrix fixes`: per kernel, whether each fix a case detects is present.

use std::path::PathBuf;
use std::process::ExitCode;

use super::exit;
use crate::results;

#[derive(clap::Args)]
pub struct FixesArgs {
    /// A result-set folder, a result file, or a kernel id (default: results/latest).
    #[arg(default_value = results::DEFAULT_DIR)]
    pub results: String,
    /// The case library (where `detects:` is read).
    #[arg(long, default_value = "cases")]
    pub cases: PathBuf,
}

pub fn fixes(args: &FixesArgs) -> ExitCode {
    let cases = match super::load_cases(std::slice::from_ref(&args.cases), None) {
        Ok(cases) => cases,
        Err(code) => return code,
    };
    match super::diff::resolve(&args.results) {
        Ok(side) => {
            print!("{}", crate::fixes::table(&cases, &side.into_set()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::BAD_INPUT)
        }
    }
}
