//! Observation values: when two are the same, how one is shown, and the key that
//! groups equal ones; the judge, diffs, reports and history all ask here.

use serde_json::Value;

/// Numbers compare by value (3 == 3.0); everything else exactly.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A value as people read it: strings bare (`EADDRINUSE`), the rest as JSON.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A text that is equal for two values exactly when [`same`] holds (absent is its
/// own group), for counting distinct values.
pub fn group_key(v: Option<&Value>) -> String {
    match v {
        None => "\u{0}none".into(),
        Some(v) => match v.as_f64() {
            Some(n) => format!("{n}"),
            None => v.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_the_same_by_value_and_nothing_else_is_loose() {
        assert!(same(&json!(3), &json!(3.0)));
        assert!(same(&json!("EADDRINUSE"), &json!("EADDRINUSE")));
        assert!(!same(&json!(3), &json!(4)));
        assert!(!same(&json!(3), &json!("3")));
        assert!(!same(&json!(true), &json!(1)));
        assert!(!same(&json!(null), &json!(0)));
    }

    #[test]
    fn strings_show_bare_and_the_rest_as_json() {
        assert_eq!(show(&json!("ok")), "ok");
        assert_eq!(show(&json!(3)), "3");
        assert_eq!(show(&json!(0.5)), "0.5");
        assert_eq!(show(&json!(true)), "true");
        assert_eq!(show(&json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(show(&json!("with \"quote\"")), "with \"quote\"");
    }

    #[test]
    fn group_keys_agree_with_same() {
        let values = [
            json!(3),
            json!(3.0),
            json!(4),
            json!("3"),
            json!("ok"),
            json!(true),
            json!(null),
            json!([1, 2]),
        ];
        for a in &values {
            for b in &values {
                assert_eq!(
                    group_key(Some(a)) == group_key(Some(b)),
                    same(a, b),
                    "{a} vs {b}"
                );
            }
            assert_ne!(group_key(Some(a)), group_key(None), "{a} vs absent");
        }
    }
}
