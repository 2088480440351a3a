//! `listen: NAME`: puts a TCP socket in the listening state.

use serde::{Deserialize, Serialize};

use super::{Doc, Step};
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
}
