//! Malformed case files are rejected with every error at its line and column.
//! Each file under tests/data/bad lists the errors it must produce as
//! `# expect-error: LINE:COL: message prefix` lines, and produces no others.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bad_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/data/bad")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no malformed cases found");
    files
}

fn expected_errors(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# expect-error: ").map(str::to_string))
        .collect()
}

#[test]
fn every_malformed_file_reports_exactly_its_errors() {
    let mut problems = Vec::new();
    for file in bad_files() {
        let expected = expected_errors(&file);
        assert!(
            !expected.is_empty(),
            "{} declares no expect-error",
            file.display()
        );
        let got: Vec<String> = match sockmatrix::case::load_file(&file) {
            Ok(_) => vec![],
            Err(e) => e
                .errors
                .iter()
                .map(|d| format!("{}:{}: {}", d.pos.line, d.pos.col, d.message))
                .collect(),
        };
        for want in &expected {
            if !got.iter().any(|g| g.starts_with(want.as_str())) {
                problems.push(format!(
                    "{}: missing error `{want}`; got {got:#?}",
                    file.display()
                ));
            }
        }
        if got.len() != expected.len() {
            problems.push(format!(
                "{}: expected {} errors, got {got:#?}",
                file.display(),
                expected.len()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn check_command_exits_2_and_names_file_line_and_column() {
    let out = Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .args(["check", "tests/data/bad/unknown_field.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tests/data/bad/unknown_field.yaml:9:5: unknown field `backlogg`"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was run"), "{stderr}");
}

#[test]
fn one_bad_file_stops_the_whole_run() {
    // A valid case next to a bad one: nothing runs, the exit code says bad input.
    let out = Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .args([
            "run",
            "--host",
            "cases/reuseport/distribution_udp.yaml",
            "tests/data/bad/syntax.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "something ran"
    );
}

#[test]
fn shipped_cases_are_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .args(["check", "cases"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temporary `cases` folder holding one valid case, `a.yaml`.
fn one_case_folder() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases");
    std::fs::create_dir(&cases).unwrap();
    std::fs::write(
        cases.join("a.yaml"),
        "summary: one case\nsteps:\n  - socket: a\n",
    )
    .unwrap();
    (dir, cases)
}

fn check(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .arg("check")
        .args(args)
        .output()
        .unwrap()
}

/// A folder symlink loop is walked once, and a file reached twice (a symlink to
/// it, the same path given twice) is one case, not 41 or two.
#[test]
fn symlink_loops_and_duplicate_files_count_once() {
    let (_dir, cases) = one_case_folder();
    std::os::unix::fs::symlink(".", cases.join("loop")).unwrap();
    std::os::unix::fs::symlink("a.yaml", cases.join("b.yaml")).unwrap();
    let out = check(&[cases.as_os_str(), cases.join("a.yaml").as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout.trim(), "ok: 1 case(s) valid", "{out:?}");
}

/// A case file whose name is not UTF-8 cannot be carried by results: check
/// rejects it (exit 2) and shows the path lossily.
#[test]
fn a_case_file_name_that_is_not_utf8_is_bad_input() {
    use std::os::unix::ffi::OsStrExt;
    let (_dir, cases) = one_case_folder();
    let name = std::ffi::OsStr::from_bytes(b"bad\xff.yaml");
    std::fs::write(cases.join(name), "summary: x\nsteps:\n  - socket: a\n").unwrap();
    let out = check(&[cases.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr.contains("bad\u{FFFD}.yaml"), "{stderr}");
    assert!(stderr.contains("not UTF-8"), "{stderr}");
}
