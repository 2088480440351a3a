//! The one place that knows the YAML crate: parses text into nodes that remember
//! their line and column, so every later error can point into the file.

use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in a YAML file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A scalar keeps its text; `quoted` scalars are always strings.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys are scalars in file order; duplicates are rejected by the parser.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl Node {
    /// The scalar's text, or None for a sequence or mapping.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, quoted: false } if is_null_text(text))
    }

    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "nothing (null)",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// Plain-YAML reading of the node as JSON (for config files that need no spans).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Scalar { text, quoted: true } => Value::String(text.clone()),
            Kind::Scalar {
                text,
                quoted: false,
            } => plain_scalar_json(text),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar().unwrap_or_default().to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn plain_scalar_json(text: &str) -> serde_json::Value {
    use serde_json::Value;
    if is_null_text(text) {
        return Value::Null;
    }
    match text {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = text.parse::<f64>() {
        if f.is_finite() {
            return Value::from(f);
        }
    }
    Value::String(text.to_string())
}

/// Parses one YAML document. An empty file yields a null scalar at 1:1.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        pos: pos_of(e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        kind: Kind::Scalar {
            text: String::new(),
            quoted: false,
        },
    }))
}

/// Deserializes a YAML config file into `T` via serde, with the field path in errors.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    let node = parse(text)?;
    let value = node.to_json();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("at `{path}`: {}", e.into_inner())
    })
}

fn pos_of(m: &Marker) -> Pos {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

/// Builds the node tree from parser events.
#[derive(Default)]
struct Builder {
    stack: Vec<Node>,
    /// For each open mapping: the key waiting for its value.
    pending_keys: Vec<Option<Node>>,
    root: Option<Node>,
    error: Option<SyntaxError>,
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match &mut parent.kind {
            Kind::Seq(items) => items.push(node),
            Kind::Map(entries) => {
                let slot = self
                    .pending_keys
                    .last_mut()
                    .expect("a mapping has a key slot");
                match slot.take() {
                    None => {
                        if node.scalar().is_none() {
                            record(
                                &mut self.error,
                                node.pos,
                                "mapping keys must be plain scalars",
                            );
                        }
                        if entries.iter().any(|(k, _)| k.scalar() == node.scalar()) {
                            let key = node.scalar().unwrap_or_default();
                            record(&mut self.error, node.pos, &format!("duplicate key `{key}`"));
                        }
                        *slot = Some(node);
                    }
                    Some(key) => entries.push((key, node)),
                }
            }
            Kind::Scalar { .. } => unreachable!("scalars are never containers"),
        }
    }
}

/// Keeps the first structural error: later ones are usually its echoes.
fn record(error: &mut Option<SyntaxError>, pos: Pos, message: &str) {
    if error.is_none() {
        *error = Some(SyntaxError {
            pos,
            message: message.to_string(),
        });
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = pos_of(&mark);
        match ev {
            Event::Scalar(text, style, _, _) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push_value(Node {
                    pos,
                    kind: Kind::Scalar { text, quoted },
                });
            }
            Event::SequenceStart(..) => self.stack.push(Node {
                pos,
                kind: Kind::Seq(Vec::new()),
            }),
            Event::MappingStart(..) => {
                self.stack.push(Node {
                    pos,
                    kind: Kind::Map(Vec::new()),
                });
                self.pending_keys.push(None);
            }
            Event::SequenceEnd => {
                let node = self.stack.pop().expect("balanced sequence events");
                self.push_value(node);
            }
            Event::MappingEnd => {
                self.pending_keys.pop();
                let node = self.stack.pop().expect("balanced mapping events");
                self.push_value(node);
            }
            Event::Alias(_) => record(
                &mut self.error,
                pos,
                "YAML aliases are not supported in cases",
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let node = parse("a: 1\nb:\n  - x\n").unwrap();
        let Kind::Map(entries) = &node.kind else {
            panic!()
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, col: 4 });
        let Kind::Seq(items) = &entries[1].1.kind else {
            panic!()
        };
        assert_eq!(items[0].pos, Pos { line: 3, col: 5 });
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.pos.line, 2);
        assert!(err.message.contains("duplicate key `a`"));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err}");
    }

    #[test]
    fn quoted_scalars_stay_strings_in_json() {
        let node = parse("a: '1'\nb: 1\nc: ~\n").unwrap();
        assert_eq!(
            node.to_json(),
            serde_json::json!({"a": "1", "b": 1, "c": null})
        );
    }
}
