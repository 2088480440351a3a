//! Snapshot-restored guests on a real kernel: two restores of one snapshot run
//! independently (each draws its own boot id and random bytes after the reseed,
//! has the host's clock, and the UDP distribution places datagrams differently,
//! as two cold boots do); a damaged snapshot falls back to a cold boot with a
//! message; a plan that loads kernel modules restores too.

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

/// What one run gave: the case's `tally.*` placement, the progress lines, what
/// the agent drew at its start, and the host's clock (ms) around the run.
struct Run {
    placement: Vec<(String, serde_json::Value)>,
    said: Vec<String>,
    fresh: sockmatrix::resume::Freshness,
    host_ms: (u64, u64),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn run_once(dir: &std::path::Path) -> Run {
    run_case(dir, CASE)
}

/// One guest at a time: the two tests' boots would compete for a small machine's
/// cores and a slow cold boot could miss its ready timeout.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run_case(dir: &std::path::Path, name: &str) -> Run {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let cases = sockmatrix::select::load(&[PathBuf::from("cases")], Some(name)).unwrap();
    assert_eq!(cases.len(), 1);
    let said = Mutex::new(Vec::new());
    let started = now_ms();
    let results = runner::run_kernels(&[KERNEL.into()], &cases, &opts(dir), &|p| match p {
        Progress::Booting { accel, .. } => said.lock().unwrap().push(format!("booting {accel}")),
        Progress::Retrying { reason, .. } => said.lock().unwrap().push(reason),
        Progress::SavingSnapshot { modules, .. } => said
            .lock()
            .unwrap()
            .push(format!("saving a snapshot with [{}]", modules.join(","))),
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
    let fresh = results[0]
        .boot
        .as_ref()
        .and_then(|b| b.fresh.clone())
        .expect("the agent reports its clock and RNG at start");
    Run {
        placement,
        said: said.into_inner().unwrap(),
        fresh,
        host_ms: (started, now_ms()),
    }
}

fn restored(run: &Run) -> bool {
    run.said.iter().any(|s| s.contains("restored"))
}

#[test]
fn restored_runs_are_independent_and_a_damaged_snapshot_boots_cold() {
    let dir = tempfile::tempdir().unwrap();
    // The first run makes the snapshot if there is none; the next two restore it.
    run_once(dir.path());
    // A guest that kept the saved clock would now be at least this much behind.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let a = run_once(dir.path());
    let last_restore = std::time::SystemTime::now();
    let b = run_once(dir.path());
    for run in [&a, &b] {
        assert!(restored(run), "not restored: {:?}", run.said);
        assert!(
            !run.said.iter().any(|s| s.starts_with("saving")),
            "saved a new snapshot instead of restoring: {:?}",
            run.said
        );
        let (from, to) = run.host_ms;
        let guest = run.fresh.realtime_ms;
        assert!(
            guest + 1500 >= from && guest <= to + 1500,
            "the restored guest's clock ({guest}) is not the host's ({from}..{to}): not set after restore"
        );
        assert_eq!(run.fresh.random.len(), 32, "{:?}", run.fresh);
        assert_eq!(run.fresh.boot_id.len(), 36, "{:?}", run.fresh);
    }
    assert_ne!(
        a.fresh.random, b.fresh.random,
        "two restores of one snapshot drew the same random bytes: RNG not reseeded"
    );
    assert_ne!(
        a.fresh.boot_id, b.fresh.boot_id,
        "two restores of one snapshot drew the same boot id: RNG not reseeded"
    );
    assert_ne!(
        a.placement, b.placement,
        "two restores of one snapshot placed every datagram alike: shared random state"
    );

    // Damage the state the last run restored, at its end: the next run says so and
    // boots cold. Only that one (a restore stamps its .json): the folder is the
    // user's cache, shared with other runs and kernels, which would each pay a
    // cold boot for a damaged snapshot of theirs.
    let snaps = sockmatrix::qemu::snapshot::dir();
    let mut damaged = Vec::new();
    for e in std::fs::read_dir(&snaps).unwrap().flatten() {
        let meta = e.path();
        let used = std::fs::metadata(&meta).and_then(|m| m.modified());
        if meta.extension().is_some_and(|x| x == "json") && used.is_ok_and(|t| t >= last_restore) {
            let state = meta.with_extension("state");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&state)
                .unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len - 4096).unwrap();
            damaged.push(state);
        }
    }
    assert!(
        !damaged.is_empty(),
        "no snapshot restored since {last_restore:?}"
    );
    let run = run_once(dir.path());
    assert!(
        run.said.iter().any(|s| s.contains("unusable")),
        "no message about the damaged snapshot: {:?}",
        run.said
    );
}

/// The sctp case loads sctp.ko (and its dependencies): its second run restores a
/// snapshot whose image carries them, and a case without modules restores from
/// that same snapshot instead of saving another.
#[test]
fn a_plan_with_kernel_modules_restores() {
    let dir = tempfile::tempdir().unwrap();
    run_case(dir.path(), "sctp/reuseport_one_to_many");
    let with_modules = run_case(dir.path(), "sctp/reuseport_one_to_many");
    assert!(
        restored(&with_modules) && !with_modules.said.iter().any(|s| s.starts_with("saving")),
        "a plan with modules did not restore its snapshot: {:?}",
        with_modules.said
    );
    let without = run_case(dir.path(), "reuseport/migrate_on_close");
    assert!(restored(&without), "{:?}", without.said);
    assert!(
        !without.said.iter().any(|s| s.starts_with("saving")),
        "a plan without modules saved a snapshot of its own: {:?}",
        without.said
    );
}
