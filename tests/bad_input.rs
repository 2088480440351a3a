//! Bad arguments are bad input: exit 2 before anything boots, nothing written. And
//! the commands that only read results (`diff A B`) need no case library.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn sockmatrix(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn bad_kernels_and_memory_exit_2_before_anything_boots() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("out/results");
    let results_arg = results.to_str().unwrap();
    let case = repo().join("cases/bind/wildcard_vs_specific_tcp.yaml");
    let case = case.to_str().unwrap();
    let bad: [(&[&str], &str); 6] = [
        (&["--kernel", "9.9"], "no such kernel"),
        (&["--kernel", "/etc/passwd"], "not a bzImage"),
        (&["--kernel", "/nonexistent"], "no such kernel"),
        (&["--kernel", "/etc"], "not a file"),
        (
            &["--kernel", "6.12", "--memory", "1"],
            "between 128 and 16384 MiB",
        ),
        (
            &["--kernel", "6.12", "--memory", "999999"],
            "between 128 and 16384 MiB",
        ),
    ];
    for (args, says) in bad {
        let started = Instant::now();
        let mut all = vec!["run", case, "--accel", "tcg", "--results", results_arg];
        all.extend_from_slice(args);
        let out = sockmatrix(&repo(), &all);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{shown}");
        assert!(
            shown.contains(says),
            "{args:?} should say {says:?}:\n{shown}"
        );
        assert!(!shown.contains("booting"), "{args:?} booted:\n{shown}");
        // No boot: well under the seconds a guest takes.
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?}");
        assert!(
            !dir.path().join("out").exists(),
            "{args:?} wrote under the results' folder"
        );
    }
}

#[test]
fn diff_of_two_result_files_needs_no_case_library() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    std::fs::copy(repo().join("results/baseline/6.1/result.json"), &a).unwrap();
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&a).unwrap()).unwrap();
    value["cases"][0]["observations"]["sockmatrix.test"] = serde_json::json!("changed");
    std::fs::write(&b, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    let args = ["diff", a.to_str().unwrap(), b.to_str().unwrap()];

    // No ./cases at all.
    let out = sockmatrix(dir.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("sockmatrix.test"), "{}", text(&out));

    // A ./cases that does not load: a note, and the comparison all the same.
    std::fs::create_dir(dir.path().join("cases")).unwrap();
    std::fs::write(dir.path().join("cases/broken.yaml"), "summary: [").unwrap();
    let out = sockmatrix(dir.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("sockmatrix.test"), "{}", text(&out));

    // An explicit --cases must load.
    let mut explicit = args.to_vec();
    explicit.extend(["--cases", "cases"]);
    assert_eq!(sockmatrix(dir.path(), &explicit).status.code(), Some(2));
}

/// Writers other than `run`: output that cannot be written is exit 3 (could not run)
/// naming the file and the OS error, not exit 2 (the input was fine).
#[test]
fn baseline_update_and_merge_that_cannot_write_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let out_dir = blocker.join("out");
    let from = repo().join("results/baseline");
    for args in [
        vec![
            "baseline",
            "update",
            "--from",
            from.to_str().unwrap(),
            "--to",
            out_dir.to_str().unwrap(),
        ],
        vec!["merge", out_dir.to_str().unwrap(), from.to_str().unwrap()],
    ] {
        let out = sockmatrix(dir.path(), &args);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}:\n{shown}");
        assert!(shown.contains("Not a directory"), "{args:?}:\n{shown}");
        assert!(
            shown.contains(&out_dir.display().to_string()),
            "{args:?}:\n{shown}"
        );
    }
}

/// `bisect-run` with an impossible `--memory`: the bisection is stopped (128) before
/// anything boots, rather than every commit skipped.
#[test]
fn bisect_run_with_bad_memory_stops_the_bisection() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("bzImage");
    std::fs::write(&image, b"whatever").unwrap();
    let case = repo().join("cases/bind/wildcard_vs_specific_tcp.yaml");
    let out = sockmatrix(
        dir.path(),
        &[
            "bisect-run",
            "--kernel-image",
            image.to_str().unwrap(),
            "--case",
            case.to_str().unwrap(),
            "--memory",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(128), "{}", text(&out));
    assert!(text(&out).contains("--memory 1"), "{}", text(&out));
}
