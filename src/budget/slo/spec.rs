//! The `slos:` list of the rules file (`ALERT_RULES`), read field by field so each problem is
//! one sentence naming the objective and the field, as for rules (`alerts::rules`, which hands
//! the list here after its file-size and nesting limits), and the start-up check that the
//! store keeps a whole period.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_norway::{Mapping, Value};

use super::{BURN_WINDOWS, DAY, Indicator, SloSpec, SloVariant, error_budget_of, span_label};
use crate::setting::{ConfigError, bad, duration_ms, parse_duration};
use crate::variant::is_valid_variant;

/// Bucket bounds of `zai_proxy_request_duration_seconds` (zai-proxy's, kept equal to the
/// built-in proxy's by a test): the only latency thresholds whose good requests are counted
/// exactly.
pub const DURATION_BOUNDS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Bucket bounds of `zai_proxy_time_to_first_token_seconds`.
pub const TTFT_BOUNDS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0];
/// The period when none is given: four whole weeks, so every period holds each weekday alike.
pub const DEFAULT_PERIOD_MS: i64 = 28 * DAY;
/// Longest period: every range a rule reads is at most 30 days (a tick would otherwise ask
/// the store, or the engine, for more than it keeps).
const MAX_PERIOD_MS: i64 = 30 * DAY;
/// Fields an objective may have.
const FIELDS: [&str; 6] = ["name", "variant", "indicator", "threshold", "objective", "period"];

/// Reads and checks the `slos:` list (`list` is its value).
pub fn parse_slos(list: &Value, source: &str) -> Result<Vec<SloSpec>, ConfigError> {
    let Some(items) = list.as_sequence() else {
        return Err(bad(format!("ALERT_RULES {source} has a `slos:` that is not a list of objectives.")));
    };
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let slo = parse_one(item, i)?;
        if !names.insert(slo.name.clone()) {
            return Err(bad(format!("ALERT_RULES slo {:?}: field `name` is used by an earlier slo.", slo.name)));
        }
        out.push(slo);
    }
    Ok(out)
}

/// How long each table keeps its rows (`RETENTION_5S`, `RETENTION_1M`, `RETENTION_10M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `RETENTION_5S`.
    pub retention_5s: Duration,
    /// `RETENTION_1M`.
    pub retention_1m: Duration,
    /// `RETENTION_10M`.
    pub retention_10m: Duration,
}

/// Refuses an objective whose period is longer than the store keeps any rows: its SLI would
/// quietly cover less than it says. (Source mode has no retention of its own to check.)
pub fn check_retention(slos: &[SloSpec], kept: &Retention) -> Result<(), ConfigError> {
    let (setting, longest) = [
        ("RETENTION_5S", kept.retention_5s),
        ("RETENTION_1M", kept.retention_1m),
        ("RETENTION_10M", kept.retention_10m),
    ]
    .into_iter()
    .max_by_key(|(_, d)| *d)
    .unwrap_or(("RETENTION_10M", kept.retention_10m));
    let longest_ms = duration_ms(longest);
    match slos.iter().find(|s| s.period_ms > longest_ms) {
        None => Ok(()),
        Some(s) => Err(bad(format!(
            "ALERT_RULES slo {:?}: field `period` is {}, longer than the {} {setting} keeps; shorten `period` or raise {setting}.",
            s.name,
            s.period_label(),
            span_label(longest_ms)
        ))),
    }
}

/// One objective's mapping, with its name (or position) for messages.
struct Fields<'a> {
    map: &'a Mapping,
    label: String,
}

impl Fields<'_> {
    fn err(&self, field: &str, what: impl std::fmt::Display) -> ConfigError {
        bad(format!("ALERT_RULES slo {}: field `{field}` {what}.", self.label))
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn text(&self, field: &str) -> Result<Option<String>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(v) => Err(self.err(field, format_args!("must be text, not {}", show(v)))),
        }
    }

    fn number(&self, field: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|n| n.is_finite())
                .map(Some)
                .ok_or_else(|| self.err(field, format_args!("must be a number, not {}", show(v)))),
        }
    }
}

fn show(v: &Value) -> String {
    serde_norway::to_string(v).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".into())
}

fn parse_one(item: &Value, index: usize) -> Result<SloSpec, ConfigError> {
    let Some(map) = item.as_mapping() else {
        return Err(bad(format!("ALERT_RULES slo #{} must be a mapping of fields.", index + 1)));
    };
    let label = match map.get("name").and_then(Value::as_str) {
        Some(n) => format!("{n:?}"),
        None => format!("#{}", index + 1),
    };
    let f = Fields { map, label };
    if let Some(k) = map.keys().find(|k| !k.as_str().is_some_and(|k| FIELDS.contains(&k))) {
        return Err(bad(format!(
            "ALERT_RULES slo {}: field {} is unknown; use {}.",
            f.label,
            show(k),
            FIELDS.join(", ")
        )));
    }
    Ok(SloSpec {
        name: parse_name(&f)?,
        variant: parse_variant(&f)?,
        indicator: parse_indicator(&f)?,
        objective_pct: parse_objective(&f)?,
        period_ms: parse_period(&f)?,
    })
}

fn parse_name(f: &Fields<'_>) -> Result<String, ConfigError> {
    let name = f.text("name")?.filter(|s| !s.is_empty()).ok_or_else(|| f.err("name", "is missing"))?;
    let mut chars = name.chars();
    let ok = name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok { Ok(name) } else { Err(f.err("name", format_args!("is {name:?}; use letters, digits and _ (at most 128)"))) }
}

fn parse_variant(f: &Fields<'_>) -> Result<SloVariant, ConfigError> {
    match f.text("variant")? {
        None => Ok(SloVariant::Each),
        Some(v) if v == "*" => Ok(SloVariant::Each),
        Some(v) if is_valid_variant(&v) => Ok(SloVariant::One(v)),
        Some(v) => Err(f.err("variant", format_args!("is {v:?}; use * or a name of a-z 0-9 _ . - (at most 64)"))),
    }
}

/// `indicator` and, for latency and TTFT, a `threshold` that is one of the family's bounds.
fn parse_indicator(f: &Fields<'_>) -> Result<Indicator, ConfigError> {
    let name = f.text("indicator")?.ok_or_else(|| f.err("indicator", "is missing"))?;
    let threshold = f.number("threshold")?;
    let (family, bounds): (&str, &[f64]) = match name.as_str() {
        "availability" => {
            return match threshold {
                None => Ok(Indicator::Availability),
                Some(_) => Err(f.err("threshold", "does not apply to availability; leave it out")),
            };
        }
        "latency" => ("zai_proxy_request_duration_seconds", DURATION_BOUNDS),
        "ttft" => ("zai_proxy_time_to_first_token_seconds", TTFT_BOUNDS),
        other => return Err(f.err("indicator", format_args!("is {other:?}; use availability, latency or ttft"))),
    };
    let listed = || bounds.iter().map(|b| crate::expo::go_float(*b)).collect::<Vec<_>>().join(", ");
    let t =
        threshold.ok_or_else(|| f.err("threshold", format_args!("is missing; use one of {} (seconds)", listed())))?;
    if !bounds.contains(&t) {
        return Err(f.err(
            "threshold",
            format_args!("is {t}, not a bucket bound of {family}; use one of {} (seconds)", listed()),
        ));
    }
    Ok(if name == "latency" { Indicator::Latency { threshold_s: t } } else { Indicator::Ttft { threshold_s: t } })
}

fn parse_objective(f: &Fields<'_>) -> Result<f64, ConfigError> {
    let o = f.number("objective")?.ok_or_else(|| f.err("objective", "is missing"))?;
    // The budget is kept to 12 decimals: 100 minus a hair would leave none.
    if o > 0.0 && o < 100.0 && error_budget_of(o) > 0.0 {
        Ok(o)
    } else {
        Err(f.err("objective", format_args!("is {o}; use a percent above 0 and below 100, like 99.5")))
    }
}

fn parse_period(f: &Fields<'_>) -> Result<i64, ConfigError> {
    let Some(t) = f.text("period")? else { return Ok(DEFAULT_PERIOD_MS) };
    let ms = duration_ms(parse_duration(&format!("ALERT_RULES slo {} field `period`", f.label), &t)?);
    let longest_window = BURN_WINDOWS[BURN_WINDOWS.len() - 1];
    if ms < longest_window.ms {
        return Err(f.err(
            "period",
            format_args!("is {t:?}, shorter than {}, the longest window its alerts read", longest_window.label),
        ));
    }
    if ms > MAX_PERIOD_MS {
        return Err(f.err("period", format_args!("is {t:?}, longer than {}", span_label(MAX_PERIOD_MS))));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    // Here rather than in `slo/tests.rs`: a core module's test may read a subsystem's constants,
    // and `tests/layers.rs` skips only what follows `#[cfg(test)]` in the same file.
    #[test]
    fn thresholds_are_the_proxy_histogram_bounds() {
        assert_eq!(super::DURATION_BOUNDS, crate::proxy::metrics::DURATION_BUCKETS);
        assert_eq!(super::TTFT_BOUNDS, crate::proxy::metrics::TTFT_BUCKETS);
    }
}
