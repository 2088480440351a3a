//! Groups of TCP clients (the seed's `client` load) and accounting for every one of
//! them: accepted by which listener, reset, refused, timed out or still pending.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::json;
use socket2::{SockAddr, Socket};

use super::sockets::{canonical, new_socket, Table};
use crate::case::{Family, Fastopen, Proto};
use crate::errno;

#[derive(Debug, Clone, PartialEq)]
pub enum ConnectState {
    Connected,
    Refused,
    TimedOut,
    Failed(String),
}

pub struct Client {
    /// None when socket() itself failed.
    pub socket: Option<Socket>,
    pub local: Option<SocketAddr>,
    /// The address it reached (its peer), so two clients of groups aimed at different
    /// ports that share an ephemeral local port are still told apart.
    pub remote: Option<SocketAddr>,
    pub state: ConnectState,
    /// Where an earlier `account` found it for good. Looking consumes what it saw
    /// (a reset is reported once, then reads as end-of-file; a probe byte draws a
    /// reset), so a later `account` must not look again.
    pub settled: Option<Settled>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Reset,
    Closed,
    Orphaned,
}

pub struct Group {
    pub clients: Vec<Client>,
}

/// Starts `count` non-blocking connects, one every `interval`, then waits for each
/// to finish, up to `timeout` after the last one started.
pub fn connect_group(
    to: SocketAddr,
    family: Family,
    count: u32,
    interval: Duration,
    timeout: Duration,
    fastopen: Option<Fastopen>,
) -> Group {
    let target = SockAddr::from(to);
    let mut clients = Vec::with_capacity(count as usize);
    for i in 0..count {
        if i > 0 && !interval.is_zero() {
            std::thread::sleep(interval);
        }
        clients.push(start_connect(&target, family, fastopen));
    }
    let deadline = Instant::now() + timeout;
    // In flight: TimedOut until proven otherwise.
    let mut pending: Vec<usize> = (0..clients.len())
        .filter(|i| clients[*i].state == ConnectState::TimedOut)
        .collect();
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        // Only sockets that exist can be polled; the rest stay TimedOut.
        let (polled, mut fds): (Vec<usize>, Vec<PollFd>) = pending
            .iter()
            .filter_map(|i| {
                let socket = clients[*i].socket.as_ref()?;
                Some((*i, PollFd::new(socket.as_fd(), PollFlags::POLLOUT)))
            })
            .unzip();
        let wait = PollTimeout::from(left.as_millis().min(1000) as u16);
        match poll(&mut fds, wait) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break,
        }
        let answered: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut still = Vec::new();
        for (i, answered) in polled.into_iter().zip(answered) {
            let client = &mut clients[i];
            match &client.socket {
                Some(socket) if answered => {
                    client.state = match socket.take_error() {
                        Ok(None) => ConnectState::Connected,
                        Ok(Some(e)) | Err(e) => classify(&e),
                    };
                }
                _ => still.push(i),
            }
        }
        pending = still;
        if Instant::now() >= deadline {
            break;
        }
    }
    for client in &mut clients {
        let socket = client.socket.as_ref();
        client.local = socket
            .and_then(|s| s.local_addr().ok())
            .and_then(|a| a.as_socket())
            .map(canonical);
        client.remote = socket
            .and_then(|s| s.peer_addr().ok())
            .and_then(|a| a.as_socket())
            .map(canonical)
            .or(Some(canonical(to)));
    }
    Group { clients }
}

fn start_connect(target: &SockAddr, family: Family, fastopen: Option<Fastopen>) -> Client {
    let socket = new_socket(Proto::Tcp, family).and_then(|s| s.set_nonblocking(true).map(|()| s));
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            return Client {
                socket: None,
                local: None,
                remote: None,
                state: ConnectState::Failed(errno::of_io(&e)),
                settled: None,
            }
        }
    };
    let started = match fastopen {
        None => socket.connect(target),
        Some(how) => open_fast(&socket, target, how),
    };
    let state = match started {
        Ok(()) => ConnectState::Connected,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => ConnectState::TimedOut,
        Err(e) => classify(&e),
    };
    Client {
        socket: Some(socket),
        local: None,
        remote: None,
        state,
        settled: None,
    }
}

/// Starts a TCP Fast Open connection carrying one byte in its SYN. Ok never means
/// "connected" here: the handshake is still under way (EINPROGRESS), and the
/// poll for writability that every client gets decides.
fn open_fast(socket: &Socket, target: &SockAddr, how: Fastopen) -> io::Result<()> {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    let sent = match how {
        Fastopen::Sendto => socket.send_to_with_flags(b"!", target, flags | libc::MSG_FASTOPEN),
        Fastopen::Connect => {
            let on: libc::c_int = 1;
            super::sockopt::set(socket, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT, &on)?;
            match socket.connect(target) {
                // Deferred: the first write sends the SYN, with the byte.
                Ok(()) => socket.send_with_flags(b"!", flags),
                Err(e) => Err(e),
            }
        }
    };
    match sent {
        Ok(_) => Err(io::Error::from_raw_os_error(libc::EINPROGRESS)),
        Err(e) => Err(e),
    }
}

fn classify(e: &io::Error) -> ConnectState {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => ConnectState::Refused,
        Some(libc::ETIMEDOUT) => ConnectState::TimedOut,
        _ => ConnectState::Failed(errno::of_io(e)),
    }
}

/// The `clients.<g>.*` observation names, in the order they are recorded.
pub const CONNECT_KEYS: [&str; 5] = ["connected", "refused", "timed_out", "failed", "first_error"];

/// The `clients.<g>.*` observations: how the connects ended.
pub fn connect_observations(group: &Group) -> Vec<(&'static str, serde_json::Value)> {
    let count =
        |f: &dyn Fn(&ConnectState) -> bool| group.clients.iter().filter(|c| f(&c.state)).count();
    // Which errno "failed" means, so that a change of reason shows in a diff.
    let first_error = group
        .clients
        .iter()
        .find_map(|c| match &c.state {
            ConnectState::Failed(e) => Some(e.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "none".to_string());
    CONNECT_KEYS
        .into_iter()
        .zip([
            json!(count(&|s| *s == ConnectState::Connected)),
            json!(count(&|s| *s == ConnectState::Refused)),
            json!(count(&|s| *s == ConnectState::TimedOut)),
            json!(count(&|s| matches!(s, ConnectState::Failed(_)))),
            json!(first_error),
        ])
        .collect()
}

/// Every connected client writes one byte, as a client's first request would; a
/// handshake whose final ACK was lost is completed by this segment. Returns how many
/// writes the kernel took.
pub fn send_one_byte(group: &Group) -> usize {
    group
        .clients
        .iter()
        .filter(|c| c.state == ConnectState::Connected)
        .filter_map(|c| c.socket.as_ref())
        .filter(|s| {
            s.send_with_flags(b"!", libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                .is_ok_and(|n| n == 1)
        })
        .count()
}

/// The `account.<g>.*` observation names besides `accepted.<listener>`, in the order
/// they are recorded.
pub const ACCOUNT_KEYS: [&str; 9] = [
    "reset",
    "orphaned",
    "closed",
    "refused",
    "timed_out",
    "failed",
    "pending",
    "total",
    "fairness",
];

/// Where each client of a group ended up. Every client lands in exactly one bucket.
/// Accounting again sees what changed since, and nothing its own probes caused.
pub fn account(group: &mut Group, table: &Table) -> Vec<(String, serde_json::Value)> {
    // Keyed by the connection's two ends: clients aimed at different ports may share
    // an ephemeral local port.
    let mut owner: BTreeMap<(SocketAddr, SocketAddr), &str> = BTreeMap::new();
    let mut per_listener: BTreeMap<&str, u64> = BTreeMap::new();
    for (name, entry) in &table.entries {
        if entry.listened {
            per_listener.insert(name, 0);
            for acc in entry.accepted.lock().unwrap().iter() {
                owner.insert((acc.peer, acc.local), name);
            }
        }
    }
    let (mut reset, mut closed, mut refused, mut timed_out, mut failed) = (0, 0, 0, 0, 0);
    let mut orphaned = 0;
    // Connected, not accepted, and silent so far: queued somewhere, or orphaned.
    let mut silent: Vec<usize> = Vec::new();
    for i in 0..group.clients.len() {
        let client = &group.clients[i];
        match &client.state {
            ConnectState::Refused => refused += 1,
            ConnectState::TimedOut => timed_out += 1,
            ConnectState::Failed(_) => failed += 1,
            ConnectState::Connected => {
                let ends = client.local.zip(client.remote);
                if let Some(name) = ends.and_then(|ends| owner.get(&ends)) {
                    *per_listener.get_mut(name).expect("owners are listeners") += 1;
                    continue;
                }
                let settled = match (client.settled, client.socket.as_ref()) {
                    (Some(settled), _) => Some(settled),
                    (None, None) => {
                        failed += 1;
                        continue;
                    }
                    (None, Some(socket)) => match peek(socket) {
                        Peek::Reset => Some(Settled::Reset),
                        Peek::Closed => Some(Settled::Closed),
                        Peek::Nothing => None,
                    },
                };
                group.clients[i].settled = settled;
                match settled {
                    Some(Settled::Reset) => reset += 1,
                    Some(Settled::Closed) => closed += 1,
                    Some(Settled::Orphaned) => orphaned += 1,
                    None => silent.push(i),
                }
            }
        }
    }
    let probed: Vec<&Socket> = silent
        .iter()
        .filter_map(|i| group.clients[*i].socket.as_ref())
        .collect();
    let found = probe_silent(&probed);
    for (i, orphan) in silent.iter().zip(&found) {
        if *orphan {
            group.clients[*i].settled = Some(Settled::Orphaned);
        }
    }
    orphaned += found.iter().filter(|o| **o).count();
    let pending = found.len() - found.iter().filter(|o| **o).count();
    let counts: Vec<u64> = per_listener.values().copied().collect();
    let mut obs: Vec<(String, serde_json::Value)> = ACCOUNT_KEYS
        .into_iter()
        .map(String::from)
        .zip([
            json!(reset),
            json!(orphaned),
            json!(closed),
            json!(refused),
            json!(timed_out),
            json!(failed),
            json!(pending),
            json!(group.clients.len()),
            fairness(&counts),
        ])
        .collect();
    obs.extend(
        per_listener
            .into_iter()
            .map(|(name, n)| (format!("accepted.{name}"), json!(n))),
    );
    obs
}

/// Writes one byte on each silent connection, as a client would on first use: a
/// connection whose server side is gone answers with a reset (orphaned); one that
/// waits in a listener's queue takes the byte (pending). Returns, for each, whether
/// it is orphaned.
fn probe_silent(silent: &[&Socket]) -> Vec<bool> {
    if silent.is_empty() {
        return Vec::new();
    }
    for socket in silent {
        let _ = socket.send_with_flags(b"?", libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    silent
        .iter()
        .map(|s| matches!(peek(s), Peek::Reset))
        .collect()
}

enum Peek {
    Reset,
    Closed,
    Nothing,
}

fn peek(socket: &Socket) -> Peek {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    let _ = socket.set_nonblocking(true);
    match socket.peek(&mut buf) {
        Ok(0) => Peek::Closed,
        Ok(_) => Peek::Nothing,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNRESET) | Some(libc::EPIPE)) => {
            Peek::Reset
        }
        Err(_) => Peek::Nothing,
    }
}

/// Jain's fairness index of a distribution: 1.0 is perfectly even, 1/n all on one.
/// Rounded to two decimals so that tiny hash wobbles do not look like changes.
pub fn fairness(counts: &[u64]) -> serde_json::Value {
    let sum: f64 = counts.iter().map(|c| *c as f64).sum();
    let squares: f64 = counts.iter().map(|c| (*c as f64).powi(2)).sum();
    if counts.is_empty() || squares == 0.0 {
        return serde_json::Value::Null;
    }
    let index = sum * sum / (counts.len() as f64 * squares);
    json!((index * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fairness_index() {
        assert_eq!(fairness(&[50, 50]), json!(1.0));
        assert_eq!(fairness(&[100, 0]), json!(0.5));
        assert_eq!(fairness(&[0, 0]), serde_json::Value::Null);
        assert_eq!(fairness(&[30, 70]), json!(0.86));
    }
}
