//! Recognising an x86 bzImage and reading its release string from the setup header.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The x86 boot protocol's setup header: "HdrS" at 0x202, and a pointer
/// (minus 0x200) to the NUL-terminated version string at 0x20E.
const MAGIC_OFFSET: usize = 0x202;
const VERSION_PTR_OFFSET: usize = 0x20E;

/// Checks a bzImage header and returns the kernel release when the header carries one.
pub fn inspect(bytes: &[u8]) -> Result<Option<String>> {
    if bytes.len() < MAGIC_OFFSET + 4 || &bytes[MAGIC_OFFSET..MAGIC_OFFSET + 4] != b"HdrS" {
        bail!("not a bzImage (no \"HdrS\" magic at offset 0x202)");
    }
    let Some(ptr) = bytes.get(VERSION_PTR_OFFSET..VERSION_PTR_OFFSET + 2) else {
        return Ok(None);
    };
    let start = u16::from_le_bytes([ptr[0], ptr[1]]) as usize + 0x200;
    if start == 0x200 || start >= bytes.len() {
        return Ok(None);
    }
    let tail = &bytes[start..bytes.len().min(start + 512)];
    let s = &tail[..tail.iter().position(|&b| b == 0).unwrap_or(tail.len())];
    // "6.1.0-56-cloud-amd64 (debian-kernel@...) #1 SMP ..." -> first word.
    Ok(std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.split_whitespace().next())
        .map(str::to_string))
}

/// Reads just the header of the file at `path` (the version string lives in the first 64 KiB).
pub fn inspect_file(path: &Path) -> Result<Option<String>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = Vec::with_capacity(64 * 1024);
    f.take(64 * 1024)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    inspect(&head).with_context(|| format!("{}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(version: &str) -> Vec<u8> {
        let mut b = vec![0u8; 0x1000];
        b[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(b"HdrS");
        let at = 0x400usize;
        b[VERSION_PTR_OFFSET..VERSION_PTR_OFFSET + 2]
            .copy_from_slice(&((at - 0x200) as u16).to_le_bytes());
        b[at..at + version.len()].copy_from_slice(version.as_bytes());
        b
    }

    #[test]
    fn reads_release_from_header() {
        let b = image("6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP");
        assert_eq!(
            inspect(&b).unwrap().as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
    }

    #[test]
    fn rejects_non_bzimage() {
        assert!(inspect(b"\x7fELF").is_err());
        let mut b = image("x");
        b[MAGIC_OFFSET] = b'X';
        assert!(inspect(&b).unwrap_err().to_string().contains("HdrS"));
    }

    #[test]
    fn missing_version_pointer_is_none() {
        let mut b = image("x");
        b[VERSION_PTR_OFFSET..VERSION_PTR_OFFSET + 2].copy_from_slice(&[0, 0]);
        assert_eq!(inspect(&b).unwrap(), None);
    }
}
