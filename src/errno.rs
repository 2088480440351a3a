//! Errno names as observations use them (`EADDRINUSE`), both ways.

use nix::errno::Errno;

/// The symbolic name of an errno value, or `E<n>` when the libc has none.
pub fn name(code: i32) -> String {
    let errno = Errno::from_raw(code);
    if errno == Errno::UnknownErrno {
        format!("E{code}")
    } else {
        format!("{errno:?}")
    }
}

/// The observation for an I/O error: its errno name. An error a library made up
/// itself (socket2's connect_timeout gives `TimedOut` when its poll runs out, with
/// no errno) is named by the errno of the same meaning, as the case docs promise
/// (`connect.NAME` = `ETIMEDOUT`); any other kind by std's name for it.
pub fn of_io(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => name(code),
        None => match errno_of_kind(err.kind()) {
            Some(code) => name(code),
            None => format!("{:?}", err.kind()),
        },
    }
}

/// The errno a socket error kind stands for, where that is one errno (not
/// `PermissionDenied`, which is EACCES or EPERM; not `InvalidInput`, which std
/// also uses for arguments it refuses before any system call).
fn errno_of_kind(kind: std::io::ErrorKind) -> Option<i32> {
    use std::io::ErrorKind as K;
    Some(match kind {
        K::TimedOut => libc::ETIMEDOUT,
        K::WouldBlock => libc::EAGAIN,
        K::Interrupted => libc::EINTR,
        K::ConnectionRefused => libc::ECONNREFUSED,
        K::ConnectionReset => libc::ECONNRESET,
        K::ConnectionAborted => libc::ECONNABORTED,
        K::NotConnected => libc::ENOTCONN,
        K::AddrInUse => libc::EADDRINUSE,
        K::AddrNotAvailable => libc::EADDRNOTAVAIL,
        K::BrokenPipe => libc::EPIPE,
        _ => return None,
    })
}

pub fn is_known(candidate: &str) -> bool {
    (1..256).any(|code| {
        let errno = Errno::from_raw(code);
        errno != Errno::UnknownErrno && format!("{errno:?}") == candidate
    })
}

/// Looks like an errno name (all capitals and digits after an E), known or not.
pub fn looks_like(text: &str) -> bool {
    text.len() > 2
        && text.starts_with('E')
        && text[1..]
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(name(libc::EADDRINUSE), "EADDRINUSE");
        assert!(is_known("ECONNREFUSED"));
        assert!(!is_known("EADDRINUS"));
        assert!(looks_like("EADDRINUS"));
        assert!(!looks_like("ok"));
    }

    /// socket2's connect_timeout reports its own timeout as a bare `TimedOut`;
    /// the observation is the errno name cases/README.md documents.
    #[test]
    fn an_error_without_errno_is_named_by_the_errno_of_its_kind() {
        use std::io::{Error, ErrorKind};
        assert_eq!(of_io(&Error::from(ErrorKind::TimedOut)), "ETIMEDOUT");
        assert_eq!(of_io(&Error::from(ErrorKind::WouldBlock)), "EAGAIN");
        assert_eq!(of_io(&Error::from_raw_os_error(libc::EPERM)), "EPERM");
        // No errno of its own meaning: std's name, never a guessed errno.
        assert_eq!(
            of_io(&Error::from(ErrorKind::PermissionDenied)),
            "PermissionDenied"
        );
        assert_eq!(of_io(&Error::other("no error set after POLLHUP")), "Other");
        // Each mapped kind is the kind std gives that errno.
        for code in 1..150 {
            let kind = Error::from_raw_os_error(code).kind();
            if let Some(mapped) = errno_of_kind(kind) {
                assert_eq!(
                    Error::from_raw_os_error(mapped).kind(),
                    kind,
                    "{}",
                    name(code)
                );
            }
        }
    }
}
