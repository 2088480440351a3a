//! `sockmatrix report`: renders a result set as Markdown, HTML and/or JUnit XML.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::exit;
use crate::report::{self, Report};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// A result set: a folder holding <kernel>/result.json.
    #[arg(default_value = crate::results::DEFAULT_DIR)]
    pub results: PathBuf,
    /// Write the Markdown report (matrix, differences, fixes, failures) here.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write the self-contained HTML report here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write JUnit XML (one testsuite per kernel) here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Case files or folders, for summaries, references and fixes.
    #[arg(long, default_value = "cases")]
    pub cases: Vec<PathBuf>,
}

/// A report format: where it goes (if asked for) and how it is rendered.
type Output<'a> = (&'a Option<PathBuf>, fn(&Report) -> String);

/// Exits 0 whatever the verdicts: a report describes a run, `diff` gates on one.
pub fn report(args: &ReportArgs) -> ExitCode {
    let outputs: [Output; 3] = [
        (&args.markdown, report::markdown::render),
        (&args.html, report::html::render),
        (&args.junit, report::junit::render),
    ];
    if outputs.iter().all(|(path, _)| path.is_none()) {
        eprintln!("error: nothing to write; give --markdown, --html and/or --junit FILE");
        return ExitCode::from(exit::BAD_INPUT);
    }
    let kernels = match crate::results::load_set(&args.results) {
        Ok(kernels) => kernels,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    let (cases, warnings) = report::load_cases_leniently(&args.cases);
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let report = Report::new(kernels, &cases);
    for (path, render) in outputs {
        let Some(path) = path else { continue };
        if let Err(e) = write(path, &render(&report)) {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::COULD_NOT_RUN);
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::results::write_atomic(path, text.as_bytes())?;
    // Temp files are created 0600; a report is meant to be read by others (CI, a web server).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", path.display()))
}
