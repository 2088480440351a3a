//! Finding (or building) the static guest agent that becomes /init.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// The target triple the agent is built for; static glibc, no musl needed.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// `$SOCKMATRIX_AGENT` if set; else the agent built from this source tree,
/// building it once per process when missing or older than the sources.
pub fn agent_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Some(path) = std::env::var_os("SOCKMATRIX_AGENT") {
        let path = PathBuf::from(path);
        check_static(&path)?;
        return Ok(path);
    }
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn source_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn build() -> Result<PathBuf> {
    let root = source_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let binary = target_dir
        .join(TARGET)
        .join("release")
        .join("sockmatrix-agent");
    if !root.join("Cargo.toml").is_file() {
        bail!(
            "no agent: set SOCKMATRIX_AGENT to a static sockmatrix-agent binary \
             (the source tree {} is not available to build one)",
            root.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Cargo does nothing when the agent is up to date, so always asking is cheap.
    let status = duct::cmd(
        cargo,
        [
            "build",
            "--quiet",
            "--release",
            "--no-default-features",
            "--bin",
            "sockmatrix-agent",
            "--target",
            TARGET,
        ],
    )
    .dir(&root)
    .env("RUSTFLAGS", "-C target-feature=+crt-static")
    .env("CARGO_TARGET_DIR", &target_dir)
    .stdout_to_stderr()
    .unchecked()
    .run()
    .context("running cargo to build the guest agent")?;
    if !status.status.success() {
        bail!("building the static guest agent failed (cargo build --release --no-default-features --bin sockmatrix-agent --target {TARGET})");
    }
    check_static(&binary)?;
    Ok(binary)
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
    use super::has_interpreter;

    #[test]
    fn host_binaries_are_dynamic() {
        // The test binary itself is dynamically linked on a normal host build.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me));
        assert!(!has_interpreter(b"\x7fELF too short"));
    }
}
