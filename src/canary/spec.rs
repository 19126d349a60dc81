//! The canary configuration (`CANARY_CONFIG`): which metrics are judged, which direction is
//! worse, how much degradation is allowed, which are critical, their weights, `alpha` and the
//! minimum requests; the built-in defaults; and the YAML file, validated by hand so each
//! problem is one sentence naming the field (as the alerting rules are, see `alerts::rules`).
//!
//! Validation also fixes everything the statistics must not learn from the data: the number
//! of hypotheses, the per-hypothesis level, and each metric's mixture.

use serde_norway::{Mapping, Value};

use super::boundary::{Mixture, Sides};
use super::catalog::{CATALOG, MetricId};
use crate::setting::{ConfigError, bad};

/// Largest configuration file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Which change of a metric is a regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worse {
    /// Higher is worse (errors, latency, cost).
    Higher,
    /// Lower is worse (cache reads).
    Lower,
    /// Either way is suspicious (output tokens per request).
    Either,
}

impl Worse {
    fn as_str(self) -> &'static str {
        match self {
            Worse::Higher => "higher",
            Worse::Lower => "lower",
            Worse::Either => "either",
        }
    }
}

/// How much degradation is allowed before a metric fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Allowed {
    /// In the metric's own unit; percentage points for shares.
    Absolute(f64),
    /// Percent of the baseline's value (`50` = +50 %), judged on the log of the ratio.
    Relative(f64),
}

/// One metric's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// Which metric.
    pub id: MetricId,
    /// Which direction is worse.
    pub worse: Worse,
    /// Allowed degradation.
    pub allowed: Allowed,
    /// Whether a failure of this metric fails the canary (and an undecided one holds it).
    pub critical: bool,
    /// Weight in the score.
    pub weight: f64,
    /// Absolute ceiling on the candidate's own share, in percent (zai-proxy's "below 5 %").
    pub ceiling: Option<f64>,
    /// Whether the metric is judged at all.
    pub enabled: bool,
}

/// What validation fixes for one metric before any data: margins on the comparison scale and
/// the mixtures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tuning {
    /// Allowed increase on the comparison scale (difference or log ratio), `None` when higher
    /// is not worse.
    pub up: Option<f64>,
    /// Allowed decrease (a positive number), `None` when lower is not worse.
    pub down: Option<f64>,
    pub mixture: Mixture,
    /// The ceiling as a fraction, and its mixture.
    pub ceiling: Option<(f64, Mixture)>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryConfig {
    alpha: f64,
    min_requests: f64,
    metrics: Vec<MetricSpec>,
    tuning: Vec<Tuning>,
    hypotheses: usize,
    total_weight: f64,
}

fn spec(id: MetricId, worse: Worse, allowed: Allowed, critical: bool) -> MetricSpec {
    MetricSpec { id, worse, allowed, critical, weight: 1.0, ceiling: None, enabled: true }
}

/// The built-in metric settings, in catalog order.
fn default_metrics() -> Vec<MetricSpec> {
    use Allowed::{Absolute, Relative};
    use MetricId::*;
    vec![
        MetricSpec { ceiling: Some(5.0), ..spec(ErrorRate, Worse::Higher, Absolute(1.0), true) },
        spec(RateLimited, Worse::Higher, Absolute(1.0), false),
        spec(UpstreamErrors, Worse::Higher, Relative(50.0), false),
        spec(Retries, Worse::Higher, Relative(50.0), false),
        spec(LatencyP95Tail, Worse::Higher, Relative(50.0), true),
        spec(LatencyP99Tail, Worse::Higher, Relative(50.0), false),
        spec(TtftP95Tail, Worse::Higher, Relative(50.0), false),
        spec(OutputTokensPerRequest, Worse::Either, Relative(20.0), false),
        spec(CacheReadShare, Worse::Lower, Absolute(10.0), false),
        spec(CostPerSuccess, Worse::Higher, Relative(20.0), false),
    ]
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self::build(0.05, 100.0, default_metrics())
    }
}

/// A critical metric's weight in the split of `alpha`; every other hypothesis, ceilings included,
/// weighs 1. Critical metrics decide the verdict, so they get the larger shares (ARCHITECTURE.md,
/// "Canary analysis", has what this buys and costs).
pub const CRITICAL_ALPHA_WEIGHT: f64 = 3.0;

impl MetricSpec {
    /// This metric's weight in the split of `alpha` (its ceiling weighs 1).
    pub fn alpha_weight(&self) -> f64 {
        if self.critical { CRITICAL_ALPHA_WEIGHT } else { 1.0 }
    }
}

impl CanaryConfig {
    /// Fixes the hypotheses, levels and mixtures of checked settings. The mixtures are tuned at
    /// the levels every enabled metric would have if all were tested; a judgement that tests
    /// fewer raises the levels but keeps `ρ`, which must not move with the data.
    fn build(alpha: f64, min_requests: f64, metrics: Vec<MetricSpec>) -> Self {
        let enabled = || metrics.iter().filter(|m| m.enabled);
        let hypotheses = enabled().map(|m| 1 + usize::from(m.ceiling.is_some())).sum::<usize>().max(1);
        let total_weight =
            enabled().map(|m| m.alpha_weight() + if m.ceiling.is_some() { 1.0 } else { 0.0 }).sum::<f64>().max(1.0);
        let unit = alpha / total_weight;
        let tuning = metrics.iter().map(|m| tune(m, unit * m.alpha_weight(), unit)).collect();
        Self { alpha, min_requests, metrics, tuning, hypotheses, total_weight }
    }

    /// Family-wise error rate over every look and every metric.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Requests each side needs before a metric is tested.
    pub(crate) fn min_requests(&self) -> f64 {
        self.min_requests
    }

    /// Number of hypotheses when every enabled metric is tested (enabled metrics plus
    /// ceilings); a judgement counts only those whose data exist ([`super::Judgement`]).
    pub fn hypotheses(&self) -> usize {
        self.hypotheses
    }

    /// Level of a weight-1 hypothesis when every enabled metric is tested:
    /// `alpha / total weight`; a metric's is that times [`MetricSpec::alpha_weight`].
    pub fn level(&self) -> f64 {
        self.alpha / self.total_weight
    }

    /// Every metric's settings, in catalog order (disabled ones included).
    pub(crate) fn metrics(&self) -> &[MetricSpec] {
        &self.metrics
    }

    pub(crate) fn tuning(&self, i: usize) -> &Tuning {
        &self.tuning[i]
    }

    /// Reads and validates `path` (at most [`MAX_FILE_BYTES`]).
    pub(crate) fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        use std::io::Read;
        let shown = path.display();
        let file = std::fs::File::open(path)
            .map_err(|e| bad(format!("CANARY_CONFIG {shown}: cannot read the file ({e}).")))?;
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("CANARY_CONFIG {shown}: cannot read the file ({e}).")))?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(bad(format!("CANARY_CONFIG {shown} is larger than 1 MiB.")));
        }
        Self::parse(&text, &shown.to_string())
    }

    /// Parses and validates a configuration's text; `source` names it in messages. Fields and
    /// metrics left out keep their defaults.
    pub(crate) fn parse(text: &str, source: &str) -> Result<Self, ConfigError> {
        let doc: Value = serde_norway::from_str(text)
            .map_err(|e| bad(format!("CANARY_CONFIG {source} is not valid YAML ({e}).")))?;
        let top = match &doc {
            Value::Null => return Ok(Self::default()),
            Value::Mapping(m) => m,
            _ => return Err(bad(format!("CANARY_CONFIG {source} must be a mapping (alpha, min_requests, metrics)."))),
        };
        let f = Fields { map: top, label: format!("CANARY_CONFIG {source}:") };
        f.only(&["alpha", "min_requests", "metrics"])?;
        let alpha = f.number("alpha")?.unwrap_or(0.05);
        if !(alpha > 0.0 && alpha < 0.5) {
            return Err(f.err("alpha", format_args!("is {alpha}; use a number between 0 and 0.5, such as 0.05")));
        }
        let min_requests = f.number("min_requests")?.unwrap_or(100.0);
        if min_requests < 1.0 {
            return Err(f.err("min_requests", format_args!("is {min_requests}; use 1 or more")));
        }
        let mut metrics = default_metrics();
        match f.get("metrics") {
            None => {}
            Some(Value::Mapping(map)) => {
                for (key, value) in map {
                    let name = key.as_str().unwrap_or_default();
                    let Some(id) = MetricId::parse(name) else {
                        return Err(
                            f.err("metrics", format_args!("names {}, which is not one of {}", show(key), names()))
                        );
                    };
                    let i = CATALOG.iter().position(|m| *m == id).unwrap_or_default();
                    metrics[i] = parse_metric(value, metrics[i].clone(), source)?;
                }
            }
            Some(v) => return Err(f.err("metrics", format_args!("must map metric names to settings, not {}", show(v)))),
        }
        Ok(Self::build(alpha, min_requests, metrics))
    }

    /// The configuration as YAML that [`CanaryConfig::parse`] reads back to the same value.
    pub(crate) fn render(&self) -> String {
        let mut out = String::from(HEADER);
        out.push_str(&format!("alpha: {}\nmin_requests: {}\nmetrics:\n", self.alpha, self.min_requests));
        for m in &self.metrics {
            out.push_str(&format!("  {}:\n", m.id.name()));
            if !m.enabled {
                out.push_str("    enabled: false\n");
            }
            out.push_str(&format!("    worse_when: {}\n", m.worse.as_str()));
            match m.allowed {
                Allowed::Absolute(v) => out.push_str(&format!("    allowed_absolute: {v}\n")),
                Allowed::Relative(v) => out.push_str(&format!("    allowed_relative: {v}\n")),
            }
            out.push_str(&format!("    critical: {}\n    weight: {}\n", m.critical, m.weight));
            if let Some(c) = m.ceiling {
                out.push_str(&format!("    ceiling: {c}\n"));
            }
        }
        out
    }
}

/// The built-in configuration as YAML (`zai-dash canary --print-config`).
pub fn render_defaults() -> String {
    CanaryConfig::default().render()
}

const HEADER: &str = "\
# Canary analysis (CANARY_CONFIG). Metrics left out keep these settings.
# alpha: chance that a healthy canary is ever called warn or fail, over every look and metric.
# worse_when: higher | lower | either. allowed_absolute is in the metric's unit (percentage
# points for shares); allowed_relative is percent of the baseline's value. ceiling: percent
# the candidate's own share must stay below (error_rate and rate_limited only). A critical
# metric fails the canary when it fails, and gets three times the share of alpha of the others.
";

/// Where a metric's mixture is tightest: at the information where its half-width is this many
/// times its (smaller) margin, which is where a regression three times the allowed degradation
/// is first called significant. Tighter there than at one margin (where a metric sitting at the
/// baseline first passes), at a small cost near the margin (ARCHITECTURE.md, "Canary analysis",
/// has the measured trade-off).
pub(crate) const TIGHTEST_AT_MARGINS: f64 = 3.0;

/// Margins on the comparison scale and the mixtures, from checked settings.
///
/// A metric that is worse in one direction asks a one-sided question and gets one-sided
/// mixtures; an either-way metric keeps the two-sided one. The mixture is tightest where its
/// half-width is [`TIGHTEST_AT_MARGINS`] times the smaller margin (ARCHITECTURE.md, "Canary
/// analysis", has the trade-off).
fn tune(m: &MetricSpec, level: f64, ceiling_level: f64) -> Tuning {
    let (up, down) = match m.allowed {
        Allowed::Absolute(v) => (v / m.id.display_scale(), v / m.id.display_scale()),
        Allowed::Relative(pct) => {
            let r = pct / 100.0;
            ((1.0 + r).ln(), -(1.0 - r.min(0.999_999)).ln())
        }
    };
    let (up, down) = match m.worse {
        Worse::Higher => (Some(up), None),
        Worse::Lower => (None, Some(down)),
        Worse::Either => (Some(up), Some(down)),
    };
    let sides = if m.worse == Worse::Either { Sides::Two } else { Sides::One };
    let margin = up.into_iter().chain(down).fold(f64::INFINITY, f64::min);
    // A ceiling's sequence is tuned to decide within a fifth of the ceiling (1 point of 5 %).
    let ceiling = m.ceiling.map(|c| (c / 100.0, Mixture::tuned(c / 500.0, ceiling_level, Sides::One)));
    Tuning { up, down, mixture: Mixture::tuned(TIGHTEST_AT_MARGINS * margin, level, sides), ceiling }
}

fn names() -> String {
    CATALOG.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
}

fn show(v: &Value) -> String {
    serde_norway::to_string(v).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".into())
}

/// A mapping being read, with the words that start its messages.
struct Fields<'a> {
    map: &'a Mapping,
    label: String,
}

impl Fields<'_> {
    fn err(&self, field: &str, what: impl std::fmt::Display) -> ConfigError {
        bad(format!("{} field `{field}` {what}.", self.label))
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn only(&self, fields: &[&str]) -> Result<(), ConfigError> {
        match self.map.keys().find(|k| !k.as_str().is_some_and(|k| fields.contains(&k))) {
            Some(k) => Err(bad(format!("{} field {} is unknown; use {}.", self.label, show(k), fields.join(", ")))),
            None => Ok(()),
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

    fn positive(&self, field: &str) -> Result<Option<f64>, ConfigError> {
        match self.number(field)? {
            Some(v) if v <= 0.0 => Err(self.err(field, format_args!("is {v}; use a number above 0"))),
            v => Ok(v),
        }
    }

    fn flag(&self, field: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(field, format_args!("must be true or false, not {}", show(v)))),
        }
    }
}

const METRIC_FIELDS: [&str; 7] =
    ["enabled", "worse_when", "allowed_absolute", "allowed_relative", "critical", "weight", "ceiling"];

/// One metric's settings over its defaults.
fn parse_metric(value: &Value, mut m: MetricSpec, source: &str) -> Result<MetricSpec, ConfigError> {
    let label = format!("CANARY_CONFIG {source}: metric {}:", m.id.name());
    let Some(map) = value.as_mapping() else {
        return Err(bad(format!("{label} must be a mapping of fields ({}).", METRIC_FIELDS.join(", "))));
    };
    let f = Fields { map, label };
    f.only(&METRIC_FIELDS)?;
    if let Some(e) = f.flag("enabled")? {
        m.enabled = e;
    }
    if let Some(c) = f.flag("critical")? {
        m.critical = c;
    }
    if let Some(w) = f.number("weight")? {
        if w < 0.0 {
            return Err(f.err("weight", format_args!("is {w}; use 0 or more")));
        }
        m.weight = w;
    }
    if let Some(v) = f.get("worse_when") {
        m.worse = match v.as_str() {
            Some("higher") => Worse::Higher,
            Some("lower") => Worse::Lower,
            Some("either") => Worse::Either,
            _ => return Err(f.err("worse_when", format_args!("is {}; use higher, lower or either", show(v)))),
        };
    }
    match (f.positive("allowed_absolute")?, f.positive("allowed_relative")?) {
        (Some(_), Some(_)) => {
            return Err(f.err("allowed_relative", "is set together with `allowed_absolute`; keep one of them"));
        }
        (Some(a), None) => m.allowed = Allowed::Absolute(a),
        (None, Some(r)) => m.allowed = Allowed::Relative(r),
        (None, None) => {}
    }
    if let Allowed::Relative(r) = m.allowed
        && r >= 100.0
        && m.worse != Worse::Higher
    {
        let field = if f.get("allowed_relative").is_some() { "allowed_relative" } else { "worse_when" };
        return Err(f.err(field, format_args!("allows a decrease of {r} %; use less than 100")));
    }
    if let Some(c) = f.positive("ceiling")? {
        if !m.id.allows_ceiling() {
            return Err(f.err("ceiling", "applies to error_rate and rate_limited only"));
        }
        if c >= 100.0 {
            return Err(f.err("ceiling", format_args!("is {c}; use a percentage below 100")));
        }
        m.ceiling = Some(c);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<CanaryConfig, String> {
        CanaryConfig::parse(yaml, "c.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_round_trip_through_render_and_parse() {
        let d = CanaryConfig::default();
        assert_eq!(parse(&render_defaults()).unwrap(), d);
        assert_eq!((d.alpha(), d.min_requests(), d.hypotheses()), (0.05, 100.0, 11));
        // Two critical metrics weigh 3, eight others and the ceiling 1.
        assert!((d.level() - 0.05 / 15.0).abs() < 1e-15);
        // A changed configuration round-trips too.
        let c = parse("alpha: 0.01\nmetrics:\n  retries: {enabled: false}\n  error_rate: {allowed_relative: 30}\n")
            .unwrap();
        assert_eq!(parse(&c.render()).unwrap(), c);
        assert_eq!(c.hypotheses(), 10);
        assert_eq!(c.metrics()[0].allowed, Allowed::Relative(30.0));
        assert_eq!(c.metrics()[0].ceiling, Some(5.0));
        // An empty file is the defaults.
        assert_eq!(parse("").unwrap(), d);
    }

    #[test]
    fn each_bad_field_gives_a_sentence_naming_it() {
        let cases = [
            ("alpha: 0.7", "field `alpha` is 0.7"),
            ("alpha: often", "field `alpha` must be a number"),
            ("min_requests: 0", "field `min_requests` is 0"),
            ("treshold: 3", "field treshold is unknown"),
            ("metrics: [error_rate]", "field `metrics` must map metric names"),
            ("metrics: {errors: {}}", "field `metrics` names errors, which is not one of error_rate"),
            ("metrics: {error_rate: 3}", "metric error_rate: must be a mapping"),
            ("metrics: {error_rate: {worse_when: up}}", "metric error_rate: field `worse_when` is up"),
            ("metrics: {error_rate: {allowed_absolute: -1}}", "metric error_rate: field `allowed_absolute` is -1"),
            (
                "metrics: {error_rate: {allowed_absolute: 1, allowed_relative: 5}}",
                "field `allowed_relative` is set together with `allowed_absolute`",
            ),
            ("metrics: {cache_read_share: {allowed_relative: 150}}", "field `allowed_relative` allows a decrease"),
            ("metrics: {retries: {ceiling: 5}}", "metric retries: field `ceiling` applies to error_rate"),
            ("metrics: {error_rate: {ceiling: 120}}", "field `ceiling` is 120"),
            ("metrics: {error_rate: {critical: yes please}}", "field `critical` must be true or false"),
            ("metrics: {error_rate: {weight: -2}}", "field `weight` is -2"),
            ("metrics: {error_rate: {colour: red}}", "metric error_rate: field colour is unknown"),
            ("[1, 2]", "must be a mapping"),
            ("alpha: [", "is not valid YAML"),
        ];
        for (yaml, want) in cases {
            let got = parse(yaml).unwrap_err();
            assert!(got.starts_with("CANARY_CONFIG c.yaml"), "{got}");
            assert!(got.contains(want), "{yaml:?}: {got}");
            assert!(got.ends_with('.') || got.ends_with(").") || got.contains("YAML"), "{got}");
        }
    }

    #[test]
    fn margins_sit_on_the_comparison_scale() {
        let d = CanaryConfig::default();
        let errors = d.tuning(0);
        assert_eq!((errors.up, errors.down), (Some(0.01), None));
        assert_eq!(errors.ceiling.map(|c| c.0), Some(0.05));
        let tokens = d.tuning(7);
        assert!((tokens.up.unwrap() - 1.2_f64.ln()).abs() < 1e-12);
        assert!((tokens.down.unwrap() + 0.8_f64.ln()).abs() < 1e-12);
        assert_eq!(d.tuning(8).down, Some(0.1));
    }

    #[test]
    fn files_over_one_mebibyte_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, format!("alpha: 0.05\n#{}\n", "x".repeat(MAX_FILE_BYTES as usize))).unwrap();
        assert!(CanaryConfig::load(&big).unwrap_err().to_string().ends_with("is larger than 1 MiB."));
        let missing = dir.path().join("none.yaml");
        assert!(CanaryConfig::load(&missing).unwrap_err().to_string().contains("cannot read the file"));
        let ok = dir.path().join("ok.yaml");
        std::fs::write(&ok, "min_requests: 50\n").unwrap();
        assert_eq!(CanaryConfig::load(&ok).unwrap().min_requests(), 50.0);
    }
}
