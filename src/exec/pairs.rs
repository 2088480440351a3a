//! The bind conflict matrix: every ordered pair of addresses under each option, the
//! first socket bound (and listening), the second bound to the same port.

use std::net::SocketAddr;

use serde_json::json;
use socket2::SockAddr;

use super::sockets::{new_socket, outcome};
use crate::case::{Family, PairAddr, PairOption, Proto};

fn open(proto: Proto, a: &PairAddr, option: PairOption) -> std::io::Result<socket2::Socket> {
    let family = if a.addr.is_ipv6() {
        Family::Ipv6
    } else {
        Family::Ipv4
    };
    let s = new_socket(proto, family)?;
    if let Some(v6only) = a.v6only {
        s.set_only_v6(v6only)?;
    }
    match option {
        PairOption::None => {}
        PairOption::Reuseaddr => s.set_reuse_address(true)?,
        PairOption::Reuseport => s.set_reuse_port(true)?,
    }
    Ok(s)
}

/// Observations `<key>.<first>.<second>.<option>`: the second bind's result, or
/// `first:<errno>` when the first socket could not even be set up.
pub fn run(
    key: &str,
    proto: Proto,
    addrs: &[PairAddr],
    options: &[PairOption],
    listen: bool,
) -> Vec<(String, serde_json::Value)> {
    let mut obs = Vec::new();
    for first in addrs {
        for second in addrs {
            for &option in options {
                let name = format!("{key}.{}.{}.{}", first.label, second.label, option.label());
                obs.push((name, json!(pair(proto, first, second, option, listen))));
            }
        }
    }
    obs
}

fn pair(
    proto: Proto,
    first: &PairAddr,
    second: &PairAddr,
    option: PairOption,
    listen: bool,
) -> String {
    let setup = || -> std::io::Result<(socket2::Socket, u16)> {
        let s = open(proto, first, option)?;
        s.bind(&SockAddr::from(SocketAddr::new(first.addr, 0)))?;
        if listen && matches!(proto, Proto::Tcp | Proto::Mptcp) {
            s.listen(16)?;
        }
        let port = s.local_addr()?.as_socket().map_or(0, |a| a.port());
        Ok((s, port))
    };
    let (_held, port) = match setup() {
        Ok(pair) => pair,
        Err(e) => return format!("first:{}", outcome(Err(e))),
    };
    let result = open(proto, second, option)
        .and_then(|s| s.bind(&SockAddr::from(SocketAddr::new(second.addr, port))));
    outcome(result)
}
