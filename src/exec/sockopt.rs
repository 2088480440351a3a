//! Socket options the socket2 crate has no setter for, set with one raw call.

use std::io;
use std::os::fd::AsRawFd;

/// setsockopt(level, name) with `value` as the option's bytes.
///
/// `T` must be the plain C type the kernel expects for that option (an int, a u32,
/// a `sock_fprog`): its size is what is passed as the option length.
pub fn set<T>(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live reference and the length is exactly its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
