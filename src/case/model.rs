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

/// Guest memory (MiB) that the kernels boot with and this host can give: `--memory`
/// and `requires: [{memory: SIZE}]`.
pub const GUEST_MEMORY_MB: std::ops::RangeInclusive<u32> = 128..=16384;

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
    /// The case's process may hold this many open files (RLIMIT_NOFILE after the
    /// executor raised it as far as it may: a container can cap the hard limit).
    Files(u64),
    /// The guest has this much memory (MiB). The runner boots each kernel's guest
    /// with the most any of its cases asks for (see `runner::guest_memory_mb`); the
    /// agent checks what the kernel got (`MemTotal`).
    Memory(u32),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// Line of the step in the case file, for messages.
    pub line: usize,
    /// Prefix of the observations this step produces (`bind.b`, or the step's `id`).
    pub key: String,
    /// Also record how long the step took, as `time.<key>` in microseconds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub time: bool,
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
    /// IP_BIND_ADDRESS_NO_PORT (4.2): bind() takes the address only, the port is
    /// chosen at connect() time knowing the remote.
    #[serde(default)]
    pub bind_address_no_port: Option<bool>,
    /// IP_FREEBIND: bind() may take an address no interface holds (yet).
    #[serde(default)]
    pub freebind: Option<bool>,
    /// TCP_FASTOPEN on a listener: the queue length of Fast Open requests.
    #[serde(default)]
    pub fastopen: Option<u32>,
    /// IP_MULTICAST_IF: the address of the interface multicast is sent from.
    #[serde(default)]
    pub multicast_if: Option<std::net::Ipv4Addr>,
    /// IP_MULTICAST_ALL (on by default): receive every group joined on the host,
    /// not only this socket's own.
    #[serde(default)]
    pub multicast_all: Option<bool>,
    /// IP_ADD_MEMBERSHIP of this group on `lo` (interface address 127.0.0.1).
    #[serde(default)]
    pub multicast_join: Option<std::net::Ipv4Addr>,
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

/// What the first socket of each `bind_pairs` pair is doing when the second binds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PairState {
    /// Bound, nothing more.
    Bound,
    Listening,
    /// Connected from its bound address to a listener elsewhere in the namespace.
    Connected,
    /// Connected, closed first (the active close), its TIME_WAIT socket holding the
    /// address when the second binds.
    TimeWait,
}

impl PairState {
    pub const ALL: [(&'static str, PairState); 4] = [
        ("bound", PairState::Bound),
        ("listening", PairState::Listening),
        ("connected", PairState::Connected),
        ("time_wait", PairState::TimeWait),
    ];
}

/// How a client of a `clients` group opens its connection with TCP Fast Open.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fastopen {
    /// sendto(MSG_FASTOPEN) of one byte: connect and the first data in one call.
    Sendto,
    /// TCP_FASTOPEN_CONNECT (4.11): connect() returns at once, the first write()
    /// (one byte) sends the SYN with the data.
    Connect,
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

/// What a step does, with its fields: one variant per module of `crate::steps`.
pub use crate::steps::Action;

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
