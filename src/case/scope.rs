//! What the steps before this one declared (sockets, listeners, groups, filters,
//! observations), so that a step naming something is checked against it.

use std::collections::{BTreeMap, BTreeSet};

use super::fields::{self, Diags, Fields};
use super::model::{Family, PortSpec, Proto, Target};
use crate::yaml::{Kind, Node};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GroupKind {
    Clients,
    Datagrams,
}

/// What earlier steps declared, to check later ones against.
#[derive(Default)]
pub struct Scope {
    pub sockets: BTreeMap<String, (Proto, Family)>,
    pub listeners: BTreeSet<String>,
    /// Sockets a `serve` step accepts on in the background, with its line.
    pub served: BTreeMap<String, usize>,
    pub groups: BTreeMap<String, GroupKind>,
    /// Background client groups not yet waited for, with their line.
    pub background: BTreeMap<String, usize>,
    pub observations: BTreeSet<String>,
    /// `drop` filters by name: true while attached (released ones stay known).
    pub drops: BTreeMap<String, bool>,
    /// Sockets an `attach_migrate` program was attached to (for `migrations`).
    pub migrators: BTreeSet<String>,
}

impl Scope {
    pub fn socket(&self, node: &Node, diags: &mut Diags) -> Option<String> {
        let name = fields::name(node, "a socket name", diags)?;
        if !self.sockets.contains_key(&name) {
            diags.error(
                node.pos,
                format!("no socket named `{name}` was created before this step"),
            );
            return None;
        }
        Some(name)
    }

    pub fn group(&self, node: &Node, kind: GroupKind, diags: &mut Diags) -> Option<String> {
        let name = fields::name(node, "a group name", diags)?;
        if self.groups.get(&name) != Some(&kind) {
            let what = match kind {
                GroupKind::Clients => "client group (from a `clients` step)",
                GroupKind::Datagrams => "datagram group (from a `datagrams` step)",
            };
            diags.error(
                node.pos,
                format!("no {what} named `{name}` before this step"),
            );
            return None;
        }
        Some(name)
    }

    pub fn port(&self, node: &Node, diags: &mut Diags) -> Option<PortSpec> {
        // `-1` or `8080.5` is a number gone wrong, not a socket name.
        if node.scalar().is_some_and(|s| s.parse::<f64>().is_ok()) {
            return fields::uint(node, "port", 65535, diags).map(|p| PortSpec::Number(p as u16));
        }
        self.socket(node, diags).map(PortSpec::Of)
    }

    pub fn target(&self, node: &Node, diags: &mut Diags) -> Option<Target> {
        if let Kind::Scalar { .. } = node.kind {
            return self.socket(node, diags).map(Target::Sock);
        }
        let mut f = Fields::of(node, "`to`", diags)?;
        let addr = f
            .require("addr", diags)
            .and_then(|n| fields::ip(n, "addr", diags));
        let port = f.require("port", diags).and_then(|n| self.port(n, diags));
        f.finish(diags);
        Some(Target::Addr {
            addr: addr?,
            port: port?,
        })
    }
}
