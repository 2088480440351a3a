//! `connect: NAME`: connects a socket to a target, with a time limit.

use serde::{Deserialize, Serialize};

use super::{Doc, Step};
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
}
