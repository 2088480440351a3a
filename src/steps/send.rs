//! `send: GROUP`: every connected client of a group writes one byte, as a client
//! would first.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{Diags, Fields};
use crate::case::scope::{GroupKind, Scope};
use crate::exec::{clients, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Send {
    pub group: String,
}

impl Step for Send {
    const DOC: Doc = Doc {
        syntax: "send: GROUP",
        fields: "",
        observes: "`send.GROUP` = connected clients that wrote one byte (a client's first request; it carries the ACK a dropped handshake ACK left out)",
    };
    const EXPLORE: Explore = Explore::No("only meaningful with clients");

    fn decode(subject: &Node, _f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let group = scope.group(subject, GroupKind::Clients, diags)?;
        if scope.background.contains_key(&group) {
            diags.error(
                subject.pos,
                format!("`wait: {group}` must come before its clients send"),
            );
        }
        Some(Send { group })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let group = &self.group;
        let finished = exec
            .groups
            .get(group)
            .ok_or_else(|| step.fail(format!("no client group `{group}` has run")))?;
        step.one(clients::send_one_byte(finished))
    }
}
