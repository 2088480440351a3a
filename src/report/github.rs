//! GitHub Actions workflow commands: `::error file=...,line=...::` for every failed
//! expectation (on the expectation's line of the case file, so a pull request shows
//! it there) and for every case that could not run.

use super::compare::display;
use crate::judge::Verdict;
use crate::resultset::results::KernelResult;

pub fn annotations(kernels: &[KernelResult]) -> String {
    let mut out = String::new();
    for k in kernels {
        for c in &k.cases {
            let file = c.file.display().to_string();
            match &c.verdict {
                Verdict::Fail { mismatches } => {
                    for m in mismatches {
                        let mut message = format!(
                            "{}: expected {}, observed {}",
                            m.obs,
                            m.expected,
                            display(m.observed.as_ref())
                        );
                        if let Some(why) = &m.why {
                            message.push_str(&format!("\nwhy: {why}"));
                        }
                        let title = format!("{} failed on kernel {}", c.case, k.kernel);
                        out.push_str(&command(&file, Some(m.line), &title, &message));
                    }
                }
                Verdict::Error { message } => {
                    let title = format!("{} could not run on kernel {}", c.case, k.kernel);
                    out.push_str(&command(&file, None, &title, message));
                }
                Verdict::Pass { .. } | Verdict::Skip { .. } => {}
            }
        }
    }
    out
}

fn command(file: &str, line: Option<usize>, title: &str, message: &str) -> String {
    let mut props = format!("file={}", property(file));
    if let Some(line) = line {
        props.push_str(&format!(",line={line}"));
    }
    props.push_str(&format!(",title={}", property(title)));
    format!("::error {props}::{}\n", data(message))
}

/// The escaping the runner undoes in a command's message.
fn data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Property values also lose `:` and `,`, which separate properties.
fn property(text: &str) -> String {
    data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata;

    #[test]
    fn a_failed_expectation_is_an_error_on_its_line() {
        let report = testdata::two_kernels();
        let text = annotations(&report.kernels);
        assert_eq!(
            text,
            "::error file=cases/r/migrate.yaml,line=7,title=r/migrate failed on kernel 5.10::account.c.reset: expected 0, observed 14%0Awhy: a <b> & \"c\"\n"
        );
        assert_eq!(property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
    }
}
