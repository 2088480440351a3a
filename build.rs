//! Builds the static guest agent (PID 1 of every guest's initramfs) at build time so
//! that the `sockmatrix` binary carries it (`include_bytes!`) and runs anywhere,
//! without this source tree or a Rust toolchain.
//!
//! The agent is the same package built again (`--no-default-features --bin
//! sockmatrix-agent`, static glibc), by a nested cargo in a target folder of its own:
//! sharing the outer build's folder would wait forever on its lock. The nested build
//! has no `runner` feature, so this script does nothing there (no recursion).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The agent's target: static glibc needs no musl toolchain.
const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Cargo.toml's `[profile.agent]`: release code, incremental, so the dev loop stays fast.
const AGENT_PROFILE: &str = "agent";

fn main() {
    // What the agent is built from. A change anywhere reruns this script; the nested
    // cargo then rebuilds only when a file the agent compiles changed.
    for path in ["src", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={path}");
    }
    if std::env::var_os("CARGO_FEATURE_RUNNER").is_none() {
        // The agent's own build (or a library-only build): nothing to embed.
        return;
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let agent = build_agent(&agent_target_dir(&out_dir));
    println!(
        "cargo:rustc-env=SOCKMATRIX_EMBEDDED_AGENT={}",
        agent.display()
    );
}

/// `<target>/sockmatrix-agent`, next to the outer build's profile folders: shared by
/// debug and release builds, apart from both their locks.
/// OUT_DIR is `<target>[/<triple>]/<profile>/build/<pkg>-<hash>/out`.
fn agent_target_dir(out_dir: &Path) -> PathBuf {
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR is <target>/<profile>/build/<pkg>/out");
    profile_dir
        .parent()
        .unwrap_or(profile_dir)
        .join("sockmatrix-agent")
}

fn build_agent(target_dir: &Path) -> PathBuf {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&manifest_dir)
        .args(["build", "--quiet", "--no-default-features"])
        .args(["--bin", "sockmatrix-agent", "--target", AGENT_TARGET])
        .args(["--profile", AGENT_PROFILE])
        .arg("--target-dir")
        .arg(target_dir);
    // The outer cargo talks to build scripts through CARGO_* variables (flags, the
    // jobserver, features) and clippy through RUSTC_WORKSPACE_WRAPPER: none of them
    // may leak into a different build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key == "RUSTC_WORKSPACE_WRAPPER" {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.env("RUSTFLAGS", "-C target-feature=+crt-static");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build the guest agent: {e}"));
    if !status.success() {
        panic!(
            "building the static guest agent failed ({status}); it links glibc statically: \
             is libc6-dev installed (bash ci/setup.sh)?"
        );
    }
    target_dir
        .join(AGENT_TARGET)
        .join(AGENT_PROFILE)
        .join("sockmatrix-agent")
}
