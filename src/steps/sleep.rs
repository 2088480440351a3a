//! `sleep: DURATION`: waits; observes nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sleep {
    pub ms: u64,
}

impl Step for Sleep {
    const DOC: Doc = Doc {
        syntax: "sleep: DURATION",
        fields: "",
        observes: "none",
    };
    const EXPLORE: Explore = Explore::No("only time passes; nothing to compare");
    /// `sleep: 10ms` names no thing: its key is `sleep` (or its `id`).
    const KEYED_BY_SUBJECT: bool = false;

    fn decode(subject: &Node, _f: &mut Fields, _scope: &Scope, diags: &mut Diags) -> Option<Self> {
        Some(Sleep {
            ms: fields::duration_ms(subject, "sleep", diags)?,
        })
    }

    fn observations(&self, _key: &str, _scope: &Scope) -> Vec<String> {
        Vec::new()
    }

    fn run(&self, _exec: &mut Executor, _step: &StepCtx) -> StepResult {
        std::thread::sleep(Duration::from_millis(self.ms));
        Ok(Vec::new())
    }
}
