//! `sockmatrix bisect-releases` and release kernels, for real: its exit codes
//! (0 found, 1 no change, 2 bad input, 3 could not run) on Debian's 6.1 releases.
//! The bisection boots two fixed, adjacent releases (6.1.174 and 6.1.176, where the
//! missed epoll wake-up after a listener migration was fixed); bad input boots
//! nothing; a release the mirror does not serve (404) is skipped without a boot.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

/// One bisection at a time from this file: the machine has two cores for everyone.
static ONE_BOOT: Mutex<()> = Mutex::new(());

fn sockmatrix_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("sockmatrix runs")
}

fn sockmatrix(args: &[&str]) -> Output {
    sockmatrix_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {out:?}"))
}

fn shown(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn lists_the_releases_of_a_series() {
    let out = sockmatrix(&["kernels", "list", "--releases", "6.1"]);
    assert_eq!(code(&out), 0, "{}", shown(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let rows = text.lines().filter(|l| l.starts_with("6.1.")).count();
    assert!(rows >= 10, "at least ten 6.1 releases: {}", shown(&out));
    assert!(text.contains("linux-image-6.1.0-50-cloud-amd64"), "{text}");
    let out = sockmatrix(&["kernels", "list", "--releases", "9.9"]);
    assert_eq!(code(&out), 2, "{}", shown(&out));
    assert!(
        shown(&out).contains("unknown kernel series `9.9`"),
        "{}",
        shown(&out)
    );
}

#[test]
fn bad_input_exits_2_and_boots_nothing() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["no/such_case", "--series", "6.1"],
            "no case `no/such_case`",
        ),
        (
            &["reuseport/migrate_on_close", "--series", "9.9"],
            "unknown kernel series `9.9`",
        ),
        (
            &[
                "reuseport/migrate_on_close",
                "--good",
                "6.1.999",
                "--bad",
                "6.1.176",
            ],
            "unknown kernel release `6.1.999`",
        ),
        (
            &[
                "reuseport/migrate_on_close",
                "--good",
                "6.1.176",
                "--bad",
                "6.1.176",
            ],
            "the same release",
        ),
        (
            &[
                "reuseport/migrate_on_close",
                "--good",
                "6.1.176",
                "--bad",
                "6.12.85",
            ],
            "not in one series",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["bisect-releases"];
        all.extend_from_slice(args);
        let out = sockmatrix(&all);
        assert_eq!(code(&out), 2, "{args:?}: {}", shown(&out));
        assert!(shown(&out).contains(says), "{args:?}: {}", shown(&out));
        assert!(
            !shown(&out).contains("booting"),
            "{args:?}: {}",
            shown(&out)
        );
    }
    let out = sockmatrix(&["fixes", "--series", "9.9"]);
    assert_eq!(code(&out), 2, "{}", shown(&out));
    assert!(
        shown(&out).contains("unknown kernel series `9.9`"),
        "{}",
        shown(&out)
    );
    let out = sockmatrix(&["run", "--kernel", "6.1.999", "--filter", "migrate_on_close"]);
    assert_eq!(code(&out), 2, "{}", shown(&out));
    assert!(
        shown(&out).contains("6.1.176"),
        "names the releases there are: {}",
        shown(&out)
    );
}

/// A catalogue copy whose lock pins 6.1.174 and 6.1.176 at pool paths the mirror does
/// not have: the 404 is reported as such, the releases are skipped, exit 3.
#[test]
fn a_release_the_mirror_does_not_serve_could_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let vm = dir.path().join("vm");
    std::fs::create_dir_all(&vm).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("vm/kernels.yaml"), vm.join("kernels.yaml")).unwrap();
    let mut lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("vm/kernels.lock")).unwrap())
            .unwrap();
    for label in ["6.1.174", "6.1.176"] {
        let pin = &mut lock["releases"][label];
        assert!(pin.is_object(), "vm/kernels.lock pins {label}");
        pin["filename"] = format!("pool/main/l/linux-signed-amd64/gone-{label}_amd64.deb").into();
        // Another hash too, so the kernel already in the cache does not stand in for it.
        pin["sha256"] = "00".repeat(32).into();
    }
    std::fs::write(
        vm.join("kernels.lock"),
        serde_json::to_string_pretty(&lock).unwrap(),
    )
    .unwrap();
    let cases = root.join("cases");
    let out = sockmatrix_in(
        dir.path(),
        &[
            "bisect-releases",
            "reuseport/migrate_wakes_epoll_waiter",
            "--cases",
            cases.to_str().unwrap(),
            "--good",
            "6.1.174",
            "--bad",
            "6.1.176",
            "--accel",
            "tcg",
        ],
    );
    assert_eq!(code(&out), 3, "{}", shown(&out));
    assert!(shown(&out).contains("no longer serves"), "{}", shown(&out));
    assert!(!shown(&out).contains("booting"), "{}", shown(&out));
    let out = sockmatrix_in(
        dir.path(),
        &[
            "run",
            "--kernel",
            "6.1.176",
            cases.to_str().unwrap(),
            "--filter",
            "migrate_on_close",
            "--results",
            dir.path().join("results").to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 3, "{}", shown(&out));
}

/// `fixes --series` from kept results only: two releases' results written by hand
/// from the real observations (6.1.174 unfixed, 6.1.176 fixed); nothing boots.
#[test]
fn fixes_by_series_reads_kept_results() {
    let dir = tempfile::tempdir().unwrap();
    for (label, accepted) in [("6.1.174", 12), ("6.1.176", 24)] {
        let k = dir.path().join(label);
        std::fs::create_dir_all(&k).unwrap();
        let result = serde_json::json!({
            "kernel": label, "release": null, "package_version": null, "could_not_run": null,
            "boot": null, "finished_at": 0,
            "cases": [{"case": "reuseport/migrate_wakes_epoll_waiter", "file": "x.yaml",
                "outcome": {"kind": "ran"}, "observations": {"wait_accepted.a": accepted},
                "elapsed_ms": 1, "verdict": {"verdict": "pass", "checked": 1}}]
        });
        std::fs::write(k.join("result.json"), result.to_string()).unwrap();
    }
    let out = sockmatrix(&["fixes", "--series", "6.1", dir.path().to_str().unwrap()]);
    // The other `detects` cases have no kept results: unknown, so exit 3.
    assert_eq!(code(&out), 3, "{}", shown(&out));
    assert!(
        shown(&out).contains("udp/wildcard_after_eleven: unknown"),
        "{}",
        shown(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("reuseport/migrate_wakes_epoll_waiter"))
        .unwrap_or_else(|| panic!("{}", shown(&out)));
    assert!(
        line.contains("first in 6.1.176 (Debian 6.1.176-1; absent in 6.1.174)"),
        "{line}"
    );
}

#[test]
fn finds_the_fix_between_two_adjacent_releases_and_ranks_its_changelog_entry_first() {
    let _one = ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let out = sockmatrix(&[
        "bisect-releases",
        "reuseport/migrate_wakes_epoll_waiter",
        "--good",
        "6.1.174",
        "--bad",
        "6.1.176",
        "--accel",
        "tcg",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", shown(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", shown(&out)));
    assert_eq!(v["result"], "found", "{v:#}");
    assert_eq!(v["direction"], "fix", "{v:#}");
    assert_eq!(v["old"]["release"], "6.1.174", "{v:#}");
    assert_eq!(v["new"]["release"], "6.1.176", "{v:#}");
    assert_eq!(v["new"]["debian_version"], "6.1.176-1", "{v:#}");
    assert_eq!(v["boots"], 2, "{v:#}");
    let top = v["candidates"][0]["text"].as_str().unwrap_or_default();
    assert!(
        top.starts_with("tcp: call sk_data_ready() after listener migration"),
        "{v:#}"
    );
    assert!(
        v["candidates_total"].as_u64().unwrap_or(0) > 100,
        "every entry of 6.1.176 is a candidate: {v:#}"
    );
}

#[test]
fn the_same_behaviour_at_both_ends_is_no_change() {
    let _one = ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let out = sockmatrix(&[
        "bisect-releases",
        "reuseport/migrate_wakes_epoll_waiter",
        "--good",
        "6.1.176",
        "--bad",
        "6.1.177",
        "--accel",
        "tcg",
    ]);
    assert_eq!(code(&out), 1, "{}", shown(&out));
    assert!(
        shown(&out).contains("no change from 6.1.176 to 6.1.177"),
        "{}",
        shown(&out)
    );
}

#[test]
fn a_case_skipped_on_every_release_could_not_run() {
    let _one = ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("old_kernels_only.yaml");
    std::fs::write(
        &case,
        "summary: Only for kernels before 4.0.\nrequires:\n  - kernel: \"< 4.0\"\nsteps:\n  - socket: a\n",
    )
    .unwrap();
    let out = sockmatrix(&[
        "bisect-releases",
        case.to_str().unwrap(),
        "--good",
        "6.1.176",
        "--bad",
        "6.1.177",
        "--accel",
        "tcg",
    ]);
    assert_eq!(code(&out), 3, "{}", shown(&out));
    assert!(
        shown(&out).contains("no release could judge the case"),
        "{}",
        shown(&out)
    );
    assert!(shown(&out).contains("skipped"), "{}", shown(&out));
}
