//! `socket: NAME`: creates a socket and sets its options, as the case's user.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
#[cfg(feature = "runner")]
use super::{Draft, Gen, Val};
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::{Creds, Family, Proto, SockOptions};
use crate::case::scope::Scope;
use crate::exec::{Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Socket {
    pub name: String,
    pub proto: Proto,
    pub family: Family,
    pub options: SockOptions,
    pub creds: Option<Creds>,
}

/// Each option set yields an observation of its own, e.g. `socket.a.reuseport`.
const OPTIONS: [&str; 12] = [
    "reuseaddr",
    "reuseport",
    "v6only",
    "incoming_cpu",
    "bindtodevice",
    "local_port_range",
    "bind_address_no_port",
    "freebind",
    "fastopen",
    "multicast_if",
    "multicast_all",
    "multicast_join",
];

impl Step for Socket {
    const DOC: Doc = Doc {
        syntax: "socket: NAME",
        fields: "`proto: tcp\\|udp\\|sctp\\|mptcp` (tcp; sctp: one-to-many, needs `requires: [{module: sctp}]`; mptcp: IPPROTO_MPTCP, needs a kernel built with it: `requires: [{sysctl: net.mptcp.enabled}]`), `family: ipv4\\|ipv6` (ipv4), `reuseaddr`, `reuseport`, `v6only` (true/false), `incoming_cpu: N`, `bindtodevice: IFNAME`, `local_port_range: [LOW, HIGH]` (IP_LOCAL_PORT_RANGE), `bind_address_no_port` (IP_BIND_ADDRESS_NO_PORT), `freebind` (IP_FREEBIND), `fastopen: QLEN` (TCP_FASTOPEN, TCP), `multicast_join: GROUP` (IP_ADD_MEMBERSHIP on lo), `multicast_if: ADDR` (IP_MULTICAST_IF), `multicast_all` (IP_MULTICAST_ALL; the three: UDP, IPv4), `as: {uid: U, gid: G}`",
        observes: "`socket.NAME` = `ok`/errno; one per option set, e.g. `socket.NAME.reuseport`",
    };
    const EXPLORE: Explore = Explore::Weight(5);

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let name = fields::name(subject, "a socket name", diags)?;
        if scope.sockets.contains_key(&name) {
            diags.error(
                subject.pos,
                format!("socket `{name}` already exists; pick another name"),
            );
        }
        let proto = fields::proto(f, diags);
        let family = fields::family(f.get("family"), diags).unwrap_or(Family::Ipv4);
        let bool_opt = |f: &mut Fields, key, diags: &mut Diags| {
            f.get(key).and_then(|n| fields::boolean(n, key, diags))
        };
        let options = SockOptions {
            reuseaddr: bool_opt(f, "reuseaddr", diags),
            reuseport: bool_opt(f, "reuseport", diags),
            v6only: bool_opt(f, "v6only", diags),
            incoming_cpu: f
                .get("incoming_cpu")
                .and_then(|n| fields::uint(n, "incoming_cpu", 4096, diags))
                .map(|c| c as u32),
            bindtodevice: f
                .get("bindtodevice")
                .and_then(|n| fields::string(n, "bindtodevice", diags)),
            local_port_range: f
                .get("local_port_range")
                .and_then(|n| port_range(n, diags)),
            bind_address_no_port: bool_opt(f, "bind_address_no_port", diags),
            freebind: bool_opt(f, "freebind", diags),
            fastopen: f
                .get("fastopen")
                .and_then(|n| fields::uint(n, "fastopen", 1 << 20, diags))
                .map(|q| q as u32),
            multicast_if: f
                .get("multicast_if")
                .and_then(|n| ipv4(n, "multicast_if", diags)),
            multicast_all: bool_opt(f, "multicast_all", diags),
            multicast_join: f
                .get("multicast_join")
                .and_then(|n| ipv4(n, "multicast_join", diags)),
        };
        if options.v6only.is_some() && family != Family::Ipv6 {
            diags.error(f.pos(), "v6only only applies to `family: ipv6` sockets");
        }
        let multicast = options.multicast_if.is_some()
            || options.multicast_all.is_some()
            || options.multicast_join.is_some();
        if multicast && (family != Family::Ipv4 || proto != Proto::Udp) {
            diags.error(
                f.pos(),
                "multicast_if, multicast_all and multicast_join apply to `proto: udp` IPv4 sockets",
            );
        }
        if options.fastopen.is_some() && proto != Proto::Tcp {
            diags.error(f.pos(), "fastopen applies to TCP sockets");
        }
        let creds = f.get("as").and_then(|n| creds(n, diags));
        Some(Socket {
            name,
            proto,
            family,
            options,
            creds,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        let o = &self.options;
        let set = [
            o.reuseaddr.is_some(),
            o.reuseport.is_some(),
            o.v6only.is_some(),
            o.incoming_cpu.is_some(),
            o.bindtodevice.is_some(),
            o.local_port_range.is_some(),
            o.bind_address_no_port.is_some(),
            o.freebind.is_some(),
            o.fastopen.is_some(),
            o.multicast_if.is_some(),
            o.multicast_all.is_some(),
            o.multicast_join.is_some(),
        ];
        std::iter::once(key.to_string())
            .chain(
                OPTIONS
                    .iter()
                    .zip(set)
                    .filter(|(_, set)| *set)
                    .map(|(name, _)| format!("{key}.{name}")),
            )
            .collect()
    }

    fn declare(&self, _line: usize, scope: &mut Scope) {
        scope
            .sockets
            .insert(self.name.clone(), (self.proto, self.family));
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        Ok(exec
            .table
            .create(
                &self.name,
                self.proto,
                self.family,
                &self.options,
                self.creds,
            )
            .into_iter()
            .map(|(suffix, v)| (step.at(&suffix), v.into()))
            .collect())
    }

    /// Often the same kind as the socket before (two sockets that can collide), with
    /// a random subset of the options that decide collisions.
    #[cfg(feature = "runner")]
    fn generate(g: &mut Gen) -> Option<Draft> {
        use crate::explore::grammar::{SockInfo, PORT_RANGES};
        use rand::seq::IndexedRandom;
        if g.sockets.len() >= 4 {
            return None;
        }
        let name = format!("s{}", g.sockets.len());
        let prev = g.sockets.last().map(|s| (s.tcp, s.ipv6));
        let (tcp, ipv6) = match prev {
            Some(prev) if g.chance(0.6) => prev,
            _ => (g.chance(0.75), g.chance(0.5)),
        };
        let mut step = Draft::new("socket", &name);
        if !tcp {
            step = step.with("proto", Val::s("udp"));
        }
        if ipv6 {
            step = step.with("family", Val::s("ipv6"));
        }
        for opt in ["reuseaddr", "reuseport"] {
            if g.chance(0.3) {
                step = step.with(opt, Val::s("true"));
            }
        }
        if ipv6 && g.chance(0.3) {
            let v = g.one(&["true", "false"]);
            step = step.with("v6only", Val::s(v));
        }
        // IP_FREEBIND (bind to an address no interface holds) and
        // IP_BIND_ADDRESS_NO_PORT (bind takes the address, connect the port).
        for opt in ["freebind", "bind_address_no_port"] {
            if g.chance(0.12) {
                step = step.with(opt, Val::s("true"));
            }
        }
        if g.chance(0.15) {
            let range = PORT_RANGES.choose(&mut g.rng).expect("not empty");
            step = step.with(
                "local_port_range",
                Val::Seq(range.iter().map(|p| p.to_string()).collect()),
            );
        }
        g.sockets.push(SockInfo {
            name,
            ipv6,
            tcp,
            bound: false,
            listening: false,
            connected: false,
            closed: false,
        });
        Some(step)
    }
}

/// An IPv4 address (multicast options).
fn ipv4(node: &Node, what: &str, diags: &mut Diags) -> Option<std::net::Ipv4Addr> {
    match fields::ip(node, what, diags)? {
        std::net::IpAddr::V4(v4) => Some(v4),
        std::net::IpAddr::V6(_) => {
            diags.error(node.pos, format!("{what} is an IPv4 address"));
            None
        }
    }
}

/// `local_port_range: [LOW, HIGH]`.
fn port_range(node: &Node, diags: &mut Diags) -> Option<(u16, u16)> {
    let items = fields::list(node, "local_port_range", diags);
    let ports: Vec<u16> = items
        .iter()
        .filter_map(|n| fields::uint(n, "a port", 65535, diags))
        .map(|p| p as u16)
        .collect();
    match ports.as_slice() {
        [lo, hi] => Some((*lo, *hi)),
        _ => {
            diags.error(node.pos, "local_port_range is [low, high]");
            None
        }
    }
}

/// `as: {uid: U, gid: G}` (gid defaults to uid).
fn creds(node: &Node, diags: &mut Diags) -> Option<Creds> {
    let mut f = Fields::of(node, "`as`", diags)?;
    let uid = f
        .require("uid", diags)
        .and_then(|n| fields::uint(n, "uid", u32::MAX as u64 - 1, diags));
    let gid = f
        .get("gid")
        .and_then(|n| fields::uint(n, "gid", u32::MAX as u64 - 1, diags));
    f.finish(diags);
    let uid = uid? as u32;
    Some(Creds {
        uid,
        gid: gid.map(|g| g as u32).unwrap_or(uid),
    })
}
