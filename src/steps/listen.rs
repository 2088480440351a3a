//! `listen: NAME`: puts a TCP socket in the listening state.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
#[cfg(feature = "runner")]
use super::{Draft, Gen};
use crate::case::fields::{self, Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{sockets::outcome, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Listen {
    pub sock: String,
    pub backlog: i32,
}

impl Step for Listen {
    const DOC: Doc = Doc {
        syntax: "listen: NAME",
        fields: "`backlog:` (128)",
        observes: "`listen.NAME`",
    };
    const EXPLORE: Explore = Explore::Weight(3);

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let sock = scope.socket(subject, diags);
        let backlog = f
            .get("backlog")
            .and_then(|n| fields::uint(n, "backlog", 65535, diags))
            .unwrap_or(128);
        Some(Listen {
            sock: sock?,
            backlog: backlog as i32,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    /// `account` counts what each listener accepted.
    fn declare(&self, _line: usize, scope: &mut Scope) {
        scope.listeners.insert(self.sock.clone());
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        step.one(outcome(exec.table.listen(&self.sock, self.backlog)))
    }

    /// A bound TCP socket mostly; now and then one that was never bound or is
    /// connected (listen then binds, or fails).
    #[cfg(feature = "runner")]
    fn generate(g: &mut Gen) -> Option<Draft> {
        let i = g.prefer_socket(
            |s| s.tcp && s.bound && !s.listening && !s.connected,
            |s| s.tcp && !s.listening,
        )?;
        g.sockets[i].listening = true;
        g.sockets[i].bound = true;
        Some(Draft::new("listen", &g.sockets[i].name))
    }
}
