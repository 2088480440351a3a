//! Kernel modules in the guest, on a real boot: a kernel given as a bare bzImage
//! path has no modules, so a case requiring one is skipped and says why.

use std::process::Command;

#[test]
fn a_bare_bzimage_skips_a_module_case_with_the_reason() {
    let (catalogue, lock) = sockmatrix::runner::load_catalogue().unwrap();
    let image = sockmatrix::runner::provision("6.1", &catalogue, &lock, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bzImage");
    std::fs::copy(&image.vmlinuz, &bare).unwrap();
    let results = dir.path().join("results");
    let out = Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .args([
            "run",
            "--accel",
            "tcg",
            "--filter",
            "sctp/reuseport_one_to_many",
        ])
        .arg("--kernel")
        .arg(&bare)
        .arg("--results")
        .arg(&results)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let folder = std::fs::read_dir(&results)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("result.json").is_file())
        .expect("the bare kernel has a results folder");
    let result = sockmatrix::resultset::results::load(&folder.join("result.json")).unwrap();
    let case = &result.cases[0];
    assert_eq!(case.case, "sctp/reuseport_one_to_many");
    assert_eq!(case.verdict.label(), "skip", "{case:?}");
    let why = format!("{:?}", case.verdict);
    assert!(
        why.contains("kernel given as a bzImage path: no modules to load for sctp"),
        "{why}"
    );
}
