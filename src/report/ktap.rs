//! KTAP version 1 (the kernel's Documentation/dev-tools/ktap.rst), as kselftest and
//! KUnit print it and LAVA and KernelCI parse it: one subtest block per kernel, one
//! result line per case, `# SKIP reason` for skips, `# ERROR message` when a case
//! could not run, and diagnostic lines (`# ...`) saying each mismatch.

use std::fmt::Write;

use super::{accel, upstream_version, Report};
use crate::judge::{Explain, Verdict};
use crate::resultset::results::{CaseResult, KernelResult};

/// Console lines shown for a case that could not run.
const CONSOLE_TAIL: usize = 10;

pub fn render(report: &Report) -> String {
    let mut out = String::from("KTAP version 1\n");
    let _ = writeln!(out, "1..{}", report.kernels.len());
    for (n, k) in report.kernels.iter().enumerate() {
        kernel(&mut out, report, n + 1, k);
    }
    out
}

fn kernel(out: &mut String, report: &Report, number: usize, k: &KernelResult) {
    let name = description(&k.kernel);
    out.push_str("  KTAP version 1\n");
    let _ = writeln!(out, "  # Subtest: {name}");
    let _ = writeln!(out, "  1..{}", k.cases.len());
    let mut facts = vec![format!(
        "release {}",
        k.release.as_deref().unwrap_or("unknown")
    )];
    match (&k.built, &k.package_version) {
        (Some(_), _) => facts.push(super::package(k)),
        (None, Some(p)) => facts.push(format!("Debian package {p}")),
        (None, None) => {}
    }
    if let Some(u) = upstream_version(k) {
        facts.push(format!("upstream {u}"));
    }
    if let Some(a) = accel(k) {
        facts.push(format!("accel {a}"));
    }
    diagnostic(out, 2, &format!("{name}: {}", facts.join(", ")));
    if let Some(why) = &k.could_not_run {
        diagnostic(out, 2, &format!("{name}: could not run: {why}"));
    }
    for (n, c) in k.cases.iter().enumerate() {
        case(out, report, k, n + 1, c);
    }
    let failed = k
        .cases
        .iter()
        .any(|c| matches!(c.verdict, Verdict::Fail { .. } | Verdict::Error { .. }));
    let ok = if failed || k.could_not_run.is_some() {
        "not ok"
    } else {
        "ok"
    };
    let _ = writeln!(out, "{ok} {number} {name}");
}

fn case(out: &mut String, report: &Report, k: &KernelResult, number: usize, c: &CaseResult) {
    let name = description(&c.case);
    let line = match &c.verdict {
        Verdict::Pass { .. } => format!("ok {number} {name}"),
        Verdict::Skip { reason } => format!("ok {number} {name} # SKIP {}", one_line(reason)),
        Verdict::Fail { .. } => {
            let explain = Explain {
                file: &c.file,
                verdict: &c.verdict,
            };
            diagnostic(out, 2, &format!("{name}: {explain}"));
            format!("not ok {number} {name}")
        }
        Verdict::Error { message } => {
            if let Some(tail) = report.console_tail(k, CONSOLE_TAIL) {
                diagnostic(out, 2, &format!("{name}: console tail:\n{tail}"));
            }
            format!("not ok {number} {name} # ERROR {}", one_line(message))
        }
    };
    let _ = writeln!(out, "  {line}");
}

/// `# text` lines at `indent` spaces, one per line of `text`.
fn diagnostic(out: &mut String, indent: usize, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{:indent$}# {}", "", clean(line));
    }
}

/// A test description cannot hold `#` (it starts the directive) or a line break.
fn description(text: &str) -> String {
    clean(text).replace('#', "_")
}

fn one_line(text: &str) -> String {
    clean(&text.lines().collect::<Vec<_>>().join(" / "))
}

/// Control characters (console output has some) would break the line structure.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata;

    #[test]
    fn a_subtest_per_kernel_a_line_per_case() {
        let mut report = testdata::two_kernels();
        report.kernels[1].cases.push(testdata::case(
            "s/skipped",
            Verdict::Skip {
                reason: "needs ipv6\nand more".into(),
            },
            serde_json::json!({}),
        ));
        let text = render(&report);
        let expected_start = "KTAP version 1\n1..2\n  KTAP version 1\n  # Subtest: 5.10\n  1..2\n";
        assert!(text.starts_with(expected_start), "{text}");
        assert!(
            text.contains("  # r/migrate: cases/r/migrate.yaml:7: account.c.reset\n  #   - expected: 0\n  #   + observed: 14\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  not ok 1 r/migrate\n  ok 2 b/same\nnot ok 1 5.10\n"),
            "{text}"
        );
        assert!(
            text.contains("  ok 3 s/skipped # SKIP needs ipv6 / and more\nok 2 6.1\n"),
            "{text}"
        );
    }
}
