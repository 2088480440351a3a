//! One kernel, one boot: builds the initramfs (agent + plan), boots it, gathers the
//! agent's stream and judges every case. A guest that dies is reported per case.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Progress, RunOptions};
use crate::agent::GuestPlan;
use crate::case::Case;
use crate::judge::{judge, Verdict};
use crate::observe::{AgentEvent, CaseRun, Outcome};
use crate::qemu::{self, BootEvent, BootSpec, Entry, FileData, Gate, GuestExit};
use crate::resultset::results::{self, BootFacts, CaseResult, KernelResult, PendingLog};

/// What to boot: a kernel image and how to call it in results.
pub struct KernelImage {
    pub id: String,
    pub vmlinuz: PathBuf,
    pub package_version: Option<String>,
    /// What `kernels build` made it from, for a kernel built from source.
    pub built: Option<results::BuiltFrom>,
    /// Where the kernel's own modules come from, for cases that require one.
    pub modules: crate::kernel::ModuleSource,
    /// The machine type its catalogue entry or build declares (None: microvm, with
    /// a fallback to pc when microvm cannot boot it).
    pub machine: Option<crate::qemu::Machine>,
}

/// Time for the kernel to boot and the agent to start, on top of the cases' budgets.
const BOOT_BUDGET: Duration = Duration::from_secs(60);

/// Boots after a guest died mid-plan, each for the cases not reported yet. A case
/// that takes the guest down twice is given up; a one-off (a TCG glitch) is not
/// allowed to cost the other cases their results.
const MAX_RESUMES: usize = 2;

/// A kernel's run, with what `results::save` must move into its folder. The scratch
/// folder (initramfs, console logs while they are written) is removed on drop, so an
/// interrupted or unsaved run leaves nothing behind.
pub struct KernelRun {
    pub result: KernelResult,
    /// This run's console logs, in boot order.
    pub logs: Vec<PendingLog>,
    _scratch: Option<tempfile::TempDir>,
}

impl KernelRun {
    /// A run that never booted (no logs).
    pub fn without_boot(result: KernelResult) -> KernelRun {
        KernelRun {
            result,
            logs: Vec::new(),
            _scratch: None,
        }
    }
}

/// A scratch folder in the temp dir, named with our pid so that a leftover of a
/// killed run is recognised and removed by the next one (`leftovers`).
pub fn scratch_dir(what: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&crate::leftovers::prefix(what))
        .tempdir()
        .with_context(|| format!("creating a scratch folder for the {what}"))
}

/// Console log names unique to this run (`console-<UTC time>-<pid>[.N].log`), so a
/// result never points to another run's log.
fn log_name(run_tag: &str, boot: usize) -> String {
    match boot {
        0 => format!("console-{run_tag}.log"),
        n => format!("console-{run_tag}.{}.log", n + 1),
    }
}

/// How a guest ended before reporting every case.
struct Death {
    /// What happened, with the console tail.
    why: String,
    /// The case that was running, if any.
    during: Option<String>,
}

pub fn run_on_kernel(
    image: &KernelImage,
    cases: &[Case],
    opts: &RunOptions,
    gate: &Gate,
    progress: &(dyn Fn(Progress) + Sync),
) -> KernelRun {
    let dir = results::kernel_dir(&opts.results_dir, &image.id);
    let run_tag = format!(
        "{}-{}",
        crate::resultset::history::file_stamp(results::now()),
        std::process::id()
    );
    let mut result = KernelResult {
        kernel: image.id.clone(),
        release: None,
        uname_version: None,
        package_version: image.package_version.clone(),
        built: image.built.clone(),
        could_not_run: None,
        boot: None,
        cases: Vec::new(),
        finished_at: 0,
    };
    let scratch = match scratch_dir("run") {
        Ok(scratch) => scratch,
        Err(e) => {
            let why = format!("{e:#}");
            return KernelRun::without_boot(super::could_not_run(&image.id, cases, why));
        }
    };
    let mut logs: Vec<PendingLog> = Vec::new();
    // Attempts of every boot so far: a resumed boot goes on counting.
    let mut attempts_before = 0;
    let mut runs: BTreeMap<String, CaseRun> = BTreeMap::new();
    // Kernel splats printed while a case ran, by case (from every boot).
    let mut splats: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut uname_version: Option<String> = None;
    // Cases a dead guest took down twice: reported as errors, not run again.
    let mut given_up: BTreeMap<String, String> = BTreeMap::new();
    let mut deaths: Vec<Death> = Vec::new();
    let mut died_during: Option<String> = None;
    for boot in 0..=MAX_RESUMES {
        let pending: Vec<Case> = cases
            .iter()
            .filter(|c| !runs.contains_key(&c.id) && !given_up.contains_key(&c.id))
            .cloned()
            .collect();
        if pending.is_empty() {
            break;
        }
        if let Some(signal) = crate::interrupt::requested() {
            result.could_not_run = Some(format!("interrupted by {signal}"));
            break;
        }
        let name = log_name(&run_tag, boot);
        let log = LogPaths {
            writing: scratch.path().join(&name),
            kept: dir.join(&name),
        };
        let collected = boot_and_collect(
            image,
            &pending,
            opts,
            gate,
            progress,
            &log,
            &mut attempts_before,
            &mut runs,
            &mut result,
            &mut uname_version,
            &mut splats,
            // A guest that died after a restore is booted cold.
            !opts.cold && boot == 0,
        );
        if log.writing.is_file() {
            logs.push(PendingLog {
                from: log.writing.clone(),
                name,
            });
        }
        match collected {
            Ok(None) => break,
            Err(e) => {
                result.could_not_run = Some(format!("{e:#}"));
                break;
            }
            Ok(Some(death)) => {
                if let Some(case) = &death.during {
                    if deaths.iter().any(|d| d.during.as_ref() == Some(case)) {
                        given_up.insert(case.clone(), death.why.clone());
                    }
                }
                died_during = Some(death.why.clone());
                if boot < MAX_RESUMES {
                    let reason = death.why.lines().next().unwrap_or_default().to_string();
                    progress(Progress::Retrying {
                        kernel: image.id.clone(),
                        reason: format!("{reason}; booting again for the cases left"),
                    });
                }
                deaths.push(death);
            }
        }
    }
    // Not one case reported in any boot: the kernel could not run at all.
    if runs.is_empty() && result.could_not_run.is_none() {
        if let Some(death) = deaths.last() {
            result.could_not_run = Some(death.why.lines().next().unwrap_or_default().to_string());
        }
    }
    if let Some(boot) = result.boot.as_mut() {
        boot.resumes = deaths
            .iter()
            .map(|d| d.why.lines().next().unwrap_or_default().to_string())
            .collect();
    }
    result.uname_version = uname_version;
    let version = super::version_of(&result);
    for case in cases {
        let (run, verdict) = match runs.remove(&case.id) {
            Some(run) => {
                let verdict = match splats.get(&case.id) {
                    Some(excerpts) => Verdict::Error {
                        message: splat_message(excerpts),
                    },
                    None => judge(case, &run, version),
                };
                (run, verdict)
            }
            None => {
                let why = given_up
                    .get(&case.id)
                    .cloned()
                    .or_else(|| died_during.clone())
                    .or_else(|| result.could_not_run.clone())
                    .unwrap_or_else(|| "the agent never reported this case".to_string());
                let run = CaseRun {
                    id: case.id.clone(),
                    outcome: Outcome::Error {
                        message: why.clone(),
                        line: None,
                    },
                    observations: Default::default(),
                    elapsed_ms: 0,
                };
                (run, Verdict::Error { message: why })
            }
        };
        result.cases.push(CaseResult::new(case, run, verdict));
    }
    result.finished_at = results::now();
    KernelRun {
        result,
        logs,
        _scratch: Some(scratch),
    }
}

/// Where QEMU writes a boot's console log, and where `save` will keep it.
struct LogPaths {
    writing: PathBuf,
    kept: PathBuf,
}

/// What a result keeps about the boot that ran its cases.
fn boot_facts(outcome: &qemu::BootOutcome, attempts: u32, console_log: &Path) -> BootFacts {
    BootFacts {
        accel: outcome.accel.accel.name().to_string(),
        accel_reason: Some(outcome.accel.reason.clone()),
        attempts,
        hung_attempts: outcome.hung_attempts.clone(),
        boot_to_ready_ms: outcome.boot_to_ready.map(|d| d.as_millis() as u64),
        total_ms: outcome.total.as_millis() as u64,
        exit: format!("{:?}", outcome.exit),
        console_problems: outcome.problems.iter().map(|p| p.line.clone()).collect(),
        console_log: console_log.to_path_buf(),
        resumes: Vec::new(),
        qemu_command: Some(outcome.command.clone()),
        fresh: None,
    }
}

/// Each problem the kernel printed while a case ran (between the agent's markers
/// on the console), as excerpts of the splat, by case.
pub fn splats_by_case(problems: &[qemu::ConsoleProblem]) -> BTreeMap<String, Vec<String>> {
    let mut by_case: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for problem in problems {
        if let Some(case) = &problem.case {
            by_case
                .entry(case.clone())
                .or_default()
                .push(problem.excerpt.join("\n"));
        }
    }
    by_case
}

/// A case during which the kernel printed an oops, BUG, WARNING...: whatever it
/// observed, the kernel misbehaved under it.
fn splat_message(excerpts: &[String]) -> String {
    format!(
        "the kernel printed {} problem(s) while this case ran, {}",
        excerpts.len(),
        excerpts.join("\n...\n")
    )
}

/// An agent panic is a sockmatrix bug: never to be read as the kernel's crash.
fn agent_panic_message(message: &str) -> String {
    format!("the sockmatrix guest agent panicked (a sockmatrix bug, not a kernel crash): {message}")
}

/// The initramfs: the agent as /init, the plan (if any), the results port node, and
/// the kernel modules the plan loads (`/modules/<name>.ko`, from `module_files`).
pub fn write_guest_image(
    path: &Path,
    agent: &Path,
    plan: Option<&GuestPlan>,
    module_files: &[(String, PathBuf)],
) -> Result<()> {
    let mut entries = qemu::base_entries();
    // ttyS1 (major 4, minor 65) for an init that writes results before mounting /dev.
    entries.push(Entry::CharDev {
        path: "dev/ttyS1".into(),
        mode: 0o600,
        major: 4,
        minor: 65,
    });
    entries.push(Entry::File {
        path: "init".into(),
        mode: 0o755,
        data: FileData::Source(agent.to_path_buf()),
    });
    if let Some(plan) = plan {
        entries.push(Entry::File {
            path: "plan.json".into(),
            mode: 0o644,
            data: FileData::Bytes(serde_json::to_vec(plan)?),
        });
    }
    if !module_files.is_empty() {
        entries.push(Entry::Dir {
            path: "modules".into(),
            mode: 0o755,
        });
    }
    for (name, file) in module_files {
        entries.push(Entry::File {
            path: format!("modules/{name}.ko"),
            mode: 0o644,
            data: FileData::Source(file.clone()),
        });
    }
    qemu::write_initramfs(path, &entries).context("writing the initramfs")
}

/// Boots once and files each finished case into `runs`. Ok(Some(death)) when the
/// guest ended before reporting every case.
#[allow(clippy::too_many_arguments)]
fn boot_and_collect(
    image: &KernelImage,
    cases: &[Case],
    opts: &RunOptions,
    gate: &Gate,
    progress: &(dyn Fn(Progress) + Sync),
    console_log: &LogPaths,
    attempts_before: &mut u32,
    runs: &mut BTreeMap<String, CaseRun>,
    result: &mut KernelResult,
    uname_version: &mut Option<String>,
    splats: &mut BTreeMap<String, Vec<String>>,
    restore: bool,
) -> Result<Option<Death>> {
    let agent = super::agent_binary::agent_binary()?;
    let scratch = console_log
        .writing
        .parent()
        .context("console log has no folder")?;
    let initramfs = scratch.join("initramfs.cpio");
    let (modules, module_files) = super::modules::plan_modules(image, cases);
    let plan = GuestPlan {
        cases: cases.iter().map(|c| c.plan.clone()).collect(),
        modules,
    };
    write_guest_image(&initramfs, &agent, Some(&plan), &module_files)?;

    let longest_case = cases.iter().map(|c| c.plan.timeout_ms).max().unwrap_or(0);
    let all_cases: u64 = cases.iter().map(|c| c.plan.timeout_ms).sum();
    let mut spec = BootSpec::new(&image.vmlinuz, &initramfs, &console_log.writing);
    spec.accel = opts.accel;
    spec.machine = opts.machine.or(image.machine).unwrap_or_default();
    // Nobody chose the machine: microvm, and pc if microvm cannot boot the kernel.
    let mut may_fall_back = opts.machine.is_none() && image.machine.is_none();
    spec.memory_mb = super::guest_memory_mb(opts.memory_mb, cases);
    spec.cpus = opts.cpus;
    spec.retries = opts.retries;
    spec.ready_timeout = opts.ready_timeout.mul_f64(super::boot_patience());
    // The agent reports at least once per case: a case that outlives its own budget
    // by this margin means the guest is stuck.
    spec.idle_timeout = Duration::from_millis(longest_case) + Duration::from_secs(30);
    spec.total_timeout = Duration::from_millis(all_cases) + BOOT_BUDGET;

    let id = image.id.as_str();
    let _permit = gate.acquire();
    if let Some(signal) = crate::interrupt::requested() {
        anyhow::bail!("interrupted by {signal} before booting");
    }
    let first_attempt = *attempts_before;
    let mut current: Option<String> = None;
    let mut done = false;
    let mut fatal: Option<String> = None;
    let mut agent_panic: Option<String> = None;
    let mut fresh = None;
    let cold_spec = spec.clone();
    let mut restoring = if restore {
        super::restore::into_restore(&mut spec, id, &plan, opts, scratch, &module_files, progress)
    } else {
        None
    };
    let outcome = loop {
        let how = if restoring.is_some() {
            ", restored"
        } else {
            ""
        };
        let mut hello = false;
        let mut wire = crate::wire::Decoder::default();
        let outcome = qemu::boot(&spec, &mut |event| match event {
            BootEvent::BootStart { attempt, accel } => {
                // Each attempt is a new guest, with a new compressed stream.
                wire = crate::wire::Decoder::default();
                progress(Progress::Booting {
                    kernel: id.into(),
                    attempt: first_attempt + attempt,
                    accel: format!("{}{how}", accel.name()),
                })
            }
            BootEvent::Retry { reason, .. } => progress(Progress::Retrying {
                kernel: id.into(),
                reason,
            }),
            BootEvent::Problem(p) => progress(Progress::ConsoleProblem {
                kernel: id.into(),
                line: p.line,
            }),
            BootEvent::ResultLine(received) => match wire.lines(&received) {
                Err(why) => {
                    fatal.get_or_insert(why);
                }
                Ok(lines) => {
                    for line in lines {
                        match AgentEvent::from_line(&line) {
                            Some(AgentEvent::Hello {
                                release,
                                uname_version: version,
                                fresh: seen,
                                ..
                            }) => {
                                hello = true;
                                fresh = seen;
                                progress(Progress::AgentUp {
                                    kernel: id.into(),
                                    release: release.clone(),
                                });
                                result.release = Some(release);
                                *uname_version = Some(version);
                            }
                            Some(AgentEvent::CaseStart { id: case }) => current = Some(case),
                            Some(AgentEvent::CaseEnd { run }) => {
                                current = None;
                                progress(Progress::CaseDone {
                                    kernel: id.into(),
                                    case: run.id.clone(),
                                });
                                runs.insert(run.id.clone(), run);
                            }
                            Some(AgentEvent::Fatal { message }) => fatal = Some(message),
                            Some(AgentEvent::AgentPanic { message }) => agent_panic = Some(message),
                            Some(AgentEvent::Done) => done = true,
                            // Stray bytes on the port (a kernel message routed there) are ignored.
                            None => {}
                        }
                    }
                }
            },
            BootEvent::Ready { .. } | BootEvent::Exit(_) => {}
        })?;
        match restoring.take() {
            Some(key) if !hello || fatal.is_some() => {
                super::restore::forget(&key);
                // QEMU's own words first ("Machine type received is 'microvm'..."): the
                // monitor's error is only that QEMU went away.
                let why = match &outcome.exit {
                    GuestExit::QemuFailed { stderr_tail, .. } if !stderr_tail.is_empty() => {
                        outcome.exit.to_string()
                    }
                    _ => outcome
                        .state_error
                        .clone()
                        .or(fatal.take())
                        .unwrap_or_else(|| outcome.exit.to_string()),
                };
                progress(Progress::Retrying {
                    kernel: id.into(),
                    reason: format!(
                        "the restored guest failed ({why}); snapshot dropped, booting cold"
                    ),
                });
                spec = cold_spec.clone();
            }
            _ if may_fall_back && !hello && microvm_could_not_boot(&outcome.exit) => {
                // Old kernels predate microvm's boot path: the same guest on a PC.
                may_fall_back = false;
                let what = match &outcome.exit {
                    GuestExit::Panicked { line } => format!("a panic ({line})"),
                    _ => "no sign of life".to_string(),
                };
                progress(Progress::Retrying {
                    kernel: id.into(),
                    reason: format!("{what} under -M microvm; trying -M pc"),
                });
                spec = cold_spec.clone();
                spec.machine = crate::qemu::Machine::Pc;
                spec.retries = 0;
            }
            _ => break outcome,
        }
    };
    *attempts_before += outcome.attempts;
    let mut facts = boot_facts(&outcome, *attempts_before, &console_log.kept);
    facts.fresh = fresh;
    result.boot = Some(facts);
    for (case, excerpts) in splats_by_case(&outcome.problems) {
        let log = console_log.kept.display();
        splats
            .entry(case)
            .or_default()
            .extend(excerpts.into_iter().map(|e| format!("in {log}:\n{e}")));
    }
    if let Some(message) = agent_panic {
        anyhow::bail!("{}", agent_panic_message(&message));
    }
    if let Some(message) = fatal {
        anyhow::bail!("the agent could not start: {message}");
    }
    if done && outcome.exit == GuestExit::PoweredOff {
        return Ok(None);
    }
    let tail = outcome.console_tail.join("\n");
    let how = match &outcome.exit {
        GuestExit::PoweredOff if done => return Ok(None),
        GuestExit::PoweredOff => "the guest powered off early".to_string(),
        GuestExit::Panicked { line } => format!("the kernel panicked: {line}"),
        GuestExit::ReadyTimeout => format!(
            "the guest never reached the agent ({} attempts)",
            outcome.attempts
        ),
        GuestExit::IdleTimeout => "the guest stopped reporting (idle timeout)".to_string(),
        GuestExit::TotalTimeout => "the whole boot overran its budget".to_string(),
        GuestExit::QemuFailed { .. } => outcome.exit.to_string(),
        GuestExit::Interrupted => {
            let signal = crate::interrupt::requested().map(|s| s.to_string());
            anyhow::bail!("interrupted by {}", signal.as_deref().unwrap_or("a signal"))
        }
    };
    let while_running = current
        .as_ref()
        .map(|c| format!(" while running {c}"))
        .unwrap_or_default();
    let why = format!(
        "{how}{while_running}\n--- console tail ({}):\n{tail}",
        console_log.kept.display()
    );
    Ok(Some(Death {
        why,
        during: current,
    }))
}

/// Whether a guest that never reached its agent under `-M microvm` gets a second try
/// under `-M pc`: it gave no sign of life, or its kernel panicked (an old kernel may
/// trip over microvm's firmware tables rather than hang). Any other end is the
/// kernel's answer, not the machine's.
fn microvm_could_not_boot(exit: &GuestExit) -> bool {
    matches!(exit, GuestExit::ReadyTimeout | GuestExit::Panicked { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::console::ConsoleScanner;

    #[test]
    fn a_silent_or_panicking_microvm_guest_is_tried_on_pc() {
        assert!(microvm_could_not_boot(&GuestExit::ReadyTimeout));
        assert!(microvm_could_not_boot(&GuestExit::Panicked {
            line: "Kernel panic - not syncing: IO-APIC + timer doesn't work!".into()
        }));
        for kernel_answered in [
            GuestExit::PoweredOff,
            GuestExit::IdleTimeout,
            GuestExit::TotalTimeout,
            GuestExit::Interrupted,
        ] {
            assert!(
                !microvm_could_not_boot(&kernel_answered),
                "{kernel_answered:?}"
            );
        }
    }

    /// A result keeps the QEMU command line its guest ran with, as `run -v` prints it.
    #[test]
    fn a_result_carries_the_qemu_command_line() {
        let outcome = qemu::BootOutcome {
            exit: GuestExit::PoweredOff,
            attempts: 1,
            hung_attempts: Vec::new(),
            problems: Vec::new(),
            console_tail: Vec::new(),
            boot_to_ready: None,
            total: Duration::from_secs(1),
            command: "qemu-system-x86_64 -accel tcg -append 'console=ttyS0'".into(),
            accel: crate::qemu::accel::AutoVerdict {
                accel: crate::qemu::args::ResolvedAccel::Tcg,
                reason: "--accel tcg".into(),
            },
            state_error: None,
        };
        let facts = boot_facts(&outcome, 1, Path::new("console.log"));
        let json = serde_json::to_value(&facts).unwrap();
        assert_eq!(
            json["qemu_command"],
            "qemu-system-x86_64 -accel tcg -append 'console=ttyS0'"
        );
        // Results written before the command was kept still read.
        let mut old = json;
        old.as_object_mut().unwrap().remove("qemu_command");
        let old: BootFacts = serde_json::from_value(old).unwrap();
        assert_eq!(old.qemu_command, None);
    }

    /// A WARNING printed between a case's start and end markers makes that case,
    /// and only that one, an error carrying the splat.
    #[test]
    fn a_splat_is_blamed_on_the_case_that_ran() {
        let log = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/console/warning_during_case.log"
        ))
        .unwrap();
        let mut scanner = ConsoleScanner::default();
        // In uneven pieces, as QEMU appends to the file.
        for chunk in log.chunks(97) {
            scanner.feed(chunk);
        }
        scanner.finish();
        let blamed = splats_by_case(scanner.problems());
        assert_eq!(blamed.keys().collect::<Vec<_>>(), ["reuseport/hit"]);
        let excerpt = &blamed["reuseport/hit"][0];
        assert!(
            excerpt.starts_with("[  143.683784] WARNING: CPU: 1 PID: 350 at mm/memory.c:2904"),
            "{excerpt}"
        );
        assert!(excerpt.contains("Call trace:"), "{excerpt}");
        assert!(
            excerpt.ends_with("---[ end trace 0000000000000000 ]---"),
            "{excerpt}"
        );
        assert!(!excerpt.contains("sockmatrix: case"), "{excerpt}");
        let message = splat_message(&blamed["reuseport/hit"]);
        assert!(
            message.contains("1 problem(s) while this case ran"),
            "{message}"
        );
    }
}
