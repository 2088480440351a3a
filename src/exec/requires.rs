//! Checking a case's requirements on the running kernel, from inside its namespace.

use crate::case::{KernelVersion, Requirement};

/// None when every requirement holds, else the first reason to skip. `uname_version`
/// is `uname -v`: kernel conditions use the upstream version it names, as the
/// host's judge does for expectations (`KernelVersion::from_uname`), so a case is
/// never skipped by one version and judged by another.
pub fn unmet(requires: &[Requirement], release: &str, uname_version: &str) -> Option<String> {
    let version = KernelVersion::from_uname(release, uname_version);
    requires
        .iter()
        .find_map(|req| check(req, release, version).err())
}

fn check(req: &Requirement, release: &str, version: Option<KernelVersion>) -> Result<(), String> {
    let ok = match req {
        Requirement::Root => nix::unistd::geteuid().is_root(),
        Requirement::Ipv6 => std::path::Path::new("/proc/net/if_inet6").exists(),
        // The bpf() syscall exists when this sysctl does (CONFIG_BPF_SYSCALL).
        Requirement::Bpf => {
            std::path::Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists()
        }
        Requirement::Sysctl(name) => super::netns::sysctl_exists(name),
        Requirement::Kernel(req) => version.is_some_and(|v| req.matches(v)),
        Requirement::Cpus(n) => {
            std::thread::available_parallelism().map_or(1, |p| p.get()) >= *n as usize
        }
        // In a guest the agent loaded it before the case (`modules::prepare`); on
        // the host it must be loaded already.
        Requirement::Module(name) => super::modules::present(name, release),
        Requirement::Files(n) => super::rlimit::open_files_allowed() >= *n,
        // The kernel keeps some of the guest's RAM for itself (a 512 MiB guest shows
        // about 480 MiB): 7/8 of the size tells a guest of that size from a smaller one.
        Requirement::Memory(mb) => mem_total_mb().unwrap_or(0) >= u64::from(*mb) * 7 / 8,
    };
    if ok {
        return Ok(());
    }
    Err(match req {
        Requirement::Root => "needs root (uid 0)".to_string(),
        Requirement::Ipv6 => "needs IPv6".to_string(),
        Requirement::Bpf => "needs the bpf() syscall".to_string(),
        Requirement::Sysctl(name) => format!("kernel has no sysctl {name}"),
        Requirement::Kernel(req) => match version {
            Some(v) => format!("needs kernel {req}, this is {v} ({release})"),
            None => format!("needs kernel {req}, this is {release} (version unknown)"),
        },
        Requirement::Cpus(n) => format!("needs {n} CPUs"),
        Requirement::Module(name) => {
            format!("module {name} is not loaded on this kernel ({release}); load it first (modprobe {name})")
        }
        Requirement::Memory(mb) => format!(
            "needs {mb} MiB of memory; this kernel has {} MiB (MemTotal)",
            mem_total_mb().unwrap_or(0)
        ),
        Requirement::Files(n) => format!(
            "needs {n} open files; this process may hold {} (RLIMIT_NOFILE's hard limit: raising it needs CAP_SYS_RESOURCE)",
            super::rlimit::open_files_allowed()
        ),
    })
}

/// `MemTotal` of /proc/meminfo in MiB.
fn mem_total_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's 6.1.192 says `6.1.0-56-cloud-amd64` in `uname -r`: a case needing
    /// 6.1.32 must run there, as its expectations for >= 6.1.32 are judged there.
    #[test]
    fn kernel_condition_uses_the_upstream_version() {
        let req = vec![Requirement::Kernel(">= 6.1.32".parse().unwrap())];
        let release = "6.1.0-56-cloud-amd64";
        let debian = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-10-01)";
        assert_eq!(unmet(&req, release, debian), None);
        let why = unmet(
            &req,
            "6.1.0-9-cloud-amd64",
            "#1 SMP Debian 6.1.27-1 (2023-05-08)",
        );
        assert_eq!(
            why.as_deref(),
            Some("needs kernel >= 6.1.32, this is 6.1.27 (6.1.0-9-cloud-amd64)")
        );
    }

    /// A case needing more descriptors than the process may hold is skipped with the
    /// limit it met, not run to fail with EMFILE half way.
    #[test]
    fn a_files_requirement_compares_with_the_open_files_allowed() {
        let allowed = crate::exec::rlimit::open_files_allowed();
        assert!(allowed > 16);
        assert_eq!(unmet(&[Requirement::Files(16)], "x", "x"), None);
        let why = unmet(&[Requirement::Files(allowed + 1)], "x", "x").unwrap();
        assert!(
            why.starts_with(&format!(
                "needs {} open files; this process may hold {allowed}",
                allowed + 1
            )),
            "{why}"
        );
    }

    /// The host's own MemTotal meets a requirement of 7/8 of it and fails one above.
    #[test]
    fn a_memory_requirement_compares_with_mem_total() {
        let total = mem_total_mb().expect("/proc/meminfo");
        assert_eq!(unmet(&[Requirement::Memory(total as u32)], "x", "x"), None);
        let too_much = (total * 8 / 7 + 16) as u32;
        let why = unmet(&[Requirement::Memory(too_much)], "x", "x").unwrap();
        assert_eq!(
            why,
            format!("needs {too_much} MiB of memory; this kernel has {total} MiB (MemTotal)")
        );
    }
}
