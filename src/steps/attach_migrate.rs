//! `attach_migrate: NAME`: an SK_REUSEPORT program of expected_attach_type
//! BPF_SK_REUSEPORT_SELECT_OR_MIGRATE (5.14) on NAME's group, choosing where the
//! requests and children of a closed listener go (runtime: `exec::ebpf_migrate`).

use serde::{Deserialize, Serialize};

use super::{Doc, Explore, Step};
use crate::case::fields::{self, Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::ebpf_migrate::{MigrateTo, MigratingEbpf};
use crate::exec::{ebpf, Executor, StepCtx, StepResult};
use crate::yaml::Node;

/// Sockets a program was attached to, while a case is decoded (for `migrations`).
#[derive(Default)]
pub(super) struct Migrated(pub std::collections::BTreeSet<String>);

/// The attached programs by socket, while a case runs: `migrations` reads their
/// counters, which outlive the socket.
#[derive(Default)]
pub(super) struct Programs(pub std::collections::BTreeMap<String, crate::exec::ebpf_migrate::MigratingEbpf>);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttachMigrate {
    pub sock: String,
    pub sockarray: Vec<String>,
    /// The slot new SYNs go to; None: SK_PASS, the kernel hashes.
    pub select: Option<u32>,
    pub migrate: MigrateTo,
}

impl Step for AttachMigrate {
    const DOC: Doc = Doc {
        syntax: "attach_migrate: NAME",
        fields: "`sockarray: [sockets]` (slots in order; listening TCP sockets), `select: K` (the slot for new SYNs; without it SK_PASS: hash), `migrate: K\\|hash\\|drop` (required: the slot a migrating request or child goes to, SK_PASS without a choice, or SK_DROP)",
        observes: "an SK_REUSEPORT program loaded with BPF_SK_REUSEPORT_SELECT_OR_MIGRATE (5.14+) and attached to NAME's group; `attach_migrate.NAME.load`, `.fill`, `attach_migrate.NAME` as for `attach_ebpf`. It counts each migration it is asked about (see `migrations`)",
    };
    const EXPLORE: Explore = Explore::No("an eBPF migration program: needs a group under load");

    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self> {
        let sock = scope.socket(subject, diags);
        let sockarray = f
            .require("sockarray", diags)
            .map(|n| scope.socket_list(n, "sockarray", diags))
            .unwrap_or_default();
        let slot = |n: &Node, what: &str, diags: &mut Diags| {
            let k = fields::uint(n, what, u32::MAX as u64, diags)? as u32;
            if k as usize >= sockarray.len() {
                diags.error(
                    n.pos,
                    format!("{what} {k} is beyond the sockarray ({} slots)", sockarray.len()),
                );
            }
            Some(k)
        };
        let select = f.get("select").and_then(|n| slot(n, "select", diags));
        let migrate = match f.require("migrate", diags) {
            Some(n) => match n.scalar() {
                Some("hash") => Some(MigrateTo::Hash),
                Some("drop") => Some(MigrateTo::Drop),
                Some(s) if s.parse::<u64>().is_ok() => slot(n, "migrate", diags).map(MigrateTo::Slot),
                _ => {
                    diags.error(n.pos, "migrate is a sockarray slot, hash or drop");
                    None
                }
            },
            None => None,
        };
        Some(AttachMigrate {
            sock: sock?,
            sockarray,
            select,
            migrate: migrate?,
        })
    }

    fn observations(&self, key: &str, _scope: &Scope) -> Vec<String> {
        vec![key.to_string(), format!("{key}.load"), format!("{key}.fill")]
    }

    fn declare(&self, _line: usize, scope: &mut Scope) {
        scope.kept.of::<Migrated>().0.insert(self.sock.clone());
    }

    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
        let select = self.select.map(|k| (k, ebpf::OnMiss::Pass));
        let program =
            match MigratingEbpf::load(self.sockarray.len() as u32, select, self.migrate) {
                Ok(p) => p,
                Err(e) => return Ok(vec![(step.at(".load"), ebpf::error_name(&e).into())]),
            };
        let observed =
            ebpf::fill_and_attach(program.program(), &exec.table, step, &self.sockarray, &self.sock);
        // Kept for `migrations`: its counters outlive the socket it was attached to.
        exec.kept.of::<Programs>().0.insert(self.sock.clone(), program);
        Ok(observed)
    }
}
