//! Files replaced atomically: written under a hidden sibling name, then renamed, so a
//! reader sees the old file or the new one, never half of one. Errors name the file
//! and the OS error.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// A unique hidden sibling of `dest` (`.<name>.<pid>.<n>.part`): concurrent writers
/// never share one, and a leftover one is recognisable.
pub fn temp_sibling(dest: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    dest.with_file_name(format!(
        ".{name}.{}.{}.part",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Creates a new file for writing with the permissions of any other file the user
/// writes (0666 less the umask: 0644 usually), not tempfile's 0600.
pub fn create_new(path: &Path) -> Result<fs::File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Replaces `dest` with `bytes` (creating its folder); on failure `dest` is untouched
/// and no temporary file is left.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_sibling(dest);
    let written = (|| -> Result<()> {
        let dir = dest.parent().context("the path has no folder")?;
        if !dir.as_os_str().is_empty() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut f = create_new(&tmp)?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", dest.display()))
}

/// Moves `src` to `dest` (replacing it): a rename, or across file systems a copy to a
/// sibling of `dest` renamed into place. `src` is gone afterwards either way.
pub fn move_into_place(src: &Path, dest: &Path) -> Result<()> {
    if fs::rename(src, dest).is_ok() {
        return Ok(());
    }
    let tmp = temp_sibling(dest);
    let copied = (|| -> Result<()> {
        let mut from = fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let mut to = create_new(&tmp)?;
        std::io::copy(&mut from, &mut to)
            .and_then(|_| to.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
    })();
    if copied.is_err() {
        let _ = fs::remove_file(&tmp);
    } else {
        let _ = fs::remove_file(src);
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_with_ordinary_permissions_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/result.json");
        write_atomic(&dest, b"one").unwrap();
        write_atomic(&dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        // Group and others may read it like a console log (tempfile would give 0600).
        assert_eq!(mode & 0o044, 0o044, "mode {mode:o}");
        let names: Vec<_> = fs::read_dir(dest.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn failure_names_the_file_and_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"").unwrap();
        let dest = blocker.join("k/result.json");
        let err = format!("{:#}", write_atomic(&dest, b"x").unwrap_err());
        assert!(err.contains(&dest.display().to_string()), "{err}");
        assert!(err.contains("Not a directory"), "{err}");
    }

    #[test]
    fn move_into_place_replaces_and_removes_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&src, b"new").unwrap();
        fs::write(&dest, b"old").unwrap();
        move_into_place(&src, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert!(!src.exists());
    }
}
