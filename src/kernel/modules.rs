//! A Debian kernel's own modules: an index of the package's `.ko` files (name, path,
//! `depends=` from `.modinfo`) and `modules.builtin`, built once per kernel when a
//! case first needs a module, and each needed module extracted (decompressed) once.
//!
//! Debian's packages carry no `modules.dep` (depmod writes it at install time), so
//! dependencies come from each module's own `.modinfo`, as depmod reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{LockedKernel, ModuleSource};

const INDEX: &str = "index.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Module name (`_`, never `-`) to its path in the package and its dependencies.
    modules: BTreeMap<String, IndexEntry>,
    /// Built into the image (from `modules.builtin`): nothing to load.
    builtin: BTreeSet<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexEntry {
    path: String,
    depends: Vec<String>,
}

/// What a case's module needs on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Built into the kernel: nothing to load.
    Builtin,
    /// The module files to load, dependencies first (name, decompressed `.ko`).
    Load(Vec<(String, PathBuf)>),
    /// Why there is nothing to load (the case is skipped).
    Missing(String),
}

/// Finds `name` (and its dependencies) for the kernel `source` describes,
/// downloading the package and extracting what is needed on first use.
pub fn resolve(source: &ModuleSource, name: &str, progress: bool) -> Result<Found> {
    let (id, pin, dir) = match source {
        ModuleSource::Unavailable(why) => {
            return Ok(Found::Missing(format!(
                "{why}: no modules to load for {name}"
            )))
        }
        ModuleSource::Built { id, dir } => return Ok(built_module(id, dir, name)),
        ModuleSource::Package { id, pin, dir } => (id, pin, dir),
    };
    let deb = super::fetch_deb(id, pin, &super::cache_dir(), progress)?;
    let index = load_or_build_index(&deb, pin, dir)?;
    let name = name.replace('-', "_");
    if index.builtin.contains(&name) {
        return Ok(Found::Builtin);
    }
    if !index.modules.contains_key(&name) {
        return Ok(Found::Missing(format!(
            "kernel {id} ({} {}) has no module {name}",
            pin.package, pin.version
        )));
    }
    let order = load_order(&index, &name)?;
    let wanted: BTreeMap<&str, &str> = order
        .iter()
        .filter(|m| !dir.join(format!("{m}.ko")).is_file())
        .map(|m| (index.modules[m].path.as_str(), m.as_str()))
        .collect();
    if !wanted.is_empty() {
        extract(&deb, dir, &wanted)?;
    }
    Ok(Found::Load(
        order
            .into_iter()
            .map(|m| {
                let path = dir.join(format!("{m}.ko"));
                (m, path)
            })
            .collect(),
    ))
}

/// A kernel built by `kernels build` ships no `.ko` files (it builds only bzImage):
/// a module is usable when its build's `modules.builtin` lists it (the config has it
/// `=y`), else the case is skipped, saying how to build it in.
fn built_module(id: &str, dir: &Path, name: &str) -> Found {
    let name = name.replace('-', "_");
    let list = dir.join(super::source_build::built::MODULES_BUILTIN);
    match std::fs::read_to_string(&list) {
        Ok(text) if text.lines().filter_map(module_name_of).any(|m| m == name) => Found::Builtin,
        Ok(_) => Found::Missing(format!(
            "built kernel {id} does not have {name} built in (sockmatrix builds no loadable modules: set its option =y in the config)"
        )),
        Err(_) => Found::Missing(format!(
            "built kernel {id} has no {} (built before sockmatrix kept it): rebuild it to run cases needing {name}",
            super::source_build::built::MODULES_BUILTIN
        )),
    }
}

/// Dependencies before the modules that need them; built-in ones left out.
fn load_order(index: &Index, name: &str) -> Result<Vec<String>> {
    fn visit(
        index: &Index,
        name: &str,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) -> Result<()> {
        if index.builtin.contains(name) || !seen.insert(name.to_string()) {
            return Ok(());
        }
        let entry = index.modules.get(name).with_context(|| {
            format!("module {name} is a dependency but the package has no such module")
        })?;
        for dep in &entry.depends {
            visit(index, dep, seen, out)?;
        }
        out.push(name.to_string());
        Ok(())
    }
    let mut out = Vec::new();
    visit(index, name, &mut BTreeSet::new(), &mut out)?;
    Ok(out)
}

fn load_or_build_index(deb: &Path, pin: &LockedKernel, dir: &Path) -> Result<Index> {
    let path = dir.join(INDEX);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(index) = serde_json::from_str(&text) {
            return Ok(index);
        }
    }
    let index = super::with_data_tar(deb, "kernel modules", |data| {
        let mut index = Index::default();
        let mut tar = tar::Archive::new(data);
        for entry in tar.entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let member = entry.path()?.to_string_lossy().to_string();
            if member.ends_with("/modules.builtin") && in_modules_tree(&member) {
                let mut text = String::new();
                entry.read_to_string(&mut text)?;
                index.builtin = text.lines().filter_map(module_name_of).collect();
            } else if let Some(name) = module_name_of(&member).filter(|_| in_modules_tree(&member))
            {
                let ko = decompress(&member, &mut entry)?;
                let depends = modinfo_depends(&ko)
                    .with_context(|| format!("reading .modinfo of {member}"))?;
                index.modules.insert(
                    name,
                    IndexEntry {
                        path: member,
                        depends,
                    },
                );
            }
        }
        Ok(index)
    })?;
    if index.modules.is_empty() {
        bail!(
            "{} {} holds no kernel modules (the linux-binary layout keeps them in linux-modules-*)",
            pin.package,
            pin.version
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::atomic_file::write_atomic(&path, &serde_json::to_vec(&index)?)?;
    Ok(index)
}

fn in_modules_tree(member: &str) -> bool {
    member.contains("lib/modules/")
}

/// `kernel/net/sctp/sctp.ko.xz` -> `sctp`; None for anything not a module.
fn module_name_of(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))?;
    Some(stem.replace('-', "_"))
}

fn decompress(member: &str, r: &mut impl Read) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if member.ends_with(".xz") {
        xz2::read::XzDecoder::new(r).read_to_end(&mut out)?;
    } else if member.ends_with(".zst") {
        zstd::stream::read::Decoder::new(r)?.read_to_end(&mut out)?;
    } else {
        r.read_to_end(&mut out)?;
    }
    Ok(out)
}

fn extract(deb: &Path, dir: &Path, wanted: &BTreeMap<&str, &str>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut left = wanted.len();
    super::with_data_tar(deb, "kernel modules", |data| {
        let mut tar = tar::Archive::new(data);
        for entry in tar.entries()? {
            let mut entry = entry?;
            let member = entry.path()?.to_string_lossy().to_string();
            if let Some(name) = wanted.get(member.as_str()) {
                let ko = decompress(&member, &mut entry)?;
                crate::atomic_file::write_atomic(&dir.join(format!("{name}.ko")), &ko)?;
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        Ok(())
    })?;
    if left > 0 {
        bail!(
            "{} module(s) of the index were not found in {}",
            left,
            deb.display()
        );
    }
    Ok(())
}

/// The `depends=` list of a module's `.modinfo` section (ELF64 little-endian, as
/// every x86-64 module is).
pub fn modinfo_depends(ko: &[u8]) -> Result<Vec<String>> {
    let modinfo = elf_section(ko, ".modinfo")?;
    Ok(modinfo
        .split(|b| *b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect())
}

fn elf_section<'a>(elf: &'a [u8], want: &str) -> Result<&'a [u8]> {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        bail!("not a 64-bit little-endian ELF file");
    }
    let bad = || anyhow::anyhow!("truncated ELF section table");
    let shoff = u64_at(0x28).ok_or_else(bad)?;
    let shentsize = u16_at(0x3a).ok_or_else(bad)?;
    let shnum = u16_at(0x3c).ok_or_else(bad)?;
    let shstrndx = u16_at(0x3e).ok_or_else(bad)?;
    let section = |i: usize| -> Option<(usize, usize, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(h)?, u64_at(h + 0x18)?, u64_at(h + 0x20)?))
    };
    let (_, str_off, str_size) = section(shstrndx).ok_or_else(bad)?;
    let names = elf
        .get(str_off..str_off.checked_add(str_size).ok_or_else(bad)?)
        .ok_or_else(bad)?;
    for i in 0..shnum {
        let (name, off, size) = section(i).ok_or_else(bad)?;
        let Some(rest) = names.get(name..) else {
            continue;
        };
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        if &rest[..end] == want.as_bytes() {
            return elf
                .get(off..off.checked_add(size).ok_or_else(bad)?)
                .ok_or_else(bad);
        }
    }
    bail!("no {want} section")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_kernel_satisfies_a_module_its_config_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let source = ModuleSource::Built {
            id: "built-6.1".into(),
            dir: dir.path().to_path_buf(),
        };
        // An entry from before modules.builtin was kept: skipped, saying why.
        let Found::Missing(why) = resolve(&source, "veth", false).unwrap() else {
            panic!("no modules.builtin, yet not missing");
        };
        assert!(why.contains("rebuild"), "{why}");
        // Kbuild's list as a 6.1 build with CONFIG_VETH=y, CONFIG_IP_SCTP=y writes it.
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/net/veth.ko\nkernel/net/sctp/sctp.ko\nkernel/lib/libcrc32c.ko\n",
        )
        .unwrap();
        assert_eq!(resolve(&source, "veth", false).unwrap(), Found::Builtin);
        assert_eq!(resolve(&source, "sctp", false).unwrap(), Found::Builtin);
        let Found::Missing(why) = resolve(&source, "dummy", false).unwrap() else {
            panic!("dummy is not built in");
        };
        assert!(why.contains("=y"), "{why}");
    }

    #[test]
    fn module_names_come_from_file_names() {
        assert_eq!(
            module_name_of("./lib/modules/6.1.0-56-cloud-amd64/kernel/net/sctp/sctp.ko").as_deref(),
            Some("sctp")
        );
        assert_eq!(
            module_name_of("kernel/drivers/net/xen-netfront.ko.xz").as_deref(),
            Some("xen_netfront")
        );
        assert_eq!(
            module_name_of("kernel/lib/libcrc32c.ko.zst").as_deref(),
            Some("libcrc32c")
        );
        assert_eq!(module_name_of("modules.builtin"), None);
    }

    #[test]
    fn dependencies_load_first_and_builtins_are_left_out() {
        let mut index = Index::default();
        let entry = |deps: &[&str]| IndexEntry {
            path: String::new(),
            depends: deps.iter().map(|d| d.to_string()).collect(),
        };
        index.modules.insert(
            "sctp".into(),
            entry(&["libcrc32c", "udp_tunnel", "ip6_udp_tunnel"]),
        );
        index.modules.insert("libcrc32c".into(), entry(&[]));
        index.modules.insert("udp_tunnel".into(), entry(&[]));
        index.builtin.insert("ip6_udp_tunnel".into());
        assert_eq!(
            load_order(&index, "sctp").unwrap(),
            ["libcrc32c", "udp_tunnel", "sctp"]
        );
        index.modules.remove("udp_tunnel");
        assert!(load_order(&index, "sctp").is_err());
    }

    #[test]
    fn a_file_that_is_not_elf_has_no_modinfo() {
        assert!(modinfo_depends(b"not an elf file at all, not at all").is_err());
    }
}
