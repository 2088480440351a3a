//! `repeat: COUNT`: its `steps:` once per index, sockets named `l[i]`. Repetition is
//! a generic part of the language: case::decode (decode/repeat.rs) reads the block,
//! since its template steps declare into the scope; this module only runs it.

use super::{Doc, Explore, Step};
use crate::case::fields::{Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{Executor, StepCtx, StepResult};
use crate::yaml::Node;

pub use crate::case::repeat::Repeat;

impl Step for Repeat {
    const DOC: Doc = Doc {
        syntax: "repeat: COUNT",
        fields: "`steps:` (the template: sockets named `l[i]`), `addrs: {from: ADDR, count: N}` (`$addr` in the template: N consecutive addresses, each for COUNT/N consecutive indices), `first:` (0). A step on `l[*]` or `l[a..b]` outside a block is a block of that one step; `l[3]` names one socket",
        observes: "per template key K without its index: `K.ok`, `K.<ERRNO>` (count of each errno), `K.first_failure` (index or `none`); numbers as `K.sum`/`.min`/`.max`; `time.K` summed. COUNT at most 100000",
    };
    const EXPLORE: Explore = Explore::No("repetition measures scale and cost, not which errno a kernel returns");
    /// `repeat: 24000` names no thing: its key is `repeat` (or its `id`).
    const KEYED_BY_SUBJECT: bool = false;

    fn decode(subject: &Node, _f: &mut Fields, _scope: &Scope, diags: &mut Diags) -> Option<Self> {
        // Never reached: case::decode reads `repeat` before the registry (its
        // template steps need the scope mutably).
        diags.error(subject.pos, "`repeat` is read by the case decoder");
        None
    }

    fn observations(&self, _key: &str, _scope: &Scope) -> Vec<String> {
        // The aggregates' keys go into the scope as the template is decoded.
        Vec::new()
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        exec.repeat(self, step.name)
    }
}
