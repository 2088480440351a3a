//! Cached, sha256-verified, atomic HTTP downloads with an optional progress bar.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// What a download must match. `sha256: None` means "unknown": a present file is reused as is.
#[derive(Debug, Clone, Default)]
pub struct Expect<'a> {
    pub sha256: Option<&'a str>,
    pub size: Option<u64>,
}

/// Makes sure `dest` holds the file at `url`, verified against `expect`.
///
/// A present file that verifies is reused without network. Otherwise the body is
/// streamed into a temp file next to `dest`, hashed on the way, and renamed over
/// `dest` only after the checks pass, so `dest` is never half-written.
/// `what` names the user's object in errors (e.g. "kernel '6.1'").
pub fn fetch(
    url: &str,
    dest: &Path,
    expect: &Expect,
    what: &str,
    progress: bool,
) -> Result<PathBuf> {
    if dest.is_file() {
        match expect.sha256 {
            None => return Ok(dest.to_path_buf()),
            Some(want) => {
                let got = sha256_file(dest)?;
                if got.eq_ignore_ascii_case(want) {
                    return Ok(dest.to_path_buf());
                }
                // A stale or corrupt cache entry: fetch it again.
                eprintln!(
                    "{what}: cached {} has sha256 {got}, expected {want}; downloading again",
                    dest.display()
                );
            }
        }
    }
    let dir = dest
        .parent()
        .context("download destination has no parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = temp_path(dest);
    let result = download_to(url, &tmp, expect, what, progress);
    match result {
        Ok(()) => {
            fs::rename(&tmp, dest)
                .with_context(|| format!("moving {} to {}", tmp.display(), dest.display()))?;
            Ok(dest.to_path_buf())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn download_to(url: &str, tmp: &Path, expect: &Expect, what: &str, progress: bool) -> Result<()> {
    let mut resp = agent()
        .get(url)
        .call()
        .with_context(|| format!("{what}: GET {url}"))?;
    let len = resp.body().content_length().or(expect.size);
    let bar = progress_bar(len, url, progress);
    let mut reader = resp.body_mut().as_reader();
    let mut file = File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("{what}: reading {url}")),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", tmp.display()))?;
        total += n as u64;
        bar.set_position(total);
    }
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    bar.finish_and_clear();
    let got = hex::encode(hasher.finalize());
    if let Some(want) = expect.sha256 {
        if !got.eq_ignore_ascii_case(want) {
            bail!("{what}: sha256 mismatch for {url}: expected {want}, got {got} ({total} bytes)");
        }
    }
    if let Some(size) = expect.size {
        if size != total {
            bail!("{what}: size mismatch for {url}: expected {size} bytes, got {total}");
        }
    }
    Ok(())
}

/// Whether a `fetch` failed because the server answered 404.
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ureq::Error>(),
            Some(ureq::Error::StatusCode(404))
        )
    })
}

/// A unique sibling temp name, so concurrent runs never write the same file.
pub fn temp_path(dest: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    dest.with_file_name(format!(
        ".{name}.{}.{}.part",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build();
    ureq::Agent::new_with_config(config)
}

/// Small text fetch (e.g. InRelease), no caching.
pub fn get_text(url: &str, what: &str) -> Result<String> {
    agent()
        .get(url)
        .call()
        .with_context(|| format!("{what}: GET {url}"))?
        .body_mut()
        .with_config()
        .limit(16 * 1024 * 1024)
        .read_to_string()
        .with_context(|| format!("{what}: reading {url}"))
}

fn progress_bar(len: Option<u64>, url: &str, enabled: bool) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let name = url.rsplit('/').next().unwrap_or(url).to_string();
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner(),
    };
    // indicatif draws to stderr and stays silent when it is not a terminal.
    bar.with_message(name)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// Writes `data` to `dest` atomically (temp file + rename).
pub fn write_atomic(dest: &Path, data: &[u8]) -> Result<()> {
    let tmp = temp_path(dest);
    let res = (|| -> Result<()> {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()?;
        fs::rename(&tmp, dest).with_context(|| format!("renaming to {}", dest.display()))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_verified_file_is_reused_without_network() {
        let dir = std::env::temp_dir().join(format!("kk-dl-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("f");
        fs::write(&dest, b"abc").unwrap();
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        // The URL is unroutable: success proves no request was made.
        let got = fetch(
            "http://invalid.invalid/f",
            &dest,
            &Expect {
                sha256: Some(sha),
                size: Some(3),
            },
            "test",
            false,
        )
        .unwrap();
        assert_eq!(got, dest);
        fs::remove_dir_all(&dir).unwrap();
    }
}
