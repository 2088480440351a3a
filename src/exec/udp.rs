//! UDP datagram groups and the tally of which socket received each datagram.

use std::io::Read;
use std::net::SocketAddr;

use serde_json::json;
use socket2::SockAddr;

use super::clients::fairness;
use super::sockets::{new_socket, Table};
use crate::case::{Family, Proto};

/// What a `datagrams` step sent: its count, for `lost` in the tally.
pub struct Sent {
    pub sent: u32,
}

/// The datagram's index as a big-endian word (what a cBPF `ld [0]` reads), then
/// the group's name (what the tally recognises).
fn payload(group: &str, i: u32) -> Vec<u8> {
    let mut data = i.to_be_bytes().to_vec();
    data.extend_from_slice(group.as_bytes());
    data
}

fn is_of_group(data: &[u8], group: &str) -> bool {
    data.len() > 4 && &data[4..] == group.as_bytes()
}

/// Sends `count` datagrams tagged with the group name. Each comes from a fresh
/// socket (a fresh source port, so reuseport hashing spreads them) unless `from`
/// names a socket to send them all from.
pub fn send(
    table: &Table,
    group: &str,
    to: SocketAddr,
    count: u32,
    from: Option<&str>,
    family: Family,
) -> (Sent, u32) {
    let target = SockAddr::from(to);
    let (mut sent, mut errors) = (0, 0);
    for i in 0..count {
        let data = payload(group, i);
        let result = match from {
            Some(name) => table.with(name, |s| s.send_to(&data, &target)),
            None => new_socket(Proto::Udp, family).and_then(|s| s.send_to(&data, &target)),
        };
        match result {
            Ok(_) => sent += 1,
            Err(_) => errors += 1,
        }
    }
    (Sent { sent }, errors)
}

/// Drains each socket in `among` and counts the datagrams of `group` it holds.
/// A socket that cannot be read (closed, never created) is an error naming it: a
/// count of 0 would claim it received nothing.
pub fn tally(
    table: &Table,
    group: &str,
    sent: u32,
    among: &[String],
    wait: std::time::Duration,
) -> Result<Vec<(String, serde_json::Value)>, (String, std::io::Error)> {
    // Loopback delivers while sending, so the datagrams are usually all there at
    // once: wait up to `wait` only for those not received yet (some may never come).
    let deadline = std::time::Instant::now() + wait;
    let mut counts: Vec<(String, u64)> = among.iter().map(|n| (n.clone(), 0)).collect();
    loop {
        for (name, n) in counts.iter_mut() {
            *n += drain(table, name, group).map_err(|e| (name.clone(), e))?;
        }
        let received: u64 = counts.iter().map(|(_, n)| n).sum();
        if received >= u64::from(sent) || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let received: u64 = counts.iter().map(|(_, n)| n).sum();
    let values: Vec<u64> = counts.iter().map(|(_, n)| *n).collect();
    let mut obs = vec![
        (
            "lost".to_string(),
            json!(u64::from(sent).saturating_sub(received)),
        ),
        ("fairness".to_string(), fairness(&values)),
    ];
    obs.extend(counts.into_iter().map(|(name, n)| (name, json!(n))));
    Ok(obs)
}

/// Reads every datagram queued on `name`; returns how many belong to `group`.
fn drain(table: &Table, name: &str, group: &str) -> std::io::Result<u64> {
    table.with(name, |s| {
        s.set_nonblocking(true)?;
        let mut n = 0u64;
        // `Read for &Socket` is recv(2) into an initialised buffer: no unsafe.
        let mut reader = s;
        let mut buf = [0u8; 256];
        while let Ok(len) = reader.read(&mut buf) {
            let bytes = &buf[..len];
            if is_of_group(bytes, group) {
                n += 1;
            }
        }
        Ok(n)
    })
}
