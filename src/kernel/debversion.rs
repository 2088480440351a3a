//! Debian version ordering (`[epoch:]upstream[-revision]`), as dpkg compares them.

use std::cmp::Ordering;

/// Compares two Debian version strings the way `dpkg --compare-versions` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    cmp_digits(ea, eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

/// Splits into (epoch, upstream, revision); a missing epoch is "0", a missing revision "".
fn split(v: &str) -> (&str, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => (e, r),
        _ => ("0", v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

/// dpkg's character weight: `~` sorts before everything (even the end), letters before other symbols.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit prefix, character by character.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ca, cb) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ca != cb {
                return ca.cmp(&cb);
            }
            i += 1;
            j += 1;
        }
        // Digit run, numerically.
        let si = i;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        let sj = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let ord = cmp_digits(
            std::str::from_utf8(&a[si..i]).unwrap_or(""),
            std::str::from_utf8(&b[sj..j]).unwrap_or(""),
        );
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Numeric comparison of digit strings of any length (no overflow).
fn cmp_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn dpkg_examples() {
        let cases = [
            ("1.0", "1.0", Equal),
            ("6.17.13-1~bpo13+1", "6.17.8-1~bpo13+1", Greater),
            ("6.1.158-1", "6.1.99-1", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0+b1", Less),
            ("1.0-1", "1.0-1~bpo1", Greater),
            ("1:0.1", "9.9", Greater),
            ("1.0a", "1.0+", Less),
            ("1.0", "1.0-0", Equal),
            ("01.2", "1.02", Equal),
            ("2.0-1", "10.0-1", Less),
            ("7.2.12-1", "7.2.9-1", Greater),
            ("1.0~~", "1.0~", Less),
            (
                "99999999999999999999999",
                "99999999999999999999998",
                Greater,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
