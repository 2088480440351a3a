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
    Timeout {
        after_ms: u64,
        /// The line of the step that was running when the budget ran out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        line: Option<usize>,
    },
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
        /// What the guest's clock and RNG gave once the plan was in (after the
        /// reseed of a restored guest): proof that each run has its own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fresh: Option<crate::resume::Freshness>,
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
    /// The agent itself panicked (a sockmatrix bug, not the kernel's): sent by its
    /// panic hook before it powers the guest off.
    AgentPanic {
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

/// What the agent prints on the kernel console (through /dev/kmsg) around each
/// case, so the host can tell which case a kernel splat belongs to.
const MARKER: &str = "sockmatrix: case ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseEdge {
    Start,
    End,
}

impl CaseEdge {
    fn word(self) -> &'static str {
        match self {
            CaseEdge::Start => "start",
            CaseEdge::End => "end",
        }
    }
}

/// The console line marking a case's start or end: `sockmatrix: case <id> start`.
pub fn case_marker(id: &str, edge: CaseEdge) -> String {
    format!("{MARKER}{id} {}", edge.word())
}

/// Reads a marker back from a console line (`[    7.25] sockmatrix: case x start`).
pub fn parse_case_marker(line: &str) -> Option<(&str, CaseEdge)> {
    let rest = &line[line.find(MARKER)? + MARKER.len()..];
    let (id, word) = rest.trim_end().rsplit_once(' ')?;
    let edge = [CaseEdge::Start, CaseEdge::End]
        .into_iter()
        .find(|e| e.word() == word)?;
    (!id.is_empty()).then_some((id, edge))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_markers_round_trip_through_a_console_line() {
        let line = format!(
            "[    7.252281] {}",
            case_marker("reuseport/close_listener_resets_queue", CaseEdge::Start)
        );
        assert_eq!(
            parse_case_marker(&line),
            Some(("reuseport/close_listener_resets_queue", CaseEdge::Start))
        );
        assert_eq!(
            parse_case_marker("[ 8.1] sockmatrix: case a/b end\r"),
            Some(("a/b", CaseEdge::End))
        );
        assert_eq!(parse_case_marker("[ 8.1] sockmatrix: case  end"), None);
        assert_eq!(parse_case_marker("[ 8.1] reboot: Power down"), None);
    }
}
