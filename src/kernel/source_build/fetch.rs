//! Turning a source spec into a kernel tree on disk: tarballs (local, downloaded, or
//! the one inside Debian's linux-source-X.Y package) are unpacked once into
//! `<cache>/sources/<sha256>/`, marked complete last.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use regex::Regex;

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
            let dest = cache.join("sources").join(name);
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
            )?;
            let sha = download::sha256_file(&dest)?;
            if sha256.is_none() {
                eprintln!("{name}: sha256 {sha} (not pinned)");
            }
            let dir = unpack_once(&dest, &sha, cache, progress)?;
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

/// `<cache>/sources/<sha256[..16]>/<top folder>`, unpacked once.
fn unpack_once(tarball: &Path, sha: &str, cache: &Path, progress: bool) -> Result<PathBuf> {
    let root = cache.join("sources").join(&sha[..16]);
    if root.join(UNPACKED).is_file() {
        return single_subdir(&root);
    }
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("removing a half-unpacked {}", root.display()))?;
    }
    std::fs::create_dir_all(&root)?;
    if progress {
        eprintln!("unpacking {} ...", tarball.display());
    }
    let f = std::fs::File::open(tarball)?;
    let r: Box<dyn Read> = match tarball_kind(tarball) {
        Some("xz") => Box::new(xz2::read::XzDecoder::new_multi_decoder(
            std::io::BufReader::new(f),
        )),
        Some("gz") => Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f))),
        _ => bail!("{}: expected a .tar.xz or .tar.gz", tarball.display()),
    };
    tar::Archive::new(r)
        .unpack(&root)
        .with_context(|| format!("unpacking {} into {}", tarball.display(), root.display()))?;
    let dir = single_subdir(&root)?;
    std::fs::write(root.join(UNPACKED), tarball.display().to_string())?;
    Ok(dir)
}

fn single_subdir(dir: &Path) -> Result<PathBuf> {
    let mut dirs = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.path());
    match (dirs.next(), dirs.next()) {
        (Some(d), None) => Ok(d),
        _ => Err(BuildError::BadSource(format!(
            "{} should contain exactly one top-level folder (a kernel tarball does)",
            dir.display()
        ))
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tarball_is_unpacked_once_and_marked_complete() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("linux-9.9");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("Makefile"), "VERSION = 9\n").unwrap();
        let tarball = dir.path().join("linux-9.9.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&tarball).unwrap(),
            flate2::Compression::fast(),
        );
        let mut t = tar::Builder::new(gz);
        t.append_dir_all("linux-9.9", &src).unwrap();
        t.into_inner().unwrap().finish().unwrap();
        let cache = dir.path().join("cache");
        let sha = download::sha256_file(&tarball).unwrap();
        let tree = unpack_once(&tarball, &sha, &cache, false).unwrap();
        assert!(tree.ends_with("linux-9.9"));
        assert!(tree.join("Makefile").is_file());
        // Reused: a file added to the unpacked tree is still there.
        std::fs::write(tree.join("marker"), "").unwrap();
        assert_eq!(unpack_once(&tarball, &sha, &cache, false).unwrap(), tree);
        assert!(tree.join("marker").is_file());
    }
}
