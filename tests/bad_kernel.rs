//! A kernel that cannot boot is reported as such, and the other kernels still run.
//! (A file that is not a bzImage at all is bad input: tests/bad_input.rs.)

use std::process::Command;

/// A bzImage header (so it passes the up-front check) that QEMU refuses to load: it
/// allows no initrd anywhere in memory.
fn unloadable_bzimage() -> Vec<u8> {
    let mut b = vec![0u8; 0x1000];
    b[0x1f1] = 0xff; // setup sectors
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // boot protocol 2.15
    b[0x20E..0x210].copy_from_slice(&0x200u16.to_le_bytes()); // version string at 0x400
    b[0x400..0x410].copy_from_slice(b"6.1.0-unloadable");
    b
}

#[test]
fn a_bad_kernel_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("bzImage-broken");
    std::fs::write(&broken, unloadable_bzimage()).unwrap();
    let results = dir.path().join("results");
    let out = Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .args([
            "run",
            "--accel",
            "tcg",
            "--filter",
            "bind/wildcard_vs_specific_tcp",
            "--kernel",
        ])
        .arg(&broken)
        .args(["--kernel", "6.1", "--results"])
        .arg(&results)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Exit 3: something could not run; no expectation failed.
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("QEMU failed (exit status 1)"),
        "the bad kernel is named with the reason:\n{stdout}"
    );
    let good = sockmatrix::resultset::results::load(&results.join("6.1/result.json")).unwrap();
    assert!(
        good.cases.iter().all(|c| c.verdict.label() == "pass"),
        "{good:?}"
    );
    let folder = std::fs::read_dir(&results)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("local-6.1.0-unloadable-"))
        .expect("the bad kernel has a folder named by its release and hash");
    let bad =
        sockmatrix::resultset::results::load(&results.join(folder).join("result.json")).unwrap();
    assert!(bad
        .could_not_run
        .as_deref()
        .unwrap_or_default()
        .contains("QEMU failed"));
}
