//! Launches and supervises one guest: streams result lines (ttyS1 = QEMU stdout),
//! tails the console log (ttyS0) for problems, enforces ready/idle/total
//! timeouts, retries early hangs, and never lets QEMU outlive the call.

use super::args::{self, QemuPlan, ResolvedAccel, QEMU_BINARY};
use super::console::{ConsoleScanner, LogFollower};
use super::{BootEvent, BootOutcome, BootSpec, GuestExit, StateFile};
use anyhow::{ensure, Context, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the console log is polled while waiting for result lines.
const TICK: Duration = Duration::from_millis(100);
/// How long QEMU may run on after the kernel printed that it halted or powered down.
const HALT_GRACE: Duration = Duration::from_secs(2);
/// How much of QEMU's stderr goes into `QemuFailed`.
const STDERR_TAIL: usize = 2000;

/// QEMU as a duct expression with the settings every launch needs.
pub(crate) fn qemu_expression(args: &[OsString]) -> duct::Expression {
    // stdin is the results chardev's input side: give it nothing.
    qemu_command(args).stdin_null()
}

/// Like `qemu_expression`, stdin left to the caller.
fn qemu_command(args: &[OsString]) -> duct::Expression {
    duct::cmd(QEMU_BINARY, args)
        .stderr_capture()
        // A non-zero exit is classified by us, not turned into an io::Error.
        .unchecked()
        .before_spawn(|cmd| {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe. If the thread that spawned QEMU dies
            // (including the host being SIGKILLed), the kernel SIGKILLs QEMU.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            Ok(())
        })
}

/// The kernel command line `spec` boots with under `accel`.
pub fn guest_cmdline(spec: &BootSpec, accel: ResolvedAccel) -> String {
    let mut params = match accel {
        ResolvedAccel::Tcg => args::tcg_params(super::tsc::host_tsc_khz()),
        ResolvedAccel::Kvm => Vec::new(),
    };
    params.extend(args::machine_params(spec.machine, accel));
    args::kernel_cmdline(&params, &spec.cmdline_extra, &spec.init_args)
}

/// Boots the guest described by `spec`, calling `on_event` with progress.
/// Returns Err only for host-side problems (missing files, QEMU not spawnable);
/// everything the guest or QEMU did is in `BootOutcome::exit`.
pub fn boot(spec: &BootSpec, on_event: &mut dyn FnMut(BootEvent)) -> Result<BootOutcome> {
    ensure!(
        spec.kernel.is_file(),
        "kernel image not found: {}",
        spec.kernel.display()
    );
    ensure!(
        spec.initramfs.is_file(),
        "initramfs not found: {}",
        spec.initramfs.display()
    );
    let chosen = spec.accel.resolve(&spec.kernel)?;
    let accel = chosen.accel;
    let started = Instant::now();
    let mut hung_attempts = Vec::new();
    let mut attempt = 1;
    loop {
        on_event(BootEvent::BootStart { attempt, accel });
        let run = run_once(spec, accel, attempt, on_event)?;
        if run.exit == GuestExit::ReadyTimeout && attempt <= spec.retries {
            let reason = format!("attempt {attempt} hung at {:?}", run.last_console_line);
            on_event(BootEvent::Retry {
                attempt,
                reason: reason.clone(),
            });
            hung_attempts.push(reason);
            attempt += 1;
            continue;
        }
        on_event(BootEvent::Exit(run.exit.clone()));
        return Ok(BootOutcome {
            exit: run.exit,
            attempts: attempt,
            hung_attempts,
            problems: run.scanner.problems().to_vec(),
            console_tail: run.scanner.tail(),
            boot_to_ready: run.ready_after,
            total: started.elapsed(),
            command: run.command,
            accel: chosen,
            state_error: run.state_error,
        });
    }
}

struct Attempt {
    exit: GuestExit,
    scanner: ConsoleScanner,
    last_console_line: String,
    ready_after: Option<Duration>,
    command: String,
    state_error: Option<String>,
}

/// Kills QEMU on every exit path, including panics unwinding through `boot`.
struct KillOnDrop(Arc<duct::ReaderHandle>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        // Reap it now: duct does not kill on drop and would otherwise leave a zombie.
        let _ = self.0.try_wait();
    }
}

enum FromGuest {
    Line(String),
    Eof,
}

fn run_once(
    spec: &BootSpec,
    accel: ResolvedAccel,
    attempt: u32,
    on_event: &mut dyn FnMut(BootEvent),
) -> Result<Attempt> {
    let log_offset = start_console_log(spec, attempt)?;
    let cmdline = guest_cmdline(spec, accel);
    let plan = QemuPlan {
        accel,
        machine: spec.machine,
        cpus: spec.cpus,
        memory_mb: spec.memory_mb,
        kernel: &spec.kernel,
        initramfs: &spec.initramfs,
        cmdline,
        console_log: &spec.console_log,
    };
    let mut argv = args::qemu_args(&plan);
    // The monitor socket, when the state is saved or restored (removed on return).
    let monitor = match &spec.state {
        Some(state) => {
            let dir = tempfile::Builder::new()
                .prefix(&crate::leftovers::prefix("qmp"))
                .tempdir()
                .context("creating a folder for the QMP socket")?;
            argv.extend(state_args(state, &dir.path().join("qmp.sock")));
            Some(dir)
        }
        None => None,
    };
    let qmp_socket = monitor.as_ref().map(|d| d.path().join("qmp.sock"));
    let command = args::render(&argv);
    let launched = Instant::now();
    let (expression, port_input) = match &spec.state {
        Some(StateFile::RestoreFrom { .. }) => {
            let (read, write) = std::io::pipe().context("a pipe for the results port")?;
            (qemu_command(&argv).stdin_file(read), Some(write))
        }
        _ => (qemu_expression(&argv), None),
    };
    let reader = Arc::new(
        expression
            .reader()
            .with_context(|| format!("cannot start {QEMU_BINARY}"))?,
    );
    let guard = KillOnDrop(reader.clone());
    let mut state_error: Option<String> = None;
    // A restored guest is resumed and given its input by a thread, so the watchdog
    // below bounds that too; on failure the thread kills QEMU.
    let resumer = match (&spec.state, port_input, &qmp_socket) {
        (Some(StateFile::RestoreFrom { input, .. }), Some(port), Some(sock)) => {
            let (input, sock, r) = (input.clone(), sock.clone(), reader.clone());
            Some(std::thread::spawn(move || {
                let result = resume(&sock, port, &input);
                if result.is_err() {
                    let _ = r.kill();
                }
                result.err().map(|e| format!("{e:#}"))
            }))
        }
        _ => None,
    };

    // Result lines are read on a thread so the watchdog can time out a silent guest.
    let (tx, rx) = mpsc::channel();
    let r = reader.clone();
    let reader_thread = std::thread::spawn(move || {
        let mut lines = BufReader::new(&*r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    if tx.send(FromGuest::Line(s)).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(FromGuest::Eof);
    });

    let mut scanner = ConsoleScanner::default();
    let mut follower = LogFollower::new(&spec.console_log, log_offset);
    let mut ready_after = None;
    let mut last_line_at = launched;
    let total_deadline = launched + spec.total_timeout;
    // Set when the console says the kernel halted: QEMU gets HALT_GRACE to exit by
    // itself (a power-off that reaches it), then is ended; the run ended cleanly.
    let mut halted_at: Option<Instant> = None;
    let mut ended_after_halt = false;
    let killed_for = loop {
        for p in follower.poll(&mut scanner).unwrap_or_default() {
            on_event(BootEvent::Problem(p));
        }
        let now = Instant::now();
        if scanner.ended().is_some() && halted_at.is_none() {
            halted_at = Some(now);
        }
        if let Some(at) = halted_at.filter(|_| !ended_after_halt) {
            if now >= at + HALT_GRACE {
                // Result lines still in flight arrive before the reader's EOF.
                let _ = reader.kill();
                ended_after_halt = true;
            }
        }
        let (deadline, why) = match ready_after {
            None => (launched + spec.ready_timeout, GuestExit::ReadyTimeout),
            Some(_) => (last_line_at + spec.idle_timeout, GuestExit::IdleTimeout),
        };
        let (deadline, why) = if total_deadline <= deadline {
            (total_deadline, GuestExit::TotalTimeout)
        } else {
            (deadline, why)
        };
        if now >= deadline {
            break Some(why);
        }
        if crate::interrupt::requested().is_some() {
            break Some(GuestExit::Interrupted);
        }
        let wait = match halted_at.filter(|_| !ended_after_halt) {
            Some(at) => TICK
                .min(deadline - now)
                .min((at + HALT_GRACE).saturating_duration_since(now)),
            None => TICK.min(deadline - now),
        };
        match rx.recv_timeout(wait) {
            Ok(FromGuest::Line(line)) => {
                last_line_at = Instant::now();
                if let (Some(StateFile::SaveTo(file)), Some(sock)) = (&spec.state, &qmp_socket) {
                    if line == crate::resume::WAITING_LINE {
                        // QEMU quits after saving; its exit ends this loop.
                        state_error = save(sock, file).err().map(|e| format!("{e:#}"));
                        if state_error.is_some() {
                            let _ = reader.kill();
                        }
                    }
                }
                if ready_after.is_none() {
                    let after = last_line_at - launched;
                    ready_after = Some(after);
                    on_event(BootEvent::Ready { attempt, after });
                }
                on_event(BootEvent::ResultLine(line));
            }
            Ok(FromGuest::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    };

    if killed_for.is_some() {
        let _ = reader.kill();
    }
    // After EOF (or kill) the reader thread has reaped QEMU; wait for it to finish.
    let _ = reader_thread.join();
    if let Some(t) = resumer {
        state_error = state_error.or(t.join().unwrap_or(Some("the resume thread died".into())));
    }
    drop(monitor);
    let status = wait_status(&reader);
    drop(guard);
    // QEMU has exited, so the console log is complete: read the rest.
    for p in follower
        .poll(&mut scanner)
        .unwrap_or_default()
        .into_iter()
        .chain(scanner.finish())
    {
        on_event(BootEvent::Problem(p));
    }
    let exit = match killed_for {
        Some(why) => why,
        // A terminal's Ctrl-C reaches QEMU too: that death is the interrupt's.
        None if crate::interrupt::requested().is_some() => GuestExit::Interrupted,
        None if ended_after_halt => classify_halt(&scanner),
        None => classify_exit(status, &scanner),
    };
    let last_console_line = scanner.last_line();
    Ok(Attempt {
        exit,
        scanner,
        last_console_line,
        ready_after,
        command,
        state_error,
    })
}

/// Monitor socket, and for a restore the incoming migration stream.
fn state_args(state: &StateFile, qmp: &std::path::Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp.display()).into(),
    ];
    if let StateFile::RestoreFrom { state, .. } = state {
        v.push("-incoming".into());
        v.push(format!("exec:cat {}", shell_quote(state)).into());
    }
    v
}

/// QEMU runs `exec:` migration commands through /bin/sh.
fn shell_quote(path: &std::path::Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', "'\\''"))
}

/// Bytes per second allowed to a state save: 8 GiB/s, i.e. as fast as QEMU can.
const SAVE_BANDWIDTH: u64 = 8 << 30;

/// Pauses the guest, streams its state into `file` (a temporary name its caller
/// commits), and ends QEMU.
fn save(sock: &std::path::Path, file: &std::path::Path) -> Result<()> {
    use serde_json::json;
    let mut qmp = super::qmp::Qmp::connect(sock, Duration::from_secs(10))?;
    qmp.execute("stop", json!({}))?;
    // QEMU caps migration at 128 MiB/s by default (meant for a live network link);
    // a stopped guest written to a local file need not wait for that.
    qmp.execute(
        "migrate-set-parameters",
        json!({ "max-bandwidth": SAVE_BANDWIDTH }),
    )?;
    // QEMU writes into a file opened here (`fd:`) rather than `exec:cat > FILE`: it
    // reports "completed" before it closes the pipe and waits for that `cat`, so a
    // state read at once may still be growing; its own writes to an fd are done.
    let saved = (|| {
        let out =
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
        qmp.send_fd("sockmatrix-state", out.as_fd())?;
        qmp.execute("migrate", json!({ "uri": "fd:sockmatrix-state" }))?;
        qmp.wait_for(Duration::from_secs(120), "the state to be saved", |q| {
            let r = q.execute("query-migrate", json!({}))?;
            Ok(match r["status"].as_str() {
                Some("completed") => Some(Ok(())),
                Some("failed") | Some("cancelled") => Some(Err(r.to_string())),
                _ => None,
            })
        })?
        .map_err(|e| anyhow::anyhow!("saving the VM state failed: {e}"))
    })();
    if let Err(e) = saved {
        let _ = std::fs::remove_file(file);
        return Err(e);
    }
    let _ = qmp.execute("quit", json!({}));
    Ok(())
}

/// Waits for the incoming state to be loaded, resumes the guest, then hands the
/// agent its input on the results port.
fn resume(sock: &std::path::Path, mut port: std::io::PipeWriter, input: &[u8]) -> Result<()> {
    use serde_json::json;
    let mut qmp = super::qmp::Qmp::connect(sock, Duration::from_secs(10))?;
    let status = qmp.wait_for(Duration::from_secs(30), "the state to load", |q| {
        let s = q.status()?;
        Ok((s != "inmigrate").then_some(s))
    })?;
    if status != "paused" && status != "running" {
        anyhow::bail!("the saved state did not load (VM status {status})");
    }
    if status == "paused" {
        qmp.execute("cont", json!({}))?;
    }
    port.write_all(input).context("sending the plan")?;
    // The write end stays open until QEMU ends: EOF on stdin is not the guest's business.
    qmp.wait_closed();
    drop(port);
    Ok(())
}

/// How QEMU ended: its exit code or the signal that killed it, and its stderr.
struct QemuStatus {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
}

/// Exit status and stderr of a QEMU that has ended (or been killed).
fn wait_status(reader: &duct::ReaderHandle) -> Option<QemuStatus> {
    // The reader thread saw EOF, so QEMU is gone or going; bound the wait anyway.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        match reader.try_wait() {
            Ok(Some(out)) => {
                use std::os::unix::process::ExitStatusExt;
                return Some(QemuStatus {
                    code: out.status.code(),
                    signal: out.status.signal(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
    let _ = reader.kill();
    None
}

/// A clean QEMU exit is a power-off unless the console shows a panic
/// (panic=-1 + -no-reboot also ends QEMU with status 0).
fn classify_exit(status: Option<QemuStatus>, scanner: &ConsoleScanner) -> GuestExit {
    match status {
        Some(QemuStatus { code: Some(0), .. }) => match scanner.panic_line() {
            Some(line) => GuestExit::Panicked {
                line: line.to_string(),
            },
            None => GuestExit::PoweredOff,
        },
        Some(QemuStatus {
            code,
            signal,
            stderr,
        }) => GuestExit::QemuFailed {
            status: code,
            signal,
            stderr_tail: tail(&stderr, STDERR_TAIL),
        },
        None => GuestExit::QemuFailed {
            status: None,
            signal: None,
            stderr_tail: "QEMU exit status unavailable".into(),
        },
    }
}

/// A guest whose kernel halted ended like one that powered off, unless it panicked.
fn classify_halt(scanner: &ConsoleScanner) -> GuestExit {
    match scanner.panic_line() {
        Some(line) => GuestExit::Panicked {
            line: line.to_string(),
        },
        None => GuestExit::PoweredOff,
    }
}

fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().rev().nth(max.saturating_sub(1)) {
        Some((i, _)) if i > 0 => format!("...{}", &s[i..]),
        _ => s.to_string(),
    }
}

/// Appends an attempt marker to the console log; returns where this attempt's output starts.
fn start_console_log(spec: &BootSpec, attempt: u32) -> Result<u64> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.console_log)
        .with_context(|| format!("cannot open console log {}", spec.console_log.display()))?;
    writeln!(
        f,
        "=== sockmatrix: attempt {attempt}, kernel {} ===",
        spec.kernel.display()
    )?;
    Ok(f.metadata()?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: Option<i32>, signal: Option<i32>, stderr: &str) -> Option<QemuStatus> {
        Some(QemuStatus {
            code,
            signal,
            stderr: stderr.into(),
        })
    }

    #[test]
    fn clean_exit_with_panic_line_is_panicked() {
        let mut s = ConsoleScanner::default();
        s.feed(b"Kernel panic - not syncing: Attempted to kill init!\n");
        assert_eq!(
            classify_exit(exited(Some(0), None, ""), &s),
            GuestExit::Panicked {
                line: "Kernel panic - not syncing: Attempted to kill init!".into()
            }
        );
        assert_eq!(
            classify_exit(exited(Some(0), None, ""), &ConsoleScanner::default()),
            GuestExit::PoweredOff
        );
    }

    #[test]
    fn nonzero_or_signal_is_qemu_failed() {
        let s = ConsoleScanner::default();
        let got = classify_exit(exited(Some(1), None, "qemu: could not load kernel\n"), &s);
        assert_eq!(
            got,
            GuestExit::QemuFailed {
                status: Some(1),
                signal: None,
                stderr_tail: "qemu: could not load kernel".into()
            }
        );
        assert_eq!(
            got.to_string(),
            "QEMU failed (exit status 1): qemu: could not load kernel"
        );
        // Killed by a signal: the signal is named, not "status None".
        let killed = classify_exit(exited(None, Some(9), ""), &s);
        assert_eq!(killed.to_string(), "QEMU was killed by SIGKILL");
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef", 3), "...def");
        assert_eq!(tail("abc", 3), "abc");
    }

    #[test]
    fn missing_kernel_is_a_clear_error() {
        let spec = BootSpec::new("/nonexistent/vmlinuz", "/nonexistent/initrd", "/tmp/x.log");
        let err = boot(&spec, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("kernel image not found"), "{err}");
    }
}
