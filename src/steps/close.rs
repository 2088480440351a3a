//! `close: NAME`: closes a socket (a served listener's acceptor stops first).

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
#[cfg(feature = "runner")]
use super::{Draft, Gen};
use crate::case::fields::{Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{sockets::outcome, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Close {
    pub sock: String,
}

impl Step for Close {
    const DOC: Doc = Doc {
        syntax: "close: NAME",
        fields: "",
        observes: "`close.NAME` (a served listener's acceptor stops first)",
    };
    const EXPLORE: Explore = Explore::Weight(1);

    fn decode(subject: &Node, _f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        Some(Close {
            sock: scope.socket(subject, diags)?,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    /// A closed listener is served no more: a blocking accept on its name is fine.
    fn declare(&self, _line: usize, scope: &mut Scope) {
        scope.served.remove(&self.sock);
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        if let Some(server) = exec.servers.remove(&self.sock) {
            server.stop();
        }
        step.one(outcome(exec.table.close(&self.sock)))
    }

    /// Any open socket: its port may be free again, or linger (TIME_WAIT).
    #[cfg(feature = "runner")]
    fn generate(g: &mut Gen) -> Option<Draft> {
        let i = g.pick_socket(|_| true)?;
        g.sockets[i].closed = true;
        Some(Draft::new("close", &g.sockets[i].name))
    }
}
