//! Objectives as Prometheus rules, for `zai-dash rules --prometheus`: per objective one group
//! (Prometheus evaluates a group's rules in order, so the alerts read the ratios recorded in
//! the same evaluation) with
//! - `slo:sli_error:ratio_rate<window>`: the error ratio over each burn window and the period,
//!   per variant, labelled `slo="<name>"` (the naming Sloth and Pyrra use);
//! - `slo:objective:ratio` and `slo:error_budget_remaining:ratio`, what `/api/slos` shows;
//! - `<name>BurnRatePage` and `<name>BurnRateTicket`, the workbook's conditions over the
//!   recorded ratios, compared as `ratio > factor * budget` like the evaluation in `eval`.
//!
//! Series are zai-proxy's: availability counts `zai_proxy_requests_total` with a 5xx
//! `status_code` over all; latency and TTFT count the histogram's bucket at the threshold over
//! its `_count`. Prometheus 3 stores a whole-number `le` as `1.0` where Prometheus 2 kept the
//! exporter's `1`, so such bounds match either spelling.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{BURN_ALERTS, BURN_WINDOWS, BurnAlert, Indicator, SloSpec, SloVariant};
use crate::expo::go_float;
use crate::promql::parts::rate_by;
use crate::promql::{Selector, family};

/// One group of a Prometheus rule file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleGroup {
    /// `zai-dash-slo-<name>`.
    pub name: String,
    /// Recording rules first, then the alerts that read them.
    pub rules: Vec<PromRule>,
}

/// A recording or an alerting rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PromRule {
    /// `record:`
    Record {
        /// Series name.
        record: String,
        /// PromQL.
        expr: String,
        /// Added labels (`slo`).
        labels: BTreeMap<String, String>,
    },
    /// `alert:`
    Alert {
        /// Alert name.
        alert: String,
        /// PromQL.
        expr: String,
        /// Added labels (`severity`, `slo`).
        labels: BTreeMap<String, String>,
        /// `summary`, `description`.
        annotations: BTreeMap<String, String>,
    },
}

/// The rule groups of every objective, in the order given.
pub fn rule_groups(slos: &[SloSpec]) -> Vec<RuleGroup> {
    slos.iter().map(group).collect()
}

fn group(slo: &SloSpec) -> RuleGroup {
    let slo_label = || BTreeMap::from([("slo".to_owned(), slo.name.clone())]);
    let record = |record: String, expr: String| PromRule::Record { record, expr, labels: slo_label() };
    let mut windows: Vec<(String, i64)> = BURN_WINDOWS.iter().map(|w| (w.label.to_owned(), w.ms)).collect();
    if !windows.iter().any(|(_, ms)| *ms == slo.period_ms) {
        windows.push((slo.period_label(), slo.period_ms));
    }
    let mut rules: Vec<PromRule> =
        windows.iter().map(|(label, ms)| record(ratio_name(label), error_ratio(slo, *ms))).collect();
    rules.push(record("slo:objective:ratio".into(), format!("vector({})", go_float(1.0 - slo.error_budget()))));
    rules.push(record(
        "slo:error_budget_remaining:ratio".into(),
        format!("1 - {}{} / {}", ratio_name(&slo.period_label()), selector(slo), go_float(slo.error_budget())),
    ));
    rules.extend(BURN_ALERTS.iter().map(|a| alert(slo, a)));
    RuleGroup { name: format!("zai-dash-slo-{}", slo.name), rules }
}

fn ratio_name(window: &str) -> String {
    format!("slo:sli_error:ratio_rate{window}")
}

/// `{slo="<name>"}`: the objective's recorded series (names are `[A-Za-z0-9_]`).
fn selector(slo: &SloSpec) -> String {
    format!("{{slo=\"{}\"}}", slo.name)
}

/// The share of requests that were not good over `window_ms`, per variant.
fn error_ratio(slo: &SloSpec, window_ms: i64) -> String {
    let sel = match &slo.variant {
        SloVariant::One(v) => Selector::variant(v),
        SloVariant::Each => Selector::all(),
    };
    let (hist, bound) = match slo.indicator {
        Indicator::Availability => {
            let all = rate_by(family::REQUESTS, &sel, &[], "variant", window_ms);
            let bad = rate_by(family::REQUESTS, &sel, &["status_code=~\"5..\""], "variant", window_ms);
            // No 5xx series at all is a ratio of 0, not a missing one.
            return format!("({bad} or 0 * {all}) / {all}");
        }
        Indicator::Latency { threshold_s } => (family::DURATION, threshold_s),
        Indicator::Ttft { threshold_s } => (family::TTFT, threshold_s),
    };
    let good = rate_by(&format!("{hist}_bucket"), &sel, &[&le_matcher(bound)], "variant", window_ms);
    let all = rate_by(&format!("{hist}_count"), &sel, &[], "variant", window_ms);
    format!("1 - {good} / {all}")
}

/// `le="0.5"`, or for a whole number `le=~"1|1\\.0"` (Prometheus 2 and 3 spellings).
fn le_matcher(bound: f64) -> String {
    let v = go_float(bound);
    if bound.fract() == 0.0 && !v.contains('e') { format!("le=~\"{v}|{v}\\\\.0\"") } else { format!("le=\"{v}\"") }
}

fn alert(slo: &SloSpec, a: &BurnAlert) -> PromRule {
    let budget = go_float(slo.error_budget());
    let over = |label: &str, factor: f64| {
        format!("{}{} > ({} * {budget})", ratio_name(label), selector(slo), go_float(factor))
    };
    let either: Vec<String> = a
        .conditions
        .iter()
        .map(|c| format!("({} and {})", over(c.long.label, c.factor), over(c.short.label, c.factor)))
        .collect();
    let conditions: Vec<String> = a
        .conditions
        .iter()
        .map(|c| format!("{}x over {} and {}", go_float(c.factor), c.long.label, c.short.label))
        .collect();
    PromRule::Alert {
        alert: slo.alert_name(a),
        expr: either.join(" or "),
        labels: BTreeMap::from([("severity".to_owned(), a.severity.to_owned()), ("slo".to_owned(), slo.name.clone())]),
        annotations: BTreeMap::from([
            (
                "summary".to_owned(),
                format!(
                    "{{{{ $labels.variant }}}} burns the error budget of {} ({}) too fast",
                    slo.name,
                    slo.describe()
                ),
            ),
            ("description".to_owned(), format!("Burn rate above {}.", conditions.join(", or "))),
        ]),
    }
}
