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
    /// The kernel fix this case detects: its expectations describe the fixed
    /// behaviour, so a pass means "fix present" and a failure "fix absent".
    pub detects: Option<Fix>,
    pub expect: Vec<Expectation>,
    pub plan: Plan,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    pub commit: String,
    pub version: String,
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
    Addr { addr: IpAddr, port: PortSpec },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Shutdown {
    Read,
    Write,
    Both,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    Socket {
        name: String,
        proto: Proto,
        family: Family,
        options: SockOptions,
        creds: Option<Creds>,
    },
    Bind {
        sock: String,
        addr: IpAddr,
        port: PortSpec,
    },
    Listen {
        sock: String,
        backlog: i32,
    },
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
    /// `count` UDP datagrams to `to`, each from a fresh socket unless `from` names one.
    Datagrams {
        group: String,
        count: u32,
        to: Target,
        from: Option<String>,
        family: Option<Family>,
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
}

impl Action {
    /// The verb as written in YAML, used for default observation keys.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Socket { .. } => "socket",
            Action::Bind { .. } => "bind",
            Action::Listen { .. } => "listen",
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
            Action::Datagrams { .. } => "datagrams",
            Action::Tally { .. } => "tally",
            Action::Sleep { .. } => "sleep",
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
