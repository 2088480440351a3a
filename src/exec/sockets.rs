//! The case's named sockets and the syscalls done on them, each turned into an
//! observation (`ok` or an errno name).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::creds;
use crate::case::{AcceptMode, Creds, Family, PortSpec, Proto, SockOptions, Target};
use crate::errno;

/// IPPROTO_MPTCP (include/uapi/linux/in.h; the libc crate does not name it).
const IPPROTO_MPTCP: libc::c_int = 262;

/// A connection some listener accepted: the client's address as the server saw it.
pub struct Accepted {
    pub peer: SocketAddr,
    /// The listener-side address of the connection (what the client reached).
    pub local: SocketAddr,
    /// Held open so the client sees an established peer; None once handed to a name.
    pub conn: Option<Socket>,
}

pub type AcceptedList = Arc<Mutex<Vec<Accepted>>>;

pub struct Entry {
    /// None once closed, or when creation failed.
    pub socket: Option<Socket>,
    pub proto: Proto,
    pub creds: Option<Creds>,
    pub listened: bool,
    pub accepted: AcceptedList,
    /// Where it was bound, remembered so "the port of X" still means something
    /// after X is closed (TIME_WAIT cases rebind it).
    pub last_local: Option<SocketAddr>,
}

#[derive(Default)]
pub struct Table {
    pub entries: BTreeMap<String, Entry>,
}

pub fn outcome(result: io::Result<()>) -> String {
    match result {
        Ok(()) => "ok".to_string(),
        Err(e) => errno::of_io(&e),
    }
}

fn ebadf() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

pub fn new_socket(proto: Proto, family: Family) -> io::Result<Socket> {
    let domain = match family {
        Family::Ipv4 => Domain::IPV4,
        Family::Ipv6 => Domain::IPV6,
    };
    let (ty, p) = match proto {
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
        Proto::Sctp => (Type::SEQPACKET, Protocol::from(libc::IPPROTO_SCTP)),
        Proto::Mptcp => (Type::STREAM, Protocol::from(IPPROTO_MPTCP)),
    };
    Socket::new(domain, ty, Some(p))
}

/// Unmaps `::ffff:a.b.c.d` so that addresses compare the same from either family.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

impl Table {
    /// Creates a socket and sets its options, recording one observation per call.
    pub fn create(
        &mut self,
        name: &str,
        proto: Proto,
        family: Family,
        options: &SockOptions,
        creds: Option<Creds>,
    ) -> Vec<(String, String)> {
        let mut obs = Vec::new();
        let socket = creds::as_user(creds, || new_socket(proto, family));
        let socket = match socket {
            Ok(s) => {
                obs.push((String::new(), "ok".to_string()));
                let o = options;
                let mut set =
                    |key: &str, r: io::Result<()>| obs.push((format!(".{key}"), outcome(r)));
                if let Some(v) = o.reuseaddr {
                    set("reuseaddr", s.set_reuse_address(v));
                }
                if let Some(v) = o.reuseport {
                    set("reuseport", s.set_reuse_port(v));
                }
                if let Some(v) = o.v6only {
                    set("v6only", s.set_only_v6(v));
                }
                if let Some(cpu) = o.incoming_cpu {
                    set("incoming_cpu", s.set_cpu_affinity(cpu as usize));
                }
                if let Some(dev) = &o.bindtodevice {
                    set("bindtodevice", s.bind_device(Some(dev.as_bytes())));
                }
                if let Some((lo, hi)) = o.local_port_range {
                    set("local_port_range", set_local_port_range(&s, lo, hi));
                }
                if let Some(v) = o.bind_address_no_port {
                    set(
                        "bind_address_no_port",
                        super::sockopt::set(
                            &s,
                            libc::SOL_IP,
                            libc::IP_BIND_ADDRESS_NO_PORT,
                            &libc::c_int::from(v),
                        ),
                    );
                }
                if let Some(v) = o.freebind {
                    // At SOL_IP for IPv6 sockets too: the kernel hands IP-level
                    // options of an IPv6 socket to ip_setsockopt (one flag for both).
                    set(
                        "freebind",
                        super::sockopt::set(
                            &s,
                            libc::SOL_IP,
                            libc::IP_FREEBIND,
                            &libc::c_int::from(v),
                        ),
                    );
                }
                if let Some(qlen) = o.fastopen {
                    let qlen = qlen as libc::c_int;
                    set(
                        "fastopen",
                        super::sockopt::set(&s, libc::IPPROTO_TCP, libc::TCP_FASTOPEN, &qlen),
                    );
                }
                if let Some(addr) = o.multicast_if {
                    set("multicast_if", s.set_multicast_if_v4(&addr));
                }
                if let Some(v) = o.multicast_all {
                    set("multicast_all", s.set_multicast_all_v4(v));
                }
                if let Some(group) = o.multicast_join {
                    // On lo, the one interface of a fresh namespace.
                    let joined = s.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST);
                    set("multicast_join", joined);
                }
                Some(s)
            }
            Err(e) => {
                obs.push((String::new(), errno::of_io(&e)));
                None
            }
        };
        let entry = Entry {
            socket,
            proto,
            creds,
            listened: false,
            accepted: Arc::default(),
            last_local: None,
        };
        self.entries.insert(name.to_string(), entry);
        obs
    }

    pub fn entry(&self, name: &str) -> &Entry {
        self.entries
            .get(name)
            .expect("validation checked socket names")
    }

    /// Runs a syscall on a live socket with the socket's credentials.
    pub fn with<T>(&self, name: &str, f: impl FnOnce(&Socket) -> io::Result<T>) -> io::Result<T> {
        let entry = self.entry(name);
        let socket = entry.socket.as_ref().ok_or_else(ebadf)?;
        creds::as_user(entry.creds, || f(socket))
    }

    /// The socket's address, or where it was bound before it was closed.
    pub fn local_addr(&self, name: &str) -> io::Result<SocketAddr> {
        match self.with(name, |s| s.local_addr()) {
            Ok(addr) => addr
                .as_socket()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
            Err(e) => self.entry(name).last_local.ok_or(e),
        }
    }

    fn remember_local(&mut self, name: &str) {
        let addr = self
            .with(name, |s| s.local_addr())
            .ok()
            .and_then(|a| a.as_socket());
        if addr.is_some() {
            self.entries.get_mut(name).expect("validated").last_local = addr;
        }
    }

    pub fn port(&self, spec: &PortSpec) -> io::Result<u16> {
        match spec {
            PortSpec::Number(n) => Ok(*n),
            PortSpec::Of(name) => Ok(self.local_addr(name)?.port()),
        }
    }

    /// The address a target names; a wildcard bind means "this family's loopback".
    pub fn resolve(&self, target: &Target) -> io::Result<SocketAddr> {
        match target {
            Target::Addr { addr, port } => Ok(SocketAddr::new(*addr, self.port(port)?)),
            Target::Sock(name) => {
                let addr = self.local_addr(name)?;
                Ok(SocketAddr::new(loopback_for(addr.ip()), addr.port()))
            }
        }
    }

    pub fn bind(&mut self, name: &str, addr: IpAddr, port: &PortSpec) -> io::Result<()> {
        let port = self.port(port)?;
        self.with(name, |s| {
            s.bind(&SockAddr::from(SocketAddr::new(addr, port)))
        })?;
        self.remember_local(name);
        Ok(())
    }

    pub fn listen(&mut self, name: &str, backlog: i32) -> io::Result<()> {
        self.entries.get_mut(name).expect("validated").listened = true;
        // Listeners only ever accept, and never block doing it: `accept` and `serve`
        // threads share the file description, so the flag is set once, here.
        self.with(name, |s| {
            s.listen(backlog).and_then(|()| s.set_nonblocking(true))
        })
    }

    pub fn connect(&mut self, name: &str, to: &Target, timeout_ms: u64) -> io::Result<()> {
        let addr = SockAddr::from(self.resolve(to)?);
        let proto = self.entry(name).proto;
        self.with(name, |s| match proto {
            Proto::Tcp | Proto::Mptcp => {
                // connect_timeout leaves the socket blocking whatever it was: a
                // listener (`listen` made it nonblocking) would then block the next
                // `accept` until the case's budget ran out.
                let nonblocking = s.nonblocking()?;
                let result = s.connect_timeout(&addr, std::time::Duration::from_millis(timeout_ms));
                if nonblocking {
                    s.set_nonblocking(true)?;
                }
                match result {
                    // socket2 calls POLLHUP without a pending error a failure of its
                    // own ("no error set after POLLHUP", observed as `Other`). A socket
                    // shut down before connect() always polls POLLHUP, connected or
                    // not: what the kernel did is whether it now has a peer.
                    Err(e) if e.raw_os_error().is_none() && e.kind() == io::ErrorKind::Other => {
                        s.peer_addr().map(drop)
                    }
                    r => r,
                }
            }
            Proto::Udp | Proto::Sctp => s.connect(&addr),
        })?;
        self.remember_local(name);
        Ok(())
    }

    pub fn close(&mut self, name: &str) -> io::Result<()> {
        let entry = self.entries.get_mut(name).expect("validated");
        entry.socket.take().map(drop).ok_or_else(ebadf)
    }

    /// Accepts up to `max` queued connections (all when None) the way `mode` says,
    /// waiting up to `wait_ms`. Returns how many, and the error that stopped it, if
    /// any; Err when the wait the mode names could not even be set up (a count of
    /// 0 would then claim nothing came).
    pub fn accept(
        &self,
        name: &str,
        max: Option<u32>,
        wait_ms: u64,
        mode: AcceptMode,
    ) -> io::Result<(u32, io::Result<()>)> {
        let entry = self.entry(name);
        let Some(listener) = entry.socket.as_ref() else {
            return Ok((0, Err(ebadf())));
        };
        match mode {
            AcceptMode::Nonblocking => {
                if wait_ms > 0 {
                    poll_readable(listener, wait_ms);
                }
                Ok(accept_settled(listener, &entry.accepted, max))
            }
            AcceptMode::Epoll => {
                epoll_readable(listener, wait_ms)?;
                Ok(accept_queued(listener, &entry.accepted, max))
            }
            AcceptMode::Blocking => accept_blocking(listener, &entry.accepted, max, wait_ms),
        }
    }

    /// Gives the last connection `listener` accepted a name of its own.
    pub fn adopt_last_accepted(&mut self, listener: &str, name: &str) -> io::Result<()> {
        let conn = self
            .entry(listener)
            .accepted
            .lock()
            .unwrap()
            .last_mut()
            .and_then(|a| a.conn.take());
        let conn = conn.ok_or_else(|| io::Error::from_raw_os_error(libc::EAGAIN))?;
        let last_local = conn.local_addr().ok().and_then(|a| a.as_socket());
        let entry = Entry {
            socket: Some(conn),
            proto: Proto::Tcp,
            creds: None,
            listened: false,
            accepted: Arc::default(),
            last_local,
        };
        self.entries.insert(name.to_string(), entry);
        Ok(())
    }

    /// The listener's accept queue length (TCP_INFO's tcpi_unacked on a listener).
    pub fn queue_len(&self, name: &str) -> io::Result<u32> {
        self.with(name, |s| tcp_info(s).map(|i| i.tcpi_unacked))
    }

    /// The queue length once it has stopped changing for `SETTLE` (see there).
    pub fn settled_queue_len(&self, name: &str) -> io::Result<u32> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut last = self.queue_len(name)?;
        loop {
            std::thread::sleep(SETTLE);
            let now = self.queue_len(name)?;
            if now == last || std::time::Instant::now() >= deadline {
                return Ok(now);
            }
            last = now;
        }
    }

    /// Accepted connections of a listener whose SYN carried data the listener took
    /// (TCP Fast Open): TCPI_OPT_SYN_DATA in the child's TCP_INFO. Connections
    /// handed to a name of their own are not counted.
    pub fn syn_data_count(&self, name: &str) -> io::Result<usize> {
        const TCPI_OPT_SYN_DATA: u8 = 32;
        let accepted = self.entry(name).accepted.lock().unwrap();
        let mut n = 0;
        for conn in accepted.iter().filter_map(|a| a.conn.as_ref()) {
            if tcp_info(conn)?.tcpi_options & TCPI_OPT_SYN_DATA != 0 {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Connections accepted so far on a listener (by `accept` or `serve`).
    pub fn accepted_count(&self, name: &str) -> usize {
        self.entry(name).accepted.lock().unwrap().len()
    }
}

/// How long a queue must stay empty before "all that are queued" is believed: a
/// client's connect() can return before the server side has queued the child (the
/// final ACK is processed a little later on a slow guest).
const SETTLE: std::time::Duration = std::time::Duration::from_millis(30);

/// Accepts until `max`, or until nothing more arrives for `SETTLE`.
fn accept_settled(
    listener: &Socket,
    into: &AcceptedList,
    max: Option<u32>,
) -> (u32, io::Result<()>) {
    let mut total = 0;
    loop {
        let left = max.map(|m| m - total);
        let (n, result) = accept_queued(listener, into, left);
        total += n;
        if result.is_err() || max.is_some_and(|m| total >= m) {
            return (total, result);
        }
        if !poll_readable(listener, SETTLE.as_millis() as u64) {
            return (total, Ok(()));
        }
    }
}

pub fn accept_queued(
    listener: &Socket,
    into: &AcceptedList,
    max: Option<u32>,
) -> (u32, io::Result<()>) {
    let mut n = 0;
    while max.is_none_or(|m| n < m) {
        match listener.accept() {
            Ok((conn, peer)) => {
                let peer = peer
                    .as_socket()
                    .map(canonical)
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                let local = conn
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .map(canonical)
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                into.lock().unwrap().push(Accepted {
                    peer,
                    local,
                    conn: Some(conn),
                });
                n += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // ECONNABORTED: a queued child died before accept; the kernel skips it.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            Err(e) => return (n, Err(e)),
        }
    }
    (n, Ok(()))
}

/// Blocking accept() calls, each bounded by SO_RCVTIMEO; the listener goes back to
/// non-blocking afterwards.
fn accept_blocking(
    listener: &Socket,
    into: &AcceptedList,
    max: Option<u32>,
    wait_ms: u64,
) -> io::Result<(u32, io::Result<()>)> {
    listener.set_nonblocking(false)?;
    listener.set_read_timeout(Some(std::time::Duration::from_millis(wait_ms.max(1))))?;
    // With the timeout set, "would block" now means "nothing came in time".
    let result = accept_queued(listener, into, max);
    let restore = listener
        .set_read_timeout(None)
        .and_then(|()| listener.set_nonblocking(true));
    match (result, restore) {
        ((n, Ok(())), Err(e)) => Ok((n, Err(e))),
        (result, _) => Ok(result),
    }
}

/// Waits with epoll (not poll) until the listener is readable or the time is up.
fn epoll_readable(listener: &Socket, wait_ms: u64) -> io::Result<bool> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?;
    epoll
        .add(listener, EpollEvent::new(EpollFlags::EPOLLIN, 0))
        .map_err(io::Error::from)?;
    let mut events = [EpollEvent::empty()];
    let timeout =
        EpollTimeout::try_from(wait_ms.min(i32::MAX as u64) as i32).unwrap_or(EpollTimeout::NONE);
    let n = epoll.wait(&mut events, timeout).map_err(io::Error::from)?;
    Ok(n > 0)
}

/// IP_LOCAL_PORT_RANGE: the high port in the upper 16 bits, the low in the lower.
fn set_local_port_range(s: &Socket, lo: u16, hi: u16) -> io::Result<()> {
    const IP_LOCAL_PORT_RANGE: libc::c_int = 51;
    let value: u32 = (u32::from(hi) << 16) | u32::from(lo);
    super::sockopt::set(s, libc::SOL_IP, IP_LOCAL_PORT_RANGE, &value)
}

/// Waits until `fd` is readable or the time is up; true when readable.
pub fn poll_readable(fd: &impl AsFd, wait_ms: u64) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(wait_ms).unwrap_or(PollTimeout::MAX);
    poll(&mut fds, timeout).is_ok_and(|n| n > 0)
}

pub fn tcp_info(s: &Socket) -> io::Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain old data and the length is passed in.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        );
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info)
    }
}

fn loopback_for(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_unspecified()) => {
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())
        }
        other => other,
    }
}
