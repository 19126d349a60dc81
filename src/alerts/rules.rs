//! Alerting rules: the YAML file (`ALERT_RULES`), the built-in defaults, and their validation.
//!
//! Every field is read and checked here, so a bad rule refuses to start with one sentence that
//! names the rule and the field (docs/decisions.md, Alerts). Fields are read from a YAML mapping by
//! hand rather than by a derived `Deserialize`: serde's messages name a path (`rules[2].op`),
//! not the rule, and cannot say which values would have been accepted.

use std::collections::BTreeSet;

use serde_norway::{Mapping, Value};

use super::metric::{METRICS, Metric, VERDICTS, verdict_name};
use crate::budget::slo::{BURN_ALERTS, SloSpec, parse_slos};
use crate::setting::{ConfigError, bad, duration_ms, parse_duration};
use crate::variant::is_valid_variant;

/// The rules used when `ALERT_RULES` is not set (README: "Alerts").
pub(crate) const DEFAULT_RULES: &str = r#"rules:
  - name: HighErrorRate
    variant: "*"
    expr: error_rate_pct
    op: ">"
    threshold: 5
    window: 5m
    for: 2m
    min_requests: 100
    severity: critical
    summary: "5xx share of {{ variant }} is {{ value }} % (above {{ threshold }} %)"
  - name: HighLatency
    variant: "*"
    expr: latency_p95_ms / median_over_time(latency_p95_ms[24h])
    op: ">"
    threshold: 2
    window: 5m
    for: 5m
    min_requests: 100
    severity: warning
    summary: "p95 latency of {{ variant }} is {{ value }}x its 24 h median"
  - name: TargetDown
    variant: "*"
    expr: target_down
    op: ">"
    threshold: 0
    for: 1m
    severity: critical
    summary: "{{ value }} target(s) of {{ variant }} cannot be scraped"
  - name: CanaryFailing
    variant: "*"
    expr: canary_verdict
    op: "=="
    threshold: fail
    window: 15m
    for: 2m
    min_requests: 100
    severity: critical
    summary: "{{ variant }} fails its comparison with production"
  - name: StorageFailing
    expr: storage_healthy
    op: "=="
    threshold: 0
    for: 1m
    severity: critical
    summary: "zai-dash cannot write to its database; new numbers are held in memory until it can"
"#;

/// Fields a rule may have.
const FIELDS: [&str; 11] =
    ["name", "variant", "expr", "op", "threshold", "window", "for", "min_requests", "severity", "summary", "baseline"];

/// Longest window, `for` and median range: the 10 min table's default retention (a longer
/// range asks the store, or the engine in source mode, for more than it keeps, on every tick).
const MAX_SPAN_MS: i64 = 30 * 86_400_000;
/// How the longest span is written in messages.
const MAX_SPAN: &str = "30d";
/// Largest rules file read: a real one is a few KiB.
pub(crate) const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Deepest nesting of collections accepted. A rules file needs four (the top mapping, the
/// `rules:` list, a rule, a flow list in it); the YAML parser takes time growing with the
/// square of the depth before its own recursion limit refuses a deep file (a 200 KB file of
/// `[` took 47 s), so depth is counted before it sees the text.
const MAX_NESTING: usize = 32;
/// Default window of windowed metrics; the canary verdict uses the compare page's default.
const DEFAULT_WINDOW_MS: i64 = 300_000;
const DEFAULT_CANARY_WINDOW_MS: i64 = 900_000;
/// Words a summary may use.
const PLACEHOLDERS: [&str; 4] = ["rule", "variant", "value", "threshold"];

/// Which variants a rule watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// This variant.
    One(String),
    /// Every variant: one alert each (`*`).
    Each,
}

/// How the value is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    const ALL: [Op; 6] = [Op::Gt, Op::Ge, Op::Lt, Op::Le, Op::Eq, Op::Ne];

    /// The operator as written (the same in PromQL).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// Whether `value op threshold` holds.
    pub(crate) fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

/// What a rule computes: a metric, or a metric over its own median of a longer range.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// The metric.
    pub metric: Metric,
    /// `metric / median_over_time(metric[range])`: the range, ms.
    pub median_range_ms: Option<i64>,
    /// As written.
    pub text: String,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `alertname`.
    pub name: String,
    /// Which variants.
    pub scope: Scope,
    /// What is computed.
    pub expr: Expr,
    /// Comparison.
    pub op: Op,
    /// Threshold (a verdict's rank for `canary_verdict`).
    pub threshold: f64,
    /// Window of windowed metrics, ms (0 for instant ones).
    pub window_ms: i64,
    /// How long the condition must hold before the alert fires, ms.
    pub for_ms: i64,
    /// Requests the window must hold for the condition to count (no alert on three requests).
    pub min_requests: f64,
    /// `severity` label.
    pub severity: String,
    /// Summary template (`{{ variant }}`, `{{ value }}`, `{{ threshold }}`, `{{ rule }}`).
    pub summary: String,
    /// Baseline of `canary_verdict`.
    pub baseline: String,
}

impl Rule {
    /// `value` formatted in the metric's terms (a verdict name for `canary_verdict`).
    pub(crate) fn format_value(&self, value: Option<f64>) -> String {
        match value {
            None => "no data".to_owned(),
            Some(v) if self.expr.metric == Metric::CanaryVerdict => verdict_name(v).to_owned(),
            Some(v) => format_number(v),
        }
    }

    /// The threshold as written.
    pub(crate) fn format_threshold(&self) -> String {
        self.format_value(Some(self.threshold))
    }

    /// `expr op threshold`, for pages and messages.
    pub(crate) fn condition(&self) -> String {
        format!("{} {} {}", self.expr.text, self.op.as_str(), self.format_threshold())
    }

    /// The summary with its placeholders filled in.
    pub(crate) fn summary_for(&self, variant: &str, value: Option<f64>) -> String {
        let mut s = self.summary.clone();
        for (word, text) in [
            ("rule", self.name.clone()),
            ("variant", variant.to_owned()),
            ("value", self.format_value(value)),
            ("threshold", self.format_threshold()),
        ] {
            s = replace_placeholder(&s, word, &text);
        }
        s
    }
}

/// Replaces `{{ word }}` (any inner spacing) with `text`.
pub(crate) fn replace_placeholder(s: &str, word: &str, text: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        let Some(j) = rest[i..].find("}}") else { break };
        out.push_str(&rest[..i]);
        let inner = rest[i + 2..i + j].trim();
        if inner == word {
            out.push_str(text)
        } else {
            out.push_str(&rest[i..i + j + 2])
        }
        rest = &rest[i + j + 2..];
    }
    out.push_str(rest);
    out
}

/// A number with at most three decimals and no trailing zeros (`12.5`, `0.001`, `3`).
pub(crate) fn format_number(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_owned() } else { s.to_owned() }
}

/// A rules file: alerting rules and service level objectives.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RulesFile {
    /// The `rules:` list.
    pub rules: Vec<Rule>,
    /// The `slos:` list (README: "Objectives"); empty without one.
    pub slos: Vec<SloSpec>,
}

/// Parses and validates a rule file's text; `source` names it in messages.
pub fn parse_rules(text: &str, source: &str) -> Result<Vec<Rule>, ConfigError> {
    parse_rules_file(text, source).map(|f| f.rules)
}

/// Parses and validates a rule file's text with its objectives; `source` names it in
/// messages. An objective's generated alerts may not take a rule's name.
pub fn parse_rules_file(text: &str, source: &str) -> Result<RulesFile, ConfigError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(too_large(source));
    }
    if super::nesting::depth(text) > MAX_NESTING {
        return Err(bad(format!(
            "ALERT_RULES {source} nests lists and mappings deeper than {MAX_NESTING} levels; a rules file needs four."
        )));
    }
    let doc: Value =
        serde_norway::from_str(text).map_err(|e| bad(format!("ALERT_RULES {source} is not valid YAML ({e}).")))?;
    let Some(top) = doc.as_mapping() else {
        return Err(bad(format!("ALERT_RULES {source} must be a mapping with a `rules:` list.")));
    };
    if let Some(k) = top.keys().find(|k| !matches!(k.as_str(), Some("rules" | "slos"))) {
        return Err(bad(format!(
            "ALERT_RULES {source} has an unknown key {}; only `rules:` and `slos:` are read.",
            show(k)
        )));
    }
    let Some(list) = top.get("rules").and_then(Value::as_sequence) else {
        return Err(bad(format!("ALERT_RULES {source} must have a `rules:` list.")));
    };
    let mut names = BTreeSet::new();
    let mut rules = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let rule = parse_rule(item, i)?;
        if !names.insert(rule.name.clone()) {
            return Err(bad(format!("ALERT_RULES rule {:?}: field `name` is used by an earlier rule.", rule.name)));
        }
        rules.push(rule);
    }
    let slos = match top.get("slos") {
        None => Vec::new(),
        Some(list) => parse_slos(list, source)?,
    };
    for slo in &slos {
        if let Some(name) = BURN_ALERTS.iter().map(|a| slo.alert_name(a)).find(|n| names.contains(n)) {
            return Err(bad(format!(
                "ALERT_RULES slo {:?}: field `name` makes alert {name}, the name of a rule.",
                slo.name
            )));
        }
    }
    Ok(RulesFile { rules, slos })
}

/// The refusal of a rules file over [`MAX_FILE_BYTES`].
pub(crate) fn too_large(source: &str) -> ConfigError {
    bad(format!("ALERT_RULES {source} is larger than 1 MiB; a rules file must be at most 1 MiB."))
}

/// The built-in rules.
pub fn default_rules() -> Vec<Rule> {
    // The defaults are part of the program: a failure here is a bug caught by the unit tests.
    parse_rules(DEFAULT_RULES, "(built-in defaults)").unwrap_or_default()
}

fn show(v: &Value) -> String {
    serde_norway::to_string(v).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".into())
}

/// One rule's mapping, with the rule's name (or position) for messages.
struct Fields<'a> {
    map: &'a Mapping,
    label: String,
}

impl Fields<'_> {
    fn err(&self, field: &str, what: impl std::fmt::Display) -> ConfigError {
        bad(format!("ALERT_RULES rule {}: field `{field}` {what}.", self.label))
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// A string field (numbers are taken as written, so `for: 0` reads as "0").
    fn text(&self, field: &str) -> Result<Option<String>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(v) => Err(self.err(field, format_args!("must be text, not {}", show(v)))),
        }
    }

    fn required(&self, field: &str) -> Result<String, ConfigError> {
        self.text(field)?.filter(|s| !s.is_empty()).ok_or_else(|| self.err(field, "is missing"))
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

    /// A duration; `zero_ok` accepts `0`.
    fn duration(&self, field: &str, zero_ok: bool) -> Result<Option<i64>, ConfigError> {
        let Some(t) = self.text(field)? else { return Ok(None) };
        if zero_ok && matches!(t.as_str(), "0" | "0s") {
            return Ok(Some(0));
        }
        let ms = duration_ms(parse_duration(&format!("ALERT_RULES rule {} field `{field}`", self.label), &t)?);
        if ms > MAX_SPAN_MS {
            return Err(self.err(field, format_args!("is {t:?}, longer than {MAX_SPAN}")));
        }
        Ok(Some(ms))
    }
}

/// Reads one rule (the `index`-th, for messages when it has no name).
fn parse_rule(item: &Value, index: usize) -> Result<Rule, ConfigError> {
    let Some(map) = item.as_mapping() else {
        return Err(bad(format!("ALERT_RULES rule #{} must be a mapping of fields.", index + 1)));
    };
    let label = match map.get("name").and_then(Value::as_str) {
        Some(n) => format!("{n:?}"),
        None => format!("#{}", index + 1),
    };
    let f = Fields { map, label };
    if let Some(k) = map.keys().find(|k| !k.as_str().is_some_and(|k| FIELDS.contains(&k))) {
        return Err(bad(format!(
            "ALERT_RULES rule {}: field {} is unknown; use {}.",
            f.label,
            show(k),
            FIELDS.join(", ")
        )));
    }
    let name = rule_name(&f)?;
    let expr = parse_expr(&f)?;
    let op = parse_op(&f)?;
    let threshold = parse_threshold(&f, expr.metric)?;
    let (window_ms, for_ms) = parse_times(&f, &expr)?;
    let min_requests = parse_min_requests(&f, expr.metric)?;
    let (scope, baseline) = parse_scope(&f, expr.metric)?;
    let severity = parse_severity(&f)?;
    let summary = parse_summary(&f, &name)?;
    Ok(Rule { name, scope, expr, op, threshold, window_ms, for_ms, min_requests, severity, summary, baseline })
}

fn rule_name(f: &Fields<'_>) -> Result<String, ConfigError> {
    let name = f.required("name")?;
    let mut chars = name.chars();
    let ok = name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok { Ok(name) } else { Err(f.err("name", format_args!("is {name:?}; use letters, digits and _ (at most 128)"))) }
}

/// `metric` or `metric / median_over_time(metric[range])`.
fn parse_expr(f: &Fields<'_>) -> Result<Expr, ConfigError> {
    let text = f.required("expr")?;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let names = || METRICS.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ");
    let metric_named = |n: &str| {
        Metric::parse(n).ok_or_else(|| f.err("expr", format_args!("names {n:?}, which is not one of {}", names())))
    };
    let Some((left, right)) = compact.split_once('/') else {
        return Ok(Expr { metric: metric_named(&compact)?, median_range_ms: None, text });
    };
    let metric = metric_named(left)?;
    let shape = || f.err("expr", format_args!("is {text:?}; use METRIC or METRIC / median_over_time(METRIC[24h])"));
    let inner = right.strip_prefix("median_over_time(").and_then(|r| r.strip_suffix("])")).ok_or_else(shape)?;
    let (same, range) = inner.split_once('[').ok_or_else(shape)?;
    if metric_named(same)? != metric {
        return Err(f.err("expr", format_args!("compares {left} with the median of {same}; use the same metric")));
    }
    if !metric.has_median() {
        return Err(f.err("expr", format_args!("takes a median of {left}, which has none; use {left} alone")));
    }
    let ms = duration_ms(parse_duration(&format!("ALERT_RULES rule {} field `expr` range", f.label), range)?);
    if ms > MAX_SPAN_MS {
        return Err(f.err("expr", format_args!("takes a median over {range:?}, longer than {MAX_SPAN}")));
    }
    Ok(Expr { metric, median_range_ms: Some(ms), text })
}

fn parse_op(f: &Fields<'_>) -> Result<Op, ConfigError> {
    let Some(t) = f.text("op")? else { return Ok(Op::Gt) };
    Op::ALL
        .into_iter()
        .find(|o| o.as_str() == t)
        .ok_or_else(|| f.err("op", format_args!("is {t:?}; use >, >=, <, <=, == or !=")))
}

fn parse_threshold(f: &Fields<'_>, metric: Metric) -> Result<f64, ConfigError> {
    if metric == Metric::CanaryVerdict {
        let t = f.required("threshold")?;
        return VERDICTS
            .iter()
            .position(|v| v.as_str() == t)
            .map(|i| i as f64)
            .ok_or_else(|| f.err("threshold", format_args!("is {t:?}; use pass, insufficient_data, warn or fail")));
    }
    f.number("threshold")?.ok_or_else(|| f.err("threshold", "is missing"))
}

/// `window` (windowed metrics only, checked against a median's range) and `for`.
fn parse_times(f: &Fields<'_>, expr: &Expr) -> Result<(i64, i64), ConfigError> {
    let window = f.duration("window", false)?;
    let window_ms = match (expr.metric.windowed(), window) {
        (false, Some(_)) => {
            return Err(f.err(
                "window",
                format_args!(
                    "does not apply to {}, an instant value; use `for` to ask for a duration",
                    expr.metric.name()
                ),
            ));
        }
        (false, None) => 0,
        (true, Some(ms)) => ms,
        (true, None) if expr.metric == Metric::CanaryVerdict => DEFAULT_CANARY_WINDOW_MS,
        (true, None) => DEFAULT_WINDOW_MS,
    };
    if let Some(range) = expr.median_range_ms
        && range < 2 * window_ms
    {
        return Err(f.err("expr", "takes a median over less than twice the window; use a longer range"));
    }
    Ok((window_ms, f.duration("for", true)?.unwrap_or(0)))
}

fn parse_min_requests(f: &Fields<'_>, metric: Metric) -> Result<f64, ConfigError> {
    let Some(n) = f.number("min_requests")? else { return Ok(0.0) };
    if n < 0.0 {
        return Err(f.err("min_requests", format_args!("is {n}; use 0 or more")));
    }
    if !metric.windowed() && n > 0.0 {
        return Err(f.err("min_requests", format_args!("does not apply to {}, an instant value", metric.name())));
    }
    Ok(n)
}

fn variant_name(f: &Fields<'_>, field: &str, v: String) -> Result<String, ConfigError> {
    if is_valid_variant(&v) {
        Ok(v)
    } else {
        Err(f.err(field, format_args!("is {v:?}; use * or a name of a-z 0-9 _ . - (at most 64)")))
    }
}

/// `variant` and, for `canary_verdict`, `baseline`.
fn parse_scope(f: &Fields<'_>, metric: Metric) -> Result<(Scope, String), ConfigError> {
    let scope = match f.text("variant")?.as_deref() {
        None | Some("*") => Scope::Each,
        Some(_) if metric.of_process() => {
            return Err(f.err(
                "variant",
                format_args!("does not apply to {}, which is about zai-dash itself; leave it out", metric.name()),
            ));
        }
        Some(v) => Scope::One(variant_name(f, "variant", v.to_owned())?),
    };
    let baseline = match f.text("baseline")? {
        Some(_) if metric != Metric::CanaryVerdict => return Err(f.err("baseline", "applies to canary_verdict only")),
        Some(b) => variant_name(f, "baseline", b)?,
        None => "production".to_owned(),
    };
    if scope == Scope::One(baseline.clone()) && metric == Metric::CanaryVerdict {
        return Err(f.err("variant", format_args!("is the baseline {baseline:?} itself; name the candidate")));
    }
    Ok((scope, baseline))
}

fn parse_severity(f: &Fields<'_>) -> Result<String, ConfigError> {
    let s = f.text("severity")?.unwrap_or_else(|| "warning".to_owned());
    let ok = (1..=32).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok { Ok(s) } else { Err(f.err("severity", format_args!("is {s:?}; use letters, digits, _ and - (at most 32)"))) }
}

fn parse_summary(f: &Fields<'_>, name: &str) -> Result<String, ConfigError> {
    let s = f.text("summary")?.unwrap_or_else(|| format!("{name} on {{{{ variant }}}}: {{{{ value }}}}"));
    if s.len() > 1024 {
        return Err(f.err("summary", "is longer than 1024 characters"));
    }
    let mut rest = s.as_str();
    while let Some(i) = rest.find("{{") {
        let end = rest[i..].find("}}").ok_or_else(|| f.err("summary", "opens {{ without closing it"))?;
        let word = rest[i + 2..i + end].trim();
        if !PLACEHOLDERS.contains(&word) {
            return Err(f.err("summary", format_args!("uses {{{{ {word} }}}}; use rule, variant, value or threshold")));
        }
        rest = &rest[i + end + 2..];
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(yaml_rule: &str) -> Result<Rule, String> {
        parse_rules(&format!("rules:\n  - {}\n", yaml_rule.replace('\n', "\n    ")), "t.yaml")
            .map(|mut r| r.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_default_rules_parse_as_documented() {
        let rules = default_rules();
        assert_eq!(rules.len(), 5);
        let errors = &rules[0];
        assert_eq!(
            (errors.expr.metric, errors.threshold, errors.for_ms, errors.min_requests),
            (Metric::ErrorRatePct, 5.0, 120_000, 100.0)
        );
        assert_eq!(rules[1].expr.median_range_ms, Some(86_400_000));
        assert_eq!((rules[2].expr.metric, rules[2].for_ms, rules[2].window_ms), (Metric::TargetDown, 60_000, 0));
        assert_eq!((rules[3].threshold, rules[3].op, rules[3].baseline.as_str()), (3.0, Op::Eq, "production"));
        assert!(rules.iter().all(|r| r.scope == Scope::Each));
    }

    #[test]
    fn storage_failing_is_built_in_and_fires_after_a_minute_of_refused_writes() {
        let rules = default_rules();
        let r = rules.iter().find(|r| r.name == "StorageFailing").expect("a built-in StorageFailing rule");
        assert_eq!((r.expr.metric, r.op, r.threshold), (Metric::StorageHealthy, Op::Eq, 0.0));
        assert_eq!((r.for_ms, r.window_ms, r.severity.as_str()), (60_000, 0, "critical"));
        assert_eq!(r.scope, Scope::Each, "one alert for the process (its variant label is zai-dash)");
    }

    #[test]
    fn the_kubernetes_rules_file_is_the_built_in_rules() {
        let k8s = parse_rules(include_str!("../../k8s/base/alert-rules.yaml"), "k8s/base/alert-rules.yaml").unwrap();
        assert_eq!(k8s, default_rules());
    }

    #[test]
    fn a_bad_field_names_the_rule_and_the_field() {
        let cases = [
            ("name: A\nexpr: error_rate_pct\nthreshold: five", "rule \"A\": field `threshold` must be a number"),
            ("name: A\nexpr: errors\nthreshold: 5", "rule \"A\": field `expr` names \"errors\""),
            ("name: A\nexpr: error_rate_pct\nthreshold: 5\nop: '=>'", "rule \"A\": field `op` is \"=>\""),
            (
                "name: A\nexpr: error_rate_pct\nthreshold: 5\nwindow: 5 parsecs",
                "rule \"A\" field `window` has an invalid duration",
            ),
            ("name: A\nexpr: target_down\nthreshold: 0\nwindow: 1m", "rule \"A\": field `window` does not apply"),
            (
                "name: A\nexpr: target_down\nthreshold: 0\nmin_requests: 5",
                "rule \"A\": field `min_requests` does not apply",
            ),
            (
                "name: A\nexpr: error_rate_pct\nthreshold: 5\nvariant: Bad Name",
                "rule \"A\": field `variant` is \"Bad Name\"",
            ),
            ("name: A\nexpr: canary_verdict\nthreshold: awful", "rule \"A\": field `threshold` is \"awful\""),
            (
                "name: A\nexpr: error_rate_pct\nthreshold: 5\nsummary: '{{ $value }}'",
                "rule \"A\": field `summary` uses {{ $value }}",
            ),
            ("name: A\nexpr: error_rate_pct\nthreshold: 5\ntreshold: 6", "rule \"A\": field treshold is unknown"),
            ("expr: error_rate_pct\nthreshold: 5", "rule #1: field `name` is missing"),
            ("name: A-B\nexpr: error_rate_pct\nthreshold: 5", "rule \"A-B\": field `name` is \"A-B\""),
            ("name: A\nexpr: req_rate / median_over_time(error_rate_pct[1h])\nthreshold: 2", "use the same metric"),
            (
                "name: A\nexpr: latency_p95_ms / median_over_time(latency_p95_ms[5m])\nthreshold: 2",
                "less than twice the window",
            ),
            ("name: A\nexpr: canary_verdict\nthreshold: fail\nvariant: production", "field `variant` is the baseline"),
            ("name: A\nexpr: storage_healthy\nthreshold: 0\nvariant: canary", "field `variant` does not apply"),
        ];
        for (rule, want) in cases {
            let got = one(rule).unwrap_err();
            assert!(got.starts_with("ALERT_RULES rule"), "{got}");
            assert!(got.contains(want), "{rule:?}: {got}");
        }
    }

    #[test]
    fn file_level_problems_name_the_file() {
        assert!(
            parse_rules("rules: [", "x.yaml")
                .unwrap_err()
                .to_string()
                .starts_with("ALERT_RULES x.yaml is not valid YAML")
        );
        assert!(parse_rules("groups: []", "x.yaml").unwrap_err().to_string().contains("unknown key groups"));
        let dup = "rules:\n  - {name: A, expr: req_rate, threshold: 1}\n  - {name: A, expr: req_rate, threshold: 2}\n";
        assert!(parse_rules(dup, "x.yaml").unwrap_err().to_string().contains("used by an earlier rule"));
    }

    #[test]
    fn objectives_sit_beside_the_rules_and_may_not_take_a_rule_name() {
        let text = "rules:\n  - {name: E, expr: error_rate_pct, threshold: 5}\n\
                    slos:\n  - {name: Avail, indicator: availability, objective: 99.5}\n";
        let file = parse_rules_file(text, "t.yaml").unwrap();
        assert_eq!((file.rules.len(), file.slos.len(), file.slos[0].name.as_str()), (1, 1, "Avail"));
        assert_eq!(parse_rules(text, "t.yaml").unwrap(), file.rules);
        assert!(parse_rules_file("rules: []\n", "t.yaml").unwrap().slos.is_empty());
        let clash = "rules:\n  - {name: AvailBurnRatePage, expr: req_rate, threshold: 1}\n\
                     slos:\n  - {name: Avail, indicator: availability, objective: 99.5}\n";
        assert_eq!(
            parse_rules_file(clash, "t.yaml").unwrap_err().to_string(),
            "ALERT_RULES slo \"Avail\": field `name` makes alert AvailBurnRatePage, the name of a rule."
        );
        let bad = "rules: []\nslos:\n  - {name: Fast, indicator: latency, threshold: 0.3, objective: 99}\n";
        assert!(
            parse_rules(bad, "t.yaml")
                .unwrap_err()
                .to_string()
                .starts_with("ALERT_RULES slo \"Fast\": field `threshold`")
        );
    }

    #[test]
    fn optional_fields_default_and_summaries_fill_in() {
        let r = one("name: Busy\nexpr: worker_utilization\nthreshold: 0.9\nfor: 0").unwrap();
        assert_eq!((r.op, r.window_ms, r.for_ms, r.severity.as_str()), (Op::Gt, 0, 0, "warning"));
        assert_eq!(r.summary_for("canary", Some(0.95)), "Busy on canary: 0.95");
        let r = one("name: E\nexpr: error_rate_pct\nthreshold: 5\nsummary: '{{variant}} at {{ value }} > {{threshold}} ({{ rule }})'").unwrap();
        assert_eq!(r.window_ms, 300_000);
        assert_eq!(r.summary_for("canary", Some(12.3456)), "canary at 12.346 > 5 (E)");
        assert_eq!(r.summary_for("canary", None), "canary at no data > 5 (E)");
        let c = one("name: C\nexpr: canary_verdict\nop: '>='\nthreshold: warn\nvariant: canary").unwrap();
        assert_eq!((c.window_ms, c.condition()), (900_000, "canary_verdict >= warn".to_owned()));
    }

    #[test]
    fn every_duration_of_a_rule_is_at_most_thirty_days() {
        let base = "name: L\nexpr: latency_p95_ms / median_over_time(latency_p95_ms[RANGE])\nthreshold: 2";
        let got = one(&base.replace("RANGE", "300000000y")).unwrap_err();
        assert_eq!(got, "ALERT_RULES rule \"L\": field `expr` takes a median over \"300000000y\", longer than 30d.");
        assert_eq!(one(&base.replace("RANGE", "30d")).unwrap().expr.median_range_ms, Some(30 * 86_400_000));
        for field in ["window", "for"] {
            let got = one(&format!("name: E\nexpr: error_rate_pct\nthreshold: 5\n{field}: 31d")).unwrap_err();
            assert_eq!(got, format!("ALERT_RULES rule \"E\": field `{field}` is \"31d\", longer than 30d."));
        }
        assert_eq!(
            one("name: E\nexpr: error_rate_pct\nthreshold: 5\nwindow: 30d\nfor: 30d").unwrap().for_ms,
            2_592_000_000
        );
    }

    #[test]
    fn a_deeply_nested_file_is_refused_before_it_is_parsed() {
        for deep in [
            format!("rules: {}{}", "[".repeat(40), "]".repeat(40)),
            format!("rules: {}1{}", "{a: ".repeat(40), "}".repeat(40)),
            format!("rules:\n{}x\n", "- ".repeat(40)),
            (0..40).map(|i| format!("{}a{i}:\n", " ".repeat(i))).collect(),
        ] {
            let e = parse_rules(&deep, "deep.yaml").unwrap_err().to_string();
            assert_eq!(
                e,
                "ALERT_RULES deep.yaml nests lists and mappings deeper than 32 levels; a rules file needs four."
            );
        }
    }

    #[test]
    fn a_file_over_one_mebibyte_is_refused_unread() {
        let big = format!("rules: []\n# {}\n", "x".repeat(MAX_FILE_BYTES));
        let e = parse_rules(&big, "big.yaml").unwrap_err().to_string();
        assert_eq!(e, "ALERT_RULES big.yaml is larger than 1 MiB; a rules file must be at most 1 MiB.");
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(format_number(5.0), "5");
        assert_eq!(format_number(12.3456), "12.346");
        assert_eq!(format_number(-0.0001), "0");
    }
}
