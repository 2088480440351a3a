//! Debian kernel changelogs: the entries (upstream stable commit titles and Debian's
//! own changes) each package version brought in.

use std::cmp::Ordering;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::debversion;
use super::releases::split_version;

/// One line item of a changelog, with the Debian version that brought it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The `linux` source version (`6.12.85-1`).
    pub version: String,
    /// The item's text, continuation lines joined (`udp: Fix ... (CVE-2026-31503)`).
    pub text: String,
}

/// Reads a gzip-compressed changelog.
pub fn read_gz(path: &Path) -> Result<Vec<Entry>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(f)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(parse(&text))
}

/// Parses a Debian changelog into items. `linux-signed-*` stanzas are credited to
/// the `linux` version they sign ("Sign kernel from linux 6.12.117-1").
pub fn parse(text: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut version = String::new();
    let mut stanza_start = 0;
    let mut open = false; // the last item may take continuation lines
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            if let Some(v) = header_version(line) {
                version = v;
                stanza_start = out.len();
            }
            open = false;
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with("-- ") {
            open = false;
            continue;
        }
        if let Some(signed) = t.strip_prefix("* Sign kernel from linux ") {
            let v = signed.trim().to_string();
            for e in &mut out[stanza_start..] {
                e.version = v.clone();
            }
            version = v;
            open = false;
            continue;
        }
        let item = t.strip_prefix("* ").or_else(|| t.strip_prefix("- "));
        match item {
            Some(text) => {
                out.push(Entry {
                    version: version.clone(),
                    text: text.trim().to_string(),
                });
                open = true;
            }
            None if open && !t.starts_with("http") => {
                let last = out.last_mut().expect("open means an item exists");
                last.text.push(' ');
                last.text.push_str(t);
            }
            None => {}
        }
    }
    // Headers of upstream lists are not commits.
    out.retain(|e| !e.text.ends_with(':') && !e.text.starts_with("New upstream"));
    out
}

/// `linux (6.12.85-1) trixie-security; urgency=high` -> `6.12.85-1`.
fn header_version(line: &str) -> Option<String> {
    let open = line.find(" (")?;
    let close = line[open..].find(')')? + open;
    Some(line[open + 2..close].to_string())
}

/// The entries after `old` up to and including `new` (Debian versions; backport
/// suffixes are ignored), in changelog order.
pub fn between<'a>(entries: &'a [Entry], old: &str, new: &str) -> Vec<&'a Entry> {
    let (_, old) = split_version(old);
    let (_, new) = split_version(new);
    entries
        .iter()
        .filter(|e| {
            let (_, v) = split_version(&e.version);
            debversion::compare(&v, &old) == Ordering::Greater
                && debversion::compare(&v, &new) != Ordering::Greater
        })
        .collect()
}

/// Whether the changelog lists `version` at all (so it can speak for it).
pub fn covers(entries: &[Entry], version: &str) -> bool {
    let (_, want) = split_version(version);
    entries.iter().any(|e| split_version(&e.version).1 == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
linux-signed-amd64 (6.12.117+1) trixie-security; urgency=high

  * Sign kernel from linux 6.12.117-1

  * New upstream stable update:
    https://www.kernel.org/pub/linux/kernel/v6.x/ChangeLog-6.12.117
    - ksmbd: wait for negotiation before receiving another PDU
    - [arm64] KVM: arm64: Transfer the hyp stack pages out of the host stage-2
      (CVE-2026-98466)

 -- Someone <x@y>  Thu, 12 Nov 2026 09:30:00 +0100

linux (6.12.85-1) trixie-security; urgency=high

  * New upstream stable update:
    https://www.kernel.org/pub/linux/kernel/v6.x/ChangeLog-6.12.75
    - udp: Fix wildcard bind conflict check when using hash2
  * [x86] Enable FOO

 -- Someone <x@y>  Thu, 12 Nov 2026 09:30:00 +0100

linux (6.12.74-2) trixie-security; urgency=high

  * Revert bar

linux (6.12.74-1~bpo12+1) bookworm-backports; urgency=medium

  * Rebuild for bookworm-backports
";

    #[test]
    fn parses_items_by_version() {
        let e = parse(TEXT);
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.version.as_str(), e.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("6.12.117-1", "ksmbd: wait for negotiation before receiving another PDU"),
                (
                    "6.12.117-1",
                    "[arm64] KVM: arm64: Transfer the hyp stack pages out of the host stage-2 (CVE-2026-98466)"
                ),
                ("6.12.85-1", "udp: Fix wildcard bind conflict check when using hash2"),
                ("6.12.85-1", "[x86] Enable FOO"),
                ("6.12.74-2", "Revert bar"),
                ("6.12.74-1~bpo12+1", "Rebuild for bookworm-backports"),
            ]
        );
    }

    #[test]
    fn range_is_after_old_up_to_new() {
        let e = parse(TEXT);
        let texts = |v: Vec<&Entry>| v.iter().map(|e| e.text.clone()).collect::<Vec<_>>();
        assert_eq!(
            texts(between(&e, "6.12.74-2~bpo12+1", "6.12.85-1~bpo12+1")),
            [
                "udp: Fix wildcard bind conflict check when using hash2",
                "[x86] Enable FOO"
            ]
        );
        assert_eq!(between(&e, "6.12.74-1", "6.12.74-2").len(), 1);
        assert!(between(&e, "6.12.117-1", "6.12.118-1").is_empty());
        assert!(covers(&e, "6.12.85-1~bpo12+1"));
        assert!(!covers(&e, "6.12.118-1"));
    }
}
