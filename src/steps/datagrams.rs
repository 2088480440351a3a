//! `datagrams: GROUP`: sends UDP datagrams to a target, each from a fresh socket
//! unless `from` names one.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::{Family, Target};
use crate::case::scope::{GroupKind, Scope};
use crate::exec::{self, cpu, udp, Executor, StepCtx, StepResult};
use crate::yaml::Node;

/// `count` UDP datagrams to `to`, each from a fresh socket unless `from` names one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Datagrams {
    pub group: String,
    pub count: u32,
    pub to: Target,
    pub from: Option<String>,
    pub family: Option<Family>,
    /// Send from this CPU (the sending thread is pinned to it).
    pub cpu: Option<u32>,
}

impl Step for Datagrams {
    const DOC: Doc = Doc {
        syntax: "datagrams: GROUP",
        fields: "`count:`, `to:`, `from:` a UDP socket (default: a fresh socket per datagram, so each has a new source port), `family:`",
        observes: "`datagrams.GROUP.sent`, `.errors`",
    };
    const EXPLORE: Explore = Explore::No("spread over a group by hash placement");

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let group = fields::name(subject, "a group name", diags);
        let count = f
            .require("count", diags)
            .and_then(|n| fields::uint(n, "count", 100_000, diags));
        let to = f.require("to", diags).and_then(|n| scope.target(n, diags));
        let from = f.get("from").and_then(|n| scope.socket(n, diags));
        let family = f.get("family").and_then(|n| fields::family(Some(n), diags));
        let cpu = fields::cpu(f, diags);
        Some(Datagrams {
            group: group?,
            count: count? as u32,
            to: to?,
            from,
            family,
            cpu,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![format!("{key}.sent"), format!("{key}.errors")]
    }

    fn declare(&self, _line: usize, scope: &mut Scope) {
        scope
            .groups
            .insert(self.group.clone(), GroupKind::Datagrams);
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let to = exec.table.resolve(&self.to).map_err(|e| {
            step.fail(format!(
                "no address to send to: {}",
                crate::errno::of_io(&e)
            ))
        })?;
        let family = self.family.unwrap_or(exec::family_of(&to));
        let table = &exec.table;
        let send = || {
            udp::send(
                table,
                &self.group,
                to,
                self.count,
                self.from.as_deref(),
                family,
            )
        };
        let (sent, errors) = cpu::on_cpu(self.cpu, send)
            .map_err(|e| step.fail(exec::pin_failure(self.cpu, &e)))?;
        exec.sent.insert(self.group.clone(), sent.sent);
        Ok(vec![
            (step.at(".sent"), json!(sent.sent)),
            (step.at(".errors"), json!(errors)),
        ])
    }
}
