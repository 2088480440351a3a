//! What a snapshot-restored guest does before its first case: the plan arrives on
//! the results port (not in the initramfs), with the host's clock and fresh host
//! entropy. The agent sets the clock and reseeds the kernel RNG before any socket
//! exists, so every restored run draws its own secrets (ehash, reuseport, ISN,
//! per-netns hash mix) as a cold boot would.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::agent::GuestPlan;

/// The line the agent writes when it is ready and waiting for a plan: the host
/// saves the VM state when it sees it.
pub const WAITING_LINE: &str = "sockmatrix-agent: waiting for the plan";
/// The init argument that makes the agent wait for its plan on the port.
pub const SERIAL_PLAN_ARG: &str = "serial-plan";
/// First word of the header line before a deflated plan.
const WIRE_HEADER: &str = "plan-deflate";
/// Bytes of host entropy sent with each plan.
pub const ENTROPY_BYTES: usize = 32;

/// What the agent sees right after its plan is in (a restored guest: after the
/// clock was set and the RNG reseeded). Two restores of one snapshot must differ in
/// `boot_id` and `random`, and `realtime_ms` must be the host's time, not the
/// saved guest's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Freshness {
    /// /proc/sys/kernel/random/boot_id: drawn from the kernel RNG on first read,
    /// which is never before the snapshot.
    pub boot_id: String,
    /// 16 bytes of getrandom(), hex.
    pub random: String,
    /// CLOCK_REALTIME, ms since the epoch.
    pub realtime_ms: u64,
}

impl Freshness {
    /// Observed on CPU 0: the kernel keeps a CRNG state per CPU, and a restore
    /// without the reseed must draw from the same one every time for the test to
    /// tell (it then repeats the saved guest's next bytes).
    pub fn observe() -> Freshness {
        crate::exec::cpu::on_cpu(Some(0), Self::observe_here)
            .unwrap_or_else(|_| Self::observe_here())
    }

    fn observe_here() -> Freshness {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let mut bytes = [0u8; 16];
        // SAFETY: writes at most 16 bytes into our buffer.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        let random = if n == bytes.len() as isize {
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        } else {
            String::new()
        };
        let realtime_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Freshness {
            boot_id,
            random,
            realtime_ms,
        }
    }
}

/// One line from the host to a waiting agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanDelivery {
    /// Host CLOCK_REALTIME: seconds and nanoseconds since the epoch.
    pub realtime: (i64, u32),
    pub entropy: Vec<u8>,
    pub plan: GuestPlan,
}

impl PlanDelivery {
    /// The host's side: its clock now and fresh entropy from getrandom().
    pub fn new(plan: GuestPlan) -> std::io::Result<PlanDelivery> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut entropy = vec![0u8; ENTROPY_BYTES];
        let mut filled = 0;
        while filled < entropy.len() {
            // SAFETY: writes at most the remaining length into our buffer.
            let n = unsafe {
                libc::getrandom(
                    entropy[filled..].as_mut_ptr().cast(),
                    entropy.len() - filled,
                    0,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            filled += n as usize;
        }
        Ok(PlanDelivery {
            realtime: (now.as_secs() as i64, now.subsec_nanos()),
            entropy,
            plan,
        })
    }

    /// The bytes written to the port: a header line `plan-deflate <n>`, then n
    /// bytes of deflated JSON (the emulated UART moves ~40 KB/s; the library's plan
    /// is ~80 KB of JSON, ~10 KB deflated).
    pub fn to_wire(&self) -> Vec<u8> {
        use std::io::Write as _;
        let json = serde_json::to_vec(self).expect("a plan always serializes");
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&json).expect("writing to memory");
        let body = z.finish().expect("writing to memory");
        let mut v = format!("{WIRE_HEADER} {}\n", body.len()).into_bytes();
        v.extend(body);
        v
    }

    /// Reads what `to_wire` wrote.
    pub fn from_wire(input: &mut impl BufRead) -> Result<PlanDelivery, String> {
        use std::io::Read as _;
        let mut header = String::new();
        input
            .read_line(&mut header)
            .map_err(|e| format!("reading the plan header: {e}"))?;
        let len: usize = header
            .trim()
            .strip_prefix(WIRE_HEADER)
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("bad plan header {header:?}"))?;
        let mut body = vec![0u8; len];
        input
            .read_exact(&mut body)
            .map_err(|e| format!("reading the plan: {e}"))?;
        let mut json = Vec::new();
        flate2::read::DeflateDecoder::new(&body[..])
            .read_to_end(&mut json)
            .map_err(|e| format!("inflating the plan: {e}"))?;
        serde_json::from_slice(&json).map_err(|e| format!("bad plan: {e}"))
    }
}

/// The guest's side: says it waits, reads the plan line, sets the clock and
/// reseeds the RNG. Any failure is fatal: a run must never share its random state
/// with another restore of the same snapshot.
pub fn receive_plan(port: &mut std::fs::File) -> Result<GuestPlan, String> {
    // The kernel reseeds its CRNG on its own once the seed is older than an interval
    // (1 s and up early in boot); reseeding now, just before the snapshot, keeps a
    // restored guest from doing that before it reads its plan, so the reseed below
    // is what sets each restore apart (tests/snapshot.rs tells if it is missing).
    let _ = reseed_now();
    writeln!(port, "{WAITING_LINE}").map_err(|e| format!("writing to the port: {e}"))?;
    let _ = port.flush();
    let delivery = PlanDelivery::from_wire(&mut std::io::BufReader::new(&*port))?;
    set_clock(delivery.realtime)?;
    reseed(&delivery.entropy)?;
    Ok(delivery.plan)
}

fn set_clock((secs, nanos): (i64, u32)) -> Result<(), String> {
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    };
    // SAFETY: a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(format!(
            "clock_settime: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

const RNDRESEEDCRNG: libc::c_ulong = 0x5207; // _IO('R', 0x07)

/// RNDRESEEDCRNG alone: the CRNG takes a new seed from the input pool.
fn reseed_now() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| format!("open /dev/urandom: {e}"))?;
    // SAFETY: no argument.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG as _, 0) } != 0 {
        return Err(format!(
            "RNDRESEEDCRNG: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// RNDADDENTROPY (credited) then RNDRESEEDCRNG: the next random bytes the kernel
/// hands out derive from the host's fresh entropy.
fn reseed(entropy: &[u8]) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203; // _IOW('R', 0x03, int[2])
    if entropy.len() < ENTROPY_BYTES {
        return Err(format!("only {} bytes of entropy sent", entropy.len()));
    }
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| format!("open /dev/urandom: {e}"))?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info: Vec<u8> = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&((entropy.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(entropy.len() as i32).to_ne_bytes());
    info.extend_from_slice(entropy);
    // SAFETY: the buffer holds the header and buf_size bytes.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) } != 0 {
        return Err(format!(
            "RNDADDENTROPY: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: no argument.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG as _, 0) } != 0 {
        return Err(format!(
            "RNDRESEEDCRNG: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_delivery_has_its_own_entropy() {
        let plan = GuestPlan {
            cases: Vec::new(),
            modules: Default::default(),
        };
        let a = PlanDelivery::new(plan.clone()).unwrap();
        let b = PlanDelivery::new(plan).unwrap();
        assert_eq!(a.entropy.len(), ENTROPY_BYTES);
        assert_ne!(a.entropy, b.entropy);
        let wire = a.to_wire();
        let back = PlanDelivery::from_wire(&mut &wire[..]).unwrap();
        assert_eq!(back, a);
        assert!(PlanDelivery::from_wire(&mut &wire[..wire.len() - 1]).is_err());
    }
}
