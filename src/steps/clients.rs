//! `clients: GROUP`: a group of TCP clients connects to a target, one every
//! `interval`, in the foreground or on a background thread (`wait` joins it).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::{Family, Fastopen, Target};
use crate::case::scope::{GroupKind, Scope};
use crate::exec::{self, clients, cpu, Background, Executor, StepCtx, StepResult};
use crate::yaml::Node;

/// `count` TCP clients connect to `to`, one every `interval_us`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Clients {
    pub group: String,
    pub count: u32,
    pub to: Target,
    pub family: Option<Family>,
    pub interval_us: u64,
    pub timeout_ms: u64,
    pub background: bool,
    /// Connect from this CPU (the connecting thread is pinned to it).
    pub cpu: Option<u32>,
    /// Open each connection with TCP Fast Open, one byte of data in the SYN.
    #[serde(default)]
    pub fastopen: Option<Fastopen>,
}

impl Step for Clients {
    const DOC: Doc = Doc {
        syntax: "clients: GROUP",
        fields: "`count:`, `to:`, `family:` (from the target), `interval:` between connects (0), `timeout:` (1s), `background: true` (false), `fastopen: sendto\\|connect` (TCP Fast Open with one byte in the SYN: sendto(MSG_FASTOPEN), or TCP_FASTOPEN_CONNECT then write)",
        observes: "`clients.GROUP.connected/refused/timed_out/failed`, and `.first_error` (the errno of the first failure, or `none`)",
    };
    const EXPLORE: Explore = Explore::No("many connections: spread by hash placement");

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let group = fields::name(subject, "a group name", diags);
        if let Some(g) = &group {
            if scope.groups.contains_key(g) {
                diags.error(subject.pos, format!("group `{g}` already exists"));
            }
        }
        let count = f
            .require("count", diags)
            .and_then(|n| fields::uint(n, "count", 100_000, diags));
        let to = f.require("to", diags).and_then(|n| scope.target(n, diags));
        let family = f.get("family").and_then(|n| fields::family(Some(n), diags));
        let interval_us = f
            .get("interval")
            .and_then(|n| fields::duration_us(n, "interval", diags))
            .unwrap_or(0);
        let timeout_ms = fields::ms_or(f, "timeout", super::connect::DEFAULT_TIMEOUT_MS, diags);
        let background = f
            .get("background")
            .and_then(|n| fields::boolean(n, "background", diags))
            .unwrap_or(false);
        let cpu = fields::cpu(f, diags);
        let fastopen = f.get("fastopen").and_then(|n| match n.scalar() {
            Some("sendto") => Some(Fastopen::Sendto),
            Some("connect") => Some(Fastopen::Connect),
            _ => {
                diags.error(
                    n.pos,
                    "fastopen is sendto (MSG_FASTOPEN) or connect (TCP_FASTOPEN_CONNECT)",
                );
                None
            }
        });
        Some(Clients {
            group: group?,
            count: count? as u32,
            to: to?,
            family,
            interval_us,
            timeout_ms,
            background,
            cpu,
            fastopen,
        })
    }

    /// A background group's observations appear at its `wait`, under this key.
    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        clients::CONNECT_KEYS
            .iter()
            .map(|n| format!("{key}.{n}"))
            .collect()
    }

    fn declare(&self, line: usize, scope: &mut Scope) {
        scope
            .groups
            .insert(self.group.clone(), GroupKind::Clients);
        if self.background {
            scope.background.insert(self.group.clone(), line);
        }
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let to = exec.table.resolve(&self.to).map_err(|e| {
            step.fail(format!(
                "no address to connect to: {}",
                crate::errno::of_io(&e)
            ))
        })?;
        let family = self.family.unwrap_or(exec::family_of(&to));
        let (count, interval, timeout) = (
            self.count,
            Duration::from_micros(self.interval_us),
            Duration::from_millis(self.timeout_ms),
        );
        let (cpu, fastopen) = (self.cpu, self.fastopen);
        let connect = move || {
            cpu::on_cpu(cpu, || {
                clients::connect_group(to, family, count, interval, timeout, fastopen)
            })
            .map_err(|e| exec::pin_failure(cpu, &e))
        };
        if self.background {
            let thread = std::thread::spawn(connect);
            exec.background.insert(
                self.group.clone(),
                Background {
                    key: step.key.to_string(),
                    line: step.line,
                    step: step.name.to_string(),
                    thread,
                },
            );
            Ok(Vec::new())
        } else {
            let finished = connect().map_err(|why| step.fail(why))?;
            Ok(exec.finish_group(step.key, &self.group, finished))
        }
    }
}
