//! Property tests of the case decoder: whatever text a case file holds (random,
//! or a shipped case mutated), decoding never panics and yields either a case or
//! errors that each point at a line and column (both from 1).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sockmatrix::case;

fn shipped_cases() -> Vec<String> {
    let files = case::discover(&[PathBuf::from("cases")]).unwrap();
    assert!(!files.is_empty(), "no shipped cases to mutate");
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

/// Decodes `text`; a panic fails the property (proptest catches it and shrinks).
fn decodes_to_a_case_or_positioned_errors(text: &str) -> Result<(), TestCaseError> {
    match case::load_str("prop/case", Path::new("cases/prop/case.yaml"), text) {
        Ok(_) => Ok(()),
        Err(e) => {
            prop_assert!(!e.errors.is_empty(), "an error without diagnostics");
            for d in &e.errors {
                prop_assert!(
                    d.pos.line > 0 && d.pos.col > 0,
                    "no position: {}:{}: {}",
                    d.pos.line,
                    d.pos.col,
                    d.message
                );
                prop_assert!(!d.message.is_empty());
            }
            Ok(())
        }
    }
}

/// One edit of a text: cut a span, insert a fragment, duplicate or drop a line,
/// or change one character.
#[derive(Debug, Clone)]
enum Edit {
    Cut(usize, usize),
    Insert(usize, String),
    DuplicateLine(usize),
    DropLine(usize),
    Replace(usize, char),
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        // YAML punctuation, indentation and the words of the case language.
        "[ \\-:\\[\\]{},#&*!|>'\"%@?\n\t]{1,6}",
        prop::sample::select(vec![
            "steps:",
            "expect:",
            "- socket: a",
            "  port: -1",
            "obs: bind.a",
            "eq: ok",
            "sysctls:",
            "kernel.panic: 1",
            "timeout: 0s",
            "count: 99999999999",
            "to: {addr: \"::\", port: a}",
            "requires: [{kernel: \">= 5.\"}]",
            "&x",
            "*x",
            "<<: *x",
            "!!binary",
            "~",
            "null",
            "1e400",
            "\u{FEFF}",
            "é",
            "\u{0}",
            "{}",
            "[]",
            "- {}",
            "- []",
            "steps: []",
            "steps: [{}]",
            "\n  - ",
            "\n    ",
            ": ",
            "- ",
            "---\n",
            "...\n",
        ])
        .prop_map(String::from),
        "\\PC{1,12}",
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = 0usize..4000;
    prop_oneof![
        (at.clone(), 1usize..80).prop_map(|(a, n)| Edit::Cut(a, n)),
        (at.clone(), fragment()).prop_map(|(a, f)| Edit::Insert(a, f)),
        at.clone().prop_map(Edit::DuplicateLine),
        at.clone().prop_map(Edit::DropLine),
        (at, any::<char>()).prop_map(|(a, c)| Edit::Replace(a, c)),
    ]
}

/// Applies edits at char positions taken modulo the text's length.
fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let n = chars.len().max(1);
        match e {
            Edit::Cut(a, len) => {
                let a = a % n;
                let b = (a + len).min(chars.len());
                if a < b {
                    chars.drain(a..b);
                }
            }
            Edit::Insert(a, f) => {
                let a = (a % n).min(chars.len());
                chars.splice(a..a, f.chars());
            }
            Edit::DuplicateLine(i) | Edit::DropLine(i) => {
                let text: String = chars.iter().collect();
                let mut lines: Vec<&str> = text.split('\n').collect();
                let i = i % lines.len();
                if matches!(e, Edit::DuplicateLine(_)) {
                    lines.insert(i, lines[i]);
                } else {
                    lines.remove(i);
                }
                chars = lines.join("\n").chars().collect();
            }
            Edit::Replace(a, c) => {
                if !chars.is_empty() {
                    chars[a % n] = *c;
                }
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics_the_decoder(text in "(\\PC|[ \\-:\\n])*") {
        decodes_to_a_case_or_positioned_errors(&text)?;
    }

    #[test]
    fn random_yaml_shaped_text_never_panics_the_decoder(
        parts in prop::collection::vec(fragment(), 0..40)
    ) {
        decodes_to_a_case_or_positioned_errors(&parts.concat())?;
    }

    #[test]
    fn mutated_shipped_cases_never_panic_the_decoder(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let cases = shipped_cases();
        let text = apply(&cases[which.index(cases.len())], &edits);
        decodes_to_a_case_or_positioned_errors(&text)?;
    }
}
