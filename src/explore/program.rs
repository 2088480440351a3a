//! A generated program: sysctls and steps as YAML fields, so that it is written,
//! shrunk and checked exactly like a case file (the case decoder is the validator).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::case::{self, Case, FileErrors};

/// A YAML value of a step field: a scalar (written quoted when it must be), a flow
/// list of scalars, or a flow mapping of scalars.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Val {
    Scalar(String),
    Seq(Vec<String>),
    Map(Vec<(String, String)>),
}

impl Val {
    pub fn s(text: impl ToString) -> Val {
        Val::Scalar(text.to_string())
    }

    fn write(&self, out: &mut String) {
        match self {
            Val::Scalar(s) => out.push_str(&scalar(s)),
            Val::Seq(items) => {
                let items: Vec<String> = items.iter().map(|i| scalar(i)).collect();
                out.push_str(&format!("[{}]", items.join(", ")));
            }
            Val::Map(pairs) => {
                let pairs: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", scalar(v)))
                    .collect();
                out.push_str(&format!("{{{}}}", pairs.join(", ")));
            }
        }
    }
}

/// A plain YAML scalar where that reads back as the same text, else double-quoted
/// (IPv6 addresses, anything with `:` or YAML punctuation).
pub fn scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
        && !text.starts_with(['-', '.']);
    if plain {
        text.to_string()
    } else {
        format!("{text:?}")
    }
}

/// One step: `- <verb>: <subject>` and its fields, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    pub verb: String,
    pub subject: String,
    pub fields: Vec<(String, Val)>,
}

impl Draft {
    pub fn new(verb: &str, subject: &str) -> Draft {
        Draft {
            verb: verb.into(),
            subject: subject.into(),
            fields: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: Val) -> Draft {
        self.fields.push((key.into(), value));
        self
    }

    pub fn field(&self, key: &str) -> Option<&Val> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A program: what a case file holds besides its summary and expectations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    pub sysctls: Vec<(String, String)>,
    pub steps: Vec<Draft>,
}

/// Every program gets this budget: the generated steps take milliseconds, a hang
/// must not hold a batch up for the default 20 s.
pub const TIMEOUT: &str = "5s";

impl Program {
    /// How big it is, for shrinking: steps weigh most, then fields and sysctls.
    pub fn size(&self) -> usize {
        self.steps.len() * 100
            + self.steps.iter().map(|s| s.fields.len()).sum::<usize>() * 10
            + self.sysctls.len() * 10
    }

    /// Whether a step uses IPv6 (the case then requires it).
    fn uses_ipv6(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.field("family") == Some(&Val::s("ipv6")))
    }

    /// The steps (and sysctls) as case-file YAML, without summary or expectations.
    pub fn body_yaml(&self) -> String {
        let mut out = String::new();
        let requires = if self.uses_ipv6() {
            "[root, ipv6]"
        } else {
            "[root]"
        };
        out.push_str(&format!("requires: {requires}\ntimeout: {TIMEOUT}\n"));
        if !self.sysctls.is_empty() {
            out.push_str("sysctls:\n");
            for (name, value) in &self.sysctls {
                out.push_str(&format!("  {name}: {}\n", scalar(value)));
            }
        }
        out.push_str("steps:\n");
        for step in &self.steps {
            out.push_str(&format!("  - {}: {}\n", step.verb, scalar(&step.subject)));
            for (key, value) in &step.fields {
                out.push_str(&format!("    {key}: "));
                value.write(&mut out);
                out.push('\n');
            }
        }
        out
    }

    /// The whole case file of this program with the given summary (and extra
    /// top-level YAML, e.g. `expect:`).
    pub fn case_yaml(&self, summary: &str, extra: &str) -> String {
        format!("summary: {}\n{}{extra}", scalar(summary), self.body_yaml())
    }

    /// The program as a case, through the case decoder (a shrunk program that
    /// refers to a removed socket is an error here, not at run time).
    pub fn to_case(&self, id: &str) -> Result<Case, FileErrors> {
        let file = Path::new("explore").join(format!("{id}.yaml"));
        case::load_str(id, &file, &self.case_yaml("generated", ""))
    }

    /// Which step is on `line` of the program's case file (a timeout or an error
    /// names the line of the step it stopped in).
    pub fn step_at_line(&self, line: usize) -> Option<usize> {
        let case = self.to_case("lines").ok()?;
        case.plan.steps.iter().position(|s| s.line == line)
    }

    /// The same program with sockets renamed `a`, `b`, ... in order of creation,
    /// so that two findings of one difference read alike.
    pub fn canonical(&self) -> Program {
        let mut names: Vec<(String, String)> = Vec::new();
        for step in &self.steps {
            if step.verb == "socket" && !names.iter().any(|(old, _)| *old == step.subject) {
                let new = ((b'a' + names.len() as u8 % 26) as char).to_string();
                let new = if names.len() >= 26 {
                    format!("{new}{}", names.len() / 26)
                } else {
                    new
                };
                names.push((step.subject.clone(), new));
            }
        }
        let rename = |s: &str| {
            names
                .iter()
                .find(|(old, _)| old == s)
                .map_or_else(|| s.to_string(), |(_, new)| new.clone())
        };
        let steps = self
            .steps
            .iter()
            .map(|step| Draft {
                verb: step.verb.clone(),
                subject: rename(&step.subject),
                fields: step
                    .fields
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Val::Scalar(s) => Val::Scalar(rename(s)),
                            Val::Map(pairs) => Val::Map(
                                pairs
                                    .iter()
                                    .map(|(pk, pv)| (pk.clone(), rename(pv)))
                                    .collect(),
                            ),
                            other => other.clone(),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            })
            .collect();
        Program {
            sysctls: self.sysctls.clone(),
            steps,
        }
    }

    /// The observation key prefix of step `i`: its `id`, else `<verb>.<subject>`.
    pub fn step_key(&self, i: usize) -> String {
        let step = &self.steps[i];
        match step.field("id") {
            Some(Val::Scalar(id)) => id.clone(),
            _ => format!("{}.{}", step.verb, step.subject),
        }
    }

    /// Gives every step whose observations would repeat an earlier step's an `id`
    /// of its own (`connect3`: verb and position, no socket name to rename).
    pub fn with_unique_keys(mut self) -> Program {
        let mut seen: Vec<String> = Vec::new();
        for i in 0..self.steps.len() {
            let key = self.step_key(i);
            if seen.contains(&key) {
                let id = format!("{}{i}", self.steps[i].verb);
                self.steps[i]
                    .fields
                    .push(("id".into(), Val::Scalar(id.clone())));
                seen.push(id);
            } else {
                seen.push(key);
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Program {
        Program {
            sysctls: vec![("net.ipv4.ip_autobind_reuse".into(), "1".into())],
            steps: vec![
                Draft::new("socket", "s3")
                    .with("family", Val::s("ipv6"))
                    .with(
                        "local_port_range",
                        Val::Seq(vec!["5000".into(), "5001".into()]),
                    ),
                Draft::new("bind", "s3").with("addr", Val::s("::ffff:0.0.0.0")),
                Draft::new("socket", "s7"),
                Draft::new("connect", "s7").with(
                    "to",
                    Val::Map(vec![
                        ("addr".into(), "127.0.0.1".into()),
                        ("port".into(), "s3".into()),
                    ]),
                ),
            ],
        }
    }

    #[test]
    fn a_program_is_a_valid_case_file() {
        let case = sample().to_case("p1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(case.plan.steps.len(), 4);
        assert_eq!(case.plan.sysctls.len(), 1);
        assert_eq!(case.plan.timeout_ms, 5_000);
    }

    #[test]
    fn a_step_on_a_missing_socket_is_rejected_by_the_decoder() {
        let mut p = sample();
        p.steps.remove(0);
        assert!(p.to_case("p1").is_err());
    }

    #[test]
    fn canonical_names_follow_creation_order() {
        let c = sample().canonical();
        assert_eq!(c.steps[0].subject, "a");
        assert_eq!(c.steps[2].subject, "b");
        assert_eq!(
            c.steps[3].field("to"),
            Some(&Val::Map(vec![
                ("addr".into(), "127.0.0.1".into()),
                ("port".into(), "a".into())
            ]))
        );
        c.to_case("p1").unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn scalars_that_yaml_would_misread_are_quoted() {
        assert_eq!(scalar("::"), "\"::\"");
        assert_eq!(scalar("127.0.0.1"), "127.0.0.1");
        assert_eq!(scalar("-1"), "\"-1\"");
        assert_eq!(scalar("5000 5001"), "\"5000 5001\"");
    }
}
