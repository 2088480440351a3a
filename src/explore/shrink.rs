//! Smaller variants of a program for delta debugging: chunks of steps, single
//! steps, single fields and sysctls removed. Only variants the case decoder accepts
//! are offered, so a variant never refers to a socket it no longer creates.

use super::program::{Draft, Program, Val};

/// Candidates smaller than `program`, smallest first, at most `max`; the step at
/// `keep` (the one whose observation differs) is never removed.
pub fn candidates(program: &Program, keep: Option<usize>, max: usize) -> Vec<Program> {
    let n = program.steps.len();
    let mut out: Vec<Program> = Vec::new();
    let mut push = |p: Program| {
        if !out.contains(&p) && p.to_case("candidate").is_ok() {
            out.push(p);
        }
    };
    // A whole socket: every step that names it (its own steps, binds to its port,
    // connects to it), which single-step removal cannot reach.
    let keep_step = keep.map(|k| &program.steps[k]);
    for socket in program.steps.iter().filter(|s| s.verb == "socket") {
        if keep_step.is_some_and(|k| mentions(k, &socket.subject)) {
            continue;
        }
        let mut p = program.clone();
        p.steps.retain(|s| !mentions(s, &socket.subject));
        if !p.steps.is_empty() {
            push(p);
        }
    }
    // ddmin's chunks: halves, quarters, ... down to pairs; then single steps.
    let mut chunk = n / 2;
    while chunk >= 1 {
        let mut start = 0;
        while start < n {
            let end = (start + chunk).min(n);
            if !keep.is_some_and(|k| (start..end).contains(&k)) {
                let mut p = program.clone();
                p.steps.drain(start..end);
                if !p.steps.is_empty() {
                    push(p);
                }
            }
            start = end;
        }
        chunk /= 2;
    }
    for i in 0..program.sysctls.len() {
        let mut p = program.clone();
        p.sysctls.remove(i);
        push(p);
    }
    for (i, step) in program.steps.iter().enumerate() {
        for j in 0..step.fields.len() {
            let mut p = program.clone();
            p.steps[i].fields.remove(j);
            push(p);
        }
    }
    out.sort_by_key(Program::size);
    out.truncate(max);
    out
}

/// Whether a step names socket `name`: as its subject or in a field (`port: a`,
/// `to: a`, `to: {addr: ..., port: a}`).
fn mentions(step: &Draft, name: &str) -> bool {
    step.subject == name
        || step.fields.iter().any(|(_, v)| match v {
            Val::Scalar(s) => s == name,
            Val::Map(pairs) => pairs.iter().any(|(_, v)| v == name),
            Val::Seq(_) => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_smaller_valid_and_keep_the_step_that_differs() {
        let p = Program {
            sysctls: vec![("net.ipv4.tcp_migrate_req".into(), "1".into())],
            steps: vec![
                Draft::new("socket", "s0").with("reuseaddr", Val::s("true")),
                Draft::new("socket", "s1").with("family", Val::s("ipv6")),
                Draft::new("bind", "s0")
                    .with("addr", Val::s("127.0.0.1"))
                    .with("port", Val::s("5000")),
                Draft::new("listen", "s0"),
                Draft::new("bind", "s1")
                    .with("addr", Val::s("::1"))
                    .with("port", Val::s("s0")),
            ],
        };
        let keep = Some(4);
        let c = candidates(&p, keep, 100);
        assert!(!c.is_empty());
        for q in &c {
            assert!(q.size() < p.size(), "{q:?}");
            q.to_case("x").unwrap();
            assert!(q
                .steps
                .iter()
                .any(|s| s.verb == "bind" && s.subject == "s1"));
        }
        // Removing `listen` alone is offered; removing `socket: s1` (which the kept
        // bind needs) never is, and `addr` (required) is never dropped.
        assert!(c
            .iter()
            .any(|q| q.steps.len() == 4 && !q.steps.iter().any(|s| s.verb == "listen")));
        assert!(c.iter().all(|q| q
            .steps
            .iter()
            .any(|s| s.subject == "s1" && s.verb == "socket")));
        assert!(c.iter().all(|q| q
            .steps
            .iter()
            .all(|s| s.verb != "bind" || s.field("addr").is_some())));
        // Dropping the family of s1 would make its ::1 bind invalid: never offered.
        assert!(c.iter().all(|q| q
            .steps
            .iter()
            .all(|s| s.verb != "socket" || s.subject != "s1" || s.field("family").is_some())));
        assert!(candidates(&p, keep, 3).len() == 3);
        // Kept: the step at 2 (bind s0). Socket s1 goes whole, with its bind to s0's
        // port, in one candidate.
        let c = candidates(&p, Some(2), 100);
        assert!(c
            .iter()
            .any(|q| q.steps.len() == 3 && q.steps.iter().all(|s| s.subject == "s0")));
    }
}
