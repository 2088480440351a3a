//! A counting gate bounding how many guests run at once, across threads.
//!
//! Guests are CPU-heavy under TCG (one host thread per vCPU), so the number of
//! concurrent guests is limited independently of how many test threads exist.

use std::sync::{Condvar, Mutex};

/// Default number of concurrent guests (the machine has 2 cores).
pub const DEFAULT_GUESTS: usize = 2;

#[derive(Debug)]
pub struct Gate {
    free: Mutex<usize>,
    cv: Condvar,
}

/// Held while a guest runs; dropping it lets the next waiter in.
#[must_use = "the slot is released as soon as the permit is dropped"]
#[derive(Debug)]
pub struct Permit<'a> {
    gate: &'a Gate,
}

impl Gate {
    /// `slots` is clamped to at least 1 so acquire can never deadlock.
    pub fn new(slots: usize) -> Self {
        Gate {
            free: Mutex::new(slots.max(1)),
            cv: Condvar::new(),
        }
    }

    /// Blocks until a slot is free.
    pub fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit { gate: self }
    }

    /// Takes a slot only if one is free now.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if *free == 0 {
            return None;
        }
        *free -= 1;
        Some(Permit { gate: self })
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new(DEFAULT_GUESTS)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // Poisoning cannot leave the counter inconsistent: it is only ever +/-1.
        *self.gate.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.gate.cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    #[test]
    fn never_more_than_n_inside() {
        let gate = Gate::new(2);
        let inside = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let _p = gate.acquire();
                    let now = inside.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(now, SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    inside.fetch_sub(1, SeqCst);
                });
            }
        });
        assert_eq!(peak.load(SeqCst), 2);
    }

    #[test]
    fn try_acquire_and_release() {
        let gate = Gate::new(1);
        let p = gate.try_acquire().unwrap();
        assert!(gate.try_acquire().is_none());
        drop(p);
        assert!(gate.try_acquire().is_some());
        assert!(Gate::new(0).try_acquire().is_some(), "0 is clamped to 1");
    }
}
