//! Finding, parsing and validating case files; nothing runs until every file is valid.

mod decode;
pub(crate) mod fields;
pub mod model;
pub mod repeat;
pub(crate) mod scope;
pub mod sysctls;
pub mod version;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

pub use fields::Diagnostic;
pub use model::*;
pub use version::{KernelVersion, VersionReq};

/// Every problem of one file.
#[derive(Debug)]
pub struct FileErrors {
    pub file: PathBuf,
    pub errors: Vec<Diagnostic>,
}

impl fmt::Display for FileErrors {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                e.pos.line,
                e.pos.col,
                e.message
            )?;
        }
        Ok(())
    }
}

/// Every step verb of the case language (the step registry's).
pub fn verbs() -> Vec<&'static str> {
    crate::steps::Action::VERBS.to_vec()
}

/// Parses and validates one file.
pub fn load_file(path: &Path) -> Result<Case, FileErrors> {
    let fail = |errors| FileErrors {
        file: path.to_path_buf(),
        errors,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(vec![Diagnostic {
            pos: Default::default(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    load_str(&case_id(path), path, &text)
}

pub fn load_str(id: &str, path: &Path, text: &str) -> Result<Case, FileErrors> {
    let fail = |errors| FileErrors {
        file: path.to_path_buf(),
        errors,
    };
    let root = crate::yaml::parse(text).map_err(|e| {
        fail(vec![Diagnostic {
            pos: e.pos,
            message: format!("YAML syntax: {}", e.message),
        }])
    })?;
    let mut diags = fields::Diags::default();
    let case = decode::decode_case(id, path, &root, &mut diags);
    match case {
        Some(case) if diags.0.is_empty() => Ok(case),
        _ => Err(fail(diags.0)),
    }
}

/// The case id: its path below the nearest `cases` folder, without `.yaml`.
pub fn case_id(path: &Path) -> String {
    let no_ext = path.with_extension("");
    let parts: Vec<_> = no_ext
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.iter().rposition(|p| p == "cases") {
        Some(i) if i + 1 < parts.len() => parts[i + 1..].join("/"),
        _ => parts.last().cloned().unwrap_or_default(),
    }
}

/// The YAML files named by `paths` (files as given, folders searched recursively),
/// sorted. Each file is listed once however many ways lead to it (a path given
/// twice, a symlink to a file or folder already seen); a folder symlink loop is
/// walked once.
pub fn discover(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut walked = HashSet::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut walked, &mut files)?;
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            anyhow::bail!("{}: no such case file or folder", path.display());
        }
    }
    files.sort();
    let mut seen = HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    Ok(files)
}

fn walk(dir: &Path, walked: &mut HashSet<PathBuf>, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let real = std::fs::canonicalize(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    if !walked.insert(real) {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    // Sorted, so that of two ways to one folder the first in order is the one kept.
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, walked, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Loads every case under `paths`; returns all files' errors if any file is bad.
pub fn load_all(paths: &[PathBuf]) -> anyhow::Result<Result<Vec<Case>, Vec<FileErrors>>> {
    let files = discover(paths)?;
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    for file in &files {
        // The case id and results name come from the path: it must be text.
        if file.to_str().is_none() {
            errors.push(FileErrors {
                file: file.clone(),
                errors: vec![Diagnostic {
                    pos: Default::default(),
                    message: "the path is not UTF-8, so results cannot name this case; rename it"
                        .into(),
                }],
            });
            continue;
        }
        match load_file(file) {
            Ok(case) => cases.push(case),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        let mut ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            anyhow::bail!("two case files have the id `{}`", w[0]);
        }
        Ok(Ok(cases))
    } else {
        Ok(Err(errors))
    }
}
