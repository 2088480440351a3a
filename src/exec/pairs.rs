//! The bind conflict matrix: every ordered pair of addresses under each option, the
//! first socket bound and brought to a state (bound, listening, connected,
//! TIME_WAIT), the second bound to the same port, then a tail of plain binds.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde_json::json;
use socket2::{SockAddr, Socket};

use super::requests;
use super::sockets::{new_socket, outcome, poll_readable};
use crate::case::{Family, PairAddr, PairOption, PairState, Proto};

/// How long the first socket may take to reach its state (a connect and accept on
/// lo, or the FIN exchange that leaves it in TIME_WAIT).
const SETUP_WAIT: Duration = Duration::from_secs(2);

/// Port 0 binds tried before giving up on finding a port no earlier pair used.
const MAX_PORT_TRIES: usize = 64;

fn open(proto: Proto, a: &PairAddr, option: PairOption) -> std::io::Result<Socket> {
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

/// Listeners the first sockets connect to (connected and TIME_WAIT states): one on
/// 127.0.0.1 (v4 and v4-mapped sources) and one on ::1 (IPv6 sources).
struct Peers {
    v4: Socket,
    v6: Option<Socket>,
}

impl Peers {
    fn new(proto: Proto) -> std::io::Result<Peers> {
        let listener = |ip: IpAddr| -> std::io::Result<Socket> {
            let family = if ip.is_ipv6() {
                Family::Ipv6
            } else {
                Family::Ipv4
            };
            let s = new_socket(proto, family)?;
            if ip.is_ipv6() {
                s.set_only_v6(true)?;
            }
            s.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
            if matches!(proto, Proto::Tcp | Proto::Mptcp) {
                s.listen(1024)?;
            }
            Ok(s)
        };
        Ok(Peers {
            v4: listener(IpAddr::V4(Ipv4Addr::LOCALHOST))?,
            // A kernel without IPv6 has no pair that would need it.
            v6: listener(IpAddr::V6(Ipv6Addr::LOCALHOST)).ok(),
        })
    }

    /// Where a first socket bound to `from` connects: the loopback of its family,
    /// a v4-mapped address for a v4-mapped source.
    fn target_for(&self, from: &PairAddr) -> std::io::Result<(SocketAddr, &Socket)> {
        let port = |s: &Socket| -> std::io::Result<u16> {
            Ok(s.local_addr()?.as_socket().map_or(0, |a| a.port()))
        };
        match from.addr {
            IpAddr::V4(_) => Ok((
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port(&self.v4)?),
                &self.v4,
            )),
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Ok((
                SocketAddr::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(), port(&self.v4)?),
                &self.v4,
            )),
            IpAddr::V6(_) => {
                let v6 = self
                    .v6
                    .as_ref()
                    .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT))?;
                Ok((SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port(v6)?), v6))
            }
        }
    }
}

/// What the step observes: `<key>.<first>.<second>.<option>` (the second bind's
/// result) and `<key>.<first>.<second>.<option>.<label>` for each bind of `then`;
/// `first:<errno>` when the first socket could not even be set up, `second:<errno>`
/// for a tail bind whose socket could not be created.
pub struct Matrix<'a> {
    pub proto: Proto,
    pub addrs: &'a [PairAddr],
    pub options: &'a [PairOption],
    pub state: PairState,
    pub then: &'a [String],
}

impl Matrix<'_> {
    /// Err: the listeners the first sockets connect to could not be set up.
    pub fn run(&self, key: &str) -> Result<Vec<(String, serde_json::Value)>, String> {
        let peers = match self.state {
            PairState::Connected | PairState::TimeWait => Some(
                Peers::new(self.proto)
                    .map_err(|e| format!("cannot set up the peer listeners: {e}"))?,
            ),
            PairState::Bound | PairState::Listening => None,
        };
        let tail: Vec<&PairAddr> = self
            .then
            .iter()
            .filter_map(|l| self.addrs.iter().find(|a| &a.label == l))
            .collect();
        let mut obs = Vec::new();
        // Ports other sockets hold (the peer listeners, an earlier step's TIME_WAIT
        // sockets), read once: this step creates every socket after it.
        let mut used = self
            .ports_held()
            .map_err(|e| format!("cannot read the namespace's socket tables: {e}"))?;
        for first in self.addrs {
            for second in self.addrs {
                for &option in self.options {
                    let name = format!("{key}.{}.{}.{}", first.label, second.label, option.label());
                    let results =
                        self.pair(peers.as_ref(), &mut used, first, second, option, &tail);
                    let mut results = results.into_iter();
                    obs.push((name.clone(), json!(results.next().unwrap_or_default())));
                    for (addr, result) in tail.iter().zip(results) {
                        obs.push((format!("{name}.{}", addr.label), json!(result)));
                    }
                }
            }
        }
        Ok(obs)
    }

    /// The second bind's result, then each tail bind's; all on the first's port.
    fn pair(
        &self,
        peers: Option<&Peers>,
        used: &mut HashSet<u16>,
        first: &PairAddr,
        second: &PairAddr,
        option: PairOption,
        tail: &[&PairAddr],
    ) -> Vec<String> {
        let (_held, port) = match self.setup_first(peers, used, first, option) {
            Ok(held) => held,
            Err(e) => {
                let failed = format!("first:{}", outcome(Err(e)));
                return vec![failed; 1 + tail.len()];
            }
        };
        let bind = |s: std::io::Result<Socket>, a: &PairAddr| {
            s.and_then(|s| {
                s.bind(&SockAddr::from(SocketAddr::new(a.addr, port)))
                    .map(|()| s)
            })
        };
        // Every socket stays bound until the pair is done, as in bind_wildcard.c.
        let mut bound = Vec::new();
        let mut results = Vec::new();
        let second = bind(open(self.proto, second, option), second);
        results.push(result_of(&second));
        bound.extend(second.ok());
        for addr in tail {
            let s = bind(open(self.proto, addr, PairOption::None), addr);
            results.push(result_of(&s));
            bound.extend(s.ok());
        }
        results
    }

    /// The first socket in its state, with what must stay open meanwhile, and its port.
    fn setup_first(
        &self,
        peers: Option<&Peers>,
        used: &mut HashSet<u16>,
        first: &PairAddr,
        option: PairOption,
    ) -> std::io::Result<(Vec<Socket>, u16)> {
        let (s, port) = self.fresh_port(used, first, option)?;
        match (self.state, peers) {
            (PairState::Bound, _) => Ok((vec![s], port)),
            (PairState::Listening, _) => {
                if matches!(self.proto, Proto::Tcp | Proto::Mptcp) {
                    s.listen(16)?;
                }
                Ok((vec![s], port))
            }
            (PairState::Connected, Some(peers)) => {
                let (to, listener) = peers.target_for(first)?;
                let child = self.connect(&s, to, listener)?;
                Ok((vec![s].into_iter().chain(child).collect(), port))
            }
            (PairState::TimeWait, Some(peers)) => {
                let (to, listener) = peers.target_for(first)?;
                let child = self.connect(&s, to, listener)?;
                // The first socket closes first (it will hold TIME_WAIT), then
                // the server side answers with its own FIN.
                drop(s);
                drop(child);
                wait_time_wait(port)?;
                Ok((Vec::new(), port))
            }
            (PairState::Connected | PairState::TimeWait, None) => {
                unreachable!("peers exist for these states")
            }
        }
    }

    /// The first socket, bound to a port not in `used`: no earlier pair's, none
    /// another socket of the namespace held when the step began. An earlier pair's
    /// TIME_WAIT socket outlives it, and a port 0 bind with SO_REUSEADDR may be
    /// given its port; a port 0 bind of 0.0.0.0 may be given the port of a V6ONLY
    /// socket (the IPv6 peer listener, an earlier step's [::] V6ONLY TIME_WAIT),
    /// which does not overlap it. The second bind would then meet that stranger,
    /// not the pair: [::] after 0.0.0.0 with SO_REUSEADDR gave EADDRINUSE on 7.2 in
    /// some runs.
    fn fresh_port(
        &self,
        used: &mut HashSet<u16>,
        first: &PairAddr,
        option: PairOption,
    ) -> std::io::Result<(Socket, u16)> {
        // Held while retrying, so that the kernel offers a different port each time.
        let mut refused = Vec::new();
        loop {
            let s = open(self.proto, first, option)?;
            s.bind(&SockAddr::from(SocketAddr::new(first.addr, 0)))?;
            let port = s.local_addr()?.as_socket().map_or(0, |a| a.port());
            if used.insert(port) {
                return Ok((s, port));
            }
            if refused.len() >= MAX_PORT_TRIES {
                return Err(std::io::Error::from_raw_os_error(libc::EADDRINUSE));
            }
            refused.push(s);
        }
    }

    /// The ports sockets of the namespace hold in this protocol's tables
    /// (listening, connected, TIME_WAIT; bound, for UDP). SCTP has no such table
    /// here: only the pairs' own ports are avoided.
    fn ports_held(&self) -> std::io::Result<HashSet<u16>> {
        match self.proto {
            Proto::Tcp | Proto::Mptcp => requests::ports_held(&["tcp", "tcp6"]),
            Proto::Udp => requests::ports_held(&["udp", "udp6"]),
            Proto::Sctp => Ok(HashSet::new()),
        }
    }

    /// Connects `s` to `to` and (TCP) accepts the server side of it.
    fn connect(
        &self,
        s: &Socket,
        to: SocketAddr,
        listener: &Socket,
    ) -> std::io::Result<Option<Socket>> {
        s.connect_timeout(&SockAddr::from(to), SETUP_WAIT)
            .or_else(|e| match self.proto {
                // UDP connect never waits; connect_timeout is TCP's.
                Proto::Udp => s.connect(&SockAddr::from(to)),
                _ => Err(e),
            })?;
        if !matches!(self.proto, Proto::Tcp | Proto::Mptcp) {
            return Ok(None);
        }
        if !poll_readable(listener, SETUP_WAIT.as_millis() as u64) {
            return Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT));
        }
        Ok(Some(listener.accept()?.0))
    }
}

/// Waits until a TIME_WAIT socket holds `port` (the FIN exchange runs in softirq
/// context, after the close() calls have returned).
fn wait_time_wait(port: u16) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + SETUP_WAIT;
    loop {
        if requests::count_in_state(port, requests::TCP_TIME_WAIT)? > 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn result_of(bound: &std::io::Result<Socket>) -> String {
    match bound {
        Ok(_) => "ok".to_string(),
        Err(e) => crate::errno::of_io(e),
    }
}

#[cfg(test)]
mod tests {
    //! Real sockets on this machine's kernel, in a fresh namespace (root).

    /// A port 0 bind of 0.0.0.0 may be given the port of a V6ONLY listener on
    /// [::1] (they do not overlap); the pair must not take it, or [::] with
    /// SO_REUSEADDR meets that listener and gets EADDRINUSE. The port range holds
    /// only the two listeners' odd ports (which bind(0) prefers) and two free ones.
    #[test]
    fn the_first_socket_never_takes_a_port_another_socket_holds() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the executor tests need root (network namespaces), as CI has"
        );
        let stranger = |name: &str, port: u16| {
            format!(
                "  - socket: {name}\n    family: ipv6\n    v6only: true\n  - bind: {name}\n    addr: \"::1\"\n    port: {port}\n  - listen: {name}\n"
            )
        };
        let yaml = format!(
            "summary: t\nrequires: [root, ipv6]\nsysctls:\n  net.ipv4.ip_local_port_range: \"40001 40004\"\nsteps:\n{}{}  - bind_pairs: m\n    proto: tcp\n    state: bound\n    addrs:\n      any4: 0.0.0.0\n      any6: {{addr: \"::\", v6only: false}}\n    options: [reuseaddr]\n",
            stranger("s1", 40001),
            stranger("s3", 40003),
        );
        let plan = crate::case::load_str("t", std::path::Path::new("cases/t.yaml"), &yaml)
            .unwrap_or_else(|e| panic!("{e}"))
            .plan;
        let run = crate::exec::run_case(&plan, &crate::host::release());
        let obs = |k: &str| run.observations.get(k).cloned();
        assert_eq!(obs("listen.s3"), Some("ok".into()), "{run:?}");
        assert_eq!(obs("bind_pairs.m.any4.any4.reuseaddr"), Some("ok".into()));
        assert_eq!(
            obs("bind_pairs.m.any4.any6.reuseaddr"),
            Some("ok".into()),
            "{run:?}"
        );
    }
}
