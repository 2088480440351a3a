//! `link: NAME`: creates a dummy device or a veth pair in the case's namespace,
//! brings it up and gives it addresses (the runtime is `exec::link`).

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::link::{self, IfAddr, LinkKind, LinkSpec};
use crate::exec::{Executor, StepCtx, StepResult};
use crate::yaml::Node;

/// IFNAMSIZ is 16 with the terminating NUL.
const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Link {
    pub spec: LinkSpec,
}

impl Step for Link {
    const DOC: Doc = Doc {
        syntax: "link: IFNAME",
        fields: "`kind: dummy\\|veth` (dummy; needs `requires: [{module: dummy}]`, veth `{module: veth}`), `peer: IFNAME` (veth: the other end, same namespace), `addrs: [CIDR]` (`10.0.1.1/24`, `\"fd00::1/64\"`; IPv6 with nodad, usable at once), `peer_addrs: [CIDR]`",
        observes: "`link.IFNAME` = `ok`; the device(s) are up with their addresses. A device the kernel refuses (EOPNOTSUPP: its module is not loaded; EEXIST) is the step's error",
    };
    const EXPLORE: Explore = Explore::No("network devices: a topology, not a socket collision");

    fn decode(subject: &Node, f: &mut Fields, _scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let name = ifname(subject, diags);
        let kind = f.get("kind").map(|n| (n, n.scalar()));
        let peer = f.get("peer");
        let peer_addrs = f.get("peer_addrs");
        let kind = match kind {
            None | Some((_, Some("dummy"))) => {
                for n in [peer, peer_addrs].into_iter().flatten() {
                    diags.error(n.pos, "only a `kind: veth` link has a peer");
                }
                Some(LinkKind::Dummy)
            }
            Some((n, Some("veth"))) => match peer {
                None => {
                    diags.error(n.pos, "a veth link needs `peer:`, the name of its other end");
                    None
                }
                Some(p) => {
                    let peer = ifname(p, diags);
                    if peer.is_some() && peer == name {
                        diags.error(p.pos, "the peer needs a name of its own");
                    }
                    let peer_addrs = peer_addrs.map(|n| addrs(n, diags)).unwrap_or_default();
                    peer.map(|peer| LinkKind::Veth { peer, peer_addrs })
                }
            },
            Some((n, _)) => {
                diags.error(n.pos, "kind is dummy or veth");
                None
            }
        };
        let addrs = f.get("addrs").map(|n| addrs(n, diags)).unwrap_or_default();
        Some(Link {
            spec: LinkSpec {
                name: name?,
                kind: kind?,
                addrs,
            },
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn run(&self, _exec: &mut Executor, step: &StepCtx) -> StepResult {
        match link::create(&self.spec) {
            Ok(()) => step.one("ok"),
            Err(e) => {
                let errno = crate::errno::of_io(&e);
                let hint = if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    format!(
                        "; is the {} module loaded? (requires: [{{module: {}}}])",
                        self.spec.module(),
                        self.spec.module()
                    )
                } else {
                    String::new()
                };
                Err(step.fail(format!(
                    "cannot create {} `{}` ({errno}{hint})",
                    self.spec.module(),
                    self.spec.name
                )))
            }
        }
    }
}

/// An interface name: a plain name of at most 15 bytes that is not `lo`.
fn ifname(node: &Node, diags: &mut Diags) -> Option<String> {
    let name = fields::name(node, "an interface name", diags)?;
    if name.len() > IFNAME_MAX {
        diags.error(
            node.pos,
            format!("interface name `{name}` is longer than {IFNAME_MAX} bytes"),
        );
        return None;
    }
    if name == "lo" {
        diags.error(node.pos, "`lo` exists already in every namespace");
        return None;
    }
    Some(name)
}

/// A list of `ADDR/PREFIX`, the prefix within the family's bits.
fn addrs(node: &Node, diags: &mut Diags) -> Vec<IfAddr> {
    fields::list(node, "addrs", diags)
        .iter()
        .filter_map(|n| {
            let text = fields::string(n, "an address", diags)?;
            let parsed = text.split_once('/').and_then(|(a, p)| {
                let addr: std::net::IpAddr = a.parse().ok()?;
                let prefix: u8 = p.parse().ok()?;
                let bits = if addr.is_ipv4() { 32 } else { 128 };
                (prefix <= bits).then_some(IfAddr { addr, prefix })
            });
            if parsed.is_none() {
                diags.error(
                    n.pos,
                    format!("{}: expected ADDRESS/PREFIX such as 10.0.1.1/24 or fd00::1/64", fields::quoted(&text)),
                );
            }
            parsed
        })
        .collect()
}
