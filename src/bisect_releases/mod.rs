//! Bisecting across released kernels: a binary search over releases in version
//! order for the adjacent pair where a case's behaviour changed, skipping releases
//! that cannot judge it. Pure: the caller's probe boots (or looks up) a release.

pub mod rank;

use serde::Serialize;

/// What one release said about the case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The behaviour, as a comparable signature.
    Behaved(String),
    /// Not bootable, the case skipped or errored: says why.
    CannotJudge(String),
}

/// How the search ended; indexes into the release list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// `old` is the last release behaving like the first, `new` the first one after it
    /// behaving otherwise; no judged release lies between them.
    Found { old: usize, new: usize },
    /// The first and last judged releases behave the same.
    NoChange { first: usize, last: usize },
    /// Fewer than two releases could judge the case.
    CouldNotRun,
}

/// The search's record: every probe in the order made.
#[derive(Debug, Clone)]
pub struct Search {
    pub outcome: Outcome,
    pub probes: Vec<(usize, Probe)>,
}

impl Search {
    /// Releases probed (each a boot unless the caller had the answer).
    pub fn probed(&self) -> usize {
        self.probes.len()
    }

    /// Releases that could not judge the case, with why.
    pub fn skipped(&self) -> Vec<(usize, &str)> {
        self.probes
            .iter()
            .filter_map(|(i, p)| match p {
                Probe::CannotJudge(why) => Some((*i, why.as_str())),
                Probe::Behaved(_) => None,
            })
            .collect()
    }
}

/// Searches `n` releases (in version order). Probes the ends first (moving inward
/// past releases that cannot judge), then halves the range between the last release
/// known to behave like the first and the first known to differ. With no skips this
/// probes at most ⌈log2(n)⌉ + 1 releases.
pub fn search(n: usize, mut probe: impl FnMut(usize) -> Probe) -> Search {
    let mut probes: Vec<(usize, Probe)> = Vec::new();
    let mut ask = |i: usize, probes: &mut Vec<(usize, Probe)>| -> Option<String> {
        let p = probe(i);
        probes.push((i, p.clone()));
        match p {
            Probe::Behaved(sig) => Some(sig),
            Probe::CannotJudge(_) => None,
        }
    };
    let done = |outcome, probes| Search { outcome, probes };

    let mut lo = 0;
    let old = loop {
        if lo >= n {
            return done(Outcome::CouldNotRun, probes);
        }
        if let Some(sig) = ask(lo, &mut probes) {
            break sig;
        }
        lo += 1;
    };
    let mut hi = n - 1;
    let new = loop {
        if hi <= lo {
            return done(Outcome::CouldNotRun, probes);
        }
        if let Some(sig) = ask(hi, &mut probes) {
            break sig;
        }
        hi -= 1;
    };
    if old == new {
        return done(
            Outcome::NoChange {
                first: lo,
                last: hi,
            },
            probes,
        );
    }
    // Releases between lo and hi not yet found unable to judge.
    let mut open: Vec<usize> = (lo + 1..hi).collect();
    while !open.is_empty() {
        let mid = open[open.len() / 2];
        match ask(mid, &mut probes) {
            None => open.retain(|&i| i != mid),
            Some(sig) if sig == old => {
                lo = mid;
                open.retain(|&i| i > mid);
            }
            Some(_) => {
                hi = mid;
                open.retain(|&i| i < mid);
            }
        }
    }
    done(Outcome::Found { old: lo, new: hi }, probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behaved(s: &str) -> Probe {
        Probe::Behaved(s.into())
    }

    /// Releases 0..n; the change happens at `at`; `skip` cannot judge.
    fn run(n: usize, at: usize, skip: &[usize]) -> Search {
        search(n, |i| {
            if skip.contains(&i) {
                Probe::CannotJudge(format!("release {i} did not boot"))
            } else if i < at {
                behaved("old")
            } else {
                behaved("new")
            }
        })
    }

    #[test]
    fn finds_every_change_point_within_the_boot_budget() {
        for n in 2..40usize {
            let budget = (n as f64).log2().ceil() as usize + 2;
            for at in 1..n {
                let s = run(n, at, &[]);
                assert_eq!(
                    s.outcome,
                    Outcome::Found {
                        old: at - 1,
                        new: at
                    },
                    "n={n} at={at}"
                );
                assert!(s.probed() <= budget, "n={n} at={at}: {} probes", s.probed());
                let mut seen: Vec<usize> = s.probes.iter().map(|p| p.0).collect();
                seen.dedup();
                assert_eq!(seen.len(), s.probed(), "no release probed twice");
            }
        }
    }

    #[test]
    fn no_change_and_nothing_to_judge() {
        assert_eq!(
            run(8, 8, &[]).outcome,
            Outcome::NoChange { first: 0, last: 7 }
        );
        assert_eq!(run(3, 1, &[0, 1, 2]).outcome, Outcome::CouldNotRun);
        assert_eq!(
            run(3, 1, &[0, 1]).outcome,
            Outcome::CouldNotRun,
            "one judged release is not a range"
        );
        assert_eq!(run(0, 0, &[]).outcome, Outcome::CouldNotRun);
    }

    #[test]
    fn skips_releases_that_cannot_judge() {
        // Ends skipped: the range shrinks inward.
        let s = run(10, 5, &[0, 9]);
        assert_eq!(s.outcome, Outcome::Found { old: 4, new: 5 });
        assert_eq!(s.skipped().len(), 2);
        // The release right after the change cannot judge: the pair is the nearest judged.
        let s = run(10, 5, &[5]);
        assert_eq!(s.outcome, Outcome::Found { old: 4, new: 6 });
        assert_eq!(s.skipped(), vec![(5, "release 5 did not boot")]);
    }

    #[test]
    fn a_third_behaviour_counts_as_changed() {
        let s = search(6, |i| {
            behaved(match i {
                0..=2 => "old",
                3 => "odd",
                _ => "new",
            })
        });
        assert_eq!(s.outcome, Outcome::Found { old: 2, new: 3 });
    }
}
