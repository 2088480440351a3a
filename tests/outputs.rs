//! The machine-readable outputs, each produced from real results and read by the
//! validator its consumers use: KCIDB JSON by `kcidb-io`'s schema, KTAP by the
//! kernel's own kunit_parser.py, JUnit by `junitparser`, the `run --format github`
//! annotations by their documented shape. Each validator must also reject a broken
//! file, so a test that cannot fail does not pass for nothing. The validators come
//! from `bash ci/setup.sh` (tests/common/mod.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::text;
use sockmatrix::output::Tally;

fn sockmatrix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// `sockmatrix report SET --FLAG FILE`, returning the file's text.
fn report(set: &Path, flag: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out");
    let mut args = vec![
        "report",
        set.to_str().unwrap(),
        flag,
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = sockmatrix(&args);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::read_to_string(&file).unwrap()
}

fn tally(set: &Path) -> (Tally, usize) {
    let kernels = sockmatrix::resultset::results::load_set(set).unwrap();
    let t = Tally::of(
        kernels
            .iter()
            .flat_map(|k| k.cases.iter().map(|c| &c.verdict)),
    );
    (t, kernels.len())
}

// ---- a real run of 6.1 with one case that passes and one that fails on purpose ----

/// A case library: a passing case and the same steps with an expectation that does
/// not hold (line 33: `bind.lo` is EADDRINUSE, the case says ok).
fn write_cases(dir: &Path) -> PathBuf {
    let cases = dir.join("cases");
    std::fs::create_dir_all(cases.join("bind")).unwrap();
    let good =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("cases/bind/wildcard_vs_specific_tcp.yaml");
    let text = std::fs::read_to_string(&good).unwrap();
    std::fs::write(cases.join("bind/wildcard_vs_specific_tcp.yaml"), &text).unwrap();
    let wrong = text.replace(
        "  - obs: bind.lo\n    eq: EADDRINUSE",
        "  - obs: bind.lo\n    eq: ok",
    );
    assert_ne!(
        wrong, text,
        "the case's expectation moved; update this test"
    );
    std::fs::write(cases.join("bind/wrong_on_purpose.yaml"), wrong).unwrap();
    cases
}

struct RealRun {
    _dir: tempfile::TempDir,
    cases: PathBuf,
    results: PathBuf,
    /// `run --format ktap`'s standard output.
    ktap: String,
}

/// One boot of 6.1 (TCG) shared by the tests of this file.
fn real_run() -> &'static RealRun {
    static RUN: OnceLock<RealRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let cases = write_cases(dir.path());
        let results = dir.path().join("results");
        let out = sockmatrix(&[
            "run",
            "--kernel",
            "6.1",
            "--accel",
            "tcg",
            "--format",
            "ktap",
            "--results",
            results.to_str().unwrap(),
            cases.to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "one expectation fails: {}",
            text(&out)
        );
        RealRun {
            ktap: String::from_utf8(out.stdout).unwrap(),
            _dir: dir,
            cases,
            results,
        }
    })
}

// ---- KCIDB ----

const KCIDB_VALIDATE: &str = r#"
import json, sys
import kcidb_io
data = json.load(sys.stdin)
kcidb_io.schema.LATEST.validate(data)
print(kcidb_io.schema.LATEST.major, kcidb_io.schema.LATEST.minor, len(data["checkouts"]), len(data["builds"]), len(data["tests"]))
"#;

fn kcidb_validate(json: &str) -> Output {
    common::python_script(KCIDB_VALIDATE, &[], json.as_bytes())
}

#[test]
fn kcidb_of_the_baseline_passes_the_schema_and_a_broken_one_does_not() {
    let set = common::baseline();
    let json = report(&set, "--kcidb", &["--origin", "sockmatrix_ci"]);
    let out = kcidb_validate(&json);
    assert!(out.status.success(), "{}", text(&out));
    let (t, kernels) = tally(&set);
    let tests = t.passed + t.failed + t.skipped + t.errors;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("5 3 {kernels} {kernels} {tests}"),
        "schema 5.3 (kcidb-io's LATEST), a checkout and a build per kernel, a test per case"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let test = &v["tests"][0];
    assert!(
        test["path"].as_str().unwrap().starts_with("sockmatrix."),
        "{test}"
    );
    assert_eq!(v["checkouts"][0]["origin"], "sockmatrix_ci");
    let skipped: Vec<&serde_json::Value> = v["tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "SKIP")
        .collect();
    assert_eq!(skipped.len(), t.skipped);
    for s in skipped {
        assert!(
            s["log_excerpt"].as_str().unwrap().starts_with("skipped: "),
            "{s}"
        );
    }

    // Broken on purpose: an unknown status, an origin with capitals, a missing id.
    for (what, broken) in [
        (
            "status",
            json.replacen("\"status\": \"PASS\"", "\"status\": \"GREEN\"", 1),
        ),
        (
            "origin",
            json.replacen(
                "\"origin\": \"sockmatrix_ci\"",
                "\"origin\": \"Sockmatrix\"",
                1,
            ),
        ),
        (
            "no build id",
            json.replacen("\"build_id\":", "\"build_ref\":", 1),
        ),
    ] {
        assert_ne!(broken, json, "{what}: nothing was broken");
        let out = kcidb_validate(&broken);
        assert!(
            !out.status.success(),
            "{what}: kcidb-io accepted a broken file: {}",
            text(&out)
        );
    }
}

#[test]
fn kcidb_of_a_real_failure_carries_the_mismatch() {
    let run = real_run();
    let json = report(
        &run.results,
        "--kcidb",
        &["--cases", run.cases.to_str().unwrap()],
    );
    let out = kcidb_validate(&json);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let failed = v["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["path"] == "sockmatrix.bind.wrong_on_purpose")
        .expect("the failing case");
    assert_eq!(failed["status"], "FAIL");
    let excerpt = failed["log_excerpt"].as_str().unwrap();
    assert!(
        excerpt.contains("bind.lo") && excerpt.contains("+ observed: EADDRINUSE"),
        "{excerpt}"
    );
    assert!(v["checkouts"][0]["misc"]["upstream_version"]
        .as_str()
        .unwrap()
        .starts_with("6.1."));
    assert!(
        v["tests"][0]["environment"]["misc"]["accel"].is_string(),
        "{v}"
    );
    let bad = report(&run.results, "--kcidb", &[])
        .replace("\"duration\": ", "\"duration\": \"x\", \"d\": ");
    assert!(!kcidb_validate(&bad).status.success());
}

#[test]
fn report_refuses_an_origin_kcidb_would_refuse() {
    let out = sockmatrix(&[
        "report",
        "results/baseline",
        "--kcidb",
        "/dev/null",
        "--origin",
        "My Lab",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

// ---- KTAP ----

/// Parses KTAP with the kernel's tools/testing/kunit/kunit_parser.py; prints
/// `errors passed failed skipped crashed status` and the kernels' subtest names.
const KTAP_PARSE: &str = r#"
import sys
sys.path.insert(0, sys.argv[1])
import kunit_parser
test = kunit_parser.parse_run_tests(sys.stdin.read().splitlines(), *([kunit_parser.stdout] if 'printer' in kunit_parser.parse_run_tests.__code__.co_varnames else []))
c = test.counts
print("RESULT", c.errors, c.passed, c.failed, c.skipped, c.crashed, test.status.name)
print("KERNELS", " ".join(t.name for t in test.subtests))
"#;

struct Parsed {
    errors: usize,
    passed: usize,
    failed: usize,
    skipped: usize,
    kernels: Vec<String>,
    all: String,
}

fn kunit_parse(ktap: &str) -> Parsed {
    let kunit = common::kunit_dir();
    let out = common::python_script(KTAP_PARSE, &[kunit.to_str().unwrap()], ktap.as_bytes());
    let all = text(&out);
    assert!(out.status.success(), "kunit_parser.py crashed: {all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |tag: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap_or_else(|| panic!("no {tag} line: {all}"))
            .trim()
            .to_string()
    };
    let n: Vec<usize> = line("RESULT ")
        .split(' ')
        .take(5)
        .map(|x| x.parse().unwrap())
        .collect();
    Parsed {
        errors: n[0] + n[4],
        passed: n[1],
        failed: n[2],
        skipped: n[3],
        kernels: line("KERNELS").split(' ').map(String::from).collect(),
        all,
    }
}

#[test]
fn ktap_of_the_baseline_parses_with_the_kernels_parser() {
    let set = common::baseline();
    let ktap = report(&set, "--ktap", &[]);
    let parsed = kunit_parse(&ktap);
    let (t, _) = tally(&set);
    assert_eq!(parsed.errors, 0, "{}", parsed.all);
    assert_eq!(
        (parsed.passed, parsed.failed, parsed.skipped),
        (t.passed, t.failed + t.errors, t.skipped),
        "{}",
        parsed.all
    );
    let ids: Vec<String> = sockmatrix::resultset::results::load_set(&set)
        .unwrap()
        .iter()
        .map(|k| k.kernel.clone())
        .collect();
    let mut sorted = parsed.kernels.clone();
    sorted.sort();
    let mut ids_sorted = ids.clone();
    ids_sorted.sort();
    assert_eq!(sorted, ids_sorted, "one subtest per kernel");
    assert!(ktap.contains(" # SKIP "), "the baseline's skip says why");

    // Broken on purpose: a result line dropped, a test number skipped.
    let lines: Vec<&str> = ktap.lines().collect();
    let at = lines.iter().position(|l| l.starts_with("  ok 2 ")).unwrap();
    let mut dropped = lines.clone();
    dropped.remove(at);
    let renumbered = ktap.replacen("  ok 2 ", "  ok 3 ", 1);
    for (what, broken) in [("dropped", dropped.join("\n")), ("renumbered", renumbered)] {
        let p = kunit_parse(&broken);
        assert!(p.errors > 0, "{what}: kunit_parser accepted it: {}", p.all);
    }
}

#[test]
fn run_format_ktap_of_a_real_failure_parses_and_says_the_mismatch() {
    let run = real_run();
    let parsed = kunit_parse(&run.ktap);
    assert_eq!(parsed.errors, 0, "{}\n{}", run.ktap, parsed.all);
    assert_eq!(
        (parsed.passed, parsed.failed, parsed.skipped),
        (1, 1, 0),
        "{}",
        parsed.all
    );
    assert_eq!(parsed.kernels, ["6.1"]);
    assert!(
        run.ktap.contains("  # bind/wrong_on_purpose: ")
            && run
                .ktap
                .contains("  #   - expected: ok\n  #   + observed: EADDRINUSE\n")
            && run.ktap.contains("  not ok 2 bind/wrong_on_purpose\n"),
        "{}",
        run.ktap
    );
    // The same result set through `report --ktap` says the same.
    let again = report(
        &run.results,
        "--ktap",
        &["--cases", run.cases.to_str().unwrap()],
    );
    assert_eq!(again, run.ktap);
}

// ---- JUnit ----

/// Reads JUnit XML with junitparser; prints `tests failures errors skipped` and the
/// first failure's message and text.
const JUNIT_READ: &str = r#"
import sys
from junitparser import JUnitXml, Failure, Error, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
tests = failures = errors = skipped = 0
first = None
for suite in xml:
    for case in suite:
        tests += 1
        for r in case.result:
            if isinstance(r, Failure):
                failures += 1
                first = first or (r.message, r.text)
            elif isinstance(r, Error):
                errors += 1
            elif isinstance(r, Skipped):
                skipped += 1
        assert case.time is not None and case.time >= 0, case.name
print("COUNTS", tests, failures, errors, skipped)
if first:
    print("MESSAGE", first[0])
    print("TEXT", first[1].replace("\n", "|"))
print("OUT", [c.system_out for s in xml for c in s][0].replace("\n", "|")[:200])
"#;

fn junit_read(xml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("junit.xml");
    std::fs::write(&file, xml).unwrap();
    common::python_script(JUNIT_READ, &[file.to_str().unwrap()], b"")
}

#[test]
fn junit_of_the_baseline_and_a_real_failure_reads_with_junitparser() {
    let set = common::baseline();
    let xml = report(&set, "--junit", &[]);
    let out = junit_read(&xml);
    assert!(out.status.success(), "{}", text(&out));
    let (t, _) = tally(&set);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "COUNTS {} {} {} {}",
            t.passed + t.failed + t.skipped + t.errors,
            t.failed,
            t.errors,
            t.skipped
        )),
        "{}",
        text(&out)
    );

    let run = real_run();
    let xml = report(
        &run.results,
        "--junit",
        &["--cases", run.cases.to_str().unwrap()],
    );
    let out = junit_read(&xml);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout.contains("COUNTS 2 1 0 0"), "{}", text(&out));
    assert!(
        stdout.contains("MESSAGE bind.lo: expected ok, observed EADDRINUSE"),
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains("wrong_on_purpose.yaml:"),
        "the failure body names the line: {}",
        text(&out)
    );
    assert!(
        stdout.contains("OUT "),
        "observations in system-out: {}",
        text(&out)
    );
    assert!(xml.contains("timestamp=\"20"), "timestamps: {xml}");
    assert!(
        xml.contains("<system-out>--- console tail (6.1):"),
        "the kernel's console in the suite's system-out: {xml}"
    );

    // Broken on purpose: cut in the middle, the reader refuses it.
    let cut = &xml[..xml.len() / 2];
    assert!(
        !junit_read(cut).status.success(),
        "junitparser read half a file"
    );
}

// ---- GitHub annotations ----

#[test]
fn run_format_github_annotates_the_failed_expectation_on_its_line() {
    let run = real_run();
    let results = tempfile::tempdir().unwrap();
    let out = sockmatrix(&[
        "run",
        "--kernel",
        "6.1",
        "--accel",
        "tcg",
        "--format",
        "github",
        "--results",
        results.path().join("results").to_str().unwrap(),
        run.cases
            .join("bind/wrong_on_purpose.yaml")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let file = run.cases.join("bind/wrong_on_purpose.yaml");
    let line = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .position(|l| l == "  - obs: bind.lo")
        .unwrap()
        + 1;
    // The shape GitHub's runner parses: ::error file=F,line=N,title=T::message
    let expected = format!(
        "::error file={},line={line},title=bind/wrong_on_purpose failed on kernel 6.1::bind.lo: expected ok, observed EADDRINUSE\n",
        file.display()
    );
    assert!(
        stdout.contains(&expected),
        "want {expected}\n{}",
        text(&out)
    );
    assert_eq!(stdout.matches("::error ").count(), 1, "{}", text(&out));
}

// ---- a real guest death: the interrupted case is a rerun in JUnit ----

/// Pids of the QEMU processes `parent` started.
fn qemus_of(parent: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let (Ok(cmdline), Ok(status)) = (
            std::fs::read(entry.path().join("cmdline")),
            std::fs::read_to_string(entry.path().join("status")),
        ) else {
            continue;
        };
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse::<u32>().ok());
        if String::from_utf8_lossy(&cmdline).contains("qemu-system") && ppid == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

/// A case that holds the guest for a few seconds, so that a kill lands inside it.
const SLOW_CASE: &str = "summary: Binds, then waits long enough to be interrupted.
steps:
  - socket: a
  - bind: a
    addr: 127.0.0.1
  - sleep: 5s
expect:
  - obs: bind.a
    eq: ok
";

/// QEMU is killed once, a second after the agent is up, inside a case that sleeps:
/// the guest dies mid-case, the case runs again in a new boot and passes. JUnit
/// shows the death as a flakyError of that case; junitparser still reads the file.
#[test]
fn junit_shows_a_case_a_dead_guest_interrupted_as_a_rerun() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases");
    std::fs::create_dir_all(cases.join("slow")).unwrap();
    std::fs::write(cases.join("slow/sleeps.yaml"), SLOW_CASE).unwrap();
    let results = dir.path().join("results");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--accel", "tcg", "--kernel", "6.1", "--results"])
        .arg(&results)
        .arg(&cases)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut killed = false;
    for line in stderr.lines().map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if !killed && line.contains("agent up") {
            std::thread::sleep(Duration::from_millis(1000));
            let until = Instant::now() + Duration::from_secs(3);
            while !killed && Instant::now() < until {
                for pid in qemus_of(child.id()) {
                    killed |= nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    )
                    .is_ok();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "no QEMU was killed:\n{seen}");
    assert_eq!(
        status.code(),
        Some(0),
        "the case passes in the new boot:\n{seen}"
    );
    let set = sockmatrix::resultset::results::load_set(&results).unwrap();
    let boot = set[0].boot.as_ref().expect("boot facts");
    assert_eq!(boot.resumes.len(), 1, "{boot:?}\n{seen}");
    assert!(
        boot.resumes[0].contains(" while running slow/sleeps"),
        "the guest died during the case: {:?}",
        boot.resumes
    );

    let xml = report(&results, "--junit", &["--cases", cases.to_str().unwrap()]);
    assert!(
        xml.contains("<flakyError message=\"") && xml.contains("type=\"guest_died\""),
        "{xml}"
    );
    let out = junit_read(&xml);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("COUNTS 1 0 0 0"),
        "{}",
        text(&out)
    );
}
