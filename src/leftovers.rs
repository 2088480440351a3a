//! What a killed sockmatrix leaves behind (SIGKILL gives no chance to clean up):
//! scratch folders carry the pid that made them (`sockmatrix-<what>-<pid>-XXXXXX`),
//! and the next start removes those whose process is gone.

use std::path::Path;

/// The tempfile prefix for a scratch folder of this process.
pub fn prefix(what: &str) -> String {
    format!("sockmatrix-{what}-{}-", std::process::id())
}

/// Whether a process with this pid exists (a zombie counts; EPERM means it does).
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The pid in a scratch folder name made with `prefix` (hidden with a leading `.` or
/// not), if it is one.
fn pid_of(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.').unwrap_or(name);
    let rest = rest.strip_prefix("sockmatrix-")?;
    // `<what>-<pid>-<random>`: the random part has no '-', `what` may have some.
    let mut parts = rest.rsplitn(3, '-');
    let (_random, pid, what) = (parts.next()?, parts.next()?, parts.next()?);
    if what.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the scratch folders in `dir` whose process is gone; returns how many.
pub fn sweep(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = pid_of(&name) else { continue };
        if pid == std::process::id() as i32 || alive(pid) {
            continue;
        }
        if std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// `sweep` of the temp dir, once per process.
pub fn sweep_temp_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        sweep(&std::env::temp_dir());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid() {
        assert_eq!(pid_of("sockmatrix-run-123-AbC9x1"), Some(123));
        assert_eq!(pid_of("sockmatrix-kvm-probe-77-zzzzzz"), Some(77));
        // Older names without a pid, and other files, are left alone.
        assert_eq!(pid_of("sockmatrix-run-AbC9x1"), None);
        assert_eq!(pid_of("sockmatrix-kvm-probe-AbC9x1"), None);
        assert_eq!(pid_of("sockmatrix-bench"), None);
        assert_eq!(pid_of("other-run-12-abc"), None);
        assert_eq!(pid_of(".sockmatrix-staging-42-AbC9x1"), Some(42));
        let p = prefix("kvm-probe");
        assert_eq!(
            pid_of(&format!("{p}Xy12zz")),
            Some(std::process::id() as i32)
        );
    }

    /// A folder of a process that is gone goes; one of a live process stays.
    #[test]
    fn sweep_removes_only_dead_processes_folders() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let gone = dir.path().join(format!("sockmatrix-run-{dead}-abc123"));
        let live = dir
            .path()
            .join(format!("sockmatrix-run-{}-abc123", std::process::id()));
        let parent = dir.path().join(format!(
            "sockmatrix-kvm-probe-{}-abc123",
            std::os::unix::process::parent_id()
        ));
        let old = dir.path().join("sockmatrix-run-abc123");
        for d in [&gone, &live, &parent, &old] {
            std::fs::create_dir_all(d.join("inside")).unwrap();
        }
        assert_eq!(sweep(dir.path()), 1);
        assert!(!gone.exists());
        assert!(live.exists() && parent.exists() && old.exists());
    }
}
