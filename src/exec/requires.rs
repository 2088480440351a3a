//! Checking a case's requirements on the running kernel, from inside its namespace.

use crate::case::{KernelVersion, Requirement};

/// None when every requirement holds, else the first reason to skip.
pub fn unmet(requires: &[Requirement], release: &str) -> Option<String> {
    requires.iter().find_map(|req| check(req, release).err())
}

fn check(req: &Requirement, release: &str) -> Result<(), String> {
    let ok = match req {
        Requirement::Root => nix::unistd::geteuid().is_root(),
        Requirement::Ipv6 => std::path::Path::new("/proc/net/if_inet6").exists(),
        // The bpf() syscall exists when this sysctl does (CONFIG_BPF_SYSCALL).
        Requirement::Bpf => {
            std::path::Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists()
        }
        Requirement::Sysctl(name) => super::netns::sysctl_exists(name),
        Requirement::Kernel(req) => {
            KernelVersion::from_release(release).is_some_and(|v| req.matches(v))
        }
        Requirement::Cpus(n) => {
            std::thread::available_parallelism().map_or(1, |p| p.get()) >= *n as usize
        }
    };
    if ok {
        return Ok(());
    }
    Err(match req {
        Requirement::Root => "needs root (uid 0)".to_string(),
        Requirement::Ipv6 => "needs IPv6".to_string(),
        Requirement::Bpf => "needs the bpf() syscall".to_string(),
        Requirement::Sysctl(name) => format!("kernel has no sysctl {name}"),
        Requirement::Kernel(req) => format!("needs kernel {req}, this is {release}"),
        Requirement::Cpus(n) => format!("needs {n} CPUs"),
    })
}
