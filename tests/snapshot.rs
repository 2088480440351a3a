//! Snapshot-restored guests on a real kernel: two restores of one snapshot run
//! independently (the UDP distribution places datagrams differently, as two cold
//! boots do), and a damaged snapshot falls back to a cold boot with a message.

use std::path::PathBuf;
use std::sync::Mutex;

use sockmatrix::runner::{self, Progress, RunOptions};

const KERNEL: &str = "6.12";
const CASE: &str = "reuseport/distribution_udp";

fn opts(dir: &std::path::Path) -> RunOptions {
    RunOptions {
        accel: sockmatrix::qemu::Accel::Tcg,
        results_dir: dir.to_path_buf(),
        history_dir: None,
        show_downloads: false,
        ..RunOptions::default()
    }
}

/// One run of the case: its `tally.*` placement and the progress lines.
fn run_once(dir: &std::path::Path) -> (Vec<(String, serde_json::Value)>, Vec<String>) {
    let cases = sockmatrix::select::load(&[PathBuf::from("cases")], Some(CASE)).unwrap();
    assert_eq!(cases.len(), 1);
    let said = Mutex::new(Vec::new());
    let results = runner::run_kernels(&[KERNEL.into()], &cases, &opts(dir), &|p| match p {
        Progress::Booting { accel, .. } => said.lock().unwrap().push(format!("booting {accel}")),
        Progress::Retrying { reason, .. } => said.lock().unwrap().push(reason),
        _ => {}
    });
    let case = &results[0].cases[0];
    assert!(
        matches!(case.verdict, sockmatrix::judge::Verdict::Pass { .. }),
        "{:?}",
        case.verdict
    );
    let placement = case
        .observations
        .iter()
        .filter(|(k, _)| k.starts_with("tally.") && !k.ends_with("fairness"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (placement, said.into_inner().unwrap())
}

#[test]
fn restored_runs_are_independent_and_a_damaged_snapshot_boots_cold() {
    let dir = tempfile::tempdir().unwrap();
    // The first run makes the snapshot if there is none; the next two restore it.
    run_once(dir.path());
    let (a, said_a) = run_once(dir.path());
    let (b, said_b) = run_once(dir.path());
    for said in [&said_a, &said_b] {
        assert!(
            said.iter().any(|s| s.contains("restored")),
            "not restored: {said:?}"
        );
    }
    assert_ne!(
        a, b,
        "two restores of one snapshot placed every datagram alike: shared random state"
    );

    // Damage every snapshot's state at its end: the next run says so and boots cold.
    let snaps = sockmatrix::qemu::snapshot::dir();
    for e in std::fs::read_dir(&snaps).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "state") {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(e.path())
                .unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len - 4096).unwrap();
        }
    }
    let (_, said) = run_once(dir.path());
    assert!(
        said.iter().any(|s| s.contains("unusable")),
        "no message about the damaged snapshot: {said:?}"
    );
}
