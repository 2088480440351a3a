//! `wait_queued: NAME`: waits until a listener's accept queue holds `count`.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{wait_for, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WaitQueued {
    pub sock: String,
    pub count: u32,
    pub timeout_ms: u64,
}

impl Step for WaitQueued {
    const DOC: Doc = Doc {
        syntax: "wait_queued: NAME",
        fields: "`count:`, `timeout:` (2s)",
        observes: "`wait_queued.NAME` = queue length reached",
    };
    const EXPLORE: Explore = Explore::No("waits on counts: timing");

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let (sock, count, timeout_ms) = fields::wait_until(subject, f, scope, 2_000, diags)?;
        Some(WaitQueued {
            sock,
            count,
            timeout_ms,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        match wait_for(self.timeout_ms, || {
            exec.table
                .queue_len(&self.sock)
                .map(|n| (n >= self.count, n))
        }) {
            Ok(n) => step.one(n),
            Err(e) => step.one(crate::errno::of_io(&e)),
        }
    }
}
