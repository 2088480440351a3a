//! Runs each case in a forked child process, as the kselftest harness forks each
//! test: a case that overruns its budget is killed with every thread and socket it
//! has (its network namespace goes with them), and what it observed until then
//! still comes back, streamed over a pipe as it is recorded.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::observe::{Observations, Outcome};

/// One line from the child: an observation as soon as it is made, then the end.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Message {
    /// The step at this line starts (so a timeout can name it).
    Step {
        line: usize,
    },
    Observed {
        key: String,
        value: serde_json::Value,
    },
    Ended {
        outcome: Outcome,
    },
}

/// The child's side of the pipe: observations leave as they are recorded.
pub struct Recorder {
    out: Mutex<File>,
}

impl Recorder {
    pub fn record(&self, key: String, value: serde_json::Value) {
        self.send(&Message::Observed { key, value });
    }

    pub fn step(&self, line: usize) {
        self.send(&Message::Step { line });
    }

    fn send(&self, message: &Message) {
        let mut line = serde_json::to_vec(message).expect("messages always serialize");
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // One write per line: the parent never sees half of one from two threads.
        let _ = out.write_all(&line);
    }
}

/// What came back from the child.
pub struct Finished {
    pub outcome: Outcome,
    pub observations: Observations,
}

/// Runs `body` in a child process with its own process group and waits at most
/// `budget` for it. Never panics; the child never returns into the caller.
pub fn run_isolated(
    name: &str,
    budget: Duration,
    body: impl FnOnce(&Recorder) -> Outcome,
) -> Finished {
    let error = |message: String| Finished {
        outcome: Outcome::Error {
            message,
            line: None,
        },
        observations: Observations::new(),
    };
    let (read, write) = match nix::unistd::pipe() {
        Ok(ends) => ends,
        Err(e) => return error(format!("cannot create the case's pipe: {e}")),
    };
    // SAFETY: the child only runs the case (no locks of other threads are needed:
    // it allocates, makes syscalls and writes to its pipe) and ends with _exit.
    match unsafe { fork() } {
        Err(e) => error(format!("cannot fork the case's process: {e}")),
        Ok(ForkResult::Child) => {
            drop(read);
            child(name, write, body)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write);
            // Also set here, so that a kill right after fork reaches the group.
            let _ = nix::unistd::setpgid(child, child);
            parent(child, read, budget)
        }
    }
}

fn child(name: &str, write: OwnedFd, body: impl FnOnce(&Recorder) -> Outcome) -> ! {
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    // SAFETY: prctl with integer and string arguments.
    unsafe {
        // Dies with the thread that forked it (a runner killed mid-case).
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // `ps` and /proc show which case this is; its threads inherit the name.
        if let Ok(comm) = std::ffi::CString::new(format!("case {name}")) {
            libc::prctl(libc::PR_SET_NAME, comm.as_ptr());
        }
    }
    let recorder = Recorder {
        out: Mutex::new(File::from(write)),
    };
    let outcome =
        std::panic::catch_unwind(AssertUnwindSafe(|| body(&recorder))).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Outcome::Error {
                message: format!("executor panicked: {message}"),
                line: None,
            }
        });
    recorder.send(&Message::Ended { outcome });
    // SAFETY: ends the child at once: no destructors or atexit handlers of the
    // parent's copy run, and every thread of the case goes with it.
    unsafe { libc::_exit(0) }
}

fn parent(child: Pid, read: OwnedFd, budget: Duration) -> Finished {
    let deadline = Instant::now() + budget;
    let mut pipe = File::from(read);
    let mut pending = Vec::new();
    let mut observations = Observations::new();
    let mut outcome = None;
    let mut step = None;
    let mut eof = false;
    while outcome.is_none() && !eof {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if !readable(&pipe, left) {
            continue;
        }
        let mut buf = [0u8; 8192];
        match pipe.read(&mut buf) {
            Ok(0) => eof = true,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => eof = true,
        }
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            match serde_json::from_slice::<Message>(&line) {
                Ok(Message::Step { line }) => step = Some(line),
                Ok(Message::Observed { key, value }) => {
                    observations.insert(key, value);
                }
                Ok(Message::Ended { outcome: o }) => outcome = Some(o),
                Err(_) => {}
            }
        }
    }
    // Whatever happened, nothing of the case outlives this call.
    let _ = killpg(child, Signal::SIGKILL);
    let status = reap(child);
    let outcome = match outcome {
        // A panic or a crash is blamed on the step that was running.
        Some(Outcome::Error { message, line }) => Outcome::Error {
            message,
            line: line.or(step),
        },
        Some(outcome) => outcome,
        None if !eof => Outcome::Timeout {
            after_ms: budget.as_millis() as u64,
            line: step,
        },
        None => Outcome::Error {
            message: format!("the case's process ended without reporting: {status}"),
            line: step,
        },
    };
    Finished {
        outcome,
        observations,
    }
}

fn readable(pipe: &File, wait: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = wait.as_millis().min(1000) as u16;
    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(ms)).is_ok_and(|n| n > 0)
}

/// Waits for the killed child (a task stuck in the kernel may take a moment) and
/// says how it ended.
fn reap(child: Pid) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(WaitStatus::StillAlive) => return "it did not die when killed".into(),
            Ok(WaitStatus::Exited(_, code)) => return format!("it exited with status {code}"),
            Ok(WaitStatus::Signaled(_, signal, _)) => return format!("it was killed by {signal}"),
            Ok(other) => return format!("{other:?}"),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return format!("waitpid: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case process that dies without reporting (a crash) is an error saying
    /// how it ended, blamed on the step it was running; what it saw is kept.
    #[test]
    fn a_crashed_case_is_an_error_at_its_step() {
        let finished = run_isolated("crash", Duration::from_secs(10), |recorder| {
            recorder.step(7);
            recorder.record("bind.a".into(), serde_json::json!("ok"));
            std::process::abort()
        });
        match &finished.outcome {
            Outcome::Error {
                message,
                line: Some(7),
            } => assert!(message.contains("SIGABRT"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(finished.observations["bind.a"], serde_json::json!("ok"));
    }

    #[test]
    fn a_panic_in_a_case_is_an_error_at_its_step() {
        let finished = run_isolated("panic", Duration::from_secs(10), |recorder| {
            recorder.step(12);
            panic!("boom")
        });
        match &finished.outcome {
            Outcome::Error {
                message,
                line: Some(12),
            } => assert!(message.contains("executor panicked: boom"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
