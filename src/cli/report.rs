//! `sockmatrix report`: renders a result set as Markdown, HTML, JUnit XML, KTAP
//! and/or KCIDB JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::exit;
use crate::report::{self, Report};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// A result set: a folder holding <kernel>/result.json.
    #[arg(default_value = crate::resultset::results::DEFAULT_DIR)]
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
    /// Write KTAP version 1 (one subtest per kernel, one line per case) here.
    #[arg(long, value_name = "FILE")]
    pub ktap: Option<PathBuf>,
    /// Write KCIDB I/O JSON (schema v5.3) here, for `kcidb-submit`.
    #[arg(long, value_name = "FILE")]
    pub kcidb: Option<PathBuf>,
    /// The KCIDB origin: your CI system's name as KCIDB knows it (lower case, digits, _).
    #[arg(long, default_value = "sockmatrix", value_name = "NAME")]
    pub origin: String,
    /// Case files or folders, for summaries, references and fixes.
    #[arg(long, default_value = "cases")]
    pub cases: Vec<PathBuf>,
    /// Judge the recorded observations again against today's case files (after an
    /// expectation was corrected), instead of showing the verdicts of the run.
    #[arg(long)]
    pub rejudge: bool,
    /// Fold runs of consecutive kernels that behaved identically into one column
    /// (`6.1.176..6.1.190`): for a series of releases.
    #[arg(long)]
    pub fold: bool,
}

/// A report format: where it goes (if asked for) and how it is rendered.
type Output<'a> = (&'a Option<PathBuf>, Box<dyn Fn(&Report) -> String + 'a>);

/// Exits 0 whatever the verdicts: a report describes a run, `diff` gates on one.
pub fn report(args: &ReportArgs) -> ExitCode {
    let origin = args.origin.as_str();
    let outputs: [Output; 5] = [
        (&args.markdown, Box::new(report::markdown::render)),
        (&args.html, Box::new(report::html::render)),
        (&args.junit, Box::new(report::junit::render)),
        (&args.ktap, Box::new(report::ktap::render)),
        (
            &args.kcidb,
            Box::new(move |r: &Report| report::kcidb::render(r, origin)),
        ),
    ];
    if outputs.iter().all(|(path, _)| path.is_none()) {
        eprintln!(
            "error: nothing to write; give --markdown, --html, --junit, --ktap and/or --kcidb FILE"
        );
        return ExitCode::from(exit::BAD_INPUT);
    }
    if !report::kcidb::valid_origin(origin) {
        eprintln!("error: --origin `{origin}`: a KCIDB origin is lower-case letters, digits and _");
        return ExitCode::from(exit::BAD_INPUT);
    }
    let kernels = match crate::resultset::results::load_set(&args.results) {
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
    let mut kernels = kernels;
    if args.rejudge {
        rejudge(&mut kernels, &cases);
    }
    let kernels = if args.fold {
        report::fold::fold(kernels, &cases)
    } else {
        kernels
    };
    let report = Report::new(kernels, &cases).from_dir(&args.results);
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

/// New verdicts from the kept observations: the guest observes, the host judges.
fn rejudge(kernels: &mut [crate::resultset::results::KernelResult], cases: &[crate::case::Case]) {
    for k in kernels {
        // Results from before uname -v was kept: the Debian version names the upstream one.
        let version = match &k.uname_version {
            Some(_) => crate::runner::version_of(k),
            None => k
                .package_version
                .as_deref()
                .and_then(crate::case::KernelVersion::from_release),
        }
        .or_else(|| crate::runner::version_of(k));
        for c in &mut k.cases {
            let Some(case) = cases.iter().find(|x| x.id == c.case) else {
                continue;
            };
            let run = crate::observe::CaseRun {
                id: c.case.clone(),
                outcome: c.outcome.clone(),
                observations: c.observations.clone(),
                elapsed_ms: c.elapsed_ms,
            };
            c.verdict = crate::judge::judge(case, &run, version);
        }
    }
}

pub(super) fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::atomic_file::write_atomic(path, text.as_bytes())?;
    // Temp files are created 0600; a report is meant to be read by others (CI, a web server).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", path.display()))
}
