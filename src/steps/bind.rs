//! `bind: NAME`: binds a socket to an address and port.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Doc, Step};
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
}
