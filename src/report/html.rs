//! The HTML report: one self-contained page (inline CSS, no script, no external
//! resource) with the kernels, the colored case x kernel matrix whose cells unfold
//! (<details>) to every observation and the failure, and the fixes.

use std::fmt::Write;

use super::compare::display;
use super::{reference_text, Report, Row};
use crate::case::Reference;
use crate::judge::{Explain, Verdict};
use crate::output::Tally;
use crate::results::CaseResult;

/// Key observations in a folded cell before `+N`.
const CELL_KEYS: usize = 3;

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; margin: 0 0 .5em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
table.kernels td.num { text-align: right; }
table.matrix th.kernel { text-align: center; min-width: 8em; }
table.matrix th.kernel small, .muted { color: #666; font-weight: normal; }
th.case { font-weight: normal; max-width: 34em; }
th.case code { font-weight: bold; }
p.summary { margin: .2em 0; }
ul.refs { margin: .2em 0; padding-left: 1.2em; font-size: .9em; color: #444; }
td.cell { min-width: 8em; }
td.pass { background: #c8ecc9; }
td.fail { background: #f5b7b1; }
td.skip { background: #e0e0e0; }
td.error { background: #fbc98e; }
td.missing { background: #fff; color: #999; text-align: center; }
td.differs { border: 3px solid #1a237e; }
.marker { display: inline-block; background: #1a237e; color: #fff; font-size: .75em; padding: 0 .4em; border-radius: 3px; margin-left: .3em; }
.verdict { font-weight: bold; text-transform: uppercase; }
.why { display: block; font-size: .85em; color: #444; }
.keys { display: block; font: .85em ui-monospace, monospace; }
summary { cursor: pointer; }
details[open] { min-width: 22em; }
table.obs { margin-top: .4em; font: .85em ui-monospace, monospace; background: #fff; }
table.obs td { padding: 1px 6px; }
table.obs tr.differs td { font-weight: bold; background: #e8eaf6; }
table.obs tr.volatile td { font-style: italic; }
pre.explain { white-space: pre-wrap; background: #fff; border: 1px solid #ccc; padding: 4px; margin: .4em 0; font-size: .85em; }
td.present { background: #c8ecc9; } td.absent { background: #f5b7b1; } td.unknown { background: #e0e0e0; }
";

pub fn render(report: &Report) -> String {
    let rows = report.rows();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>sockmatrix results</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>sockmatrix results</h1>\n"
    );
    kernels(&mut out, report);
    out.push_str(
        "<p class=\"legend\">Cells: <b>pass</b> (green) every expectation held; <b>fail</b> (red) one did not; \
         <b>skip</b> (grey) a requirement is missing; <b>error</b> (orange) the case could not run, not a verdict \
         on the kernel. A framed cell marked <span class=\"marker\">differs</span> observed values other than most \
         kernels; under the verdict, the observations that differ between kernels (values the case says vary \
         from run to run, such as load-balancing counts, do not count). Click a cell for every observation \
         (differing ones in bold, run-to-run ones in italics) and the failure.</p>\n",
    );
    matrix(&mut out, report, &rows);
    fixes(&mut out, report, &rows);
    out.push_str("</body>\n</html>\n");
    out
}

fn kernels(out: &mut String, report: &Report) {
    out.push_str("<table class=\"kernels\" id=\"kernels\">\n<tr><th>kernel</th><th>release</th><th>package</th><th>accel</th><th>boot</th><th>passed</th><th>failed</th><th>skipped</th><th>could not run</th></tr>\n");
    for k in &report.kernels {
        let t = Tally::of(k.cases.iter().map(|c| &c.verdict));
        let (accel, boot) = match &k.boot {
            Some(b) => (
                b.accel.clone(),
                format!("{:.1} s", b.total_ms as f64 / 1000.0),
            ),
            None => ("-".into(), "-".into()),
        };
        let mut release = esc(k.release.as_deref().unwrap_or("unknown"));
        if let Some(why) = &k.could_not_run {
            let _ = write!(
                release,
                "<br><span class=\"muted\">could not run: {}</span>",
                esc(why.lines().next().unwrap_or_default())
            );
        }
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{release}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&k.kernel),
            esc(k.package_version.as_deref().unwrap_or("-")),
            esc(&accel),
            esc(&boot),
            t.passed,
            t.failed,
            t.skipped,
            t.errors
        );
    }
    out.push_str("</table>\n");
}

fn matrix(out: &mut String, report: &Report, rows: &[Row]) {
    out.push_str(
        "<h2>Matrix</h2>\n<table class=\"matrix\" id=\"matrix\">\n<thead><tr><th>case</th>",
    );
    for k in &report.kernels {
        let _ = write!(
            out,
            "<th class=\"kernel\">{}<br><small>{}</small></th>",
            esc(&k.kernel),
            esc(k.release.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        let _ = write!(
            out,
            "<tr data-case=\"{}\">\n<th class=\"case\" scope=\"row\"><code>{}</code>",
            esc(&row.case),
            esc(&row.case)
        );
        match row.info {
            Some(info) => {
                let _ = write!(out, "<p class=\"summary\">{}</p>", esc(info.summary.trim()));
                if !info.references.is_empty() {
                    out.push_str("<ul class=\"refs\">");
                    for r in &info.references {
                        let _ = write!(out, "<li>{}</li>", reference(r));
                    }
                    out.push_str("</ul>");
                }
            }
            None => {
                out.push_str("<p class=\"summary muted\">(no case file for this id any more)</p>")
            }
        }
        out.push_str("</th>\n");
        for (k, run) in row.runs.iter().enumerate() {
            cell(out, row, k, *run, &report.kernels[k].kernel);
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

fn cell(out: &mut String, row: &Row, k: usize, run: Option<&CaseResult>, kernel: &str) {
    let Some(run) = run else {
        let _ = writeln!(
            out,
            "<td class=\"cell missing\" data-kernel=\"{}\" title=\"not run on this kernel\">-</td>",
            esc(kernel)
        );
        return;
    };
    let class = verdict_class(&run.verdict);
    let odd = row.diff.odd(k);
    let _ = write!(
        out,
        "<td class=\"cell {class}{}\" data-kernel=\"{}\"><details><summary><span class=\"verdict\">{class}</span>",
        if odd { " differs" } else { "" },
        esc(kernel)
    );
    if odd {
        out.push_str("<span class=\"marker\">differs</span>");
    }
    // Folded, a skip or an error still says why: it is all such a cell has to say.
    if let Verdict::Skip { reason: why } | Verdict::Error { message: why } = &run.verdict {
        let _ = write!(
            out,
            "<span class=\"why\">{}</span>",
            esc(why.lines().next().unwrap_or_default())
        );
    }
    let (keys, more) = row.diff.key_observations(k, CELL_KEYS);
    if !keys.is_empty() || more > 0 {
        let more = if more > 0 {
            format!(" +{more}")
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<span class=\"keys\">{}{more}</span>",
            esc(&keys.join(" "))
        );
    }
    out.push_str("</summary>\n");
    if !matches!(run.verdict, Verdict::Pass { .. }) {
        let _ = write!(
            out,
            "<pre class=\"explain\">{}</pre>",
            esc(&Explain {
                file: &run.file,
                verdict: &run.verdict
            }
            .to_string())
        );
    }
    let _ = write!(
        out,
        "<div class=\"muted\">{:.2} s</div>",
        run.elapsed_ms as f64 / 1000.0
    );
    if run.observations.is_empty() {
        out.push_str("<div class=\"muted\">no observations</div>");
    } else {
        out.push_str("<table class=\"obs\">");
        for (key, value) in &run.observations {
            let class = match row.diff.differences.iter().find(|d| &d.obs == key) {
                Some(d) if d.volatile => " class=\"volatile\"",
                Some(d) if d.odd[k] => " class=\"differs\"",
                _ => "",
            };
            let _ = write!(
                out,
                "<tr{class}><td>{}</td><td>{}</td></tr>",
                esc(key),
                esc(&display(Some(value)))
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</details></td>\n");
}

fn fixes(out: &mut String, report: &Report, rows: &[Row]) {
    let with_fix: Vec<(&Row, &crate::case::Fix)> = rows
        .iter()
        .filter_map(|r| r.info.and_then(|i| i.detects.as_ref()).map(|f| (r, f)))
        .collect();
    if with_fix.is_empty() {
        return;
    }
    out.push_str("<h2>Fixes</h2>\n<table class=\"fixes\" id=\"fixes\">\n<tr><th>case</th><th>fix</th><th>in</th>");
    for k in &report.kernels {
        let _ = write!(out, "<th>{}</th>", esc(&k.kernel));
    }
    out.push_str("</tr>\n");
    for (row, fix) in with_fix {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td>",
            esc(&row.case),
            esc(&fix.commit),
            esc(&fix.version)
        );
        for run in &row.runs {
            let status = super::fix_cell(fix, *run);
            let class = if status == "-" { "missing" } else { status };
            let _ = write!(out, "<td class=\"{class}\">{status}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn verdict_class(v: &Verdict) -> &'static str {
    match v {
        Verdict::Pass { .. } => "pass",
        Verdict::Fail { .. } => "fail",
        Verdict::Skip { .. } => "skip",
        Verdict::Error { .. } => "error",
    }
}

/// Articles become links, but only http(s) ones: a case file must not inject a
/// `javascript:` URL into the page.
fn reference(r: &Reference) -> String {
    match r {
        Reference::Article { url } if url.starts_with("https://") || url.starts_with("http://") => {
            format!("<a href=\"{}\">{}</a>", esc(url), esc(url))
        }
        other => esc(&reference_text(other)),
    }
}

/// Escapes text for element content and quoted attribute values alike.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{testdata, CaseInfo};

    fn rendered() -> String {
        let mut report = testdata::two_kernels();
        let references = vec![
            Reference::Article {
                url: "javascript:alert(1)".into(),
            },
            Reference::Article {
                url: "https://lwn.net/Articles/542629/".into(),
            },
        ];
        report.info.insert(
            "r/migrate".into(),
            CaseInfo {
                summary: "Closing <b> resets".into(),
                references,
                detects: None,
            },
        );
        render(&report)
    }

    #[test]
    fn cells_are_colored_and_differing_ones_marked() {
        let html = rendered();
        assert!(html.contains("<td class=\"cell fail differs\" data-kernel=\"5.10\"><details><summary><span class=\"verdict\">fail</span><span class=\"marker\">differs</span><span class=\"keys\">reset=14</span>"), "{html}");
        assert!(html.contains("<td class=\"cell pass\" data-kernel=\"6.1\"><details><summary><span class=\"verdict\">pass</span></summary>"), "{html}");
        assert!(
            html.contains("<tr class=\"differs\"><td>account.c.reset</td><td>14</td></tr>"),
            "{html}"
        );
    }

    #[test]
    fn text_is_escaped_and_only_web_links_are_links() {
        let html = rendered();
        assert!(html.contains("Closing &lt;b&gt; resets"), "{html}");
        assert!(
            html.contains("why: a &lt;b&gt; &amp; &quot;c&quot;"),
            "{html}"
        );
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(
            html.contains("<a href=\"https://lwn.net/Articles/542629/\">"),
            "{html}"
        );
        assert!(
            html.contains("(no case file for this id any more)"),
            "b/same has no case file: {html}"
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let html = rendered();
        for needle in ["<script", "<link", "src=", "@import", "url("] {
            assert!(!html.contains(needle), "{needle} in page");
        }
    }
}
