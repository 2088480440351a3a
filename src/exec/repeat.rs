//! Runs a `repeat` block: expands its template for every index before anything
//! runs (so a timing measures the steps, not the expansion), runs the steps index
//! by index, and aggregates what they observed.

use serde_json::Value;

use crate::case::repeat::{indexed, unindexed, Repeat};
use crate::case::Step;

use super::aggregate::Aggregate;
use super::{Executor, StepFailure, StepResult};

/// Every step of the block with its index filled in, in the order they run. The
/// template is any step: its strings holding `[i]` get the index, and strings that
/// are the address range's first address get the index's address.
pub(super) fn expand(block: &Repeat) -> Result<Vec<(u32, Step)>, String> {
    let templates = block
        .steps
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot expand the block: {e}"))?;
    let from = block.addrs.map(|r| r.from.to_string());
    let mut out = Vec::with_capacity(templates.len() * block.count as usize);
    for n in 0..block.count {
        let index = block.first + n;
        let addr = block.addrs.map(|r| r.nth(n, block.count).to_string());
        for template in &templates {
            let mut value = template.clone();
            substitute(&mut value, index, from.as_deref().zip(addr.as_deref()));
            let step = serde_json::from_value(value)
                .map_err(|e| format!("cannot expand index {index}: {e}"))?;
            out.push((index, step));
        }
    }
    Ok(out)
}

fn substitute(value: &mut Value, index: u32, addr: Option<(&str, &str)>) {
    match value {
        Value::String(s) => {
            if s.contains(crate::case::repeat::INDEX) {
                *s = indexed(s, index);
            } else if let Some((from, to)) = addr.filter(|(from, _)| s == from) {
                debug_assert_eq!(s, from);
                *s = to.to_string();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, index, addr)),
        Value::Object(map) => map.values_mut().for_each(|v| substitute(v, index, addr)),
        _ => {}
    }
}

impl Executor {
    /// The block's observations: the aggregate of each repeated key (see
    /// `aggregate`), and with `each` every index's own too.
    pub(crate) fn repeat(&mut self, block: &Repeat, name: &str) -> StepResult {
        let steps = expand(block).map_err(|why| StepFailure::new(name, why))?;
        let mut aggregate = Aggregate::default();
        let mut each = Vec::new();
        for (index, step) in &steps {
            // A step that could not do what it says ends the case at its own line,
            // naming the index.
            let observed = self.run_step(step).map_err(|failure| StepFailure {
                line: Some(failure.line.unwrap_or(step.line)),
                message: format!("index {index}: {}", failure.message),
            })?;
            for (key, value) in observed {
                aggregate.add(unindexed(&key, *index), *index, &value);
                if block.each {
                    each.push((key, value));
                }
            }
        }
        let mut out = aggregate.observations();
        out.extend(each);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Action;

    #[test]
    fn expansion_fills_index_and_address() {
        let case = crate::case::load_str(
            "t",
            std::path::Path::new("cases/t.yaml"),
            "summary: t
steps:
  - repeat: 6
    addrs: {from: \"2401:dead::1\", count: 3}
    steps:
      - socket: \"l[i]\"
        family: ipv6
      - bind: \"l[i]\"
        addr: $addr
        port: 443
        time: true
",
        )
        .unwrap();
        let Action::Repeat(block) = &case.plan.steps[0].action else {
            panic!("{:?}", case.plan.steps);
        };
        let steps = expand(block).unwrap();
        assert_eq!(steps.len(), 12);
        let (index, step) = &steps[11];
        assert_eq!(*index, 5);
        assert_eq!(step.key, "bind.l[5]");
        assert!(step.time);
        let json = serde_json::to_string(&step.action).unwrap();
        assert!(json.contains("\"l[5]\""), "{json}");
        assert!(json.contains("\"2401:dead::3\""), "{json}");
        assert!(!json.contains("[i]"), "{json}");
        let (_, first) = &steps[1];
        let json = serde_json::to_string(&first.action).unwrap();
        assert!(json.contains("\"2401:dead::1\""), "{json}");
    }
}
