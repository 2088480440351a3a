//! Ranking changelog entries by how well they match a case: its `detects` commit
//! title and reference titles (an exact title wins outright), then shared words
//! with those titles, the summary and the tags, rarer words counting more.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::case::{Case, Reference};
use crate::kernel::changelog::Entry;

/// A changelog entry with its score and what matched.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub version: String,
    pub text: String,
    pub score: f64,
    /// `title` (the detects or a reference commit title, exactly), else the shared words.
    pub matched: Vec<String>,
}

/// Words too common in commit titles and summaries to say anything.
const STOP: &[&str] = &[
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "when", "is", "it",
    "its", "be", "by", "as", "at", "from", "that", "this", "not", "no", "if", "into", "after",
    "before", "are", "was", "one", "two", "all", "can", "does", "do", "than", "then", "only",
    "but", "use", "using", "fix", "fixes", "add", "remove", "up", "out", "so", "s", "net",
];

/// Words as compared: lower case, no stop words, no bare numbers (CVE years,
/// versions), cut to five letters so that migrate, migrated and migration meet.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| w.len() > 1 && !w.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_ascii_lowercase)
        .filter(|w| !STOP.contains(&w.as_str()))
        .map(|w| {
            if w.contains('_') {
                w
            } else {
                w.chars().take(5).collect()
            }
        })
        .collect()
}

/// A title as compared: lower case, words only (drops `(CVE-...)` and `[x86]` noise).
fn normal(title: &str) -> String {
    let t = title.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|r| r.split_once("] "))
        .map_or(t, |(_, r)| r);
    let t = t.split(" (CVE-").next().unwrap_or(t);
    t.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The case's commit titles: the fix it detects first, then its references.
pub fn titles(case: &Case) -> Vec<String> {
    let mut out: Vec<String> = case.detects.iter().map(|f| f.commit.clone()).collect();
    for r in &case.references {
        if let Reference::Commit { title, .. } = r {
            if !out.contains(title) {
                out.push(title.clone());
            }
        }
    }
    out
}

/// Every entry scored against the case, best first (ties keep changelog order).
pub fn rank(case: &Case, entries: &[&Entry]) -> Vec<Candidate> {
    let titles = titles(case);
    let exact: BTreeSet<String> = titles.iter().map(|t| normal(t)).collect();
    // Query words and their weight: title words count three times summary words.
    let mut query: BTreeMap<String, f64> = BTreeMap::new();
    for t in &titles {
        for w in words(t) {
            *query.entry(w).or_default() = 3.0;
        }
    }
    let prose = format!(
        "{} {} {}",
        case.summary,
        case.tags.join(" "),
        case.id.replace('/', " ")
    );
    for w in words(&prose) {
        query.entry(w).or_insert(1.0);
    }
    // Inverse document frequency over these entries: "udp" matters, "tcp" less so
    // when half of them touch tcp.
    let docs: Vec<BTreeSet<String>> = entries
        .iter()
        .map(|e| words(&e.text).into_iter().collect())
        .collect();
    let n = docs.len().max(1) as f64;
    let idf = |w: &str| {
        let df = docs.iter().filter(|d| d.contains(w)).count() as f64;
        (1.0 + n / (1.0 + df)).ln()
    };
    let mut out: Vec<Candidate> = entries
        .iter()
        .zip(&docs)
        .map(|(e, doc)| {
            if exact.contains(&normal(&e.text)) {
                return Candidate {
                    version: e.version.clone(),
                    text: e.text.clone(),
                    score: 1000.0,
                    matched: vec!["title".into()],
                };
            }
            let mut matched = Vec::new();
            let mut score = 0.0;
            for (w, weight) in &query {
                if doc.contains(w) {
                    score += weight * idf(w);
                    matched.push(w.clone());
                }
            }
            // The subsystem prefix ("udp:", "tcp:") naming one of the case's words.
            if let Some((prefix, _)) = e.text.split_once(": ") {
                if words(prefix).iter().any(|w| query.contains_key(w)) && !prefix.contains(' ') {
                    score += 2.0;
                }
            }
            Candidate {
                version: e.version.clone(),
                text: e.text.clone(),
                score: (score * 100.0).round() / 100.0,
                matched,
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn case(detects: Option<&str>) -> Case {
        let fix = detects
            .map(|t| {
                format!(
                    "detects:\n  commit: \"{t}\"\n  version: \"7.0\"\n  obs: socket.a\n  eq: ok\n"
                )
            })
            .unwrap_or_default();
        let text = format!(
            "summary: UDP bind of a wildcard after eleven specific binds on one port.\ntags: [udp, bind, wildcard]\n{fix}steps:\n  - socket: a\n    proto: udp\n"
        );
        crate::case::load_str(
            "udp/wildcard_after_eleven",
            Path::new("cases/x.yaml"),
            &text,
        )
        .unwrap()
    }

    fn entries() -> Vec<Entry> {
        [
            "tcp: fix a race in tcp_v4_rcv",
            "udp: Fix wildcard bind conflict check when using hash2 (CVE-2026-31503)",
            "ipv6: udp: fix a bind corner case",
            "drm/amdgpu: add bounds check",
        ]
        .iter()
        .map(|t| Entry {
            version: "6.12.85-1".into(),
            text: t.to_string(),
        })
        .collect()
    }

    #[test]
    fn exact_detects_title_ranks_first() {
        let e = entries();
        let refs: Vec<&Entry> = e.iter().collect();
        let got = rank(
            &case(Some(
                "udp: Fix wildcard bind conflict check when using hash2",
            )),
            &refs,
        );
        assert!(got[0].text.starts_with("udp: Fix wildcard bind"), "{got:?}");
        assert_eq!(got[0].matched, ["title"]);
        assert_eq!(got.last().unwrap().score, 0.0, "{got:?}");
    }

    #[test]
    fn without_a_title_shared_words_decide() {
        let e = entries();
        let refs: Vec<&Entry> = e.iter().collect();
        let got = rank(&case(None), &refs);
        assert!(got[0].text.starts_with("udp: Fix wildcard"), "{got:?}");
        assert!(got[1].text.starts_with("ipv6: udp"), "{got:?}");
        assert!(
            got[0].score > got[1].score && got[1].score > got[2].score,
            "{got:?}"
        );
    }

    #[test]
    fn normalised_titles() {
        assert_eq!(normal("[x86] udp: Fix X (CVE-1)"), "udp fix x");
        assert_eq!(normal("udp: Fix X"), "udp fix x");
        assert_eq!(
            words("Migration migrated 2026 sk_data_ready()"),
            ["migra", "migra", "sk_data_ready"]
        );
    }

    /// The 6.1.176 changelog's neighbours of the real fix (see cases/FINDINGS.md):
    /// with only the reference title and the summary, the fix comes first.
    #[test]
    fn the_epoll_wakeup_fix_outranks_other_tcp_entries() {
        let text = "summary: >\n  A thread sleeping in epoll_wait() on listener a must be woken when tcp_migrate_req\n  moves a closed sibling's queued connections onto a. The migration does not wake the\n  target listener; the migrated connections sit unaccepted.\ntags: [tcp, reuseport, close, migrate, epoll]\nreferences:\n  - commit: \"tcp: Migrate TCP_ESTABLISHED/TCP_SYN_RECV sockets in accept queues.\"\n    version: \"5.14\"\nsteps:\n  - socket: a\n";
        let case = crate::case::load_str(
            "reuseport/migrate_wakes_epoll_waiter",
            Path::new("cases/x.yaml"),
            text,
        )
        .unwrap();
        let entries: Vec<Entry> = [
            "smb: server: fix max_connections off-by-one in tcp accept path",
            "epoll: use refcount to reduce ep_mutex contention",
            "tcp: call sk_data_ready() after listener migration (CVE-2026-46015)",
            "xfrm: route MIGRATE notifications to caller's netns",
            "vsock/virtio: fix accept queue count leak on transport mismatch (CVE-2026-46214)",
            "netfilter: conntrack: tcp: do not force CLOSE on invalid-seq RST without direction check",
            "tcp: Fix imbalanced icsk_accept_queue count.",
        ]
        .iter()
        .map(|t| Entry { version: "6.1.176-1".into(), text: t.to_string() })
        .collect();
        let refs: Vec<&Entry> = entries.iter().collect();
        let got = rank(&case, &refs);
        assert!(
            got[0].text.starts_with("tcp: call sk_data_ready()"),
            "{got:#?}"
        );
    }
}
