//! `sockmatrix kernels build` without compiling a kernel: a fake kernel tree whose
//! Makefile plays Kbuild (tinyconfig, olddefconfig, bzImage, kernelrelease) drives the
//! real command through planning, the config check, the cache and its failures. The
//! real build is `make -C ci source-proof`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FAKE_MAKEFILE: &str = "\
VERSION = 6
PATCHLEVEL = 1
SUBLEVEL = 999
EXTRAVERSION =
tinyconfig x86_64_defconfig:
\t@echo CONFIG_FAKE_BASE=y > $(O)/.config
olddefconfig:
\t@grep -v -x -f $(FAKE_STATE)/drop-options $(O)/.config > $(O)/.config.new || true
\t@mv $(O)/.config.new $(O)/.config
bzImage:
\t@echo '  CC      net/fake.o'
\t@echo built >> $(FAKE_STATE)/compiled
\t@mkdir $(O)/.fake-busy || { echo 'two makes in one output folder' >&2; exit 1; }
\t@if [ -f $(FAKE_STATE)/slow ]; then sh -c 'echo $$$$ > $(FAKE_STATE)/compiler.pid; exec sleep $$(cat $(FAKE_STATE)/slow)'; fi
\t@rmdir $(O)/.fake-busy
\t@if [ -f $(FAKE_STATE)/fail ]; then echo 'net/fake.c:1:1: error: the compiler failed here' >&2; exit 1; fi
\t@mkdir -p $(O)/arch/x86/boot && cp $(FAKE_STATE)/bzImage $(O)/arch/x86/boot/bzImage
\t@[ ! -f $(FAKE_STATE)/fill-disk ] || dd if=/dev/zero of=$(O)/filler bs=4k 2>/dev/null || true
kernelrelease:
\t@echo 6.1.999-fake
modules.builtin:
\t@[ ! -f $(FAKE_STATE)/slow-builtin ] || exec sh -c 'echo $$$$ > $(FAKE_STATE)/builtin.pid; exec sleep 60'
";

/// `merge_config.sh -m -O OUT OUT/.config FRAGMENT`: appends the fragment's options.
const FAKE_MERGE: &str = "#!/bin/sh\ngrep -E '^(CONFIG_|# CONFIG_)' \"$5\" >> \"$4\"\n";

struct Fake {
    _dir: tempfile::TempDir,
    tree: PathBuf,
    state: PathBuf,
    cache: PathBuf,
}

fn fake() -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("linux");
    let state = dir.path().join("state");
    let cache = dir.path().join("cache");
    for d in [
        tree.join("arch/x86"),
        tree.join("scripts/kconfig"),
        state.clone(),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(tree.join("Makefile"), FAKE_MAKEFILE).unwrap();
    // Like a real tree, its Kconfig defines every option the guest fragment sets (an
    // option a tree does not define is not required of it: old kernels).
    let fragment = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/config/sockmatrix-guest.config"),
    )
    .unwrap();
    let kconfig: String = fragment
        .lines()
        .filter_map(|l| l.strip_prefix("CONFIG_")?.split('=').next())
        .map(|name| format!("config {name}\n\tbool\n"))
        .collect();
    std::fs::write(tree.join("Kconfig"), kconfig).unwrap();
    std::fs::write(tree.join("scripts/kconfig/merge_config.sh"), FAKE_MERGE).unwrap();
    std::fs::write(state.join("drop-options"), "CONFIG_NOTHING_DROPPED=y\n").unwrap();
    std::fs::write(state.join("bzImage"), bzimage("6.1.999-fake (proof) #1")).unwrap();
    Fake {
        _dir: dir,
        tree,
        state,
        cache,
    }
}

/// A file with the bzImage header magic and a version string.
fn bzimage(version: &str) -> Vec<u8> {
    let mut b = vec![0u8; 0x1000];
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x20e..0x210].copy_from_slice(&(0x200u16).to_le_bytes());
    b[0x400..0x400 + version.len()].copy_from_slice(version.as_bytes());
    b
}

/// sockmatrix with the fake's cache and the fake Makefile's state folder; a test may
/// set `SOCKMATRIX_CACHE` again to use another cache.
fn command(f: &Fake) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sockmatrix"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SOCKMATRIX_CACHE", &f.cache)
        .env("FAKE_STATE", &f.state);
    c
}

fn sockmatrix(f: &Fake, args: &[&str]) -> Output {
    command(f).args(args).output().unwrap()
}

fn build(f: &Fake, extra: &[&str]) -> Output {
    let mut args = vec!["kernels", "build", "--source", f.tree.to_str().unwrap()];
    args.extend_from_slice(extra);
    sockmatrix(f, &args)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn compiled(f: &Fake) -> usize {
    std::fs::read_to_string(f.state.join("compiled"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Complete entries in the built-kernel cache (staging folders excluded).
fn built_entries(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache.join("built"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_build_is_cached_by_its_inputs_and_listed() {
    let f = fake();
    let out = build(&f, &["--config", "minimal"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let vmlinuz = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(vmlinuz.is_file(), "{}", text(&out));
    assert_eq!(compiled(&f), 1);
    let entry = vmlinuz.parent().unwrap();
    for file in ["vmlinuz", "config", "build.log", "build.json"] {
        assert!(entry.join(file).is_file(), "{file}");
    }
    let config = std::fs::read_to_string(entry.join("config")).unwrap();
    assert!(
        config.contains("CONFIG_FAKE_BASE=y") && config.contains("CONFIG_NET_NS=y"),
        "{config}"
    );
    let log = std::fs::read_to_string(entry.join("build.log")).unwrap();
    assert!(log.contains("CC      net/fake.o"), "{log}");

    // Same inputs: nothing compiled, the same kernel.
    let again = build(&f, &["--config", "minimal"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(
        text(&again).contains("already built with these inputs"),
        "{}",
        text(&again)
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(compiled(&f), 1);

    // Another config, another kernel; an edited tree, another kernel.
    let def = build(&f, &["--config", "defconfig", "--name", "fake-defconfig"]);
    assert_eq!(def.status.code(), Some(0), "{}", text(&def));
    assert_eq!(
        compiled(&f),
        1,
        "the base config differs only in name: same final .config"
    );
    assert!(
        text(&def).contains("fake-defconfig:"),
        "the reused kernel takes the new name: {}",
        text(&def)
    );
    std::fs::write(f.tree.join("Kconfig"), "# edited\n").unwrap();
    let edited = build(&f, &["--config", "minimal"]);
    assert_eq!(edited.status.code(), Some(0), "{}", text(&edited));
    assert_eq!(compiled(&f), 2);
    assert_ne!(edited.stdout, out.stdout);

    let list = sockmatrix(&f, &["kernels", "list"]);
    let list = text(&list);
    assert!(list.contains("built from source"), "{list}");
    assert!(list.contains("built-6.1.999-minimal-"), "{list}");
    assert!(list.contains("6.1.999-fake minimal"), "{list}");
    assert!(list.contains("tree:"), "{list}");
}

#[test]
fn a_folder_that_is_not_a_kernel_tree_is_bad_input() {
    let f = fake();
    let not_tree = f.state.clone();
    let out = sockmatrix(
        &f,
        &["kernels", "build", "--source", not_tree.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("is not a Linux kernel source tree"),
        "{}",
        text(&out)
    );
    let out = sockmatrix(&f, &["kernels", "build", "--debian", "linux-image-6.1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = sockmatrix(&f, &["kernels", "build"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--source"), "{}", text(&out));
    assert!(built_entries(&f.cache).is_empty());
}

#[test]
fn options_the_guest_needs_that_did_not_survive_are_named() {
    let f = fake();
    std::fs::write(
        f.state.join("drop-options"),
        "CONFIG_NET_NS=y\nCONFIG_SERIAL_8250_CONSOLE=y\nCONFIG_BPF_SYSCALL=y\n",
    )
    .unwrap();
    let out = build(&f, &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("CONFIG_NET_NS=y") && said.contains("CONFIG_SERIAL_8250_CONSOLE=y"),
        "{said}"
    );
    // Optional: reported, not fatal on its own.
    assert!(said.contains("optional CONFIG_BPF_SYSCALL=y"), "{said}");
    assert_eq!(
        compiled(&f),
        0,
        "nothing is compiled for a config that cannot work"
    );
    assert!(built_entries(&f.cache).is_empty());

    // Only an optional option dropped: built, with the note.
    std::fs::write(f.state.join("drop-options"), "CONFIG_BPF_SYSCALL=y\n").unwrap();
    let out = build(&f, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_compiler_failure_shows_the_log_tail_and_caches_nothing() {
    let f = fake();
    std::fs::write(f.state.join("fail"), "").unwrap();
    let out = build(&f, &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("error: the compiler failed here"), "{said}");
    assert!(said.contains("full log:"), "{said}");
    assert!(
        built_entries(&f.cache).is_empty(),
        "{:?}",
        built_entries(&f.cache)
    );

    let out = build(&f, &["--cc", "no-such-gcc-4.9"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("no-such-gcc-4.9"), "{}", text(&out));
}

#[test]
fn a_tree_configured_in_place_is_refused() {
    let f = fake();
    std::fs::write(f.tree.join(".config"), "CONFIG_X=y\n").unwrap();
    let out = build(&f, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("make mrproper"), "{}", text(&out));
}

/// Run from a Makefile (`make -C ci source-proof`, a CI job's make), the parent's
/// MAKEFLAGS (`w`: print directories) must not reach the kernel's make: the release
/// read with `make -s kernelrelease` would carry "Entering directory" lines.
#[test]
fn a_parent_makes_flags_do_not_reach_the_kernel_build() {
    let f = fake();
    let out = command(&f)
        .env("MAKEFLAGS", "w")
        .env("MAKELEVEL", "1")
        .args(["kernels", "build", "--config", "minimal", "--source"])
        .arg(&f.tree)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let vmlinuz = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(vmlinuz.parent().unwrap().join("build.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["release"], "6.1.999-fake", "{meta}");
}

/// Starts `kernels build` of the fake tree and waits until the process whose pid the
/// fake Makefile writes to `pid_file` runs (a compiler stand-in sleeping in a step).
#[allow(clippy::zombie_processes)] // the caller waits for the child it gets back
fn start_and_wait_for(f: &Fake, pid_file: &str) -> (std::process::Child, i32) {
    let mut child = command(f)
        .args(["kernels", "build", "--config", "minimal", "--source"])
        .arg(&f.tree)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(pid) = std::fs::read_to_string(f.state.join(pid_file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return (child, pid);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{pid_file} never ran: {}", text(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether a process runs (a zombie waiting for its reaper does not count).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn wait_gone(pid: i32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while running(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// SIGTERM or SIGINT during the compile stops make and the compiler it runs, exits
/// 143/130, and caches nothing; so does one while the finished kernel is being saved
/// (the modules.builtin step runs with the staging folder open).
#[test]
fn a_signal_during_the_build_stops_make_and_caches_nothing() {
    use nix::sys::signal::Signal;
    for (sig, code) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
        let f = fake();
        std::fs::write(f.state.join("slow"), "60").unwrap();
        let (child, compiler) = start_and_wait_for(&f, "compiler.pid");
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let said = text(&out);
        assert_eq!(out.status.code(), Some(code), "{sig}: {said}");
        assert!(said.contains(&format!("interrupted by {sig}")), "{said}");
        assert!(wait_gone(compiler), "{sig}: the compiler still runs");
        assert!(
            built_entries(&f.cache).is_empty(),
            "{:?}",
            built_entries(&f.cache)
        );
    }

    let f = fake();
    std::fs::write(f.state.join("slow-builtin"), "").unwrap();
    let (child, step) = start_and_wait_for(&f, "builtin.pid");
    signal(&child, Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out));
    assert!(wait_gone(step));
    assert!(
        built_entries(&f.cache).is_empty(),
        "{:?}",
        built_entries(&f.cache)
    );
}

/// A build killed outright (SIGKILL: no chance to clean up) while its kernel was in
/// the staging folder: the next build removes that folder, `built/` holds only
/// complete entries.
#[test]
fn a_killed_builds_staging_folder_is_removed_by_the_next_build() {
    let f = fake();
    std::fs::write(f.state.join("slow-builtin"), "").unwrap();
    let (mut child, step) = start_and_wait_for(&f, "builtin.pid");
    assert_eq!(built_entries(&f.cache).len(), 1, "the staging folder");
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    assert!(wait_gone(step), "make outlived sockmatrix");
    std::fs::remove_file(f.state.join("slow-builtin")).unwrap();

    let out = build(&f, &["--config", "minimal"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let vmlinuz = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let key = vmlinuz
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(built_entries(&f.cache), [key]);
}

/// Two builds of the same tree and config at once share the object folder: the second
/// waits for the first (two makes in one folder corrupt each other; the fake Makefile
/// fails when it sees one), then gets the first's kernel without compiling.
#[test]
fn two_builds_of_the_same_inputs_at_once_compile_once() {
    let f = fake();
    std::fs::write(f.state.join("slow"), "3").unwrap();
    let (first, _) = start_and_wait_for(&f, "compiler.pid");
    let second = build(&f, &["--config", "minimal"]);
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert!(
        text(&second).contains("waiting for another build"),
        "{}",
        text(&second)
    );
    assert_eq!(first.stdout, second.stdout);
    assert_eq!(compiled(&f), 1);
    assert_eq!(built_entries(&f.cache).len(), 1);
}

/// A one-thread HTTP server on 127.0.0.1 serving `files` (path -> body), 404 for the
/// rest; returns its base URL.
fn serve(files: Vec<(String, Vec<u8>)>) -> String {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let _ = match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => conn
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| conn.write_all(body)),
                None => conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    base
}

/// `tar czf` of the fake tree, its Makefile's SUBLEVEL set to `sublevel`.
fn fake_tarball(f: &Fake, sublevel: &str) -> Vec<u8> {
    let makefile = FAKE_MAKEFILE.replace("SUBLEVEL = 999", &format!("SUBLEVEL = {sublevel}"));
    std::fs::write(f.tree.join("Makefile"), makefile).unwrap();
    let out = Command::new("tar")
        .arg("czf")
        .arg("-")
        .arg("-C")
        .arg(f.tree.parent().unwrap())
        .arg("linux")
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A URL the server has nothing at is bad input naming the status (it said only
/// "GET <url>", exit 3); two sites' `linux.tar.gz` are two sources (the second URL
/// was served the first's download from the cache, keyed by file name).
#[test]
fn urls_404_is_bad_input_and_same_named_tarballs_are_not_confused() {
    let f = fake();
    let base = serve(vec![
        ("/a/linux.tar.gz".into(), fake_tarball(&f, "1")),
        ("/b/linux.tar.gz".into(), fake_tarball(&f, "2")),
    ]);
    let missing = format!("{base}/nothere/linux.tar.gz");
    let out = sockmatrix(&f, &["kernels", "build", "--source", &missing]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("HTTP 404"), "{}", text(&out));

    let mut names = Vec::new();
    for site in ["a", "b"] {
        let url = format!("{base}/{site}/linux.tar.gz");
        let out = sockmatrix(&f, &["kernels", "build", "--source", &url]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        names.push(text(&out));
    }
    assert!(names[0].contains("built-6.1.1-minimal-"), "{}", names[0]);
    assert!(names[1].contains("built-6.1.2-minimal-"), "{}", names[1]);
}

/// `--name` is typed after `run --kernel` and names a folder under results/: a slash,
/// `host`, a release-like name, a catalogue id, or the name of another built kernel
/// is bad input (a slash escaped results/, `host` ran on the host, a second `mine`
/// made `run --kernel mine` pick one of two silently).
#[test]
fn a_name_that_clashes_or_is_a_path_is_bad_input() {
    let f = fake();
    for name in [
        "a/b",
        "../../x",
        "host",
        "6.1.176",
        "6.1",
        ".hidden",
        "two words",
    ] {
        let out = build(&f, &["--name", name]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        assert!(text(&out).contains("--name"), "{name}: {}", text(&out));
    }
    assert_eq!(compiled(&f), 0);
    let out = build(&f, &["--name", "mine"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The same inputs under the same name: the cached kernel.
    let again = build(&f, &["--name", "mine"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    // Other inputs under a name that is taken.
    std::fs::write(f.tree.join("Kconfig"), "# edited\n").unwrap();
    let other = build(&f, &["--name", "mine"]);
    assert_eq!(other.status.code(), Some(2), "{}", text(&other));
    assert!(
        text(&other).contains("already the name of another built kernel"),
        "{}",
        text(&other)
    );
    assert_eq!(compiled(&f), 1);
    assert_eq!(built_entries(&f.cache).len(), 1);
}

/// Kbuild cannot build with a space (or colon) in the tree's or the output folder's
/// path: said before make runs (make failed with a log tail and exit 3, and an output
/// path with a space made Kbuild's `mkdir -p` create a stray folder).
#[test]
fn a_path_with_spaces_is_bad_input_before_make_runs() {
    let f = fake();
    let spaced = f.tree.parent().unwrap().join("my linux");
    std::fs::rename(&f.tree, &spaced).unwrap();
    let out = sockmatrix(
        &f,
        &["kernels", "build", "--source", spaced.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("spaces or colons in the path of the kernel tree"),
        "{}",
        text(&out)
    );
    std::fs::rename(&spaced, &f.tree).unwrap();

    let cache = f.cache.parent().unwrap().join("my cache");
    let out = command(&f)
        .env("SOCKMATRIX_CACHE", &cache)
        .args(["kernels", "build", "--source"])
        .arg(&f.tree)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("SOCKMATRIX_CACHE"), "{}", text(&out));
    assert_eq!(compiled(&f), 0, "make never ran");
}

/// A full disk while the kernel is saved (the fake make fills the cache's filesystem,
/// a 4 MiB tmpfs, after writing its image): the error names the file and the OS error
/// (it said only "No space left on device (os error 28)"), exit 3, nothing in
/// `built/`. Needs root for the mount; says so and passes without it.
#[test]
fn a_full_disk_is_named_and_leaves_no_entry() {
    let f = fake();
    let mnt = f.cache.parent().unwrap().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    std::fs::write(f.state.join("fill-disk"), "").unwrap();
    let cache = mnt.join("cache");
    let out = command(&f)
        .env("SOCKMATRIX_CACHE", &cache)
        .args(["kernels", "build", "--source"])
        .arg(&f.tree)
        .output()
        .unwrap();
    let entries = built_entries(&cache);
    let _ = Command::new("umount").arg(&mnt).status();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    let line = said
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        line.contains("No space left on device") && line.contains("/built/"),
        "{said}"
    );
    assert!(entries.is_empty(), "{entries:?}");
}

/// A built kernel whose vmlinuz changed after the build: `run --kernel` says so (it
/// said "not a built kernel (`kernels list`)" while `kernels list` listed it), the
/// list marks it, and building the same inputs again replaces it.
#[test]
fn a_damaged_built_kernel_is_named_and_rebuilt() {
    let f = fake();
    let out = build(&f, &["--name", "mine"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let vmlinuz = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let mut bytes = std::fs::read(&vmlinuz).unwrap();
    bytes[0x500] ^= 0xff;
    std::fs::write(&vmlinuz, bytes).unwrap();

    let run = sockmatrix(&f, &["run", "--kernel", "mine", "--accel", "tcg"]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(text(&run).contains("no longer matches"), "{}", text(&run));
    let list = text(&sockmatrix(&f, &["kernels", "list"]));
    assert!(list.contains("DAMAGED"), "{list}");

    let again = build(&f, &["--name", "mine"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(compiled(&f), 2);
    assert_eq!(again.stdout, out.stdout);
    let list = text(&sockmatrix(&f, &["kernels", "list"]));
    assert!(!list.contains("DAMAGED"), "{list}");
}

/// A server whose one file never finishes: headers for 64 MiB, then a KiB every 50 ms.
fn serve_slowly() -> String {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let head =
                    "HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\nConnection: close\r\n\r\n";
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                while conn.write_all(&[0u8; 1024]).is_ok() {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            });
        }
    });
    base
}

/// SIGTERM while a `--source URL` downloads: exit 143 like an interrupted compile
/// (it was exit 3, "download ... interrupted"), and no partial file stays.
#[test]
fn a_signal_during_a_download_exits_143_and_keeps_nothing() {
    let f = fake();
    let url = format!("{}/linux.tar.gz", serve_slowly());
    let mut child = command(&f)
        .args(["kernels", "build", "--source", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sources = f.cache.join("sources");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(&sources).map_or(true, |mut d| d.next().is_none()) {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the download never started: {}", text(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out));
    assert!(
        text(&out).contains("interrupted by SIGTERM"),
        "{}",
        text(&out)
    );
    let left: Vec<_> = std::fs::read_dir(&sources)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
