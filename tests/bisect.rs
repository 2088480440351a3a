//! `sockmatrix bisect-run` answers in `git bisect run` exit codes, for real: a file
//! that is not a kernel is skipped (125) without booting, and Debian's 6.1 is booted
//! twice, once with a case it passes (0), once with a wrong case file (1).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;

/// One guest at a time from this file: the machine has two cores for everyone.
static ONE_BOOT: Mutex<()> = Mutex::new(());

fn sockmatrix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("sockmatrix runs")
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

/// Debian's 6.1 bzImage, downloaded and verified on first use.
fn debian_6_1() -> PathBuf {
    let out = sockmatrix(&["kernels", "fetch", "6.1"]);
    assert_eq!(code(&out), 0, "{}", shown(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("6.1: "))
        .unwrap_or_else(|| panic!("{}", shown(&out)));
    PathBuf::from(path.trim())
}

#[test]
fn a_file_that_is_not_a_kernel_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("bzImage");
    std::fs::write(&junk, b"this is not a kernel\n".repeat(100)).unwrap();
    let out = sockmatrix(&[
        "bisect-run",
        "--kernel-image",
        junk.to_str().unwrap(),
        "--case",
        "bind/wildcard_vs_specific_tcp",
    ]);
    assert_eq!(code(&out), 125, "{}", shown(&out));
    assert!(shown(&out).contains("not a bzImage"), "{}", shown(&out));
    // No build output at all is a commit to skip too.
    let missing = dir.path().join("arch/x86/boot/bzImage");
    let out = sockmatrix(&[
        "bisect-run",
        "--kernel-image",
        missing.to_str().unwrap(),
        "--case",
        "bind/wildcard_vs_specific_tcp",
    ]);
    assert_eq!(code(&out), 125, "{}", shown(&out));
}

#[test]
fn an_unknown_case_aborts_the_bisection() {
    let out = sockmatrix(&[
        "bisect-run",
        "--kernel-image",
        "/nonexistent",
        "--case",
        "no/such_case",
    ]);
    assert_eq!(code(&out), 128, "{}", shown(&out));
}

#[test]
fn a_passing_case_is_good() {
    let _one = ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let image = debian_6_1();
    let out = sockmatrix(&[
        "bisect-run",
        "--kernel-image",
        image.to_str().unwrap(),
        "--case",
        "bind/wildcard_vs_specific_tcp",
    ]);
    assert_eq!(code(&out), 0, "{}", shown(&out));
    assert!(shown(&out).contains("passes on 6.1."), "{}", shown(&out));
}

#[test]
fn a_failing_case_file_is_bad() {
    let _one = ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let image = debian_6_1();
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("second_bind_succeeds.yaml");
    // Wrong on purpose: a second plain bind to a listening port fails on every kernel.
    std::fs::write(
        &case,
        "summary: A second plain TCP bind to a listener's port succeeds (it does not).\n\
         steps:\n  - socket: a\n  - bind: a\n    addr: 127.0.0.1\n  - listen: a\n  - socket: b\n  - bind: b\n    addr: 127.0.0.1\n    port: a\n\
         expect:\n  - obs: bind.b\n    eq: ok\n",
    )
    .unwrap();
    let out = sockmatrix(&[
        "bisect-run",
        "--kernel-image",
        image.to_str().unwrap(),
        "--case",
        case.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", shown(&out));
    assert!(
        shown(&out).contains("+ observed: EADDRINUSE"),
        "{}",
        shown(&out)
    );
}
