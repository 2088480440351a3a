//! Repetition in the case language: a `repeat` block runs its steps once per index,
//! the sockets it creates named `l[0]`, `l[1]`, ... and, with `addrs:`, the address
//! advancing every so many indices. Pure data and arithmetic; the executor expands it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::model::Step;

/// What a template writes where the index goes: `l[i]`.
pub const INDEX: &str = "[i]";
/// What a template writes where the address of the index goes (`addr: $addr`).
pub const ADDR: &str = "$addr";
/// More repetitions than this in one case is a mistake, not a measurement: the
/// selftest that motivates repetition creates 24,000 sockets.
pub const MAX_COUNT: u64 = 100_000;
/// Every repetition of one case together (nested counts multiply).
pub const MAX_TOTAL_STEPS: u64 = 400_000;

/// A `repeat` block: its steps for indices `first .. first + count`, in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Repeat {
    pub first: u32,
    pub count: u32,
    /// Where the template says `$addr`: this range, one address per block of indices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addrs: Option<AddrRange>,
    /// The template steps; names and keys hold `[i]`, addresses the range's first.
    pub steps: Vec<Step>,
    /// Also record every index's own observations (`run -v`), not only the aggregate.
    #[serde(default)]
    pub each: bool,
}

/// `count` consecutive addresses from `from`; index `i` of `n` gets address
/// `from + (i - first) / (n / count)`: as the selftest binds 80 sockets to each VIP in turn.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddrRange {
    pub from: IpAddr,
    pub count: u32,
}

impl AddrRange {
    /// The address of the `nth` index (0-based) of a block of `total` indices.
    pub fn nth(&self, nth: u32, total: u32) -> IpAddr {
        let per = (total / self.count.max(1)).max(1);
        offset(self.from, u128::from((nth / per).min(self.count - 1)))
    }

    /// The last address, for messages and checks (an IPv4 range must not wrap).
    pub fn last(&self) -> Option<IpAddr> {
        checked_offset(self.from, u128::from(self.count.saturating_sub(1)))
    }
}

fn checked_offset(ip: IpAddr, by: u128) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => u32::from(v4)
            .checked_add(u32::try_from(by).ok()?)
            .map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(v6) => u128::from(v6).checked_add(by).map(|n| IpAddr::V6(n.into())),
    }
}

fn offset(ip: IpAddr, by: u128) -> IpAddr {
    checked_offset(ip, by).unwrap_or(ip)
}

/// `run -v`: every `repeat` block of the plan also records each index's own
/// observations (`bind.l[17]`), after the aggregate it always records.
pub fn record_each(steps: &mut [Step]) {
    for step in steps {
        if let crate::case::Action::Repeat(block) = &mut step.action {
            block.each = true;
        }
    }
}

/// `l[i]` with the index filled in: `l[17]`.
pub fn indexed(template: &str, index: u32) -> String {
    template.replace(INDEX, &format!("[{index}]"))
}

/// The aggregate's key for an indexed key: `bind.l[17]` -> `bind.l`.
pub fn unindexed(key: &str, index: u32) -> String {
    key.replacen(&format!("[{index}]"), "", 1)
}

/// A reference to indexed sockets outside their block: `l[3]`, `l[10..20]`, `l[*]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexRef {
    One(u32),
    /// `first .. end` (end excluded).
    Range(u32, u32),
    All,
}

/// Splits `l[10..20]` into (`l`, Range(10, 20)); None when the name has no index.
/// An index that is not a number, a range or `*` is an error message.
pub fn parse_index(name: &str) -> Option<Result<(&str, IndexRef), String>> {
    let open = name.find('[')?;
    let (base, rest) = name.split_at(open);
    let Some(inner) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return Some(Err(format!(
            "`{name}`: an index ends the name, as in `l[3]`"
        )));
    };
    let number = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("`{name}`: `{s}` is not an index (a number from 0)"))
    };
    let parsed = if inner == "*" {
        Ok(IndexRef::All)
    } else if let Some((a, b)) = inner.split_once("..") {
        number(a).and_then(|a| {
            let b = number(b)?;
            if b <= a {
                return Err(format!(
                    "`{name}`: the range {a}..{b} is empty (the end is excluded)"
                ));
            }
            Ok(IndexRef::Range(a, b))
        })
    } else if inner == "i" {
        Err(format!(
            "`{name}`: `[i]` names the index inside a `repeat` block only"
        ))
    } else {
        number(inner).map(IndexRef::One)
    };
    Some(parsed.map(|r| (base, r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_advance_per_block_of_indices() {
        let r = AddrRange {
            from: "2401:dead::1".parse().unwrap(),
            count: 300,
        };
        assert_eq!(r.nth(0, 24_000), "2401:dead::1".parse::<IpAddr>().unwrap());
        assert_eq!(r.nth(79, 24_000), "2401:dead::1".parse::<IpAddr>().unwrap());
        assert_eq!(r.nth(80, 24_000), "2401:dead::2".parse::<IpAddr>().unwrap());
        assert_eq!(
            r.nth(23_999, 24_000),
            "2401:dead::12c".parse::<IpAddr>().unwrap()
        );
        let v4 = AddrRange {
            from: "10.0.0.250".parse().unwrap(),
            count: 10,
        };
        assert_eq!(v4.nth(9, 10), "10.0.1.3".parse::<IpAddr>().unwrap());
        let wraps = AddrRange {
            from: "255.255.255.250".parse().unwrap(),
            count: 10,
        };
        assert_eq!(wraps.last(), None);
    }

    #[test]
    fn index_references() {
        assert_eq!(parse_index("l"), None);
        assert_eq!(parse_index("l[3]"), Some(Ok(("l", IndexRef::One(3)))));
        assert_eq!(
            parse_index("l[10..20]"),
            Some(Ok(("l", IndexRef::Range(10, 20))))
        );
        assert_eq!(parse_index("l[*]"), Some(Ok(("l", IndexRef::All))));
        for bad in ["l[20..10]", "l[x]", "l[3", "l[1]x", "l[-1]", "l[i]"] {
            assert!(matches!(parse_index(bad), Some(Err(_))), "{bad}");
        }
        assert_eq!(indexed("l[i]", 17), "l[17]");
        assert_eq!(
            unindexed("socket.l[17].reuseport", 17),
            "socket.l.reuseport"
        );
    }
}
