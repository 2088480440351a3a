//! `queue: NAME`: the accept queue length of a listener, once it has stopped changing.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Queue {
    pub sock: String,
}

impl Step for Queue {
    const DOC: Doc = Doc {
        syntax: "queue: NAME",
        fields: "",
        observes: "`queue.NAME` = the listener's accept queue length, once it has stopped changing",
    };
    const EXPLORE: Explore = Explore::No("queue lengths under load: timing");

    fn decode(subject: &Node, _f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        Some(Queue {
            sock: scope.socket(subject, diags)?,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        match exec.table.settled_queue_len(&self.sock) {
            Ok(n) => step.one(n),
            Err(e) => step.one(crate::errno::of_io(&e)),
        }
    }
}
