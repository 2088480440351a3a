//! A kernel that cannot boot is reported as such, and the other kernels still run.

use std::process::Command;

#[test]
fn a_bad_kernel_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_kernel = dir.path().join("bzImage-broken");
    std::fs::write(&not_a_kernel, b"this is not a kernel").unwrap();
    let results = dir.path().join("results");
    let out = Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .args([
            "run",
            "--filter",
            "bind/wildcard_vs_specific_tcp",
            "--kernel",
        ])
        .arg(&not_a_kernel)
        .args(["--kernel", "6.1", "--results"])
        .arg(&results)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Exit 3: something could not run; no expectation failed.
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("not a bzImage"),
        "the bad kernel is named with the reason:\n{stdout}"
    );
    let good = sockmatrix::results::load(&results.join("6.1/result.json")).unwrap();
    assert!(
        good.cases.iter().all(|c| c.verdict.label() == "pass"),
        "{good:?}"
    );
    let bad = sockmatrix::results::load(&results.join("local-bzImage-broken/result.json")).unwrap();
    assert!(bad
        .could_not_run
        .as_deref()
        .unwrap_or_default()
        .contains("not a bzImage"));
}
