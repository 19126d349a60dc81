//! Every comparison the source-mode test makes, counted per area and field, with failures kept
//! rather than thrown, so one run shows every broken field at once and the minimum number of
//! checks per field can be asserted.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Every comparison, counted per area and field; failures kept for one report at the end.
#[derive(Debug, Default)]
pub struct Tally {
    checks: BTreeMap<(String, String), usize>,
    failures: Vec<String>,
}

/// Whether two numbers are the same reading (only the order of sums may differ).
pub fn same_number(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12
}

impl Tally {
    pub fn count(&mut self, area: &str, field: &str, ok: bool, detail: impl FnOnce() -> String) {
        *self.checks.entry((area.to_owned(), field.to_owned())).or_default() += 1;
        if !ok {
            self.failures.push(format!("{area} {field}: {}", detail()));
        }
    }

    /// Counts a check of `field` made as part of another (a part of a block compared whole).
    pub fn seen(&mut self, area: &str, field: &str) {
        *self.checks.entry((area.to_owned(), field.to_owned())).or_default() += 1;
    }

    /// A failure that is not about one field's value (a missing bucket, an unknown field).
    pub fn fail(&mut self, area: &str, what: String) {
        self.failures.push(format!("{area}: {what}"));
    }

    /// A JSON number (or `null`) against the expected value (or `None` for `null`).
    pub fn num(&mut self, area: &str, field: &str, at: &str, got: &Value, want: Option<f64>) {
        let ok = match (got.as_f64(), want) {
            (Some(a), Some(b)) => same_number(a, b),
            (None, None) => got.is_null(),
            _ => false,
        };
        self.count(area, field, ok, || format!("{at}: zai-dash {got}, expected {want:?}"));
    }

    /// Any JSON value against the expected one: numbers as in [`Tally::num`], the rest exactly.
    pub fn value(&mut self, area: &str, field: &str, at: &str, got: &Value, want: &Value) {
        let ok = same_json(got, want);
        self.count(area, field, ok, || match (got.as_object(), want.as_object()) {
            (Some(g), Some(w)) => {
                let keys: BTreeSet<&String> = g.keys().chain(w.keys()).collect();
                let diff: Vec<String> = keys
                    .into_iter()
                    .filter(|k| !same_json(g.get(*k).unwrap_or(&Value::Null), w.get(*k).unwrap_or(&Value::Null)))
                    .map(|k| {
                        format!("{k}: {} vs {}", g.get(k).unwrap_or(&Value::Null), w.get(k).unwrap_or(&Value::Null))
                    })
                    .collect();
                format!("{at}: zai-dash differs from the expected in {}", diff.join(", "))
            }
            _ => format!("{at}: zai-dash {got}, expected {want}"),
        });
    }

    /// Checks made for `field` in `area`.
    pub fn checks(&self, area: &str, field: &str) -> usize {
        self.checks.get(&(area.to_owned(), field.to_owned())).copied().unwrap_or(0)
    }

    /// Fails unless `field` was compared at least `min` times in `area`.
    pub fn require(&mut self, area: &str, field: &str, min: usize) {
        let n = self.checks(area, field);
        if n < min {
            self.failures.push(format!("{area} {field}: {n} checks, at least {min} expected"));
        }
    }

    /// Prints the counts and panics with every failure.
    pub fn finish(self) {
        let mut by_area: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for ((area, _), n) in &self.checks {
            let e = by_area.entry(area).or_default();
            e.0 += 1;
            e.1 += n;
        }
        for (area, (fields, n)) in by_area {
            println!("{area}: {n} checks over {fields} fields");
        }
        let shown: Vec<&String> = self.failures.iter().take(60).collect();
        assert!(
            self.failures.is_empty(),
            "{} failed checks (first {}):\n{}",
            self.failures.len(),
            shown.len(),
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
}

fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => same_number(x.as_f64().unwrap(), y.as_f64().unwrap()),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}
