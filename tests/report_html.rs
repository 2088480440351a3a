//! The HTML report as a browser sees it: headless Chromium parses the page (--dump-dom)
//! and paints it (--screenshot); the DOM must hold the colored matrix and the charts,
//! the screenshot the cell colors and bars as tall as their values. Needs
//! /usr/bin/chromium (`bash ci/setup.sh`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sockmatrix::judge::{Mismatch, Verdict};
use sockmatrix::observe::Outcome;
use sockmatrix::report::{charts, html, Report};
use sockmatrix::resultset::results::{CaseResult, KernelResult};

const CHROMIUM: &str = "/usr/bin/chromium";

fn case(id: &str, verdict: Verdict, obs: serde_json::Value) -> CaseResult {
    CaseResult {
        case: id.into(),
        file: format!("cases/{id}.yaml").into(),
        outcome: Outcome::Ran,
        observations: obs.as_object().unwrap().clone().into_iter().collect(),
        elapsed_ms: 120,
        verdict,
    }
}

fn kernel(id: &str, release: &str, cases: Vec<CaseResult>) -> KernelResult {
    KernelResult {
        kernel: id.into(),
        release: Some(release.into()),
        uname_version: None,
        package_version: None,
        built: None,
        could_not_run: None,
        boot: None,
        cases,
        finished_at: 0,
    }
}

/// Two kernels: the migrate case fails on 5.10 and differs there; one case errors,
/// one is skipped, one case file carries a summary with markup in it.
fn report() -> Report {
    let fail = Verdict::Fail {
        mismatches: vec![Mismatch {
            line: 40,
            obs: "account.c.reset".into(),
            expected: "0".into(),
            observed: Some(json!(14)),
            why: Some("no migration <before 5.14>".into()),
        }],
    };
    let mut skipped = case(
        "dualstack/v6",
        Verdict::Skip {
            reason: "needs ipv6".into(),
        },
        json!({}),
    );
    skipped.outcome = Outcome::Skipped {
        reason: "needs ipv6".into(),
    };
    let mut errored = case(
        "dualstack/v6",
        Verdict::Error {
            message: "guest died".into(),
        },
        json!({}),
    );
    errored.outcome = Outcome::Error {
        message: "guest died".into(),
        line: None,
    };
    let k510 = kernel(
        "5.10",
        "5.10.0-46-cloud-amd64",
        vec![
            case(
                "reuseport/migrate",
                fail,
                json!({"account.c.reset": 14, "bind.a": "ok"}),
            ),
            errored,
            spread(),
        ],
    );
    let k61 = kernel(
        "6.1",
        "6.1.0-56-cloud-amd64",
        vec![
            case(
                "reuseport/migrate",
                Verdict::Pass { checked: 1 },
                json!({"account.c.reset": 0, "bind.a": "ok"}),
            ),
            skipped,
            spread(),
        ],
    );
    let text = "summary: Closing a <listener> migrates its queue.\nreferences:\n  - article: https://lwn.net/Articles/542629/\nsteps:\n  - socket: a\n";
    let migrate = sockmatrix::case::load_str(
        "reuseport/migrate",
        Path::new("cases/reuseport/migrate.yaml"),
        text,
    )
    .unwrap();
    Report::new(vec![k61, k510], &[migrate])
}

/// A load-balancing case that spread 30 and 10 clients over two listeners (the same
/// on both kernels, so it is no difference).
fn spread() -> CaseResult {
    case(
        "reuseport/spread",
        Verdict::Pass { checked: 0 },
        json!({"account.c.accepted.a": 30, "account.c.accepted.b": 10, "account.c.total": 40}),
    )
}

/// Runs Chromium with `args`, killing it if it hangs; returns its stdout.
fn chromium(profile: &Path, args: &[String]) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run `bash ci/setup.sh` (it installs chromium) and test again"
    );
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium {args:?}: {status}");
    std::fs::read_to_string(out.path()).unwrap()
}

fn write_page(dir: &Path) -> PathBuf {
    let page = dir.join("matrix.html");
    std::fs::write(&page, html::render(&report())).unwrap();
    page
}

#[test]
fn chromium_parses_the_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(dir.path());
    let dom = chromium(
        &dir.path().join("profile"),
        &["--dump-dom".into(), format!("file://{}", page.display())],
    );
    assert!(
        dom.contains("<table class=\"matrix\" id=\"matrix\">"),
        "{dom}"
    );
    let cells = |class: &str| dom.matches(&format!("<td class=\"{class}\"")).count();
    assert_eq!(cells("cell fail differs"), 1, "{dom}");
    assert_eq!(
        cells("cell pass differs"),
        1,
        "two kernels, two values: both differ"
    );
    assert_eq!(cells("cell error"), 1, "{dom}");
    assert_eq!(cells("cell skip"), 1, "{dom}");
    assert_eq!(
        dom.matches("<details>").count(),
        6,
        "every run cell unfolds"
    );
    // The load-balancing charts: one per kernel, a bar per listener.
    assert_eq!(
        dom.matches("<svg class=\"chart spread\"").count(),
        2,
        "{dom}"
    );
    assert_eq!(
        dom.matches("<rect class=\"bar\" data-value=\"30\"").count(),
        2,
        "{dom}"
    );
    assert!(
        dom.contains("<span class=\"marker\">differs</span><span class=\"keys\">reset=14</span>"),
        "{dom}"
    );
    // Escaped text comes back as text, not as elements.
    assert!(
        dom.contains("Closing a &lt;listener&gt; migrates its queue."),
        "{dom}"
    );
    assert!(dom.contains("no migration &lt;before 5.14&gt;"), "{dom}");
    assert!(!dom.contains("<listener>"), "{dom}");
    assert!(
        dom.contains("5.10.0-46-cloud-amd64") && dom.contains("6.1.0-56-cloud-amd64"),
        "{dom}"
    );
}

#[test]
fn chromium_paints_the_cell_colors() {
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(dir.path());
    let png = dir.path().join("shot.png");
    chromium(
        &dir.path().join("profile"),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1400,900".into(),
            format!("file://{}", page.display()),
        ],
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(
        bytes.len() > 10_000,
        "a {} byte screenshot is blank",
        bytes.len()
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1400, 900));
    let step = frame.color_type.samples();
    assert!(step >= 3, "{:?}", frame.color_type);
    let has = |rgb: [u8; 3]| {
        pixels[..frame.buffer_size()]
            .chunks(step)
            .filter(|p| p[..3] == rgb)
            .count()
            > 200
    };
    // The stylesheet's pass, fail, skip and error backgrounds.
    for (name, rgb) in [
        ("pass", [0xc8, 0xec, 0xc9]),
        ("fail", [0xf5, 0xb7, 0xb1]),
        ("skip", [0xe0, 0xe0, 0xe0]),
        ("error", [0xfb, 0xc9, 0x8e]),
    ] {
        assert!(
            has(rgb),
            "no {name} cell color {rgb:02x?} in the screenshot"
        );
    }
}

/// Screenshot pixels: each spread bar is painted as tall as its value says (the row's
/// largest value is the full SPREAD_HEIGHT), measured as runs of the bar color.
#[test]
fn chromium_paints_bars_as_tall_as_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(dir.path());
    let png = dir.path().join("shot.png");
    chromium(
        &dir.path().join("profile"),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1400,1600".into(),
            "--force-device-scale-factor=1".into(),
            format!("file://{}", page.display()),
        ],
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let step = frame.color_type.samples();
    let (w, h) = (frame.width as usize, frame.height as usize);
    let color = hex(charts::SPREAD_COLOR);
    let is_bar = |x: usize, y: usize| {
        let at = (y * w + x) * step;
        pixels[at..at + 3] == color
    };
    // Per column, how many bar-colored pixels; adjacent columns form one bar.
    let columns: Vec<usize> = (0..w)
        .map(|x| (0..h).filter(|&y| is_bar(x, y)).count())
        .collect();
    let mut bars: Vec<usize> = Vec::new();
    let mut x = 0;
    while x < w {
        if columns[x] == 0 {
            x += 1;
            continue;
        }
        let start = x;
        while x < w && columns[x] > 0 {
            x += 1;
        }
        bars.push(*columns[start..x].iter().max().unwrap());
    }
    let full = charts::SPREAD_HEIGHT as usize;
    // 5.10 then 6.1, each `a` (30, the row's largest) then `b` (10).
    let want = [full, full / 3, full, full / 3];
    assert_eq!(bars.len(), want.len(), "bars painted: {bars:?}");
    for (got, want) in bars.iter().zip(want) {
        assert!(
            got.abs_diff(want) <= 1,
            "bar heights {bars:?}, want {want:?}"
        );
    }
}

fn hex(color: &str) -> [u8; 3] {
    let n = u32::from_str_radix(color.trim_start_matches('#'), 16).unwrap();
    [(n >> 16) as u8, (n >> 8) as u8, n as u8]
}

/// The committed baseline (real runs of every default kernel) in Chromium: the
/// load-balancing row of reuseport/distribution_tcp has a chart per kernel whose bars
/// carry the listeners' accepted counts from the result files.
#[test]
fn chromium_shows_the_charts_of_a_real_result_set() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kernels = sockmatrix::resultset::results::load_set(&root.join("results/baseline")).unwrap();
    let (cases, _) = sockmatrix::report::load_cases_leniently(&[root.join("cases")]);
    let want: Vec<Vec<u64>> = kernels
        .iter()
        .filter_map(|k| {
            k.cases
                .iter()
                .find(|c| c.case == "reuseport/distribution_tcp")
        })
        .map(|c| {
            (1..=4)
                .map(|l| {
                    c.observations[&format!("account.c.accepted.l{l}")]
                        .as_u64()
                        .unwrap()
                })
                .collect()
        })
        .collect();
    assert_eq!(
        want.len(),
        kernels.len(),
        "every baseline kernel ran distribution_tcp"
    );
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("matrix.html");
    std::fs::write(&page, html::render(&Report::new(kernels, &cases))).unwrap();
    let dom = chromium(
        &dir.path().join("profile"),
        &["--dump-dom".into(), format!("file://{}", page.display())],
    );
    let row_start = dom
        .find("<tr data-case=\"reuseport/distribution_tcp\" data-group=\"account.c\">")
        .expect("a chart row for distribution_tcp");
    let row = &dom[row_start..row_start + dom[row_start..].find("</tr>").unwrap()];
    assert_eq!(
        row.matches("<svg class=\"chart spread\"").count(),
        want.len(),
        "{row}"
    );
    let values: Vec<u64> = row
        .split("data-value=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
        .collect();
    assert_eq!(values, want.concat(), "{row}");
    assert!(
        dom.contains("<table class=\"charts time\" id=\"time-kernels\">"),
        "time chart"
    );
}
