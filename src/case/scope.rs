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
    /// What steps declared for later steps, by the step's own type.
    pub kept: crate::step_state::StepState,
    /// Sockets a `repeat` block created, by base name (`l` for `l[0]`...).
    pub indexed: BTreeMap<String, Indexed>,
    /// The `repeat` block whose steps are being decoded.
    pub template: Option<Template>,
}

/// Indices of one group of repeated sockets (`l[first]` .. `l[first + count - 1]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Indexed {
    pub first: u32,
    pub count: u32,
    pub proto: Proto,
    pub family: Family,
}

/// The block being decoded: its indices, so `l[i]` can be checked against them.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub first: u32,
    pub count: u32,
}

impl Scope {
    pub fn socket(&self, node: &Node, diags: &mut Diags) -> Option<String> {
        let name = fields::name(node, "a socket name", diags)?;
        if let Some(open) = name.find('[') {
            return self.indexed_socket(node, &name, &name[..open], diags);
        }
        if !self.sockets.contains_key(&name) {
            diags.error(
                node.pos,
                format!("no socket named `{name}` was created before this step"),
            );
            return None;
        }
        Some(name)
    }

    /// A list of socket names (a sockarray's slots, in order) or one name, each
    /// checked as `socket` checks one; an error at `node` when the list is empty.
    pub fn socket_list(&self, node: &Node, what: &str, diags: &mut Diags) -> Vec<String> {
        let items = match &node.kind {
            crate::yaml::Kind::Seq(items) => items.as_slice(),
            _ => std::slice::from_ref(node),
        };
        if items.is_empty() {
            diags.error(node.pos, format!("{what} needs at least one socket"));
        }
        items.iter().filter_map(|n| self.socket(n, diags)).collect()
    }

    /// `l[i]` in a block (created by it, or by an earlier block covering its
    /// indices) or `l[3]` after one; ranges (`l[*]`) are blocks of their own.
    fn indexed_socket(
        &self,
        node: &Node,
        name: &str,
        base: &str,
        diags: &mut Diags,
    ) -> Option<String> {
        use super::repeat::{parse_index, IndexRef};
        let group = self.indexed.get(base);
        let covers = |first: u32, end: u64| {
            group
                .is_some_and(|g| g.first <= first && end <= u64::from(g.first) + u64::from(g.count))
        };
        let fine = match (parse_index(name), self.template) {
            (None, _) => false,
            (Some(Ok((_, IndexRef::One(n)))), None) => covers(n, u64::from(n) + 1),
            (Some(Err(_)), Some(t)) if name.ends_with("[i]") => {
                self.sockets.contains_key(name)
                    || covers(t.first, u64::from(t.first) + u64::from(t.count))
            }
            (Some(Err(why)), _) => {
                diags.error(node.pos, why);
                return None;
            }
            (Some(Ok(_)), _) => {
                diags.error(
                    node.pos,
                    format!(
                        "`{name}`: this step takes one socket (`{base}[i]` inside a `repeat` block)"
                    ),
                );
                return None;
            }
        };
        if !fine {
            let exist = group.map_or_else(
                || format!("no `repeat` block before this step created sockets `{base}[i]`"),
                |g| {
                    format!(
                        "sockets `{base}[i]` exist for indices {}..{}",
                        g.first,
                        g.first + g.count
                    )
                },
            );
            diags.error(node.pos, format!("no socket `{name}`: {exist}"));
            return None;
        }
        Some(name.to_string())
    }

    /// The protocol and family of a socket by name: a plain one, or one index of a
    /// `repeat` block's sockets (`u[3]`, within the indices the block created).
    pub fn kind_of(&self, name: &str) -> Option<(Proto, Family)> {
        if let Some(kind) = self.sockets.get(name) {
            return Some(*kind);
        }
        use super::repeat::{parse_index, IndexRef};
        let Some(Ok((base, IndexRef::One(n)))) = parse_index(name) else {
            return None;
        };
        let g = self.indexed.get(base)?;
        (g.first <= n && u64::from(n) < u64::from(g.first) + u64::from(g.count))
            .then_some((g.proto, g.family))
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
