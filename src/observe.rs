//! What running a case yields, and the JSON-lines protocol the agent streams it in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Named observations of one case run, e.g. `bind.b = "EADDRINUSE"`, `account.c.reset = 3`.
pub type Observations = BTreeMap<String, serde_json::Value>;

/// How far a case got; "could not run" is never confused with a behaviour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// Every step ran; the observations are complete.
    Ran,
    /// A requirement is not met on this kernel; the reason is recorded.
    Skipped { reason: String },
    /// The executor could not carry on (not a kernel behaviour).
    Error {
        message: String,
        line: Option<usize>,
    },
    /// The case overran its time budget; observations hold what was seen so far.
    Timeout { after_ms: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaseRun {
    pub id: String,
    pub outcome: Outcome,
    pub observations: Observations,
    pub elapsed_ms: u64,
}

/// One line on the results channel, guest to host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum AgentEvent {
    /// First line: the agent is up. Also the host's boot watchdog signal.
    Hello {
        release: String,
        /// `uname -v`: distribution kernels put the upstream version here
        /// ("... Debian 6.1.192-2 ..."), where the release only says 6.1.0.
        #[serde(default)]
        uname_version: String,
        cpus: u32,
        agent_version: String,
    },
    CaseStart {
        id: String,
    },
    CaseEnd {
        run: CaseRun,
    },
    /// The agent could not start (bad plan, missing mount...).
    Fatal {
        message: String,
    },
    Done,
}

impl AgentEvent {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("events always serialize")
    }

    pub fn from_line(line: &str) -> Option<AgentEvent> {
        serde_json::from_str(line.trim()).ok()
    }
}
