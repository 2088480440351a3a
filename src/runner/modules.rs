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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::kernel::source_build::{self, built};

    /// A kernel `kernels build` made with veth built in (`CONFIG_VETH=y`): the case
    /// requiring `{module: veth}` runs (built in), the one requiring sctp is skipped.
    #[test]
    fn a_built_kernel_with_the_option_built_in_runs_the_case() {
        let cache = tempfile::tempdir().unwrap();
        let staged = built::staging(cache.path()).unwrap();
        std::fs::write(staged.path().join(built::VMLINUZ), b"image").unwrap();
        std::fs::write(
            staged.path().join(built::MODULES_BUILTIN),
            "kernel/drivers/net/veth.ko\n",
        )
        .unwrap();
        let meta = built::BuiltKernel {
            id: "built-6.1".into(),
            key: "k".into(),
            inputs: built::BuildInputs {
                source_identity: "git:1".into(),
                config_sha256: "c".into(),
                compiler: "gcc".into(),
            },
            source: "/src/linux".into(),
            version: "6.1.192".into(),
            release: None,
            config: "minimal".into(),
            built_at: "2026-12-02T00:00:00Z".into(),
            build_seconds: 1,
            vmlinuz_sha256: crate::kernel::sha256_file(&staged.path().join(built::VMLINUZ))
                .unwrap(),
            machine: None,
            dir: Default::default(),
        };
        let kernel = built::commit(cache.path(), staged, &meta).unwrap();
        let image = KernelImage {
            id: kernel.id.clone(),
            vmlinuz: kernel.vmlinuz(),
            package_version: None,
            built: Some(kernel.built_from()),
            modules: source_build::module_source(&kernel),
            machine: None,
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
        let cases: Vec<Case> = [
            "devices/groups_per_device.yaml",
            "sctp/reuseport_one_to_many.yaml",
        ]
        .iter()
        .map(|f| crate::case::load_file(&root.join(f)).unwrap())
        .collect();
        let (plans, files) = plan_modules(&image, &cases);
        assert_eq!(plans["veth"], ModulePlan::Builtin);
        assert!(
            matches!(&plans["sctp"], ModulePlan::Missing { reason } if reason.contains("=y")),
            "{:?}",
            plans["sctp"]
        );
        assert!(files.is_empty());

        // The path `kernels build` printed, as `git bisect run` passes it on, is
        // that build, modules.builtin included; any other image is not.
        let by_path = super::super::built_at_path(&kernel.vmlinuz()).unwrap();
        let by_path = super::super::built_image(&by_path);
        assert_eq!(by_path.id, kernel.id);
        assert_eq!(by_path.built.as_ref().unwrap().source_identity, "git:1");
        assert_eq!(by_path.built.as_ref().unwrap().config, "minimal");
        assert_eq!(
            plan_modules(&by_path, &cases).0["veth"],
            ModulePlan::Builtin
        );
        let elsewhere = cache.path().join("vmlinuz");
        std::fs::write(&elsewhere, b"image").unwrap();
        assert_eq!(super::super::built_at_path(&elsewhere), None);
    }
}
