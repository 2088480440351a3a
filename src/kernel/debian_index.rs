//! Debian archive indexes: fetch (and cache) a suite's `Packages.xz`, parse it, pick a package.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use regex::Regex;

use super::catalogue::Mirror;
use super::debversion;
use super::download::{self, Expect};

/// The fields of one `Packages` paragraph that provisioning needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexEntry {
    pub package: String,
    pub version: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
    pub installed_size: u64,
}

const INDEX_PATH: &str = "main/binary-amd64/Packages.xz";

/// Downloads (or reuses) `dists/<suite>/main/binary-amd64/Packages.xz`, returning its cached path.
///
/// The small `InRelease` file is always fetched: its SHA256 list says whether the
/// cached index is current, and the index is then fetched by hash so it cannot
/// change under us mid-download. (The InRelease signature is not checked.)
pub fn fetch_index(mirror: Mirror, suite: &str, cache: &Path, progress: bool) -> Result<PathBuf> {
    let base = mirror.base_url();
    let what = format!("Debian suite '{suite}' on {mirror}");
    let release_url = format!("{base}/dists/{suite}/InRelease");
    let release = download::get_text(&release_url, &what)?;
    let (sha, size) = release_sha256(&release, INDEX_PATH)
        .with_context(|| format!("{what}: {release_url} lists no SHA256 for {INDEX_PATH}"))?;
    let dest = cache
        .join("debian-index")
        .join(mirror.to_string())
        .join(suite)
        .join("Packages.xz");
    let expect = Expect {
        sha256: Some(&sha),
        size: Some(size),
    };
    let by_hash = format!("{base}/dists/{suite}/main/binary-amd64/by-hash/SHA256/{sha}");
    match download::fetch(&by_hash, &dest, &expect, &what, progress) {
        Ok(p) => Ok(p),
        // Some mirrors lack by-hash; the plain path is equally verified.
        Err(_) => download::fetch(
            &format!("{base}/dists/{suite}/{INDEX_PATH}"),
            &dest,
            &expect,
            &what,
            progress,
        ),
    }
}

/// Finds `path` in the `SHA256:` section of a Release/InRelease file.
pub fn release_sha256(release: &str, path: &str) -> Option<(String, u64)> {
    let mut in_sha256 = false;
    for line in release.lines() {
        if !line.starts_with(' ') {
            in_sha256 = line.trim_end() == "SHA256:";
            continue;
        }
        if in_sha256 {
            let mut f = line.split_whitespace();
            if let (Some(h), Some(s), Some(p)) = (f.next(), f.next(), f.next()) {
                if p == path {
                    return Some((h.to_string(), s.parse().ok()?));
                }
            }
        }
    }
    None
}

/// Parses every paragraph of the index at `path` whose package name matches `re`.
pub fn read_index(path: &Path, re: &Regex) -> Result<Vec<IndexEntry>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let xz = xz2::read::XzDecoder::new_multi_decoder(BufReader::new(f));
    parse_index(BufReader::new(xz), |name| re.is_match(name))
        .with_context(|| format!("parsing {}", path.display()))
}

/// Streams a `Packages` file, keeping only paragraphs whose `Package:` passes `want`.
pub fn parse_index<R: BufRead>(r: R, want: impl Fn(&str) -> bool) -> Result<Vec<IndexEntry>> {
    let mut out = Vec::new();
    let mut cur: Option<IndexEntry> = None;
    let mut skipping = false;
    for line in r.lines() {
        let line = line?;
        if line.trim().is_empty() {
            finish(&mut cur, &mut out)?;
            skipping = false;
            continue;
        }
        if skipping || line.starts_with([' ', '\t']) {
            continue; // continuation lines carry nothing we need
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if key == "Package" {
            if want(value) {
                cur = Some(IndexEntry {
                    package: value.to_string(),
                    ..Default::default()
                });
            } else {
                skipping = true;
            }
            continue;
        }
        let Some(e) = cur.as_mut() else { continue };
        match key {
            "Version" => e.version = value.to_string(),
            "Filename" => e.filename = value.to_string(),
            "SHA256" => e.sha256 = value.to_string(),
            "Size" => {
                e.size = value
                    .parse()
                    .with_context(|| format!("bad Size {value:?} for {}", e.package))?
            }
            "Installed-Size" => e.installed_size = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    finish(&mut cur, &mut out)?;
    Ok(out)
}

fn finish(cur: &mut Option<IndexEntry>, out: &mut Vec<IndexEntry>) -> Result<()> {
    if let Some(e) = cur.take() {
        if e.version.is_empty() || e.filename.is_empty() || e.sha256.is_empty() || e.size == 0 {
            bail!(
                "package {} has an incomplete paragraph (Version/Filename/SHA256/Size)",
                e.package
            );
        }
        out.push(e);
    }
    Ok(())
}

/// Picks the newest version; among equal versions the largest installed package,
/// because in the split layout (forky, newer backports) `linux-image-*` is a tiny
/// meta package next to the `linux-binary-*` that holds the vmlinuz.
pub fn pick_newest(entries: &[IndexEntry]) -> Option<&IndexEntry> {
    entries.iter().max_by(|a, b| {
        debversion::compare(&a.version, &b.version)
            .then(a.installed_size.cmp(&b.installed_size))
            .then(a.size.cmp(&b.size))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "\
Package: linux-image-7.2.12+deb14-cloud-amd64
Source: linux-signed-amd64 (7.2.12+1)
Version: 7.2.12-1
Installed-Size: 15
Depends: dracut | initramfs-tools (>= 0.120+deb8u2),
 linux-binary-7.2.12+deb14-cloud-amd64 (= 7.2.12-1)
Description: Linux 7.2.12 for x86-64 cloud
Filename: pool/main/l/linux-signed-amd64/linux-image-7.2.12+deb14-cloud-amd64_7.2.12-1_amd64.deb
Size: 1916
SHA256: a6f348408cf2fb86a8cbd8aff58919a35275d25263dfc9085296146b2bf49d9f

Package: linux-binary-7.2.12+deb14-cloud-amd64
Version: 7.2.12-1
Installed-Size: 13708
Filename: pool/main/l/linux-signed-amd64/linux-binary-7.2.12+deb14-cloud-amd64_7.2.12-1_amd64.deb
Size: 13710360
SHA256: 43451b88872589d518acba127482df16fab53e2a51e92811cbd6221ca92cb6bf

Package: linux-binary-7.2.9+deb14-cloud-amd64
Version: 7.2.9-1
Installed-Size: 13700
Filename: pool/main/l/linux-signed-amd64/linux-binary-7.2.9+deb14-cloud-amd64_7.2.9-1_amd64.deb
Size: 13700000
SHA256: 1111111111111111111111111111111111111111111111111111111111111111

Package: linux-image-7.2.12+deb14-cloud-amd64-dbg
Version: 7.2.12-1
Filename: pool/x.deb
Size: 1
SHA256: 00
";

    fn re() -> Regex {
        Regex::new(r"^linux-(image|binary)-7\.2\.\d+\+deb14-cloud-amd64$").unwrap()
    }

    #[test]
    fn parses_matching_paragraphs_only() {
        let re = re();
        let got = parse_index(INDEX.as_bytes(), |n| re.is_match(n)).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].package, "linux-image-7.2.12+deb14-cloud-amd64");
        assert_eq!(got[0].size, 1916);
        assert_eq!(got[0].installed_size, 15);
        assert_eq!(got[1].filename, "pool/main/l/linux-signed-amd64/linux-binary-7.2.12+deb14-cloud-amd64_7.2.12-1_amd64.deb");
        assert_eq!(
            got[1].sha256,
            "43451b88872589d518acba127482df16fab53e2a51e92811cbd6221ca92cb6bf"
        );
    }

    #[test]
    fn picks_newest_and_the_binary_over_the_meta_package() {
        let re = re();
        let got = parse_index(INDEX.as_bytes(), |n| re.is_match(n)).unwrap();
        let best = pick_newest(&got).unwrap();
        assert_eq!(best.package, "linux-binary-7.2.12+deb14-cloud-amd64");
        assert_eq!(best.version, "7.2.12-1");
        assert!(pick_newest(&[]).is_none());
    }

    #[test]
    fn incomplete_paragraph_is_an_error() {
        let text = "Package: a\nVersion: 1\n\n";
        assert!(parse_index(text.as_bytes(), |_| true).is_err());
    }

    #[test]
    fn finds_index_hash_in_release() {
        let release = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nSuite: forky\nMD5Sum:\n 11c167e715f255b51ad5152442e2f44f 10093888 main/binary-amd64/Packages.xz\nSHA256:\n aa 5 main/binary-amd64/Packages\n 3ee7 10093888 main/binary-amd64/Packages.xz\n-----BEGIN PGP SIGNATURE-----\n";
        assert_eq!(
            release_sha256(release, INDEX_PATH),
            Some(("3ee7".into(), 10093888))
        );
        assert_eq!(release_sha256(release, "main/nope"), None);
    }
}
