//! Running Kbuild out of tree: the make command line (compiler, ccache, O=), the full
//! log kept in a file, progress while it runs, and the log's tail when it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::BuildError;

/// How many log lines a failure shows.
pub const TAIL_LINES: usize = 30;

/// One kernel tree built into one output folder.
#[derive(Debug, Clone)]
pub struct Kbuild {
    pub tree: PathBuf,
    pub out: PathBuf,
    /// The compiler (`gcc`, `gcc-6`, ...).
    pub cc: String,
    /// Run the compiler through ccache (when installed).
    pub ccache: bool,
    pub jobs: usize,
    pub log: PathBuf,
}

impl Kbuild {
    /// `make -C tree O=out ARCH=x86_64 CC=.. HOSTCC=.. args`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("make");
        let cc = if self.ccache {
            format!("ccache {}", self.cc)
        } else {
            self.cc.clone()
        };
        // A parent make's flags (`make -C ci ...`: `w`, a jobserver, `-n`) are not
        // this build's: with them `-s kernelrelease` prints "Entering directory" too.
        for inherited in ["MAKEFLAGS", "MFLAGS", "MAKELEVEL"] {
            c.env_remove(inherited);
        }
        c.arg("-C")
            .arg(&self.tree)
            .arg(format!("O={}", self.out.display()))
            .arg("ARCH=x86_64")
            .arg(format!("CC={cc}"))
            // HOSTCC too: old trees' host tools (fixdep, conf) also break with a new gcc.
            .arg(format!("HOSTCC={}", self.cc))
            // A fixed build stamp: the same inputs give the same image (and ccache hits).
            .env("KBUILD_BUILD_TIMESTAMP", "sockmatrix")
            .env("KBUILD_BUILD_USER", "sockmatrix")
            .env("KBUILD_BUILD_HOST", "sockmatrix")
            .args(args);
        c
    }

    /// Runs make with its output appended to the log. `step` names it in progress and
    /// errors; with `progress`, a line every few seconds says how far it got. On
    /// SIGINT/SIGTERM make and every compiler it started are stopped (they run in a
    /// process group of their own) and the error is `Interrupted`.
    pub fn run(&self, args: &[&str], step: &str, progress: bool) -> Result<(), BuildError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| {
                BuildError::Other(anyhow::anyhow!("opening {}: {e}", self.log.display()))
            })?;
        let err_log = log.try_clone().map_err(|e| BuildError::Other(e.into()))?;
        let mut cmd = self.command(args);
        own_process_group(&mut cmd);
        let shown = format!("make {}", args.join(" "));
        let mut child = cmd
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err_log))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| {
                BuildError::Other(anyhow::anyhow!("starting make (is it installed?): {e}"))
            })?;
        let started = Instant::now();
        let mut shown_at = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| BuildError::Other(e.into()))? {
                break status;
            }
            if let Some(signal) = crate::interrupt::requested() {
                stop_group(&mut child);
                return Err(BuildError::Interrupted {
                    signal,
                    during: step.to_string(),
                });
            }
            if progress && shown_at.elapsed() >= Duration::from_secs(15) {
                shown_at = Instant::now();
                eprintln!(
                    "  {step}: {} files compiled, {}s",
                    count_compiled(&self.log),
                    started.elapsed().as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if !status.success() {
            return Err(BuildError::MakeFailed {
                step: format!("{step} ({shown}, {status})"),
                log: self.log.clone(),
                tail: tail(&self.log, TAIL_LINES),
            });
        }
        Ok(())
    }

    /// Output of a quiet make query such as `-s kernelrelease`.
    pub fn query(&self, args: &[&str]) -> Option<String> {
        let out = self.command(args).stdin(Stdio::null()).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// `scripts/kconfig/merge_config.sh -m -O out out/.config fragment`.
    pub fn merge_fragment(&self, fragment: &Path) -> Result<(), BuildError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| BuildError::Other(e.into()))?;
        let err_log = log.try_clone().map_err(|e| BuildError::Other(e.into()))?;
        let status = Command::new("sh")
            .current_dir(&self.tree)
            .arg("scripts/kconfig/merge_config.sh")
            .arg("-m")
            .arg("-O")
            .arg(&self.out)
            .arg(self.out.join(".config"))
            .arg(fragment)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err_log))
            .status()
            .map_err(|e| BuildError::Other(anyhow::anyhow!("starting merge_config.sh: {e}")))?;
        if !status.success() {
            return Err(BuildError::MakeFailed {
                step: format!("merging {} ({status})", fragment.display()),
                log: self.log.clone(),
                tail: tail(&self.log, TAIL_LINES),
            });
        }
        Ok(())
    }
}

/// Puts make in a process group of its own, so stopping the build reaches the
/// compilers it started (a SIGTERM sent to sockmatrix alone reaches nobody else), and
/// has the kernel send make SIGTERM if sockmatrix dies without stopping it (a second
/// Ctrl-C exits at once); make passes SIGTERM on to its jobs.
fn own_process_group(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Stops make's process group: SIGTERM (make removes half-written targets and stops
/// its jobs), then SIGKILL for whatever still runs a few seconds later.
fn stop_group(child: &mut std::process::Child) {
    use nix::sys::signal::{killpg, Signal};
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Jobs that outlived make are still in its group (the group id stays theirs).
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
}

/// First line of `<cc> --version`: part of a build's identity.
pub fn compiler_version(cc: &str) -> Result<String, BuildError> {
    let out = Command::new(cc).arg("--version").output().map_err(|e| {
        BuildError::Toolchain(format!(
            "compiler `{cc}` cannot be run ({e}); install it or pick another with --cc"
        ))
    })?;
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    if !out.status.success() || first.is_empty() {
        return Err(BuildError::Toolchain(format!("`{cc} --version` failed")));
    }
    Ok(first)
}

/// The build tools a kernel build needs besides the compiler, that are missing.
pub fn missing_tools() -> Vec<&'static str> {
    ["make", "flex", "bison", "bc", "perl"]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect()
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Compile steps so far (Kbuild's `  CC  ` lines).
fn count_compiled(log: &Path) -> usize {
    std::fs::File::open(log)
        .map(|f| {
            BufReader::new(f)
                .lines()
                .map_while(|l| l.ok())
                .filter(|l| l.starts_with("  CC "))
                .count()
        })
        .unwrap_or(0)
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(f) = std::fs::File::open(path) else {
        return vec![];
    };
    let mut last = std::collections::VecDeque::with_capacity(n);
    for line in BufReader::new(f).lines().map_while(|l| l.ok()) {
        if last.len() == n {
            last.pop_front();
        }
        last.push_back(line);
    }
    last.into()
}

/// `-j` for this machine.
pub fn jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Copies the build log next to the built kernel.
pub fn keep_log(log: &Path, into: &Path) -> Result<()> {
    std::fs::copy(log, into).with_context(|| format!("copying {}", log.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_command_is_out_of_tree_with_the_compiler() {
        let k = Kbuild {
            tree: "/src/linux".into(),
            out: "/cache/out".into(),
            cc: "gcc-6".into(),
            ccache: true,
            jobs: 2,
            log: "/tmp/log".into(),
        };
        let c = k.command(&["-j2", "bzImage"]);
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-C",
                "/src/linux",
                "O=/cache/out",
                "ARCH=x86_64",
                "CC=ccache gcc-6",
                "HOSTCC=gcc-6",
                "-j2",
                "bzImage"
            ]
        );
    }

    #[test]
    fn a_failing_make_shows_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        // A "kernel tree" whose Makefile fails like a compiler error does.
        std::fs::write(
            dir.path().join("Makefile"),
            "bzImage:\n\t@echo '  CC      net/ipv4/tcp.o'\n\t@echo 'net/ipv4/tcp.c:1:1: error: expected something' >&2\n\t@false\n",
        )
        .unwrap();
        let k = Kbuild {
            tree: dir.path().into(),
            out: dir.path().join("out"),
            cc: "gcc".into(),
            ccache: false,
            jobs: 1,
            log: dir.path().join("build.log"),
        };
        std::fs::create_dir_all(&k.out).unwrap();
        match k.run(&["bzImage"], "compiling", false) {
            Err(BuildError::MakeFailed { tail, log, .. }) => {
                assert_eq!(log, k.log);
                assert!(
                    tail.iter().any(|l| l.contains("error: expected something")),
                    "{tail:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(count_compiled(&k.log), 1);
    }

    #[test]
    fn a_missing_compiler_is_a_toolchain_error() {
        let e = compiler_version("no-such-gcc-4.9").unwrap_err();
        assert!(e.to_string().contains("no-such-gcc-4.9"), "{e}");
    }
}
