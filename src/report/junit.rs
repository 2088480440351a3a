//! JUnit XML for CI test tabs, written with quick-junit (nextest's writer): one
//! <testsuite> per kernel, one <testcase> per case, with what a CI page shows: the
//! mismatch text in the failure body, the console tail for a case that could not run,
//! a case a dead guest interrupted as a rerun, timestamps and durations.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestRerun, TestSuite};

use super::compare::display;
use super::{accel, started_at, upstream_version, Report};
use crate::judge::{Explain, Verdict};
use crate::resultset::results::{CaseResult, KernelResult};

/// Console lines kept in a case that could not run.
const CONSOLE_TAIL: usize = 40;

pub fn render(report: &Report) -> String {
    let mut out = quick_junit::Report::new("sockmatrix");
    if let Some(first) = report.kernels.iter().map(started_at).min() {
        out.set_timestamp(timestamp(first));
    }
    let total: u64 = report.kernels.iter().map(suite_ms).sum();
    out.set_time(Duration::from_millis(total));
    for k in &report.kernels {
        out.add_test_suite(suite(report, k));
    }
    out.to_string()
        .expect("a JUnit report in memory serializes")
}

fn suite(report: &Report, k: &KernelResult) -> TestSuite {
    let mut suite = TestSuite::new(k.kernel.as_str());
    suite.set_timestamp(timestamp(started_at(k)));
    suite.set_time(Duration::from_millis(suite_ms(k)));
    let mut property = |name: &str, value: &str| {
        suite.add_property(Property::new(name, value));
    };
    property("release", k.release.as_deref().unwrap_or("unknown"));
    if let Some(p) = &k.package_version {
        property("package_version", p);
    }
    if let Some(b) = &k.built {
        property("built_from", &b.source_identity);
        property("built_config", &b.config);
        property("built_config_sha256", &b.config_sha256);
        property("built_compiler", &b.compiler);
    }
    if let Some(u) = upstream_version(k) {
        property("upstream_version", &u);
    }
    if let Some(a) = accel(k) {
        property("accel", a);
    }
    if let Some(why) = &k.could_not_run {
        property("could_not_run", why);
    }
    if let Some(why) = k.boot.as_ref().and_then(|b| b.accel_reason.as_deref()) {
        property("accel_reason", why);
    }
    if let Some(b) = &k.boot {
        property("boot_attempts", &b.attempts.to_string());
        for (i, r) in b.resumes.iter().enumerate() {
            property(&format!("resumed_after_{}", i + 1), r);
        }
    }
    for c in &k.cases {
        suite.add_test_case(case(report, k, c));
    }
    // The kernel's console, as CI pages show a suite's output.
    if let Some(tail) = report.console_tail(k, CONSOLE_TAIL) {
        suite.set_system_out(format!("--- console tail ({}):\n{tail}", k.kernel));
    }
    suite
}

fn case(report: &Report, k: &KernelResult, c: &CaseResult) -> TestCase {
    let explain = Explain {
        file: &c.file,
        verdict: &c.verdict,
    }
    .to_string();
    let mut status = match &c.verdict {
        Verdict::Pass { .. } => TestCaseStatus::success(),
        Verdict::Fail { mismatches } => {
            let message: Vec<String> = mismatches
                .iter()
                .map(|m| {
                    let observed = display(m.observed.as_ref());
                    format!("{}: expected {}, observed {observed}", m.obs, m.expected)
                })
                .collect();
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(message.join("; "))
                .set_type("mismatch")
                .set_description(explain.as_str());
            s
        }
        Verdict::Error { message } => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(message.lines().next().unwrap_or_default())
                .set_type("could_not_run")
                .set_description(explain.as_str());
            s
        }
        Verdict::Skip { reason } => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(reason.as_str());
            s
        }
    };
    for why in interruptions(k, &c.case) {
        let mut rerun = TestRerun::new(NonSuccessKind::Error);
        rerun
            .set_type("guest_died")
            .set_message(why.as_str())
            .set_description(why.as_str());
        status.add_rerun(rerun);
    }
    let mut tc = TestCase::new(c.case.as_str(), status);
    tc.set_classname(format!("sockmatrix.{}", k.kernel))
        .set_timestamp(timestamp(started_at(k)))
        .set_time(Duration::from_millis(c.elapsed_ms))
        .add_property(Property::new("file", c.file.display().to_string()));
    if let Verdict::Pass { checked } = c.verdict {
        tc.set_assertions(checked);
    }
    // What the case observed is its output; the console matters when it could not run.
    let mut out: Vec<String> = c
        .observations
        .iter()
        .map(|(key, v)| format!("{key} = {}", display(Some(v))))
        .collect();
    if matches!(c.verdict, Verdict::Error { .. }) {
        if let Some(tail) = report.console_tail(k, CONSOLE_TAIL) {
            out.push(format!("--- console tail ({}):", k.kernel));
            out.push(tail);
        }
    }
    if !out.is_empty() {
        tc.set_system_out(out.join("\n"));
    }
    tc
}

/// The guest deaths that interrupted this case (it ran again in a new boot).
fn interruptions(k: &KernelResult, case: &str) -> Vec<String> {
    let Some(b) = &k.boot else { return Vec::new() };
    b.resumes
        .iter()
        .filter(|r| {
            r.split(" while running ")
                .nth(1)
                .is_some_and(|c| c.trim() == case)
        })
        .cloned()
        .collect()
}

/// The guest's whole run when known (boot included), else the cases' own time.
fn suite_ms(k: &KernelResult) -> u64 {
    k.boot
        .as_ref()
        .map(|b| b.total_ms)
        .unwrap_or_else(|| k.cases.iter().map(|c| c.elapsed_ms).sum())
}

fn timestamp(secs: u64) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .unwrap_or_default()
        .fixed_offset()
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
        assert!(
            xml.contains("<testsuites name=\"sockmatrix\" tests=\"6\" skipped=\"1\" failures=\"1\" errors=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<testsuite name=\"5.10\" tests=\"2\" skipped=\"0\" errors=\"0\" failures=\"1\""
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<property name=\"release\" value=\"5.10.0-1-cloud-amd64\"/>"),
            "{xml}"
        );
        assert!(xml.contains("<failure message=\"account.c.reset: expected 0, observed 14\" type=\"mismatch\">cases/r/migrate.yaml:7: account.c.reset"), "{xml}");
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
        assert!(
            xml.contains("account.c.reset = 14"),
            "observations in system-out: {xml}"
        );
    }

    #[test]
    fn an_interrupted_case_is_a_rerun() {
        let mut report = testdata::two_kernels();
        let mut boot: crate::resultset::results::BootFacts =
            serde_json::from_value(serde_json::json!({
                "accel": "tcg", "attempts": 1, "hung_attempts": [], "boot_to_ready_ms": 1,
                "total_ms": 9000, "exit": "PoweredOff", "console_problems": [],
                "console_log": "/nonexistent/console.log"
            }))
            .unwrap();
        boot.resumes = vec!["the kernel panicked: Oops while running b/same".into()];
        report.kernels[0].boot = Some(boot);
        let xml = render(&report);
        assert!(
            xml.contains("<flakyError message=\"the kernel panicked: Oops while running b/same\" type=\"guest_died\">"),
            "{xml}"
        );
    }
}
