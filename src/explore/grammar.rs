//! Random programs over a small pool of addresses, ports and options that makes
//! collisions likely. The steps themselves say how they are drawn
//! (`Step::EXPLORE`, `Step::generate` in each step's module); this module holds
//! what they draw from (`Gen`: the random source, the sockets so far, the pools)
//! and puts programs together: sysctls, a first socket, then steps by weight.

use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;

pub use super::program::{Draft, Program, Val};
use crate::steps::Action;

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

/// What a step's generator draws from: the random source and the program so far.
pub struct Gen {
    pub rng: XorShiftRng,
    pub sockets: Vec<SockInfo>,
}

/// Addresses a bind draws from: wildcards, loopbacks, v4-mapped, and now and then
/// one no interface holds (`NONLOCAL_*`), which only IP_FREEBIND or
/// `ip_nonlocal_bind` make bindable.
pub const ADDRS_V4: &[&str] = &["0.0.0.0", "127.0.0.1", "127.0.0.2"];
pub const ADDRS_V6: &[&str] = &["::", "::1", "::ffff:0.0.0.0", "::ffff:127.0.0.1"];
pub const NONLOCAL_V4: &str = "192.0.2.1";
pub const NONLOCAL_V6: &str = "2001:db8::1";
/// Fixed ports: the same two, so binds collide; a narrow `ip_local_port_range`
/// makes the kernel's own choices collide with them too.
pub const PORTS: &[&str] = &["5000", "5001"];
/// IP_LOCAL_PORT_RANGE values a socket may set: inside the pool of `PORTS`.
pub const PORT_RANGES: &[[&str; 2]] = &[["5000", "5001"], ["5000", "5000"], ["5001", "5001"]];

/// Per-namespace sysctls a program may set, each with its value: the ones that
/// change which binds and connects collide.
pub const SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.tcp_migrate_req", "1"),
    ("net.ipv4.ip_autobind_reuse", "1"),
    // One port, not two: the kernel picks among two at random, so whether its
    // choice met a fixed bind (EADDRINUSE, a connect to itself) changed from run
    // to run on one kernel, and explore confirmed and wrote such coin flips as
    // differences between kernels.
    ("net.ipv4.ip_local_port_range", "5000 5000"),
    ("net.ipv4.ip_nonlocal_bind", "1"),
    ("net.ipv6.bindv6only", "1"),
];

/// One explored step: its verb, weight and generator, from the registry.
pub struct Explorable {
    pub verb: &'static str,
    pub weight: u32,
    pub generate: fn(&mut Gen) -> Option<Draft>,
}

/// Every registered step the explorer draws, in the registry's order.
pub fn explorables() -> Vec<Explorable> {
    Action::explore()
        .into_iter()
        .filter_map(|(verb, explore, generate)| match explore {
            crate::steps::Explore::Weight(weight) => Some(Explorable {
                verb,
                weight,
                generate,
            }),
            crate::steps::Explore::No(_) => None,
        })
        .collect()
}

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
    let steps = explorables();
    let by_verb = |verb: &str| {
        steps
            .iter()
            .find(|e| e.verb == verb)
            .map(|e| e.generate)
            .unwrap_or_else(|| panic!("`{verb}` is a registered, explored step"))
    };
    let (socket, bind) = (by_verb("socket"), by_verb("bind"));
    let mut g = Gen::new(rng_for(seed, index));
    let sysctls = SYSCTLS
        .iter()
        .filter(|_| g.chance(0.12))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let len = g.rng.random_range(2..=8);
    let mut drafts = vec![socket(&mut g).expect("a first socket is always possible")];
    let total: u32 = steps.iter().map(|e| e.weight).sum();
    let mut tries = 0;
    while drafts.len() < len && tries < 100 {
        tries += 1;
        // An unbound socket is bound next, more often than not: binds are where
        // sockets meet.
        if g.sockets.iter().any(|s| !s.bound && !s.closed) && g.chance(0.4) {
            if let Some(step) = bind(&mut g) {
                drafts.push(step);
                continue;
            }
        }
        let mut pick = g.rng.random_range(0..total);
        let entry = steps
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
        if let Some(step) = (entry.generate)(&mut g) {
            drafts.push(step);
        }
    }
    Program {
        sysctls,
        steps: drafts,
    }
    .with_unique_keys()
}

impl Gen {
    pub fn new(rng: XorShiftRng) -> Gen {
        Gen {
            rng,
            sockets: Vec::new(),
        }
    }

    /// An open socket in the state `want` describes, most of the time; else any
    /// open one `allow` permits (a step out of the usual order now and then).
    pub fn prefer_socket(
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

    /// A random open socket that `filter` accepts.
    pub fn pick_socket(&mut self, filter: impl Fn(&SockInfo) -> bool) -> Option<usize> {
        let open: Vec<usize> = (0..self.sockets.len())
            .filter(|&i| !self.sockets[i].closed && filter(&self.sockets[i]))
            .collect();
        open.choose(&mut self.rng).copied()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// One item of a pool.
    pub fn one<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items
            .choose(&mut self.rng)
            .copied()
            .expect("pools are not empty")
    }

    /// One of the fixed ports, mostly the first.
    pub fn port(&mut self) -> &'static str {
        if self.chance(0.9) {
            PORTS[0]
        } else {
            PORTS[1]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::Explore;

    /// Every registered step either is drawn, and then its generator yields steps
    /// that decode (inside whole programs), or says why it is not explored.
    #[test]
    fn every_step_is_explored_or_says_why_not() {
        let mut seen = std::collections::BTreeMap::new();
        for i in 0..2000 {
            for step in program(5, i).steps {
                *seen.entry(step.verb).or_insert(0) += 1;
            }
        }
        for (verb, explore, _) in Action::explore() {
            match explore {
                Explore::Weight(w) => {
                    assert!(w > 0, "{verb}: weight 0; use Explore::No(why) instead");
                    assert!(
                        seen.get(verb).copied().unwrap_or(0) >= 10,
                        "{verb} is explored (weight {w}) but its generate() rarely or never \
                         makes a step: {seen:?}"
                    );
                }
                Explore::No(why) => {
                    assert!(
                        why.len() >= 10,
                        "step `{verb}`: write `generate` and `const EXPLORE: Explore = \
                         Explore::Weight(N)` in its module, or say why it is not explored \
                         (`Explore::No(\"...\")`)"
                    );
                    assert!(!seen.contains_key(verb), "{verb} is not explored but drawn");
                }
            }
        }
    }

    #[test]
    fn generated_programs_are_valid_cases() {
        for seed in [0, 1, 7] {
            for i in 0..400 {
                let p = program(seed, i);
                assert!((1..=8).contains(&p.steps.len()), "{p:?}");
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
    fn the_widened_grammar_is_drawn() {
        // Each option, sysctl and verb the issue lists appears in some program.
        let programs: Vec<Program> = (0..1000).map(|i| program(2, i)).collect();
        let yaml: String = programs.iter().map(|p| p.body_yaml()).collect();
        for needle in [
            "freebind: true",
            "bind_address_no_port: true",
            "- shutdown:",
            "- accept:",
            "- listen:",
            "- connect:",
            "- close:",
            "v6only:",
            "local_port_range:",
            NONLOCAL_V4,
            "\"::ffff:127.0.0.1\"",
        ] {
            assert!(yaml.contains(needle), "no program has {needle}");
        }
        for (name, _) in SYSCTLS {
            assert!(
                yaml.contains(&format!("  {name}:")),
                "no program sets {name}"
            );
        }
    }

    /// A port the kernel chooses (bind to port 0, a connect's autobind) under the
    /// narrowed range is no coin flip: the same program gives the same outcome
    /// every time on one kernel (this one, as root in a fresh namespace). With the
    /// range 5000-5001, `bind.b` was ok or EADDRINUSE by chance.
    #[test]
    fn the_narrowed_port_range_leaves_the_kernel_no_choice() {
        let (name, range) = SYSCTLS
            .iter()
            .find(|(n, _)| *n == "net.ipv4.ip_local_port_range")
            .expect("the grammar narrows the range");
        let yaml = format!(
            "summary: t
requires: [root, ipv6]
sysctls:
  {name}: \"{range}\"
steps:
  - socket: a
    proto: udp
    family: ipv6
  - bind: a
    addr: \"::1\"
  - socket: b
    proto: udp
    family: ipv6
  - bind: b
    addr: \"::1\"
    port: 5000
"
        );
        let case = crate::case::load_str("t", std::path::Path::new("t.yaml"), &yaml)
            .unwrap_or_else(|e| panic!("{e}"));
        let outcomes: std::collections::BTreeSet<String> = (0..12)
            .map(|_| {
                let run = crate::exec::run_case(&case.plan, &crate::host::release());
                assert_eq!(run.outcome, crate::observe::Outcome::Ran, "{run:?}");
                crate::value::show(&run.observations["bind.b"])
            })
            .collect();
        assert_eq!(
            outcomes.len(),
            1,
            "bind.b varied between runs: {outcomes:?}"
        );
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
