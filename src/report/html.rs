//! The HTML report: one self-contained page (inline CSS and SVG, no script, no
//! external resource) with the kernels, the colored case x kernel matrix whose cells
//! unfold (<details>) to every observation and the failure, charts of how the
//! load-balancing cases spread their traffic, of what timed steps cost per kernel
//! (with the ratio between kernels) and of where the run's time went, and the
//! fixes. Written with maud, which escapes every interpolated value by construction.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::charts::{self, Spread};
use super::compare::display;
use super::{reference_text, Report, Row};
use crate::case::Reference;
use crate::judge::{Explain, Verdict};
use crate::output::Tally;
use crate::resultset::results::{CaseResult, KernelResult};

/// Key observations in a folded cell before `+N`.
const CELL_KEYS: usize = 3;
/// The longest time bar, in pixels.
const TIME_WIDTH: u32 = 300;

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
table.charts td { vertical-align: bottom; text-align: center; }
table.charts th.group { font-weight: normal; text-align: left; }
svg.chart text { fill: #333; font-family: system-ui, sans-serif; }
.swatch { display: inline-block; width: .8em; height: .8em; vertical-align: middle; }
";

pub fn render(report: &Report) -> String {
    let rows = report.rows();
    page(
        "sockmatrix results",
        html! {
            (kernels(report))
            p.legend {
                "Cells: " b { "pass" } " (green) every expectation held; " b { "fail" }
                " (red) one did not; " b { "skip" } " (grey) a requirement is missing; "
                b { "error" } " (orange) the case could not run, not a verdict on the kernel. \
                A framed cell marked " span.marker { "differs" } " observed values other than \
                most kernels; under the verdict, the observations that differ between kernels \
                (values the case says vary from run to run, such as load-balancing counts, do \
                not count). Click a cell for every observation (differing ones in bold, \
                run-to-run ones in italics) and the failure."
            }
            (matrix(report, &rows))
            (spread_section(report, &rows))
            (timing_section(report, &rows))
            (time_section(report, &rows))
            (fixes(report, &rows))
        },
    )
}

/// The page around `content`: the stylesheet inline, nothing fetched.
fn page(title: &str, content: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                (content)
            }
        }
    }
    .into_string()
}

fn kernels(report: &Report) -> Markup {
    html! {
        table.kernels #kernels {
            tr {
                th { "kernel" } th { "release" } th { "package" } th { "upstream" } th { "accel" }
                th { "boot" } th { "passed" } th { "failed" } th { "skipped" } th { "could not run" }
            }
            @for k in &report.kernels {
                @let t = Tally::of(k.cases.iter().map(|c| &c.verdict));
                tr {
                    td { (k.kernel) }
                    td {
                        (k.release.as_deref().unwrap_or("unknown"))
                        @if let Some(why) = &k.could_not_run {
                            br;
                            span.muted { "could not run: " (why.lines().next().unwrap_or_default()) }
                        }
                    }
                    td { (super::package(k)) }
                    td { (super::upstream_version(k).unwrap_or_else(|| "-".into())) }
                    td { (super::accel(k).unwrap_or("-")) }
                    td.num { (k.boot.as_ref().map_or("-".into(), |b| seconds(b.total_ms))) }
                    td.num { (t.passed) }
                    td.num { (t.failed) }
                    td.num { (t.skipped) }
                    td.num { (t.errors) }
                }
            }
        }
    }
}

fn matrix(report: &Report, rows: &[Row]) -> Markup {
    html! {
        h2 { "Matrix" }
        table.matrix #matrix {
            thead {
                tr {
                    th { "case" }
                    @for k in &report.kernels {
                        th.kernel { (k.kernel) br; small { (k.release.as_deref().unwrap_or("")) } }
                    }
                }
            }
            tbody {
                @for row in rows {
                    tr data-case=(row.case) {
                        th.case scope="row" {
                            code { (row.case) }
                            @match row.info {
                                Some(info) => {
                                    p.summary { (info.summary.trim()) }
                                    @if !info.references.is_empty() {
                                        ul.refs {
                                            @for r in &info.references { li { (reference(r)) } }
                                        }
                                    }
                                }
                                None => p class="summary muted" { "(no case file for this id any more)" }
                            }
                        }
                        @for (k, run) in row.runs.iter().enumerate() {
                            (cell(row, k, *run, &report.kernels[k].kernel))
                        }
                    }
                }
            }
        }
    }
}

fn cell(row: &Row, k: usize, run: Option<&CaseResult>, kernel: &str) -> Markup {
    let Some(run) = run else {
        return html! {
            td class="cell missing" data-kernel=(kernel) title="not run on this kernel" { "-" }
        };
    };
    let class = verdict_class(&run.verdict);
    let odd = row.diff.odd(k);
    let (keys, more) = row.diff.key_observations(k, CELL_KEYS);
    // Folded, a skip or an error still says why: it is all such a cell has to say.
    let why = match &run.verdict {
        Verdict::Skip { reason: why } | Verdict::Error { message: why } => {
            Some(why.lines().next().unwrap_or_default())
        }
        _ => None,
    };
    html! {
        td class=(format!("cell {class}{}", if odd { " differs" } else { "" })) data-kernel=(kernel) {
            details {
                summary {
                    span.verdict { (class) }
                    @if odd { span.marker { "differs" } }
                    @if let Some(why) = why { span.why { (why) } }
                    @if !keys.is_empty() || more > 0 {
                        span.keys {
                            (keys.join(" "))
                            @if more > 0 { " +" (more) }
                        }
                    }
                }
                @if !matches!(run.verdict, Verdict::Pass { .. }) {
                    pre.explain { (Explain { file: &run.file, verdict: &run.verdict }.to_string()) }
                }
                div.muted { (seconds_2(run.elapsed_ms)) }
                @if run.observations.is_empty() {
                    div.muted { "no observations" }
                } @else {
                    table.obs {
                        @for (key, value) in &run.observations {
                            @let class = match row.diff.differences.iter().find(|d| &d.obs == key) {
                                Some(d) if d.volatile => Some("volatile"),
                                Some(d) if d.odd[k] => Some("differs"),
                                _ => None,
                            };
                            tr class=[class] { td { (key) } td { (display(Some(value))) } }
                        }
                    }
                }
            }
        }
    }
}

/// Per load-balancing case and socket group, a bar chart per kernel of how many
/// clients (or datagrams) each socket got; one scale per row so kernels compare.
fn spread_section(report: &Report, rows: &[Row]) -> Markup {
    let mut chart_rows: Vec<(String, String, Vec<Option<Spread>>)> = Vec::new();
    for row in rows {
        let per_kernel: Vec<Vec<Spread>> = row
            .runs
            .iter()
            .map(|r| r.map(charts::spreads).unwrap_or_default())
            .collect();
        let mut groups: Vec<String> = per_kernel
            .iter()
            .flatten()
            .map(|s| s.group.clone())
            .collect();
        groups.sort();
        groups.dedup();
        for group in groups {
            let cells = per_kernel
                .iter()
                .map(|spreads| spreads.iter().find(|s| s.group == group).cloned())
                .collect();
            chart_rows.push((row.case.clone(), group, cells));
        }
    }
    if chart_rows.is_empty() {
        return html! {};
    }
    html! {
        h2 { "Load balancing" }
        p.legend {
            "How each load-balancing case spread its clients (" code { "accepted" }
            ", per listener) or datagrams (" code { "tally" } ", per socket) over the sockets \
            of its group, per kernel. Bars of one row share a scale."
        }
        table.charts #spread {
            thead {
                tr {
                    th { "case" }
                    @for k in &report.kernels { th.kernel { (k.kernel) } }
                }
            }
            tbody {
                @for (case, group, cells) in &chart_rows {
                    @let max = cells.iter().flatten().flat_map(|s| s.bars.iter().map(|(_, v)| *v)).max().unwrap_or(0);
                    tr data-case=(case) data-group=(group) {
                        th.group { code { (case) } br; small.muted { (group) } }
                        @for (k, spread) in cells.iter().enumerate() {
                            td data-kernel=(report.kernels[k].kernel) {
                                @match spread {
                                    Some(s) => (charts::spread_chart(s, max)),
                                    None => span.muted { "-" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What the timed steps (`time: true`) cost on each kernel: per case and timing, a
/// bar per kernel on one scale, its time and its ratio to the fastest, and the
/// slowest kernel against the fastest. Nothing when no case timed a step.
fn timing_section(report: &Report, rows: &[Row]) -> Markup {
    let timed = report.timed_rows(rows);
    if timed.is_empty() {
        return html! {};
    }
    html! {
        h2 { "Timings" }
        p.legend { "Steps the cases time (" code { "time: true" } "). Note: " (crate::timing::TCG_NOTE) "." }
        table.charts.time #timings {
            @for (row, timings) in &timed {
                @for (n, t) in timings.iter().enumerate() {
                    tr data-case=(row.case) data-timing=(t.key) {
                        @if n == 0 {
                            th.group rowspan=(timings.len()) { code { (row.case) } }
                        }
                        td style="text-align:left" {
                            code { (t.key) }
                            @if let Some(summary) = t.summary() {
                                span.why.ratio { (summary) }
                            }
                        }
                        td style="text-align:left" {
                            (timing_chart(t))
                        }
                    }
                }
            }
        }
    }
}

/// One bar per kernel, the longest `TIME_WIDTH` pixels, labelled with the kernel,
/// its time and how it compares with the fastest.
fn timing_chart(t: &super::Timing) -> Markup {
    let max = t.max();
    html! {
        @for (kernel, us) in &t.times {
            @let label = format!("{} ({})", crate::timing::show_us(*us), crate::timing::against_fastest(*us, &t.times));
            div.kernel-bar data-kernel=(kernel) {
                span.muted style="display:inline-block;min-width:4em" { (kernel) }
                (charts::time_bar(&[(*us, charts::TIME_COLOR)], max, TIME_WIDTH, ""))
                // Beside the chart, not in it: a full-width bar leaves no room for it.
                span.muted { (label) }
            }
        }
    }
}

/// Where the time went: each kernel's boot and cases, then each case per kernel.
fn time_section(report: &Report, rows: &[Row]) -> Markup {
    let total = |k: &KernelResult| {
        k.boot
            .as_ref()
            .map(|b| b.total_ms)
            .unwrap_or_else(|| k.cases.iter().map(|c| c.elapsed_ms).sum())
    };
    let max_kernel = report.kernels.iter().map(total).max().unwrap_or(0);
    let max_case = rows
        .iter()
        .flat_map(|r| r.runs.iter().flatten().map(|c| c.elapsed_ms))
        .max()
        .unwrap_or(0);
    html! {
        h2 { "Time" }
        p.legend {
            span.swatch style=(format!("background:{}", charts::BOOT_COLOR)) {} " launch to agent, "
            span.swatch style=(format!("background:{}", charts::TIME_COLOR)) {} " the rest (cases, power-off)."
        }
        table.charts.time #time-kernels {
            @for k in &report.kernels {
                @let all = total(k);
                @let boot = k.boot.as_ref().and_then(|b| b.boot_to_ready_ms).unwrap_or(0).min(all);
                tr data-kernel=(k.kernel) {
                    th.group { (k.kernel) }
                    td style="text-align:left" {
                        (charts::time_bar(&[(boot, charts::BOOT_COLOR), (all - boot, charts::TIME_COLOR)], max_kernel, TIME_WIDTH, &seconds(all)))
                    }
                }
            }
        }
        h3 { "Per case" }
        table.charts.time #time-cases {
            thead {
                tr {
                    th { "case" }
                    @for k in &report.kernels { th.kernel { (k.kernel) } }
                }
            }
            tbody {
                @for row in rows {
                    tr data-case=(row.case) {
                        th.group { code { (row.case) } }
                        @for run in &row.runs {
                            td style="text-align:left" {
                                @match run {
                                    Some(c) => (charts::time_bar(&[(c.elapsed_ms, charts::TIME_COLOR)], max_case, TIME_WIDTH / 3, &seconds_2(c.elapsed_ms))),
                                    None => span.muted { "-" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn fixes(report: &Report, rows: &[Row]) -> Markup {
    let with_fix: Vec<(&Row, &crate::case::Fix)> = rows
        .iter()
        .filter_map(|r| r.info.and_then(|i| i.detects.as_ref()).map(|f| (r, f)))
        .collect();
    if with_fix.is_empty() {
        return html! {};
    }
    html! {
        h2 { "Fixes" }
        table.fixes #fixes {
            tr {
                th { "case" } th { "fix" } th { "in" }
                @for k in &report.kernels { th { (k.kernel) } }
            }
            @for (row, fix) in &with_fix {
                tr {
                    td { code { (row.case) } }
                    td { (fix.commit) }
                    td { (fix.version) }
                    @for run in &row.runs {
                        @let status = super::fix_cell(fix, *run);
                        td class=(if status == "-" { "missing" } else { status }) { (status) }
                    }
                }
            }
        }
    }
}

/// `sockmatrix history --html`: per kernel and observation, a sparkline over the
/// kept runs (numbers) and the values, oldest first.
pub fn history_page(case: &str, rows: &[crate::resultset::history::Row]) -> String {
    let mut kernels: Vec<&str> = rows.iter().map(|r| r.kernel.as_str()).collect();
    kernels.dedup();
    let keys: Vec<&String> = rows
        .first()
        .map(|r| r.values.keys().collect())
        .unwrap_or_default();
    page(
        &format!("sockmatrix history: {case}"),
        html! {
            p.legend { "Each observation over the kept runs of each kernel, oldest first; a red dot where a value changed." }
            table.charts #history {
                thead { tr { th { "kernel" } th { "observation" } th { "over runs" } th { "values" } } }
                tbody {
                    @for kernel in &kernels {
                        @let runs: Vec<&crate::resultset::history::Row> = rows.iter().filter(|r| r.kernel == *kernel).collect();
                        @for key in &keys {
                            @let values: Vec<Option<serde_json::Value>> = runs.iter().map(|r| r.values.get(*key).cloned().flatten()).collect();
                            tr data-kernel=(kernel) data-obs=(key) {
                                td { (kernel) }
                                td { code { (key) } }
                                td { (charts::sparkline(&values)) }
                                td style="text-align:left" {
                                    (values.iter().map(|v| display(v.as_ref())).collect::<Vec<_>>().join(" "))
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn seconds_2(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
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
fn reference(r: &Reference) -> Markup {
    match r {
        Reference::Article { url } if url.starts_with("https://") || url.starts_with("http://") => {
            html! { a href=(url) { (url) } }
        }
        other => html! { (reference_text(other)) },
    }
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
    fn timed_steps_get_bars_per_kernel_and_the_ratio() {
        let html = render(&testdata::timed());
        let section = html
            .split("<h2>Timings</h2>")
            .nth(1)
            .expect("a timings section");
        assert!(
            section.contains("<span class=\"why ratio\">5.10 is 20× slower than 6.1</span>"),
            "{section}"
        );
        // One scale per timing: 5.10's bar is the full width, 6.1's a twentieth.
        assert!(
            section.contains(&format!(
                "data-value=\"2400000\" x=\"0\" y=\"1\" width=\"{TIME_WIDTH}\""
            )),
            "{section}"
        );
        assert!(
            section.contains("data-value=\"120000\" x=\"0\" y=\"1\" width=\"15\""),
            "{section}"
        );
        assert!(section.contains("2.40 s (20×)") && section.contains("120.0 ms (fastest)"));
        assert!(section.contains("TCG"), "{section}");
        assert!(
            !rendered().contains("<h2>Timings</h2>"),
            "nothing timed, no section"
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
