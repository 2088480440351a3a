//! Loading the cases a command names: every file valid, or nothing runs.

use std::path::PathBuf;

use crate::case::{self, Case, FileErrors};

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("{}", render(.0))]
    Invalid(Vec<FileErrors>),
    #[error("{0:#}")]
    Io(#[from] anyhow::Error),
    #[error("no case matches {0}")]
    NothingSelected(String),
}

fn render(errors: &[FileErrors]) -> String {
    let count: usize = errors.iter().map(|e| e.errors.len()).sum();
    let mut text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    text.push(format!(
        "{count} error(s) in {} file(s); nothing was run",
        errors.len()
    ));
    text.join("\n")
}

/// The default place to look when no path is given.
pub fn default_paths() -> Vec<PathBuf> {
    vec![PathBuf::from("cases")]
}

/// Loads and validates every case under `paths`, then keeps those whose id contains
/// `filter` (when given). Fails when a file is invalid or nothing is left.
pub fn load(paths: &[PathBuf], filter: Option<&str>) -> Result<Vec<Case>, SelectError> {
    let paths = if paths.is_empty() {
        let default = default_paths();
        if !default[0].is_dir() {
            return Err(SelectError::Io(anyhow::anyhow!(
                "no case folder ./cases here: name case files or folders (e.g. `sockmatrix run path/to/cases`), or run where a cases/ folder is"
            )));
        }
        default
    } else {
        paths.to_vec()
    };
    let cases = case::load_all(&paths)?.map_err(SelectError::Invalid)?;
    let selected: Vec<Case> = cases
        .into_iter()
        .filter(|c| filter.is_none_or(|f| c.id.contains(f)))
        .collect();
    if selected.is_empty() {
        let what = match filter {
            Some(f) => format!("filter `{f}` under {}", show(&paths)),
            None => show(&paths),
        };
        return Err(SelectError::NothingSelected(what));
    }
    Ok(selected)
}

fn show(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
