//! How a guest ends, on real TCG boots of Debian's 6.1: the agent ends the VM with a
//! restart (which needs no ACPI, unlike a power-off), and a guest whose kernel halts
//! ("reboot: System halted", what a power-off becomes in a kernel without ACPI such
//! as a tinyconfig build) is recognised as ended, not left to the idle timeout and
//! called a death. The ACPI-less kernel itself is booted by the source-build proof.

use std::time::Duration;

use sockmatrix::qemu::{self, Accel, BootSpec, GuestExit};

fn floor_boot(extra_init_args: &[&str]) -> (qemu::BootOutcome, String) {
    let (catalogue, lock) = sockmatrix::runner::load_catalogue().unwrap();
    let image = sockmatrix::runner::provision("6.1", &catalogue, &lock, false).unwrap();
    let agent = sockmatrix::runner::agent_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = dir.path().join("floor.cpio");
    sockmatrix::runner::write_guest_image(&initramfs, &agent, None, &[]).unwrap();
    let console = dir.path().join("console.log");
    let mut spec = BootSpec::new(&image.vmlinuz, &initramfs, &console);
    spec.accel = Accel::Tcg;
    spec.init_args = std::iter::once("floor")
        .chain(extra_init_args.iter().copied())
        .map(String::from)
        .collect();
    // Long enough that an idle timeout cannot pass for a clean end.
    spec.idle_timeout = Duration::from_secs(120);
    spec.total_timeout = Duration::from_secs(300);
    let outcome = qemu::boot(&spec, &mut |_| {}).unwrap();
    (
        outcome,
        std::fs::read_to_string(&console).unwrap_or_default(),
    )
}

#[test]
fn the_agent_ends_the_guest_with_a_restart() {
    let (outcome, console) = floor_boot(&[]);
    assert_eq!(outcome.exit, GuestExit::PoweredOff, "{console}");
    assert!(console.contains("reboot: Restarting system"), "{console}");
    assert!(!console.contains("System halted"), "{console}");
}

#[test]
fn a_halted_guest_is_a_clean_end() {
    let (outcome, console) = floor_boot(&[sockmatrix::agent::HALT_ARG]);
    assert!(console.contains("reboot: System halted"), "{console}");
    assert_eq!(outcome.exit, GuestExit::PoweredOff, "{console}");
    assert_eq!(outcome.attempts, 1);
}
