//! Pure builders for the QEMU command line and the guest kernel command line.
//!
//! Nothing here touches the system: every function maps inputs to strings so
//! the whole command line is table-tested. Each flag says why it is there.

use std::ffi::OsString;
use std::path::Path;

/// The accelerator actually used (after `auto` was resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedAccel {
    Kvm,
    Tcg,
}

/// The QEMU machine type a guest boots on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    /// No PCI, no firmware: the fastest boot under TCG (kernels from about 4.14 on
    /// that know its boot path and its ACPI/MP tables).
    #[default]
    Microvm,
    /// The classic PC (i440FX): SeaBIOS, ISA serial ports at the same addresses; boots
    /// kernels microvm cannot, at the price of a firmware stage.
    Pc,
}

impl Machine {
    pub fn name(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm",
            Machine::Pc => "pc",
        }
    }
}

impl std::str::FromStr for Machine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "microvm" => Ok(Machine::Microvm),
            "pc" => Ok(Machine::Pc),
            other => Err(format!("unknown machine type `{other}` (microvm or pc)")),
        }
    }
}

/// Everything that decides one QEMU invocation.
#[derive(Debug, Clone)]
pub struct QemuPlan<'a> {
    pub accel: ResolvedAccel,
    pub machine: Machine,
    pub cpus: u32,
    pub memory_mb: u32,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub cmdline: String,
    /// Kernel console (ttyS0) is appended to this file.
    pub console_log: &'a Path,
}

pub const QEMU_BINARY: &str = "qemu-system-x86_64";

/// The full argument vector (without the binary name).
pub fn qemu_args(p: &QemuPlan) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |v: Vec<OsString>| a.extend(v);
    push(isolation_args());
    push(machine_args(p.machine, p.accel));
    push(cpu_args(p.accel, p.cpus));
    push(memory_args(p.memory_mb));
    push(kernel_args(p.kernel, p.initramfs, &p.cmdline));
    push(serial_args(p.console_log));
    a
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

/// Flags that keep the guest hermetic and make QEMU exit instead of resetting.
pub fn isolation_args() -> Vec<OsString> {
    os(&[
        // No default NIC, VGA, floppy, monitor or serial: we add exactly what we need.
        "-nodefaults",
        // Ignore /etc/qemu/*.conf so the host config cannot change the guest.
        "-no-user-config",
        // Headless; no SDL/GTK window.
        "-display",
        "none",
        // A guest reset (panic=-1, reboot=t, triple fault) exits QEMU instead of rebooting.
        "-no-reboot",
    ])
}

/// microvm: no PCI, no firmware (SeaBIOS/option ROMs skipped) -> fastest boot under TCG.
/// `rtc=on` keeps the CMOS RTC the kernel reads for wall-clock time;
/// ACPI stays on (default) so the guest's power-off reaches QEMU via the GED device.
/// pc: for kernels microvm cannot boot; its first ISA serial port comes from
/// `-serial`, the second is added the same way as on microvm.
///
/// TCG runs all vCPUs in one thread (`thread=single`). With a thread per vCPU, a
/// guest on a busy host spins while the vCPU holding a lock waits for a host core,
/// and a static key patched on one vCPU races the other's translated code ("Oops:
/// int3" in `udp6_ehashfn` and `inet_init_ehash_secret`, seen on 6.17 and 7.2).
/// Measured on 6.12, library of 65 cases, host load 12: one thread 58 s wall and
/// 23 CPU-s, a thread per vCPU 114 s and 31 CPU-s.
pub fn machine_args(machine: Machine, accel: ResolvedAccel) -> Vec<OsString> {
    let accel = match accel {
        ResolvedAccel::Kvm => "kvm",
        ResolvedAccel::Tcg => "tcg,thread=single",
    };
    let m = match machine {
        Machine::Microvm => "microvm,rtc=on",
        Machine::Pc => "pc",
    };
    os(&["-M", m, "-accel", accel])
}

/// Kernel parameters a machine type needs.
/// - pc under TCG: `no_timer_check` skips the IO-APIC timer check, which a loaded host
///   fails ("IO-APIC + timer doesn't work!", a panic) because the emulated PIT ticks
///   arrive late; microvm has no such check in its boot path.
pub fn machine_params(machine: Machine, accel: ResolvedAccel) -> Vec<String> {
    match (machine, accel) {
        (Machine::Pc, ResolvedAccel::Tcg) => vec!["no_timer_check".into()],
        _ => Vec::new(),
    }
}

/// TCG: `max` exposes every feature QEMU can emulate (the kernels are built for
/// x86-64-v1 but use newer features when present). KVM: pass the host CPU through.
pub fn cpu_args(accel: ResolvedAccel, cpus: u32) -> Vec<OsString> {
    let model = match accel {
        ResolvedAccel::Kvm => "host",
        ResolvedAccel::Tcg => "max",
    };
    let mut v = os(&["-cpu", model, "-smp"]);
    v.push(cpus.max(1).to_string().into());
    v
}

pub fn memory_args(memory_mb: u32) -> Vec<OsString> {
    vec!["-m".into(), format!("{memory_mb}M").into()]
}

/// Direct kernel boot: QEMU loads bzImage + initramfs itself (no bootloader, no disk).
pub fn kernel_args(kernel: &Path, initramfs: &Path, cmdline: &str) -> Vec<OsString> {
    vec![
        "-kernel".into(),
        kernel.into(),
        "-initrd".into(),
        initramfs.into(),
        "-append".into(),
        cmdline.into(),
    ]
}

/// Two 8250 UARTs (Debian cloud kernels have 8250 built in; virtio-console is a module):
/// - ttyS0 (0x3f8, irq 4): kernel console, appended to a log file the watchdog tails.
/// - ttyS1 (0x2f8, irq 3): result lines, on QEMU's stdout so the host reads them as a stream.
///   `signal=off`: a stray ^C byte must not kill QEMU. microvm only creates the
///   first UART itself, so the second is an explicit isa-serial at the legacy COM2 address.
pub fn serial_args(console_log: &Path) -> Vec<OsString> {
    // QEMU option syntax: a literal ',' in a value is written ",,".
    let path = console_log.to_string_lossy().replace(',', ",,");
    let con = OsString::from(format!("file,id=con,append=on,path={path}"));
    let mut v: Vec<OsString> = vec!["-chardev".into(), con];
    v.extend(os(&[
        "-serial",
        "chardev:con",
        "-chardev",
        "stdio,id=res,signal=off",
        "-device",
        "isa-serial,chardev=res,iobase=0x2f8,irq=3",
    ]));
    v
}

/// Kernel parameters every guest gets, each with its reason.
pub const BASE_CMDLINE: &[&str] = &[
    // Kernel messages on the first UART (our console log).
    "console=ttyS0",
    // Reboot at once on panic; with -no-reboot QEMU then exits, so a panic never hangs the run.
    "panic=-1",
    // microvm has no keyboard controller / reset register: triple fault is the reset that always works.
    "reboot=t",
    // Our init lives in the initramfs; never fall back to mounting a root disk.
    "rdinit=/init",
    // Register at least ttyS0..ttyS1 whatever the kernel's 8250 runtime default is.
    "8250.nr_uarts=2",
];

/// Timer frequency of the Debian amd64 kernels (CONFIG_HZ=250 in 5.10 .. 7.2).
pub const GUEST_HZ: u64 = 250;

/// Parameters for TCG guests, from the host TSC rate (TCG's RDTSC is the host TSC):
/// - `tsc_early_khz`: skip PIT-based TSC calibration, which fails on a loaded host
///   and leaves the guest hung without a timer tick (vm/qemu.md).
/// - `lpj`: the secondary vCPU would otherwise run calibrate_delay_direct (~0.5 s
///   under TCG); TSC delay loops count TSC cycles, so lpj = TSC Hz / HZ.
pub fn tcg_params(tsc_khz: Option<u32>) -> Vec<String> {
    match tsc_khz {
        Some(k) => vec![
            format!("tsc_early_khz={k}"),
            format!("lpj={}", k as u64 * 1000 / GUEST_HZ),
        ],
        None => Vec::new(),
    }
}

/// Builds the kernel command line: base flags, accel-specific flags, caller extras
/// (later wins), then `-- init_args` (the kernel passes everything after `--` to init's argv).
pub fn kernel_cmdline(accel_params: &[String], extra: &[String], init_args: &[String]) -> String {
    let mut parts: Vec<String> = BASE_CMDLINE.iter().map(|s| s.to_string()).collect();
    parts.extend(accel_params.iter().cloned());
    parts.extend(extra.iter().cloned());
    if !init_args.is_empty() {
        parts.push("--".into());
        parts.extend(init_args.iter().cloned());
    }
    parts.join(" ")
}

/// Shell-quoted rendering for logs and docs (not used to run anything).
pub fn render(args: &[OsString]) -> String {
    let mut s = String::from(QEMU_BINARY);
    for a in args {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(&a);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResolvedAccel::*;

    fn strs(v: Vec<OsString>) -> Vec<String> {
        v.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn machine_and_cpu_table() {
        let table = [
            (Tcg, 2, "tcg,thread=single", "max", "2"),
            (Kvm, 4, "kvm", "host", "4"),
            (Tcg, 0, "tcg,thread=single", "max", "1"), // 0 cpus is clamped to 1
        ];
        for (accel, cpus, want_accel, want_cpu, want_smp) in table {
            assert_eq!(
                strs(machine_args(Machine::Microvm, accel)),
                ["-M", "microvm,rtc=on", "-accel", want_accel]
            );
            assert_eq!(
                strs(machine_args(Machine::Pc, accel)),
                ["-M", "pc", "-accel", want_accel]
            );
            assert_eq!(
                strs(cpu_args(accel, cpus)),
                ["-cpu", want_cpu, "-smp", want_smp]
            );
        }
    }

    #[test]
    fn pc_under_tcg_skips_the_timer_check() {
        assert_eq!(machine_params(Machine::Pc, Tcg), ["no_timer_check"]);
        assert!(machine_params(Machine::Pc, Kvm).is_empty());
        assert!(machine_params(Machine::Microvm, Tcg).is_empty());
    }

    #[test]
    fn memory_table() {
        for (mb, want) in [(256, "256M"), (1024, "1024M")] {
            assert_eq!(strs(memory_args(mb)), ["-m", want]);
        }
    }

    #[test]
    fn cmdline_table() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let base = BASE_CMDLINE.join(" ");
        type Row = (Vec<String>, Vec<String>, Vec<String>, String);
        let table: [Row; 4] = [
            (vec![], vec![], vec![], base.clone()),
            (
                tcg_params(Some(2445410)),
                vec![],
                vec![],
                format!("{base} tsc_early_khz=2445410 lpj=9781640"),
            ),
            (
                tcg_params(None),
                s(&["loglevel=5"]),
                vec![],
                format!("{base} loglevel=5"),
            ),
            (
                vec![],
                s(&["quiet"]),
                s(&["--agent", "x y"]),
                format!("{base} quiet -- --agent x y"),
            ),
        ];
        for (accel, extra, init, want) in table {
            assert_eq!(kernel_cmdline(&accel, &extra, &init), want);
        }
    }

    #[test]
    fn full_command_has_every_piece_in_order() {
        let p = QemuPlan {
            accel: Tcg,
            machine: Machine::Microvm,
            cpus: 2,
            memory_mb: 512,
            kernel: Path::new("/k/vmlinuz"),
            initramfs: Path::new("/k/initrd"),
            cmdline: "console=ttyS0".into(),
            console_log: Path::new("/tmp/con.log"),
        };
        let a = strs(qemu_args(&p));
        let joined = a.join(" ");
        for want in [
            "-nodefaults -no-user-config -display none -no-reboot",
            "-M microvm,rtc=on -accel tcg,thread=single -cpu max -smp 2 -m 512M",
            "-kernel /k/vmlinuz -initrd /k/initrd -append console=ttyS0",
            "-chardev file,id=con,append=on,path=/tmp/con.log -serial chardev:con",
            "-chardev stdio,id=res,signal=off -device isa-serial,chardev=res,iobase=0x2f8,irq=3",
        ] {
            assert!(joined.contains(want), "missing {want:?} in {joined}");
        }
        assert!(render(&qemu_args(&p)).contains("-append console=ttyS0"));
    }

    #[test]
    fn comma_in_log_path_is_escaped() {
        let a = strs(serial_args(Path::new("/tmp/a,b.log")));
        assert_eq!(a[1], "file,id=con,append=on,path=/tmp/a,,b.log");
    }

    #[test]
    fn render_quotes_spaces() {
        let r = render(&["-append".into(), "a b".into()]);
        assert_eq!(r, "qemu-system-x86_64 -append 'a b'");
    }
}
