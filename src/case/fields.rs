//! Reading YAML nodes into typed values while collecting every error with its position.

use std::net::IpAddr;

use super::model::{Family, Proto};
use crate::yaml::{Kind, Node, Pos};

/// One problem in a case file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub pos: Pos,
    pub message: String,
}

/// All problems found so far in one file; decoding goes on after an error.
#[derive(Debug, Default)]
pub struct Diags(pub Vec<Diagnostic>);

impl Diags {
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.0.push(Diagnostic {
            pos,
            message: message.into(),
        });
    }
}

/// The keys of one mapping; `finish` reports those nobody asked for.
pub struct Fields<'a> {
    pos: Pos,
    entries: &'a [(Node, Node)],
    used: Vec<bool>,
    known: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    pub fn of(node: &'a Node, what: &str, diags: &mut Diags) -> Option<Fields<'a>> {
        match &node.kind {
            Kind::Map(entries) => Some(Fields {
                // A block mapping's own mark lies past its first key; its first key
                // is where a reader looks.
                pos: entries.first().map_or(node.pos, |(k, _)| k.pos),
                entries,
                used: vec![false; entries.len()],
                known: Vec::new(),
            }),
            _ => {
                diags.error(
                    node.pos,
                    format!("{what} must be a mapping, found {}", node.describe()),
                );
                None
            }
        }
    }

    pub fn pos(&self) -> Pos {
        self.pos
    }

    pub fn first_key(&self) -> Option<&'a str> {
        self.entries.first().and_then(|(k, _)| k.scalar())
    }

    pub fn get(&mut self, key: &'static str) -> Option<&'a Node> {
        self.known.push(key);
        let i = self
            .entries
            .iter()
            .position(|(k, _)| k.scalar() == Some(key))?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    pub fn require(&mut self, key: &'static str, diags: &mut Diags) -> Option<&'a Node> {
        let node = self.get(key);
        if node.is_none() {
            diags.error(self.pos, format!("missing field `{key}`"));
        }
        node
    }

    /// Marks every key as used (a caller that handed the whole mapping on).
    pub fn take_all(&mut self) {
        self.used.iter_mut().for_each(|u| *u = true);
    }

    pub fn finish(self, diags: &mut Diags) {
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            if !used {
                let name = key.scalar().unwrap_or_default();
                let mut known = self.known.clone();
                known.sort_unstable();
                known.dedup();
                diags.error(
                    key.pos,
                    format!(
                        "unknown field {}; expected one of: {}",
                        quoted(name),
                        known.join(", ")
                    ),
                );
            }
        }
    }
}

pub fn string(node: &Node, what: &str, diags: &mut Diags) -> Option<String> {
    match &node.kind {
        Kind::Scalar { text, .. } if !node.is_null() => Some(text.clone()),
        _ => {
            diags.error(
                node.pos,
                format!("{what} must be a string, found {}", node.describe()),
            );
            None
        }
    }
}

/// The longest name a socket, group, tag or id may have.
pub const MAX_NAME: usize = 64;

/// Text from the case file as a message quotes it: in backticks, and cut short
/// (with its length) when it is too long to read.
pub fn quoted(text: &str) -> String {
    const SHOWN: usize = 40;
    let chars = text.chars().count();
    if chars <= SHOWN + 20 {
        return format!("`{text}`");
    }
    let head: String = text.chars().take(SHOWN).collect();
    format!("`{head}...` ({chars} characters)")
}

pub fn name(node: &Node, what: &str, diags: &mut Diags) -> Option<String> {
    let text = string(node, what, diags)?;
    let chars = text.chars().count();
    if chars > MAX_NAME {
        diags.error(
            node.pos,
            format!(
                "{what} {} is too long: names have at most {MAX_NAME} characters",
                quoted(&text)
            ),
        );
        return None;
    }
    // An index suffix (`l[3]`, `l[i]`, `l[0..80]`, `l[*]`) names repeated sockets;
    // which ones a step may use is the decoder's business.
    let base = match text.find('[') {
        Some(open) => {
            let index_ok = text == format!("{}[i]", &text[..open])
                || super::repeat::parse_index(&text).is_some_and(|r| r.is_ok());
            if !index_ok {
                let why = match super::repeat::parse_index(&text) {
                    Some(Err(why)) => why,
                    _ => format!("{} has a bad index", quoted(&text)),
                };
                diags.error(node.pos, format!("{what}: {why}"));
                return None;
            }
            &text[..open]
        }
        None => text.as_str(),
    };
    let ok = !base.is_empty()
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !base.chars().next().unwrap().is_ascii_digit();
    if !ok {
        diags.error(
            node.pos,
            format!(
                "{what} {} must be a name: letters, digits, _ or -, not starting with a digit",
                quoted(&text)
            ),
        );
        return None;
    }
    Some(text)
}

pub fn uint(node: &Node, what: &str, max: u64, diags: &mut Diags) -> Option<u64> {
    let parsed = match &node.kind {
        Kind::Scalar {
            text,
            quoted: false,
        } => text.parse::<u64>().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if n <= max => Some(n),
        _ => {
            let shown = node
                .scalar()
                .map(quoted)
                .unwrap_or_else(|| node.describe().into());
            diags.error(
                node.pos,
                format!("{what} must be a whole number from 0 to {max}, found {shown}"),
            );
            None
        }
    }
}

pub fn boolean(node: &Node, what: &str, diags: &mut Diags) -> Option<bool> {
    match node.scalar() {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => {
            diags.error(node.pos, format!("{what} must be true or false"));
            None
        }
    }
}

pub fn ip(node: &Node, what: &str, diags: &mut Diags) -> Option<IpAddr> {
    let text = string(node, what, diags)?;
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            diags.error(
                node.pos,
                format!("{what} {} is not an IPv4 or IPv6 address", quoted(&text)),
            );
            None
        }
    }
}

/// A duration such as `250ms`, `2s`, `1.5s` or `500us`, in microseconds.
pub fn duration_us(node: &Node, what: &str, diags: &mut Diags) -> Option<u64> {
    let text = string(node, what, diags)?;
    match parse_duration_us(&text) {
        Some(us) => Some(us),
        None => {
            diags.error(
                node.pos,
                format!(
                    "{what} {} is not a duration like 250ms, 2s or 500us",
                    quoted(&text)
                ),
            );
            None
        }
    }
}

pub fn duration_ms(node: &Node, what: &str, diags: &mut Diags) -> Option<u64> {
    duration_us(node, what, diags).map(|us| us.div_ceil(1000))
}

fn parse_duration_us(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = text.split_at(split);
    let value: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return None,
    };
    let us = value * scale;
    (us.is_finite() && (0.0..1e13).contains(&us)).then_some(us.round() as u64)
}

pub fn list<'a>(node: &'a Node, what: &str, diags: &mut Diags) -> &'a [Node] {
    match &node.kind {
        Kind::Seq(items) => items,
        _ => {
            diags.error(
                node.pos,
                format!("{what} must be a list, found {}", node.describe()),
            );
            &[]
        }
    }
}

/// A list of names, also accepting a single name.
pub fn names(node: &Node, what: &str, diags: &mut Diags) -> Vec<String> {
    match &node.kind {
        Kind::Seq(items) => items.iter().filter_map(|n| name(n, what, diags)).collect(),
        _ => name(node, what, diags).into_iter().collect(),
    }
}

/// `proto:` of a step: tcp (the default), udp, sctp or mptcp.
pub fn proto(f: &mut Fields, diags: &mut Diags) -> Proto {
    match f.get("proto").map(|n| (n, n.scalar())) {
        None | Some((_, Some("tcp"))) => Proto::Tcp,
        Some((_, Some("udp"))) => Proto::Udp,
        Some((_, Some("sctp"))) => Proto::Sctp,
        Some((_, Some("mptcp"))) => Proto::Mptcp,
        Some((n, _)) => {
            diags.error(n.pos, "proto must be tcp, udp, sctp or mptcp");
            Proto::Tcp
        }
    }
}

/// `family:` of a step, when it has one.
pub fn family(node: Option<&Node>, diags: &mut Diags) -> Option<Family> {
    let node = node?;
    match node.scalar() {
        Some("ipv4") => Some(Family::Ipv4),
        Some("ipv6") => Some(Family::Ipv6),
        _ => {
            diags.error(node.pos, "family must be ipv4 or ipv6");
            None
        }
    }
}

/// An optional duration field in milliseconds, or its default.
pub fn ms_or(f: &mut Fields, key: &'static str, default: u64, diags: &mut Diags) -> u64 {
    f.get(key)
        .and_then(|n| duration_ms(n, key, diags))
        .unwrap_or(default)
}

/// `cpu:` a step pins its thread to.
pub fn cpu(f: &mut Fields, diags: &mut Diags) -> Option<u32> {
    f.get("cpu")
        .and_then(|n| uint(n, "cpu", 4095, diags))
        .map(|c| c as u32)
}

/// The subject and fields of a step that waits on a socket for a count: its socket
/// (declared earlier), `count:` (required) and `timeout:` (milliseconds).
pub fn wait_until(
    subject: &Node,
    f: &mut Fields,
    scope: &crate::case::scope::Scope,
    default_timeout_ms: u64,
    diags: &mut Diags,
) -> Option<(String, u32, u64)> {
    let sock = scope.socket(subject, diags);
    let count = f
        .require("count", diags)
        .and_then(|n| uint(n, "count", u32::MAX as u64, diags));
    let timeout_ms = ms_or(f, "timeout", default_timeout_ms, diags);
    Some((sock?, count? as u32, timeout_ms))
}

#[cfg(test)]
mod tests {
    use super::parse_duration_us;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_us("250ms"), Some(250_000));
        assert_eq!(parse_duration_us("1.5s"), Some(1_500_000));
        assert_eq!(parse_duration_us("500us"), Some(500));
        assert_eq!(parse_duration_us("5"), None);
        assert_eq!(parse_duration_us("5 min"), None);
    }
}
