//! Writes initramfs images in the kernel's "newc" cpio format (no external `cpio` needed).
//!
//! Format: each member is a 110-byte ASCII header ("070701" + 13 fields of
//! 8 hex digits), the NUL-terminated name padded so header+name is 4-aligned,
//! then the data padded to 4. The archive ends with a "TRAILER!!!" member.
//! The kernel needs no compression, so none is applied.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum FileData {
    Bytes(Vec<u8>),
    /// Read from the host at write time (e.g. a statically linked init).
    Source(PathBuf),
}

/// One member of the archive. Paths are guest paths, with or without a leading '/'.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: FileData,
    },
    /// e.g. `/dev/console` c 5 1: the kernel opens it for init's stdio before
    /// any devtmpfs is mounted, so it must exist in the archive itself.
    CharDev {
        path: String,
        mode: u32,
        major: u32,
        minor: u32,
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// The entries every guest needs besides /init: /dev, /dev/console, /proc, /sys, /tmp.
pub fn base_entries() -> Vec<Entry> {
    vec![
        Entry::Dir {
            path: "dev".into(),
            mode: 0o755,
        },
        Entry::CharDev {
            path: "dev/console".into(),
            mode: 0o600,
            major: 5,
            minor: 1,
        },
        Entry::Dir {
            path: "proc".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "sys".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "tmp".into(),
            mode: 0o1777,
        },
    ]
}

/// Writes `entries` (parents before children) as a newc archive at `path`.
pub fn write_initramfs(path: &Path, entries: &[Entry]) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    write_archive(&mut w, entries)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Same as [`write_initramfs`] to any writer (used by tests).
pub fn write_archive<W: Write>(w: &mut W, entries: &[Entry]) -> io::Result<()> {
    let mut off = 0usize;
    for (i, e) in entries.iter().enumerate() {
        let (name, mode, data, rdev) = match e {
            Entry::Dir { path, mode } => (path, S_IFDIR | mode, Vec::new(), (0, 0)),
            Entry::File { path, mode, data } => {
                let bytes = match data {
                    FileData::Bytes(b) => b.clone(),
                    FileData::Source(p) => std::fs::read(p).map_err(|err| {
                        io::Error::new(err.kind(), format!("{}: {err}", p.display()))
                    })?,
                };
                (path, S_IFREG | mode, bytes, (0, 0))
            }
            Entry::CharDev {
                path,
                mode,
                major,
                minor,
            } => (path, S_IFCHR | mode, Vec::new(), (*major, *minor)),
        };
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let head = Head {
            ino: i as u32 + 1,
            mode,
            nlink,
            rdev,
        };
        off += member(w, off, &head, normalize(name), &data)?;
    }
    member(
        w,
        off,
        &Head {
            ino: 0,
            mode: 0,
            nlink: 1,
            rdev: (0, 0),
        },
        "TRAILER!!!",
        &[],
    )?;
    Ok(())
}

/// The kernel accepts "dev/console" and "/dev/console", but cpio convention is relative.
fn normalize(p: &str) -> &str {
    p.trim_start_matches('/')
}

/// The header fields that vary between members (uid, gid, mtime, dev are 0).
struct Head {
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
}

/// Writes one member starting at archive offset `off`; returns bytes written.
fn member<W: Write>(w: &mut W, off: usize, h: &Head, name: &str, data: &[u8]) -> io::Result<usize> {
    let namesize = name.len() + 1; // includes the NUL
    let fields = [
        h.ino,
        h.mode,
        0,
        0,
        h.nlink,
        0,
        data.len() as u32,
        0,
        0,
        h.rdev.0,
        h.rdev.1,
        namesize as u32,
        0,
    ];
    let mut hdr = String::with_capacity(110);
    hdr.push_str("070701");
    for f in fields {
        hdr.push_str(&format!("{f:08x}"));
    }
    w.write_all(hdr.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    let mut n = off + 110 + namesize;
    let pad = pad4(n);
    w.write_all(&[0u8; 3][..pad])?;
    n += pad;
    w.write_all(data)?;
    n += data.len();
    let pad = pad4(n);
    w.write_all(&[0u8; 3][..pad])?;
    n += pad;
    Ok(n - off)
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[Entry]) -> Vec<u8> {
        let mut v = Vec::new();
        write_archive(&mut v, entries).unwrap();
        v
    }

    /// Parses a newc archive back: (name, mode, rdevmajor, rdevminor, data).
    fn parse(mut b: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let total = b.len();
        let mut out = Vec::new();
        loop {
            let pos = total - b.len();
            assert_eq!(pos % 4, 0, "member not 4-aligned");
            assert_eq!(&b[..6], b"070701");
            let f = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, maj, min, nsz) = (f(1), f(6) as usize, f(9), f(10), f(11) as usize);
            let name = String::from_utf8(b[110..110 + nsz - 1].to_vec()).unwrap();
            assert_eq!(b[110 + nsz - 1], 0);
            let dstart = 110 + nsz + pad4(pos + 110 + nsz);
            let data = b[dstart..dstart + size].to_vec();
            let end = dstart + size + pad4(pos + dstart + size);
            b = &b[end..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty());
                return out;
            }
            out.push((name, mode, maj, min, data));
        }
    }

    #[test]
    fn round_trips_all_kinds() {
        let mut es = base_entries();
        es.push(Entry::File {
            path: "/init".into(),
            mode: 0o755,
            data: FileData::Bytes(b"abcde".to_vec()),
        });
        es.push(Entry::File {
            path: "e".into(),
            mode: 0o644,
            data: FileData::Bytes(vec![]),
        });
        let got = parse(&archive(&es));
        assert_eq!(got.len(), 7);
        assert_eq!(got[0], ("dev".into(), 0o040755, 0, 0, vec![]));
        assert_eq!(got[1], ("dev/console".into(), 0o020600, 5, 1, vec![]));
        assert_eq!(got[5], ("init".into(), 0o100755, 0, 0, b"abcde".to_vec()));
        assert_eq!(got[6].4, Vec::<u8>::new());
    }

    #[test]
    fn header_layout_is_exact() {
        let a = archive(&[Entry::File {
            path: "ab".into(),
            mode: 0o644,
            data: FileData::Bytes(b"x".to_vec()),
        }]);
        // 110 + "ab\0" = 113 -> padded to 116; data 1 -> padded to 120.
        assert_eq!(&a[..14], b"07070100000001");
        assert_eq!(&a[14..22], b"000081a4");
        assert_eq!(&a[110..116], b"ab\0\0\0\0");
        assert_eq!(&a[116..120], b"x\0\0\0");
        assert_eq!(&a[120..126], b"070701");
        assert_eq!(a.len() % 4, 0);
    }

    #[test]
    fn source_file_is_read_and_missing_source_names_path() {
        let dir = std::env::temp_dir().join(format!("cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("blob");
        std::fs::write(&src, b"hello").unwrap();
        let out = dir.join("out.cpio");
        write_initramfs(
            &out,
            &[Entry::File {
                path: "init".into(),
                mode: 0o755,
                data: FileData::Source(src),
            }],
        )
        .unwrap();
        assert_eq!(parse(&std::fs::read(&out).unwrap())[0].4, b"hello");
        let err = write_initramfs(
            &out,
            &[Entry::File {
                path: "x".into(),
                mode: 0o755,
                data: FileData::Source(dir.join("nope")),
            }],
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
