//! `connect: NAME`: connects a socket to a target, with a time limit.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
#[cfg(feature = "runner")]
use super::{Draft, Gen, Val};
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::Target;
use crate::case::scope::Scope;
use crate::exec::{sockets::outcome, Executor, StepCtx, StepResult};
use crate::yaml::Node;

/// How long a connect (or a client of a group) waits by default.
pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Connect {
    pub sock: String,
    pub to: Target,
    pub timeout_ms: u64,
}

impl Step for Connect {
    const DOC: Doc = Doc {
        syntax: "connect: NAME",
        fields: "`to:` (target), `timeout:` (1s)",
        observes: "`connect.NAME` = `ok`/`ECONNREFUSED`/`ETIMEDOUT`/...",
    };
    const EXPLORE: Explore = Explore::Weight(3);

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let sock = scope.socket(subject, diags);
        let to = f.require("to", diags).and_then(|n| scope.target(n, diags));
        let timeout_ms = fields::ms_or(f, "timeout", DEFAULT_TIMEOUT_MS, diags);
        Some(Connect {
            sock: sock?,
            to: to?,
            timeout_ms,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        step.one(outcome(
            exec.table.connect(&self.sock, &self.to, self.timeout_ms),
        ))
    }

    /// To a listener of the same protocol first (a connection that succeeds), else
    /// to any bound socket the family can reach, or to a fixed loopback port.
    #[cfg(feature = "runner")]
    fn generate(g: &mut Gen) -> Option<Draft> {
        use crate::explore::grammar::SockInfo;
        use rand::seq::IndexedRandom;
        let i = g.prefer_socket(|s| !s.listening && !s.connected, |s| !s.connected)?;
        let (ipv6, tcp) = (g.sockets[i].ipv6, g.sockets[i].tcp);
        let me = g.sockets[i].name.clone();
        let reachable = |s: &SockInfo| s.bound && s.name != me && (ipv6 || !s.ipv6);
        let mut targets: Vec<String> = g
            .sockets
            .iter()
            .filter(|s| reachable(s) && s.tcp == tcp && (s.listening || !tcp))
            .map(|s| s.name.clone())
            .collect();
        if targets.is_empty() || g.chance(0.2) {
            targets = g
                .sockets
                .iter()
                .filter(|s| reachable(s))
                .map(|s| s.name.clone())
                .collect();
        }
        let to = if !targets.is_empty() && g.chance(0.7) {
            Val::s(targets.choose(&mut g.rng).expect("not empty"))
        } else {
            let addr = g.one(if ipv6 {
                &["::1", "::ffff:127.0.0.1"]
            } else {
                &["127.0.0.1"]
            });
            let port = g.port();
            Val::Map(vec![
                ("addr".into(), addr.into()),
                ("port".into(), port.into()),
            ])
        };
        g.sockets[i].bound = true;
        g.sockets[i].connected = true;
        Some(
            Draft::new("connect", &me)
                .with("to", to)
                .with("timeout", Val::s("200ms")),
        )
    }
}
