//! The typed form of a case file. The executable part (`Plan`) is what the host hands
//! to the guest agent as JSON; expectations and references stay on the host.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::version::VersionReq;

/// A validated case, as read from `cases/<id>.yaml`.
#[derive(Debug, Clone)]
pub struct Case {
    /// Path below the cases folder without `.yaml`, e.g. `reuseport/close_resets_queue`.
    pub id: String,
    pub file: std::path::PathBuf,
    pub summary: String,
    pub tags: Vec<String>,
    pub references: Vec<Reference>,
    /// The kernel fix this case detects, and the observation that shows it.
    pub detects: Option<Fix>,
    /// Observation key prefixes whose values vary from run to run (hash placement,
    /// ephemeral ports): diffs show them only on request, never as a regression.
    pub volatile: Vec<String>,
    pub expect: Vec<Expectation>,
    pub plan: Plan,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fix {
    pub commit: String,
    pub version: String,
    /// The observation that shows the fix: present where it holds, absent where it
    /// does not, whatever the kernel version (unlike version-bound expectations).
    pub check: Expectation,
}

/// What the agent needs to run one case; no expectations, the guest only observes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub id: String,
    pub requires: Vec<Requirement>,
    pub sysctls: Vec<Sysctl>,
    pub steps: Vec<Step>,
    /// Wall-clock budget for the whole case inside the guest.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sysctl {
    /// Dotted name, e.g. `net.ipv4.tcp_migrate_req`.
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    Commit { title: String, version: String },
    Selftest { path: String },
    Article { url: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// The agent runs as uid 0 (namespaces, other uids, sysctls).
    Root,
    Ipv6,
    Bpf,
    /// `/proc/sys/<name with dots as slashes>` exists in the case's namespace.
    Sysctl(String),
    Kernel(VersionReq),
    Cpus(u32),
    /// A kernel module (plain name, `-` read as `_`), loaded by the agent before the
    /// case runs; the host puts it and its dependencies in the initramfs.
    Module(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// Line of the step in the case file, for messages.
    pub line: usize,
    /// Prefix of the observations this step produces (`bind.b`, or the step's `id`).
    pub key: String,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Tcp,
    Udp,
    /// One-to-many SCTP (SOCK_SEQPACKET, IPPROTO_SCTP); needs the sctp module.
    Sctp,
    /// Multipath TCP (SOCK_STREAM, IPPROTO_MPTCP = 262; built into Debian's kernels
    /// from 6.1, not into the 5.10 cloud kernel).
    Mptcp,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Ipv4,
    Ipv6,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
}

/// Socket options set right after creation, in this order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SockOptions {
    pub reuseaddr: Option<bool>,
    pub reuseport: Option<bool>,
    pub v6only: Option<bool>,
    pub incoming_cpu: Option<u32>,
    pub bindtodevice: Option<String>,
    /// IP_LOCAL_PORT_RANGE (6.3, 6.1.32): (low, high), 0 meaning unbounded.
    pub local_port_range: Option<(u16, u16)>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AcceptMode {
    /// poll() for up to `wait`, then accept until EAGAIN.
    Nonblocking,
    /// Blocking accept() with SO_RCVTIMEO = `wait` for each call.
    Blocking,
    /// epoll_wait() for up to `wait`, then accept until EAGAIN.
    Epoll,
}

/// Classic BPF programs for SO_ATTACH_REUSEPORT_CBPF; each returns a socket index.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CbpfProgram {
    /// The CPU the packet is processed on (reuseport_bpf_cpu.c).
    Cpu,
    /// The first 32-bit word of the payload modulo N (reuseport_bpf.c).
    Modulo(u32),
    /// Always N: an index beyond the group falls back to hashing.
    Constant(u32),
}

/// One address of a `bind_pairs` matrix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PairAddr {
    pub label: String,
    pub addr: IpAddr,
    pub v6only: Option<bool>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PairOption {
    None,
    Reuseaddr,
    Reuseport,
}

impl PairOption {
    pub fn label(self) -> &'static str {
        match self {
            PairOption::None => "plain",
            PairOption::Reuseaddr => "reuseaddr",
            PairOption::Reuseport => "reuseport",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum PortSpec {
    /// A fixed number; 0 asks the kernel for an ephemeral port.
    Number(u16),
    /// The port socket `name` is bound to.
    Of(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Where socket `name` is bound; a wildcard address becomes that family's loopback.
    Sock(String),
    Addr {
        addr: IpAddr,
        port: PortSpec,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Shutdown {
    Read,
    Write,
    Both,
}

/// Which TCP segments a packet filter matches, by their flags.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TcpFlags {
    Any,
    /// A pure ACK: ACK without SYN, FIN or RST, and no payload (a handshake's last).
    Ack,
    /// SYN without ACK.
    Syn,
    SynAck,
    Rst,
    Fin,
}

/// Which port of a packet a filter's `port` is compared with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PortSide {
    /// Packets sent to the port (`direction: to`).
    Destination,
    /// Packets sent from the port (`direction: from`).
    Source,
}

/// What a `drop` step drops on `lo`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PacketFilter {
    pub proto: Proto,
    pub tcp_flags: TcpFlags,
    pub port: Option<PortSpec>,
    pub side: PortSide,
    /// Only this family's packets (both when None).
    pub family: Option<Family>,
    /// Stop dropping after this many packets (never when None).
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// A step of `crate::steps` (being moved there one by one).
    Registered(crate::steps::Registered),
    Connect {
        sock: String,
        to: Target,
        timeout_ms: u64,
    },
    /// Accepts up to `max` (all that are queued when None), waiting `wait_ms` for the first.
    Accept {
        sock: String,
        max: Option<u32>,
        wait_ms: u64,
        mode: AcceptMode,
        /// Keep the (single) accepted connection as a socket of this name.
        name: Option<String>,
    },
    Close {
        sock: String,
    },
    Shutdown {
        sock: String,
        how: Shutdown,
    },
    /// A background thread accepts everything on `sock` until it is closed.
    Serve {
        sock: String,
        /// Sleep in epoll_wait() (up to `wait_ms` at a time) instead of short polls,
        /// so a wake-up the kernel forgets shows as a delay.
        epoll_wait_ms: Option<u64>,
    },
    /// `count` TCP clients connect to `to`, one every `interval_us`.
    Clients {
        group: String,
        count: u32,
        to: Target,
        family: Option<Family>,
        interval_us: u64,
        timeout_ms: u64,
        background: bool,
        /// Connect from this CPU (the connecting thread is pinned to it).
        cpu: Option<u32>,
    },
    /// Waits for a background client group to finish connecting.
    Wait {
        group: String,
    },
    /// Classifies every client of a group: accepted by which listener, reset, refused...
    Account {
        group: String,
    },
    /// Records the accept queue length of a listener.
    Queue {
        sock: String,
    },
    WaitQueued {
        sock: String,
        count: u32,
        timeout_ms: u64,
    },
    /// Waits until `accept`/`serve` on a listener has taken `count` connections.
    WaitAccepted {
        sock: String,
        count: u32,
        timeout_ms: u64,
    },
    /// `count` UDP datagrams to `to`, each from a fresh socket unless `from` names one.
    Datagrams {
        group: String,
        count: u32,
        to: Target,
        from: Option<String>,
        family: Option<Family>,
        /// Send from this CPU (the sending thread is pinned to it).
        cpu: Option<u32>,
    },
    /// Drains the named UDP sockets and counts the group's datagrams each received.
    Tally {
        group: String,
        among: Vec<String>,
        wait_ms: u64,
    },
    Sleep {
        ms: u64,
    },
    AttachBpf {
        sock: String,
        program: CbpfProgram,
    },
    DetachBpf {
        sock: String,
    },
    /// Loads an SK_REUSEPORT eBPF program selecting slot `select` of a sockarray
    /// filled with `sockarray` (in order), and attaches it to `sock`.
    AttachEbpf {
        sock: String,
        sockarray: Vec<String>,
        select: u32,
        /// Return SK_DROP (not SK_PASS, i.e. hash) when the selection fails.
        drop_on_miss: bool,
    },
    /// Records the port a socket is bound to (deterministic only when it is).
    LocalPort {
        sock: String,
    },
    /// Drops packets matching `filter` on `lo` (XDP) until `release`.
    Drop {
        name: String,
        filter: PacketFilter,
    },
    /// Lets the packets of a `drop` through again; observes how many were dropped.
    Release {
        name: String,
    },
    /// Counts the connection requests (SYN_RECV) for a listener's port.
    Requests {
        sock: String,
    },
    /// Every connected client of a group writes one byte, as a client would first.
    Send {
        group: String,
    },
    /// For every ordered pair of addresses and every option: bind the first (and
    /// listen), then bind the second to the same port; observe the second bind.
    BindPairs {
        proto: Proto,
        addrs: Vec<PairAddr>,
        options: Vec<PairOption>,
        listen: bool,
    },
}

impl Action {
    /// The verb as written in YAML, used for default observation keys.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Registered(step) => step.verb(),
            Action::Connect { .. } => "connect",
            Action::Accept { .. } => "accept",
            Action::Close { .. } => "close",
            Action::Shutdown { .. } => "shutdown",
            Action::Serve { .. } => "serve",
            Action::Clients { .. } => "clients",
            Action::Wait { .. } => "wait",
            Action::Account { .. } => "account",
            Action::Queue { .. } => "queue",
            Action::WaitQueued { .. } => "wait_queued",
            Action::WaitAccepted { .. } => "wait_accepted",
            Action::Datagrams { .. } => "datagrams",
            Action::Tally { .. } => "tally",
            Action::Sleep { .. } => "sleep",
            Action::AttachBpf { .. } => "attach_bpf",
            Action::DetachBpf { .. } => "detach_bpf",
            Action::AttachEbpf { .. } => "attach_ebpf",
            Action::LocalPort { .. } => "local_port",
            Action::BindPairs { .. } => "bind_pairs",
            Action::Drop { .. } => "drop",
            Action::Release { .. } => "release",
            Action::Requests { .. } => "requests",
            Action::Send { .. } => "send",
        }
    }
}

/// One expectation: an observation, an optional kernel condition, one matcher.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub line: usize,
    pub obs: String,
    pub kernel: Option<VersionReq>,
    pub matcher: Matcher,
    /// Why the kernel behaves so (free text shown in failures).
    pub why: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    Eq(serde_json::Value),
    OneOf(Vec<serde_json::Value>),
    Range { min: Option<f64>, max: Option<f64> },
    SameAs(String),
}
