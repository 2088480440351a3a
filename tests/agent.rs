//! The guest agent binary itself, run as an ordinary process (not PID 1): what it
//! writes on its results port.

use std::process::Command;

use sockmatrix::observe::AgentEvent;

/// A panic of the agent is reported on the results port as the agent's own
/// (AgentPanic), so the host never takes a sockmatrix bug for a kernel crash.
#[test]
fn an_agent_panic_is_reported_on_the_results_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = dir.path().join("ttyS1");
    std::fs::write(&port, b"").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sockmatrix-agent"))
        .arg(format!("results={}", port.display()))
        .arg(format!("plan={}", dir.path().join("plan.json").display()))
        .arg("selftest-panic")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(101), "{out:?}");
    let text = std::fs::read_to_string(&port).unwrap();
    // Events come compressed (sockmatrix::wire); the panic report comes plain.
    let mut wire = sockmatrix::wire::Decoder::default();
    let events: Vec<AgentEvent> = text
        .lines()
        .flat_map(|line| wire.lines(line).unwrap())
        .filter_map(|line| AgentEvent::from_line(&line))
        .collect();
    assert!(
        matches!(events.first(), Some(AgentEvent::Hello { .. })),
        "{text}"
    );
    match events.last() {
        Some(AgentEvent::AgentPanic { message }) => {
            assert!(message.contains("selftest-panic"), "{message}");
            assert!(
                message.contains("src/agent.rs"),
                "where it panicked: {message}"
            );
        }
        other => panic!("no AgentPanic on the port, last event {other:?}: {text}"),
    }
}
