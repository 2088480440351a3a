//! `wait_accepted: NAME`: waits until `accept`/`serve` on a listener has taken
//! `count` connections (orders steps against a background load).

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{wait_for, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WaitAccepted {
    pub sock: String,
    pub count: u32,
    pub timeout_ms: u64,
}

impl Step for WaitAccepted {
    const DOC: Doc = Doc {
        syntax: "wait_accepted: NAME",
        fields: "`count:`, `timeout:` (5s)",
        observes: "`wait_accepted.NAME` = connections `accept`/`serve` had taken (orders steps against a background load)",
    };
    const EXPLORE: Explore = Explore::No("waits on counts: timing");

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let (sock, count, timeout_ms) = fields::wait_until(subject, f, scope, 5_000, diags)?;
        Some(WaitAccepted {
            sock,
            count,
            timeout_ms,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let n = wait_for(self.timeout_ms, || {
            let n = exec.table.accepted_count(&self.sock);
            Ok::<_, std::io::Error>((n >= self.count as usize, n))
        });
        step.one(n.unwrap_or_default())
    }
}
