//! Decoding the packet-control and half-open steps: `drop`, `release`, `requests`, `send`.

use crate::case::fields::{self, Diags, Fields};
use crate::case::model::*;
use crate::case::scope::{GroupKind, Scope};
use crate::yaml::Node;

/// `drop: NAME` with `proto`, `tcp_flags`, `port`, `direction`, `family`, `count`.
pub(super) fn drop(
    subject: &Node,
    f: &mut Fields,
    scope: &Scope,
    diags: &mut Diags,
) -> Option<Action> {
    let name = fields::name(subject, "a drop filter name", diags)?;
    if scope.drops.contains_key(&name) {
        diags.error(
            subject.pos,
            format!("a drop filter named `{name}` already exists"),
        );
    }
    let proto = fields::proto(f, diags);
    let tcp_flags = match f.get("tcp_flags").map(|n| (n, n.scalar())) {
        None | Some((_, Some("any"))) => TcpFlags::Any,
        Some((n, flags)) => {
            if proto != Proto::Tcp {
                diags.error(n.pos, "tcp_flags only applies to `proto: tcp`");
            }
            match flags {
                Some("ack") => TcpFlags::Ack,
                Some("syn") => TcpFlags::Syn,
                Some("synack") => TcpFlags::SynAck,
                Some("rst") => TcpFlags::Rst,
                Some("fin") => TcpFlags::Fin,
                _ => {
                    diags.error(
                        n.pos,
                        "tcp_flags is any, ack (a pure ACK), syn, synack, rst or fin",
                    );
                    TcpFlags::Any
                }
            }
        }
    };
    let port = f.get("port").and_then(|n| scope.port(n, diags));
    let side = match f.get("direction").map(|n| (n, n.scalar())) {
        None | Some((_, Some("to"))) => PortSide::Destination,
        Some((_, Some("from"))) => PortSide::Source,
        Some((n, _)) => {
            diags.error(
                n.pos,
                "direction is to (packets sent to `port`) or from (sent from it)",
            );
            PortSide::Destination
        }
    };
    let family = f.get("family").and_then(|n| fields::family(Some(n), diags));
    let limit = f
        .get("count")
        .and_then(|n| fields::uint(n, "count", i32::MAX as u64, diags))
        .map(|c| c as u32);
    Some(Action::Drop {
        name,
        filter: PacketFilter {
            proto,
            tcp_flags,
            port,
            side,
            family,
            limit,
        },
    })
}

/// `release: NAME`: a drop filter attached earlier and not yet released.
pub(super) fn release(subject: &Node, scope: &Scope, diags: &mut Diags) -> Option<Action> {
    let name = fields::name(subject, "a drop filter name", diags)?;
    if scope.drops.get(&name) != Some(&true) {
        diags.error(
            subject.pos,
            format!("no drop filter named `{name}` is attached before this step"),
        );
        return None;
    }
    Some(Action::Release { name })
}

pub(super) fn requests(subject: &Node, scope: &Scope, diags: &mut Diags) -> Option<Action> {
    Some(Action::Requests {
        sock: scope.socket(subject, diags)?,
    })
}

pub(super) fn send(subject: &Node, scope: &Scope, diags: &mut Diags) -> Option<Action> {
    let group = scope.group(subject, GroupKind::Clients, diags)?;
    if scope.background.contains_key(&group) {
        diags.error(
            subject.pos,
            format!("`wait: {group}` must come before its clients send"),
        );
    }
    Some(Action::Send { group })
}

/// The observation keys of these steps.
pub(super) fn observation_keys(key: &str, action: &Action) -> Option<Vec<String>> {
    Some(match action {
        Action::Drop { .. } | Action::Requests { .. } | Action::Send { .. } => {
            vec![key.to_string()]
        }
        Action::Release { .. } => vec![key.to_string(), format!("{key}.dropped")],
        _ => return None,
    })
}

/// What these steps change in the scope: attached and released filters.
pub(super) fn record_effects(action: &Action, scope: &mut Scope) {
    match action {
        Action::Drop { name, .. } => {
            scope.drops.insert(name.clone(), true);
        }
        Action::Release { name } => {
            scope.drops.insert(name.clone(), false);
        }
        _ => {}
    }
}
