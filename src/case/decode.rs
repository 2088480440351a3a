//! Turns a parsed case file into a `Case`, checking names, references between steps
//! and expectations, and collecting every error of the file at once.

use std::path::Path;

use super::fields::{self, Diags, Fields};
use super::model::*;
use super::scope::Scope;
use super::version::VersionReq;
use crate::errno;
use crate::yaml::{Kind, Node};

mod repeat;

const DEFAULT_TIMEOUT_MS: u64 = 20_000;
/// A case that needs longer than this is a benchmark, not a behaviour check.
const MAX_TIMEOUT_MS: u64 = 600_000;

pub fn decode_case(id: &str, file: &Path, root: &Node, diags: &mut Diags) -> Option<Case> {
    let mut top = Fields::of(root, "a case file", diags)?;
    let summary = top
        .require("summary", diags)
        .and_then(|n| fields::string(n, "summary", diags))
        .unwrap_or_default();
    let tags = top
        .get("tags")
        .map(|n| fields::names(n, "a tag", diags))
        .unwrap_or_default();
    let references = top
        .get("references")
        .map(|n| decode_references(n, diags))
        .unwrap_or_default();
    let requires = top
        .get("requires")
        .map(|n| decode_requires(n, diags))
        .unwrap_or_default();
    let sysctls = top
        .get("sysctls")
        .map(|n| decode_sysctls(n, diags))
        .unwrap_or_default();
    let timeout_ms = top
        .get("timeout")
        .and_then(|n| {
            let ms = fields::duration_ms(n, "timeout", diags)?;
            if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
                diags.error(
                    n.pos,
                    format!(
                        "timeout is the case's time budget: more than 0 and at most {}s",
                        MAX_TIMEOUT_MS / 1000
                    ),
                );
                return None;
            }
            Some(ms)
        })
        .unwrap_or(DEFAULT_TIMEOUT_MS);

    let mut scope = Scope::default();
    for sysctl in &sysctls {
        scope.observations.insert(format!("sysctl.{}", sysctl.name));
    }
    let steps = match top.require("steps", diags) {
        Some(node) => fields::list(node, "steps", diags)
            .iter()
            .filter_map(|n| decode_step(n, &mut scope, diags))
            .collect(),
        None => Vec::new(),
    };
    for (group, line) in &scope.background {
        diags.error(
            crate::yaml::Pos {
                line: *line,
                col: 1,
            },
            format!(
                "background client group `{group}` is never waited for (add `- wait: {group}`)"
            ),
        );
    }
    let expect = top
        .get("expect")
        .map(|n| decode_expectations(n, &scope, diags))
        .unwrap_or_default();
    let detects = top
        .get("detects")
        .and_then(|n| decode_fix(n, &scope, diags));
    let volatile = top
        .get("volatile")
        .map(|n| decode_volatile(n, &scope, diags))
        .unwrap_or_default();
    top.finish(diags);

    let plan = Plan {
        id: id.to_string(),
        requires,
        sysctls,
        steps,
        timeout_ms,
    };
    Some(Case {
        id: id.to_string(),
        file: file.to_path_buf(),
        summary,
        tags,
        references,
        detects,
        volatile,
        expect,
        plan,
    })
}

fn decode_references(node: &Node, diags: &mut Diags) -> Vec<Reference> {
    let mut out = Vec::new();
    for item in fields::list(node, "references", diags) {
        let Some(mut f) = Fields::of(item, "a reference", diags) else {
            continue;
        };
        let reference = if let Some(title) = f.get("commit") {
            let title = fields::string(title, "commit", diags);
            let version = f
                .require("version", diags)
                .and_then(|n| fields::string(n, "version", diags));
            title
                .zip(version)
                .map(|(title, version)| Reference::Commit { title, version })
        } else if let Some(path) = f.get("selftest") {
            fields::string(path, "selftest", diags).map(|path| Reference::Selftest { path })
        } else if let Some(url) = f.get("article") {
            fields::string(url, "article", diags).map(|url| Reference::Article { url })
        } else {
            diags.error(
                f.pos(),
                "a reference needs `commit` (with `version`), `selftest` or `article`",
            );
            None
        };
        f.get("note");
        f.finish(diags);
        out.extend(reference);
    }
    out
}

/// `detects: {commit, version, obs, <matcher>}`: the fix and the observation showing it.
fn decode_fix(node: &Node, scope: &Scope, diags: &mut Diags) -> Option<Fix> {
    let mut f = Fields::of(node, "`detects`", diags)?;
    let commit = f
        .require("commit", diags)
        .and_then(|n| fields::string(n, "commit", diags));
    let version = f
        .require("version", diags)
        .and_then(|n| fields::string(n, "version", diags));
    let obs = f.require("obs", diags).and_then(|n| {
        let obs = fields::string(n, "obs", diags)?;
        check_observation(&obs, n, scope, diags).then_some(obs)
    });
    let matcher = decode_matcher(&mut f, scope, diags);
    let line = f.pos().line;
    f.finish(diags);
    let check = Expectation {
        line,
        obs: obs?,
        kernel: None,
        matcher: matcher?,
        why: None,
    };
    Some(Fix {
        commit: commit?,
        version: version?,
        check,
    })
}

/// A module is named as `modprobe` names it: letters, digits, `_` and `-` (read as
/// `_`, as the kernel does), never a path or a file name.
fn module_name(node: &Node, diags: &mut Diags) -> Option<String> {
    let name = fields::string(node, "module", diags)?;
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !plain {
        diags.error(
            node.pos,
            format!(
                "module {}: expected a plain module name such as sctp (letters, digits, _ and -), not a path or file",
                fields::quoted(&name)
            ),
        );
        return None;
    }
    Some(name.replace('-', "_"))
}

/// `{memory: 1G}`: MiB as a number or with `M`/`G`, within what `--memory` accepts.
fn memory_mb(node: &Node, diags: &mut Diags) -> Option<u32> {
    let text = node.scalar().unwrap_or_default().trim();
    let (digits, unit) = match text.strip_suffix(['G', 'g']) {
        Some(d) => (d, 1024),
        None => (text.strip_suffix(['M', 'm']).unwrap_or(text), 1),
    };
    let mb = digits.trim().parse::<u64>().ok().map(|n| n * unit);
    let range = GUEST_MEMORY_MB;
    match mb {
        Some(mb) if mb >= u64::from(*range.start()) && mb <= u64::from(*range.end()) => {
            Some(mb as u32)
        }
        _ => {
            diags.error(
                node.pos,
                format!(
                    "memory {}: a size from {}M to {}G, such as `1G` or `768M`",
                    fields::quoted(text),
                    range.start(),
                    range.end() / 1024
                ),
            );
            None
        }
    }
}

fn decode_requires(node: &Node, diags: &mut Diags) -> Vec<Requirement> {
    let mut out = Vec::new();
    for item in fields::list(node, "requires", diags) {
        let req = match &item.kind {
            Kind::Scalar { text, .. } => match text.as_str() {
                "root" => Some(Requirement::Root),
                "ipv6" => Some(Requirement::Ipv6),
                "bpf" => Some(Requirement::Bpf),
                other => {
                    diags.error(item.pos, format!("unknown requirement {}; expected root, ipv6, bpf, or a mapping {{sysctl: NAME}}, {{kernel: \">= X.Y\"}}, {{cpus: N}}, {{files: N}}, {{memory: SIZE}}, {{module: NAME}}", fields::quoted(other)));
                    None
                }
            },
            _ => {
                let Some(mut f) = Fields::of(item, "a requirement", diags) else {
                    continue;
                };
                let req = if let Some(n) = f.get("sysctl") {
                    fields::string(n, "sysctl", diags).map(Requirement::Sysctl)
                } else if let Some(n) = f.get("kernel") {
                    version_req(n, diags).map(Requirement::Kernel)
                } else if let Some(n) = f.get("cpus") {
                    fields::uint(n, "cpus", 1024, diags).map(|c| Requirement::Cpus(c as u32))
                } else if let Some(n) = f.get("files") {
                    fields::uint(n, "files", 1 << 20, diags).map(Requirement::Files)
                } else if let Some(n) = f.get("memory") {
                    memory_mb(n, diags).map(Requirement::Memory)
                } else if let Some(n) = f.get("module") {
                    module_name(n, diags).map(Requirement::Module)
                } else {
                    diags.error(
                        f.pos(),
                        "a requirement mapping needs `sysctl`, `kernel`, `cpus`, `files`, `memory` or `module`",
                    );
                    None
                };
                f.finish(diags);
                req
            }
        };
        out.extend(req);
    }
    out
}

fn decode_sysctls(node: &Node, diags: &mut Diags) -> Vec<Sysctl> {
    let Kind::Map(entries) = &node.kind else {
        diags.error(node.pos, "sysctls must be a mapping of name: value");
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|(k, v)| {
            let name = k.scalar()?.to_string();
            if name.split('.').count() < 2 || name.contains('/') {
                diags.error(
                    k.pos,
                    format!(
                        "sysctl {} must be a dotted name like net.ipv4.tcp_migrate_req",
                        fields::quoted(&name)
                    ),
                );
                return None;
            }
            if let Err(why) = super::sysctls::writable(&name) {
                diags.error(k.pos, why);
                return None;
            }
            let value = fields::string(v, "a sysctl value", diags)?;
            Some(Sysctl { name, value })
        })
        .collect()
}

fn version_req(node: &Node, diags: &mut Diags) -> Option<VersionReq> {
    let text = fields::string(node, "kernel", diags)?;
    match text.parse() {
        Ok(req) => Some(req),
        Err(why) => {
            diags.error(node.pos, format!("bad kernel version condition: {why}"));
            None
        }
    }
}

fn decode_step(node: &Node, scope: &mut Scope, diags: &mut Diags) -> Option<Step> {
    let mut f = Fields::of(node, "a step", diags)?;
    // The first key is the action; later keys are its fields (some fields share a
    // verb's name, like `listen:` in bind_pairs or `wait:` in accept).
    let verbs = Action::VERBS;
    let verb = match f.first_key() {
        Some(key) if verbs.contains(&key) => verbs.iter().copied().find(|v| *v == key).unwrap(),
        Some(key) => {
            diags.error(
                f.pos(),
                format!(
                    "a step starts with its action; {} is not one of: {}",
                    fields::quoted(key),
                    verbs.join(", ")
                ),
            );
            return None;
        }
        None => {
            diags.error(
                f.pos(),
                format!("a step needs an action, one of: {}", verbs.join(", ")),
            );
            return None;
        }
    };
    let subject = f.get(verb).expect("the verb key is present");
    let custom_id = f.get("id").and_then(|n| fields::name(n, "id", diags));
    // Generic to every step: how long it took, as `time.<key>`.
    let time = f
        .get("time")
        .and_then(|n| fields::boolean(n, "time", diags))
        .unwrap_or(false);
    // Repetition is generic too: a `repeat` block, or a step over `l[*]`/`l[a..b]`.
    let ranged = repeat::over_range(node, verb, subject, scope, diags);
    let is_range = ranged.is_some();
    let action = if let Some(action) = ranged {
        // The step's other fields went into the block's template.
        f.take_all();
        action
    } else if verb == "repeat" {
        repeat::block(subject, &mut f, scope, diags)
    } else {
        Action::decode(verb, subject, &mut f, scope, diags).expect("the verb is registered")
    };
    let pos = f.pos();
    f.finish(diags);
    let action = action?;
    let key = custom_id.unwrap_or_else(|| match subject.scalar() {
        // `listen: l[*]`: the block's key names the sockets without an index.
        Some(s) if is_range => format!("{verb}.{}", s.split('[').next().unwrap_or(s)),
        Some(s) if Action::keyed_by_subject(verb) => format!("{verb}.{s}"),
        _ => verb.to_string(),
    });
    let mut produced = action.observations(&key, scope);
    if time {
        produced.push(format!("time.{key}"));
    }
    if let Some(dup) = produced.iter().find(|k| scope.observations.contains(*k)) {
        diags.error(
            pos,
            format!("observation `{dup}` is produced twice; give this step an `id`"),
        );
    }
    scope.observations.extend(produced);
    action.declare(node.pos.line, scope);
    Some(Step {
        line: node.pos.line,
        key,
        time,
        action,
    })
}

fn decode_expectations(node: &Node, scope: &Scope, diags: &mut Diags) -> Vec<Expectation> {
    let mut out = Vec::new();
    for item in fields::list(node, "expect", diags) {
        let Some(mut f) = Fields::of(item, "an expectation", diags) else {
            continue;
        };
        let obs = f.require("obs", diags).and_then(|n| {
            let obs = fields::string(n, "obs", diags)?;
            check_observation(&obs, n, scope, diags).then_some(obs)
        });
        let kernel = f.get("kernel").and_then(|n| version_req(n, diags));
        let why = f.get("why").and_then(|n| fields::string(n, "why", diags));
        let matcher = decode_matcher(&mut f, scope, diags);
        f.finish(diags);
        if let (Some(obs), Some(matcher)) = (obs, matcher) {
            out.push(Expectation {
                line: item.pos.line,
                obs,
                kernel,
                matcher,
                why,
            });
        }
    }
    out
}

/// Prefixes of observation keys; each must cover at least one key a step produces.
fn decode_volatile(node: &Node, scope: &Scope, diags: &mut Diags) -> Vec<String> {
    fields::list(node, "volatile", diags)
        .iter()
        .filter_map(|n| {
            let prefix = fields::string(n, "a volatile observation prefix", diags)?;
            if !scope.observations.iter().any(|k| k.starts_with(&prefix)) {
                diags.error(n.pos, format!("no observation starts with `{prefix}`"));
                return None;
            }
            Some(prefix)
        })
        .collect()
}

fn check_observation(obs: &str, node: &Node, scope: &Scope, diags: &mut Diags) -> bool {
    if scope.observations.contains(obs) || repeat::is_errno_count(obs, scope) {
        return true;
    }
    let stem = obs.split('.').next().unwrap_or_default();
    let near: Vec<&str> = scope
        .observations
        .iter()
        .filter(|k| k.starts_with(stem))
        .map(String::as_str)
        .take(12)
        .collect();
    let hint = if near.is_empty() {
        String::new()
    } else {
        format!("; steps produce: {}", near.join(", "))
    };
    diags.error(
        node.pos,
        format!("no step produces observation `{obs}`{hint}"),
    );
    false
}

fn decode_matcher(f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Matcher> {
    let eq = f.get("eq");
    let one_of = f.get("one_of");
    let min = f.get("min");
    let max = f.get("max");
    let same_as = f.get("same_as");
    let chosen = [
        eq.is_some(),
        one_of.is_some(),
        min.is_some() || max.is_some(),
        same_as.is_some(),
    ]
    .iter()
    .filter(|c| **c)
    .count();
    if chosen != 1 {
        diags.error(
            f.pos(),
            "an expectation needs exactly one of `eq`, `one_of`, `min`/`max`, `same_as`",
        );
        return None;
    }
    if let Some(n) = eq {
        return expected_value(n, diags).map(Matcher::Eq);
    }
    if let Some(n) = one_of {
        let values: Vec<_> = fields::list(n, "one_of", diags)
            .iter()
            .filter_map(|v| expected_value(v, diags))
            .collect();
        return Some(Matcher::OneOf(values));
    }
    if let Some(n) = same_as {
        let other = fields::string(n, "same_as", diags)?;
        return check_observation(&other, n, scope, diags).then_some(Matcher::SameAs(other));
    }
    // A duration (`max: 2s`) bounds a timing, which is in microseconds.
    let number = |n: &Node, diags: &mut Diags| match n.scalar().and_then(|s| s.parse::<f64>().ok())
    {
        Some(v) => Some(v),
        None if n.scalar().is_some_and(|s| s.ends_with('s')) => {
            fields::duration_us(n, "a time bound", diags).map(|us| us as f64)
        }
        None => {
            diags.error(
                n.pos,
                "min and max must be numbers (or durations, for `time.*`)",
            );
            None
        }
    };
    Some(Matcher::Range {
        min: min.and_then(|n| number(n, diags)),
        max: max.and_then(|n| number(n, diags)),
    })
}

/// An expected value: numbers and booleans as such, errno names checked against the libc.
fn expected_value(node: &Node, diags: &mut Diags) -> Option<serde_json::Value> {
    if !matches!(node.kind, Kind::Scalar { .. }) {
        diags.error(
            node.pos,
            format!(
                "an expected value must be a scalar, found {}",
                node.describe()
            ),
        );
        return None;
    }
    let value = node.to_json();
    if let serde_json::Value::String(text) = &value {
        if errno::looks_like(text) && !errno::is_known(text) {
            diags.error(
                node.pos,
                format!(
                    "{} is not an errno name this libc knows (e.g. EADDRINUSE)",
                    fields::quoted(text)
                ),
            );
            return None;
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    //! The generic frame of a step (verb, id, key, produced twice) and the checks
    //! that span steps, on small case texts.
    use crate::case::{load_str, Action, Case};

    fn load(steps: &str) -> Result<Case, Vec<String>> {
        let text = format!("summary: t\nsteps:\n{steps}");
        load_str("t", std::path::Path::new("cases/t.yaml"), &text).map_err(|e| {
            e.errors
                .iter()
                .map(|d| format!("{}:{}: {}", d.pos.line, d.pos.col, d.message))
                .collect()
        })
    }

    #[test]
    fn an_unknown_verb_lists_every_registered_one_at_its_line() {
        let errors = load("  - sockett: a\n").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("3:5: a step starts with its action; `sockett`"));
        for verb in Action::VERBS {
            assert!(errors[0].contains(verb), "{verb} missing: {}", errors[0]);
        }
    }

    #[test]
    fn keys_are_verb_dot_subject_or_the_id_and_sleep_is_its_verb() {
        let case = load("  - socket: a\n  - socket: b\n    id: second\n  - sleep: 1ms\n").unwrap();
        let keys: Vec<&str> = case.plan.steps.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["socket.a", "second", "sleep"]);
        assert_eq!(case.plan.steps[1].line, 4);
    }

    #[test]
    fn every_error_of_every_step_is_reported_not_only_the_first() {
        let errors = load("  - bind: nope\n    addr: 127.0.0.1\n  - listen: a\n    backlogg: 1\n")
            .unwrap_err();
        assert_eq!(
            errors,
            [
                "3:11: no socket named `nope` was created before this step",
                "5:13: no socket named `a` was created before this step",
                "6:5: unknown field `backlogg`; expected one of: backlog, id, listen, time",
            ]
        );
    }

    #[test]
    fn an_observation_produced_twice_asks_for_an_id() {
        let errors = load("  - socket: a\n    id: x\n  - socket: b\n    id: x\n").unwrap_err();
        assert_eq!(
            errors,
            ["5:5: observation `x` is produced twice; give this step an `id`"]
        );
    }

    #[test]
    fn a_background_group_never_waited_for_is_an_error_at_its_line() {
        let errors =
            load("  - socket: a\n  - clients: c\n    count: 1\n    to: a\n    background: true\n")
                .unwrap_err();
        assert_eq!(
            errors,
            ["4:1: background client group `c` is never waited for (add `- wait: c`)"]
        );
    }
}
