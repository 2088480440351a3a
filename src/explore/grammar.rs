//! Random programs over a small pool of addresses, ports and options that makes
//! collisions likely. One generator per step verb; `GRAMMAR` lists them and
//! `NOT_EXPLORED` says why the other verbs are left out, and a test checks that the
//! two together cover every verb the case language has.

use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;

use super::program::{Draft, Program, Val};

/// The sockets a program has made so far, as a generator sees them.
#[derive(Debug, Clone)]
pub struct SockInfo {
    pub name: String,
    pub ipv6: bool,
    pub tcp: bool,
    pub bound: bool,
    pub listening: bool,
    pub connected: bool,
    pub closed: bool,
}

/// What a generator draws from: the random source and the program so far.
pub struct Draw {
    pub rng: XorShiftRng,
    pub sockets: Vec<SockInfo>,
}

/// A step verb the explorer can generate: how often, and how.
pub struct Explorable {
    pub verb: &'static str,
    pub weight: u32,
    pub generate: fn(&mut Draw) -> Option<Draft>,
}

/// The explored steps. A step added to the case language is explored by adding
/// its generator here (or saying in `NOT_EXPLORED` why not).
pub const GRAMMAR: &[Explorable] = &[
    Explorable {
        verb: "socket",
        weight: 5,
        generate: socket,
    },
    Explorable {
        verb: "bind",
        weight: 8,
        generate: bind,
    },
    Explorable {
        verb: "listen",
        weight: 3,
        generate: listen,
    },
    Explorable {
        verb: "connect",
        weight: 3,
        generate: connect,
    },
    Explorable {
        verb: "accept",
        weight: 1,
        generate: accept,
    },
    Explorable {
        verb: "close",
        weight: 1,
        generate: close,
    },
    Explorable {
        verb: "shutdown",
        weight: 1,
        generate: shutdown,
    },
];

/// Verbs left out, and why: their observations measure hash placement or timing
/// (volatile by nature), or they need a setup a random program rarely has.
pub const NOT_EXPLORED: &[(&str, &str)] = &[
    (
        "serve",
        "a background acceptor: what it took depends on timing",
    ),
    ("clients", "many connections: spread by hash placement"),
    ("wait", "joins background clients, which are not generated"),
    ("account", "counts per listener: hash placement"),
    ("queue", "queue lengths under load: timing"),
    ("wait_queued", "waits on counts: timing"),
    ("wait_accepted", "waits on counts: timing"),
    ("datagrams", "spread over a group by hash placement"),
    ("tally", "counts per socket: hash placement"),
    ("sleep", "only time passes"),
    (
        "repeat",
        "repetition measures scale and cost, not which errno a kernel returns",
    ),
    (
        "attach_bpf",
        "steering programs: what they pick is hash placement or the CPU",
    ),
    (
        "attach_ebpf",
        "steering programs: needs a socket array set up",
    ),
    ("detach_bpf", "only meaningful after attach_bpf"),
    (
        "local_port",
        "observes a kernel-chosen port, which is masked",
    ),
    (
        "bind_pairs",
        "a whole conflict matrix in one step: already a case",
    ),
    ("drop", "packet filters: timing of retransmissions"),
    ("release", "only meaningful after drop"),
    ("requests", "SYN_RECV counts: timing"),
    ("send", "only meaningful with clients"),
    (
        "attach_migrate",
        "an eBPF migration program: needs a group under load",
    ),
    ("migrations", "counters of attach_migrate"),
    (
        "link",
        "network devices: a topology, not a socket collision",
    ),
    ("sk_lookup", "a steering program: needs a socket map set up"),
    (
        "syn_data",
        "a Fast Open count: only meaningful after fastopen clients",
    ),
];

const ADDRS_V4: &[&str] = &["0.0.0.0", "127.0.0.1", "127.0.0.2"];
const ADDRS_V6: &[&str] = &["::", "::1", "::ffff:0.0.0.0", "::ffff:127.0.0.1"];
/// Fixed ports: the same two, so binds collide; `narrow ip_local_port_range` makes
/// the kernel's own choices collide with them too.
const PORTS: &[&str] = &["5000", "5001"];
const PORT_RANGES: &[[&str; 2]] = &[["5000", "5001"], ["5000", "5000"], ["5001", "5001"]];

/// Per-namespace sysctls a program may set, each with its value.
const SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.tcp_migrate_req", "1"),
    ("net.ipv4.ip_autobind_reuse", "1"),
    ("net.ipv4.ip_local_port_range", "5000 5001"),
];

/// The random source of program `index` of a run with `seed`: any program can be
/// made again alone, which is what makes a run reproducible and resumable.
pub fn rng_for(seed: u64, index: u64) -> XorShiftRng {
    // splitmix64 of the pair, so nearby seeds and indexes draw unrelated streams.
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    XorShiftRng::seed_from_u64(z ^ (z >> 31))
}

/// Program `index` of the run with `seed`: 2 to 8 steps, sometimes sysctls.
pub fn program(seed: u64, index: u64) -> Program {
    let mut draw = Draw {
        rng: rng_for(seed, index),
        sockets: Vec::new(),
    };
    let sysctls = SYSCTLS
        .iter()
        .filter(|_| draw.rng.random_bool(0.15))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let len = draw.rng.random_range(2..=8);
    // An unbound socket is bound next, more often than not: binds are where sockets
    // meet.
    let mut steps = vec![socket(&mut draw).expect("a first socket is always possible")];
    let total: u32 = GRAMMAR.iter().map(|e| e.weight).sum();
    let mut tries = 0;
    while steps.len() < len && tries < 100 {
        tries += 1;
        if draw.sockets.iter().any(|s| !s.bound && !s.closed) && draw.chance(0.4) {
            if let Some(step) = bind(&mut draw) {
                steps.push(step);
                continue;
            }
        }
        let mut pick = draw.rng.random_range(0..total);
        let entry = GRAMMAR
            .iter()
            .find(|e| {
                if pick < e.weight {
                    true
                } else {
                    pick -= e.weight;
                    false
                }
            })
            .expect("pick is below the total weight");
        if let Some(step) = (entry.generate)(&mut draw) {
            steps.push(step);
        }
    }
    Program { sysctls, steps }.with_unique_keys()
}

impl Draw {
    /// An open socket in the state `want` describes, most of the time; else any
    /// open one `allow` permits (a step out of the usual order now and then).
    fn prefer_socket(
        &mut self,
        want: impl Fn(&SockInfo) -> bool,
        allow: impl Fn(&SockInfo) -> bool,
    ) -> Option<usize> {
        if self.chance(0.85) {
            if let Some(i) = self.pick_socket(&want) {
                return Some(i);
            }
        }
        self.pick_socket(allow)
    }

    fn pick_socket(&mut self, filter: impl Fn(&SockInfo) -> bool) -> Option<usize> {
        let open: Vec<usize> = (0..self.sockets.len())
            .filter(|&i| !self.sockets[i].closed && filter(&self.sockets[i]))
            .collect();
        open.choose(&mut self.rng).copied()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn one<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items
            .choose(&mut self.rng)
            .copied()
            .expect("pools are not empty")
    }
}

fn socket(d: &mut Draw) -> Option<Draft> {
    if d.sockets.len() >= 4 {
        return None;
    }
    let name = format!("s{}", d.sockets.len());
    // Often the same kind as the socket before: two sockets that can collide.
    let prev = d.sockets.last().map(|s| (s.tcp, s.ipv6));
    let (tcp, ipv6) = match prev {
        Some(prev) if d.chance(0.6) => prev,
        _ => (d.chance(0.75), d.chance(0.5)),
    };
    let mut step = Draft::new("socket", &name);
    if !tcp {
        step = step.with("proto", Val::s("udp"));
    }
    if ipv6 {
        step = step.with("family", Val::s("ipv6"));
    }
    for opt in ["reuseaddr", "reuseport"] {
        if d.chance(0.3) {
            step = step.with(opt, Val::s("true"));
        }
    }
    if ipv6 && d.chance(0.3) {
        let v = d.one(&["true", "false"]);
        step = step.with("v6only", Val::s(v));
    }
    if d.chance(0.15) {
        let range = *PORT_RANGES.choose(&mut d.rng).expect("not empty");
        step = step.with(
            "local_port_range",
            Val::Seq(range.iter().map(|p| p.to_string()).collect()),
        );
    }
    d.sockets.push(SockInfo {
        name,
        ipv6,
        tcp,
        bound: false,
        listening: false,
        connected: false,
        closed: false,
    });
    Some(step)
}

fn bind(d: &mut Draw) -> Option<Draft> {
    let i = d.pick_socket(|s| !s.bound)?;
    let addr = d.one(if d.sockets[i].ipv6 {
        ADDRS_V6
    } else {
        ADDRS_V4
    });
    let mut step = Draft::new("bind", &d.sockets[i].name).with("addr", Val::s(addr));
    let others: Vec<String> = d
        .sockets
        .iter()
        .filter(|s| s.bound)
        .map(|s| s.name.clone())
        .collect();
    // Mostly a fixed port, and mostly the first one, or another socket's: binds
    // are where sockets meet. Port 0 (the kernel's choice) now and then.
    let roll = d.rng.random_range(0..10);
    if roll < 7 {
        let port = if d.chance(0.9) { PORTS[0] } else { PORTS[1] };
        step = step.with("port", Val::s(port));
    } else if roll < 9 && !others.is_empty() {
        let other = others.choose(&mut d.rng).expect("not empty").clone();
        step = step.with("port", Val::s(other));
    }
    d.sockets[i].bound = true;
    Some(step)
}

fn listen(d: &mut Draw) -> Option<Draft> {
    let i = d.prefer_socket(
        |s| s.tcp && s.bound && !s.listening && !s.connected,
        |s| s.tcp && !s.listening,
    )?;
    d.sockets[i].listening = true;
    d.sockets[i].bound = true;
    Some(Draft::new("listen", &d.sockets[i].name))
}

fn connect(d: &mut Draw) -> Option<Draft> {
    let i = d.prefer_socket(|s| !s.listening && !s.connected, |s| !s.connected)?;
    let ipv6 = d.sockets[i].ipv6;
    let tcp = d.sockets[i].tcp;
    let me = d.sockets[i].name.clone();
    // Listeners of the same protocol first (a connection that succeeds), else any
    // bound socket the family can reach.
    let reachable = |s: &SockInfo| s.bound && s.name != me && (ipv6 || !s.ipv6);
    let mut targets: Vec<String> = d
        .sockets
        .iter()
        .filter(|s| reachable(s) && s.tcp == tcp && (s.listening || !tcp))
        .map(|s| s.name.clone())
        .collect();
    if targets.is_empty() || d.chance(0.2) {
        targets = d
            .sockets
            .iter()
            .filter(|s| reachable(s))
            .map(|s| s.name.clone())
            .collect();
    }
    let to = if !targets.is_empty() && d.chance(0.7) {
        Val::s(targets.choose(&mut d.rng).expect("not empty"))
    } else {
        let addr = d.one(if ipv6 {
            &["::1", "::ffff:127.0.0.1"]
        } else {
            &["127.0.0.1"]
        });
        let port = d.one(PORTS);
        Val::Map(vec![
            ("addr".into(), addr.into()),
            ("port".into(), port.into()),
        ])
    };
    d.sockets[i].bound = true;
    d.sockets[i].connected = true;
    Some(
        Draft::new("connect", &me)
            .with("to", to)
            .with("timeout", Val::s("200ms")),
    )
}

fn accept(d: &mut Draw) -> Option<Draft> {
    let i = d.prefer_socket(|s| s.listening, |s| s.tcp)?;
    Some(Draft::new("accept", &d.sockets[i].name))
}

fn close(d: &mut Draw) -> Option<Draft> {
    let i = d.pick_socket(|_| true)?;
    d.sockets[i].closed = true;
    Some(Draft::new("close", &d.sockets[i].name))
}

fn shutdown(d: &mut Draw) -> Option<Draft> {
    let i = d.pick_socket(|_| true)?;
    let how = d.one(&["read", "write", "both"]);
    Some(Draft::new("shutdown", &d.sockets[i].name).with("how", Val::s(how)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_is_explored_or_says_why_not() {
        let mut covered: Vec<&str> = GRAMMAR
            .iter()
            .map(|e| e.verb)
            .chain(NOT_EXPLORED.iter().map(|(v, _)| *v))
            .collect();
        covered.sort_unstable();
        let mut verbs = crate::case::verbs();
        verbs.sort_unstable();
        assert_eq!(
            covered, verbs,
            "GRAMMAR + NOT_EXPLORED must name every step verb once"
        );
    }

    #[test]
    fn generated_programs_are_valid_cases() {
        for seed in [0, 1, 7] {
            for i in 0..300 {
                let p = program(seed, i);
                assert!(
                    (2..=8).contains(&p.steps.len()) || p.steps.len() < 2,
                    "{p:?}"
                );
                if let Err(e) = p.to_case(&format!("p{i}")) {
                    panic!(
                        "seed {seed} program {i} is not a valid case:\n{e}\n{}",
                        p.body_yaml()
                    );
                }
            }
        }
    }

    #[test]
    fn a_seed_reproduces_its_programs_and_seeds_differ() {
        assert_eq!(program(3, 17), program(3, 17));
        assert_ne!(
            (0..20).map(|i| program(3, i)).collect::<Vec<_>>(),
            (0..20).map(|i| program(4, i)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_pool_makes_collisions_likely() {
        // Of many programs, a good share bind two sockets to one port: the same
        // fixed one, or another socket's.
        let colliding = (0..500)
            .map(|i| program(1, i))
            .filter(|p| {
                let ports: Vec<_> = p
                    .steps
                    .iter()
                    .filter(|s| s.verb == "bind")
                    .filter_map(|s| s.field("port"))
                    .collect();
                ports
                    .iter()
                    .enumerate()
                    .any(|(i, a)| ports[i + 1..].contains(a))
                    || ports
                        .iter()
                        .any(|p| matches!(p, Val::Scalar(s) if s.starts_with('s')))
            })
            .count();
        assert!(colliding > 100, "only {colliding} of 500 programs collide");
    }
}
