//! `accept: NAME`: accepts queued connections on a listener, waiting for the first.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Doc, Explore, Step};
#[cfg(feature = "runner")]
use super::{Draft, Gen};
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::{AcceptMode, Proto};
use crate::case::scope::Scope;
use crate::exec::{sockets::outcome, Executor, StepCtx, StepResult};
use crate::yaml::Node;

/// Accepts up to `max` (all that are queued when None), waiting `wait_ms` for the first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Accept {
    pub sock: String,
    pub max: Option<u32>,
    pub wait_ms: u64,
    pub mode: AcceptMode,
    /// Keep the (single) accepted connection as a socket of this name.
    pub name: Option<String>,
}

impl Step for Accept {
    const DOC: Doc = Doc {
        syntax: "accept: NAME",
        fields: "`count:` N or `all` (all), `wait:` time to wait for the first (0), `mode: nonblocking\\|blocking\\|epoll` (nonblocking: poll, then accept until the queue stays empty for 30 ms; blocking: accept() with SO_RCVTIMEO = `wait`; epoll: epoll_wait up to `wait`), `name:` keep the accepted connection as a socket of that name (with `count: 1`)",
        observes: "`accept.NAME` = how many; `accept.NAME.error` = `ok` or the errno that stopped it",
    };
    const EXPLORE: Explore = Explore::Weight(1);

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let sock = scope.socket(subject, diags);
        let max = match f.get("count") {
            None => None,
            Some(n) if n.scalar() == Some("all") => None,
            Some(n) => fields::uint(n, "count (a number or `all`)", u32::MAX as u64, diags)
                .map(|c| c as u32),
        };
        let wait_ms = fields::ms_or(f, "wait", 0, diags);
        let mode = match f.get("mode").map(|n| (n, n.scalar())) {
            None | Some((_, Some("nonblocking"))) => AcceptMode::Nonblocking,
            Some((_, Some("blocking"))) => AcceptMode::Blocking,
            Some((_, Some("epoll"))) => AcceptMode::Epoll,
            Some((n, _)) => {
                diags.error(n.pos, "mode must be nonblocking, blocking or epoll");
                AcceptMode::Nonblocking
            }
        };
        if let (AcceptMode::Blocking, Some(served_at)) =
            (mode, sock.as_ref().and_then(|s| scope.served.get(s)))
        {
            diags.error(
                f.pos(),
                format!(
                    "`mode: blocking` on `{}`, which the `serve` step of line {served_at} \
                     accepts on in the background: a blocking accept clears O_NONBLOCK \
                     under that acceptor. Use mode nonblocking or epoll, or close it first",
                    sock.as_deref().unwrap_or_default()
                ),
            );
        }
        let name = f.get("name").and_then(|n| {
            let name = fields::name(n, "name", diags)?;
            if max != Some(1) {
                diags.error(
                    n.pos,
                    "`name` keeps one accepted connection: it needs `count: 1`",
                );
            }
            if scope.sockets.contains_key(&name) {
                diags.error(
                    n.pos,
                    format!("socket `{name}` already exists; pick another name"),
                );
            }
            Some(name)
        });
        Some(Accept {
            sock: sock?,
            max,
            wait_ms,
            mode,
            name,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string(), format!("{key}.error")]
    }

    /// A kept connection is a TCP socket of the listener's family.
    fn declare(&self, _line: usize, scope: &mut Scope) {
        if let Some(name) = &self.name {
            let family = scope.sockets[&self.sock].1;
            scope.sockets.insert(name.clone(), (Proto::Tcp, family));
        }
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let errno = crate::errno::of_io;
        let (n, result) = exec
            .table
            .accept(&self.sock, self.max, self.wait_ms, self.mode)
            .map_err(|e| step.fail(format!("cannot wait for connections: {}", errno(&e))))?;
        let obs = vec![
            (step.key.to_string(), json!(n)),
            (step.at(".error"), json!(outcome(result))),
        ];
        if let Some(name) = &self.name {
            // Later steps use `name`: without a connection they mean nothing.
            exec.table
                .adopt_last_accepted(&self.sock, name)
                .map_err(|e| {
                    step.fail(format!(
                        "accepted {n} connection(s), none to keep as `{name}` ({})",
                        errno(&e)
                    ))
                })?;
        }
        Ok(obs)
    }

    /// On a listener mostly (a connection queued or EAGAIN), now and then on any TCP
    /// socket (EINVAL).
    #[cfg(feature = "runner")]
    fn generate(g: &mut Gen) -> Option<Draft> {
        let i = g.prefer_socket(|s| s.listening, |s| s.tcp)?;
        Some(Draft::new("accept", &g.sockets[i].name))
    }
}
