//! `drop: NAME`: an XDP program on the namespace's `lo` drops the packets matching a
//! filter until `release: NAME`.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::{PacketFilter, PortSide, Proto, TcpFlags};
use crate::case::scope::Scope;
use crate::exec::{packet_drop::Dropper, Executor, StepCtx, StepResult};
use crate::yaml::Node;

/// `drop` filters by name, while a case is decoded: true while attached (released
/// ones stay known). `release` reads it too.
#[derive(Default)]
pub(super) struct DropNames(pub std::collections::BTreeMap<String, bool>);

/// Attached filters by name, while a case runs; dropping one detaches it.
#[derive(Default)]
pub(super) struct Attached(pub std::collections::BTreeMap<String, Dropper>);

/// Drops packets matching `filter` on `lo` (XDP) until `release`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Drop {
    pub name: String,
    pub filter: PacketFilter,
}

impl Step for Drop {
    const DOC: Doc = Doc {
        syntax: "drop: NAME",
        fields: "`tcp_flags: any\\|ack\\|syn\\|synack\\|rst\\|fin` (any; `ack` is a pure ACK: no SYN/FIN/RST, no payload — a handshake's last), `proto:` (tcp), `port:` a number or a socket name, `direction: to\\|from` (to: the packets' destination port), `family:` (both), `count:` stop after this many (never)",
        observes: "`drop.NAME` = `ok` or the errno of loading/attaching. An XDP program on the namespace's `lo` (generic mode, netlink IFLA_XDP) drops the matching packets until `release`",
    };
    const EXPLORE: Explore = Explore::No("packet filters: timing of retransmissions");

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let name = fields::name(subject, "a drop filter name", diags)?;
        if scope
            .kept
            .get::<DropNames>()
            .is_some_and(|d| d.0.contains_key(&name)) {
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
        Some(Drop {
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

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string()]
    }

    fn declare(&self, _line: usize, scope: &mut Scope) {
        scope.kept.of::<DropNames>().0.insert(self.name.clone(), true);
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let filter = &self.filter;
        let port = match filter.port.as_ref().map(|p| exec.table.port(p)).transpose() {
            Ok(port) => port,
            Err(e) => {
                return Err(step.fail(format!(
                    "no port to filter on ({})",
                    crate::errno::of_io(&e)
                )))
            }
        };
        // A filter that cannot attach leaves nothing for the case to observe:
        // the step fails with the reason (the verifier's log, an errno).
        let dropper = Dropper::attach(filter, port)
            .map_err(|e| step.fail(format!("cannot attach the XDP filter to lo: {e}")))?;
        exec.kept.of::<Attached>().0.insert(self.name.clone(), dropper);
        step.one("ok")
    }
}
