//! Small inline SVG charts for the HTML reports (no script, no external resource):
//! vertical bars for how a load-balancing case spread clients or datagrams over its
//! sockets, horizontal bars for time, a sparkline for an observation over runs.
//! Coordinates are whole pixels and edges crisp, so a bar's painted height is its value.

use maud::{html, Markup};
use serde_json::Value;

use crate::resultset::results::CaseResult;

/// Bar colors; tests/report_html.rs looks for the spread one in the screenshot.
pub const SPREAD_COLOR: &str = "#3f51b5";
pub const TIME_COLOR: &str = "#00897b";
pub const BOOT_COLOR: &str = "#90a4ae";

/// The tallest spread bar, in pixels.
pub const SPREAD_HEIGHT: u32 = 60;
const BAR_WIDTH: u32 = 22;
const BAR_GAP: u32 = 8;

/// One spread: a group of sockets (`account.c`: clients accepted per listener;
/// `tally.d`: datagrams per socket) and each socket's count.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    pub group: String,
    pub bars: Vec<(String, u64)>,
}

/// The spreads a case observed: `<group>.accepted.<listener>` and
/// `tally.<group>.<socket>` counts, for groups of two sockets or more.
pub fn spreads(run: &CaseResult) -> Vec<Spread> {
    let mut out: Vec<Spread> = Vec::new();
    for (key, value) in &run.observations {
        let Some(n) = value.as_u64() else { continue };
        let Some((group, member)) = spread_key(key) else {
            continue;
        };
        match out.iter_mut().find(|s| s.group == group) {
            Some(s) => s.bars.push((member, n)),
            None => out.push(Spread {
                group,
                bars: vec![(member, n)],
            }),
        }
    }
    out.retain(|s| s.bars.len() >= 2);
    out
}

fn spread_key(key: &str) -> Option<(String, String)> {
    if let Some((group, member)) = key.rsplit_once(".accepted.") {
        if !member.contains('.') {
            return Some((group.to_string(), member.to_string()));
        }
    }
    let rest = key.strip_prefix("tally.")?;
    let (group, member) = rest.split_once('.')?;
    if member.contains('.') || member == "fairness" || member == "lost" {
        return None;
    }
    Some((format!("tally.{group}"), member.to_string()))
}

/// Vertical bars, one per socket; `max` is shared by the kernels of one row so that
/// their charts compare.
pub fn spread_chart(spread: &Spread, max: u64) -> Markup {
    let n = spread.bars.len() as u32;
    let width = n * (BAR_WIDTH + BAR_GAP) + BAR_GAP;
    let top = 14;
    let height = top + SPREAD_HEIGHT + 16;
    let total: u64 = spread.bars.iter().map(|(_, v)| v).sum();
    html! {
        svg class="chart spread" xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) shape-rendering="crispEdges"
            role="img" aria-label=(format!("{}: {total} over {n} sockets", spread.group)) {
            @for (i, (member, value)) in spread.bars.iter().enumerate() {
                @let x = BAR_GAP + i as u32 * (BAR_WIDTH + BAR_GAP);
                @let h = scaled(*value, max, SPREAD_HEIGHT);
                rect class="bar" data-value=(value) x=(x) y=(top + SPREAD_HEIGHT - h)
                    width=(BAR_WIDTH) height=(h) fill=(SPREAD_COLOR) {
                    title { (member) ": " (value) }
                }
                text x=(x + BAR_WIDTH / 2) y=(top + SPREAD_HEIGHT - h - 3) text-anchor="middle"
                    font-size="10" { (value) }
                text x=(x + BAR_WIDTH / 2) y=(height - 3) text-anchor="middle" font-size="10" {
                    (member)
                }
            }
        }
    }
}

/// `value` of `max` as whole pixels of `full`.
pub fn scaled(value: u64, max: u64, full: u32) -> u32 {
    if max == 0 {
        return 0;
    }
    ((value as f64 / max as f64) * full as f64).round() as u32
}

/// One horizontal bar (two parts: boot, then the rest) with its label.
pub fn time_bar(parts: &[(u64, &str)], max_ms: u64, width: u32, label: &str) -> Markup {
    let height = 14;
    let mut x = 0;
    let mut bars = Vec::new();
    for (ms, color) in parts {
        let w = scaled(*ms, max_ms, width);
        bars.push((x, w, *ms, *color));
        x += w;
    }
    html! {
        svg class="chart time" xmlns="http://www.w3.org/2000/svg" width=(width + 70) height=(height)
            shape-rendering="crispEdges" {
            @for (x, w, ms, color) in &bars {
                rect class="bar" data-value=(ms) x=(x) y="1" width=(w) height=(height - 2) fill=(color) {}
            }
            text x=(x + 4) y=(height - 3) font-size="10" { (label) }
        }
    }
}

/// A line through an observation's numeric values over runs, oldest first; a dot
/// where the value changed.
pub fn sparkline(values: &[Option<Value>]) -> Markup {
    let (width, height, pad) = (160u32, 28u32, 3u32);
    let numbers: Vec<Option<f64>> = values
        .iter()
        .map(|v| v.as_ref().and_then(Value::as_f64))
        .collect();
    let known: Vec<f64> = numbers.iter().flatten().copied().collect();
    let (lo, hi) = known
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let step = if values.len() > 1 {
        (width - 2 * pad) as f64 / (values.len() - 1) as f64
    } else {
        0.0
    };
    let y = |v: f64| {
        let span = if hi > lo { hi - lo } else { 1.0 };
        let mid = if hi > lo { 0.0 } else { 0.5 };
        pad as f64 + (1.0 - ((v - lo) / span + mid).min(1.0)) * (height - 2 * pad) as f64
    };
    let points: Vec<String> = numbers
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", pad as f64 + i as f64 * step, y(v))))
        .collect();
    html! {
        svg class="chart sparkline" xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            role="img" aria-label=(format!("{} runs", values.len())) {
            polyline points=(points.join(" ")) fill="none" stroke=(SPREAD_COLOR) stroke-width="1.5" {}
            @for (i, v) in numbers.iter().enumerate() {
                @if let Some(v) = v {
                    @if i > 0 && numbers[i - 1] != Some(*v) {
                        circle class="changed" cx=(format!("{:.1}", pad as f64 + i as f64 * step)) cy=(format!("{:.1}", y(*v))) r="2.5" fill="#c62828" {
                            title { "run " (i + 1) ": " (v) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata;
    use serde_json::json;

    #[test]
    fn spreads_group_listeners_and_sockets() {
        let run = testdata::case(
            "r/d",
            testdata::pass(),
            json!({"account.c.accepted.l1": 104, "account.c.accepted.l2": 96,
                   "account.c.total": 200, "tally.d.u1": 3, "tally.d.u2": 5,
                   "tally.d.fairness": 0.9, "tally.d.lost": 0, "tally.x.only": 1}),
        );
        assert_eq!(
            spreads(&run),
            vec![
                Spread {
                    group: "account.c".into(),
                    bars: vec![("l1".into(), 104), ("l2".into(), 96)]
                },
                Spread {
                    group: "tally.d".into(),
                    bars: vec![("u1".into(), 3), ("u2".into(), 5)]
                },
            ]
        );
    }

    #[test]
    fn bar_heights_are_their_values_scaled() {
        let spread = Spread {
            group: "account.c".into(),
            bars: vec![("a".into(), 30), ("b".into(), 10)],
        };
        let svg = spread_chart(&spread, 30).into_string();
        assert!(
            svg.contains("data-value=\"30\" x=\"8\" y=\"14\" width=\"22\" height=\"60\""),
            "{svg}"
        );
        assert!(
            svg.contains("data-value=\"10\" x=\"38\" y=\"54\" width=\"22\" height=\"20\""),
            "{svg}"
        );
        assert_eq!(scaled(1, 3, 60), 20);
        assert_eq!(scaled(5, 0, 60), 0);
    }

    #[test]
    fn a_sparkline_marks_changes() {
        let svg = sparkline(&[Some(json!(1)), Some(json!(1)), Some(json!(4)), None]).into_string();
        assert_eq!(svg.matches("<circle").count(), 1, "{svg}");
        assert!(
            svg.contains("<polyline points=\"3.0,25.0 54.3,25.0 105.7,3.0\""),
            "{svg}"
        );
    }
}
