//! Cached, sha256-verified, atomic HTTP downloads with an optional progress bar;
//! bounded in time (a stalled body is abandoned) and retried with backoff.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use backon::{BlockingRetryable, ExponentialBuilder};
use sha2::{Digest, Sha256};

use crate::atomic_file::temp_sibling;

/// How long one request may take and how often a download is tried.
#[derive(Debug, Clone)]
pub struct Limits {
    pub connect: Duration,
    /// From the request sent to the response headers.
    pub response: Duration,
    /// No byte for this long means the transfer has stalled.
    pub stall: Duration,
    /// The whole body's budget is this plus the time for its size at `min_rate`.
    pub body_base: Duration,
    /// The slowest transfer accepted, in bytes per second.
    pub min_rate: u64,
    /// Tries in all (1 = no retry).
    pub attempts: usize,
    /// Wait before the second try; doubled for each further one.
    pub first_backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(30),
            response: Duration::from_secs(60),
            stall: Duration::from_secs(30),
            body_base: Duration::from_secs(120),
            min_rate: 64 * 1024,
            attempts: 3,
            first_backoff: Duration::from_secs(2),
        }
    }
}

impl Limits {
    /// The time a body of `size` bytes (unknown: only the base) may take in all.
    pub fn body_budget(&self, size: Option<u64>) -> Duration {
        let rate = self.min_rate.max(1);
        self.body_base + Duration::from_secs(size.unwrap_or(0) / rate)
    }

    fn agent(&self, size: Option<u64>) -> ureq::Agent {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(self.connect))
            .timeout_recv_response(Some(self.response))
            .timeout_per_read(Some(self.stall))
            .timeout_recv_body(Some(self.body_budget(size)))
            .build();
        ureq::Agent::new_with_config(config)
    }

    /// Runs `op` up to `attempts` times with exponential backoff, except after an
    /// answer that a retry cannot change (a 4xx status) or an interrupt.
    fn retry<T>(&self, what: &str, op: impl FnMut() -> Result<T>) -> Result<T> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.first_backoff)
            .with_max_times(self.attempts.saturating_sub(1))
            .with_jitter();
        op.retry(backoff)
            .when(is_transient)
            .notify(|e, wait| {
                eprintln!(
                    "{what}: {}; trying again in {:.1} s",
                    e.root_cause(),
                    wait.as_secs_f64()
                )
            })
            .call()
    }
}

fn is_transient(e: &anyhow::Error) -> bool {
    if crate::interrupt::requested().is_some() {
        return false;
    }
    !e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ureq::Error>(),
            Some(ureq::Error::StatusCode(400..=499))
        )
    })
}

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
    fetch_with(url, dest, expect, what, progress, &Limits::default())
}

/// `fetch` with explicit time limits and retries.
pub fn fetch_with(
    url: &str,
    dest: &Path,
    expect: &Expect,
    what: &str,
    progress: bool,
    limits: &Limits,
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
    let tmp = temp_sibling(dest);
    let result = limits.retry(what, || {
        let got = download_to(url, &tmp, expect, what, progress, limits);
        if got.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        got
    });
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

fn download_to(
    url: &str,
    tmp: &Path,
    expect: &Expect,
    what: &str,
    progress: bool,
    limits: &Limits,
) -> Result<()> {
    let mut resp = limits
        .agent(expect.size)
        .get(url)
        .call()
        .with_context(|| format!("{what}: GET {url}"))?;
    let len = resp.body().content_length().or(expect.size);
    let bar = progress_bar(len, url, progress);
    let mut reader = resp.body_mut().as_reader();
    let mut file = crate::atomic_file::create_new(tmp)?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if let Some(signal) = crate::interrupt::requested() {
            bail!("{what}: download of {url} interrupted by {signal}");
        }
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

/// The 4xx status a `fetch` failed with (the server answered; trying again will not help).
pub fn client_error_status(e: &anyhow::Error) -> Option<u16> {
    e.chain()
        .find_map(|c| match c.downcast_ref::<ureq::Error>() {
            Some(ureq::Error::StatusCode(code @ 400..=499)) => Some(*code),
            _ => None,
        })
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

/// Small text fetch (e.g. InRelease), no caching.
pub fn get_text(url: &str, what: &str) -> Result<String> {
    let limits = Limits::default();
    limits.retry(what, || {
        limits
            .agent(None)
            .get(url)
            .call()
            .with_context(|| format!("{what}: GET {url}"))?
            .body_mut()
            .with_config()
            .limit(16 * 1024 * 1024)
            .read_to_string()
            .with_context(|| format!("{what}: reading {url}"))
    })
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

    /// A real HTTP server on 127.0.0.1 that sends half of `body` and then stalls
    /// (holding the connection) on the first `stalls` connections, and the whole
    /// body after that. Returns its URL and the count of connections it took.
    fn stalling_server(
        body: &'static [u8],
        stalls: usize,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, BufReader};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/kernel.deb", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let n = seen.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|got| got > 2) {
                        line.clear();
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    if n < stalls {
                        let _ = stream.write_all(&body[..body.len() / 2]);
                        let _ = stream.flush();
                        // Stalled mid-body: the connection stays open, nothing comes.
                        std::thread::sleep(Duration::from_secs(60));
                    } else {
                        let _ = stream.write_all(body);
                    }
                });
            }
        });
        (url, count)
    }

    fn quick_limits() -> Limits {
        Limits {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(2),
            stall: Duration::from_millis(300),
            body_base: Duration::from_secs(3),
            min_rate: 1024 * 1024,
            attempts: 3,
            first_backoff: Duration::from_millis(20),
        }
    }

    const BODY: &[u8] = &[b'k'; 64 * 1024];

    fn body_sha() -> String {
        hex::encode(Sha256::digest(BODY))
    }

    #[test]
    fn a_stalled_body_is_abandoned_and_retried_a_bounded_number_of_times() {
        let (url, connections) = stalling_server(BODY, usize::MAX);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("kernel.deb");
        let sha = body_sha();
        let expect = Expect {
            sha256: Some(&sha),
            size: Some(BODY.len() as u64),
        };
        let started = std::time::Instant::now();
        let err = fetch_with(&url, &dest, &expect, "test", false, &quick_limits()).unwrap_err();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(15),
            "a stalled body hung for {took:?}"
        );
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(format!("{err:#}").contains("reading"), "{err:#}");
        // Neither the file nor a partial one is left.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_download_that_stalls_once_succeeds_on_the_retry() {
        let (url, connections) = stalling_server(BODY, 1);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("kernel.deb");
        let sha = body_sha();
        let expect = Expect {
            sha256: Some(&sha),
            size: Some(BODY.len() as u64),
        };
        fetch_with(&url, &dest, &expect, "test", false, &quick_limits()).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), BODY);
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
