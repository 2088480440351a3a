//! Pinning the calling thread to one CPU for a while (SO_INCOMING_CPU and CPU-steering
//! cases need traffic sent from a known CPU).

use std::io;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Runs `f` with the calling thread pinned to `cpu`, then restores its affinity.
pub fn on_cpu<T>(cpu: Option<u32>, f: impl FnOnce() -> T) -> io::Result<T> {
    let Some(cpu) = cpu else { return Ok(f()) };
    let me = Pid::from_raw(0);
    let before = sched_getaffinity(me).map_err(io::Error::from)?;
    let mut only = CpuSet::new();
    only.set(cpu as usize).map_err(io::Error::from)?;
    sched_setaffinity(me, &only).map_err(io::Error::from)?;
    let result = f();
    sched_setaffinity(me, &before).map_err(io::Error::from)?;
    Ok(result)
}
