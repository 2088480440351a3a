//! The fallback machine, for real: a Debian kernel booted cold under `--machine pc`
//! (the machine old kernels get, declared or after microvm could not boot them) runs
//! a case that loads a kernel module (veth) and ends cleanly. Both serial ports, the
//! initramfs with its modules and the guest's end must work on a PC as on microvm.

use std::process::Command;

const KERNEL: &str = "6.1";
const CASE: &str = "cases/devices/groups_per_device.yaml";

#[test]
fn a_debian_kernel_passes_a_module_case_under_machine_pc() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let out = Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .args([
            "run",
            "--accel",
            "tcg",
            "--machine",
            "pc",
            "--cold",
            "--kernel",
            KERNEL,
        ])
        .arg("--results")
        .arg(&results)
        .arg(CASE)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("1 passed"), "{said}");

    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join(KERNEL).join("result.json")).unwrap())
            .unwrap();
    let boot = &result["boot"];
    let command = boot["qemu_command"].as_str().unwrap();
    assert!(command.contains("-M pc "), "{command}");
    assert!(!command.contains("microvm"), "{command}");
    // One boot, no retry: the guest ended by itself, not by a timeout.
    assert_eq!(boot["attempts"], 1, "{boot}");
}
