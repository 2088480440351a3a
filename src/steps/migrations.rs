//! `migrations: NAME`: how many migrations the `attach_migrate` program on NAME was
//! asked about, by where they happened (the selftest's counters).

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::ebpf_migrate::PLACES;
use crate::exec::{Executor, StepCtx, StepResult};
use crate::yaml::Node;
use super::attach_migrate::{Migrated, Programs};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Migrations {
    pub sock: String,
}

impl Step for Migrations {
    const DOC: Doc = Doc {
        syntax: "migrations: NAME",
        fields: "",
        observes: "calls of NAME's `attach_migrate` program for a migrating socket, by where: `migrations.NAME.close` (a child in the accept queue of a closing listener), `.close_fastopen` (a Fast Open child), `.synack` (a request's SYN-ACK timer), `.ack` (a request's final ACK), `.other`",
    };
    const EXPLORE: Explore = Explore::No("counters of attach_migrate");

    fn decode(subject: &Node, _f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let sock = fields::name(subject, "a socket name", diags)?;
        if !scope
            .kept
            .get::<Migrated>()
            .is_some_and(|m| m.0.contains(&sock)) {
            diags.error(
                subject.pos,
                format!("no `attach_migrate: {sock}` before this step"),
            );
            return None;
        }
        Some(Migrations { sock })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        PLACES.iter().map(|p| format!("{key}.{p}")).collect()
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let program = exec
            .kept
            .of::<Programs>()
            .0
            .get(&self.sock)
            .ok_or_else(|| step.fail(format!("no migration program on `{}`", self.sock)))?;
        let counts = program.counts().map_err(|e| {
            step.fail(format!(
                "cannot read the migration counters ({})",
                crate::errno::of_io(&e)
            ))
        })?;
        Ok(PLACES
            .iter()
            .zip(counts)
            .map(|(place, n)| (step.at(&format!(".{place}")), n.into()))
            .collect())
    }
}
