//! `attach_ebpf: NAME`: loads an SK_REUSEPORT eBPF program selecting one slot of a
//! sockarray with bpf_sk_select_reuseport(), and attaches it to a socket's group.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{ebpf, Executor, StepCtx, StepResult};
use crate::yaml::Node;

/// Loads an SK_REUSEPORT eBPF program selecting slot `select` of a sockarray
/// filled with `sockarray` (in order), and attaches it to `sock`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttachEbpf {
    pub sock: String,
    pub sockarray: Vec<String>,
    pub select: u32,
    /// Return SK_DROP (not SK_PASS, i.e. hash) when the selection fails.
    pub drop_on_miss: bool,
}

impl Step for AttachEbpf {
    const DOC: Doc = Doc {
        syntax: "attach_ebpf: NAME",
        fields: "`sockarray: [sockets]` (slots in order), `select: K`, `on_miss: pass\\|drop` (pass)",
        observes: "an SK_REUSEPORT eBPF program selecting slot K with bpf_sk_select_reuseport(); `attach_ebpf.NAME.load`, `.fill` (first failing slot's errno), `attach_ebpf.NAME` (the attach)",
    };
    const EXPLORE: Explore = Explore::No("steering programs: needs a socket array set up");

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let sock = scope.socket(subject, diags);
        let sockarray = f
            .require("sockarray", diags)
            .map(|n| scope.socket_list(n, "sockarray", diags))
            .unwrap_or_default();
        let select = f
            .require("select", diags)
            .and_then(|n| fields::uint(n, "select", u32::MAX as u64, diags));
        let drop_on_miss = match f.get("on_miss").map(|n| (n, n.scalar())) {
            None | Some((_, Some("pass"))) => false,
            Some((_, Some("drop"))) => true,
            Some((n, _)) => {
                diags.error(n.pos, "on_miss is pass (fall back to hashing) or drop");
                false
            }
        };
        Some(AttachEbpf {
            sock: sock?,
            sockarray,
            select: select? as u32,
            drop_on_miss,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![
            key.to_string(),
            format!("{key}.load"),
            format!("{key}.fill"),
        ]
    }

    /// Observations: `.load` (map and program), `.fill` (first failing slot's errno
    /// or ok), and the attach itself under the key.
    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let on_miss = if self.drop_on_miss {
            ebpf::OnMiss::Drop
        } else {
            ebpf::OnMiss::Pass
        };
        let program =
            match ebpf::ReuseportEbpf::load(self.sockarray.len() as u32, self.select, on_miss) {
                Ok(p) => p,
                Err(e) => return Ok(vec![(step.at(".load"), ebpf::error_name(&e).into())]),
            };
        Ok(ebpf::fill_and_attach(&program, &exec.table, step, &self.sockarray, &self.sock))
    }
}
