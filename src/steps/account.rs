//! `account: GROUP`: puts every client of a group in exactly one bucket: accepted by
//! which listener, reset, orphaned, closed, refused, timed out, failed or pending.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{Diags, Fields};
use crate::case::scope::{GroupKind, Scope};
use crate::exec::{clients, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Account {
    pub group: String,
}

impl Step for Account {
    const DOC: Doc = Doc {
        syntax: "account: GROUP",
        fields: "",
        observes: "every client in exactly one bucket: `account.GROUP.accepted.<listener>` for each listener, `.reset`, `.orphaned`, `.closed`, `.refused`, `.timed_out`, `.failed`, `.pending`; `.total`; `.fairness` over the listeners",
    };
    const EXPLORE: Explore = Explore::No("counts per listener: hash placement");

    fn decode(subject: &Node, _f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let group = scope.group(subject, GroupKind::Clients, diags)?;
        if scope.background.contains_key(&group) {
            diags.error(
                subject.pos,
                format!("`wait: {group}` must come before accounting for it"),
            );
        }
        Some(Account { group })
    }

    fn observations(&self, key: &str, scope: &Scope) -> Vec<String> {
        let buckets = clients::ACCOUNT_KEYS.iter().map(|n| format!("{key}.{n}"));
        let listeners = scope
            .listeners
            .iter()
            .map(|l| format!("{key}.accepted.{l}"));
        buckets.chain(listeners).collect()
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let group = &self.group;
        let finished = exec
            .groups
            .get_mut(group)
            .ok_or_else(|| step.fail(format!("no client group `{group}` has run")))?;
        Ok(clients::account(finished, &exec.table)
            .into_iter()
            .map(|(suffix, v)| (step.at(&format!(".{suffix}")), v))
            .collect())
    }
}
