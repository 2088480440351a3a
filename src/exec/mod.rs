//! The executor: runs one case's plan in a fresh network namespace and records what
//! the kernel did. The same code serves `run --host` and the guest agent.

mod aggregate;
pub(crate) mod bpf;
pub(crate) mod clients;
mod clock;
pub mod cpu;
mod creds;
pub(crate) mod ebpf;
pub mod ebpf_migrate;
pub(crate) mod isolate;
pub mod link;
pub mod modules;
mod netns;
pub(crate) mod packet_drop;
pub(crate) mod pairs;
mod repeat;
pub(crate) mod requests;
mod requires;
pub(crate) mod rlimit;
pub(crate) mod serve;
pub(crate) mod sk_lookup;
pub(crate) mod sockets;
mod sockopt;
pub(crate) mod udp;

use std::collections::BTreeMap;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::case::{Family, Plan, Step};
use crate::observe::{CaseRun, Outcome};
use clients::Group;
use serve::Server;
use sockets::Table;

pub use clients::fairness;

/// Runs a case in a child process of its own and returns its observations. Never
/// panics; a case that overruns its budget is killed with all its threads and
/// reported as a timeout with what it observed until then.
pub fn run_case(plan: &Plan, release: &str) -> CaseRun {
    let started = Instant::now();
    let finished = isolate::run_isolated(
        &plan.id,
        Duration::from_millis(plan.timeout_ms),
        |recorder| run_in_fresh_namespace(plan, release, recorder),
    );
    CaseRun {
        id: plan.id.clone(),
        outcome: finished.outcome,
        observations: finished.observations,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

fn run_in_fresh_namespace(plan: &Plan, release: &str, recorder: &isolate::Recorder) -> Outcome {
    if let Err(e) = netns::enter_fresh() {
        let hint = if nix::unistd::geteuid().is_root() {
            ""
        } else {
            " (needs root: run as root, or use the VM runner)"
        };
        return Outcome::Error {
            message: format!("cannot create a network namespace: {e}{hint}"),
            line: None,
        };
    }
    // Thousands of sockets need thousands of descriptors (the selftest sets 24,100).
    if let Err(e) = rlimit::raise_nofile() {
        return Outcome::Error {
            message: format!("cannot raise RLIMIT_NOFILE: {e}"),
            line: None,
        };
    }
    let (_, uname_version) = crate::host::uname();
    if let Some(reason) = requires::unmet(&plan.requires, release, &uname_version) {
        return Outcome::Skipped { reason };
    }
    let record = |key: String, value: serde_json::Value| recorder.record(key, value);
    for sysctl in &plan.sysctls {
        record(
            format!("sysctl.{}", sysctl.name),
            json!(netns::write_sysctl(&sysctl.name, &sysctl.value)),
        );
    }
    let mut exec = Executor::default();
    for step in &plan.steps {
        recorder.step(step.line);
        match exec.run_step(step) {
            Ok(observations) => {
                for (key, value) in observations {
                    record(key, value);
                }
            }
            // Like packetdrill: a step that could not do what it says is blamed on
            // its own line, not folded into a later count.
            Err(failure) => {
                exec.finish();
                return Outcome::Error {
                    message: failure.message,
                    line: Some(failure.line.unwrap_or(step.line)),
                };
            }
        }
    }
    exec.finish();
    Outcome::Ran
}

/// Why a step could not do what it says (not a kernel behaviour to observe).
#[derive(Debug)]
pub struct StepFailure {
    /// The line to blame when it is not the failing step's own (a background
    /// `clients` step whose failure shows at its `wait`).
    pub line: Option<usize>,
    pub message: String,
}

impl StepFailure {
    pub fn new(step: &str, why: impl std::fmt::Display) -> StepFailure {
        StepFailure {
            line: None,
            message: format!("`{step}`: {why}"),
        }
    }
}

/// A step's observations (full keys), or why it could not do what it says.
pub type StepResult = Result<Vec<(String, serde_json::Value)>, StepFailure>;

/// What a running step knows of itself, for its observations and messages.
pub struct StepCtx<'a> {
    /// The step's observation key (`bind.a`, or its `id`).
    pub key: &'a str,
    /// Its line in the case file.
    pub line: usize,
    /// The step as the case file writes it (`clients: c`), for messages.
    pub name: &'a str,
}

impl StepCtx<'_> {
    /// The step could not do what it says, because of `why`.
    pub fn fail(&self, why: impl std::fmt::Display) -> StepFailure {
        StepFailure::new(self.name, why)
    }

    /// The key with `suffix` appended (`.error` gives `accept.a.error`).
    pub fn at(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.key)
    }

    /// One observation under the step's own key.
    pub fn one(&self, value: impl Into<serde_json::Value>) -> StepResult {
        Ok(vec![(self.key.to_string(), value.into())])
    }
}

/// Polls `probe` every 2 ms until it says done or `timeout_ms` passes; returns its
/// last value (the observation is what was reached, not whether it was in time).
pub(crate) fn wait_for<T, E>(
    timeout_ms: u64,
    mut probe: impl FnMut() -> Result<(bool, T), E>,
) -> Result<T, E> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let (done, value) = probe()?;
        if done || Instant::now() >= deadline {
            return Ok(value);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A step as the case file writes it, e.g. `clients: c`, for messages.
fn step_name(step: &Step) -> String {
    let verb = step.action.verb();
    if step.key == verb {
        return verb.to_string();
    }
    match step
        .key
        .strip_prefix(verb)
        .and_then(|k| k.strip_prefix('.'))
    {
        Some(subject) => format!("{verb}: {subject}"),
        None => format!("{verb} (id {})", step.key),
    }
}

/// Why traffic could not be sent from the CPU a step names.
pub(crate) fn pin_failure(cpu: Option<u32>, e: &std::io::Error) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "cannot pin the thread to CPU {} ({}; this machine has {cpus} CPUs)",
        cpu.unwrap_or_default(),
        crate::errno::of_io(e)
    )
}

/// A target's family, for a client or sender whose case did not say.
pub(crate) fn family_of(addr: &std::net::SocketAddr) -> Family {
    if addr.is_ipv4() {
        Family::Ipv4
    } else {
        Family::Ipv6
    }
}

pub(crate) struct Background {
    pub(crate) key: String,
    pub(crate) line: usize,
    /// The step's own name, for messages.
    pub(crate) step: String,
    pub(crate) thread: JoinHandle<Result<Group, String>>,
}

/// What the steps of one case share while it runs: its sockets, acceptors, client
/// groups and filters.
#[derive(Default)]
pub struct Executor {
    pub(crate) table: Table,
    pub(crate) servers: BTreeMap<String, Server>,
    pub(crate) groups: BTreeMap<String, Group>,
    /// Background client groups: their `clients` step (key, line) and the thread.
    pub(crate) background: BTreeMap<String, Background>,
    pub(crate) sent: BTreeMap<String, u32>,
    /// What steps keep for later steps (filters, programs), by the step's own type.
    pub(crate) kept: crate::step_state::StepState,
}

impl Executor {
    /// Runs one step and, where it says `time: true`, adds how long it took as
    /// `time.<key>` in microseconds (see `clock`: CLOCK_MONOTONIC or the TSC).
    pub(crate) fn run_step(&mut self, step: &Step) -> StepResult {
        let started = clock::Stamp::now();
        let mut observed = self.step(step)?;
        if step.time {
            let us = started.elapsed_us();
            observed.push((format!("time.{}", step.key), json!(us)));
        }
        Ok(observed)
    }

    /// Runs one step; returns its observations under the step's key, or why the
    /// step could not do what it says.
    fn step(&mut self, step: &Step) -> StepResult {
        let name = step_name(step);
        let ctx = StepCtx {
            key: &step.key,
            line: step.line,
            name: &name,
        };
        step.action.run(self, &ctx)
    }

    /// Records a finished client group for `account`/`send`; its `clients.*`
    /// observations under `key`.
    pub(crate) fn finish_group(
        &mut self,
        key: &str,
        group: &str,
        finished: Group,
    ) -> Vec<(String, serde_json::Value)> {
        let obs = clients::connect_observations(&finished)
            .into_iter()
            .map(|(suffix, v)| (format!("{key}.{suffix}"), v))
            .collect();
        self.groups.insert(group.to_string(), finished);
        obs
    }

    fn finish(self) {
        // Filters and programs first, so that nothing a server waits for is still
        // held back.
        drop(self.kept);
        for (_, server) in self.servers {
            server.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The executor for real, on the kernel this machine runs (root, a fresh
    //! network namespace per case, as `run --host` does).
    use super::*;

    fn plan(yaml: &str) -> Plan {
        let text = format!("summary: t\n{yaml}");
        crate::case::load_str("t", std::path::Path::new("cases/t.yaml"), &text)
            .unwrap_or_else(|e| panic!("{e}"))
            .plan
    }

    fn run(yaml: &str) -> CaseRun {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the executor tests need root (network namespaces), as CI has"
        );
        run_case(&plan(yaml), &crate::host::release())
    }

    fn error_at(run: &CaseRun) -> (String, usize) {
        match &run.outcome {
            Outcome::Error {
                message,
                line: Some(line),
            } => (message.clone(), *line),
            other => panic!("expected an error naming a line, got {other:?}: {run:?}"),
        }
    }

    /// IP_FREEBIND lets a socket of either family bind an address no interface of
    /// the namespace holds; without it the same bind is EADDRNOTAVAIL.
    #[test]
    fn freebind_binds_an_address_no_interface_holds() {
        let run = run("requires: [root, ipv6]
steps:
  - socket: plain
  - bind: plain
    addr: 192.0.2.1
  - socket: free
    freebind: true
  - bind: free
    addr: 192.0.2.1
  - socket: free6
    family: ipv6
    freebind: true
  - bind: free6
    addr: 2001:db8::1
");
        let o = &run.observations;
        assert_eq!(o.get("bind.plain"), Some(&json!("EADDRNOTAVAIL")), "{o:?}");
        assert_eq!(o.get("socket.free.freebind"), Some(&json!("ok")), "{o:?}");
        assert_eq!(o.get("bind.free"), Some(&json!("ok")), "{o:?}");
        assert_eq!(o.get("socket.free6.freebind"), Some(&json!("ok")), "{o:?}");
        assert_eq!(o.get("bind.free6"), Some(&json!("ok")), "{o:?}");
    }

    /// Repeated steps come back aggregated; with `each` (what `run -v` sets) every
    /// index's own observation comes too, each socket's real result.
    #[test]
    fn a_repeat_block_records_every_index_only_when_asked() {
        let yaml = "steps:
  - repeat: 3
    steps:
      - socket: \"l[i]\"
      - bind: \"l[i]\"
        addr: 127.0.0.1
        port: 4242
";
        let aggregated = run(yaml);
        assert_eq!(
            aggregated.observations.get("bind.l.ok"),
            Some(&json!(1)),
            "{aggregated:?}"
        );
        assert_eq!(
            aggregated.observations.get("bind.l.EADDRINUSE"),
            Some(&json!(2))
        );
        assert!(
            !aggregated.observations.contains_key("bind.l[1]"),
            "{aggregated:?}"
        );

        let mut every = plan(yaml);
        crate::case::repeat::record_each(&mut every.steps);
        let every = run_case(&every, &crate::host::release());
        assert_eq!(
            every.observations.get("bind.l.ok"),
            Some(&json!(1)),
            "{every:?}"
        );
        assert_eq!(
            every.observations.get("bind.l[0]"),
            Some(&json!("ok")),
            "{every:?}"
        );
        assert_eq!(
            every.observations.get("bind.l[1]"),
            Some(&json!("EADDRINUSE"))
        );
        assert_eq!(
            every.observations.get("bind.l[2]"),
            Some(&json!("EADDRINUSE"))
        );
        assert_eq!(every.observations.get("socket.l[2]"), Some(&json!("ok")));
    }

    /// shutdown() on an unconnected TCP socket is ENOTCONN yet marks it shut down,
    /// so a later connect() polls POLLHUP at once; the observation is what the
    /// kernel did (a peer or an errno), never socket2's own "no error set" (`Other`).
    #[test]
    fn connect_after_shutdown_reports_what_the_kernel_did() {
        for _ in 0..5 {
            let run = run("steps:
  - socket: l
  - bind: l
    addr: 127.0.0.1
    port: 5000
  - listen: l
  - socket: c
  - shutdown: c
    how: both
  - connect: c
    to: l
    timeout: 200ms
");
            let o = &run.observations;
            assert_eq!(o.get("shutdown.c"), Some(&json!("ENOTCONN")), "{o:?}");
            let connect = o.get("connect.c").and_then(|v| v.as_str()).unwrap_or("");
            assert!(
                connect == "ok" || crate::errno::looks_like(connect),
                "connect.c = {connect}: {o:?}"
            );
        }
    }

    /// A connect on a listener fails, and must leave it nonblocking as `listen` made
    /// it: socket2's connect_timeout clears O_NONBLOCK, so the `accept` after it
    /// blocked until the case's budget ran out (explore: every kernel timed out).
    #[test]
    fn a_connect_leaves_a_listener_nonblocking_for_accept() {
        let run = run("timeout: 3s
steps:
  - socket: l
  - bind: l
    addr: 127.0.0.1
    port: 5000
  - listen: l
  - connect: l
    to: {addr: 127.0.0.1, port: 5001}
    timeout: 200ms
  - accept: l
");
        assert_eq!(run.outcome, Outcome::Ran, "{run:?}");
        let o = &run.observations;
        assert_eq!(o.get("accept.l"), Some(&json!(0)), "{o:?}");
        assert_eq!(o.get("accept.l.error"), Some(&json!("ok")), "{o:?}");
    }

    /// A connect to a listener whose queue is full waits for a SYN-ACK that never
    /// comes: the kernel's errno for that, as cases/README.md promises.
    #[test]
    fn a_connect_that_times_out_is_observed_as_etimedout() {
        let run = run("steps:
  - socket: l
  - bind: l
    addr: 127.0.0.1
    port: 5000
  - listen: l
    backlog: 0
  - socket: a
  - connect: a
    to: l
    timeout: 200ms
  - socket: b
  - connect: b
    to: l
    timeout: 200ms
");
        let o = &run.observations;
        assert_eq!(o.get("connect.a"), Some(&json!("ok")), "{o:?}");
        assert_eq!(o.get("connect.b"), Some(&json!("ETIMEDOUT")), "{o:?}");
    }

    /// A client group whose target has no address: an error at the `clients` line,
    /// never a panic at `account` ("no entry found for key").
    #[test]
    fn clients_without_a_target_address_is_an_error_at_their_line() {
        let run = run("steps:
  - socket: a
  - close: a
  - clients: c
    count: 2
    to: a
  - account: c
");
        let (message, line) = error_at(&run);
        assert_eq!(line, 5, "{message}");
        assert!(message.contains("`clients: c`"), "{message}");
        assert!(message.contains("EBADF"), "{message}");
        assert!(!message.contains("panicked"), "{message}");
    }

    #[test]
    fn datagrams_without_a_target_address_is_an_error_at_their_line() {
        let run = run("steps:
  - socket: u
    proto: udp
  - close: u
  - socket: r
    proto: udp
  - bind: r
    addr: 127.0.0.1
  - datagrams: d
    count: 3
    to: u
  - tally: d
    among: [r]
");
        let (message, line) = error_at(&run);
        assert_eq!(line, 10, "{message}");
        assert!(message.contains("`datagrams: d`"), "{message}");
    }

    /// `cpu: 4000` cannot be pinned: the group must not pass with zero clients.
    #[test]
    fn clients_on_a_cpu_that_does_not_exist_is_an_error() {
        for background in [false, true] {
            let wait = if background {
                "    background: true\n  - wait: c\n"
            } else {
                ""
            };
            let run = run(&format!(
                "steps:
  - socket: a
  - bind: a
    addr: 127.0.0.1
  - listen: a
  - clients: c
    count: 3
    to: a
    cpu: 4000
{wait}  - account: c
"
            ));
            let (message, line) = error_at(&run);
            assert_eq!(line, 7, "{message}");
            assert!(message.contains("CPU 4000"), "{message}");
            assert!(message.contains("EINVAL"), "{message}");
            assert!(!run.observations.contains_key("account.c.total"));
        }
    }

    /// A tally of a socket that was closed cannot count: an error, not `0`.
    #[test]
    fn tally_of_a_closed_socket_is_an_error() {
        let run = run("steps:
  - socket: r
    proto: udp
  - bind: r
    addr: 127.0.0.1
  - datagrams: d
    count: 3
    to: r
  - close: r
  - tally: d
    among: [r]
");
        let (message, line) = error_at(&run);
        assert_eq!(line, 11, "{message}");
        assert!(
            message.contains("`r`") && message.contains("EBADF"),
            "{message}"
        );
    }

    /// Accounting again must not move clients between buckets by itself: its own
    /// probe turns an orphaned client into a reset one, and a reset once read
    /// looks like end-of-file.
    #[test]
    fn a_second_account_sees_the_same_buckets() {
        // Backlog 1 and 6 clients: the kernel keeps the extra handshakes pending and
        // drops them silently when the listener closes (the clients think they are
        // connected: orphaned); the queued one is reset.
        let run = run("steps:
  - socket: a
  - bind: a
    addr: 127.0.0.1
  - listen: a
    backlog: 1
  - clients: c
    count: 6
    to: a
  - close: a
  - account: c
  - account: c
    id: again
");
        assert_eq!(run.outcome, Outcome::Ran, "{run:?}");
        let o = &run.observations;
        for bucket in ["reset", "orphaned", "closed", "pending", "total"] {
            assert_eq!(
                o[&format!("account.c.{bucket}")],
                o[&format!("again.{bucket}")],
                "{bucket}: {o:?}"
            );
        }
        let moved: u64 = ["reset", "orphaned", "closed"]
            .iter()
            .map(|b| o[&format!("again.{b}")].as_u64().unwrap())
            .sum();
        assert!(moved > 0, "nothing for a second look to change: {o:?}");
    }
}

#[cfg(test)]
mod isolation_tests {
    //! Each case runs in a child process: nothing of a case that overran its
    //! budget survives it, and what it saw before still comes back.
    use super::*;

    /// Every thread on the machine whose name is `name` (/proc/*/task/*/comm).
    fn threads_named(name: &str) -> Vec<String> {
        let mut found = Vec::new();
        for proc in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(tasks) = std::fs::read_dir(proc.path().join("task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if comm.trim_end() == name {
                    found.push(task.path().display().to_string());
                }
            }
        }
        found
    }

    #[test]
    fn a_timed_out_case_is_killed_with_its_threads_and_keeps_its_observations() {
        assert!(nix::unistd::geteuid().is_root(), "needs root, as CI has");
        // A serve thread (a 5 ms poll loop) and a step that sleeps past the budget.
        let text = "summary: t
timeout: 300ms
steps:
  - socket: a
  - bind: a
    addr: 127.0.0.1
  - listen: a
  - serve: a
  - sleep: 5s
  - close: a
";
        let plan = crate::case::load_str("leaky", std::path::Path::new("cases/leaky.yaml"), text)
            .unwrap()
            .plan;
        let started = Instant::now();
        let run = run_case(&plan, &crate::host::release());
        // The budget ran out in the `sleep` step, line 9.
        assert_eq!(
            run.outcome,
            Outcome::Timeout {
                after_ms: 300,
                line: Some(9)
            },
            "{run:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3), "{run:?}");
        assert_eq!(
            run.observations.get("serve.a"),
            Some(&json!("ok")),
            "{run:?}"
        );
        assert_eq!(run.observations.get("listen.a"), Some(&json!("ok")));
        // Threads are named after the case (`case leaky`, inherited by the serve
        // thread): none may be left anywhere.
        let left = threads_named("case leaky");
        assert!(left.is_empty(), "the case's threads outlived it: {left:?}");
    }
}

#[cfg(test)]
mod setup_failure_tests {
    //! Setup that fails for lack of a file descriptor, in a child process (the
    //! descriptor limit is lowered there only).
    use super::*;
    use crate::case::{AcceptMode, Family, Proto, SockOptions};

    #[test]
    fn an_epoll_accept_that_cannot_wait_is_an_error_not_zero() {
        let finished = isolate::run_isolated("accept-setup", Duration::from_secs(10), |_| {
            let mut table = sockets::Table::default();
            table.create("l", Proto::Tcp, Family::Ipv4, &SockOptions::default(), None);
            table.listen("l", 4).unwrap();
            let fd = table
                .with("l", |s| Ok(std::os::fd::AsRawFd::as_raw_fd(s)))
                .unwrap();
            let limit = fd as libc::rlim_t + 1;
            let rlim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: a plain syscall on a valid struct.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rlim) }, 0);
            match table.accept("l", None, 10, AcceptMode::Epoll) {
                Ok((n, _)) => Outcome::Skipped {
                    reason: format!("accepted {n}"),
                },
                Err(e) => Outcome::Error {
                    message: crate::errno::of_io(&e),
                    line: None,
                },
            }
        });
        assert_eq!(
            finished.outcome,
            Outcome::Error {
                message: "EMFILE".into(),
                line: None
            }
        );
    }
}
