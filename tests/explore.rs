//! `sockmatrix explore` on a real kernel pair (5.10 and 6.1, TCG), fixed seed: a run
//! stopped by SIGINT after its first batch keeps its state and exits 130; a second
//! run with the same --out continues it, finds and shrinks the missing
//! IP_LOCAL_PORT_RANGE of 5.10, and writes findings that `check` accepts and that
//! pass when `run` on the same kernels.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const KERNELS: [&str; 2] = ["5.10", "6.1"];
const SEED: &str = "1";

fn sockmatrix() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockmatrix"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

fn explore(out: &Path, max_programs: u32) -> Command {
    let mut cmd = sockmatrix();
    cmd.args([
        "explore", "--accel", "tcg", "--seed", SEED, "--budget", "8m", "--batch", "24",
    ])
    .args(["--max-programs", &max_programs.to_string()])
    .arg("--out")
    .arg(out);
    for k in KERNELS {
        cmd.args(["--kernel", k]);
    }
    cmd
}

fn findings(out: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn a_fixed_seed_exploration_of_two_kernels_finds_shrinks_and_writes_cases() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("found");

    // 1. SIGINT after the first batch: exit 130, the state and report are kept.
    let mut child = explore(&out, 1000)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("batch 1:") {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("findings kept in"), "{seen}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("state.json")).unwrap()).unwrap();
    let tried = state["tally"]["programs"].as_u64().unwrap();
    assert!(tried >= 24, "the first batch's programs are kept: {state}");
    assert!(out.join("report.md").is_file());

    // 2. The same --out continues (the seed comes from the state) up to 60 programs.
    let run = explore(&out, 60).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert_eq!(run.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "continuing the run in {}: seed 1, {tried} programs tried",
            out.display()
        )),
        "{stderr}"
    );
    assert!(stdout.contains("- programs tried: 60 "), "{stdout}");

    // 3. The missing IP_LOCAL_PORT_RANGE of 5.10, shrunk to one step.
    let files = findings(&out);
    let range = files
        .iter()
        .find(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("socket_local_port_range_")
        })
        .unwrap_or_else(|| panic!("no local_port_range finding in {files:?}\n{stdout}"));
    let case = sockmatrix::case::load_file(range).unwrap();
    assert_eq!(
        case.plan.steps.len(),
        1,
        "{}",
        std::fs::read_to_string(range).unwrap()
    );
    assert!(
        case.summary.contains("ENOPROTOOPT on 5.10; ok on 6.1"),
        "{}",
        case.summary
    );

    // 4. Every finding is a valid case, at most four steps here, and holds on the
    //    kernels it was found on.
    for f in &files {
        let case = sockmatrix::case::load_file(f).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            case.plan.steps.len() <= 4,
            "{}",
            std::fs::read_to_string(f).unwrap()
        );
    }
    let check = sockmatrix().arg("check").arg(&out).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut rerun = sockmatrix();
    rerun
        .args(["run", "--accel", "tcg", "--results"])
        .arg(dir.path().join("results"));
    for k in KERNELS {
        rerun.args(["--kernel", k]);
    }
    let rerun = rerun.arg(&out).output().unwrap();
    assert_eq!(
        rerun.status.code(),
        Some(0),
        "the findings do not hold on their kernels:\n{}\n{}",
        String::from_utf8_lossy(&rerun.stdout),
        String::from_utf8_lossy(&rerun.stderr)
    );
}
