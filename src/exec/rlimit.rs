//! Raises the open-file limit of a case's process to what the kernel allows
//! (`fs.nr_open`), so a case can hold tens of thousands of sockets.

/// Soft and hard RLIMIT_NOFILE to `fs.nr_open` where that is higher (root may raise
/// the hard limit; otherwise the soft limit goes up to the hard one).
/// How many open files this process may hold now (its soft RLIMIT_NOFILE).
pub fn open_files_allowed() -> u64 {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
        return 0;
    }
    current.rlim_cur
}

pub fn raise_nofile() -> std::io::Result<u64> {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let want = libc::rlimit {
        rlim_cur: current.rlim_cur.max(nr_open),
        rlim_max: current.rlim_max.max(nr_open),
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        return Ok(want.rlim_cur);
    }
    // Not allowed to raise the hard limit: take what it allows.
    let soft = libc::rlimit {
        rlim_cur: current.rlim_max,
        rlim_max: current.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(soft.rlim_cur)
}

#[cfg(test)]
mod tests {
    fn limits() -> (u64, u64) {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a plain syscall on a valid struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
        (r.rlim_cur, r.rlim_max)
    }

    /// From a low soft limit, up to nr_open where allowed (root with
    /// CAP_SYS_RESOURCE, as in the guest) and at least to the hard limit elsewhere.
    #[test]
    fn the_limit_goes_up_in_a_child() {
        let finished = super::super::isolate::run_isolated(
            "rlimit",
            std::time::Duration::from_secs(10),
            |_| {
                let (_, hard) = limits();
                let low = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: hard,
                };
                // SAFETY: as above.
                assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
                let got = super::raise_nofile().unwrap();
                let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                let (soft, _) = limits();
                if soft == got && got >= hard && got >= nr_open.min(hard) && got > 256 {
                    crate::observe::Outcome::Ran
                } else {
                    crate::observe::Outcome::Skipped {
                        reason: format!("got {got}, soft {soft}, hard {hard}, nr_open {nr_open}"),
                    }
                }
            },
        );
        assert_eq!(finished.outcome, crate::observe::Outcome::Ran);
    }
}
