//! Turns a parsed case file into a `Case`, checking names, references between steps
//! and expectations, and collecting every error of the file at once.

use std::path::Path;

use super::fields::{self, Diags, Fields};
use super::model::*;
use super::scope::{GroupKind, Scope};
use super::version::VersionReq;
use crate::errno;
use crate::yaml::{Kind, Node};

mod packet;

const DEFAULT_TIMEOUT_MS: u64 = 20_000;
/// A case that needs longer than this is a benchmark, not a behaviour check.
const MAX_TIMEOUT_MS: u64 = 600_000;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
const VERBS: &[&str] = &[
    "socket",
    "bind",
    "listen",
    "connect",
    "accept",
    "close",
    "shutdown",
    "serve",
    "clients",
    "wait",
    "account",
    "queue",
    "wait_queued",
    "wait_accepted",
    "datagrams",
    "tally",
    "sleep",
    "attach_bpf",
    "attach_ebpf",
    "detach_bpf",
    "local_port",
    "bind_pairs",
    "drop",
    "release",
    "requests",
    "send",
];

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

fn decode_requires(node: &Node, diags: &mut Diags) -> Vec<Requirement> {
    let mut out = Vec::new();
    for item in fields::list(node, "requires", diags) {
        let req = match &item.kind {
            Kind::Scalar { text, .. } => match text.as_str() {
                "root" => Some(Requirement::Root),
                "ipv6" => Some(Requirement::Ipv6),
                "bpf" => Some(Requirement::Bpf),
                other => {
                    diags.error(item.pos, format!("unknown requirement {}; expected root, ipv6, bpf, or a mapping {{sysctl: NAME}}, {{kernel: \">= X.Y\"}}, {{cpus: N}}, {{module: NAME}}", fields::quoted(other)));
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
                } else if let Some(n) = f.get("module") {
                    module_name(n, diags).map(Requirement::Module)
                } else {
                    diags.error(
                        f.pos(),
                        "a requirement mapping needs `sysctl`, `kernel`, `cpus` or `module`",
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
    // Verbs not yet moved to src/steps, then the registry's.
    let all_verbs = || {
        VERBS
            .iter()
            .chain(
                crate::steps::Registered::VERBS
                    .iter()
                    .filter(|v| !VERBS.contains(v)),
            )
            .copied()
    };
    let verb = match f.first_key() {
        Some(key) if all_verbs().any(|v| v == key) => all_verbs().find(|v| *v == key).unwrap(),
        Some(key) => {
            diags.error(
                f.pos(),
                format!(
                    "a step starts with its action; {} is not one of: {}",
                    fields::quoted(key),
                    all_verbs().collect::<Vec<_>>().join(", ")
                ),
            );
            return None;
        }
        None => {
            diags.error(
                f.pos(),
                format!(
                    "a step needs an action, one of: {}",
                    all_verbs().collect::<Vec<_>>().join(", ")
                ),
            );
            return None;
        }
    };
    let subject = f.get(verb).expect("the verb key is present");
    let custom_id = f.get("id").and_then(|n| fields::name(n, "id", diags));
    let action = match crate::steps::Registered::decode(verb, subject, &mut f, scope, diags) {
        Some(step) => step.map(Action::Registered),
        None => decode_action(verb, subject, &mut f, scope, diags),
    };
    let pos = f.pos();
    f.finish(diags);
    let action = action?;
    let key = custom_id.unwrap_or_else(|| match subject.scalar() {
        Some(s) if verb != "sleep" && crate::steps::Registered::keyed_by_subject(verb) => {
            format!("{verb}.{s}")
        }
        _ => verb.to_string(),
    });
    let produced = observation_keys(&key, &action, scope);
    if let Some(dup) = produced.iter().find(|k| scope.observations.contains(*k)) {
        diags.error(
            pos,
            format!("observation `{dup}` is produced twice; give this step an `id`"),
        );
    }
    scope.observations.extend(produced);
    record_effects(&action, node.pos.line, scope);
    Some(Step {
        line: node.pos.line,
        key,
        action,
    })
}

fn decode_action(
    verb: &str,
    subject: &Node,
    f: &mut Fields,
    scope: &Scope,
    diags: &mut Diags,
) -> Option<Action> {
    let ms = |f: &mut Fields, key: &'static str, default: u64, diags: &mut Diags| {
        f.get(key)
            .and_then(|n| fields::duration_ms(n, key, diags))
            .unwrap_or(default)
    };
    Some(match verb {
        "connect" => {
            let sock = scope.socket(subject, diags);
            let to = f.require("to", diags).and_then(|n| scope.target(n, diags));
            let timeout_ms = ms(f, "timeout", DEFAULT_CONNECT_TIMEOUT_MS, diags);
            Action::Connect {
                sock: sock?,
                to: to?,
                timeout_ms,
            }
        }
        "accept" => {
            let sock = scope.socket(subject, diags);
            let max = match f.get("count") {
                None => None,
                Some(n) if n.scalar() == Some("all") => None,
                Some(n) => fields::uint(n, "count (a number or `all`)", u32::MAX as u64, diags)
                    .map(|c| c as u32),
            };
            let wait_ms = ms(f, "wait", 0, diags);
            let mode = match f.get("mode").map(|n| (n, n.scalar())) {
                None | Some((_, Some("nonblocking"))) => AcceptMode::Nonblocking,
                Some((_, Some("blocking"))) => AcceptMode::Blocking,
                Some((_, Some("epoll"))) => AcceptMode::Epoll,
                Some((n, _)) => {
                    diags.error(n.pos, "mode must be nonblocking, blocking or epoll");
                    AcceptMode::Nonblocking
                }
            };
            if let (AcceptMode::Blocking, Some(served_at)) =
                (mode, sock.as_ref().and_then(|s| scope.served.get(s)))
            {
                diags.error(
                    f.pos(),
                    format!(
                        "`mode: blocking` on `{}`, which the `serve` step of line {served_at} \
                         accepts on in the background: a blocking accept clears O_NONBLOCK \
                         under that acceptor. Use mode nonblocking or epoll, or close it first",
                        sock.as_deref().unwrap_or_default()
                    ),
                );
            }
            let name = f.get("name").and_then(|n| {
                let name = fields::name(n, "name", diags)?;
                if max != Some(1) {
                    diags.error(
                        n.pos,
                        "`name` keeps one accepted connection: it needs `count: 1`",
                    );
                }
                if scope.sockets.contains_key(&name) {
                    diags.error(
                        n.pos,
                        format!("socket `{name}` already exists; pick another name"),
                    );
                }
                Some(name)
            });
            Action::Accept {
                sock: sock?,
                max,
                wait_ms,
                mode,
                name,
            }
        }
        "close" => Action::Close {
            sock: scope.socket(subject, diags)?,
        },
        "shutdown" => {
            let sock = scope.socket(subject, diags);
            let how = match f.get("how").map(|n| (n, n.scalar())) {
                None | Some((_, Some("both"))) => Shutdown::Both,
                Some((_, Some("read"))) => Shutdown::Read,
                Some((_, Some("write"))) => Shutdown::Write,
                Some((n, _)) => {
                    diags.error(n.pos, "how must be read, write or both");
                    Shutdown::Both
                }
            };
            Action::Shutdown { sock: sock?, how }
        }
        "serve" => {
            let sock = scope.socket(subject, diags);
            let epoll_wait_ms = match f.get("mode").map(|n| (n, n.scalar())) {
                None | Some((_, Some("poll"))) => None,
                Some((_, Some("epoll"))) => Some(ms(f, "wait", 5_000, diags)),
                Some((n, _)) => {
                    diags.error(n.pos, "serve mode is poll (short polls) or epoll (sleeps in epoll_wait for `wait`)");
                    None
                }
            };
            Action::Serve {
                sock: sock?,
                epoll_wait_ms,
            }
        }
        "clients" => {
            let group = fields::name(subject, "a group name", diags);
            if let Some(g) = &group {
                if scope.groups.contains_key(g) {
                    diags.error(subject.pos, format!("group `{g}` already exists"));
                }
            }
            let count = f
                .require("count", diags)
                .and_then(|n| fields::uint(n, "count", 100_000, diags));
            let to = f.require("to", diags).and_then(|n| scope.target(n, diags));
            let family = f.get("family").and_then(|n| fields::family(Some(n), diags));
            let interval_us = f
                .get("interval")
                .and_then(|n| fields::duration_us(n, "interval", diags))
                .unwrap_or(0);
            let timeout_ms = ms(f, "timeout", DEFAULT_CONNECT_TIMEOUT_MS, diags);
            let background = f
                .get("background")
                .and_then(|n| fields::boolean(n, "background", diags))
                .unwrap_or(false);
            let cpu = fields::cpu(f, diags);
            Action::Clients {
                group: group?,
                count: count? as u32,
                to: to?,
                family,
                interval_us,
                timeout_ms,
                background,
                cpu,
            }
        }
        "wait" => {
            let group = scope.group(subject, GroupKind::Clients, diags)?;
            if !scope.background.contains_key(&group) {
                diags.error(
                    subject.pos,
                    format!("client group `{group}` is not running in the background"),
                );
            }
            Action::Wait { group }
        }
        "account" => {
            let group = scope.group(subject, GroupKind::Clients, diags)?;
            if scope.background.contains_key(&group) {
                diags.error(
                    subject.pos,
                    format!("`wait: {group}` must come before accounting for it"),
                );
            }
            Action::Account { group }
        }
        "queue" => Action::Queue {
            sock: scope.socket(subject, diags)?,
        },
        "wait_queued" => {
            let sock = scope.socket(subject, diags);
            let count = f
                .require("count", diags)
                .and_then(|n| fields::uint(n, "count", u32::MAX as u64, diags));
            let timeout_ms = ms(f, "timeout", 2_000, diags);
            Action::WaitQueued {
                sock: sock?,
                count: count? as u32,
                timeout_ms,
            }
        }
        "wait_accepted" => {
            let sock = scope.socket(subject, diags);
            let count = f
                .require("count", diags)
                .and_then(|n| fields::uint(n, "count", u32::MAX as u64, diags));
            let timeout_ms = ms(f, "timeout", 5_000, diags);
            Action::WaitAccepted {
                sock: sock?,
                count: count? as u32,
                timeout_ms,
            }
        }
        "datagrams" => {
            let group = fields::name(subject, "a group name", diags);
            let count = f
                .require("count", diags)
                .and_then(|n| fields::uint(n, "count", 100_000, diags));
            let to = f.require("to", diags).and_then(|n| scope.target(n, diags));
            let from = f.get("from").and_then(|n| scope.socket(n, diags));
            let family = f.get("family").and_then(|n| fields::family(Some(n), diags));
            let cpu = fields::cpu(f, diags);
            Action::Datagrams {
                group: group?,
                count: count? as u32,
                to: to?,
                from,
                family,
                cpu,
            }
        }
        "tally" => {
            let group = scope.group(subject, GroupKind::Datagrams, diags);
            let among: Vec<String> = match f.require("among", diags) {
                Some(n) => fields::names(n, "a socket name", diags)
                    .into_iter()
                    .filter(|s| {
                        let known = scope.sockets.get(s).map(|(p, _)| *p == Proto::Udp);
                        if known != Some(true) {
                            diags.error(
                                n.pos,
                                format!("`{s}` is not a UDP socket created before this step"),
                            );
                        }
                        known == Some(true)
                    })
                    .collect(),
                None => Vec::new(),
            };
            let wait_ms = ms(f, "wait", 50, diags);
            Action::Tally {
                group: group?,
                among,
                wait_ms,
            }
        }
        "sleep" => Action::Sleep {
            ms: fields::duration_ms(subject, "sleep", diags)?,
        },
        "attach_bpf" => {
            let sock = scope.socket(subject, diags);
            let program = f
                .require("program", diags)
                .and_then(|n| decode_cbpf(n, diags));
            Action::AttachBpf {
                sock: sock?,
                program: program?,
            }
        }
        "detach_bpf" => Action::DetachBpf {
            sock: scope.socket(subject, diags)?,
        },
        "attach_ebpf" => {
            let sock = scope.socket(subject, diags);
            let sockarray: Vec<String> = match f.require("sockarray", diags) {
                Some(n) => fields::names(n, "a socket name", diags)
                    .into_iter()
                    .filter(|s| {
                        let known = scope.sockets.contains_key(s);
                        if !known {
                            diags.error(
                                n.pos,
                                format!("no socket named `{s}` was created before this step"),
                            );
                        }
                        known
                    })
                    .collect(),
                None => Vec::new(),
            };
            let select = f
                .require("select", diags)
                .and_then(|n| fields::uint(n, "select", u32::MAX as u64, diags));
            let drop_on_miss = match f.get("on_miss").map(|n| (n, n.scalar())) {
                None | Some((_, Some("pass"))) => false,
                Some((_, Some("drop"))) => true,
                Some((n, _)) => {
                    diags.error(n.pos, "on_miss is pass (fall back to hashing) or drop");
                    false
                }
            };
            if sockarray.is_empty() {
                diags.error(f.pos(), "sockarray needs at least one socket");
            }
            Action::AttachEbpf {
                sock: sock?,
                sockarray,
                select: select? as u32,
                drop_on_miss,
            }
        }
        "local_port" => Action::LocalPort {
            sock: scope.socket(subject, diags)?,
        },
        "bind_pairs" => {
            fields::name(subject, "a matrix name", diags)?;
            let proto = fields::proto(f, diags);
            let addrs = f
                .require("addrs", diags)
                .map(|n| decode_pair_addrs(n, diags))
                .unwrap_or_default();
            let options = match f.get("options") {
                None => vec![
                    PairOption::None,
                    PairOption::Reuseaddr,
                    PairOption::Reuseport,
                ],
                Some(n) => fields::list(n, "options", diags)
                    .iter()
                    .filter_map(|o| match o.scalar() {
                        Some("plain") => Some(PairOption::None),
                        Some("reuseaddr") => Some(PairOption::Reuseaddr),
                        Some("reuseport") => Some(PairOption::Reuseport),
                        _ => {
                            diags.error(o.pos, "options are plain, reuseaddr or reuseport");
                            None
                        }
                    })
                    .collect(),
            };
            let listen = f
                .get("listen")
                .and_then(|n| fields::boolean(n, "listen", diags))
                .unwrap_or(true);
            Action::BindPairs {
                proto,
                addrs,
                options,
                listen,
            }
        }
        "drop" => packet::drop(subject, f, scope, diags)?,
        "release" => packet::release(subject, scope, diags)?,
        "requests" => packet::requests(subject, scope, diags)?,
        "send" => packet::send(subject, scope, diags)?,
        _ => unreachable!("verbs come from VERBS"),
    })
}

fn decode_cbpf(node: &Node, diags: &mut Diags) -> Option<CbpfProgram> {
    if node.scalar() == Some("cpu") {
        return Some(CbpfProgram::Cpu);
    }
    let mut f = Fields::of(node, "program (cpu, {modulo: N} or {constant: N})", diags)?;
    let program = if let Some(n) = f.get("modulo") {
        fields::uint(n, "modulo", u32::MAX as u64, diags)
            .filter(|m| *m > 0)
            .map(|m| CbpfProgram::Modulo(m as u32))
    } else if let Some(n) = f.get("constant") {
        fields::uint(n, "constant", u32::MAX as u64, diags).map(|c| CbpfProgram::Constant(c as u32))
    } else {
        diags.error(f.pos(), "program is cpu, {modulo: N} or {constant: N}");
        None
    };
    f.finish(diags);
    program
}

fn decode_pair_addrs(node: &Node, diags: &mut Diags) -> Vec<PairAddr> {
    let Kind::Map(entries) = &node.kind else {
        diags.error(
            node.pos,
            "addrs is a mapping of label: address (or label: {addr, v6only})",
        );
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|(k, v)| {
            let label = fields::name(k, "an address label", diags)?;
            if let Kind::Scalar { .. } = v.kind {
                let addr = fields::ip(v, "addr", diags)?;
                return Some(PairAddr {
                    label,
                    addr,
                    v6only: None,
                });
            }
            let mut f = Fields::of(v, "an address", diags)?;
            let addr = f
                .require("addr", diags)
                .and_then(|n| fields::ip(n, "addr", diags));
            let v6only = f
                .get("v6only")
                .and_then(|n| fields::boolean(n, "v6only", diags));
            f.finish(diags);
            Some(PairAddr {
                label,
                addr: addr?,
                v6only,
            })
        })
        .collect()
}

/// Every observation key a step will produce, known before anything runs.
fn observation_keys(key: &str, action: &Action, scope: &Scope) -> Vec<String> {
    if let Some(keys) = packet::observation_keys(key, action) {
        return keys;
    }
    let sub = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("{key}.{n}"))
            .collect::<Vec<_>>()
    };
    match action {
        Action::Registered(step) => step.observations(key, scope),
        Action::Connect { .. }
        | Action::Close { .. }
        | Action::Shutdown { .. }
        | Action::Serve { .. }
        | Action::Queue { .. }
        | Action::WaitQueued { .. }
        | Action::WaitAccepted { .. } => vec![key.to_string()],
        Action::Accept { .. } => vec![key.to_string(), format!("{key}.error")],
        Action::Clients { .. } => {
            sub(&["connected", "refused", "timed_out", "failed", "first_error"])
        }
        Action::Account { .. } => {
            let mut keys = sub(&[
                "reset",
                "orphaned",
                "closed",
                "refused",
                "timed_out",
                "failed",
                "pending",
                "total",
                "fairness",
            ]);
            keys.extend(
                scope
                    .listeners
                    .iter()
                    .map(|l| format!("{key}.accepted.{l}")),
            );
            keys
        }
        Action::Datagrams { .. } => sub(&["sent", "errors"]),
        Action::Tally { among, .. } => {
            let mut keys = sub(&["lost", "fairness"]);
            keys.extend(among.iter().map(|s| format!("{key}.{s}")));
            keys
        }
        Action::AttachBpf { .. } | Action::DetachBpf { .. } | Action::LocalPort { .. } => {
            vec![key.to_string()]
        }
        Action::AttachEbpf { .. } => vec![
            key.to_string(),
            format!("{key}.load"),
            format!("{key}.fill"),
        ],
        Action::BindPairs { addrs, options, .. } => {
            let mut keys = Vec::new();
            for first in addrs {
                for second in addrs {
                    for option in options {
                        keys.push(format!(
                            "{key}.{}.{}.{}",
                            first.label,
                            second.label,
                            option.label()
                        ));
                    }
                }
            }
            keys
        }
        Action::Wait { .. } | Action::Sleep { .. } => Vec::new(),
        Action::Drop { .. }
        | Action::Release { .. }
        | Action::Requests { .. }
        | Action::Send { .. } => unreachable!("packet::observation_keys covers them"),
    }
}

fn record_effects(action: &Action, line: usize, scope: &mut Scope) {
    packet::record_effects(action, scope);
    match action {
        Action::Registered(step) => step.declare(line, scope),
        Action::Serve { sock, .. } => {
            scope.served.insert(sock.clone(), line);
        }
        Action::Close { sock } => {
            scope.served.remove(sock);
        }
        Action::Accept {
            sock,
            name: Some(name),
            ..
        } => {
            let family = scope.sockets[sock].1;
            scope.sockets.insert(name.clone(), (Proto::Tcp, family));
        }
        Action::Clients {
            group, background, ..
        } => {
            scope.groups.insert(group.clone(), GroupKind::Clients);
            if *background {
                scope.background.insert(group.clone(), line);
            }
        }
        Action::Wait { group } => {
            scope.background.remove(group);
        }
        Action::Datagrams { group, .. } => {
            scope.groups.insert(group.clone(), GroupKind::Datagrams);
        }
        _ => {}
    }
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
    if scope.observations.contains(obs) {
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
    let number = |n: &Node, diags: &mut Diags| match n.scalar().and_then(|s| s.parse::<f64>().ok())
    {
        Some(v) => Some(v),
        None => {
            diags.error(n.pos, "min and max must be numbers");
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
