//! Fault injection with real parts: real `sockmatrix run` processes booting real
//! kernels in QEMU (TCG), real signals sent to them, a real QEMU killed under a
//! running guest, full and read-only tmpfs mounts (as root), and a corrupted copy of
//! the kernel cache. One kernel (`SOCKMATRIX_FAULT_KERNEL`, default 6.1), one small
//! case, so the whole file takes about a minute.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CASE: &str = "bind/wildcard_vs_specific_tcp";

fn kernel() -> String {
    std::env::var("SOCKMATRIX_FAULT_KERNEL").unwrap_or_else(|_| "6.1".into())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sockmatrix() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockmatrix"));
    cmd.current_dir(repo());
    cmd
}

/// The kernel in the ordinary cache, fetched once for the whole file.
fn ensure_cached() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = sockmatrix()
            .args(["kernels", "fetch", &kernel()])
            .output()
            .unwrap();
        assert!(out.status.success(), "fetch: {}", text(&out));
    });
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A running `sockmatrix` whose stderr is collected as it comes.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Running { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn wait_for(&mut self, text: &str, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.stderr().contains(text) {
            if Instant::now() > until || self.child.try_wait().unwrap().is_some() {
                let _ = self.child.kill();
                panic!("never saw {text:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("still running after {limit:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Pids of QEMU processes whose command line contains `needle`.
fn qemus_with(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("qemu-system") && cmdline.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A result set holding an earlier run of the kernel: its result and its log.
fn earlier_results(results: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let kdir = results.join(kernel());
    std::fs::create_dir_all(&kdir).unwrap();
    let log = kdir.join("console-earlier.log");
    let log_text = b"the earlier run's console\n".to_vec();
    std::fs::write(&log, &log_text).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("results/baseline/6.1/result.json")).unwrap(),
    )
    .unwrap();
    value["kernel"] = kernel().into();
    value["boot"]["console_log"] = log.to_string_lossy().into_owned().into();
    let result = serde_json::to_vec_pretty(&value).unwrap();
    std::fs::write(kdir.join("result.json"), &result).unwrap();
    (kdir, result, log_text)
}

/// A signal mid-boot: guests stopped, temporary files gone, the earlier result and
/// its log untouched, the right exit code.
fn interrupt_mid_boot(signal: Signal, code: i32) {
    ensure_cached();
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let results = dir.path().join("results");
    let (kdir, result_before, log_before) = earlier_results(&results);

    let mut cmd = sockmatrix();
    cmd.env("TMPDIR", &tmp)
        // --cold: a restored guest can finish the case within the 500 ms below, and
        // then there is no boot left to interrupt.
        .args([
            "run", "--accel", "tcg", "--cold", "--filter", CASE, "--kernel",
        ])
        .arg(kernel())
        .arg("--results")
        .arg(&results);
    let mut run = Running::start(cmd);
    run.wait_for("booting (attempt 1", Duration::from_secs(120));
    // QEMU is up and the kernel is booting (the agent takes seconds under TCG).
    let until = Instant::now() + Duration::from_secs(10);
    while qemus_with(tmp.to_str().unwrap()).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !qemus_with(tmp.to_str().unwrap()).is_empty(),
        "no QEMU seen"
    );
    std::thread::sleep(Duration::from_millis(500));
    run.signal(signal);
    let status = run.wait(Duration::from_secs(30));
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(code), "{signal}:\n{stderr}");
    assert!(
        stderr.contains(&format!("interrupted by {signal}")),
        "says what happened:\n{stderr}"
    );
    assert!(stderr.contains("not finished"), "{stderr}");
    assert_eq!(names_in(&kdir), ["console-earlier.log", "result.json"]);
    assert_eq!(
        std::fs::read(kdir.join("result.json")).unwrap(),
        result_before
    );
    assert_eq!(
        std::fs::read(kdir.join("console-earlier.log")).unwrap(),
        log_before
    );
    assert_eq!(names_in(&tmp), Vec::<String>::new(), "temporary files left");
    assert!(
        qemus_with(tmp.to_str().unwrap()).is_empty(),
        "QEMU outlived the run"
    );
    assert!(
        !dir.path().join("history").exists(),
        "an interrupted run has no history"
    );
}

#[test]
fn sigint_mid_boot_stops_cleanly_and_exits_130() {
    interrupt_mid_boot(Signal::SIGINT, 130);
}

#[test]
fn sigterm_mid_boot_stops_cleanly_and_exits_143() {
    interrupt_mid_boot(Signal::SIGTERM, 143);
}

/// Results that cannot be written: exit 3, the file and the OS error named, the kernel
/// counted as could not run. Runs the case in-process (`--host`): no guest needed.
#[test]
fn a_full_or_read_only_results_folder_is_an_error_naming_the_file() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs and --host need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fine = sockmatrix()
        .args(["run", "--host", "--filter", CASE, "--results"])
        .arg(dir.path().join("fine"))
        .output()
        .unwrap();
    if !fine.status.success() {
        eprintln!("skipped: --host does not run here:\n{}", text(&fine));
        return;
    }
    for (options, os_error) in [
        ("size=64k", "No space left on device"),
        ("ro,size=64k", "Read-only file system"),
    ] {
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "sockmatrix-faults"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount -t tmpfs -o {options}");
        if !options.starts_with("ro") {
            // Fill it up.
            let _ = std::fs::write(mnt.join("filler"), vec![0u8; 128 * 1024]);
        }
        let results = mnt.join("results");
        let out = sockmatrix()
            .args(["run", "--host", "--filter", CASE, "--results"])
            .arg(&results)
            .output()
            .unwrap();
        let _ = Command::new("umount").arg(&mnt).status();
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(3), "{options}:\n{shown}");
        assert!(
            shown.contains(os_error),
            "{options}: the OS error:\n{shown}"
        );
        assert!(
            shown.contains(&results.display().to_string()),
            "{options}: the file:\n{shown}"
        );
        assert!(
            shown.contains("0 passed, 0 failed, 0 skipped, 1 could not run"),
            "{options}: counted as could not run:\n{shown}"
        );
    }
}

/// A QEMU killed under a running guest (every boot of one of two kernels): that
/// kernel could not run, the signal is named, the attempts are counted honestly,
/// and the other kernel's results are complete.
#[test]
fn a_killed_guest_is_reported_and_the_other_kernel_goes_on() {
    ensure_cached();
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // The same kernel under another path: its own results folder, and a QEMU command
    // line this test can tell apart.
    let (catalogue, lock) = sockmatrix::runner::load_catalogue().unwrap();
    let image = sockmatrix::runner::provision(&kernel(), &catalogue, &lock, false).unwrap();
    let victim = dir.path().join("victim/vmlinuz");
    std::fs::create_dir_all(victim.parent().unwrap()).unwrap();
    std::fs::copy(&image.vmlinuz, &victim).unwrap();
    let results = dir.path().join("results");

    let mut cmd = sockmatrix();
    cmd.env("TMPDIR", &tmp)
        .args(["run", "--accel", "tcg", "--filter", CASE, "--kernel"])
        .arg(kernel())
        .arg("--kernel")
        .arg(&victim)
        .arg("--results")
        .arg(&results);
    let mut run = Running::start(cmd);
    let needle = victim.to_str().unwrap().to_string();
    let mut killed = 0;
    let until = Instant::now() + Duration::from_secs(240);
    while run.child.try_wait().unwrap().is_none() && Instant::now() < until {
        for pid in qemus_with(&needle) {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = run.wait(Duration::from_secs(10));
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(killed >= 1, "no QEMU of the victim was seen");

    let good =
        sockmatrix::resultset::results::load(&results.join(kernel()).join("result.json")).unwrap();
    assert!(good.could_not_run.is_none(), "{good:?}");
    assert!(good.cases.iter().all(|c| c.verdict.label() == "pass"));

    let folder = names_in(&results)
        .into_iter()
        .find(|n| n.starts_with("local-"))
        .expect("the victim has a results folder");
    let victim_result =
        sockmatrix::resultset::results::load(&results.join(&folder).join("result.json")).unwrap();
    let why = victim_result.could_not_run.clone().unwrap_or_default();
    assert!(
        why.contains("killed by SIGKILL"),
        "the signal is named: {why}"
    );
    assert!(victim_result
        .cases
        .iter()
        .all(|c| c.verdict.label() == "ERROR"));
    // Every boot counts: the resumed boots are attempts 2 and 3, not "attempt 1" again.
    let boot = victim_result.boot.as_ref().expect("boot facts");
    assert_eq!(boot.attempts, 3, "{boot:?}");
    assert!(stderr.contains("booting (attempt 3"), "{stderr}");
    // Every guest death is listed, the last one included.
    assert_eq!(boot.resumes.len(), 3, "{boot:?}");
    // Each boot's log is kept beside the result, under this run's names.
    for log in ["console-", ".2.log", ".3.log"] {
        assert!(
            names_in(&results.join(&folder))
                .iter()
                .any(|n| n.contains(log)),
            "{log}: {:?}",
            names_in(&results.join(&folder))
        );
    }
    assert_eq!(names_in(&tmp), Vec::<String>::new(), "temporary files left");
}

/// A corrupted copy of the cache: a damaged vmlinuz is extracted again from the
/// cached package (no network); a damaged package with no way to download it again
/// is a clear error, and no partial file is left in the cache.
#[test]
fn a_corrupted_cache_is_repaired_or_reported() {
    ensure_cached();
    let (catalogue, lock) = sockmatrix::runner::load_catalogue().unwrap();
    let image = sockmatrix::runner::provision(&kernel(), &catalogue, &lock, false).unwrap();
    let pin = &lock.kernels[&kernel()];
    let deb_name = pin.filename.rsplit('/').next().unwrap();
    let cache = sockmatrix::kernel::cache_dir();
    let kdir = image.vmlinuz.parent().unwrap();
    assert!(
        kdir.starts_with(&cache),
        "{} in {}",
        kdir.display(),
        cache.display()
    );

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("cache");
    let copy_kdir = copy.join(kdir.strip_prefix(&cache).unwrap());
    std::fs::create_dir_all(&copy_kdir).unwrap();
    // Only the kernel's own files: its `modules/` folder (module cases) is not needed.
    for name in names_in(kdir) {
        if kdir.join(&name).is_file() {
            std::fs::copy(kdir.join(&name), copy_kdir.join(&name)).unwrap();
        }
    }
    std::fs::create_dir_all(copy.join("debs")).unwrap();
    std::fs::copy(
        cache.join("debs").join(deb_name),
        copy.join("debs").join(deb_name),
    )
    .unwrap();
    let good_vmlinuz = std::fs::read(&image.vmlinuz).unwrap();
    let corrupt = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 4096] {
            *b ^= 0xff;
        }
        std::fs::write(path, bytes).unwrap();
    };
    // Downloads cannot happen: every request goes to a proxy that is not there.
    let fetch = || {
        sockmatrix()
            .env("SOCKMATRIX_CACHE", &copy)
            .env("ALL_PROXY", "http://127.0.0.1:9")
            .args(["kernels", "fetch", &kernel()])
            .output()
            .unwrap()
    };

    corrupt(&copy_kdir.join("vmlinuz"));
    let out = fetch();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        std::fs::read(copy_kdir.join("vmlinuz")).unwrap() == good_vmlinuz,
        "vmlinuz was not extracted again"
    );

    corrupt(&copy_kdir.join("vmlinuz"));
    corrupt(&copy.join("debs").join(deb_name));
    let out = fetch();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(3), "{shown}");
    assert!(shown.contains("downloading again"), "{shown}");
    assert!(
        shown.contains(&format!("fetching pinned {}", pin.package)),
        "{shown}"
    );
    let leftovers: Vec<String> = names_in(&copy_kdir)
        .into_iter()
        .chain(names_in(&copy.join("debs")))
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
