//! Kconfig for source-built kernels: the base config a build starts from, the guest
//! fragment's options, and the check that they survived `make olddefconfig`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Line in the fragment after which options are wanted but not required.
pub const OPTIONAL_MARKER: &str = "# sockmatrix: optional below";

/// The config a build starts from, before the fragment is merged over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseConfig {
    /// `make tinyconfig`: the smallest kernel, for fast builds and fast boots.
    Minimal,
    /// `make x86_64_defconfig`.
    Defconfig,
    /// A user's own `.config`.
    File(PathBuf),
}

impl BaseConfig {
    /// `minimal`, `defconfig` or a path to a `.config` (which must exist).
    pub fn parse(s: &str) -> Result<BaseConfig> {
        match s {
            "minimal" => Ok(BaseConfig::Minimal),
            "defconfig" => Ok(BaseConfig::Defconfig),
            path => {
                let p = Path::new(path);
                if !p.is_file() {
                    bail!(
                        "--config {path}: not `minimal`, `defconfig` or an existing .config file"
                    );
                }
                Ok(BaseConfig::File(p.to_path_buf()))
            }
        }
    }

    /// The make target that writes the base `.config` (none for a user's file).
    pub fn make_target(&self) -> Option<&'static str> {
        match self {
            BaseConfig::Minimal => Some("tinyconfig"),
            BaseConfig::Defconfig => Some("x86_64_defconfig"),
            BaseConfig::File(_) => None,
        }
    }

    /// Short name for ids and listings.
    pub fn label(&self) -> String {
        match self {
            BaseConfig::Minimal => "minimal".into(),
            BaseConfig::Defconfig => "defconfig".into(),
            BaseConfig::File(p) => format!(
                "file:{}",
                p.file_name()
                    .map_or("config".into(), |n| n.to_string_lossy())
            ),
        }
    }
}

/// One `CONFIG_X=v` (or `# CONFIG_X is not set`, value "n") line of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedOption {
    pub name: String,
    pub value: String,
    pub required: bool,
}

impl WantedOption {
    pub fn line(&self) -> String {
        if self.value == "n" {
            format!("# {} is not set", self.name)
        } else {
            format!("{}={}", self.name, self.value)
        }
    }
}

/// The options a fragment sets, in order; those after `OPTIONAL_MARKER` are optional.
pub fn parse_fragment(text: &str) -> Vec<WantedOption> {
    let mut required = true;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line == OPTIONAL_MARKER {
            required = false;
        } else if let Some((name, value)) = parse_option_line(line) {
            out.push(WantedOption {
                name,
                value,
                required,
            });
        }
    }
    out
}

/// `CONFIG_X=v` -> (CONFIG_X, v); `# CONFIG_X is not set` -> (CONFIG_X, n).
fn parse_option_line(line: &str) -> Option<(String, String)> {
    if let Some(rest) = line.strip_prefix("# ") {
        let name = rest.strip_suffix(" is not set")?;
        return name
            .starts_with("CONFIG_")
            .then(|| (name.to_string(), "n".to_string()));
    }
    let (name, value) = line.split_once('=')?;
    name.starts_with("CONFIG_")
        .then(|| (name.to_string(), value.to_string()))
}

/// Every option a `.config` sets (unset ones are absent or "n").
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| parse_option_line(l.trim()))
        .collect()
}

/// The wanted options the final `.config` does not have as asked.
pub fn dropped<'a>(config: &str, wanted: &'a [WantedOption]) -> Vec<&'a WantedOption> {
    let have = parse_config(config);
    wanted
        .iter()
        .filter(|w| {
            let got = have.get(&w.name).map_or("n", String::as_str);
            got != w.value
        })
        .collect()
}

/// Every symbol the tree's Kconfig files define (`config X`, `menuconfig X`), as
/// `CONFIG_X`.
pub fn kconfig_symbols(tree: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut dirs = vec![tree.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && entry.file_name() != ".git" {
                dirs.push(entry.path());
            } else if kind.is_file() && entry.file_name().to_string_lossy().starts_with("Kconfig") {
                files.push(entry.path());
            }
        }
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if let (Some("config" | "menuconfig"), Some(name)) = (words.next(), words.next()) {
                out.insert(format!("CONFIG_{name}"));
            }
        }
    }
    out
}

/// Fails (bad input) naming every required option that did not survive; warns about
/// optional ones. A required option the tree's Kconfig does not define is not
/// missing: older kernels had the feature unconditionally (POSIX_TIMERS became an
/// option in 4.10, MULTIUSER in 4.1), so it is only noted.
pub fn check_survived(
    config_path: &Path,
    fragment: &Path,
    wanted: &[WantedOption],
    tree: &Path,
) -> Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let mut lost = dropped(&text, wanted);
    if lost.iter().any(|w| w.required) {
        let symbols = kconfig_symbols(tree);
        lost.retain(|w| {
            let known = symbols.contains(&w.name);
            if !known && w.required {
                eprintln!(
                    "note: {} is not a Kconfig option in this tree (older kernels build it in unconditionally)",
                    w.name
                );
            }
            known || !w.required
        });
    }
    for w in lost.iter().filter(|w| !w.required) {
        eprintln!(
            "note: optional {} from {} is not in this kernel's config (cases needing it are skipped)",
            w.line(),
            fragment.display()
        );
    }
    let missing: Vec<String> = lost
        .iter()
        .filter(|w| w.required)
        .map(|w| w.line())
        .collect();
    if !missing.is_empty() {
        return Err(super::BuildError::MissingOptions {
            missing,
            fragment: fragment.to_path_buf(),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAGMENT: &str = "# c\nCONFIG_A=y\n# CONFIG_B is not set\n\n# sockmatrix: optional below\nCONFIG_C=y\nCONFIG_D=\"x\"\n";

    #[test]
    fn fragment_options_and_their_weight() {
        let w = parse_fragment(FRAGMENT);
        let got: Vec<_> = w
            .iter()
            .map(|o| (o.name.as_str(), o.value.as_str(), o.required))
            .collect();
        assert_eq!(
            got,
            [
                ("CONFIG_A", "y", true),
                ("CONFIG_B", "n", true),
                ("CONFIG_C", "y", false),
                ("CONFIG_D", "\"x\"", false)
            ]
        );
    }

    #[test]
    fn dropped_names_what_olddefconfig_lost() {
        let w = parse_fragment(FRAGMENT);
        let all_there = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=\"x\"\n";
        assert!(dropped(all_there, &w).is_empty());
        // B absent counts as unset, which is what was asked.
        let lost = "CONFIG_A=m\nCONFIG_B=y\nCONFIG_D=\"x\"\n";
        let names: Vec<_> = dropped(lost, &w).iter().map(|o| o.line()).collect();
        assert_eq!(names, ["CONFIG_A=y", "# CONFIG_B is not set", "CONFIG_C=y"]);
    }

    #[test]
    fn check_survived_fails_on_required_only() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join(".config");
        let frag = dir.path().join("f.config");
        let w = parse_fragment(FRAGMENT);
        // The tree defines A and B (the fragment's required options).
        let tree = dir.path().join("linux");
        std::fs::create_dir_all(tree.join("init")).unwrap();
        std::fs::write(
            tree.join("init/Kconfig"),
            "config A\n\tbool\nmenuconfig B\n",
        )
        .unwrap();
        std::fs::write(&cfg, "CONFIG_A=y\n").unwrap();
        check_survived(&cfg, &frag, &w, &tree).unwrap();
        std::fs::write(&cfg, "CONFIG_C=y\n").unwrap();
        let e = check_survived(&cfg, &frag, &w, &tree).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("CONFIG_A=y"), "{msg}");
        assert!(!msg.contains("CONFIG_C"), "{msg}");
    }

    /// A 3.9 tree has no `config POSIX_TIMERS` (always built in before 4.10): a config
    /// without it is not missing it; one without a defined symbol is.
    #[test]
    fn a_required_option_the_tree_does_not_define_is_not_missing() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("linux-3.9");
        std::fs::create_dir_all(tree.join("net")).unwrap();
        std::fs::write(
            tree.join("net/Kconfig"),
            "menuconfig NET\n\tbool \"Networking\"\n",
        )
        .unwrap();
        std::fs::write(tree.join("init.c"), "config POSIX_TIMERS\n").unwrap();
        let cfg = dir.path().join(".config");
        let frag = dir.path().join("f.config");
        let w = parse_fragment("CONFIG_NET=y\nCONFIG_POSIX_TIMERS=y\n");
        std::fs::write(&cfg, "CONFIG_NET=y\n").unwrap();
        check_survived(&cfg, &frag, &w, &tree).unwrap();
        std::fs::write(&cfg, "# CONFIG_NET is not set\n").unwrap();
        let msg = format!("{:#}", check_survived(&cfg, &frag, &w, &tree).unwrap_err());
        assert!(
            msg.contains("CONFIG_NET=y") && !msg.contains("POSIX"),
            "{msg}"
        );
    }

    #[test]
    fn the_guest_fragment_requires_the_boot_essentials() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/config/sockmatrix-guest.config"),
        )
        .unwrap();
        let w = parse_fragment(&text);
        for name in [
            "CONFIG_SERIAL_8250_CONSOLE",
            "CONFIG_BLK_DEV_INITRD",
            "CONFIG_NET_NS",
            "CONFIG_DEVTMPFS",
        ] {
            assert!(w.iter().any(|o| o.name == name && o.required), "{name}");
        }
        assert!(w
            .iter()
            .any(|o| o.name == "CONFIG_BPF_SYSCALL" && !o.required));
    }

    #[test]
    fn base_config_parse() {
        assert_eq!(BaseConfig::parse("minimal").unwrap(), BaseConfig::Minimal);
        assert_eq!(
            BaseConfig::parse("defconfig").unwrap().make_target(),
            Some("x86_64_defconfig")
        );
        assert!(BaseConfig::parse("/nonexistent/.config").is_err());
    }
}
