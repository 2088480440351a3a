//! `bind_pairs: NAME`: a whole bind conflict matrix from one step. For every ordered
//! pair of addresses and every option: bind the first and bring it to `state`, then
//! bind the second to the same port; observe the second bind, then each of `then`.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::{PairAddr, PairOption, PairState, Proto};
use crate::case::scope::Scope;
use crate::exec::{pairs, Executor, StepCtx, StepResult};
use crate::yaml::{Kind, Node};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BindPairs {
    pub proto: Proto,
    pub addrs: Vec<PairAddr>,
    pub options: Vec<PairOption>,
    pub state: PairState,
    /// Labels of `addrs`, bound after the pair without options, in order.
    pub then: Vec<String>,
}

impl Step for BindPairs {
    const DOC: Doc = Doc {
        syntax: "bind_pairs: NAME",
        fields: "`proto:`, `addrs: {label: addr or {addr, v6only}}`, `options: [plain, reuseaddr, reuseport]` (all), `state: bound\\|listening\\|connected\\|time_wait` (listening for TCP, else bound; `listen: true\\|false` is the older spelling), `then: [labels]` (bound after the pair, without options, in order, each kept)",
        observes: "`bind_pairs.NAME.<first>.<second>.<option>`: the second bind's result, for every ordered pair — a whole conflict matrix from one step; `....<option>.<label>` for each bind of `then`",
    };
    const EXPLORE: Explore = Explore::No("a whole conflict matrix in one step: already a case");

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
        let state = pair_state(f, proto, diags);
        let then = f
            .get("then")
            .map(|n| pair_tail(n, &addrs, diags))
            .unwrap_or_default();
        Some(BindPairs {
            proto,
            addrs,
            options,
            state,
            then,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        let mut keys = Vec::new();
        for first in &self.addrs {
            for second in &self.addrs {
                for option in &self.options {
                    let pair =
                        format!("{key}.{}.{}.{}", first.label, second.label, option.label());
                    keys.extend(self.then.iter().map(|label| format!("{pair}.{label}")));
                    keys.push(pair);
                }
            }
        }
        keys
    }

    fn run(&self, _exec: &mut Executor, step: &StepCtx) -> StepResult {
        pairs::Matrix {
            proto: self.proto,
            addrs: &self.addrs,
            options: &self.options,
            state: self.state,
            then: &self.then,
        }
        .run(step.key)
        .map_err(|why| step.fail(why))
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

/// `state:` (bound, listening, connected, time_wait), or the older `listen:`
/// (true: listening, false: bound). Default: listening for TCP, bound otherwise.
fn pair_state(f: &mut Fields, proto: Proto, diags: &mut Diags) -> PairState {
    let listen = f.get("listen");
    let given = f.get("state");
    let default = if matches!(proto, Proto::Tcp | Proto::Mptcp) {
        PairState::Listening
    } else {
        PairState::Bound
    };
    let state = match (listen, given) {
        (Some(n), Some(_)) => {
            diags.error(n.pos, "give `state` or `listen`, not both");
            default
        }
        (Some(n), None) => match fields::boolean(n, "listen", diags) {
            Some(false) => PairState::Bound,
            _ => PairState::Listening,
        },
        (None, Some(n)) => {
            let found = PairState::ALL
                .iter()
                .find(|(name, _)| n.scalar() == Some(name));
            match found {
                Some((_, state)) => *state,
                None => {
                    diags.error(n.pos, "state is bound, listening, connected or time_wait");
                    default
                }
            }
        }
        (None, None) => default,
    };
    let tcp_only = matches!(state, PairState::Listening | PairState::TimeWait);
    if let (true, false, Some(n)) = (
        tcp_only,
        matches!(proto, Proto::Tcp | Proto::Mptcp),
        given.or(listen),
    ) {
        diags.error(
            n.pos,
            "listening and time_wait are TCP states; use bound or connected",
        );
    }
    state
}

/// `then:` labels of `addrs`, each bound once after the pair, in order.
fn pair_tail(node: &Node, addrs: &[PairAddr], diags: &mut Diags) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    fields::list(node, "then", diags)
        .iter()
        .filter_map(|n| {
            let label = fields::name(n, "an address label", diags)?;
            if !addrs.iter().any(|a| a.label == label) {
                diags.error(n.pos, format!("`{label}` is not one of the addrs labels"));
                return None;
            }
            if !seen.insert(label.clone()) {
                diags.error(n.pos, format!("`{label}` is bound twice in `then`"));
                return None;
            }
            Some(label)
        })
        .collect()
}
