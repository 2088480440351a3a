//! Decoding repetition: a `repeat` block (a count, optional `addrs`, template steps
//! naming sockets `l[i]`), and a step whose subject is a range of indexed sockets
//! (`listen: "l[*]"`, `close: "l[0..80]"`), which is a block of that one step.

use super::decode_step;
use crate::case::fields::{self, Diags, Fields};
use crate::case::model::*;
use crate::case::repeat::{self, AddrRange, IndexRef, Repeat, ADDR, INDEX, MAX_COUNT};
use crate::case::scope::{Indexed, Scope, Template};
use crate::yaml::{Kind, Node};

/// `repeat: N` with `steps:` and optional `addrs: {from, count}`, `first:`.
pub(super) fn block(
    subject: &Node,
    f: &mut Fields,
    scope: &mut Scope,
    diags: &mut Diags,
) -> Option<Action> {
    if scope.template.is_some() {
        diags.error(
            subject.pos,
            "a `repeat` inside a `repeat` is not supported: one block's index can give each \
             socket its address (`addrs:`)",
        );
        f.take_all();
        return None;
    }
    // A missing count (`repeat:`) is blamed on the step, not on the next line.
    let at = if subject.is_null() {
        f.pos()
    } else {
        subject.pos
    };
    let count = count(subject, at, diags);
    let first = f
        .get("first")
        .and_then(|n| fields::uint(n, "first", MAX_COUNT, diags))
        .map_or(0, |n| n as u32);
    let addrs = f.get("addrs").and_then(|n| addr_range(n, count, diags));
    let steps_node = f.require("steps", diags)?;
    let templates = fields::list(steps_node, "steps", diags);
    if templates.is_empty() {
        diags.error(steps_node.pos, "a `repeat` block needs at least one step");
    }
    let count = count?;
    let total = u64::from(count) * templates.len() as u64;
    if total > repeat::MAX_TOTAL_STEPS {
        diags.error(
            subject.pos,
            format!(
                "{count} repetitions of {} steps make {total} steps: at most {} in one block",
                templates.len(),
                repeat::MAX_TOTAL_STEPS
            ),
        );
        return None;
    }
    let mut uses_addr = false;
    let steps = templates_in(scope, Template { first, count }, |scope| {
        templates
            .iter()
            .filter_map(|t| {
                let node = match addrs {
                    Some(range) => {
                        let (node, used) = with_address(t, &range.from.to_string());
                        uses_addr |= used;
                        node
                    }
                    None => t.clone(),
                };
                decode_step(&node, scope, diags)
            })
            .collect::<Vec<_>>()
    });
    if let (Some(_), false) = (addrs, uses_addr) {
        diags.error(
            f.pos(),
            format!("`addrs` gives each index an address, but no step of the block says `{ADDR}`"),
        );
    }
    Some(Action::Repeat(Repeat {
        first,
        count,
        addrs,
        steps,
        each: false,
    }))
}

/// A step whose subject is `l[*]` or `l[a..b]`: the same step for each of those
/// sockets, as a block. None when the subject is no such range.
pub(super) fn over_range(
    node: &Node,
    verb: &str,
    subject: &Node,
    scope: &mut Scope,
    diags: &mut Diags,
) -> Option<Option<Action>> {
    let text = subject.scalar()?;
    let Some(Ok((base, index))) = repeat::parse_index(text) else {
        return None;
    };
    let (first, end) = match index {
        IndexRef::One(_) => return None,
        IndexRef::Range(a, b) => (a, b),
        IndexRef::All => match scope.indexed.get(base) {
            Some(g) => (g.first, g.first + g.count),
            None => (0, 0),
        },
    };
    if scope.template.is_some() {
        diags.error(
            subject.pos,
            format!("`{text}`: inside a `repeat` block, name one socket with `[i]`"),
        );
        return Some(None);
    }
    let Some(group) = scope.indexed.get(base).copied() else {
        diags.error(
            subject.pos,
            format!("`{text}`: no `repeat` block before this step created sockets `{base}[i]`"),
        );
        return Some(None);
    };
    if first < group.first || end > group.first + group.count {
        diags.error(
            subject.pos,
            format!(
                "`{text}`: sockets `{base}[i]` exist for indices {}..{}",
                group.first,
                group.first + group.count
            ),
        );
        return Some(None);
    }
    // The step itself, with `[i]` for its subject; `time:` times the whole block.
    let mut template = node.clone();
    if let Kind::Map(entries) = &mut template.kind {
        if let Some((_, value)) = entries.iter_mut().find(|(k, _)| k.scalar() == Some(verb)) {
            value.kind = Kind::Scalar {
                text: format!("{base}{INDEX}"),
                quoted: true,
            };
        }
        entries.retain(|(k, _)| k.scalar() != Some("time") && k.scalar() != Some("id"));
    }
    let count = end - first;
    let step = templates_in(scope, Template { first, count }, |scope| {
        decode_step(&template, scope, diags)
    })?;
    Some(Some(Action::Repeat(Repeat {
        first,
        count,
        addrs: None,
        steps: vec![step],
        each: false,
    })))
}

/// Decodes template steps with `[i]` allowed; afterwards the sockets they created
/// become an indexed group, and their observations the aggregate's keys.
fn templates_in<T>(
    scope: &mut Scope,
    template: Template,
    decode: impl FnOnce(&mut Scope) -> T,
) -> T {
    let before: std::collections::BTreeSet<String> = scope.observations.clone();
    scope.template = Some(template);
    let out = decode(scope);
    scope.template = None;
    let created: Vec<(String, (Proto, Family))> = scope
        .sockets
        .iter()
        .filter(|(name, _)| name.ends_with(INDEX))
        .map(|(n, v)| (n.clone(), *v))
        .collect();
    for (name, (proto, family)) in created {
        scope.sockets.remove(&name);
        let base = name.trim_end_matches(INDEX).to_string();
        scope.indexed.insert(
            base,
            Indexed {
                first: template.first,
                count: template.count,
                proto,
                family,
            },
        );
    }
    scope.listeners.retain(|l| !l.ends_with(INDEX));
    scope.served.retain(|l, _| !l.ends_with(INDEX));
    let new: Vec<String> = scope.observations.difference(&before).cloned().collect();
    for key in new {
        scope.observations.remove(&key);
        scope.observations.extend(aggregate_keys(&key));
    }
    out
}

/// The keys the aggregate of an indexed key can have (text or number values; the
/// errno counts `K.<ERRNO>` are checked apart).
pub(super) fn aggregate_keys(key: &str) -> Vec<String> {
    let base = key.replacen(INDEX, "", 1);
    if base.starts_with("time.") {
        return vec![base];
    }
    ["ok", "first_failure", "sum", "min", "max"]
        .iter()
        .map(|s| format!("{base}.{s}"))
        .collect()
}

/// `K.<ERRNO>` where `K.ok` is an aggregate's key: how many times that errno came.
pub(super) fn is_errno_count(obs: &str, scope: &Scope) -> bool {
    obs.rsplit_once('.').is_some_and(|(base, errno)| {
        crate::errno::is_known(errno) && scope.observations.contains(&format!("{base}.ok"))
    })
}

fn count(node: &Node, at: crate::yaml::Pos, diags: &mut Diags) -> Option<u32> {
    let parsed = node.scalar().and_then(|s| s.parse::<u64>().ok());
    match parsed {
        Some(n) if (1..=MAX_COUNT).contains(&n) => Some(n as u32),
        Some(n) if n > MAX_COUNT => {
            diags.error(
                at,
                format!(
                    "repeat count {n} is absurd for one guest: at most {MAX_COUNT} (the \
                     stress_reuseport_listen selftest creates 24000 sockets)"
                ),
            );
            None
        }
        _ => {
            let shown = match node.scalar() {
                Some(text) if !node.is_null() => fields::quoted(text),
                _ => node.describe().into(),
            };
            diags.error(
                at,
                format!("repeat needs a bounded count: a whole number from 1 to {MAX_COUNT}, found {shown}"),
            );
            None
        }
    }
}

fn addr_range(node: &Node, count: Option<u32>, diags: &mut Diags) -> Option<AddrRange> {
    let mut f = Fields::of(node, "`addrs`", diags)?;
    let from = f
        .require("from", diags)
        .and_then(|n| fields::ip(n, "from", diags));
    let n = f
        .require("count", diags)
        .and_then(|n| Some((n, fields::uint(n, "count", MAX_COUNT, diags)?)));
    f.finish(diags);
    let (from, (n_node, n)) = (from?, n?);
    let range = AddrRange {
        from,
        count: n as u32,
    };
    if n == 0 {
        diags.error(n_node.pos, "`addrs` needs at least one address");
        return None;
    }
    if let Some(total) = count {
        if n > u64::from(total) || u64::from(total) % n != 0 {
            diags.error(
                n_node.pos,
                format!(
                    "{n} addresses for {total} repetitions: the count must divide the \
                     repetitions, so each address gets as many sockets"
                ),
            );
            return None;
        }
    }
    if range.last().is_none() {
        diags.error(
            n_node.pos,
            format!("{n} addresses from {from} run past the end of the address space"),
        );
        return None;
    }
    Some(range)
}

/// The node with every scalar `$addr` replaced by `from`; whether there was one.
fn with_address(node: &Node, from: &str) -> (Node, bool) {
    let mut node = node.clone();
    let used = replace_scalars(&mut node, from);
    (node, used)
}

fn replace_scalars(node: &mut Node, from: &str) -> bool {
    match &mut node.kind {
        Kind::Scalar { text, quoted } if text == ADDR => {
            *text = from.to_string();
            *quoted = true;
            true
        }
        Kind::Scalar { .. } => false,
        Kind::Seq(items) => items
            .iter_mut()
            .fold(false, |used, n| replace_scalars(n, from) | used),
        Kind::Map(entries) => entries
            .iter_mut()
            .fold(false, |used, (_, v)| replace_scalars(v, from) | used),
    }
}

#[cfg(test)]
mod tests {
    use crate::case::repeat::{AddrRange, Repeat};
    use crate::case::{load_str, Action, Matcher};

    fn load(yaml: &str) -> crate::case::Case {
        load_str(
            "t",
            std::path::Path::new("cases/t.yaml"),
            &format!("summary: t\n{yaml}"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_block_and_a_range_step_decode_to_templates() {
        let case = load(
            "sysctls:
  net.ipv6.ip_nonlocal_bind: 1
steps:
  - repeat: 600
    addrs: {from: \"2401:dead::1\", count: 300}
    steps:
      - socket: \"l[i]\"
        family: ipv6
        reuseport: true
      - bind: \"l[i]\"
        addr: $addr
        port: 443
        time: true
  - listen: \"l[*]\"
    backlog: 0
    time: true
  - close: \"l[599]\"
expect:
  - obs: bind.l.ok
    eq: 600
  - obs: bind.l.EADDRINUSE
    eq: 0
  - obs: time.listen.l
    max: 2s
  - obs: time.bind.l
    max: 500ms
  - obs: close.l[599]
    eq: ok
",
        );
        let steps = &case.plan.steps;
        let Action::Repeat(Repeat {
            first: 0,
            count: 600,
            addrs: Some(AddrRange { count: 300, .. }),
            steps: block,
            each: false,
        }) = &steps[0].action
        else {
            panic!("{:?}", steps[0]);
        };
        assert_eq!(block[1].key, "bind.l[i]");
        assert!(block[1].time);
        assert_eq!(steps[1].key, "listen.l");
        assert!(steps[1].time, "the range step's time is the block's");
        let Action::Repeat(listen) = &steps[1].action else {
            panic!("{:?}", steps[1]);
        };
        assert_eq!((listen.first, listen.count), (0, 600));
        assert_eq!(listen.steps[0].key, "listen.l[i]");
        assert!(!listen.steps[0].time);
        assert_eq!(steps[2].key, "close.l[599]");
        assert_eq!(
            case.expect[2].matcher,
            Matcher::Range {
                min: None,
                max: Some(2_000_000.0)
            }
        );
    }
}
