//! Guest image and QEMU boot: builds initramfs images, boots one kernel in a
//! QEMU guest, streams the guest's result lines and supervises it (ready / idle /
//! total timeouts, retries on early hangs, panic detection, guaranteed kill).
//!
//! Channels: the guest kernel console is ttyS0 (appended to `BootSpec::console_log`);
//! result lines are written by the guest init on ttyS1 and arrive as
//! `BootEvent::ResultLine`. The first result line is the "ready" signal.

pub mod accel;
pub mod args;
pub mod boot;
pub mod console;
pub mod gate;
pub mod initramfs;
pub mod qmp;
pub mod snapshot;
pub mod tsc;

pub use accel::{auto_verdict, finish_probe, Accel, AutoVerdict};
pub use args::{Machine, ResolvedAccel};
pub use boot::boot;
pub use console::{ConsoleProblem, ProblemKind};
pub use gate::{Gate, Permit};
pub use initramfs::{base_entries, write_initramfs, Entry, FileData};

use std::path::PathBuf;
use std::time::Duration;

/// One guest boot request.
#[derive(Debug, Clone)]
pub struct BootSpec {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub memory_mb: u32,
    pub cpus: u32,
    pub accel: Accel,
    /// QEMU machine type (microvm unless the kernel needs pc).
    pub machine: Machine,
    /// Extra kernel parameters, appended after the built-in ones (later wins).
    pub cmdline_extra: Vec<String>,
    /// Passed to /init's argv (after `--` on the kernel command line).
    pub init_args: Vec<String>,
    /// Full kernel console, appended to across attempts (each attempt starts with a marker line).
    pub console_log: PathBuf,
    /// Kill and retry if the first result line has not arrived this long after launch.
    pub ready_timeout: Duration,
    /// Kill if no result line arrived for this long after the previous one.
    pub idle_timeout: Duration,
    /// Kill if one attempt runs longer than this in total (from launch).
    pub total_timeout: Duration,
    /// Extra attempts after a ready timeout (only early hangs are retried).
    pub retries: u32,
    /// Save the guest's state when its agent waits, or start from a saved state.
    pub state: Option<StateFile>,
}

/// VM state files (QEMU migration streams), see `snapshot`.
#[derive(Debug, Clone)]
pub enum StateFile {
    /// When the agent says it waits for its plan: pause, save the state here, quit.
    SaveTo(PathBuf),
    /// Start from this state, resume, then write `input` to the results port.
    RestoreFrom { state: PathBuf, input: Vec<u8> },
}

impl BootSpec {
    /// Defaults tuned for TCG on a 2-core host: 512 MiB, 2 vCPUs, ready 20 s,
    /// idle 60 s, total 600 s, 2 retries.
    pub fn new(
        kernel: impl Into<PathBuf>,
        initramfs: impl Into<PathBuf>,
        console_log: impl Into<PathBuf>,
    ) -> Self {
        BootSpec {
            kernel: kernel.into(),
            initramfs: initramfs.into(),
            memory_mb: 512,
            cpus: 2,
            accel: Accel::Auto,
            machine: Machine::Microvm,
            cmdline_extra: Vec::new(),
            init_args: Vec::new(),
            console_log: console_log.into(),
            ready_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(600),
            retries: 2,
            state: None,
        }
    }
}

/// How the guest ended. `QemuFailed` means "could not run" and is never a test verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest ended cleanly and the console shows no panic: QEMU exited after
    /// init restarted or powered off, or the kernel printed that it halted.
    PoweredOff,
    /// The guest kernel panicked; `line` is the "Kernel panic - ..." console line.
    Panicked { line: String },
    /// No first result line within `ready_timeout` on the last attempt.
    ReadyTimeout,
    /// No result line for `idle_timeout` after the previous one.
    IdleTimeout,
    /// The attempt exceeded `total_timeout`.
    TotalTimeout,
    /// QEMU itself failed (bad kernel image, bad option, ...) or was killed: its exit
    /// status or the signal that ended it, and its stderr tail.
    QemuFailed {
        status: Option<i32>,
        signal: Option<i32>,
        stderr_tail: String,
    },
    /// The run was interrupted (SIGINT/SIGTERM) and the guest stopped.
    Interrupted,
}

impl std::fmt::Display for GuestExit {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            GuestExit::QemuFailed {
                status,
                signal,
                stderr_tail,
            } => {
                match (status, signal) {
                    (_, Some(signal)) => write!(
                        f,
                        "QEMU was killed by {}",
                        crate::interrupt::signal_name(*signal)
                    )?,
                    (Some(code), None) => write!(f, "QEMU failed (exit status {code})")?,
                    (None, None) => write!(f, "QEMU failed (exit status unknown)")?,
                }
                if stderr_tail.is_empty() {
                    Ok(())
                } else {
                    write!(f, ": {stderr_tail}")
                }
            }
            other => write!(f, "{other:?}"),
        }
    }
}

/// Progress, delivered to the caller's callback in order.
#[derive(Debug, Clone, PartialEq)]
pub enum BootEvent {
    BootStart {
        attempt: u32,
        accel: ResolvedAccel,
    },
    /// The first result line arrived `after` launch of this attempt.
    Ready {
        attempt: u32,
        after: Duration,
    },
    /// Every result line, including the first ("ready") one; trailing CR/LF stripped.
    ResultLine(String),
    /// A kernel console problem, as soon as it is seen.
    Problem(ConsoleProblem),
    /// Attempt `attempt` hung before ready and will be retried.
    Retry {
        attempt: u32,
        reason: String,
    },
    Exit(GuestExit),
}

#[derive(Debug, Clone)]
pub struct BootOutcome {
    pub exit: GuestExit,
    /// Attempts made (1 = no retry).
    pub attempts: u32,
    /// One entry per retried attempt: "attempt N hung at <last console line>".
    pub hung_attempts: Vec<String>,
    /// Console problems of the last attempt.
    pub problems: Vec<ConsoleProblem>,
    /// Last ~40 console lines of the last attempt.
    pub console_tail: Vec<String>,
    /// Launch-to-first-result-line of the last attempt.
    pub boot_to_ready: Option<Duration>,
    /// Wall time of the whole call, all attempts included.
    pub total: Duration,
    /// The QEMU command line of the last attempt, shell-quoted (for reports).
    pub command: String,
    /// The accelerator the guest really ran under, and why it was chosen.
    pub accel: AutoVerdict,
    /// With `StateFile`: whether saving or restoring the state worked (last attempt).
    pub state_error: Option<String>,
}
