//! Restoring a saved guest instead of booting one: finds (or makes) the snapshot of
//! a kernel's waiting agent and turns a cold boot's spec into a restore that hands
//! the plan over the results port. Any trouble means a cold boot, with a message.
//! A plan's kernel modules are in the restored image: the snapshot carries them.

use std::path::Path;
use std::time::Duration;

use super::{Progress, RunOptions};
use crate::agent::GuestPlan;
use crate::qemu::snapshot::{self, ModuleFile, Request, Saving};
use crate::qemu::{self, BootSpec, ResolvedAccel, StateFile};
use crate::resume::{PlanDelivery, SERIAL_PLAN_ARG};

/// A restored guest answers within a second; this bounds a restore that hangs.
const RESTORE_READY: Duration = Duration::from_secs(15);

/// Changes `spec` (a cold boot) into a restore of `kernel_id`'s snapshot, making
/// the snapshot first if there is none. Returns the snapshot key, or None (and
/// leaves `spec` alone) when the guest must boot cold.
pub fn into_restore(
    spec: &mut BootSpec,
    kernel_id: &str,
    plan: &GuestPlan,
    opts: &RunOptions,
    scratch: &Path,
    module_files: &[(String, std::path::PathBuf)],
    progress: &(dyn Fn(Progress) + Sync),
) -> Option<String> {
    let say = |reason: String| {
        progress(Progress::Retrying {
            kernel: kernel_id.into(),
            reason,
        })
    };
    // Only TCG guests are saved: a KVM boot is fast already.
    let chosen = opts.accel.resolve(&spec.kernel).ok()?;
    if chosen.accel != ResolvedAccel::Tcg {
        return None;
    }
    let agent = super::agent_binary().ok()?;
    // The base key is made from the image without modules; the modules a snapshot
    // carries are matched by content (see `snapshot`).
    let waiting = scratch.join("waiting-agent.cpio");
    super::write_guest_image(&waiting, &agent, None, &[]).ok()?;
    let needed = match module_files
        .iter()
        .map(|(name, path)| ModuleFile::hash(name, path))
        .collect::<anyhow::Result<Vec<_>>>()
    {
        Ok(needed) => needed,
        Err(e) => {
            say(format!("{e:#}; booting cold"));
            return None;
        }
    };
    let mut probe = spec.clone();
    probe.init_args = vec![SERIAL_PLAN_ARG.into()];
    let req = Request {
        kernel: &spec.kernel,
        initramfs: &waiting,
        accel: ResolvedAccel::Tcg,
        machine: spec.machine,
        memory_mb: spec.memory_mb,
        cpus: spec.cpus,
        cmdline: qemu::boot::guest_cmdline(&probe, ResolvedAccel::Tcg),
    };
    let (base, parts) = snapshot::key(&req).ok()?;
    let dir = snapshot::dir();
    snapshot::sweep_temporaries(&dir);
    let found = match snapshot::lookup_covering(&dir, &base, &needed) {
        Ok(found) => found,
        Err(why) => {
            say(format!("{why}; saving a new one"));
            None
        }
    };
    let snap = match found {
        Some(s) => s,
        None => {
            // Carries what earlier snapshots of this kernel carried too, so runs
            // with other module needs keep restoring from one snapshot.
            let modules = snapshot::modules_to_save(&dir, &base, &needed);
            let image = scratch.join("waiting-agent-modules.cpio");
            let files: Vec<(String, std::path::PathBuf)> = modules
                .iter()
                .map(|m| (m.name.clone(), m.path.clone()))
                .collect();
            super::write_guest_image(&image, &agent, None, &files).ok()?;
            let saving = Saving {
                base: &base,
                parts,
                modules,
                image: &image,
            };
            progress(Progress::SavingSnapshot {
                kernel: kernel_id.into(),
                modules: saving.modules.iter().map(|m| m.name.clone()).collect(),
            });
            let log = scratch.join("snapshot-console.log");
            match snapshot::create(&dir, saving, &req, &log) {
                Ok(s) => s,
                Err(e) => {
                    say(format!("could not save a snapshot ({e:#}); booting cold"));
                    return None;
                }
            }
        }
    };
    let input = match PlanDelivery::new(plan.clone()) {
        Ok(d) => d.to_wire(),
        Err(e) => {
            say(format!(
                "no host entropy for a restored guest ({e}); booting cold"
            ));
            return None;
        }
    };
    let key = snap.key;
    spec.initramfs = snap.initramfs;
    spec.init_args = probe.init_args;
    spec.retries = 0;
    spec.ready_timeout = RESTORE_READY.mul_f64(super::boot_patience());
    spec.state = Some(StateFile::RestoreFrom {
        state: snap.state,
        input,
    });
    Some(key)
}

/// A restore that never reached the agent: the snapshot is not trusted again.
pub fn forget(key: &str) {
    snapshot::remove(&snapshot::dir(), key);
}
