//! The executor: runs one case's plan in a fresh network namespace and records what
//! the kernel did. The same code serves `run --host` and the guest agent.

mod bpf;
mod clients;
mod cpu;
mod creds;
mod ebpf;
mod netns;
mod pairs;
mod requires;
mod serve;
mod sockets;
mod sockopt;
mod udp;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::case::{Action, Family, Plan, Step};
use crate::observe::{CaseRun, Observations, Outcome};
use clients::Group;
use serve::Server;
use sockets::{outcome, Table};

pub use clients::fairness;

/// Runs a case and returns its observations. Never panics; a case that overruns its
/// budget is reported as a timeout with what was observed until then.
pub fn run_case(plan: &Plan, release: &str) -> CaseRun {
    let started = Instant::now();
    let observations: Arc<Mutex<Observations>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let (thread_plan, thread_obs, thread_release) =
        (plan.clone(), observations.clone(), release.to_string());
    let spawned = std::thread::Builder::new()
        .name(format!("case {}", plan.id))
        .spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                run_in_fresh_namespace(&thread_plan, &thread_release, &thread_obs)
            }));
            let outcome = result.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".to_string());
                Outcome::Error {
                    message: format!("executor panicked: {message}"),
                    line: None,
                }
            });
            let _ = tx.send(outcome);
        });
    let outcome = match spawned {
        Err(e) => Outcome::Error {
            message: format!("cannot start the case thread: {e}"),
            line: None,
        },
        Ok(_) => match rx.recv_timeout(Duration::from_millis(plan.timeout_ms)) {
            Ok(outcome) => outcome,
            // The thread is left behind: it owns only its namespace's sockets.
            Err(_) => Outcome::Timeout {
                after_ms: plan.timeout_ms,
            },
        },
    };
    let observations = observations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    CaseRun {
        id: plan.id.clone(),
        outcome,
        observations,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

fn run_in_fresh_namespace(plan: &Plan, release: &str, obs: &Mutex<Observations>) -> Outcome {
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
    if let Some(reason) = requires::unmet(&plan.requires, release) {
        return Outcome::Skipped { reason };
    }
    let record = |key: String, value: serde_json::Value| {
        obs.lock().unwrap().insert(key, value);
    };
    for sysctl in &plan.sysctls {
        record(
            format!("sysctl.{}", sysctl.name),
            json!(netns::write_sysctl(&sysctl.name, &sysctl.value)),
        );
    }
    let mut exec = Executor::default();
    for step in &plan.steps {
        for (key, value) in exec.step(step) {
            record(key, value);
        }
    }
    exec.finish();
    Outcome::Ran
}

/// Polls `probe` every 2 ms until it says done or `timeout_ms` passes; returns its
/// last value (the observation is what was reached, not whether it was in time).
fn wait_for<T, E>(
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

/// A target's family, for a client or sender whose case did not say.
fn family_of(addr: &std::net::SocketAddr) -> Family {
    if addr.is_ipv4() {
        Family::Ipv4
    } else {
        Family::Ipv6
    }
}

#[derive(Default)]
struct Executor {
    table: Table,
    servers: BTreeMap<String, Server>,
    groups: BTreeMap<String, Group>,
    /// Background client groups: the key of their `clients` step and the thread.
    background: BTreeMap<String, (String, JoinHandle<Group>)>,
    sent: BTreeMap<String, u32>,
}

impl Executor {
    /// Runs one step; returns its observations under the step's key.
    fn step(&mut self, step: &Step) -> Vec<(String, serde_json::Value)> {
        let key = &step.key;
        let at = |suffix: &str| format!("{key}{suffix}");
        let one = |value: String| vec![(key.clone(), json!(value))];
        match &step.action {
            Action::Socket {
                name,
                proto,
                family,
                options,
                creds,
            } => self
                .table
                .create(name, *proto, *family, options, *creds)
                .into_iter()
                .map(|(suffix, v)| (at(&suffix), json!(v)))
                .collect(),
            Action::Bind { sock, addr, port } => one(outcome(self.table.bind(sock, *addr, port))),
            Action::Listen { sock, backlog } => one(outcome(self.table.listen(sock, *backlog))),
            Action::Connect {
                sock,
                to,
                timeout_ms,
            } => one(outcome(self.table.connect(sock, to, *timeout_ms))),
            Action::Accept {
                sock,
                max,
                wait_ms,
                mode,
                name,
            } => {
                let (n, result) = self.table.accept(sock, *max, *wait_ms, *mode);
                let mut obs = vec![
                    (key.clone(), json!(n)),
                    (at(".error"), json!(outcome(result))),
                ];
                if let Some(name) = name {
                    // Later steps on `name` then see EBADF if nothing was accepted.
                    if let Err(e) = self.table.adopt_last_accepted(sock, name) {
                        obs.push((at(".error"), json!(outcome(Err(e)))));
                    }
                }
                obs
            }
            Action::Close { sock } => {
                if let Some(server) = self.servers.remove(sock) {
                    server.stop();
                }
                one(outcome(self.table.close(sock)))
            }
            Action::Shutdown { sock, how } => {
                let how = match how {
                    crate::case::Shutdown::Read => std::net::Shutdown::Read,
                    crate::case::Shutdown::Write => std::net::Shutdown::Write,
                    crate::case::Shutdown::Both => std::net::Shutdown::Both,
                };
                one(outcome(self.table.with(sock, |s| s.shutdown(how))))
            }
            Action::Serve {
                sock,
                epoll_wait_ms,
            } => {
                let dup = self.table.with(sock, |s| s.try_clone());
                match dup {
                    Ok(listener) => {
                        let accepted = self.table.entry(sock).accepted.clone();
                        self.servers.insert(
                            sock.clone(),
                            Server::start(listener, accepted, *epoll_wait_ms),
                        );
                        one("ok".into())
                    }
                    Err(e) => one(crate::errno::of_io(&e)),
                }
            }
            Action::Clients {
                group,
                count,
                to,
                family,
                interval_us,
                timeout_ms,
                background,
                cpu,
            } => {
                let to = match self.table.resolve(to) {
                    Ok(addr) => addr,
                    Err(e) => return vec![(at(".failed"), json!(crate::errno::of_io(&e)))],
                };
                let family = family.unwrap_or(family_of(&to));
                let (count, interval, timeout) = (
                    *count,
                    Duration::from_micros(*interval_us),
                    Duration::from_millis(*timeout_ms),
                );
                let cpu = *cpu;
                let connect = move || {
                    cpu::on_cpu(cpu, || {
                        clients::connect_group(to, family, count, interval, timeout)
                    })
                    .unwrap_or_else(|_| clients::Group {
                        clients: Vec::new(),
                    })
                };
                if *background {
                    self.background
                        .insert(group.clone(), (key.clone(), std::thread::spawn(connect)));
                    Vec::new()
                } else {
                    self.finish_group(key, group, connect())
                }
            }
            Action::Wait { group } => {
                let (clients_key, handle) = self
                    .background
                    .remove(group)
                    .expect("validation pairs wait with a background group");
                let finished = handle.join().expect("client threads do not panic");
                self.finish_group(&clients_key, group, finished)
            }
            Action::Account { group } => clients::account(&self.groups[group], &self.table)
                .into_iter()
                .map(|(suffix, v)| (format!("{key}.{suffix}"), v))
                .collect(),
            Action::Queue { sock } => match self.table.settled_queue_len(sock) {
                Ok(n) => vec![(key.clone(), json!(n))],
                Err(e) => one(crate::errno::of_io(&e)),
            },
            Action::WaitQueued {
                sock,
                count,
                timeout_ms,
            } => {
                match wait_for(*timeout_ms, || {
                    self.table.queue_len(sock).map(|n| (n >= *count, n))
                }) {
                    Ok(n) => vec![(key.clone(), json!(n))],
                    Err(e) => one(crate::errno::of_io(&e)),
                }
            }
            Action::Datagrams {
                group,
                count,
                to,
                from,
                family,
                cpu,
            } => {
                let to = match self.table.resolve(to) {
                    Ok(addr) => addr,
                    Err(e) => return vec![(at(".errors"), json!(crate::errno::of_io(&e)))],
                };
                let family = family.unwrap_or(family_of(&to));
                let send = || udp::send(&self.table, group, to, *count, from.as_deref(), family);
                let (sent, errors) = match cpu::on_cpu(*cpu, send) {
                    Ok(result) => result,
                    Err(e) => return vec![(at(".errors"), json!(crate::errno::of_io(&e)))],
                };
                self.sent.insert(group.clone(), sent.sent);
                vec![
                    (at(".sent"), json!(sent.sent)),
                    (at(".errors"), json!(errors)),
                ]
            }
            Action::Tally {
                group,
                among,
                wait_ms,
            } => {
                std::thread::sleep(Duration::from_millis(*wait_ms));
                udp::tally(&self.table, group, self.sent[group], among)
                    .into_iter()
                    .map(|(suffix, v)| (format!("{key}.{suffix}"), v))
                    .collect()
            }
            Action::WaitAccepted {
                sock,
                count,
                timeout_ms,
            } => {
                let n = wait_for(*timeout_ms, || {
                    let n = self.table.accepted_count(sock);
                    Ok::<_, std::io::Error>((n >= *count as usize, n))
                });
                vec![(key.clone(), json!(n.unwrap_or_default()))]
            }
            Action::AttachBpf { sock, program } => {
                one(outcome(self.table.with(sock, |s| bpf::attach(s, *program))))
            }
            Action::AttachEbpf {
                sock,
                sockarray,
                select,
                drop_on_miss,
            } => self.attach_ebpf(key, sock, sockarray, *select, *drop_on_miss),
            Action::DetachBpf { sock } => one(outcome(self.table.with(sock, bpf::detach))),
            Action::LocalPort { sock } => match self.table.local_addr(sock) {
                Ok(addr) => vec![(key.clone(), json!(addr.port()))],
                Err(e) => one(crate::errno::of_io(&e)),
            },
            Action::BindPairs {
                proto,
                addrs,
                options,
                listen,
            } => pairs::run(key, *proto, addrs, options, *listen),
            Action::Sleep { ms } => {
                std::thread::sleep(Duration::from_millis(*ms));
                Vec::new()
            }
        }
    }

    /// Observations: `.load` (map and program), `.fill` (first failing slot's errno
    /// or ok), and the attach itself under the key.
    fn attach_ebpf(
        &self,
        key: &str,
        sock: &str,
        sockarray: &[String],
        select: u32,
        drop_on_miss: bool,
    ) -> Vec<(String, serde_json::Value)> {
        let errno = |e: &std::io::Error| {
            ebpf::errno_of(e).map_or_else(|| crate::errno::of_io(e), crate::errno::name)
        };
        let on_miss = if drop_on_miss {
            ebpf::OnMiss::Drop
        } else {
            ebpf::OnMiss::Pass
        };
        let program = match ebpf::ReuseportEbpf::load(sockarray.len() as u32, select, on_miss) {
            Ok(p) => p,
            Err(e) => return vec![(format!("{key}.load"), json!(errno(&e)))],
        };
        let fill = sockarray
            .iter()
            .enumerate()
            .map(|(i, name)| self.table.with(name, |s| program.set_slot(i as u32, s)))
            .find_map(Result::err)
            .map_or_else(|| "ok".to_string(), |e| errno(&e));
        let attach = self
            .table
            .with(sock, |s| program.attach(s))
            .map_or_else(|e| errno(&e), |()| "ok".to_string());
        vec![
            (format!("{key}.load"), json!("ok")),
            (format!("{key}.fill"), json!(fill)),
            (key.to_string(), json!(attach)),
        ]
    }

    fn finish_group(
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
        for (_, server) in self.servers {
            server.stop();
        }
    }
}
