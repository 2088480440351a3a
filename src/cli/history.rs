//! `sockmatrix history CASE [OBS]`: one case's observations across every kept run, in
//! time order, marking where a value changed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::exit;
use crate::resultset::history;

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Case id (`reuseport/migrate_on_close`) or case file.
    pub case: String,
    /// An observation key, or a prefix of keys (`account.c`); default: all of them.
    pub obs: Option<String>,
    /// Only this kernel.
    #[arg(long, short)]
    pub kernel: Option<String>,
    #[arg(long, default_value = history::DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Also write a self-contained HTML page with a sparkline per kernel and
    /// observation over the runs.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

pub fn history(args: &HistoryArgs) -> ExitCode {
    let case = if args.case.ends_with(".yaml") {
        crate::case::case_id(Path::new(&args.case))
    } else {
        args.case.clone()
    };
    let runs = match history::load(&args.dir, args.kernel.as_deref()) {
        Ok(runs) => runs,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    let rows = history::timeline(&runs, &case, args.obs.as_deref());
    if rows.is_empty() {
        eprintln!(
            "error: no run of {case} in {} ({} runs kept)",
            args.dir.display(),
            runs.len()
        );
        return ExitCode::from(exit::BAD_INPUT);
    }
    if rows.iter().all(|r| r.values.is_empty()) {
        eprintln!(
            "error: {case} never observed {}",
            args.obs.as_deref().unwrap_or("anything")
        );
        return ExitCode::from(exit::BAD_INPUT);
    }
    print!("{}", history::render(&rows));
    if let Some(path) = &args.html {
        let page = crate::report::html::history_page(&case, &rows);
        if let Err(e) = super::report::write(path, &page) {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::COULD_NOT_RUN);
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
