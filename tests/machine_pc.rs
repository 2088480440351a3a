//! The fallback machine, for real: a Debian kernel booted cold under `--machine pc`
//! (the machine old kernels get, declared or after microvm could not boot them) runs
//! a case that loads a kernel module (veth) and ends cleanly. Both serial ports, the
//! initramfs with its modules and the guest's end must work on a PC as on microvm,
//! and so must a guest saved and restored on a PC.

use std::process::{Command, Output};
use std::sync::Mutex;

/// One guest at a time: two boots would compete for a small machine's cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run_on_pc(extra: &[&str], results: &std::path::Path) -> (Output, String) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .args([
            "run",
            "--accel",
            "tcg",
            "--machine",
            "pc",
            "--kernel",
            KERNEL,
        ])
        .args(extra)
        .arg("--results")
        .arg(results)
        .arg(CASE)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, said)
}

const KERNEL: &str = "6.1";
const CASE: &str = "cases/devices/groups_per_device.yaml";

#[test]
fn a_debian_kernel_passes_a_module_case_under_machine_pc() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let (out, said) = run_on_pc(&["--cold"], &results);
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

/// A PC guest is saved as a PC: restoring a state saved under another machine type
/// fails ("Machine type received is 'microvm'"), and every run paid for a save and a
/// cold boot after it.
#[test]
fn a_pc_guest_restores_from_its_own_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (out, said) = run_on_pc(&[], &dir.path().join("results"));
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("tcg, restored"), "{said}");
    assert!(!said.contains("the restored guest failed"), "{said}");
    assert!(said.contains("1 passed"), "{said}");
}
