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

/// The observation for an I/O error: its errno name, or the error text.
pub fn of_io(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => name(code),
        None => format!("{:?}", err.kind()),
    }
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
}
