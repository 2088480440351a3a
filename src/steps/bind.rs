//! `bind: NAME`: binds a socket to an address and port.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
#[cfg(feature = "runner")]
use super::{Draft, Gen, Val};
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::{Family, PortSpec};
use crate::case::scope::Scope;
use crate::exec::{sockets::outcome, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bind {
    pub sock: String,
    pub addr: IpAddr,
    pub port: PortSpec,
}

impl Step for Bind {
    const DOC: Doc = Doc {
        syntax: "bind: NAME",
        fields: "`addr:` (required), `port:` a number, `0` (default) or a socket name (its port)",
        observes: "`bind.NAME` = `ok`/errno",
    };
    const EXPLORE: Explore = Explore::Weight(8);

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let sock = scope.socket(subject, diags);
        let addr = f
            .require("addr", diags)
            .and_then(|n| fields::ip(n, "addr", diags));
        let port = match f.get("port") {
            Some(n) => scope.port(n, diags),
            None => Some(PortSpec::Number(0)),
        };
        if let (Some(s), Some(a)) = (&sock, &addr) {
            let family = scope.sockets[s].1;
            if a.is_ipv6() != (family == Family::Ipv6) {
                diags.error(
                    f.pos(),
                    format!("socket `{s}` is {family:?} but addr {a} is not; use ::ffff:a.b.c.d for v4-mapped"),
                );
            }
        }
        Some(Bind {
            sock: sock?,
            addr: addr?,
            port: port?,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        step.one(outcome(exec.table.bind(&self.sock, self.addr, &self.port)))
    }

    /// An unbound socket to an address of the pool, mostly a fixed port or another
    /// socket's: binds are where sockets meet. Port 0 (the kernel's choice) now
    /// and then.
    #[cfg(feature = "runner")]
    fn generate(g: &mut Gen) -> Option<Draft> {
        use crate::explore::grammar::{ADDRS_V4, ADDRS_V6, NONLOCAL_V4, NONLOCAL_V6};
        use rand::seq::IndexedRandom;
        use rand::RngExt;
        let i = g.pick_socket(|s| !s.bound)?;
        let ipv6 = g.sockets[i].ipv6;
        let addr = if g.chance(0.08) {
            if ipv6 {
                NONLOCAL_V6
            } else {
                NONLOCAL_V4
            }
        } else {
            g.one(if ipv6 { ADDRS_V6 } else { ADDRS_V4 })
        };
        let mut step = Draft::new("bind", &g.sockets[i].name).with("addr", Val::s(addr));
        let others: Vec<String> = g
            .sockets
            .iter()
            .filter(|s| s.bound)
            .map(|s| s.name.clone())
            .collect();
        let roll = g.rng.random_range(0..10);
        if roll < 7 {
            let port = g.port();
            step = step.with("port", Val::s(port));
        } else if roll < 9 && !others.is_empty() {
            let other = others.choose(&mut g.rng).expect("not empty").clone();
            step = step.with("port", Val::s(other));
        }
        g.sockets[i].bound = true;
        Some(step)
    }
}
