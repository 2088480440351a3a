//! `requests: NAME`: counts the connection requests (SYN_RECV) for a listener's port.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{requests, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Requests {
    pub sock: String,
}

impl Step for Requests {
    const DOC: Doc = Doc {
        syntax: "requests: NAME",
        fields: "",
        observes: "`requests.NAME` = connection requests in SYN_RECV for NAME's port (from `/proc/net/tcp{,6}` of the namespace)",
    };
    const EXPLORE: Explore = Explore::No("SYN_RECV counts: timing");

    fn decode(subject: &Node, _f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        Some(Requests {
            sock: scope.socket(subject, diags)?,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let errno = crate::errno::of_io;
        let sock = &self.sock;
        let port = exec
            .table
            .local_addr(sock)
            .map_err(|e| step.fail(format!("`{sock}` has no local port ({})", errno(&e))))?
            .port();
        let n = requests::syn_recv_count(port).map_err(|e| {
            step.fail(format!(
                "cannot read /proc/thread-self/net/tcp ({})",
                errno(&e)
            ))
        })?;
        step.one(n)
    }
}
