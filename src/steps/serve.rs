//! `serve: NAME`: a background thread accepts everything on a listener until it is
//! closed.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{serve::Server, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Serve {
    pub sock: String,
    /// Sleep in epoll_wait() (up to `wait_ms` at a time) instead of short polls,
    /// so a wake-up the kernel forgets shows as a delay.
    pub epoll_wait_ms: Option<u64>,
}

impl Step for Serve {
    const DOC: Doc = Doc {
        syntax: "serve: NAME",
        fields: "",
        observes: "`serve.NAME`; a background thread accepts everything on the listener until it is closed",
    };
    const EXPLORE: Explore = Explore::No("a background acceptor: what it took depends on timing");

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let sock = scope.socket(subject, diags);
        let epoll_wait_ms = match f.get("mode").map(|n| (n, n.scalar())) {
            None | Some((_, Some("poll"))) => None,
            Some((_, Some("epoll"))) => Some(fields::ms_or(f, "wait", 5_000, diags)),
            Some((n, _)) => {
                diags.error(
                    n.pos,
                    "serve mode is poll (short polls) or epoll (sleeps in epoll_wait for `wait`)",
                );
                None
            }
        };
        Some(Serve {
            sock: sock?,
            epoll_wait_ms,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    /// A blocking `accept` on a served listener would clear O_NONBLOCK under it.
    fn declare(&self, line: usize, scope: &mut Scope) {
        scope.served.insert(self.sock.clone(), line);
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let errno = crate::errno::of_io;
        // An acceptor that never started would leave every client "pending".
        let listener = exec
            .table
            .with(&self.sock, |s| s.try_clone())
            .map_err(|e| step.fail(format!("cannot start an acceptor: {}", errno(&e))))?;
        let accepted = exec.table.entry(&self.sock).accepted.clone();
        let server = Server::start(listener, accepted, self.epoll_wait_ms).map_err(|e| {
            step.fail(format!("cannot set up the epoll acceptor: {}", errno(&e)))
        })?;
        exec.servers.insert(self.sock.clone(), server);
        step.one("ok")
    }
}
