//! `detach_bpf: NAME`: detaches a reuseport group's BPF program
//! (SO_DETACH_REUSEPORT_BPF).

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{bpf, sockets::outcome, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DetachBpf {
    pub sock: String,
}

impl Step for DetachBpf {
    const DOC: Doc = Doc {
        syntax: "detach_bpf: NAME",
        fields: "",
        observes: "`detach_bpf.NAME`: SO_DETACH_REUSEPORT_BPF result",
    };
    const EXPLORE: Explore = Explore::No("only meaningful after attach_bpf");

    fn decode(subject: &Node, _f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        Some(DetachBpf {
            sock: scope.socket(subject, diags)?,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        step.one(outcome(exec.table.with(&self.sock, bpf::detach)))
    }
}
