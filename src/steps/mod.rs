//! The steps of the case language, one module each, listed once in `registry!` at
//! the bottom: a step's fields and their checks, the observations it yields, how it
//! runs, and its row of the step table in cases/README.md all live in its module.
//! What a step keeps for later steps lives there too, under a type of its own:
//! `scope.kept` while a case is decoded, `exec.kept` while it runs (dropped when the
//! case ends, before its servers stop, so a filter or program never outlives it).
//!
//! The registry is a declarative macro that generates the `Action` enum (one variant
//! per step, holding the step's own struct) and its dispatch. An enum rather than
//! `Box<dyn Step>` keeps the plan a plain value: serde derives its JSON for the guest
//! agent without a type-tag registry, and `Clone`/`PartialEq`/`Debug` stay derived.
//!
//! A step also says whether `sockmatrix explore` draws it (`Step::EXPLORE`) and how
//! (`Step::generate`), so a new step is explored without code outside its module.

use serde::{Deserialize, Serialize};

use crate::case::fields::{Diags, Fields};
use crate::case::scope::Scope;
use crate::exec::{Executor, StepCtx, StepResult};
use crate::yaml::Node;

/// One row of the step table in cases/README.md (Markdown, `|` escaped as `\|`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doc {
    /// How the step starts in YAML, e.g. `socket: NAME`.
    pub syntax: &'static str,
    /// Its fields, with defaults in parentheses.
    pub fields: &'static str,
    /// The observations it yields (key = `<verb>.<subject>` or `id`) and what it does.
    pub observes: &'static str,
}

/// Whether `sockmatrix explore` draws a step into its random programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Explore {
    /// Drawn with this relative weight (socket 5, bind 8, ...) through
    /// `Step::generate`.
    Weight(u32),
    /// Never drawn, and why (shown by the unit test that asks every step).
    No(&'static str),
}

/// Everything about one step. The module holding the type is the verb (`socket.rs`
/// holds `Socket`); the registry line ties them together.
pub trait Step: Sized {
    /// Its row of the step table.
    const DOC: Doc;
    /// Whether the default observation key is `<verb>.<subject>`; a step whose
    /// subject is not a name (`sleep: 10ms`) is keyed by its verb alone.
    const KEYED_BY_SUBJECT: bool = true;
    /// Whether the explorer draws this step. The default gives no reason, which a
    /// unit test (explore::grammar) rejects: each step says `Weight(N)` and writes
    /// `generate`, or says why not with `No("...")`.
    const EXPLORE: Explore = Explore::No("");

    /// Reads the step's fields. `subject` is the value of the verb's own key; every
    /// other key must be asked for through `f` (unknown ones are reported). Report
    /// every problem to `diags` and return None when the step cannot be built.
    fn decode(subject: &Node, f: &mut Fields, scope: &Scope, diags: &mut Diags) -> Option<Self>;

    /// Every observation key the step will produce under `key`, known before
    /// anything runs (expectations are checked against them).
    fn observations(&self, key: &str, scope: &Scope) -> Vec<String>;

    /// What the step declares for later steps (a socket, a group, a filter).
    fn declare(&self, _line: usize, _scope: &mut Scope) {}

    /// Runs the step in the case's namespace: its observations, or why it could not
    /// do what it says.
    fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult;

    /// A random step of this kind for the program `g` holds so far, as case-file
    /// fields (the case decoder then checks it like any case); None when none fits
    /// now (no socket to bind). Only asked when `EXPLORE` is a weight. Host only:
    /// the guest agent is built without the explorer.
    #[cfg(feature = "runner")]
    fn generate(_g: &mut Gen) -> Option<Draft> {
        None
    }
}

#[cfg(feature = "runner")]
use crate::explore::grammar::{Draft, Gen, Val};

/// The verbs, the `Action` enum and its dispatch, from one list of `verb => Type`.
macro_rules! registry {
    ($($verb:ident => $Type:ident),* $(,)?) => {
        $(mod $verb;)*

        /// What one step does, with its fields; serialized for the guest agent.
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        #[serde(rename_all = "snake_case", tag = "action")]
        pub enum Action {
            $($Type($verb::$Type),)*
        }

        impl Action {
            /// Every verb, in the registry's order.
            pub const VERBS: &'static [&'static str] = &[$(stringify!($verb)),*];

            /// The verb as written in YAML.
            pub fn verb(&self) -> &'static str {
                match self {
                    $(Self::$Type(_) => stringify!($verb),)*
                }
            }

            /// Every step's row of the step table, in the registry's order.
            pub fn docs() -> Vec<(&'static str, Doc)> {
                vec![$((stringify!($verb), <$verb::$Type as Step>::DOC)),*]
            }

            /// Every step's verb, `Step::EXPLORE` and `Step::generate`, in the
            /// registry's order: what the explorer draws from.
            #[cfg(feature = "runner")]
            pub fn explore() -> Vec<(&'static str, Explore, fn(&mut Gen) -> Option<Draft>)> {
                vec![$((
                    stringify!($verb),
                    <$verb::$Type as Step>::EXPLORE,
                    <$verb::$Type as Step>::generate as fn(&mut Gen) -> Option<Draft>,
                )),*]
            }

            /// See `Step::KEYED_BY_SUBJECT`.
            pub fn keyed_by_subject(verb: &str) -> bool {
                match verb {
                    $(stringify!($verb) => <$verb::$Type as Step>::KEYED_BY_SUBJECT,)*
                    _ => true,
                }
            }

            /// Decodes a step of a registered verb; None if the verb is not one.
            pub(crate) fn decode(
                verb: &str,
                subject: &Node,
                f: &mut Fields,
                scope: &Scope,
                diags: &mut Diags,
            ) -> Option<Option<Self>> {
                Some(match verb {
                    $(stringify!($verb) =>
                        <$verb::$Type as Step>::decode(subject, f, scope, diags).map(Self::$Type),)*
                    _ => return None,
                })
            }

            pub(crate) fn observations(&self, key: &str, scope: &Scope) -> Vec<String> {
                match self {
                    $(Self::$Type(s) => s.observations(key, scope),)*
                }
            }

            pub(crate) fn declare(&self, line: usize, scope: &mut Scope) {
                match self {
                    $(Self::$Type(s) => s.declare(line, scope),)*
                }
            }

            pub(crate) fn run(&self, exec: &mut Executor, step: &StepCtx) -> StepResult {
                match self {
                    $(Self::$Type(s) => s.run(exec, step),)*
                }
            }
        }
    };
}

// The registry: one line per step, in the order of the step table.
registry! {
    socket => Socket,
    bind => Bind,
    listen => Listen,
    connect => Connect,
    accept => Accept,
    close => Close,
    shutdown => Shutdown,
    serve => Serve,
    clients => Clients,
    wait => Wait,
    account => Account,
    queue => Queue,
    wait_queued => WaitQueued,
    wait_accepted => WaitAccepted,
    datagrams => Datagrams,
    tally => Tally,
    sleep => Sleep,
    attach_bpf => AttachBpf,
    attach_ebpf => AttachEbpf,
    detach_bpf => DetachBpf,
    local_port => LocalPort,
    bind_pairs => BindPairs,
    drop => Drop,
    release => Release,
    requests => Requests,
    send => Send,
    attach_migrate => AttachMigrate,
    migrations => Migrations,
    link => Link,
    sk_lookup => SkLookup,
    repeat => Repeat,
    syn_data => SynData,
}

/// The step table of cases/README.md, generated from the registry.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| step | fields | observations (key = `<action>.<subject>` or `id`) |\n|---|---|---|\n",
    );
    for (_, doc) in Action::docs() {
        let fields = if doc.fields.is_empty() {
            " ".to_string()
        } else {
            format!(" {} ", doc.fields)
        };
        out.push_str(&format!(
            "| `{}` |{fields}| {} |\n",
            doc.syntax, doc.observes
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cases/README.md's step table is the registry's: a step added, removed or
    /// documented differently without the README (or the other way round) fails here.
    #[test]
    fn readme_step_table_is_the_registrys() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cases/README.md"),
        )
        .unwrap();
        let start = readme
            .find("| step | fields |")
            .expect("cases/README.md has a step table");
        let end = readme[start..]
            .find("\n\n")
            .map_or(readme.len(), |e| start + e + 1);
        let generated = markdown_table();
        if readme[start..end] == generated {
            return;
        }
        // `SOCKMATRIX_BLESS=1 cargo test --lib readme_step_table` writes the table, so
        // a new step never needs the README edited by hand.
        if std::env::var_os("SOCKMATRIX_BLESS").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cases/README.md");
            let updated = format!("{}{generated}{}", &readme[..start], &readme[end..]);
            std::fs::write(path, updated).unwrap();
            return;
        }
        panic!(
            "cases/README.md's step table differs from the registry (src/steps); \
             run `SOCKMATRIX_BLESS=1 cargo test --lib readme_step_table` or replace it with:\n{generated}"
        );
    }

    /// The JSON tag serde derives from a type's name must be the verb of its module.
    #[test]
    fn every_verb_is_its_types_serde_tag() {
        for verb in Action::VERBS {
            let err = serde_json::from_value::<Action>(serde_json::json!({ "action": verb }))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!err.contains("unknown variant"), "{verb}: {err}");
        }
        let err = serde_json::from_value::<Action>(serde_json::json!({"action": "nope"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant"), "{err}");
    }
}
