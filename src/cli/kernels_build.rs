//! `sockmatrix kernels build` and the built kernels in `kernels list`.

use std::path::Path;
use std::process::ExitCode;

use super::kernels::BuildArgs;
use crate::kernel::source_build::{self, built, BaseConfig, BuildError, BuildRequest, SourceSpec};
use crate::kernel::{Catalogue, KernelSource};

pub fn build(args: &BuildArgs, cat: &Catalogue, cache: &Path) -> ExitCode {
    match request(args, cat) {
        Ok(req) if args.only_source => match source_build::source_tree(&req, cat, cache) {
            Ok(dir) => {
                println!("{}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Ok(req) => {
            crate::interrupt::install();
            match source_build::build(&req, cat, cache) {
                Ok(done) => {
                    let k = &done.kernel;
                    let how = if done.reused {
                        "already built with these inputs (cache)".to_string()
                    } else {
                        format!("built in {} s", k.build_seconds)
                    };
                    eprintln!(
                        "{}: {} {} ({}), {how}; run it with `sockmatrix run --kernel {}`",
                        k.id,
                        k.release.as_deref().unwrap_or(&k.version),
                        k.config,
                        k.inputs.source_identity,
                        k.id
                    );
                    println!("{}", k.vmlinuz().display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &BuildError) -> ExitCode {
    // `:#`: an error with context keeps its cause ("GET url: http status: 404").
    eprintln!("error: {e:#}");
    ExitCode::from(e.exit_code())
}

/// The build the arguments describe (bad arguments are exit 2).
fn request(args: &BuildArgs, cat: &Catalogue) -> Result<BuildRequest, BuildError> {
    let source = match (&args.source, &args.debian) {
        (Some(s), None) => Some(SourceSpec::parse_source(s)?),
        (None, Some(d)) => Some(SourceSpec::parse_debian(d)?),
        _ => None,
    };
    let mut req = match &args.id {
        Some(id) => {
            let entry = cat
                .entry(id)
                .map_err(|e| BuildError::BadSource(format!("{e:#}")))?;
            let KernelSource::SourceBuild(spec) = &entry.source else {
                return Err(BuildError::BadSource(format!(
                    "kernel '{id}' is a {} kernel, not a source_build one; build a tree with --source or --debian",
                    entry.source.kind()
                )));
            };
            if source.is_none() {
                eprintln!(
                    "note: {id} comes from {}; where that site is unreachable (the sockmatrix dev and CI machines), bring the tarball: --source linux-{id}.tar.xz",
                    spec.url
                );
            }
            source_build::catalogue_request(cat, entry, spec, source)
        }
        None => {
            let Some(source) = source else {
                return Err(BuildError::BadSource(
                    "say what to build: --source DIR|TARBALL|URL, --debian linux-source-X.Y, or a catalogue source_build id".into(),
                ));
            };
            BuildRequest {
                source,
                config: BaseConfig::Minimal,
                fragment: cat.resolve(Path::new("config/sockmatrix-guest.config")),
                name: None,
                cc: "gcc".into(),
                ccache: true,
                jobs: source_build::kbuild::jobs(),
                machine: None,
                progress: true,
                name_taken_over: false,
            }
        }
    };
    // Explicit flags win over the catalogue's defaults.
    if args.id.is_none() || args.config != "minimal" {
        req.config =
            BaseConfig::parse(&args.config).map_err(|e| BuildError::BadSource(format!("{e:#}")))?;
    }
    if let Some(f) = &args.fragment {
        req.fragment = f.clone();
    }
    if let Some(name) = &args.name {
        check_name(name)?;
        req.name = Some(name.clone());
        req.name_taken_over = false;
    }
    if let Some(name) = &req.name {
        if args.id.as_deref() != Some(name) && cat.get(name).is_some() {
            return Err(BuildError::BadSource(format!(
                "--name {name}: the catalogue already has a kernel with that id"
            )));
        }
    }
    if let Some(cc) = &args.cc {
        req.cc = cc.clone();
    }
    if args.no_ccache {
        req.ccache = false;
    }
    if let Some(j) = args.jobs {
        req.jobs = j;
    }
    if args.machine.is_some() {
        req.machine = args.machine;
    }
    Ok(req)
}

/// A `--name` is typed after `run --kernel` and names a folder under `results/`: no
/// slash or other path syntax, nothing `run --kernel` reads as something else (`host`,
/// a release such as `6.1.176`).
fn check_name(name: &str) -> Result<(), BuildError> {
    let bad = |why: &str| Err(BuildError::BadSource(format!("--name {name:?}: {why}")));
    if name.is_empty()
        || name.starts_with(['.', '-'])
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
    {
        return bad(
            "use letters, digits and . _ + - (not first: . or -); it names a folder under results/",
        );
    }
    if name == crate::runner::HOST {
        return bad("`run --kernel host` is the machine's own kernel");
    }
    if crate::kernel::releases::looks_like_release(name) {
        return bad(
            "`run --kernel` reads a name like this as a Debian release; add a word (my-6.1.176)",
        );
    }
    Ok(())
}

/// The built kernels, newest first, with what they were built from.
pub fn list_built(cache: &Path) {
    let all = built::list(cache);
    if all.is_empty() {
        return;
    }
    println!();
    println!("built from source ({}):", built::root(cache).display());
    for k in all {
        // The same check `run --kernel` makes before it boots one.
        let damaged = built::load(&k.dir, true).is_none();
        println!(
            "  {}  {} {}  source {} ({})  compiler {}  config sha256 {}  built {} in {} s{}{}",
            k.id,
            k.release.as_deref().unwrap_or(&k.version),
            k.config,
            k.source,
            k.inputs.source_identity,
            k.inputs.compiler,
            &k.inputs.config_sha256[..12.min(k.inputs.config_sha256.len())],
            k.built_at,
            k.build_seconds,
            k.machine
                .map(|m| format!("  machine {}", m.name()))
                .unwrap_or_default(),
            if damaged {
                "  DAMAGED: vmlinuz does not match its sha256, build it again"
            } else {
                ""
            }
        );
    }
}
