//! `wait: GROUP`: joins a background client group; its `clients.*` observations
//! appear then.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{Diags, Fields};
use crate::case::scope::{GroupKind, Scope};
use crate::exec::{Executor, StepCtx, StepFailure, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Wait {
    pub group: String,
}

impl Step for Wait {
    const DOC: Doc = Doc {
        syntax: "wait: GROUP",
        fields: "",
        observes: "joins a background client group (its `clients.*` observations appear then)",
    };
    const EXPLORE: Explore = Explore::No("joins background clients, which are not generated");

    fn decode(subject: &Node, _f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let group = scope.group(subject, GroupKind::Clients, diags)?;
        if !scope.background.contains_key(&group) {
            diags.error(
                subject.pos,
                format!("client group `{group}` is not running in the background"),
            );
        }
        Some(Wait { group })
    }

    /// The group's observations are its `clients` step's.
    fn observations(&self, _key: &str, _scope: &Scope) -> Vec<String> {
        Vec::new()
    }

    fn declare(&self, _line: usize, scope: &mut Scope) {
        scope.background.remove(&self.group);
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let group = &self.group;
        let background = exec
            .background
            .remove(group)
            .ok_or_else(|| step.fail(format!("no background client group `{group}`")))?;
        let finished = match background.thread.join() {
            Ok(Ok(finished)) => finished,
            // Blamed on the `clients` step that could not connect, not on this one.
            Ok(Err(why)) => {
                return Err(StepFailure {
                    line: Some(background.line),
                    message: format!("`{}`: {why}", background.step),
                })
            }
            Err(_) => return Err(step.fail("the client thread panicked")),
        };
        Ok(exec.finish_group(&background.key, group, finished))
    }
}
