//! `release: NAME`: lets the packets of a `drop` through again; observes how many
//! were dropped.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{sockets::outcome, Executor, StepCtx, StepResult};
use crate::yaml::Node;
use super::drop::{Attached, DropNames};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Release {
    pub name: String,
}

impl Step for Release {
    const DOC: Doc = Doc {
        syntax: "release: NAME",
        fields: "",
        observes: "`release.NAME` = detach result; `release.NAME.dropped` = packets the filter dropped",
    };
    const EXPLORE: Explore = Explore::No("only meaningful after drop");

    /// A drop filter attached earlier and not yet released.
    fn decode(subject: &Node, _f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let name = fields::name(subject, "a drop filter name", diags)?;
        if scope.kept.get::<DropNames>().and_then(|d| d.0.get(&name)) != Some(&true) {
            diags.error(
                subject.pos,
                format!("no drop filter named `{name}` is attached before this step"),
            );
            return None;
        }
        Some(Release { name })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string(), format!("{key}.dropped")]
    }

    /// Released filters stay known: a second `drop` of the name is still a clash.
    fn declare(&self, _line: usize, scope: &mut Scope) {
        scope.kept.of::<DropNames>().0.insert(self.name.clone(), false);
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let name = &self.name;
        let mut dropper = exec
            .kept
            .of::<Attached>()
            .0
            .remove(name)
            .ok_or_else(|| step.fail(format!("no drop filter `{name}` is attached")))?;
        // Read before detaching: the count is what the filter held back.
        let dropped = dropper.dropped().map_err(|e| {
            step.fail(format!(
                "cannot read the drop counter ({})",
                crate::errno::of_io(&e)
            ))
        })?;
        Ok(vec![
            (step.key.to_string(), json!(outcome(dropper.release()))),
            (step.at(".dropped"), json!(dropped)),
        ])
    }
}
