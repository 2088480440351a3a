//! KCIDB I/O JSON (schema v5.3, what `kcidb-io` calls LATEST) for KernelCI's common
//! results database: one checkout and one build per kernel (the Debian package, or
//! the image for a local kernel), one test per case and kernel.

use serde_json::{json, Map, Value};

use super::{accel, rfc3339, started_at, upstream_version, Report};
use crate::judge::{Explain, Verdict};
use crate::resultset::results::{CaseResult, KernelResult};

/// The schema version written.
const MAJOR: u64 = 5;
const MINOR: u64 = 3;
/// KCIDB keeps at most this many characters of a log excerpt.
const EXCERPT_MAX: usize = 16384;

/// Whether `origin` is a valid KCIDB origin (`^[a-z0-9_]+$`).
pub fn valid_origin(origin: &str) -> bool {
    !origin.is_empty()
        && origin
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The result set as one KCIDB submission from `origin`.
pub fn render(report: &Report, origin: &str) -> String {
    let mut checkouts = Vec::new();
    let mut builds = Vec::new();
    let mut tests = Vec::new();
    for k in &report.kernels {
        let ids = Ids::new(origin, k);
        checkouts.push(checkout(origin, k, &ids));
        builds.push(build(origin, k, &ids));
        for c in &k.cases {
            tests.push(test(report, origin, k, c, &ids));
        }
    }
    let data = json!({
        "version": {"major": MAJOR, "minor": MINOR},
        "checkouts": checkouts,
        "builds": builds,
        "tests": tests,
    });
    let mut text = serde_json::to_string_pretty(&data).expect("JSON values serialize");
    text.push('\n');
    text
}

/// Object ids: unique per origin. A kernel's checkout and build are named by what was
/// booted; a test also by when (a new run of the same kernel is a new test).
struct Ids {
    checkout: String,
    build: String,
    run: String,
}

impl Ids {
    fn new(origin: &str, k: &KernelResult) -> Ids {
        // A built kernel by its tree and final config: two builds under one name differ.
        let built = k
            .built
            .as_ref()
            .map(|b| format!("{}+config:{}", b.source_identity, short(&b.config_sha256)));
        let what = built
            .as_deref()
            .or(k.package_version.as_deref())
            .or(k.release.as_deref())
            .unwrap_or("unknown");
        let checkout = format!("{origin}:{}@{what}", k.kernel);
        Ids {
            build: format!("{checkout}:build"),
            run: format!("{origin}:{}@{what}:{}", k.kernel, k.finished_at),
            checkout,
        }
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// The Debian binary package a release string comes from (none for a built kernel).
fn debian_package(k: &KernelResult) -> Option<String> {
    if k.built.is_some() {
        return None;
    }
    k.package_version.as_ref()?;
    Some(format!("linux-image-{}", k.release.as_deref()?))
}

fn checkout(origin: &str, k: &KernelResult, ids: &Ids) -> Value {
    let mut o = object(json!({
        "id": ids.checkout,
        "origin": origin,
        "tree_name": if debian_package(k).is_some() { "debian" } else { "local" },
        "start_time": rfc3339(started_at(k)),
        "valid": true,
        "misc": kernel_misc(k),
    }));
    let comment = match (debian_package(k), &k.package_version, &k.built) {
        (Some(package), Some(version), _) => format!("Debian {package} {version}"),
        (_, _, Some(built)) => format!("built from source: {}", built.source_identity),
        _ => format!("kernel image {}", k.kernel),
    };
    o.insert("comment".into(), comment.into());
    if let Some(commit) = k.built.as_ref().and_then(|b| b.git_commit()) {
        o.insert("git_commit_hash".into(), commit.into());
    }
    if let Some(name) = upstream_version(k) {
        o.insert("git_commit_name".into(), format!("v{name}").into());
    }
    Value::Object(o)
}

fn build(origin: &str, k: &KernelResult, ids: &Ids) -> Value {
    let mut o = object(json!({
        "id": ids.build,
        "checkout_id": ids.checkout,
        "origin": origin,
        "architecture": "x86_64",
        // Debian or `kernels build` built it; the build record is what booted.
        "status": "PASS",
        "misc": kernel_misc(k),
    }));
    if let Some(built) = &k.built {
        o.insert("config_name".into(), built.config.clone().into());
        o.insert("compiler".into(), built.compiler.clone().into());
        o.insert("comment".into(), "sockmatrix kernels build".into());
    } else if let Some(flavour) = k.release.as_deref().and_then(flavour) {
        o.insert("config_name".into(), flavour.into());
    }
    if let Some(package) = debian_package(k) {
        o.insert("comment".into(), package.into());
    }
    Value::Object(o)
}

/// Debian's kernel flavour: what follows the version and ABI in the release string
/// (`5.10.0-46-cloud-amd64` and `6.12.117+deb13-cloud-amd64` are both `cloud-amd64`).
fn flavour(release: &str) -> Option<String> {
    let rest: Vec<&str> = release
        .split('-')
        .skip_while(|p| p.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    (!rest.is_empty()).then(|| rest.join("-"))
}

fn test(report: &Report, origin: &str, k: &KernelResult, c: &CaseResult, ids: &Ids) -> Value {
    let (status, excerpt) = match &c.verdict {
        Verdict::Pass { .. } => ("PASS", None),
        Verdict::Fail { .. } => ("FAIL", Some(explain(c))),
        Verdict::Skip { reason } => ("SKIP", Some(format!("skipped: {reason}"))),
        Verdict::Error { .. } => {
            let mut text = explain(c);
            if let Some(tail) = report.console_tail(k, 40) {
                text.push_str("\n--- console tail ---\n");
                text.push_str(&tail);
            }
            ("ERROR", Some(text))
        }
    };
    let mut misc = Map::new();
    misc.insert("case_file".into(), c.file.display().to_string().into());
    if let Verdict::Pass { checked } = c.verdict {
        misc.insert("checks".into(), checked.into());
    }
    misc.insert(
        "observations".into(),
        Value::Object(c.observations.clone().into_iter().collect()),
    );
    let mut o = object(json!({
        "id": format!("{}:{}", ids.run, c.case),
        "build_id": ids.build,
        "origin": origin,
        "path": path(&c.case),
        "status": status,
        "start_time": rfc3339(started_at(k)),
        "duration": c.elapsed_ms as f64 / 1000.0,
        "environment": {
            "comment": format!("QEMU microvm guest ({})", accel(k).unwrap_or("no guest")),
            "misc": boot_misc(k),
        },
        "misc": misc,
    }));
    if let Some(text) = excerpt {
        o.insert("log_excerpt".into(), clip(&text).into());
    }
    Value::Object(o)
}

/// `sockmatrix.<topic>.<case>`; characters KCIDB paths cannot hold become `_`.
pub fn path(case: &str) -> String {
    let parts: Vec<String> = case
        .split('/')
        .map(|p| {
            p.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .collect();
    format!("sockmatrix.{}", parts.join("."))
}

fn explain(c: &CaseResult) -> String {
    Explain {
        file: &c.file,
        verdict: &c.verdict,
    }
    .to_string()
}

/// At most EXCERPT_MAX characters, keeping the start (the mismatch) and no NUL.
fn clip(text: &str) -> String {
    text.chars()
        .filter(|&c| c != '\0')
        .take(EXCERPT_MAX)
        .collect()
}

fn kernel_misc(k: &KernelResult) -> Value {
    json!({
        "kernel_id": k.kernel,
        "release": k.release,
        "uname_version": k.uname_version,
        "package_version": k.package_version,
        "built": k.built,
        "upstream_version": upstream_version(k),
        "could_not_run": k.could_not_run,
    })
}

fn boot_misc(k: &KernelResult) -> Value {
    let mut misc = match &k.boot {
        Some(b) => json!({
            "accel": b.accel,
            "accel_reason": b.accel_reason,
            "attempts": b.attempts,
            "hung_attempts": b.hung_attempts,
            "boot_to_ready_ms": b.boot_to_ready_ms,
            "total_ms": b.total_ms,
            "exit": b.exit,
            "console_problems": b.console_problems,
            "resumes": b.resumes,
        }),
        None => json!({}),
    };
    misc["release"] = json!(k.release);
    misc["upstream_version"] = json!(upstream_version(k));
    misc
}

/// KCIDB allows no nulls: absent values are left out, at any depth.
fn object(v: Value) -> Map<String, Value> {
    match strip_nulls(v) {
        Value::Object(m) => m,
        _ => unreachable!("called with an object"),
    }
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata;

    #[test]
    fn paths_and_origins() {
        assert_eq!(
            path("reuseport/migrate_on_close"),
            "sockmatrix.reuseport.migrate_on_close"
        );
        assert_eq!(path("a/b.c d"), "sockmatrix.a.b_c_d");
        assert!(valid_origin("sockmatrix") && valid_origin("lab_2"));
        assert!(!valid_origin("My-Lab") && !valid_origin(""));
        assert_eq!(flavour("5.10.0-46-cloud-amd64").unwrap(), "cloud-amd64");
        assert_eq!(
            flavour("6.12.117+deb13-cloud-amd64").unwrap(),
            "cloud-amd64"
        );
        assert_eq!(flavour("6.1.0"), None);
    }

    #[test]
    fn one_checkout_and_build_per_kernel_one_test_per_case() {
        let v: Value = serde_json::from_str(&render(&testdata::two_kernels(), "lab")).unwrap();
        assert_eq!(v["version"], json!({"major": 5, "minor": 3}));
        assert_eq!(v["checkouts"].as_array().unwrap().len(), 2);
        assert_eq!(v["builds"].as_array().unwrap().len(), 2);
        let tests = v["tests"].as_array().unwrap();
        assert_eq!(tests.len(), 4);
        let failed = tests
            .iter()
            .find(|t| t["status"] == "FAIL")
            .expect("the 5.10 migrate failure");
        assert_eq!(failed["path"], "sockmatrix.r.migrate");
        assert!(failed["log_excerpt"]
            .as_str()
            .unwrap()
            .contains("cases/r/migrate.yaml:7: account.c.reset"));
        assert!(!render(&testdata::two_kernels(), "lab").contains("null"));
    }

    /// A kernel `kernels build` made is reported as a local tree at its commit, with
    /// its config and compiler, and never as a Debian package.
    #[test]
    fn a_built_kernel_is_a_local_checkout_at_its_commit() {
        let mut report = testdata::two_kernels();
        let k = &mut report.kernels[0];
        k.package_version = Some("6.1.192".into());
        k.release = Some("6.1.192+".into());
        k.built = Some(crate::resultset::results::BuiltFrom {
            source_identity: "git:3f33a818a6f32f180061c0a65e660ce5d0824d66".into(),
            config: "minimal".into(),
            config_sha256: "60446eb0805b480449422f31f4d84d0b2ef4bf0b5d9c4431bfb9f8f4185847c0"
                .into(),
            compiler: "gcc (Debian 12.2.0-14+deb12u1) 12.2.0".into(),
        });
        let v: Value = serde_json::from_str(&render(&report, "lab")).unwrap();
        let checkout = &v["checkouts"][0];
        assert_eq!(checkout["tree_name"], "local");
        assert_eq!(
            checkout["git_commit_hash"],
            "3f33a818a6f32f180061c0a65e660ce5d0824d66"
        );
        assert!(checkout["id"]
            .as_str()
            .unwrap()
            .contains("+config:60446eb0805b"));
        assert!(!checkout["comment"].as_str().unwrap().contains("Debian"));
        let build = &v["builds"][0];
        assert_eq!(build["config_name"], "minimal");
        assert_eq!(build["compiler"], "gcc (Debian 12.2.0-14+deb12u1) 12.2.0");
        assert!(!build["comment"].as_str().unwrap().contains("linux-image"));
        // A dirty tree has no commit to name.
        report.kernels[0].built.as_mut().unwrap().source_identity =
            "git:3f33a818a6f32f180061c0a65e660ce5d0824d66+dirty:0123456789abcdef".into();
        let v: Value = serde_json::from_str(&render(&report, "lab")).unwrap();
        assert!(v["checkouts"][0].get("git_commit_hash").is_none());
    }
}
