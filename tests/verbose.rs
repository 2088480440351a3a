//! `run -v` on the host kernel: every index of a repeated step comes back beside the
//! aggregate; without `-v` only the aggregate (real sockets, root, as CI runs).

use std::process::Command;

const CASE: &str = "summary: three sockets bind one port, the first wins
steps:
  - repeat: 3
    steps:
      - socket: \"l[i]\"
      - bind: \"l[i]\"
        addr: 127.0.0.1
        port: 4243
expect:
  - obs: bind.l.ok
    eq: 1
";

fn run(verbose: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("three.yaml");
    std::fs::write(&case, CASE).unwrap();
    let results = dir.path().join("results");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockmatrix"));
    cmd.args(["run", "--host", "--results"])
        .arg(&results)
        .arg(&case);
    if verbose {
        cmd.arg("-v");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn verbose_shows_every_index_of_a_repeated_step() {
    let every = run(true);
    assert!(every.contains("bind.l.ok=1"), "{every}");
    assert!(every.contains("bind.l[0]=ok"), "{every}");
    assert!(every.contains("bind.l[1]=EADDRINUSE"), "{every}");
    assert!(every.contains("bind.l[2]=EADDRINUSE"), "{every}");

    let aggregated = run(false);
    assert!(aggregated.contains("bind.l.ok=1"), "{aggregated}");
    assert!(!aggregated.contains("bind.l[1]"), "{aggregated}");
}
