//! `bind_pairs: NAME`: a whole bind conflict matrix from one step. For every ordered
//! pair of addresses and every option: bind the first (and listen), then bind the
//! second to the same port; observe the second bind.

use serde::{Deserialize, Serialize};

use super::{Doc, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::{PairAddr, PairOption, Proto};
use crate::case::scope::Scope;
use crate::exec::{pairs, Executor, StepCtx, StepResult};
use crate::yaml::{Kind, Node};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BindPairs {
    pub proto: Proto,
    pub addrs: Vec<PairAddr>,
    pub options: Vec<PairOption>,
    pub listen: bool,
}

impl Step for BindPairs {
    const DOC: Doc = Doc {
        syntax: "bind_pairs: NAME",
        fields: "`proto:`, `addrs: {label: addr or {addr, v6only}}`, `options: [plain, reuseaddr, reuseport]` (all), `listen:` (true)",
        observes: "`bind_pairs.NAME.<first>.<second>.<option>`: the second bind's result, for every ordered pair — a whole conflict matrix from one step",
    };

    fn decode(subject: &Node, f: &mut Fields, _scope: &Scope, diags: &mut Diags) -> Option<Self> {
        fields::name(subject, "a matrix name", diags)?;
        let proto = fields::proto(f, diags);
        let addrs = f
            .require("addrs", diags)
            .map(|n| pair_addrs(n, diags))
            .unwrap_or_default();
        let options = match f.get("options") {
            None => vec![
                PairOption::None,
                PairOption::Reuseaddr,
                PairOption::Reuseport,
            ],
            Some(n) => fields::list(n, "options", diags)
                .iter()
                .filter_map(|o| match o.scalar() {
                    Some("plain") => Some(PairOption::None),
                    Some("reuseaddr") => Some(PairOption::Reuseaddr),
                    Some("reuseport") => Some(PairOption::Reuseport),
                    _ => {
                        diags.error(o.pos, "options are plain, reuseaddr or reuseport");
                        None
                    }
                })
                .collect(),
        };
        let listen = f
            .get("listen")
            .and_then(|n| fields::boolean(n, "listen", diags))
            .unwrap_or(true);
        Some(BindPairs {
            proto,
            addrs,
            options,
            listen,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        let mut keys = Vec::new();
        for first in &self.addrs {
            for second in &self.addrs {
                for option in &self.options {
                    keys.push(format!(
                        "{key}.{}.{}.{}",
                        first.label,
                        second.label,
                        option.label()
                    ));
                }
            }
        }
        keys
    }

    fn run(&self, _exec: &mut Executor, step: &StepCtx) -> StepResult {
        Ok(pairs::run(
            step.key,
            self.proto,
            &self.addrs,
            &self.options,
            self.listen,
        ))
    }
}

/// `addrs: {label: address, label: {addr, v6only}}`.
fn pair_addrs(node: &Node, diags: &mut Diags) -> Vec<PairAddr> {
    let Kind::Map(entries) = &node.kind else {
        diags.error(
            node.pos,
            "addrs is a mapping of label: address (or label: {addr, v6only})",
        );
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|(k, v)| {
            let label = fields::name(k, "an address label", diags)?;
            if let Kind::Scalar { .. } = v.kind {
                let addr = fields::ip(v, "addr", diags)?;
                return Some(PairAddr {
                    label,
                    addr,
                    v6only: None,
                });
            }
            let mut f = Fields::of(v, "an address", diags)?;
            let addr = f
                .require("addr", diags)
                .and_then(|n| fields::ip(n, "addr", diags));
            let v6only = f
                .get("v6only")
                .and_then(|n| fields::boolean(n, "v6only", diags));
            f.finish(diags);
            Some(PairAddr {
                label,
                addr: addr?,
                v6only,
            })
        })
        .collect()
}
