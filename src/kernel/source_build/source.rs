//! Where a kernel's source comes from (a tree, a tarball, a Debian linux-source
//! package), how it becomes a tree on disk, and its identity for the build cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::BuildError;

/// What the user named with --source / --debian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A kernel tree on disk: a git checkout or an unpacked tarball.
    Dir(PathBuf),
    /// A `.tar.xz` / `.tar.gz` on disk.
    Tarball(PathBuf),
    /// A tarball to download (its sha256 is checked when given).
    Url { url: String, sha256: Option<String> },
    /// Debian's `linux-source-X.Y` package (optionally `=VERSION`), from the mirror.
    Debian {
        package: String,
        version: Option<String>,
    },
}

impl SourceSpec {
    /// `--source` value: a URL, a tarball file or a folder.
    pub fn parse_source(s: &str) -> Result<SourceSpec, BuildError> {
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(SourceSpec::Url {
                url: s.to_string(),
                sha256: None,
            });
        }
        let p = Path::new(s);
        if p.is_dir() {
            Ok(SourceSpec::Dir(p.to_path_buf()))
        } else if p.is_file() {
            if tarball_kind(p).is_none() {
                return Err(BuildError::BadSource(format!(
                    "{s}: a file, but not a .tar.xz, .tar.gz or .tgz kernel tarball"
                )));
            }
            Ok(SourceSpec::Tarball(p.to_path_buf()))
        } else {
            Err(BuildError::BadSource(format!(
                "{s}: no such folder or tarball"
            )))
        }
    }

    /// `--debian` value: `linux-source-6.1` or `linux-source-6.1=6.1.192-2`.
    pub fn parse_debian(s: &str) -> Result<SourceSpec, BuildError> {
        let (package, version) = match s.split_once('=') {
            Some((p, v)) => (p, Some(v.to_string())),
            None => (s, None),
        };
        let ok = package
            .strip_prefix("linux-source-")
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
        if !ok {
            return Err(BuildError::BadSource(format!(
                "--debian {s}: expected a Debian kernel source package such as linux-source-6.1 (optionally =VERSION)"
            )));
        }
        Ok(SourceSpec::Debian {
            package: package.to_string(),
            version,
        })
    }
}

/// `xz` or `gz` for a tarball name.
pub fn tarball_kind(p: &Path) -> Option<&'static str> {
    let name = p.file_name()?.to_string_lossy().to_string();
    if name.ends_with(".tar.xz") {
        Some("xz")
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Some("gz")
    } else {
        None
    }
}

/// The version a kernel tree's top Makefile declares (`6.1.192`), or why it is not a
/// kernel tree.
pub fn tree_version(dir: &Path) -> Result<String, BuildError> {
    read_version(dir).map_err(|why| {
        BuildError::BadSource(format!(
            "{} is not a Linux kernel source tree ({why})",
            dir.display()
        ))
    })
}

/// The version a kernel tree declares, or why `dir` is not one.
pub fn read_version(dir: &Path) -> Result<String, String> {
    let not_tree = |why: &str| why.to_string();
    let makefile = std::fs::read_to_string(dir.join("Makefile"))
        .map_err(|_| not_tree("no top-level Makefile"))?;
    for needed in ["Kconfig", "arch/x86", "scripts/kconfig"] {
        if !dir.join(needed).exists() {
            return Err(not_tree(&format!("no {needed}")));
        }
    }
    let field = |key: &str| {
        makefile.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let (Some(v), Some(p)) = (field("VERSION"), field("PATCHLEVEL")) else {
        return Err(not_tree("its Makefile sets no VERSION/PATCHLEVEL"));
    };
    let mut version = format!("{v}.{p}");
    if let Some(s) = field("SUBLEVEL").filter(|s| !s.is_empty() && s != "0") {
        version.push('.');
        version.push_str(&s);
    }
    if let Some(e) = field("EXTRAVERSION").filter(|e| !e.is_empty()) {
        version.push_str(&e);
    }
    Ok(version)
}

/// Kbuild refuses an out-of-tree build when the tree itself was configured or built in.
pub fn check_clean_for_o(dir: &Path) -> Result<(), BuildError> {
    if dir.join(".config").exists() || dir.join("include/config").is_dir() {
        return Err(BuildError::BadSource(format!(
            "{} has been configured or built in place (.config or include/config present); \
             sockmatrix builds out of tree: run `make mrproper` there first",
            dir.display()
        )));
    }
    Ok(())
}

/// A tree's identity: `git:<commit>` (with `+dirty:<hash of the diff>`), or for a
/// folder that is not a git checkout `tree:<hash of every file's path, size, mtime>`.
pub fn tree_identity(dir: &Path) -> Result<String> {
    if let Some(commit) = git(dir, &["rev-parse", "--verify", "HEAD"]) {
        if git_toplevel_is(dir) {
            let status =
                git(dir, &["status", "--porcelain", "--untracked-files=no"]).unwrap_or_default();
            if status.trim().is_empty() {
                return Ok(format!("git:{}", commit.trim()));
            }
            let diff = Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["diff", "HEAD", "--binary"])
                .output()
                .context("git diff HEAD")?;
            let h = hex::encode(Sha256::digest(&diff.stdout));
            return Ok(format!("git:{}+dirty:{}", commit.trim(), &h[..16]));
        }
    }
    Ok(format!("tree:{}", walk_hash(dir)?))
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Only a tree that is the top of its own checkout is identified by git (a tarball
/// unpacked inside some other repository is not that repository's commit).
fn git_toplevel_is(dir: &Path) -> bool {
    let Some(top) = git(dir, &["rev-parse", "--show-toplevel"]) else {
        return false;
    };
    match (Path::new(top.trim()).canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Hash of (relative path, size, mtime) of every file, sorted; skips `.git`.
fn walk_hash(dir: &Path) -> Result<String> {
    let mut rows = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let ty = e.file_type()?;
            let path = e.path();
            if ty.is_dir() {
                if e.file_name() != ".git" {
                    stack.push(path);
                }
                continue;
            }
            let m = e.metadata()?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            rows.push(format!("{rel}\0{}\0{mtime}\n", m.len()));
        }
    }
    rows.sort();
    let mut h = Sha256::new();
    for r in rows {
        h.update(r.as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_tree(dir: &Path, makefile: &str) {
        std::fs::write(dir.join("Makefile"), makefile).unwrap();
        std::fs::write(dir.join("Kconfig"), "").unwrap();
        std::fs::create_dir_all(dir.join("arch/x86")).unwrap();
        std::fs::create_dir_all(dir.join("scripts/kconfig")).unwrap();
    }

    #[test]
    fn a_tree_declares_its_version() {
        let d = tempfile::tempdir().unwrap();
        fake_tree(
            d.path(),
            "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\n",
        );
        assert_eq!(tree_version(d.path()).unwrap(), "6.1.192");
        fake_tree(
            d.path(),
            "VERSION = 3\nPATCHLEVEL = 9\nSUBLEVEL = 0\nEXTRAVERSION = -rc1\n",
        );
        assert_eq!(tree_version(d.path()).unwrap(), "3.9-rc1");
    }

    #[test]
    fn a_folder_that_is_not_a_kernel_tree_says_why() {
        let d = tempfile::tempdir().unwrap();
        let e = tree_version(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("not a Linux kernel source tree (no top-level Makefile)"),
            "{e}"
        );
        std::fs::write(d.path().join("Makefile"), "all:\n").unwrap();
        let e = tree_version(d.path()).unwrap_err().to_string();
        assert!(e.contains("no Kconfig"), "{e}");
        fake_tree(d.path(), "all:\n");
        let e = tree_version(d.path()).unwrap_err().to_string();
        assert!(e.contains("no VERSION/PATCHLEVEL"), "{e}");
    }

    #[test]
    fn an_in_place_configured_tree_is_refused() {
        let d = tempfile::tempdir().unwrap();
        check_clean_for_o(d.path()).unwrap();
        std::fs::write(d.path().join(".config"), "").unwrap();
        assert!(check_clean_for_o(d.path())
            .unwrap_err()
            .to_string()
            .contains("make mrproper"));
    }

    #[test]
    fn source_arguments() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            SourceSpec::parse_source(d.path().to_str().unwrap()),
            Ok(SourceSpec::Dir(_))
        ));
        let t = d.path().join("linux-6.1.tar.xz");
        std::fs::write(&t, "").unwrap();
        assert!(matches!(
            SourceSpec::parse_source(t.to_str().unwrap()),
            Ok(SourceSpec::Tarball(_))
        ));
        let z = d.path().join("linux.zip");
        std::fs::write(&z, "").unwrap();
        assert!(SourceSpec::parse_source(z.to_str().unwrap()).is_err());
        assert!(SourceSpec::parse_source("/nonexistent/linux").is_err());
        assert!(matches!(
            SourceSpec::parse_source("https://example.org/linux-3.9.tar.xz"),
            Ok(SourceSpec::Url { .. })
        ));
        assert_eq!(
            SourceSpec::parse_debian("linux-source-6.1=6.1.192-2").unwrap(),
            SourceSpec::Debian {
                package: "linux-source-6.1".into(),
                version: Some("6.1.192-2".into())
            }
        );
        assert!(SourceSpec::parse_debian("linux-image-6.1").is_err());
    }

    #[test]
    fn identity_follows_commits_and_edits() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("a"), "1").unwrap();
        let plain = tree_identity(p).unwrap();
        assert!(plain.starts_with("tree:"), "{plain}");
        let g = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(p)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        g(&["init", "-q"]);
        g(&["add", "a"]);
        g(&["commit", "-q", "-m", "base"]);
        let clean = tree_identity(p).unwrap();
        assert!(
            clean.starts_with("git:") && !clean.contains("dirty"),
            "{clean}"
        );
        std::fs::write(p.join("a"), "2").unwrap();
        let dirty = tree_identity(p).unwrap();
        assert!(
            dirty.starts_with(&clean) && dirty.contains("+dirty:"),
            "{dirty}"
        );
        std::fs::write(p.join("a"), "3").unwrap();
        assert_ne!(
            tree_identity(p).unwrap(),
            dirty,
            "another edit, another identity"
        );
        std::fs::write(p.join("a"), "1").unwrap();
        assert_eq!(tree_identity(p).unwrap(), clean);
    }
}
