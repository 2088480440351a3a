//! `syn_data: LISTENER`: how many connections the listener accepted took their
//! first data with the SYN (TCP Fast Open).

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SynData {
    pub sock: String,
}

impl Step for SynData {
    const DOC: Doc = Doc {
        syntax: "syn_data: NAME",
        fields: "",
        observes: "`syn_data.NAME` = connections `accept`/`serve` took on listener NAME whose SYN carried data the listener accepted (TCP Fast Open: TCPI_OPT_SYN_DATA in the child's TCP_INFO)",
    };
    const EXPLORE: Explore = Explore::No("a Fast Open count: only meaningful after fastopen clients");

    fn decode(subject: &Node, _f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let sock = scope.socket(subject, diags)?;
        if !scope.listeners.contains(&sock) {
            diags.error(
                subject.pos,
                format!("`{sock}` is not a listener (no `listen: {sock}` before)"),
            );
        }
        Some(SynData { sock })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        // A child whose TCP_INFO cannot be read is not a count of zero.
        let n = exec.table.syn_data_count(&self.sock).map_err(|e| {
            step.fail(format!(
                "cannot read TCP_INFO of an accepted connection ({})",
                crate::errno::of_io(&e)
            ))
        })?;
        step.one(n)
    }
}
