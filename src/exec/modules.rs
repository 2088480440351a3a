//! Loading the kernel modules a case requires, from the initramfs, before it runs.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;

use crate::agent::ModulePlan;
use crate::case::{Plan, Requirement};
use crate::observe::{CaseRun, Outcome};

/// Modules the agent loaded (or found built in) for the guest's plan. A run on the
/// host (`--host`) has none: there a module must already be loaded (`present`).
static PREPARED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Whether module `name` is usable: prepared by the agent, loaded (`/sys/module`),
/// or listed as built in for the running kernel.
pub fn present(name: &str, release: &str) -> bool {
    if PREPARED.lock().is_ok_and(|p| p.iter().any(|m| m == name)) {
        return true;
    }
    if std::path::Path::new("/sys/module").join(name).exists() {
        return true;
    }
    std::fs::read_to_string(format!("/lib/modules/{release}/modules.builtin")).is_ok_and(|t| {
        t.lines().any(|l| {
            let file = l.rsplit('/').next().unwrap_or(l);
            file.strip_suffix(".ko")
                .map(|s| s.replace('-', "_"))
                .as_deref()
                == Some(name)
        })
    })
}

/// None when every module the case requires is loaded (or built in), else the
/// case's run: skipped when a module is missing, an error when one fails to load.
pub fn prepare(case: &Plan, modules: &BTreeMap<String, ModulePlan>) -> Option<CaseRun> {
    let outcome = case.requires.iter().find_map(|req| match req {
        Requirement::Module(name) => match check(name, modules.get(name)) {
            Ok(()) => {
                if let Ok(mut p) = PREPARED.lock() {
                    p.push(name.clone());
                }
                None
            }
            Err(outcome) => Some(outcome),
        },
        _ => None,
    })?;
    Some(CaseRun {
        id: case.id.clone(),
        outcome,
        observations: Default::default(),
        elapsed_ms: 0,
    })
}

fn check(name: &str, plan: Option<&ModulePlan>) -> Result<(), Outcome> {
    let error = |message: String| Outcome::Error {
        message,
        line: None,
    };
    match plan {
        None => Err(error(format!("the host sent no plan for module {name}"))),
        Some(ModulePlan::Builtin) => Ok(()),
        Some(ModulePlan::Missing { reason }) => Err(Outcome::Skipped {
            reason: reason.clone(),
        }),
        Some(ModulePlan::Error { message }) => Err(error(format!("module {name}: {message}"))),
        Some(ModulePlan::Load { files }) => files
            .iter()
            .try_for_each(|file| load(file))
            .map_err(|why| error(format!("loading module {name}: {why}"))),
    }
}

/// finit_module(2) on one `.ko`; a module already loaded (EEXIST) is fine.
fn load(file: &str) -> Result<(), String> {
    let ko = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
    let params = c"";
    // SAFETY: a valid fd and a NUL-terminated empty parameter string, flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            ko.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) => Ok(()),
        _ => Err(format!("{file}: {}", crate::errno::of_io(&err))),
    }
}
