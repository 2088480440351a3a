//! The guest agent: PID 1 of the initramfs. Mounts what the executor needs, runs the
//! plan's cases one by one and streams JSON lines on the results serial port, then
//! powers the guest off. It observes only; the host judges.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::case::Plan;
use crate::observe::{AgentEvent, CaseEdge};

/// What the host puts in the initramfs at `/plan.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GuestPlan {
    pub cases: Vec<Plan>,
    /// The kernel modules the cases require, by name, as the host found them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub modules: BTreeMap<String, ModulePlan>,
}

/// What the host found for one required module on this kernel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ModulePlan {
    /// Files in the initramfs to load, dependencies first.
    Load { files: Vec<String> },
    /// Built into the kernel: nothing to load.
    Builtin,
    /// Not available for this kernel: cases that require it are skipped.
    Missing { reason: String },
    /// The host could not provide it (a download or extraction failed).
    Error { message: String },
}

/// With `floor`: end by halting, as a kernel without ACPI does on power-off (tests the
/// host's halt detection).
pub const HALT_ARG: &str = "halt";
pub const PLAN_PATH: &str = "/plan.json";
/// ttyS1: the second 8250 port. ttyS0 carries the kernel console.
pub const RESULTS_DEVICE: &str = "/dev/ttyS1";

/// Entry point. `args` are init's arguments (what follows `--` on the kernel command
/// line): `floor` only says it is up and powers off (the benchmark's do-nothing init).
pub fn main(args: &[String]) -> ! {
    let is_init = std::process::id() == 1;
    if args.iter().any(|a| a == "floor") {
        // No mounts: the initramfs carries the /dev/ttyS1 node itself.
        if let Ok(mut port) = std::fs::OpenOptions::new().write(true).open(RESULTS_DEVICE) {
            let _ = writeln!(port, "floor");
        }
        if args.iter().any(|a| a == HALT_ARG) {
            finish_with(is_init, nix::sys::reboot::RebootMode::RB_HALT_SYSTEM);
        }
        finish(is_init);
    }
    if is_init {
        mount_basics();
    }
    let device = arg_value(args, "results=").unwrap_or(RESULTS_DEVICE);
    let plan_path = arg_value(args, "plan=").unwrap_or(PLAN_PATH);
    let mut out = match open_results(device) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sockmatrix-agent: cannot open {device}: {e}");
            finish(is_init);
        }
    };
    report_panics(&out, is_init);
    let plan = if args.iter().any(|a| a == crate::resume::SERIAL_PLAN_ARG) {
        // A snapshot is taken while the agent waits here, before any socket exists.
        crate::resume::receive_plan(&mut out)
    } else {
        load_plan(Path::new(plan_path))
    };
    let mut wire = crate::wire::Encoder::default();
    let mut emit = |event: AgentEvent| {
        let _ = writeln!(out, "{}", wire.line(&event.to_line()));
        let _ = out.flush();
    };
    let (release, uname_version) = crate::host::uname();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    emit(AgentEvent::Hello {
        release: release.clone(),
        uname_version,
        cpus,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        fresh: Some(crate::resume::Freshness::observe()),
    });
    // For the test of the panic report: a panic of the agent's own, on purpose.
    if args.iter().any(|a| a == "selftest-panic") {
        panic!("selftest-panic: the agent panics on purpose");
    }
    match plan {
        Ok(plan) => {
            for case in &plan.cases {
                emit(AgentEvent::CaseStart {
                    id: case.id.clone(),
                });
                mark_console(&case.id, CaseEdge::Start);
                let run = match crate::exec::modules::prepare(case, &plan.modules) {
                    Some(run) => run,
                    None => crate::exec::run_case(case, &release),
                };
                mark_console(&case.id, CaseEdge::End);
                emit(AgentEvent::CaseEnd { run });
            }
            emit(AgentEvent::Done);
        }
        Err(message) => emit(AgentEvent::Fatal { message }),
    }
    finish(is_init)
}

/// Marks a case's start or end on the kernel console, so that the host can tell
/// which case a splat printed there belongs to. Level 5 (notice): shown on a
/// default console, and no problem pattern matches it.
fn mark_console(id: &str, edge: CaseEdge) {
    if let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ =
            kmsg.write_all(format!("<5>{}\n", crate::observe::case_marker(id, edge)).as_bytes());
    }
}

/// Reports a panic of the agent itself on the results port (AgentPanic) before the
/// guest powers off, so the host never mistakes a sockmatrix bug for a kernel
/// crash (PID 1 dying would panic the kernel). A case's child process keeps the
/// default hook: its panic is that case's error.
fn report_panics(port: &File, is_init: bool) {
    let Ok(port) = port.try_clone() else { return };
    let port = std::sync::Mutex::new(port);
    let agent = std::process::id();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::process::id() != agent {
            return default(info);
        }
        let event = AgentEvent::AgentPanic {
            message: info.to_string(),
        };
        if let Ok(mut port) = port.lock() {
            let _ = writeln!(port, "{}", event.to_line());
            let _ = port.flush();
        }
        default(info);
        if is_init {
            finish(true);
        }
    }));
}

fn arg_value<'a>(args: &'a [String], prefix: &str) -> Option<&'a str> {
    args.iter().find_map(|a| a.strip_prefix(prefix))
}

fn load_plan(path: &Path) -> Result<GuestPlan, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("bad plan {}: {e}", path.display()))
}

/// The executor reads /proc (sysctls, if_inet6) and the results port lives in /dev.
fn mount_basics() {
    use nix::mount::{mount, MsFlags};
    for (source, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ] {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(
            Some(source),
            target,
            Some(fstype),
            MsFlags::empty(),
            None::<&str>,
        ) {
            eprintln!("sockmatrix-agent: mount {target}: {e}");
        }
    }
}

/// Opens the serial port raw, so the tty layer neither echoes nor rewrites newlines.
fn open_results(device: &str) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(device)?;
    if let Ok(mut tio) = nix::sys::termios::tcgetattr(&file) {
        nix::sys::termios::cfmakeraw(&mut tio);
        let _ = nix::sys::termios::tcsetattr(&file, nix::sys::termios::SetArg::TCSANOW, &tio);
    }
    Ok(file)
}

/// As PID 1: drain the results port, sync and end the VM (PID 1 must never exit, the
/// kernel would panic). Anywhere else: just exit.
///
/// The VM ends with a restart, not a power-off: a kernel without ACPI (tinyconfig,
/// old kernels) turns a power-off into "reboot: System halted" and QEMU would run on,
/// while a restart always ends it: the command line's `reboot=t` triple-faults, which
/// `-no-reboot` turns into a QEMU exit on every machine type. `halt` (a test of the
/// host's halt detection) halts instead.
fn finish(is_init: bool) -> ! {
    finish_with(is_init, nix::sys::reboot::RebootMode::RB_AUTOBOOT)
}

fn finish_with(is_init: bool, mode: nix::sys::reboot::RebootMode) -> ! {
    if is_init {
        drain_results_port();
        nix::unistd::sync();
        let _ = nix::sys::reboot::reboot(mode);
        // Should the restart be refused, a power-off is the next best end.
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    std::process::exit(0)
}

/// Waits until the UART has sent every byte written to the results port: a restart
/// does not wait for the tty layer, and the host must see the last result line.
fn drain_results_port() {
    if let Ok(port) = std::fs::OpenOptions::new().write(true).open(RESULTS_DEVICE) {
        let _ = nix::sys::termios::tcdrain(&port);
    }
}
