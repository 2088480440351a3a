//! Host mode: runs cases on the kernel this machine is running, in-process.

use crate::case::{Case, KernelVersion};
use crate::judge::{judge, Verdict};
use crate::observe::CaseRun;

/// The kernel id results from host mode are filed under.
pub const HOST_KERNEL: &str = "host";

pub struct HostRun {
    pub release: String,
    /// `uname -v`, where distributions name the upstream version.
    pub uname_version: String,
    pub results: Vec<(CaseRun, Verdict)>,
}

pub fn release() -> String {
    uname().0
}

/// `uname -r` and `uname -v` of the running kernel.
pub fn uname() -> (String, String) {
    nix::sys::utsname::uname()
        .map(|u| {
            (
                u.release().to_string_lossy().into_owned(),
                u.version().to_string_lossy().into_owned(),
            )
        })
        .unwrap_or_default()
}

/// Why host mode cannot run here, if it cannot: it needs root for namespaces.
pub fn preflight() -> Result<(), String> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(
            "`run --host` needs root: every case runs in its own network namespace \
             (unshare CLONE_NEWNET), sets namespace sysctls and may switch uids. \
             Run it with sudo, or use the QEMU runner (`run --kernel ...`), which needs no root."
                .to_string(),
        )
    }
}

/// Runs each case in turn, calling `progress` after each.
pub fn run(cases: &[Case], mut progress: impl FnMut(&Case, &CaseRun, &Verdict)) -> HostRun {
    let (release, uname_version) = uname();
    let version = KernelVersion::from_uname(&release, &uname_version);
    let mut results = Vec::new();
    for case in cases {
        let run = crate::exec::run_case(&case.plan, &release);
        let verdict = judge(case, &run, version);
        progress(case, &run, &verdict);
        results.push((run, verdict));
    }
    HostRun {
        release,
        uname_version,
        results,
    }
}
