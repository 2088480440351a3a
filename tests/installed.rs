//! The binary on its own: copied out of the build tree like `cargo install` does, run
//! from an empty folder with no cargo on PATH, it boots a real kernel (6.1, TCG) with
//! the guest agent and catalogue it carries, and runs a case. As root (CI), the source
//! tree is also hidden under an empty tmpfs in a private mount namespace, so a binary
//! that still read anything from it would fail here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The dirs of PATH that hold no `cargo` (and no rustup proxies).
fn path_without_cargo() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let kept: Vec<&str> = path
        .split(':')
        .filter(|d| !d.is_empty() && !Path::new(d).join("cargo").exists())
        .collect();
    kept.join(":")
}

struct Installed {
    _root: tempfile::TempDir,
    binary: PathBuf,
    /// An empty folder to run in.
    work: PathBuf,
    /// A case library outside the work folder, as a user's would be.
    cases: PathBuf,
}

fn install() -> Installed {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let binary = bin.join("sockmatrix");
    std::fs::copy(env!("CARGO_BIN_EXE_sockmatrix"), &binary).unwrap();
    let work = root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let cases = root.path().join("mine").join("cases");
    std::fs::create_dir_all(cases.join("bind")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("cases/bind/wildcard_vs_specific_tcp.yaml"),
        cases.join("bind/wildcard_vs_specific_tcp.yaml"),
    )
    .unwrap();
    Installed {
        _root: root,
        binary,
        work,
        cases,
    }
}

impl Installed {
    fn run(&self, args: &[&str]) -> Output {
        let path = path_without_cargo();
        for dir in path.split(':') {
            assert!(!Path::new(dir).join("cargo").exists(), "cargo in {dir}");
        }
        let mut cmd = match hide_tree() {
            Some(tree) => {
                let mut cmd = Command::new("unshare");
                cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(HIDE_AND_RUN)
                    .arg(tree)
                    .arg(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        cmd.args(args).current_dir(&self.work).env("PATH", path);
        // Nothing may point back at the source tree or a toolchain.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let toolchain = key.starts_with("CARGO") || key.starts_with("RUSTUP");
            if toolchain || (key.starts_with("SOCKMATRIX_") && key != "SOCKMATRIX_CACHE") {
                cmd.env_remove(key.as_ref());
            }
        }
        cmd.output().unwrap()
    }
}

/// Mounts an empty tmpfs over the source tree ($0), checks it is gone, runs "$@".
const HIDE_AND_RUN: &str =
    r#"mount -t tmpfs hidden "$0" && test ! -e "$0/Cargo.toml" && exec "$@""#;

/// The source tree to hide, when this test may (root, with unshare).
fn hide_tree() -> Option<&'static str> {
    let can = nix::unistd::geteuid().is_root() && Path::new("/usr/bin/unshare").exists();
    can.then_some(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn runs_a_case_from_an_empty_folder_without_cargo() {
    let it = install();
    // No cases here: a clear message and exit 2, not a crash.
    let out = it.run(&["run", "--kernel", "6.1", "--accel", "tcg"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no case folder ./cases here"),
        "{}",
        text(&out)
    );
    // The built-in catalogue needs no vm/ folder.
    let out = it.run(&["kernels", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("6.1"),
        "{}",
        text(&out)
    );

    let cases = it.cases.to_str().unwrap();
    let out = it.run(&["run", "--kernel", "6.1", "--accel", "tcg", cases]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let result =
        sockmatrix::resultset::results::load(&it.work.join("results/latest/6.1/result.json"))
            .unwrap();
    assert_eq!(result.cases.len(), 1, "{result:?}");
    assert_eq!(result.cases[0].case, "bind/wildcard_vs_specific_tcp");
    assert_eq!(result.cases[0].verdict.label(), "pass", "{result:?}");
    assert!(result.release.as_deref().unwrap_or("").starts_with("6.1."));
}

#[test]
fn a_catalogue_folder_without_a_catalogue_is_bad_input() {
    let it = install();
    let out = it.run(&["--catalogue", it.work.to_str().unwrap(), "kernels", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no kernels.yaml"),
        "{}",
        text(&out)
    );
    let mut cmd = it.run(&["kernels", "list"]);
    assert!(cmd.status.success(), "{}", text(&cmd));
    // The environment variable is checked the same way.
    cmd = Command::new(&it.binary)
        .args(["kernels", "list"])
        .current_dir(&it.work)
        .env("SOCKMATRIX_CATALOGUE", &it.work)
        .output()
        .unwrap();
    assert_eq!(cmd.status.code(), Some(2), "{}", text(&cmd));
}
