//! The per-case network namespace: a fresh one with `lo` up, and its sysctls.

use std::io;

use nix::sched::{unshare, CloneFlags};

/// Moves the calling thread into a new network namespace. Threads it spawns later
/// inherit it; the namespace goes away with the case's last socket.
pub fn enter_fresh() -> io::Result<()> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    set_up("lo")
}

/// Brings an interface up with the classic ioctl pair (no netlink needed).
fn set_up(ifname: &str) -> io::Result<()> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // SAFETY: ifreq is plain old data; the name fits (checked) and is NUL-terminated.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        let name = ifname.as_bytes();
        assert!(name.len() < req.ifr_name.len());
        for (dst, src) in req.ifr_name.iter_mut().zip(name) {
            *dst = *src as libc::c_char;
        }
        use std::os::fd::AsRawFd;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// Writes a sysctl as seen from this thread's namespace; the result is an observation
/// (`ok`, or an errno name such as ENOENT when the kernel lacks the knob).
pub fn write_sysctl(name: &str, value: &str) -> String {
    match std::fs::write(sysctl_path(name), value) {
        Ok(()) => "ok".to_string(),
        Err(e) => crate::errno::of_io(&e),
    }
}

pub fn sysctl_exists(name: &str) -> bool {
    std::path::Path::new(&sysctl_path(name)).exists()
}
