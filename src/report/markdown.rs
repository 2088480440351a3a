//! The Markdown report: kernels, the case x kernel matrix with each cell's key
//! observations, the differences between kernels, what timed steps cost on each
//! kernel (text bars and the ratio), the fixes, and the failures.

use std::fmt::Write;

use super::compare::display;
use super::{Report, Row};
use crate::judge::{Explain, Verdict};
use crate::output::Tally;

/// How many key observations a matrix cell shows before `+N`.
const CELL_KEYS: usize = 3;

pub fn render(report: &Report) -> String {
    let rows = report.rows();
    let mut out = String::from("# sockmatrix results\n\n");
    kernels(&mut out, report);
    matrix(&mut out, report, &rows);
    differences(&mut out, report, &rows);
    timings(&mut out, report, &rows);
    fixes(&mut out, report, &rows);
    failures(&mut out, report, &rows);
    out
}

fn kernels(out: &mut String, report: &Report) {
    out.push_str("| kernel | release | package | upstream | accel | passed | failed | skipped | could not run |\n|---|---|---|---|---|---|---|---|---|\n");
    for k in &report.kernels {
        let t = Tally::of(k.cases.iter().map(|c| &c.verdict));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&k.kernel),
            cell(k.release.as_deref().unwrap_or("unknown")),
            cell(&super::package(k)),
            cell(&super::upstream_version(k).unwrap_or_else(|| "-".into())),
            cell(super::accel(k).unwrap_or("-")),
            t.passed,
            t.failed,
            t.skipped,
            t.errors
        );
    }
    for k in report.kernels.iter().filter(|k| k.could_not_run.is_some()) {
        let why = k
            .could_not_run
            .as_deref()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\n**{}** could not run: {}",
            cell(&k.kernel),
            cell(why)
        );
    }
    out.push('\n');
}

fn header(out: &mut String, first: &[&str], report: &Report) {
    let names: Vec<String> = first
        .iter()
        .map(|s| s.to_string())
        .chain(report.kernels.iter().map(|k| cell(&k.kernel)))
        .collect();
    let _ = writeln!(out, "| {} |", names.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(names.len()));
}

fn matrix(out: &mut String, report: &Report, rows: &[Row]) {
    out.push_str("## Matrix\n\n");
    header(out, &["case"], report);
    for row in rows {
        let mut cells = vec![format!("`{}`", cell(&row.case))];
        for (k, run) in row.runs.iter().enumerate() {
            let Some(run) = run else {
                cells.push("-".into());
                continue;
            };
            let mut text = match run.verdict {
                Verdict::Pass { .. } | Verdict::Skip { .. } => run.verdict.label().to_string(),
                _ => format!("**{}**", run.verdict.label()),
            };
            if row.diff.odd(k) {
                text.push_str(" ≠");
            }
            let (keys, more) = row.diff.key_observations(k, CELL_KEYS);
            if !keys.is_empty() {
                let _ = write!(text, " {}", cell(&keys.join(" ")));
            }
            if more > 0 {
                let _ = write!(text, " +{more}");
            }
            cells.push(text);
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(
        out,
        "\nLegend: **pass** every expectation held; **FAIL** an expectation did not hold; \
         **skip** a requirement is missing on that kernel; **ERROR** the case could not run \
         (not a verdict on the kernel); `-` not run on that kernel. After the verdict, the key \
         observations: those whose values differ between kernels and are not volatile, as \
         `name=value` (name shortened, at most {CELL_KEYS}, `+N` more, `-` not observed). `≠` marks a kernel whose \
         observations differ from what most kernels saw.\n"
    );
}

fn differences(out: &mut String, report: &Report, rows: &[Row]) {
    out.push_str("## Differences between kernels\n\n");
    let differing: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.diff.differences.is_empty())
        .collect();
    if differing.is_empty() {
        out.push_str("Every case observed the same values on every kernel that ran it.\n\n");
        return;
    }
    out.push_str(
        "Values that are not the most common one are in bold. *(volatile)*: the case says this \
         value varies from run to run (a bound, a relation, a fairness); it never marks a kernel.\n\n",
    );
    for row in differing {
        let _ = writeln!(out, "### `{}`\n", cell(&row.case));
        if let Some(info) = row.info {
            let _ = writeln!(out, "{}\n", cell(info.summary.trim()));
        }
        header(out, &["observation"], report);
        for d in &row.diff.differences {
            let mark = if d.volatile { " *(volatile)*" } else { "" };
            let mut cells = vec![format!("`{}`{mark}", cell(&d.obs))];
            for (k, v) in d.values.iter().enumerate() {
                cells.push(match (row.diff.compared[k], d.odd[k] && !d.volatile) {
                    (false, _) => " ".into(),
                    (true, true) => format!("**{}**", cell(&display(v.as_ref()))),
                    (true, false) => cell(&display(v.as_ref())),
                });
            }
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out.push('\n');
    }
}

/// Width of the longest text bar, in characters.
const BAR_WIDTH: usize = 40;

/// Per case with timed steps (`time: true`), each timing as text bars per kernel and
/// the slowest kernel against the fastest. Absent when nothing was timed.
fn timings(out: &mut String, report: &Report, rows: &[Row]) {
    let timed = report.timed_rows(rows);
    if timed.is_empty() {
        return;
    }
    out.push_str("## Timings\n\n");
    let _ = writeln!(
        out,
        "Steps the cases time (`time: true`). Note: {}.\n",
        crate::timing::TCG_NOTE
    );
    let name_width = report
        .kernels
        .iter()
        .map(|k| k.kernel.chars().count())
        .max()
        .unwrap_or(0);
    for (row, timings) in timed {
        let _ = writeln!(out, "### `{}`\n", cell(&row.case));
        for t in timings {
            let summary = t.summary().unwrap_or_else(|| "one kernel only".into());
            let _ = writeln!(out, "`{}`: {}\n", cell(&t.key), cell(&summary));
            out.push_str("```\n");
            let max = t.max();
            for (kernel, us) in &t.times {
                let _ = writeln!(
                    out,
                    "{kernel:<name_width$}  {:<BAR_WIDTH$}  {} ({})",
                    crate::timing::text_bar(*us, max, BAR_WIDTH),
                    crate::timing::show_us(*us),
                    crate::timing::against_fastest(*us, &t.times)
                );
            }
            out.push_str("```\n\n");
        }
    }
}

fn fixes(out: &mut String, report: &Report, rows: &[Row]) {
    out.push_str("## Fixes\n\n");
    let with_fix: Vec<(&Row, &crate::case::Fix)> = rows
        .iter()
        .filter_map(|r| r.info.and_then(|i| i.detects.as_ref()).map(|f| (r, f)))
        .collect();
    if with_fix.is_empty() {
        out.push_str("No case declares the fix it detects (`detects:`).\n\n");
        return;
    }
    out.push_str("A fix is present where the observation its case names (`detects:`) shows the fixed behaviour.\n\n");
    header(out, &["case", "fix", "in"], report);
    for (row, fix) in with_fix {
        let mut cells = vec![
            format!("`{}`", cell(&row.case)),
            cell(&fix.commit),
            cell(&fix.version),
        ];
        cells.extend(
            row.runs
                .iter()
                .map(|r| super::fix_cell(fix, *r).to_string()),
        );
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn failures(out: &mut String, report: &Report, rows: &[Row]) {
    let mut any = false;
    for row in rows {
        for (k, run) in row.runs.iter().enumerate() {
            let Some(run) =
                run.filter(|r| matches!(r.verdict, Verdict::Fail { .. } | Verdict::Error { .. }))
            else {
                continue;
            };
            if !any {
                out.push_str("## Failures\n\n");
                any = true;
            }
            let explain = Explain {
                file: &run.file,
                verdict: &run.verdict,
            }
            .to_string();
            let _ = writeln!(
                out,
                "### `{}` on {}\n\n```\n{}\n```\n",
                cell(&row.case),
                cell(&report.kernels[k].kernel),
                explain.replace("```", "'''")
            );
        }
    }
}

/// Text made safe for one table cell: no line breaks, no column separators, no HTML.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Fix;
    use crate::report::{testdata, CaseInfo};

    #[test]
    fn matrix_cells_carry_verdict_and_key_observations() {
        let text = render(&testdata::two_kernels());
        assert!(text.contains("| case | 5.10 | 6.1 |"), "{text}");
        assert!(
            text.contains("| `r/migrate` | **FAIL** ≠ reset=14 | pass ≠ reset=0 |"),
            "{text}"
        );
        assert!(text.contains("| `b/same` | pass | pass |"), "{text}");
    }

    #[test]
    fn differences_list_only_differing_observations() {
        let text = render(&testdata::two_kernels());
        let section = text
            .split("## Differences between kernels")
            .nth(1)
            .unwrap()
            .split("## Fixes")
            .next()
            .unwrap();
        assert!(
            section.contains("| `account.c.reset` | **14** | **0** |"),
            "{section}"
        );
        assert!(
            !section.contains("bind.a") && !section.contains("b/same"),
            "{section}"
        );
    }

    #[test]
    fn timings_show_bars_and_the_ratio_between_kernels() {
        let text = render(&testdata::timed());
        let section = text.split("## Timings").nth(1).expect("a timings section");
        assert!(section.contains("### `s/timed`"), "{section}");
        assert!(
            section.contains("`time.listen.l`: 5.10 is 20× slower than 6.1"),
            "{section}"
        );
        let bar = "█".repeat(BAR_WIDTH);
        assert!(
            section.contains(&format!("5.10  {bar}  2.40 s (20×)")),
            "{section}"
        );
        let short = format!("6.1   ██{}  120.0 ms (fastest)", " ".repeat(BAR_WIDTH - 2));
        assert!(section.contains(&short), "{section}");
        assert!(section.contains("TCG"), "{section}");
        assert!(
            !render(&testdata::two_kernels()).contains("## Timings"),
            "no section when nothing was timed"
        );
    }

    #[test]
    fn fixes_table_reads_the_detecting_observation() {
        let mut report = testdata::two_kernels();
        let check = crate::case::Expectation {
            line: 1,
            obs: "account.c.reset".into(),
            kernel: None,
            matcher: crate::case::Matcher::Eq(serde_json::json!(0)),
            why: None,
        };
        let fix = Fix {
            commit: "tcp: Migrate sockets".into(),
            version: "5.14".into(),
            check,
        };
        report.info.insert(
            "r/migrate".into(),
            CaseInfo {
                summary: "s".into(),
                references: vec![],
                detects: Some(fix),
            },
        );
        let text = render(&report);
        assert!(
            text.contains("| `r/migrate` | tcp: Migrate sockets | 5.14 | absent | present |"),
            "{text}"
        );
        report.info.clear();
        assert!(render(&report).contains("No case declares"));
    }

    #[test]
    fn failures_are_explained_and_cells_escaped() {
        let text = render(&testdata::two_kernels());
        assert!(text.contains("### `r/migrate` on 5.10"), "{text}");
        assert!(
            text.contains("cases/r/migrate.yaml:7: account.c.reset"),
            "{text}"
        );
        assert_eq!(cell("a|b <i>\nc"), "a\\|b &lt;i&gt; c");
    }
}
