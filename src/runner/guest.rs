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
use crate::results::{self, BootFacts, CaseResult, KernelResult};

/// What to boot: a kernel image and how to call it in results.
pub struct KernelImage {
    pub id: String,
    pub vmlinuz: PathBuf,
    pub package_version: Option<String>,
}

/// Time for the kernel to boot and the agent to start, on top of the cases' budgets.
const BOOT_BUDGET: Duration = Duration::from_secs(60);

/// Boots after a guest died mid-plan, each for the cases not reported yet. A case
/// that takes the guest down twice is given up; a one-off (a TCG glitch) is not
/// allowed to cost the other cases their results.
const MAX_RESUMES: usize = 2;

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
) -> KernelResult {
    let dir = results::kernel_dir(&opts.results_dir, &image.id);
    let console_log = dir.join("console.log");
    let mut result = KernelResult {
        kernel: image.id.clone(),
        release: None,
        uname_version: None,
        package_version: image.package_version.clone(),
        could_not_run: None,
        boot: None,
        cases: Vec::new(),
        finished_at: 0,
    };
    for n in 2..=MAX_RESUMES + 1 {
        // Logs of resumed boots from an earlier run would mislead.
        let _ = std::fs::remove_file(dir.join(format!("console.{n}.log")));
    }
    let mut runs: BTreeMap<String, CaseRun> = BTreeMap::new();
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
        let log = if boot == 0 {
            console_log.clone()
        } else {
            dir.join(format!("console.{}.log", boot + 1))
        };
        match boot_and_collect(
            image,
            &pending,
            opts,
            gate,
            progress,
            &log,
            &mut runs,
            &mut result,
            &mut uname_version,
        ) {
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
                let verdict = judge(case, &run, version);
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
    result
}

/// The initramfs: the agent as /init, the plan (if any), and the results port node.
pub fn write_guest_image(path: &Path, agent: &Path, plan: Option<&GuestPlan>) -> Result<()> {
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
    console_log: &Path,
    runs: &mut BTreeMap<String, CaseRun>,
    result: &mut KernelResult,
    uname_version: &mut Option<String>,
) -> Result<Option<Death>> {
    let agent = super::agent_binary::agent_binary()?;
    let scratch = tempfile::tempdir().context("creating a scratch folder for the initramfs")?;
    let initramfs = scratch.path().join("initramfs.cpio");
    let plan = GuestPlan {
        cases: cases.iter().map(|c| c.plan.clone()).collect(),
    };
    write_guest_image(&initramfs, &agent, Some(&plan))?;
    if let Some(dir) = console_log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(console_log);

    let longest_case = cases.iter().map(|c| c.plan.timeout_ms).max().unwrap_or(0);
    let all_cases: u64 = cases.iter().map(|c| c.plan.timeout_ms).sum();
    let mut spec = BootSpec::new(&image.vmlinuz, &initramfs, console_log);
    spec.accel = opts.accel;
    spec.memory_mb = opts.memory_mb;
    spec.cpus = opts.cpus;
    spec.retries = opts.retries;
    spec.ready_timeout = opts.ready_timeout;
    // The agent reports at least once per case: a case that outlives its own budget
    // by this margin means the guest is stuck.
    spec.idle_timeout = Duration::from_millis(longest_case) + Duration::from_secs(30);
    spec.total_timeout = Duration::from_millis(all_cases) + BOOT_BUDGET;

    let id = image.id.as_str();
    let _permit = gate.acquire();
    let mut current: Option<String> = None;
    let mut done = false;
    let mut fatal: Option<String> = None;
    let outcome = qemu::boot(&spec, &mut |event| match event {
        BootEvent::BootStart { attempt, accel } => progress(Progress::Booting {
            kernel: id.into(),
            attempt,
            accel: accel.name().to_string(),
        }),
        BootEvent::Retry { reason, .. } => progress(Progress::Retrying {
            kernel: id.into(),
            reason,
        }),
        BootEvent::Problem(p) => progress(Progress::ConsoleProblem {
            kernel: id.into(),
            line: p.line,
        }),
        BootEvent::ResultLine(line) => match AgentEvent::from_line(&line) {
            Some(AgentEvent::Hello {
                release,
                uname_version: version,
                ..
            }) => {
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
            Some(AgentEvent::Done) => done = true,
            // Stray bytes on the port (a kernel message routed there) are ignored.
            None => {}
        },
        BootEvent::Ready { .. } | BootEvent::Exit(_) => {}
    })?;
    result.boot = Some(BootFacts {
        accel: outcome.accel.accel.name().to_string(),
        accel_reason: Some(outcome.accel.reason.clone()),
        attempts: outcome.attempts,
        hung_attempts: outcome.hung_attempts.clone(),
        boot_to_ready_ms: outcome.boot_to_ready.map(|d| d.as_millis() as u64),
        total_ms: outcome.total.as_millis() as u64,
        exit: format!("{:?}", outcome.exit),
        console_problems: outcome.problems.iter().map(|p| p.line.clone()).collect(),
        console_log: console_log.to_path_buf(),
        resumes: Vec::new(),
    });
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
        GuestExit::QemuFailed {
            status,
            stderr_tail,
        } => format!("QEMU failed (status {status:?}): {stderr_tail}"),
    };
    let while_running = current
        .as_ref()
        .map(|c| format!(" while running {c}"))
        .unwrap_or_default();
    let why = format!(
        "{how}{while_running}\n--- console tail ({}):\n{tail}",
        console_log.display()
    );
    Ok(Some(Death {
        why,
        during: current,
    }))
}
