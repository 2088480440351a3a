//! SIGINT and SIGTERM during a run. Once `install`ed, the first one only sets a flag:
//! the runner polls it, stops its guests, removes its temporary files, keeps the
//! results already saved, and the command exits 130 (SIGINT) or 143 (SIGTERM). A
//! second signal ends the process at once with the same code.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

use signal_hook::consts::{SIGINT, SIGTERM};

/// The signal number received (a second one exits, so this is the first); 0 while none.
static RECEIVED: AtomicUsize = AtomicUsize::new(0);
/// Armed by the first signal: the second one exits at once.
static ARMED: AtomicBool = AtomicBool::new(false);

/// A termination signal that asked the run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt(pub i32);

impl Interrupt {
    /// The shell's convention: 128 + the signal number (130 SIGINT, 143 SIGTERM).
    pub fn exit_code(self) -> u8 {
        (128 + self.0).clamp(0, 255) as u8
    }
}

impl fmt::Display for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&signal_name(self.0))
    }
}

/// `SIGKILL` for 9; `signal 77` for a number without a name.
pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

/// Turns SIGINT and SIGTERM into the flag `requested` reads. Idempotent.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for signal in [SIGINT, SIGTERM] {
            // Order matters: the shutdown check runs before the flag is set, so only
            // a second signal finds it armed.
            let registered =
                signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, &ARMED)
                    .and_then(|_| signal_hook::flag::register(signal, &ARMED))
                    .and_then(|_| {
                        signal_hook::flag::register_usize(signal, &RECEIVED, signal as usize)
                    });
            if let Err(e) = registered {
                eprintln!("warning: cannot handle {}: {e}", signal_name(signal));
            }
        }
    });
}

/// The termination signal received, if any.
pub fn requested() -> Option<Interrupt> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(Interrupt(signal as i32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_exit_codes() {
        assert_eq!(Interrupt(2).exit_code(), 130);
        assert_eq!(Interrupt(15).exit_code(), 143);
        assert_eq!(Interrupt(15).to_string(), "SIGTERM");
        assert_eq!(signal_name(9), "SIGKILL");
    }
}
