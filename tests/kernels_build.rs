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
\t@if [ -f $(FAKE_STATE)/fail ]; then echo 'net/fake.c:1:1: error: the compiler failed here' >&2; exit 1; fi
\t@mkdir -p $(O)/arch/x86/boot && cp $(FAKE_STATE)/bzImage $(O)/arch/x86/boot/bzImage
kernelrelease:
\t@echo 6.1.999-fake
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

fn sockmatrix(f: &Fake, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SOCKMATRIX_CACHE", &f.cache)
        .env("FAKE_STATE", &f.state)
        .args(args)
        .output()
        .unwrap()
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
    let out = Command::new(env!("CARGO_BIN_EXE_sockmatrix"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SOCKMATRIX_CACHE", &f.cache)
        .env("FAKE_STATE", &f.state)
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
