//! `tally: GROUP`: drains the named UDP sockets and counts the group's datagrams
//! each received.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::Proto;
use crate::case::scope::{GroupKind, Scope};
use crate::exec::{udp, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tally {
    pub group: String,
    pub among: Vec<String>,
    pub wait_ms: u64,
}

impl Step for Tally {
    const DOC: Doc = Doc {
        syntax: "tally: GROUP",
        fields: "`among: [sockets]`, `wait:` (50ms: the longest it waits for datagrams not received yet; it stops as soon as all sent are counted)",
        observes: "`tally.GROUP.<socket>` = datagrams of GROUP each received; `.lost`; `.fairness`",
    };
    const EXPLORE: Explore = Explore::No("counts per socket: hash placement");

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let group = scope.group(subject, GroupKind::Datagrams, diags);
        let among: Vec<String> = match f.require("among", diags) {
            Some(n) => fields::names(n, "a socket name", diags)
                .into_iter()
                .filter(|s| {
                    let known = scope.kind_of(s).map(|(p, _)| p == Proto::Udp);
                    if known != Some(true) {
                        diags.error(
                            n.pos,
                            format!("`{s}` is not a UDP socket created before this step"),
                        );
                    }
                    known == Some(true)
                })
                .collect(),
            None => Vec::new(),
        };
        let wait_ms = fields::ms_or(f, "wait", 50, diags);
        Some(Tally {
            group: group?,
            among,
            wait_ms,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        let mut keys = vec![format!("{key}.lost"), format!("{key}.fairness")];
        keys.extend(self.among.iter().map(|s| format!("{key}.{s}")));
        keys
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let group = &self.group;
        let sent = *exec
            .sent
            .get(group)
            .ok_or_else(|| step.fail(format!("no datagram group `{group}` was sent")))?;
        let tally = udp::tally(
            &exec.table,
            group,
            sent,
            &self.among,
            Duration::from_millis(self.wait_ms),
        )
        .map_err(|(socket, e)| {
            step.fail(format!(
                "cannot read from `{socket}`: {}",
                crate::errno::of_io(&e)
            ))
        })?;
        Ok(tally
            .into_iter()
            .map(|(suffix, v)| (step.at(&format!(".{suffix}")), v))
            .collect())
    }
}
