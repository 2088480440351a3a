//! Every released kernel package the mirror's indexes offer, grouped into series
//! (`6.1`, `6.12`, `mainline`), and the cached, parsed form of those indexes.
//!
//! A release is one Debian build of the flavour's image package. The same source
//! version built for an older suite (`6.1.172-1~deb11u1`, `6.12.43-1~bpo12+1`) is the
//! same release as its native build, which is preferred when both exist.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::catalogue::{Mirror, ReleaseSuites};
use super::debian_index::{self, IndexEntry};
use super::debversion;
use super::lock::LockedKernel;

/// The series made of the suites named in `mainline:` (every release they carry).
pub const MAINLINE: &str = "mainline";

/// Parsed indexes are reused for this long before the suites' InRelease files are
/// fetched again (an index is downloaded again only when its hash changed).
const MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// Bump when `Release` changes shape: an older cache file is then parsed again.
const CACHE_FORMAT: u32 = 1;

/// One released kernel build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// How it is named on the command line and in results: the upstream version,
    /// with the Debian revision when it is not 1 (`6.1.176`, `6.1.192-3`).
    pub label: String,
    /// Upstream kernel version (`6.1.176`).
    pub upstream: String,
    /// The ABI part of the package name (`6.1.0-50`, `6.12.90+deb13.1`).
    pub abi: String,
    /// Every suite (`mirror/suite`) that carries this build or another build of it.
    pub suites: Vec<String>,
    /// The package holding the kernel image, as pinned.
    pub pin: LockedKernel,
    /// The package holding the changelog when it is not the image package
    /// (`linux-base-*` in the split layout), if the index lists it.
    pub doc: Option<LockedKernel>,
}

impl Release {
    /// `major.minor` of the upstream version.
    pub fn series(&self) -> String {
        major_minor(&self.upstream)
    }
}

/// What the mirror offers, as last read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseIndex {
    pub format: u32,
    /// Seconds since the epoch when the indexes were read.
    pub fetched_at: u64,
    /// Sorted by version (upstream, then Debian revision).
    pub releases: Vec<Release>,
    /// Suites of the `mainline` series (`mirror/suite`).
    pub mainline: Vec<String>,
}

impl ReleaseIndex {
    /// Every series name, longterm series by version, `mainline` last.
    pub fn series_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.releases.iter().map(Release::series).collect();
        names.sort_by(|a, b| debversion::compare(a, b));
        names.dedup();
        if !self.mainline.is_empty() {
            names.push(MAINLINE.to_string());
        }
        names
    }

    /// The releases of a series in version order; `all` is every release.
    pub fn series(&self, name: &str) -> Result<Vec<&Release>> {
        let picked: Vec<&Release> = match name {
            "all" => self.releases.iter().collect(),
            MAINLINE => self
                .releases
                .iter()
                .filter(|r| r.suites.iter().any(|s| self.mainline.contains(s)))
                .collect(),
            _ => self
                .releases
                .iter()
                .filter(|r| r.series() == name)
                .collect(),
        };
        if picked.is_empty() {
            bail!(
                "unknown kernel series `{name}`: the mirror's indexes offer {}",
                self.series_names().join(", ")
            );
        }
        Ok(picked)
    }

    /// A release by label (`6.1.192-3`) or upstream version (`6.1.192`: the newest
    /// Debian revision of it).
    pub fn find(&self, spec: &str) -> Result<&Release> {
        if let Some(r) = self.releases.iter().find(|r| r.label == spec) {
            return Ok(r);
        }
        if let Some(r) = self.releases.iter().rev().find(|r| r.upstream == spec) {
            return Ok(r);
        }
        let series = major_minor(spec);
        let near: Vec<&str> = self
            .releases
            .iter()
            .filter(|r| r.series() == series)
            .map(|r| r.label.as_str())
            .collect();
        if near.is_empty() {
            bail!(
                "unknown kernel release `{spec}`: no series {series} on the mirror (series: {})",
                self.series_names().join(", ")
            );
        }
        bail!(
            "unknown kernel release `{spec}`: the mirror's {series} releases are {}",
            near.join(", ")
        )
    }
}

/// Whether a `--kernel` value names a release (three version numbers) rather than
/// a catalogue id or a file.
pub fn looks_like_release(spec: &str) -> bool {
    let upstream = spec.split_once('-').map_or(spec, |(u, _)| u);
    let parts: Vec<&str> = upstream.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `6.1.176` -> `6.1`.
pub fn major_minor(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// `6.1.192-3~deb11u1` -> (`6.1.192`, `6.1.192-3`): the upstream version and the
/// Debian version without a backport or security-rebuild suffix.
pub fn split_version(version: &str) -> (String, String) {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    let base = v.split('~').next().unwrap_or(v);
    let upstream = base.rsplit_once('-').map_or(base, |(u, _)| u);
    (upstream.to_string(), base.to_string())
}

/// The label a build is known by: upstream, plus `-rev` when the revision is not 1.
pub fn label_of(version: &str) -> String {
    let (upstream, base) = split_version(version);
    match base.rsplit_once('-') {
        Some((_, "1")) | None => upstream,
        Some(_) => base,
    }
}

/// Loads the release index: the cached one when younger than six hours (and
/// `refresh` is false), else the suites' indexes read again. When the mirror
/// cannot be reached, an older cache is used with a warning.
pub fn load(
    spec: &ReleaseSuites,
    cache: &Path,
    refresh: bool,
    progress: bool,
) -> Result<ReleaseIndex> {
    let path = cache_path(cache);
    let cached = read_cache(&path, spec);
    if let Some(idx) = &cached {
        let age = now().saturating_sub(idx.fetched_at);
        if !refresh && age < MAX_AGE.as_secs() {
            return Ok(idx.clone());
        }
    }
    match read_mirror(spec, cache, progress) {
        Ok(idx) => {
            let text = serde_json::to_string(&idx)? + "\n";
            // A cache that cannot be written only costs time next run.
            if std::fs::create_dir_all(cache).is_ok() {
                let _ = crate::atomic_file::write_atomic(&path, text.as_bytes());
            }
            Ok(idx)
        }
        Err(e) => match cached {
            Some(idx) => {
                eprintln!(
                    "warning: could not read the mirror's indexes ({e:#}); using the list from {}",
                    path.display()
                );
                Ok(idx)
            }
            None => Err(e),
        },
    }
}

fn cache_path(cache: &Path) -> PathBuf {
    cache.join("releases.json")
}

fn read_cache(path: &Path, spec: &ReleaseSuites) -> Option<ReleaseIndex> {
    let text = std::fs::read_to_string(path).ok()?;
    let idx: ReleaseIndex = serde_json::from_str(&text).ok()?;
    // A changed suite list in the catalogue invalidates the cache.
    (idx.format == CACHE_FORMAT && idx.mainline == spec.mainline_keys()).then_some(idx)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The package names of one flavour: the image (or split-layout binary) packages,
/// and the `linux-base-*` packages that carry the changelog in the split layout.
pub fn package_regex(flavour: &str) -> Regex {
    let flavour = regex::escape(flavour);
    Regex::new(&format!(
        r"^linux-(image|binary|base)-(\d+\.\d+\.\d+[^ ]*?)-{flavour}$"
    ))
    .expect("static regex")
}

fn read_mirror(spec: &ReleaseSuites, cache: &Path, progress: bool) -> Result<ReleaseIndex> {
    let re = package_regex(&spec.flavour);
    let mut found: Vec<(Mirror, String, IndexEntry)> = Vec::new();
    for s in &spec.suites {
        let what = || format!("suite {}/{}", s.mirror, s.suite);
        let index =
            debian_index::fetch_index(s.mirror, &s.suite, cache, progress).with_context(what)?;
        for e in debian_index::read_index(&index, &re).with_context(what)? {
            found.push((s.mirror, s.suite.clone(), e));
        }
    }
    Ok(ReleaseIndex {
        format: CACHE_FORMAT,
        fetched_at: now(),
        releases: group(&re, found),
        mainline: spec.mainline_keys(),
    })
}

/// Turns index entries into releases: one per Debian version (backport builds
/// folded into the native one), the image holder picked, the changelog holder noted.
fn group(re: &Regex, found: Vec<(Mirror, String, IndexEntry)>) -> Vec<Release> {
    struct Build {
        abi: String,
        image: Option<LockedKernel>,
        image_size: u64,
        doc: Option<LockedKernel>,
        suites: Vec<String>,
    }
    // Keyed by the exact Debian version: a backport build is its own build here.
    let mut builds: BTreeMap<String, Build> = BTreeMap::new();
    for (mirror, suite, e) in found {
        let Some(c) = re.captures(&e.package) else {
            continue;
        };
        let (kind, abi) = (c[1].to_string(), c[2].to_string());
        let pin = LockedKernel {
            mirror,
            suite: suite.clone(),
            package: e.package.clone(),
            version: e.version.clone(),
            filename: e.filename.clone(),
            sha256: e.sha256.clone(),
            size: e.size,
        };
        let b = builds.entry(e.version.clone()).or_insert(Build {
            abi: abi.clone(),
            image: None,
            image_size: 0,
            doc: None,
            suites: Vec::new(),
        });
        let key = format!("{mirror}/{suite}");
        if !b.suites.contains(&key) {
            b.suites.push(key);
        }
        if kind == "base" {
            b.doc.get_or_insert(pin);
        } else if b.image.is_none() || e.installed_size > b.image_size {
            // linux-image-* is a tiny meta package next to linux-binary-* in the split layout.
            b.image_size = e.installed_size;
            b.abi = abi;
            b.image = Some(pin);
        }
    }
    let mut by_label: BTreeMap<String, Release> = BTreeMap::new();
    for (version, b) in builds {
        let Some(pin) = b.image else { continue };
        let (upstream, _) = split_version(&version);
        let label = label_of(&version);
        let native = !version.contains('~');
        match by_label.get_mut(&label) {
            Some(r) => {
                for s in b.suites {
                    if !r.suites.contains(&s) {
                        r.suites.push(s);
                    }
                }
                if native && r.pin.version.contains('~') {
                    r.pin = pin;
                    r.abi = b.abi;
                    r.doc = b.doc;
                }
            }
            None => {
                by_label.insert(
                    label.clone(),
                    Release {
                        label,
                        upstream,
                        abi: b.abi,
                        suites: b.suites,
                        pin,
                        doc: b.doc,
                    },
                );
            }
        }
    }
    let mut releases: Vec<Release> = by_label.into_values().collect();
    releases.sort_by(compare_releases);
    releases
}

/// Version order: upstream version, then Debian revision.
pub fn compare_releases(a: &Release, b: &Release) -> Ordering {
    let (_, ba) = split_version(&a.pin.version);
    let (_, bb) = split_version(&b.pin.version);
    debversion::compare(&ba, &bb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(package: &str, version: &str, installed: u64) -> IndexEntry {
        IndexEntry {
            package: package.into(),
            version: version.into(),
            filename: format!("pool/{package}_{version}.deb"),
            sha256: "ab".repeat(32),
            size: 10,
            installed_size: installed,
        }
    }

    fn sample() -> Vec<Release> {
        let re = package_regex("cloud-amd64");
        let d = |s: &str| (Mirror::Debian, s.to_string());
        let sec = |s: &str| (Mirror::DebianSecurity, s.to_string());
        let rows = vec![
            (
                sec("bookworm-security"),
                entry("linux-image-6.1.0-50-cloud-amd64", "6.1.176-1", 100),
            ),
            (
                d("bookworm"),
                entry("linux-image-6.1.0-50-cloud-amd64", "6.1.176-1", 100),
            ),
            (
                sec("bullseye-security"),
                entry(
                    "linux-image-6.1.0-0.deb11.50-cloud-amd64",
                    "6.1.176-1~deb11u1",
                    100,
                ),
            ),
            (
                sec("bookworm-security"),
                entry("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2", 100),
            ),
            (
                sec("bookworm-security"),
                entry("linux-image-6.1.0-57-cloud-amd64", "6.1.192-3", 100),
            ),
            (
                d("bookworm"),
                entry("linux-image-6.1.0-47-cloud-amd64", "6.1.170-3", 100),
            ),
            (
                sec("bookworm-security"),
                entry("linux-image-6.1-cloud-amd64", "6.1.192-3", 1),
            ),
            (
                sec("bookworm-security"),
                entry("linux-image-6.1.0-57-cloud-amd64-dbg", "6.1.192-3", 1),
            ),
            (
                d("bookworm-backports"),
                entry(
                    "linux-image-6.12.43+deb12-cloud-amd64",
                    "6.12.43-1~bpo12+1",
                    100,
                ),
            ),
            (
                d("trixie-backports"),
                entry("linux-image-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1", 15),
            ),
            (
                d("trixie-backports"),
                entry(
                    "linux-binary-7.3.4+deb13-cloud-amd64",
                    "7.3.4-1~bpo13+1",
                    13000,
                ),
            ),
            (
                d("trixie-backports"),
                entry("linux-base-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1", 900),
            ),
            (
                d("trixie-backports"),
                entry(
                    "linux-image-6.16.3+deb13-cloud-amd64",
                    "6.16.3-1~bpo13+1",
                    100,
                ),
            ),
        ];
        group(&re, rows.into_iter().map(|((m, s), e)| (m, s, e)).collect())
    }

    #[test]
    fn groups_builds_into_releases_in_version_order() {
        let rel = sample();
        let labels: Vec<&str> = rel.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "6.1.170-3",
                "6.1.176",
                "6.1.192-2",
                "6.1.192-3",
                "6.12.43",
                "6.16.3",
                "7.3.4"
            ]
        );
        let r176 = &rel[1];
        assert_eq!(r176.pin.version, "6.1.176-1", "the native build wins");
        assert_eq!(r176.abi, "6.1.0-50");
        assert_eq!(r176.suites.len(), 3, "{:?}", r176.suites);
        let r734 = rel.last().unwrap();
        assert_eq!(r734.pin.package, "linux-binary-7.3.4+deb13-cloud-amd64");
        assert_eq!(
            r734.doc.as_ref().unwrap().package,
            "linux-base-7.3.4+deb13-cloud-amd64"
        );
        assert_eq!(
            rel[4].pin.version, "6.12.43-1~bpo12+1",
            "backport-only build kept"
        );
    }

    #[test]
    fn series_and_lookup() {
        let idx = ReleaseIndex {
            format: CACHE_FORMAT,
            fetched_at: 0,
            releases: sample(),
            mainline: vec!["debian/trixie-backports".into()],
        };
        assert_eq!(
            idx.series_names(),
            ["6.1", "6.12", "6.16", "7.3", "mainline"]
        );
        assert_eq!(idx.series("6.1").unwrap().len(), 4);
        let main: Vec<&str> = idx
            .series("mainline")
            .unwrap()
            .iter()
            .map(|r| r.label.as_str())
            .collect();
        assert_eq!(main, ["6.16.3", "7.3.4"]);
        assert_eq!(
            idx.find("6.1.192").unwrap().label,
            "6.1.192-3",
            "newest revision"
        );
        assert_eq!(idx.find("6.1.192-2").unwrap().abi, "6.1.0-56");
        assert_eq!(idx.find("6.1.176").unwrap().label, "6.1.176");
        let err = idx.find("6.1.999").unwrap_err().to_string();
        assert!(err.contains("6.1.170-3, 6.1.176"), "{err}");
        let err = idx.find("4.19.1").unwrap_err().to_string();
        assert!(err.contains("no series 4.19"), "{err}");
        let err = idx.series("9.9").unwrap_err().to_string();
        assert!(
            err.contains("unknown kernel series `9.9`") && err.contains("mainline"),
            "{err}"
        );
    }

    #[test]
    fn names_and_versions() {
        assert!(looks_like_release("6.1.176"));
        assert!(looks_like_release("6.1.192-3"));
        assert!(!looks_like_release("6.1"));
        assert!(!looks_like_release("./bzImage"));
        assert!(!looks_like_release("6.1/all"));
        assert_eq!(
            split_version("6.12.43-1~bpo12+1"),
            ("6.12.43".into(), "6.12.43-1".into())
        );
        assert_eq!(label_of("6.1.172-1~deb11u1"), "6.1.172");
        assert_eq!(label_of("6.1.170-3"), "6.1.170-3");
        assert_eq!(major_minor("6.12.43"), "6.12");
    }
}
