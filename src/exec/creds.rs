//! Running a syscall as another effective uid/gid, for port-hijack cases.

use std::io;

use crate::case::Creds;

const KEEP: libc::c_long = -1;

fn setres(nr: libc::c_long, id: u32) -> io::Result<()> {
    // SAFETY: a plain syscall on integer arguments.
    let rc = unsafe { libc::syscall(nr, KEEP, id as libc::c_long, KEEP) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` with the effective uid/gid switched for the calling thread only.
///
/// The raw setresuid/setresgid syscalls change one thread's credentials (glibc's
/// wrappers would change every thread's), so background threads keep running as
/// root. Real and saved ids stay 0, which is what lets us switch back.
pub fn as_user<T>(creds: Option<Creds>, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let Some(c) = creds else { return f() };
    setres(libc::SYS_setresgid, c.gid)?;
    if let Err(e) = setres(libc::SYS_setresuid, c.uid) {
        setres(libc::SYS_setresgid, 0).expect("restoring gid 0 as root");
        return Err(e);
    }
    let result = f();
    // Back to root, uid first: only then is changing the gid allowed again.
    setres(libc::SYS_setresuid, 0).expect("restoring uid 0: the saved uid is 0");
    setres(libc::SYS_setresgid, 0).expect("restoring gid 0 as root");
    result
}
