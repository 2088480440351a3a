//! The kernel catalogue: serde types for `vm/kernels.yaml` and its validation.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer};

/// All kernels sockmatrix knows how to obtain, loaded from `vm/kernels.yaml`.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// The file it was loaded from (for error messages).
    pub path: PathBuf,
    /// Directory relative paths in the catalogue are resolved against.
    pub base_dir: PathBuf,
    pub default: Vec<String>,
    pub kernels: Vec<KernelEntry>,
    /// Where every released kernel of a series is looked up (`releases:`).
    pub releases: Option<ReleaseSuites>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    #[serde(deserialize_with = "ids")]
    default: Vec<String>,
    kernels: Vec<KernelEntry>,
    #[serde(default)]
    releases: Option<ReleaseSuites>,
}

/// `releases:`: the suites whose indexes list every release of a flavour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSuites {
    /// Package name suffix, e.g. `cloud-amd64`.
    pub flavour: String,
    pub suites: Vec<SuiteRef>,
    /// Suite names whose releases also form the `mainline` series.
    #[serde(default)]
    pub mainline: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteRef {
    pub mirror: Mirror,
    pub suite: String,
}

impl ReleaseSuites {
    /// `mirror/suite` of every suite in `mainline`.
    pub fn mainline_keys(&self) -> Vec<String> {
        self.suites
            .iter()
            .filter(|s| self.mainline.contains(&s.suite))
            .map(|s| format!("{}/{}", s.mirror, s.suite))
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelEntry {
    #[serde(deserialize_with = "id")]
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    pub source: KernelSource,
    /// The QEMU machine this kernel boots on when not microvm (`pc` for kernels that
    /// predate microvm's boot path).
    #[serde(default)]
    pub machine: Option<crate::qemu::Machine>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawSource")]
pub enum KernelSource {
    Debian(DebianSource),
    Local(LocalSource),
    SourceBuild(SourceBuildSpec),
}

/// `source:` as written: a map with exactly one of these keys. Spelled out as a
/// struct because YAML libraries disagree on how an externally tagged enum looks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    debian: Option<DebianSource>,
    local: Option<LocalSource>,
    source_build: Option<SourceBuildSpec>,
}

impl TryFrom<RawSource> for KernelSource {
    type Error = String;
    fn try_from(r: RawSource) -> std::result::Result<Self, String> {
        match (r.debian, r.local, r.source_build) {
            (Some(d), None, None) => Ok(KernelSource::Debian(d)),
            (None, Some(l), None) => Ok(KernelSource::Local(l)),
            (None, None, Some(b)) => Ok(KernelSource::SourceBuild(b)),
            _ => Err("`source` needs exactly one of `debian`, `local`, `source_build`".into()),
        }
    }
}

impl KernelSource {
    pub fn kind(&self) -> &'static str {
        match self {
            KernelSource::Debian(_) => "debian",
            KernelSource::Local(_) => "local",
            KernelSource::SourceBuild(_) => "source_build",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSource {
    /// e.g. `bookworm-security`.
    pub suite: String,
    pub mirror: Mirror,
    /// Regex matched against the whole `Package:` name.
    pub package: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mirror {
    Debian,
    DebianSecurity,
}

impl Mirror {
    /// Base URL; plain HTTP is fine because every file is checked against a sha256.
    pub fn base_url(self) -> String {
        let (var, default) = match self {
            Mirror::Debian => ("SOCKMATRIX_DEBIAN_MIRROR", "http://deb.debian.org/debian"),
            Mirror::DebianSecurity => (
                "SOCKMATRIX_DEBIAN_SECURITY_MIRROR",
                "http://deb.debian.org/debian-security",
            ),
        };
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
            .trim_end_matches('/')
            .to_string()
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mirror::Debian => "debian",
            Mirror::DebianSecurity => "debian-security",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSource {
    /// A bzImage; relative paths are relative to the catalogue's directory.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceBuildSpec {
    /// Release tarball (`.tar.xz` or `.tar.gz`).
    pub url: String,
    /// Checked when present; `null` means not yet known.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Kconfig fragment merged over `x86_64_defconfig`; relative to the catalogue's directory.
    pub config_fragment: PathBuf,
    /// Suggested compiler (old kernels do not build with a current gcc).
    #[serde(default)]
    pub gcc: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
}

impl Catalogue {
    pub fn load(path: &Path) -> Result<Catalogue> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading kernel catalogue {}", path.display()))?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, path, &base_dir)
    }

    /// Parses and validates catalogue text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Catalogue> {
        let file: CatalogueFile = crate::yaml::from_str(text)
            .with_context(|| format!("parsing kernel catalogue {}", path.display()))?;
        let cat = Catalogue {
            path: path.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            default: file.default,
            kernels: file.kernels,
            releases: file.releases,
        };
        cat.validate()?;
        Ok(cat)
    }

    fn validate(&self) -> Result<()> {
        let mut seen = BTreeSet::new();
        for k in &self.kernels {
            if k.id.is_empty() || k.id.contains(['/', '\\']) || k.id.starts_with('.') {
                bail!(
                    "{}: kernel id {:?} is not a plain name",
                    self.path.display(),
                    k.id
                );
            }
            if !seen.insert(k.id.as_str()) {
                bail!("{}: kernel '{}' is listed twice", self.path.display(), k.id);
            }
            if let KernelSource::Debian(d) = &k.source {
                regex::Regex::new(&d.package).with_context(|| {
                    format!(
                        "kernel '{}' in {}: invalid package regex {:?}",
                        k.id,
                        self.path.display(),
                        d.package
                    )
                })?;
            }
        }
        if let Some(r) = &self.releases {
            for m in &r.mainline {
                if !r.suites.iter().any(|s| &s.suite == m) {
                    bail!(
                        "{}: `releases.mainline` names suite '{m}', which is not under `releases.suites`",
                        self.path.display()
                    );
                }
            }
        }
        for id in &self.default {
            if !seen.contains(id.as_str()) {
                bail!(
                    "{}: default kernel '{}' has no entry under `kernels`",
                    self.path.display(),
                    id
                );
            }
        }
        Ok(())
    }

    pub fn default_ids(&self) -> Vec<String> {
        self.default.clone()
    }

    pub fn ids(&self) -> Vec<String> {
        self.kernels.iter().map(|k| k.id.clone()).collect()
    }

    pub fn get(&self, id: &str) -> Option<&KernelEntry> {
        self.kernels.iter().find(|k| k.id == id)
    }

    /// Like `get`, with an error listing the known ids.
    pub fn entry(&self, id: &str) -> Result<&KernelEntry> {
        self.get(id).with_context(|| {
            format!(
                "kernel '{}' is not in {} (known: {})",
                id,
                self.path.display(),
                self.ids().join(", ")
            )
        })
    }

    /// Resolves a path written in the catalogue.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Kernel ids must be strings: unquoted `5.10` in YAML is the float 5.1.
fn id<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    d.deserialize_any(IdVisitor)
}

fn ids<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Id(#[serde(deserialize_with = "id")] String);
    Ok(Vec::<Id>::deserialize(d)?
        .into_iter()
        .map(|i| i.0)
        .collect())
}

struct IdVisitor;

impl serde::de::Visitor<'_> for IdVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a quoted kernel id such as \"6.1\"")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<String, E> {
        Err(E::custom(format!(
            "kernel id {v} is a number; quote it (\"5.10\" unquoted reads as 5.1)"
        )))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<String, E> {
        Err(E::custom(format!("kernel id {v} is a number; quote it")))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<String, E> {
        Err(E::custom(format!("kernel id {v} is a number; quote it")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
default: ["6.1"]
kernels:
  - id: "6.1"
    source:
      debian: { suite: bookworm-security, mirror: debian-security, package: '^linux-image-6\.1\.0-\d+-cloud-amd64$' }
  - id: mine
    source:
      local: { path: ../bzImage }
  - id: "3.9"
    source:
      source_build:
        url: https://cdn.kernel.org/pub/linux/kernel/v3.x/linux-3.9.tar.xz
        sha256: null
        config_fragment: config/3.9.config
        gcc: gcc-4.9
"#;

    #[test]
    fn parses_all_source_kinds() {
        let cat = Catalogue::parse(SAMPLE, Path::new("vm/kernels.yaml"), Path::new("vm")).unwrap();
        assert_eq!(cat.ids(), ["6.1", "mine", "3.9"]);
        assert_eq!(cat.default_ids(), ["6.1"]);
        match &cat.get("6.1").unwrap().source {
            KernelSource::Debian(d) => assert_eq!(d.mirror, Mirror::DebianSecurity),
            other => panic!("{other:?}"),
        }
        assert_eq!(cat.get("mine").unwrap().source.kind(), "local");
        assert_eq!(cat.get("3.9").unwrap().source.kind(), "source_build");
        assert_eq!(cat.resolve(Path::new("config/x")), Path::new("vm/config/x"));
    }

    #[test]
    fn unquoted_numeric_id_is_rejected() {
        let text = "default: []\nkernels:\n  - id: 5.10\n    source: { local: { path: x } }\n";
        let err = Catalogue::parse(text, Path::new("k.yaml"), Path::new(".")).unwrap_err();
        assert!(format!("{err:#}").contains("quote it"), "{err:#}");
    }

    #[test]
    fn source_needs_exactly_one_kind() {
        let text = "default: []\nkernels:\n  - id: x\n    source: { local: { path: a }, debian: { suite: s, mirror: debian, package: p } }\n";
        let err = Catalogue::parse(text, Path::new("k.yaml"), Path::new(".")).unwrap_err();
        assert!(format!("{err:#}").contains("exactly one"), "{err:#}");
    }

    #[test]
    fn unknown_default_is_rejected() {
        let text = "default: [\"9.9\"]\nkernels: []\n";
        let err = Catalogue::parse(text, Path::new("k.yaml"), Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("'9.9'"), "{err}");
    }
}
