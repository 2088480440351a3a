//! The static guest agent that becomes /init: the copy build.rs embedded in this
//! binary, or `$SOCKMATRIX_AGENT` to try another build.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// The target triple the agent is built for; static glibc, no musl needed.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The agent build.rs built for this binary.
static EMBEDDED: &[u8] = include_bytes!(env!("SOCKMATRIX_EMBEDDED_AGENT"));

/// `$SOCKMATRIX_AGENT` if set; else the embedded agent, written once to the cache
/// (named by its content, so binaries of different versions never share one).
pub fn agent_binary() -> Result<PathBuf> {
    static WRITTEN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Some(path) = std::env::var_os("SOCKMATRIX_AGENT") {
        let path = PathBuf::from(path);
        check_static(&path)?;
        return Ok(path);
    }
    WRITTEN
        .get_or_init(|| write_embedded(&crate::kernel::cache_dir()).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn write_embedded(cache: &Path) -> Result<PathBuf> {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(EMBEDDED));
    let path = cache
        .join("agent")
        .join(format!("sockmatrix-agent-{}", &digest[..16]));
    if std::fs::read(&path).is_ok_and(|b| b == EMBEDDED) {
        return Ok(path);
    }
    crate::resultset::results::write_atomic(&path, EMBEDDED)
        .with_context(|| format!("writing the embedded guest agent to {}", path.display()))?;
    check_static(&path)?;
    Ok(path)
}

/// A dynamically linked /init would die at once in the initramfs: refuse it here.
fn check_static(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading agent {}", path.display()))?;
    if !bytes.starts_with(b"\x7fELF") {
        bail!("agent {} is not an ELF binary", path.display());
    }
    if has_interpreter(&bytes) {
        bail!(
            "agent {} is dynamically linked; build it with RUSTFLAGS=\"-C target-feature=+crt-static\" --target {TARGET}",
            path.display()
        );
    }
    Ok(())
}

/// True when an ELF64 file has a PT_INTERP program header (it needs ld.so).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            == Some(PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_agent_is_static_and_written_once() {
        assert!(!has_interpreter(EMBEDDED), "the embedded agent needs ld.so");
        let cache = tempfile::tempdir().unwrap();
        let path = write_embedded(cache.path()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), EMBEDDED);
        assert_eq!(write_embedded(cache.path()).unwrap(), path);
    }

    #[test]
    fn host_binaries_are_dynamic() {
        // The test binary itself is dynamically linked on a normal host build.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me));
        assert!(!has_interpreter(b"\x7fELF too short"));
    }
}
