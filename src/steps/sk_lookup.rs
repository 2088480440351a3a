//! `sk_lookup: NAME`: a BPF sk_lookup program linked to the case's network namespace
//! hands the lookups for one port to a picked socket (bpf_sk_assign), whose
//! reuseport group still chooses unless `no_reuseport`.

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::{PortSpec, Proto};
use crate::case::scope::Scope;
use crate::exec::{ebpf, sk_lookup, Executor, StepCtx, StepResult};
use crate::yaml::Node;

/// Attached programs with their links; the case's end detaches them.
#[derive(Default)]
struct Attached(Vec<(crate::exec::sk_lookup::SkLookup, crate::exec::sk_lookup::Link)>);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkLookup {
    /// The program's name (its observations' subject).
    pub name: String,
    /// The socket the program assigns (slot 0 of its SOCKMAP).
    pub pick: String,
    /// Only lookups for this local port; None: every lookup of the protocol.
    pub port: Option<PortSpec>,
    /// BPF_SK_LOOKUP_F_NO_REUSEPORT: skip the picked socket's group selection.
    pub no_reuseport: bool,
}

impl Step for SkLookup {
    const DOC: Doc = Doc {
        syntax: "sk_lookup: NAME",
        fields: "`pick:` a socket (required), `port:` a number or a socket name (only lookups for that local port; default all), `no_reuseport:` (false)",
        observes: "a BPF sk_lookup program linked to the case's namespace (5.9+) assigns every lookup of `pick`'s protocol to `pick` with bpf_sk_assign(); the picked socket's reuseport group still chooses unless `no_reuseport` (BPF_SK_LOOKUP_F_NO_REUSEPORT). `sk_lookup.NAME.load`, `.fill` (the socket into the SOCKMAP), `sk_lookup.NAME` (the link); the case's end detaches it",
    };
    const EXPLORE: Explore = Explore::No("a steering program: needs a socket map set up");

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let name = fields::name(subject, "an sk_lookup program name", diags);
        let pick = f.require("pick", diags).and_then(|n| {
            let sock = scope.socket(n, diags)?;
            if !matches!(scope.sockets[&sock].0, Proto::Tcp | Proto::Udp | Proto::Mptcp) {
                diags.error(
                    n.pos,
                    format!("`{sock}` is not a TCP, UDP or MPTCP socket: sk_lookup sees TCP and UDP"),
                );
                return None;
            }
            Some(sock)
        });
        let port = f.get("port").and_then(|n| scope.port(n, diags));
        let no_reuseport = f
            .get("no_reuseport")
            .and_then(|n| fields::boolean(n, "no_reuseport", diags))
            .unwrap_or(false);
        Some(SkLookup {
            name: name?,
            pick: pick?,
            port,
            no_reuseport,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![
            key.to_string(),
            format!("{key}.load"),
            format!("{key}.fill"),
        ]
    }

    /// Like `attach_ebpf`: `.load`, `.fill` (the picked socket into the SOCKMAP), and
    /// the link to the namespace under the key. A failed load ends the observations
    /// there; the link, once made, lives in the executor until the case ends.
    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let port = match self.port.as_ref().map(|p| exec.table.port(p)).transpose() {
            Ok(port) => port,
            Err(e) => {
                let why = crate::errno::of_io(&e);
                return Err(step.fail(format!("no port to match ({why})")));
            }
        };
        let errno = ebpf::error_name;
        // MPTCP listens through TCP subflows: its lookups are TCP ones.
        let protocol = match exec.table.entry(&self.pick).proto {
            Proto::Udp => libc::IPPROTO_UDP,
            _ => libc::IPPROTO_TCP,
        };
        let redirect = sk_lookup::Redirect {
            protocol,
            port,
            no_reuseport: self.no_reuseport,
        };
        let program = match sk_lookup::SkLookup::load(redirect) {
            Ok(p) => p,
            Err(e) => return Ok(vec![(step.at(".load"), errno(&e).into())]),
        };
        let fill = exec
            .table
            .with(&self.pick, |s| program.set_target(s))
            .map_or_else(|e| errno(&e), |()| "ok".to_string());
        let attach = match program.attach_to_netns() {
            Ok(link) => {
                exec.kept.of::<Attached>().0.push((program, link));
                "ok".to_string()
            }
            Err(e) => errno(&e),
        };
        Ok(vec![
            (step.at(".load"), "ok".into()),
            (step.at(".fill"), fill.into()),
            (step.key.to_string(), attach.into()),
        ])
    }
}
