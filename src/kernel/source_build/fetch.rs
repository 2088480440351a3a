//! Turning a source spec into a kernel tree on disk: tarballs (local, downloaded, or
//! the one inside Debian's linux-source-X.Y package) are unpacked once into
//! `<cache>/sources/<sha256>/`, marked complete last.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use regex::Regex;
use sha2::Digest;

use super::source::{tarball_kind, SourceSpec};
use super::BuildError;
use crate::kernel::catalogue::Catalogue;
use crate::kernel::debian_index::{self, IndexEntry};
use crate::kernel::download::{self, Expect};
use crate::kernel::{deb_extract, debversion};

/// Written into an unpacked tree's folder after the whole tarball is out.
const UNPACKED: &str = ".sockmatrix-unpacked";

/// A tree ready to configure, and what identifies it.
#[derive(Debug, Clone)]
pub struct Tree {
    pub dir: PathBuf,
    /// Set for trees unpacked from a tarball or package (a folder is hashed instead).
    pub identity: Option<String>,
    /// How the user named it, for listings.
    pub described: String,
}

/// Materialises `spec` (downloading and unpacking when needed).
pub fn tree(spec: &SourceSpec, cat: &Catalogue, cache: &Path, progress: bool) -> Result<Tree> {
    match spec {
        SourceSpec::Dir(d) => {
            let dir = d
                .canonicalize()
                .with_context(|| format!("{}", d.display()))?;
            Ok(Tree {
                described: dir.display().to_string(),
                dir,
                identity: None,
            })
        }
        SourceSpec::Tarball(t) => {
            let sha = download::sha256_file(t)?;
            let dir = unpack_once(t, &sha, cache, progress)?;
            Ok(Tree {
                dir,
                identity: Some(format!("tarball:{sha}")),
                described: t.display().to_string(),
            })
        }
        SourceSpec::Url { url, sha256 } => {
            let name = url
                .rsplit('/')
                .next()
                .filter(|n| tarball_kind(Path::new(n)).is_some())
                .ok_or_else(|| {
                    BuildError::BadSource(format!(
                        "{url}: the URL does not name a .tar.xz / .tar.gz"
                    ))
                })?;
            // Keyed by the whole URL: two sites' `linux.tar.xz` are not one file.
            let url_hash = hex::encode(sha2::Sha256::digest(url.as_bytes()));
            let dest = cache
                .join("sources")
                .join(format!("{}-{name}", &url_hash[..12]));
            let expect = Expect {
                sha256: sha256.as_deref(),
                size: None,
            };
            download::fetch(
                url,
                &dest,
                &expect,
                &format!("kernel source {name}"),
                progress,
            )
            .map_err(|e| match download::client_error_status(&e) {
                // The URL names nothing there: the user's input, not the network.
                Some(status) => BuildError::BadSource(format!(
                    "--source {url}: the server answered HTTP {status} ({})",
                    if status == 404 {
                        "no such file there"
                    } else {
                        "it will not serve it"
                    }
                ))
                .into(),
                None => e,
            })?;
            let sha = download::sha256_file(&dest)?;
            if sha256.is_none() {
                eprintln!("{name}: sha256 {sha} (not pinned)");
            }
            let dir = unpack_once(&dest, &sha, cache, progress).inspect_err(|e| {
                // Not a kernel tarball: the next try downloads it again.
                if matches!(e.downcast_ref(), Some(BuildError::BadSource(_))) {
                    let _ = std::fs::remove_file(&dest);
                }
            })?;
            Ok(Tree {
                dir,
                identity: Some(format!("tarball:{sha}")),
                described: url.clone(),
            })
        }
        SourceSpec::Debian { package, version } => {
            let entry = find_package(cat, cache, package, version.as_deref(), progress)?;
            let deb = fetch_package(&entry, cache, progress)?;
            let tarball = cache.join("sources").join(format!(
                "{}_{}.tar.xz",
                entry.1.package,
                entry.1.version.replace(':', "_")
            ));
            if !tarball.is_file() {
                extract_source_tarball(&deb, &tarball)?;
            }
            let sha = download::sha256_file(&tarball)?;
            let dir = unpack_once(&tarball, &sha, cache, progress)?;
            Ok(Tree {
                dir,
                identity: Some(format!(
                    "debian:{}={}:{}",
                    entry.1.package, entry.1.version, entry.1.sha256
                )),
                described: format!("{} {} (Debian)", entry.1.package, entry.1.version),
            })
        }
    }
}

/// The newest (or the asked) version of `package` in the catalogue's release suites.
fn find_package(
    cat: &Catalogue,
    cache: &Path,
    package: &str,
    version: Option<&str>,
    progress: bool,
) -> Result<(crate::kernel::Mirror, IndexEntry)> {
    let suites = cat.releases.as_ref().context(
        "the kernel catalogue has no `releases:` suites to look the source package up in",
    )?;
    let re = Regex::new(&format!("^{}$", regex::escape(package)))?;
    let mut found: Vec<(crate::kernel::Mirror, IndexEntry)> = Vec::new();
    for s in &suites.suites {
        // A suite that cannot be read only narrows the search.
        let Ok(index) = debian_index::fetch_index(s.mirror, &s.suite, cache, progress) else {
            continue;
        };
        for e in debian_index::read_index(&index, &re).unwrap_or_default() {
            if version.is_none_or(|v| v == e.version) {
                found.push((s.mirror, e));
            }
        }
    }
    found
        .into_iter()
        .max_by(|a, b| debversion::compare(&a.1.version, &b.1.version))
        .ok_or_else(|| {
            BuildError::BadSource(format!(
                "{package}{}: not in the mirror's suites ({})",
                version.map(|v| format!("={v}")).unwrap_or_default(),
                suites
                    .suites
                    .iter()
                    .map(|s| s.suite.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into()
        })
}

fn fetch_package(
    found: &(crate::kernel::Mirror, IndexEntry),
    cache: &Path,
    progress: bool,
) -> Result<PathBuf> {
    let (mirror, e) = found;
    let name = e.filename.rsplit('/').next().unwrap_or(&e.filename);
    let dest = cache.join("debs").join(name);
    let url = format!("{}/{}", mirror.base_url(), e.filename);
    download::fetch(
        &url,
        &dest,
        &Expect {
            sha256: Some(&e.sha256),
            size: Some(e.size),
        },
        &e.package,
        progress,
    )
}

/// Copies `usr/src/linux-source-X.Y.tar.xz` out of the package (atomically).
fn extract_source_tarball(deb: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest.parent().expect("under sources/"))?;
    let tmp = tempfile::NamedTempFile::new_in(dest.parent().expect("under sources/"))?;
    let copied = deb_extract::with_data_tar(deb, "the kernel source tarball", |data| {
        let mut tar = tar::Archive::new(data);
        for entry in tar.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            if path.starts_with("./usr/src/linux-source-") && path.ends_with(".tar.xz") {
                let mut out = tmp.reopen()?;
                std::io::copy(&mut entry, &mut out)?;
                return Ok(true);
            }
        }
        Ok(false)
    })?;
    if !copied {
        bail!("{} holds no usr/src/linux-source-*.tar.xz", deb.display());
    }
    tmp.persist(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

/// `<cache>/sources/<sha256[..16]>/<top folder>`, unpacked once: into a staging
/// folder first (`.sockmatrix-unpack-<pid>-*`, removed by the next run if this one is
/// killed), checked to be a kernel tree, then renamed into place, so two builds of the
/// same tarball at once never see each other's half-unpacked tree and a tarball that
/// is not a kernel leaves nothing in the cache.
fn unpack_once(tarball: &Path, sha: &str, cache: &Path, progress: bool) -> Result<PathBuf> {
    let sources = cache.join("sources");
    let root = sources.join(&sha[..16]);
    if root.join(UNPACKED).is_file() {
        return single_subdir(&root, tarball);
    }
    std::fs::create_dir_all(&sources).with_context(|| format!("creating {}", sources.display()))?;
    crate::leftovers::sweep(&sources);
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}", crate::leftovers::prefix("unpack")))
        .tempdir_in(&sources)
        .with_context(|| format!("creating a folder to unpack into in {}", sources.display()))?;
    if progress {
        eprintln!("unpacking {} ...", tarball.display());
    }
    let f =
        std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let f = StopOnSignal(std::io::BufReader::new(f));
    let r: Box<dyn Read> = match tarball_kind(tarball) {
        Some("xz") => Box::new(xz2::read::XzDecoder::new_multi_decoder(f)),
        Some("gz") => Box::new(flate2::read::GzDecoder::new(f)),
        _ => bail!("{}: expected a .tar.xz or .tar.gz", tarball.display()),
    };
    tar::Archive::new(r)
        .unpack(staging.path())
        .map_err(|e| unpack_error(tarball, e))?;
    let top = single_subdir(staging.path(), tarball)?;
    super::source::read_version(&top).map_err(|why| {
        BuildError::BadSource(format!(
            "{}: not a Linux kernel tarball ({}/ in it: {why})",
            tarball.display(),
            top.file_name().unwrap_or_default().to_string_lossy()
        ))
    })?;
    std::fs::write(staging.path().join(UNPACKED), tarball.display().to_string())
        .with_context(|| format!("writing in {}", staging.path().display()))?;
    if root.exists() && !root.join(UNPACKED).is_file() {
        // Half-unpacked in place by an older sockmatrix.
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("removing a half-unpacked {}", root.display()))?;
    }
    if let Err(e) = std::fs::rename(staging.path(), &root) {
        // Another build unpacked the same tarball first: use that one.
        if !root.join(UNPACKED).is_file() {
            return Err(e)
                .with_context(|| format!("moving the unpacked tree to {}", root.display()));
        }
    }
    single_subdir(&root, tarball)
}

/// A tarball that does not decompress or unpack is bad input (exit 2); an error the
/// OS reported (disk full, permissions) is not the tarball's fault.
fn unpack_error(tarball: &Path, e: std::io::Error) -> anyhow::Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut from_os = false;
    while let Some(c) = cause {
        from_os |= c
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error().is_some());
        cause = c.source();
    }
    if from_os || crate::interrupt::requested().is_some() {
        return anyhow::Error::new(e).context(format!("unpacking {}", tarball.display()));
    }
    let mut causes = vec![e.to_string()];
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        cause = c.source();
    }
    BuildError::BadSource(format!(
        "{}: not a readable {} tarball ({})",
        tarball.display(),
        match tarball_kind(tarball) {
            Some("xz") => ".tar.xz",
            _ => ".tar.gz",
        },
        causes.join(": ")
    ))
    .into()
}

/// A reader that fails once SIGINT/SIGTERM arrived: unpacking a kernel tarball takes
/// a minute, and the signal should stop it rather than wait for its end.
struct StopOnSignal<R>(R);

impl<R: Read> Read for StopOnSignal<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(signal) = crate::interrupt::requested() {
            return Err(std::io::Error::other(format!("interrupted by {signal}")));
        }
        self.0.read(buf)
    }
}

fn single_subdir(dir: &Path, tarball: &Path) -> Result<PathBuf> {
    let mut dirs = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.path());
    match (dirs.next(), dirs.next()) {
        (Some(d), None) => Ok(d),
        _ => Err(BuildError::BadSource(format!(
            "{}: should hold exactly one top-level folder (a kernel tarball does)",
            tarball.display()
        ))
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzipped tarball of `dir` (as `top/`), made by the same tar crate.
    fn tarball_of(dir: &Path, top: &str, into: &Path) -> PathBuf {
        let tarball = into.join(format!("{top}.tar.gz"));
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&tarball).unwrap(),
            flate2::Compression::fast(),
        );
        let mut t = tar::Builder::new(gz);
        t.append_dir_all(top, dir).unwrap();
        t.into_inner().unwrap().finish().unwrap();
        tarball
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_tarball_is_unpacked_once_and_marked_complete() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("linux-9.9");
        for d in ["arch/x86", "scripts/kconfig"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        std::fs::write(src.join("Makefile"), "VERSION = 9\nPATCHLEVEL = 9\n").unwrap();
        std::fs::write(src.join("Kconfig"), "").unwrap();
        let tarball = tarball_of(&src, "linux-9.9", dir.path());
        let cache = dir.path().join("cache");
        let sha = download::sha256_file(&tarball).unwrap();
        let tree = unpack_once(&tarball, &sha, &cache, false).unwrap();
        assert!(tree.ends_with("linux-9.9"));
        assert!(tree.join("Makefile").is_file());
        // Reused: a file added to the unpacked tree is still there.
        std::fs::write(tree.join("marker"), "").unwrap();
        assert_eq!(unpack_once(&tarball, &sha, &cache, false).unwrap(), tree);
        assert!(tree.join("marker").is_file());
        assert_eq!(entries(&cache.join("sources")), [&sha[..16]]);
    }

    /// A tarball that is no kernel, or no tarball at all, is bad input (exit 2) and
    /// leaves nothing in the cache (it used to stay unpacked, or half-unpacked).
    #[test]
    fn a_tarball_that_is_not_a_kernel_is_bad_input_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let junk = dir.path().join("junk");
        std::fs::create_dir_all(&junk).unwrap();
        std::fs::write(junk.join("README"), "not a kernel").unwrap();
        let not_kernel = tarball_of(&junk, "junk", dir.path());
        let garbage = dir.path().join("garbage.tar.xz");
        std::fs::write(&garbage, b"this is not xz").unwrap();
        for (tarball, says) in [
            (
                &not_kernel,
                "not a Linux kernel tarball (junk/ in it: no top-level Makefile)",
            ),
            (&garbage, "not a readable .tar.xz tarball"),
        ] {
            let sha = download::sha256_file(tarball).unwrap();
            let e = unpack_once(tarball, &sha, &cache, false).unwrap_err();
            assert!(
                matches!(e.downcast_ref(), Some(BuildError::BadSource(_))),
                "{e:#}"
            );
            assert!(format!("{e:#}").contains(says), "{e:#}");
            assert!(entries(&cache.join("sources")).is_empty());
        }
    }
}
