//! Timing observations (`time.<key>`: microseconds of a monotonic clock in the
//! guest, see exec/clock.rs). They are volatile by nature: never compared exactly, shown as the ratio
//! between kernels ("5.10 is 19× slower than 6.12 here"), which survives TCG's
//! inflation of absolute times far better than the numbers themselves.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::resultset::results::CaseResult;

/// What every place that shows times says once.
pub const TCG_NOTE: &str = "times are microseconds of the guest's monotonic clock (the TSC where \
    the kernel's own clock ticks in 4 ms steps); \
    under TCG (an emulated CPU) absolute times are inflated and noisy, so compare kernels \
    by their ratio within one run, not by the numbers";

pub fn is_timing(key: &str) -> bool {
    key.starts_with("time.")
}

/// Per timing key of one case, each kernel's microseconds (kernels in the order given;
/// a kernel that did not observe the key is left out).
pub fn per_kernel<'a>(
    runs: impl IntoIterator<Item = (&'a str, Option<&'a CaseResult>)>,
) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut out: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for (kernel, run) in runs {
        let Some(run) = run else { continue };
        for (key, value) in &run.observations {
            if let (true, Some(us)) = (is_timing(key), value.as_u64()) {
                out.entry(key.clone())
                    .or_default()
                    .push((kernel.to_string(), us));
            }
        }
    }
    out
}

/// `19×`, `1.4×`, `240×`: two significant figures at most, as a ratio of noisy times
/// deserves.
pub fn show_ratio(ratio: f64) -> String {
    if ratio >= 10.0 {
        format!("{:.0}×", ratio)
    } else {
        format!("{:.1}×", ratio)
    }
}

/// How much slower `slow` is than `fast` (both microseconds; a 0 counts as 1 µs).
pub fn ratio(slow: u64, fast: u64) -> f64 {
    slow.max(1) as f64 / fast.max(1) as f64
}

/// The slowest kernel against the fastest: "5.10 is 19× slower than 6.12". None with
/// fewer than two kernels.
pub fn slowest_vs_fastest(times: &[(String, u64)]) -> Option<String> {
    if times.len() < 2 {
        return None;
    }
    let slow = times.iter().max_by_key(|(_, us)| *us)?;
    let fast = times.iter().min_by_key(|(_, us)| *us)?;
    let r = ratio(slow.1, fast.1);
    if r < 1.05 {
        return Some("all kernels took about as long".into());
    }
    Some(format!(
        "{} is {} slower than {}",
        slow.0,
        show_ratio(r),
        fast.0
    ))
}

/// One timing from A to B: "B is 19× faster" / "B is 2.0× slower" / "about the same".
pub fn change(a: &Value, b: &Value, b_name: &str) -> Option<String> {
    let (a, b) = (a.as_u64()?, b.as_u64()?);
    let text = if ratio(a, b) >= 1.05 {
        format!("{b_name} is {} faster", show_ratio(ratio(a, b)))
    } else if ratio(b, a) >= 1.05 {
        format!("{b_name} is {} slower", show_ratio(ratio(b, a)))
    } else {
        "about the same".into()
    };
    Some(text)
}

/// How a kernel's time compares with the fastest kernel's: `fastest`, `19×`.
pub fn against_fastest(us: u64, times: &[(String, u64)]) -> String {
    let fastest = times.iter().map(|(_, t)| *t).min().unwrap_or(us);
    if us == fastest {
        "fastest".into()
    } else {
        show_ratio(ratio(us, fastest))
    }
}

/// A bar of `us` against `max` in `width` characters, in eighths of a block so that
/// small differences still show; a time above 0 gets at least a sliver.
pub fn text_bar(us: u64, max: u64, width: usize) -> String {
    const EIGHTHS: [char; 8] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    if max == 0 || us == 0 {
        return String::new();
    }
    let eighths = ((us as f64 / max as f64) * (width * 8) as f64)
        .round()
        .max(1.0) as usize;
    let mut bar = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        bar.push(EIGHTHS[eighths % 8 - 1]);
    }
    bar
}

/// Microseconds as a person reads them: `850 µs`, `12.3 ms`, `2.39 s`.
pub fn show_us(us: u64) -> String {
    match us {
        0..=9_999 => format!("{us} µs"),
        10_000..=999_999 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_slowest_kernel_against_the_fastest() {
        let times = vec![
            ("5.10".to_string(), 2_392_149),
            ("6.12".to_string(), 124_007),
            ("7.2".to_string(), 130_000),
        ];
        assert_eq!(
            slowest_vs_fastest(&times).unwrap(),
            "5.10 is 19× slower than 6.12"
        );
        assert_eq!(slowest_vs_fastest(&times[..1]), None);
        let even = vec![("a".to_string(), 100), ("b".to_string(), 102)];
        assert_eq!(
            slowest_vs_fastest(&even).unwrap(),
            "all kernels took about as long"
        );
        assert_eq!(show_ratio(240.4), "240×");
        assert_eq!(show_ratio(1.44), "1.4×");
    }

    #[test]
    fn bars_and_ratios_against_the_fastest() {
        let times = vec![
            ("5.10".to_string(), 2_400_000),
            ("6.12".to_string(), 120_000),
        ];
        assert_eq!(against_fastest(2_400_000, &times), "20×");
        assert_eq!(against_fastest(120_000, &times), "fastest");
        assert_eq!(
            against_fastest(121_000, &times),
            "1.0×",
            "only the fastest is the fastest"
        );
        assert_eq!(text_bar(2_400_000, 2_400_000, 10), "██████████");
        assert_eq!(text_bar(120_000, 2_400_000, 10), "▌");
        assert_eq!(text_bar(1, 2_400_000, 10), "▏", "a sliver, not nothing");
        assert_eq!(text_bar(0, 2_400_000, 10), "");
        assert_eq!(text_bar(1_500, 2_000, 2), "█▌");
    }

    #[test]
    fn a_change_says_which_way() {
        assert_eq!(
            change(&json!(2_392_149), &json!(124_007), "6.12").unwrap(),
            "6.12 is 19× faster"
        );
        assert_eq!(
            change(&json!(100), &json!(250), "B").unwrap(),
            "B is 2.5× slower"
        );
        assert_eq!(
            change(&json!(100), &json!(101), "B").unwrap(),
            "about the same"
        );
        assert_eq!(change(&json!("ok"), &json!(1), "B"), None);
        assert_eq!(show_us(2_392_149), "2.39 s");
        assert_eq!(show_us(124_007), "124.0 ms");
        assert_eq!(show_us(850), "850 µs");
    }
}
