//! `local_port: NAME`: the port a socket is bound to.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{Executor, StepCtx, StepResult};
use crate::yaml::Node;

/// Records the port a socket is bound to (deterministic only when it is).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalPort {
    pub sock: String,
}

impl Step for LocalPort {
    const DOC: Doc = Doc {
        syntax: "local_port: NAME",
        fields: "",
        observes: "`local_port.NAME` = the port the socket is bound to (use where it is deterministic)",
    };
    const EXPLORE: Explore = Explore::No("observes a kernel-chosen port, which is masked");

    fn decode(subject: &Node, _f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        Some(LocalPort {
            sock: scope.socket(subject, diags)?,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        match exec.table.local_addr(&self.sock) {
            Ok(addr) => step.one(addr.port()),
            Err(e) => step.one(crate::errno::of_io(&e)),
        }
    }
}
