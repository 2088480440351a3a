//! `attach_bpf: NAME`: attaches a classic BPF program to a reuseport group
//! (SO_ATTACH_REUSEPORT_CBPF).

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::CbpfProgram;
use crate::case::scope::Scope;
use crate::exec::{bpf, sockets::outcome, Executor, StepCtx, StepResult};
use crate::yaml::Node;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttachBpf {
    pub sock: String,
    pub program: CbpfProgram,
}

impl Step for AttachBpf {
    const DOC: Doc = Doc {
        syntax: "attach_bpf: NAME",
        fields: "`program: cpu`, `{modulo: N}` (first payload word mod N) or `{constant: N}`",
        observes: "`attach_bpf.NAME`: SO_ATTACH_REUSEPORT_CBPF result",
    };
    const EXPLORE: Explore = Explore::No("steering programs: what they pick is hash placement or the CPU");

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let sock = scope.socket(subject, diags);
        let program = f
            .require("program", diags)
            .and_then(|n| program(n, diags));
        Some(AttachBpf {
            sock: sock?,
            program: program?,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        step.one(outcome(
            exec.table.with(&self.sock, |s| bpf::attach(s, self.program)),
        ))
    }
}

/// `program: cpu`, `{modulo: N}` or `{constant: N}`.
fn program(node: &Node, diags: &mut Diags) -> Option<CbpfProgram> {
    if node.scalar() == Some("cpu") {
        return Some(CbpfProgram::Cpu);
    }
    let mut f = Fields::of(node, "program (cpu, {modulo: N} or {constant: N})", diags)?;
    let program = if let Some(n) = f.get("modulo") {
        fields::uint(n, "modulo", u32::MAX as u64, diags)
            .filter(|m| *m > 0)
            .map(|m| CbpfProgram::Modulo(m as u32))
    } else if let Some(n) = f.get("constant") {
        fields::uint(n, "constant", u32::MAX as u64, diags).map(|c| CbpfProgram::Constant(c as u32))
    } else {
        diags.error(f.pos(), "program is cpu, {modulo: N} or {constant: N}");
        None
    };
    f.finish(diags);
    program
}
