//! Connection requests held in SYN_RECV (and sockets in other states, such as
//! TIME_WAIT), counted from `/proc/thread-self/net/tcp{,6}`.
//!
//! Since 4.4 ("tcp/dccp: install syn_recv requests into ehash table") a request lives
//! in the established hash, and the tables list it with state 03 (SYN_RECV). The
//! case's namespace is this thread's, not the process's: hence `thread-self`.

use std::collections::HashSet;
use std::io;

const TCP_SYN_RECV: u8 = 0x03;
/// The state column of a TIME_WAIT socket (include/net/tcp_states.h).
pub const TCP_TIME_WAIT: u8 = 0x06;

/// Requests in SYN_RECV whose local port is `port`, over IPv4 and IPv6.
pub fn syn_recv_count(port: u16) -> io::Result<usize> {
    count_in_state(port, TCP_SYN_RECV)
}

/// Sockets in `state` (the table's hex state) whose local port is `port`, over
/// IPv4 and IPv6.
pub fn count_in_state(port: u16, state: u8) -> io::Result<usize> {
    let mut count = 0;
    for text in tables(&["tcp", "tcp6"])? {
        count += rows(&text)
            .filter(|r| r.local_port == port && r.state == state)
            .count();
    }
    Ok(count)
}

/// The local ports any socket holds in the tables named, e.g. `tcp`, `tcp6`, in
/// any state (listening, connected, TIME_WAIT; bound, for UDP). A TCP socket that is
/// only bound is in no table. Each read walks the whole hash table (its size is the
/// machine's, not the namespace's), so read it once, not once per socket.
pub fn ports_held(tables_named: &[&str]) -> io::Result<HashSet<u16>> {
    let mut ports = HashSet::new();
    for text in tables(tables_named)? {
        ports.extend(rows(&text).map(|r| r.local_port));
    }
    Ok(ports)
}

/// The text of each `/proc/thread-self/net/<name>` table.
fn tables(names: &[&str]) -> io::Result<Vec<String>> {
    let mut texts = Vec::new();
    for name in names {
        match std::fs::read_to_string(format!("/proc/thread-self/net/{name}")) {
            Ok(text) => texts.push(text),
            // No IPv6 in this kernel: nothing to count there.
            Err(e) if name.ends_with('6') && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(texts)
}

/// One line of a /proc/net/{tcp,udp}{,6} table.
struct Row {
    local_port: u16,
    state: u8,
}

/// Lines of a /proc/net/tcp table: `sl local_address rem_address st ...`, with the
/// address as hex `ADDR:PORT` and the state in hex. Lines that do not parse are
/// skipped.
fn rows(table: &str) -> impl Iterator<Item = Row> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (_, port) = cols.get(1)?.rsplit_once(':')?;
        Some(Row {
            local_port: u16::from_str_radix(port, 16).ok()?,
            state: u8::from_str_radix(cols.get(3)?, 16).ok()?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_of_one_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:A0B2 03 00000000:00000000 02:00000063 00000000     0        0 0 1 0000000000000000
   2: 0100007F:1F90 0100007F:A0B4 03 00000000:00000000 02:00000063 00000000     0        0 0 1 0000000000000000
   3: 0100007F:1F91 0100007F:A0B6 03 00000000:00000000 02:00000063 00000000     0        0 0 1 0000000000000000
   4: 0100007F:A0B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000
";
        let count = |port: u16, state: u8| {
            rows(table)
                .filter(|r| r.local_port == port && r.state == state)
                .count()
        };
        assert_eq!(count(0x1f90, TCP_SYN_RECV), 2);
        assert_eq!(count(0x1f91, TCP_SYN_RECV), 1);
        assert_eq!(count(0xa0b2, TCP_SYN_RECV), 0);
        assert_eq!(count(0xa0b2, 0x01), 1);
        assert_eq!(count(0xa0b2, TCP_TIME_WAIT), 0);
    }
}
