//! Where the kernel catalogue and its lock come from: `--catalogue DIR` or
//! `$SOCKMATRIX_CATALOGUE` (users who add kernels), `./vm` of a sockmatrix checkout,
//! else the copy built into this binary, so that an installed binary needs no tree.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};

/// The environment variable that names a catalogue folder (like `--catalogue`).
pub const ENV: &str = "SOCKMATRIX_CATALOGUE";

/// The default catalogue, lock and the files they name by relative path.
const BUILT_IN: &[(&str, &str)] = &[
    ("kernels.yaml", include_str!("../../vm/kernels.yaml")),
    ("kernels.lock", include_str!("../../vm/kernels.lock")),
    (
        "config/sockmatrix-guest.config",
        include_str!("../../vm/config/sockmatrix-guest.config"),
    ),
];

static CHOSEN: OnceLock<PathBuf> = OnceLock::new();

/// `--catalogue DIR`, set once by the command line before anything loads.
pub fn set_catalogue_dir(dir: PathBuf) -> Result<()> {
    check_dir(&dir, "--catalogue")?;
    let _ = CHOSEN.set(dir);
    Ok(())
}

/// A folder the user named must hold a catalogue: say so now, not at first use.
fn check_dir(dir: &Path, named_by: &str) -> Result<()> {
    anyhow::ensure!(
        dir.join("kernels.yaml").is_file(),
        "{named_by} {}: no kernels.yaml in that folder",
        dir.display()
    );
    Ok(())
}

/// The catalogue folder the user chose (`--catalogue`, `$SOCKMATRIX_CATALOGUE`) or
/// `./vm` when it holds one; None means the built-in catalogue.
pub fn chosen_dir() -> Result<Option<PathBuf>> {
    if let Some(dir) = CHOSEN.get() {
        return Ok(Some(dir.clone()));
    }
    if let Some(dir) = std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        check_dir(&dir, &format!("${ENV}"))?;
        return Ok(Some(dir));
    }
    let here = PathBuf::from("vm");
    Ok(here.join("kernels.yaml").is_file().then_some(here))
}

/// The folder to load the catalogue from: the chosen one, or the built-in files
/// written (once, named by their content) under the cache.
pub fn catalogue_dir() -> Result<PathBuf> {
    match chosen_dir()? {
        Some(dir) => Ok(dir),
        None => write_built_in(&crate::kernel::cache_dir()),
    }
}

fn write_built_in(cache: &Path) -> Result<PathBuf> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for (name, text) in BUILT_IN {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
    }
    let dir = cache
        .join("catalogue")
        .join(&hex::encode(hash.finalize())[..16]);
    for (name, text) in BUILT_IN {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|t| t == *text) {
            continue;
        }
        crate::resultset::results::write_atomic(&path, text.as_bytes())
            .with_context(|| format!("writing the built-in catalogue to {}", path.display()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalogue_loads_and_names_its_files() {
        let cache = tempfile::tempdir().unwrap();
        let dir = write_built_in(cache.path()).unwrap();
        let catalogue = crate::kernel::Catalogue::load(&dir.join("kernels.yaml")).unwrap();
        crate::kernel::Lock::load(&dir.join("kernels.lock")).unwrap();
        assert!(catalogue.default_ids().contains(&"6.1".to_string()));
        // Every config fragment the catalogue names is among the written files.
        let mut fragments = 0;
        for k in &catalogue.kernels {
            if let crate::kernel::KernelSource::SourceBuild(spec) = &k.source {
                let path = catalogue.resolve(&spec.config_fragment);
                assert!(path.is_file(), "{}: {} not written", k.id, path.display());
                fragments += 1;
            }
        }
        assert!(
            fragments > 0,
            "the catalogue builds some kernel from source"
        );
        assert_eq!(write_built_in(cache.path()).unwrap(), dir, "written once");
    }

    #[test]
    fn a_named_folder_without_a_catalogue_is_refused() {
        let empty = tempfile::tempdir().unwrap();
        let err = check_dir(empty.path(), "--catalogue").unwrap_err();
        assert!(format!("{err}").contains("no kernels.yaml"), "{err}");
    }
}
