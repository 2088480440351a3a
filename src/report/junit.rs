//! JUnit XML for CI test tabs: one <testsuite> per kernel, one <testcase> per case.

use std::fmt::Write;

use super::compare::display;
use super::Report;
use crate::judge::{Explain, Verdict};
use crate::output::Tally;
use crate::results::KernelResult;

pub fn render(report: &Report) -> String {
    let all = Tally::of(
        report
            .kernels
            .iter()
            .flat_map(|k| k.cases.iter().map(|c| &c.verdict)),
    );
    let time: f64 = report.kernels.iter().map(suite_seconds).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"sockmatrix\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{time:.3}\">",
        all.passed + all.failed + all.skipped + all.errors,
        all.failed,
        all.errors,
        all.skipped
    );
    for k in &report.kernels {
        suite(&mut out, k);
    }
    out.push_str("</testsuites>\n");
    out
}

fn suite(out: &mut String, k: &KernelResult) {
    let t = Tally::of(k.cases.iter().map(|c| &c.verdict));
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        esc(&k.kernel),
        k.cases.len(),
        t.failed,
        t.errors,
        t.skipped,
        suite_seconds(k)
    );
    out.push_str("    <properties>\n");
    let mut property = |name: &str, value: &str| {
        let _ = writeln!(
            out,
            "      <property name=\"{name}\" value=\"{}\"/>",
            esc(value)
        );
    };
    property("release", k.release.as_deref().unwrap_or("unknown"));
    if let Some(p) = &k.package_version {
        property("package_version", p);
    }
    if let Some(b) = &k.boot {
        property("accel", &b.accel);
    }
    if let Some(why) = &k.could_not_run {
        property("could_not_run", why);
    }
    out.push_str("    </properties>\n");
    for c in &k.cases {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" time=\"{:.3}\"",
            esc(&k.kernel),
            esc(&c.case),
            esc(&c.file.display().to_string()),
            c.elapsed_ms as f64 / 1000.0
        );
        let explain = Explain {
            file: &c.file,
            verdict: &c.verdict,
        }
        .to_string();
        match &c.verdict {
            Verdict::Pass { .. } => out.push_str("/>\n"),
            Verdict::Fail { mismatches } => {
                let message: Vec<String> = mismatches
                    .iter()
                    .map(|m| {
                        format!(
                            "{}: expected {}, observed {}",
                            m.obs,
                            m.expected,
                            display(m.observed.as_ref())
                        )
                    })
                    .collect();
                let _ = write!(out, ">\n      <failure message=\"{}\" type=\"mismatch\">{}</failure>\n    </testcase>\n", esc(&message.join("; ")), esc(&explain));
            }
            Verdict::Error { message } => {
                let first = message.lines().next().unwrap_or_default();
                let _ = write!(out, ">\n      <error message=\"{}\" type=\"could_not_run\">{}</error>\n    </testcase>\n", esc(first), esc(&explain));
            }
            Verdict::Skip { reason } => {
                let _ = write!(
                    out,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                    esc(reason)
                );
            }
        }
    }
    out.push_str("  </testsuite>\n");
}

/// The guest's whole run when known (boot included), else the cases' own time.
fn suite_seconds(k: &KernelResult) -> f64 {
    let ms = k
        .boot
        .as_ref()
        .map(|b| b.total_ms)
        .unwrap_or_else(|| k.cases.iter().map(|c| c.elapsed_ms).sum());
    ms as f64 / 1000.0
}

/// Escapes for text and attributes; drops characters XML 1.0 cannot hold at all
/// (console output can carry control bytes).
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Newlines and tabs in attributes would be normalised to spaces by parsers.
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata;

    #[test]
    fn one_suite_per_kernel_with_failures_explained() {
        let mut report = testdata::two_kernels();
        report.kernels[1].cases.push(testdata::case(
            "s/skipped",
            Verdict::Skip {
                reason: "needs <ipv6>".into(),
            },
            serde_json::json!({}),
        ));
        report.kernels[1].cases.push(testdata::case(
            "e/err",
            Verdict::Error {
                message: "guest died\nmore".into(),
            },
            serde_json::json!({}),
        ));
        let xml = render(&report);
        assert!(xml.contains("<testsuites name=\"sockmatrix\" tests=\"6\" failures=\"1\" errors=\"1\" skipped=\"1\" time=\"9.000\">"), "{xml}");
        assert!(xml.contains("<testsuite name=\"5.10\" tests=\"2\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"3.000\">"), "{xml}");
        assert!(
            xml.contains("<property name=\"release\" value=\"5.10.0-1-cloud-amd64\"/>"),
            "{xml}"
        );
        assert!(xml.contains("<testcase classname=\"5.10\" name=\"b/same\" file=\"cases/b/same.yaml\" time=\"1.500\"/>"), "{xml}");
        assert!(xml.contains("<failure message=\"account.c.reset: expected 0, observed 14\" type=\"mismatch\">cases/r/migrate.yaml:7: account.c.reset&#10;"), "{xml}");
        assert!(
            xml.contains("why: a &lt;b&gt; &amp; &quot;c&quot;</failure>"),
            "{xml}"
        );
        assert!(
            xml.contains("<skipped message=\"needs &lt;ipv6&gt;\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<error message=\"guest died\" type=\"could_not_run\">"),
            "{xml}"
        );
    }

    #[test]
    fn control_characters_are_dropped() {
        assert_eq!(esc("a\u{1b}[31mb\u{0}"), "a[31mb");
    }
}
