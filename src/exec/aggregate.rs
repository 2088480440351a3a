//! Aggregated observations of repeated steps, so that 24,000 binds come back as a
//! few numbers: per key, how many were `ok`, each other value (an errno) with its
//! count, the first failure's index; numbers as sum, min and max; timings summed.

use std::collections::BTreeMap;

use serde_json::{json, Value};

#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    /// Other text values (errnos, `none`) and how many times each came.
    others: BTreeMap<String, u64>,
    /// The index of the first errno.
    first_failure: Option<u32>,
    texts: u64,
    numbers: u64,
    sum: f64,
    min: f64,
    max: f64,
}

/// Observations of one repeated block, keyed without their index (`bind.l`).
#[derive(Debug, Default)]
pub struct Aggregate {
    tallies: BTreeMap<String, Tally>,
}

/// Timings (`time.*`) add up: the block's time in that step.
use crate::timing::is_timing;

impl Aggregate {
    pub fn add(&mut self, key: String, index: u32, value: &Value) {
        let t = self.tallies.entry(key).or_default();
        match value {
            Value::String(s) if s == "ok" => {
                t.ok += 1;
                t.texts += 1;
            }
            Value::String(s) => {
                *t.others.entry(s.clone()).or_default() += 1;
                t.texts += 1;
                if crate::errno::looks_like(s) && t.first_failure.is_none() {
                    t.first_failure = Some(index);
                }
            }
            Value::Number(n) => {
                let n = n.as_f64().unwrap_or_default();
                if t.numbers == 0 {
                    (t.min, t.max) = (n, n);
                }
                t.numbers += 1;
                t.sum += n;
                t.min = t.min.min(n);
                t.max = t.max.max(n);
            }
            other => {
                *t.others.entry(other.to_string()).or_default() += 1;
                t.texts += 1;
            }
        }
    }

    /// `K.ok`, `K.<value>` per other value, `K.first_failure` (index or `none`) for
    /// text observations; `K.sum`, `K.min`, `K.max` for numbers; a timing's total
    /// under its own key.
    pub fn observations(self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (key, t) in self.tallies {
            if is_timing(&key) {
                out.push((key, json!(t.sum as u64)));
                continue;
            }
            if t.texts > 0 {
                out.push((format!("{key}.ok"), json!(t.ok)));
                for (value, n) in &t.others {
                    out.push((format!("{key}.{value}"), json!(n)));
                }
                let first = t.first_failure.map_or_else(|| json!("none"), |i| json!(i));
                out.push((format!("{key}.first_failure"), first));
            }
            if t.numbers > 0 {
                let whole = |x: f64| {
                    if x.fract() == 0.0 {
                        json!(x as i64)
                    } else {
                        json!(x)
                    }
                };
                out.push((format!("{key}.sum"), whole(t.sum)));
                out.push((format!("{key}.min"), whole(t.min)));
                out.push((format!("{key}.max"), whole(t.max)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ok_errnos_and_the_first_failure() {
        let mut a = Aggregate::default();
        for i in 0..10 {
            let v = if i == 4 || i == 7 {
                json!("EADDRINUSE")
            } else if i == 9 {
                json!("EMFILE")
            } else {
                json!("ok")
            };
            a.add("bind.l".into(), i, &v);
            a.add("time.bind.l".into(), i, &json!(3));
            a.add("accept.l".into(), i, &json!(i));
        }
        let obs: BTreeMap<String, Value> = a.observations().into_iter().collect();
        assert_eq!(obs["bind.l.ok"], json!(7));
        assert_eq!(obs["bind.l.EADDRINUSE"], json!(2));
        assert_eq!(obs["bind.l.EMFILE"], json!(1));
        assert_eq!(obs["bind.l.first_failure"], json!(4));
        assert_eq!(obs["time.bind.l"], json!(30));
        assert_eq!(obs["accept.l.sum"], json!(45));
        assert_eq!(obs["accept.l.min"], json!(0));
        assert_eq!(obs["accept.l.max"], json!(9));
        assert!(!obs.contains_key("accept.l.ok"));
    }

    #[test]
    fn all_ok_has_no_failure() {
        let mut a = Aggregate::default();
        a.add("listen.l".into(), 0, &json!("ok"));
        let obs: BTreeMap<String, Value> = a.observations().into_iter().collect();
        assert_eq!(obs["listen.l.first_failure"], json!("none"));
        assert_eq!(obs.len(), 2);
    }
}
