//! The kernel modules a kernel's cases require: found (with their dependencies) in
//! the kernel's own package, for the initramfs and the plan.
//!
//! A restored guest has them too: the snapshot's image carries every module the
//! plans restored from it need (`qemu::snapshot`), never bytes sent over the port.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::guest::KernelImage;
use crate::agent::ModulePlan;
use crate::case::{Case, Requirement};
use crate::kernel::modules::{resolve, Found};

/// Each required module's plan, and the files (name, `.ko`) the initramfs carries.
/// Nothing is looked up when no case requires a module.
pub fn plan_modules(
    image: &KernelImage,
    cases: &[Case],
) -> (BTreeMap<String, ModulePlan>, Vec<(String, PathBuf)>) {
    let mut plans = BTreeMap::new();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let names = cases
        .iter()
        .flat_map(|c| &c.plan.requires)
        .filter_map(|r| match r {
            Requirement::Module(name) => Some(name.clone()),
            _ => None,
        });
    for name in names {
        if plans.contains_key(&name) {
            continue;
        }
        let plan = match resolve(&image.modules, &name, false) {
            Ok(Found::Builtin) => ModulePlan::Builtin,
            Ok(Found::Missing(reason)) => ModulePlan::Missing { reason },
            Ok(Found::Load(order)) => {
                let mut load = Vec::new();
                for (module, path) in order {
                    load.push(format!("/modules/{module}.ko"));
                    if !files.iter().any(|(m, _)| *m == module) {
                        files.push((module, path));
                    }
                }
                ModulePlan::Load { files: load }
            }
            Err(e) => ModulePlan::Error {
                message: format!("{e:#}"),
            },
        };
        plans.insert(name, plan);
    }
    (plans, files)
}
