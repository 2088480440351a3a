//! The baseline gate on real result sets: the committed baseline against itself
//! passes; the same with one observation or verdict changed fails with exit 1.

use std::path::Path;
use std::process::Command;

fn copy_set(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let kernel = entry.unwrap().path();
        let file = kernel.join("result.json");
        if file.is_file() {
            let dest = to.join(kernel.file_name().unwrap());
            std::fs::create_dir_all(&dest).unwrap();
            std::fs::copy(&file, dest.join("result.json")).unwrap();
        }
    }
}

fn gate(baseline: &Path, current: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .arg("diff")
        .arg("--baseline")
        .arg(baseline)
        .arg(current)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Rewrites one kernel's result file with `change` applied to its JSON.
fn tamper(set: &Path, kernel: &str, change: impl FnOnce(&mut serde_json::Value)) {
    let path = set.join(kernel).join("result.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    change(&mut value);
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

#[test]
fn the_gate_fails_on_a_changed_baseline_and_passes_on_an_unchanged_one() {
    let committed = Path::new("results/baseline");
    assert!(
        committed.join("6.1/result.json").is_file(),
        "results/baseline must hold the committed baseline"
    );
    let dir = tempfile::tempdir().unwrap();
    let (baseline, current) = (dir.path().join("baseline"), dir.path().join("current"));
    copy_set(committed, &baseline);
    copy_set(committed, &current);

    let (code, text) = gate(&baseline, &current);
    assert_eq!(
        code, 0,
        "an unchanged result set must pass the gate:\n{text}"
    );

    // A behaviour change: the baseline said EADDRINUSE, the run says ok.
    tamper(&baseline, "6.1", |v| {
        let case = v["cases"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["case"] == "reuseport/missing_option_on_one_socket")
            .unwrap();
        case["observations"]["bind.plain"] = serde_json::json!("ok");
    });
    let (code, text) = gate(&baseline, &current);
    assert_eq!(code, 1, "a changed observation must fail the gate:\n{text}");
    assert!(
        text.contains("bind.plain"),
        "the gate names what changed:\n{text}"
    );

    // A volatile observation (hash placement) changing is not a regression.
    copy_set(committed, &baseline);
    tamper(&baseline, "6.1", |v| {
        let case = v["cases"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["case"] == "reuseport/distribution_tcp")
            .unwrap();
        case["observations"]["accept.l1"] = serde_json::json!(1);
    });
    let (code, text) = gate(&baseline, &current);
    assert_eq!(
        code, 0,
        "a volatile observation is not a regression:\n{text}"
    );
}
