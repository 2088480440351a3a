//! Building a kernel from a kernel.org tarball (for 3.9 / 4.13, which Debian no longer ships).
//!
//! UNTESTED: kernel.org is not reachable from the machines this was written on.
//! Steps: download + verify the tarball, unpack, `make x86_64_defconfig`, merge the
//! catalogue's config fragment (`scripts/kconfig/merge_config.sh -m`), `make olddefconfig`,
//! `make bzImage`, then cache `arch/x86/boot/bzImage` like any other kernel.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::catalogue::{Catalogue, KernelSource, SourceBuildSpec};
use super::download::{self, Expect};
use super::store::{self, KernelMeta};
use super::{bzimage, ProvisionedKernel};

/// Cache directory of a built kernel; provisioning looks here.
pub fn built_dir(cache: &Path, id: &str) -> PathBuf {
    store::kernel_dir(cache, id, "src")
}

/// The kernel built earlier by `build`, if it is in the cache.
pub fn cached(cache: &Path, id: &str, spec: &SourceBuildSpec) -> Option<ProvisionedKernel> {
    let dir = built_dir(cache, id);
    let meta = store::load_verified(&dir, spec.sha256.as_deref())?;
    Some(ProvisionedKernel {
        id: id.to_string(),
        vmlinuz: dir.join(store::VMLINUZ),
        release: meta.release,
        version: meta.version,
    })
}

/// Downloads, configures and builds kernel `id` (the `sockmatrix kernels build <id>` step).
pub fn build(cat: &Catalogue, id: &str, cache: &Path, progress: bool) -> Result<ProvisionedKernel> {
    let entry = cat.entry(id)?;
    let KernelSource::SourceBuild(spec) = &entry.source else {
        bail!(
            "kernel '{id}' in {} is not a source_build kernel",
            cat.path.display()
        );
    };
    let what = format!("kernel '{id}'");
    let ctx = || format!("building {what} from {}", spec.url);

    // 1. Tarball, verified when the catalogue knows its sha256.
    let name = spec
        .url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .context("tarball URL has no file name")?;
    let tarball = cache.join("sources").join(name);
    download::fetch(
        &spec.url,
        &tarball,
        &Expect {
            sha256: spec.sha256.as_deref(),
            size: None,
        },
        &what,
        progress,
    )
    .with_context(ctx)?;
    let actual = download::sha256_file(&tarball)?;
    if spec.sha256.is_none() {
        eprintln!(
            "{what}: no sha256 in {}; this tarball has sha256 {actual} (add it to pin it)",
            cat.path.display()
        );
    }

    // 2. Fresh tree each time: a half-built tree from an earlier try is not trusted.
    let work = cache.join("build").join(id);
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    unpack(&tarball, &work).with_context(ctx)?;
    let tree = single_subdir(&work).with_context(ctx)?;

    // 3. Configure: defconfig + fragment, then let Kconfig resolve dependencies.
    let fragment = cat.resolve(&spec.config_fragment);
    let fragment = fragment
        .canonicalize()
        .with_context(|| format!("{what}: config fragment {}", fragment.display()))?;
    let cc = spec.gcc.clone().unwrap_or_else(|| "gcc".to_string());
    let mk = |args: &[&str]| make(&tree, &cc, args).with_context(ctx);
    mk(&["x86_64_defconfig"])?;
    run(Command::new("sh")
        .current_dir(&tree)
        .arg("scripts/kconfig/merge_config.sh")
        .args(["-m", ".config"])
        .arg(&fragment))
    .with_context(ctx)?;
    mk(&["olddefconfig"])?;
    warn_dropped_options(&tree.join(".config"), &fragment, &what)?;

    // 4. Build.
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .to_string();
    mk(&["-j", &jobs, "bzImage"])?;
    let release = make_output(&tree, &cc, &["-s", "kernelrelease"]).ok();

    // 5. Cache the image like a downloaded one.
    let image = tree.join("arch/x86/boot/bzImage");
    bzimage::inspect_file(&image).with_context(ctx)?;
    let dir = built_dir(cache, id);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(&image, dir.join(store::VMLINUZ)).with_context(ctx)?;
    let _ = std::fs::copy(tree.join(".config"), dir.join("config"));
    let version = tree
        .file_name()
        .map(|n| n.to_string_lossy().trim_start_matches("linux-").to_string());
    store::save_meta(
        &dir,
        &KernelMeta {
            id: id.to_string(),
            origin: spec.url.clone(),
            version: version.clone(),
            release: release.clone(),
            origin_sha256: Some(actual),
            vmlinuz_sha256: download::sha256_file(&dir.join(store::VMLINUZ))?,
        },
    )?;
    Ok(ProvisionedKernel {
        id: id.to_string(),
        vmlinuz: dir.join(store::VMLINUZ),
        release,
        version,
    })
}

fn unpack(tarball: &Path, into: &Path) -> Result<()> {
    let f = std::fs::File::open(tarball)?;
    let name = tarball.to_string_lossy();
    let r: Box<dyn std::io::Read> = if name.ends_with(".xz") {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(f))
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        bail!("{}: expected a .tar.xz or .tar.gz", tarball.display());
    };
    tar::Archive::new(r)
        .unpack(into)
        .with_context(|| format!("unpacking {} into {}", tarball.display(), into.display()))
}

fn single_subdir(dir: &Path) -> Result<PathBuf> {
    let mut dirs = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.path());
    match (dirs.next(), dirs.next()) {
        (Some(d), None) => Ok(d),
        _ => bail!(
            "{} should contain exactly one top-level directory",
            dir.display()
        ),
    }
}

fn make(tree: &Path, cc: &str, args: &[&str]) -> Result<()> {
    run(&mut make_cmd(tree, cc, args))
}

fn make_output(tree: &Path, cc: &str, args: &[&str]) -> Result<String> {
    let out = make_cmd(tree, cc, args).output()?;
    if !out.status.success() {
        bail!("make {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn make_cmd(tree: &Path, cc: &str, args: &[&str]) -> Command {
    let mut c = Command::new("make");
    // HOSTCC too: old trees' host tools (fixdep, conf) also break with a new gcc.
    c.current_dir(tree)
        .arg("ARCH=x86_64")
        .arg(format!("CC={cc}"))
        .arg(format!("HOSTCC={cc}"))
        .args(args);
    c
}

fn run(c: &mut Command) -> Result<()> {
    let shown = format!("{c:?}");
    let status = c.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// Kconfig silently drops options whose dependencies are unmet; say which ones.
fn warn_dropped_options(config: &Path, fragment: &Path, what: &str) -> Result<()> {
    let have = std::fs::read_to_string(config)?;
    let have: std::collections::HashSet<&str> = have.lines().collect();
    for line in std::fs::read_to_string(fragment)?.lines() {
        let line = line.trim();
        if line.starts_with("CONFIG_") && !have.contains(line) {
            eprintln!(
                "{what}: {line} from {} did not survive olddefconfig",
                fragment.display()
            );
        }
    }
    Ok(())
}
