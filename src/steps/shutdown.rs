//! `shutdown: NAME`: shuts down reading, writing or both on a socket.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
#[cfg(feature = "runner")]
use super::{Draft, Gen, Val};
use crate::case::fields::{Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{sockets::outcome, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum How {
    Read,
    Write,
    Both,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Shutdown {
    pub sock: String,
    pub how: How,
}

impl Step for Shutdown {
    const DOC: Doc = Doc {
        syntax: "shutdown: NAME",
        fields: "`how: read\\|write\\|both` (both)",
        observes: "`shutdown.NAME`",
    };
    const EXPLORE: Explore = Explore::Weight(1);

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let sock = scope.socket(subject, diags);
        let how = match f.get("how").map(|n| (n, n.scalar())) {
            None | Some((_, Some("both"))) => How::Both,
            Some((_, Some("read"))) => How::Read,
            Some((_, Some("write"))) => How::Write,
            Some((n, _)) => {
                diags.error(n.pos, "how must be read, write or both");
                How::Both
            }
        };
        Some(Shutdown { sock: sock?, how })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let how = match self.how {
            How::Read => std::net::Shutdown::Read,
            How::Write => std::net::Shutdown::Write,
            How::Both => std::net::Shutdown::Both,
        };
        step.one(outcome(exec.table.with(&self.sock, |s| s.shutdown(how))))
    }

    /// Any open socket, one direction or both: a listener shut down stops
    /// listening, an unconnected one says ENOTCONN.
    #[cfg(feature = "runner")]
    fn generate(g: &mut Gen) -> Option<Draft> {
        let i = g.pick_socket(|_| true)?;
        let how = g.one(&["read", "write", "both"]);
        Some(Draft::new("shutdown", &g.sockets[i].name).with("how", Val::s(how)))
    }
}
