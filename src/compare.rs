//! Baseline versus candidate over one window: the statistics behind `/compare` and
//! `GET /api/compare` (decisions section 5). Pure functions, no I/O.
//!
//! Two metrics gate a rollout:
//! - **5xx share**, with a two-proportion z-test (pooled, two-sided, alpha 0.05), so that a few
//!   unlucky requests at low traffic do not raise an alarm: `fail` when the candidate is
//!   significantly worse by more than 1 percentage point, `warn` when significantly worse at all.
//! - **p95 latency**: `warn` above 1.5x the baseline, `fail` above 2x.
//!
//! Fewer than [`MIN_REQUESTS`] requests on either side gives `insufficient_data` for every
//! gated metric and for the overall verdict. Other metrics are shown side by side without a
//! verdict of their own.

use serde::Serialize;

use crate::point::Counts;

/// Requests needed on each side before any verdict is given.
pub const MIN_REQUESTS: f64 = 100.0;
/// Significance level of the error-share test.
pub const ALPHA: f64 = 0.05;
/// Error share difference (percentage points) above which a significant regression fails.
pub const ERROR_FAIL_POINTS: f64 = 1.0;
/// p95 ratio above which the candidate warns.
pub const P95_WARN_RATIO: f64 = 1.5;
/// p95 ratio above which the candidate fails.
pub const P95_FAIL_RATIO: f64 = 2.0;

/// Outcome of one metric or of the whole comparison, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No regression found.
    Pass,
    /// Not enough requests on one side to judge.
    InsufficientData,
    /// A regression worth a look.
    Warn,
    /// A regression that should stop a rollout.
    Fail,
}

impl Verdict {
    /// The wire name (`pass`, `warn`, `fail`, `insufficient_data`), also used as a CSS class.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::InsufficientData => "insufficient_data",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// What one variant did over the window, reduced to the numbers the comparison needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SideStats {
    /// Requests in the window (the sample size).
    pub requests: f64,
    /// 5xx responses in the window.
    pub errors_5xx: f64,
    /// 5xx share in percent, `None` without requests.
    pub error_rate_pct: Option<f64>,
    /// Requests per second over the window.
    pub req_rate: f64,
    /// Latency percentiles (ms) from the window's summed buckets.
    pub latency_p50_ms: Option<f64>,
    /// p95 (ms).
    pub latency_p95_ms: Option<f64>,
    /// p99 (ms).
    pub latency_p99_ms: Option<f64>,
    /// Time to first token p95 (ms), when exported.
    pub ttft_p95_ms: Option<f64>,
    /// Input tokens per second.
    pub token_rate_in: f64,
    /// Output tokens per second.
    pub token_rate_out: f64,
    /// Estimated cost per hour (USD).
    pub cost_per_hour_usd: f64,
    /// Seconds the side's data covers inside the window: what its rates divide by.
    pub covered_seconds: f64,
}

impl SideStats {
    /// Reduces a window's summed increases, which cover `window_s` seconds.
    pub fn from_counts(c: &Counts, window_s: f64) -> Self {
        let requests = c.total_requests();
        let errors_5xx = c.requests_in_class('5');
        let per_s = |v: f64| if window_s > 0.0 { v / window_s } else { 0.0 };
        let ms = |h: &crate::point::Histogram, q: f64| h.quantile(q).map(|s| s * 1000.0);
        let tokens = c.tokens_by_direction();
        let cost: f64 = c.cost_by_direction().iter().fold(0.0, |a, b| a + b);
        Self {
            requests,
            errors_5xx,
            error_rate_pct: (requests > 0.0).then(|| 100.0 * errors_5xx / requests),
            req_rate: per_s(requests),
            latency_p50_ms: ms(&c.duration, 0.5),
            latency_p95_ms: ms(&c.duration, 0.95),
            latency_p99_ms: ms(&c.duration, 0.99),
            ttft_p95_ms: ms(&c.ttft, 0.95),
            token_rate_in: per_s(tokens[0]),
            token_rate_out: per_s(tokens[1]),
            cost_per_hour_usd: per_s(cost) * 3600.0,
            covered_seconds: window_s,
        }
    }
}

/// Result of a two-proportion z-test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ZTest {
    /// z statistic; positive when the candidate's share is higher.
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Pooled two-proportion z-test of `x2/n2` (candidate) against `x1/n1` (baseline).
///
/// `None` when a side has no trials. When both shares are 0 or both 1 the pooled variance is
/// 0: there is no evidence of a difference, so z = 0 and p = 1.
pub fn two_proportion_z(x1: f64, n1: f64, x2: f64, n2: f64) -> Option<ZTest> {
    if n1 <= 0.0 || n2 <= 0.0 {
        return None;
    }
    let (p1, p2) = (x1 / n1, x2 / n2);
    let pooled = (x1 + x2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se.is_nan() || se <= 0.0 {
        return Some(ZTest { z: 0.0, p_value: 1.0 });
    }
    let z = (p2 - p1) / se;
    Some(ZTest { z, p_value: (2.0 * normal_sf(z.abs())).min(1.0) })
}

/// Upper tail of the standard normal, `P(Z > z)`, via `erfc` (absolute error below 1.2e-7).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function: Numerical Recipes' Chebyshev fit (`erfcc`), fractional error
/// below 1.2e-7 everywhere, which is ample for a p-value compared with 0.05.
fn erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRow {
    /// Machine name (`error_rate_pct`, `latency_p95_ms`, ...).
    pub metric: &'static str,
    /// Human label.
    pub label: &'static str,
    /// Unit of the values (`%`, `ms`, `req/s`, `tok/s`, `USD/h`).
    pub unit: &'static str,
    /// Baseline value.
    pub baseline: Option<f64>,
    /// Candidate value.
    pub candidate: Option<f64>,
    /// candidate - baseline.
    pub delta: Option<f64>,
    /// (candidate - baseline) / baseline, in percent; `None` when the baseline is 0.
    pub delta_pct: Option<f64>,
    /// Verdict of a gated metric; `None` for metrics shown for context only.
    pub verdict: Option<Verdict>,
    /// Why, with both values and the sample sizes (gated metrics only).
    pub reason: Option<String>,
}

fn row(metric: &'static str, label: &'static str, unit: &'static str, b: Option<f64>, c: Option<f64>) -> MetricRow {
    let delta = b.zip(c).map(|(b, c)| c - b);
    let delta_pct = b.zip(c).and_then(|(b, c)| (b != 0.0).then(|| 100.0 * (c - b) / b));
    MetricRow { metric, label, unit, baseline: b, candidate: c, delta, delta_pct, verdict: None, reason: None }
}

/// Names and sample sizes for the reasons.
struct Names<'a> {
    baseline: &'a str,
    candidate: &'a str,
    nb: f64,
    nc: f64,
}

impl Names<'_> {
    fn sizes(&self) -> String {
        format!("n = {:.0} vs {:.0}", self.nc, self.nb)
    }
}

/// Judges the 5xx share.
fn judge_errors(b: &SideStats, c: &SideStats, n: &Names<'_>, enough: bool) -> (Verdict, String) {
    let (pb, pc) = (b.error_rate_pct.unwrap_or(0.0), c.error_rate_pct.unwrap_or(0.0));
    let values = format!(
        "5xx share {} {pc:.2}% ({:.0} of {:.0}) vs {} {pb:.2}% ({:.0} of {:.0})",
        n.candidate, c.errors_5xx, c.requests, n.baseline, b.errors_5xx, b.requests
    );
    if !enough {
        return (Verdict::InsufficientData, format!("{values}: fewer than {MIN_REQUESTS:.0} requests on a side"));
    }
    let Some(t) = two_proportion_z(b.errors_5xx, b.requests, c.errors_5xx, c.requests) else {
        return (Verdict::InsufficientData, values);
    };
    let test = format!("z = {:.2}, p = {:.4}", t.z, t.p_value);
    let worse = t.z > 0.0 && t.p_value < ALPHA;
    let diff = pc - pb;
    if worse && diff > ERROR_FAIL_POINTS {
        (Verdict::Fail, format!("{values}; {test}: significantly worse by {diff:.2} points (> {ERROR_FAIL_POINTS})"))
    } else if worse {
        (Verdict::Warn, format!("{values}; {test}: significantly worse by {diff:.2} points"))
    } else {
        (Verdict::Pass, format!("{values}; {test}: not significantly worse"))
    }
}

/// Judges the p95 latency ratio.
fn judge_p95(b: &SideStats, c: &SideStats, n: &Names<'_>, enough: bool) -> (Verdict, String) {
    let fmt = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), |v| format!("{v:.0} ms"));
    let values = format!(
        "p95 {} {} vs {} {} ({})",
        n.candidate,
        fmt(c.latency_p95_ms),
        n.baseline,
        fmt(b.latency_p95_ms),
        n.sizes()
    );
    if !enough {
        return (Verdict::InsufficientData, format!("{values}: fewer than {MIN_REQUESTS:.0} requests on a side"));
    }
    let (Some(pb), Some(pc)) = (b.latency_p95_ms, c.latency_p95_ms) else {
        return (Verdict::InsufficientData, format!("{values}: no latency histogram"));
    };
    if pb <= 0.0 {
        return (Verdict::Pass, format!("{values}: baseline p95 is 0, no ratio"));
    }
    let ratio = pc / pb;
    let v = if ratio > P95_FAIL_RATIO {
        Verdict::Fail
    } else if ratio > P95_WARN_RATIO {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    let limit = match v {
        Verdict::Fail => format!("> {P95_FAIL_RATIO}x"),
        Verdict::Warn => format!("> {P95_WARN_RATIO}x"),
        _ => format!("<= {P95_WARN_RATIO}x"),
    };
    (v, format!("{values}: {ratio:.2}x the baseline ({limit})"))
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Worst verdict of the gated metrics, or `insufficient_data`.
    pub verdict: Verdict,
    /// Baseline variant.
    pub baseline: String,
    /// Candidate variant.
    pub candidate: String,
    /// Window length in seconds.
    pub window_seconds: f64,
    /// Seconds of the window both sides have data for (the shorter side's coverage): a
    /// comparison right after start-up says how little it rests on.
    pub covered_seconds: f64,
    /// Requests on the baseline side.
    pub baseline_requests: f64,
    /// Requests on the candidate side.
    pub candidate_requests: f64,
    /// Reasons of every gated metric.
    pub reasons: Vec<String>,
    /// Every metric side by side.
    pub metrics: Vec<MetricRow>,
    /// Raw numbers of the baseline.
    pub baseline_stats: SideStats,
    /// Raw numbers of the candidate.
    pub candidate_stats: SideStats,
}

/// Compares `candidate` with `baseline` over a window of `window_s` seconds.
pub fn compare(baseline: &str, b: SideStats, candidate: &str, c: SideStats, window_s: f64) -> Comparison {
    let names = Names { baseline, candidate, nb: b.requests, nc: c.requests };
    let enough = b.requests >= MIN_REQUESTS && c.requests >= MIN_REQUESTS;
    let (ev, er) = judge_errors(&b, &c, &names, enough);
    let (lv, lr) = judge_p95(&b, &c, &names, enough);
    let mut errors = row("error_rate_pct", "Error rate (5xx)", "%", b.error_rate_pct, c.error_rate_pct);
    errors.verdict = Some(ev);
    errors.reason = Some(er.clone());
    let mut p95 = row("latency_p95_ms", "Latency p95", "ms", b.latency_p95_ms, c.latency_p95_ms);
    p95.verdict = Some(lv);
    p95.reason = Some(lr.clone());
    let verdict = if enough { ev.max(lv) } else { Verdict::InsufficientData };
    let metrics = vec![
        row("requests", "Requests (sample size)", "req", Some(b.requests), Some(c.requests)),
        row("req_rate", "Request rate", "req/s", Some(b.req_rate), Some(c.req_rate)),
        errors,
        row("latency_p50_ms", "Latency p50", "ms", b.latency_p50_ms, c.latency_p50_ms),
        p95,
        row("latency_p99_ms", "Latency p99", "ms", b.latency_p99_ms, c.latency_p99_ms),
        row("ttft_p95_ms", "TTFT p95", "ms", b.ttft_p95_ms, c.ttft_p95_ms),
        row("token_rate_in", "Tokens in", "tok/s", Some(b.token_rate_in), Some(c.token_rate_in)),
        row("token_rate_out", "Tokens out", "tok/s", Some(b.token_rate_out), Some(c.token_rate_out)),
        row("cost_per_hour_usd", "Cost", "USD/h", Some(b.cost_per_hour_usd), Some(c.cost_per_hour_usd)),
    ];
    Comparison {
        verdict,
        baseline: baseline.to_owned(),
        candidate: candidate.to_owned(),
        window_seconds: window_s,
        covered_seconds: b.covered_seconds.min(c.covered_seconds),
        baseline_requests: b.requests,
        candidate_requests: c.requests,
        reasons: vec![er, lr],
        metrics,
        baseline_stats: b,
        candidate_stats: c,
    }
}

/// The default candidate: the one variant other than `baseline`, if there is exactly one.
pub fn default_candidate<'a>(variants: impl IntoIterator<Item = &'a str>, baseline: &str) -> Option<&'a str> {
    let mut others = variants.into_iter().filter(|v| *v != baseline);
    let first = others.next()?;
    others.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(requests: f64, errors: f64, p95: Option<f64>) -> SideStats {
        SideStats {
            requests,
            errors_5xx: errors,
            error_rate_pct: (requests > 0.0).then(|| 100.0 * errors / requests),
            latency_p95_ms: p95,
            ..SideStats::default()
        }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn z_test_matches_hand_computed_values() {
        // 10/1000 vs 25/1000: pooled 0.0175, se = sqrt(0.0175 * 0.9825 * 0.002) = 0.0058641,
        // z = 0.015 / 0.0058641 = 2.5579, two-sided p = 0.01053.
        let t = two_proportion_z(10.0, 1000.0, 25.0, 1000.0).unwrap();
        assert!(close(t.z, 2.5579, 1e-3), "z = {}", t.z);
        assert!(close(t.p_value, 0.01053, 1e-4), "p = {}", t.p_value);
        // Symmetric: swapping sides flips the sign, keeps p.
        let s = two_proportion_z(25.0, 1000.0, 10.0, 1000.0).unwrap();
        assert!(close(s.z, -t.z, 1e-12) && close(s.p_value, t.p_value, 1e-12));
    }

    #[test]
    fn normal_tail_matches_tables() {
        assert!(close(normal_sf(0.0), 0.5, 1e-7));
        assert!(close(normal_sf(1.959_964), 0.025, 1e-6));
        assert!(close(normal_sf(1.644_854), 0.05, 1e-6));
        assert!(close(normal_sf(3.0), 0.001_349_9, 1e-6));
        assert!(close(normal_sf(-1.0), 0.841_344_7, 1e-6));
    }

    #[test]
    fn degenerate_z_tests_are_not_evidence() {
        assert_eq!(two_proportion_z(0.0, 500.0, 0.0, 500.0), Some(ZTest { z: 0.0, p_value: 1.0 }));
        assert_eq!(two_proportion_z(1.0, 0.0, 0.0, 500.0), None);
    }

    #[test]
    fn fewer_than_100_requests_is_insufficient_data() {
        let c = compare("production", side(5000.0, 0.0, Some(200.0)), "canary", side(99.0, 50.0, Some(9000.0)), 900.0);
        assert_eq!(c.verdict, Verdict::InsufficientData);
        assert!(c.metrics.iter().filter_map(|m| m.verdict).all(|v| v == Verdict::InsufficientData));
        assert!(c.reasons[0].contains("50 of 99") && c.reasons[0].contains("0 of 5000"), "{}", c.reasons[0]);
    }

    #[test]
    fn error_share_fails_warns_and_passes_by_significance_and_size() {
        // 1.0% vs 2.5% on 1000 each: significant (p = 0.0105) and 1.5 points worse: fail.
        let fail =
            compare("production", side(1000.0, 10.0, Some(100.0)), "canary", side(1000.0, 25.0, Some(100.0)), 60.0);
        assert_eq!(fail.verdict, Verdict::Fail);
        // 1.0% vs 1.5% on 20000 each: significant (z = 4.4) but only 0.5 points: warn.
        let warn =
            compare("production", side(20000.0, 200.0, Some(100.0)), "canary", side(20000.0, 300.0, Some(100.0)), 60.0);
        assert_eq!(warn.metrics[2].verdict, Some(Verdict::Warn), "{:?}", warn.reasons);
        assert_eq!(warn.verdict, Verdict::Warn);
        // 2 of 200 vs 5 of 200: 1.5 points worse but not significant (p = 0.25): pass.
        let pass = compare("production", side(200.0, 2.0, Some(100.0)), "canary", side(200.0, 5.0, Some(100.0)), 60.0);
        assert_eq!(pass.verdict, Verdict::Pass, "{:?}", pass.reasons);
        // A better candidate never fails, however significant.
        let better =
            compare("production", side(5000.0, 500.0, Some(100.0)), "canary", side(5000.0, 5.0, Some(100.0)), 60.0);
        assert_eq!(better.verdict, Verdict::Pass);
    }

    #[test]
    fn p95_thresholds_are_ratios_of_the_baseline() {
        let at = |c: f64| {
            compare("production", side(1000.0, 0.0, Some(200.0)), "canary", side(1000.0, 0.0, Some(c)), 60.0).verdict
        };
        assert_eq!(at(300.0), Verdict::Pass); // exactly 1.5x is not above
        assert_eq!(at(301.0), Verdict::Warn);
        assert_eq!(at(400.0), Verdict::Warn); // exactly 2x is not above
        assert_eq!(at(401.0), Verdict::Fail);
        assert_eq!(at(100.0), Verdict::Pass);
    }

    #[test]
    fn reasons_name_both_values_and_sample_sizes() {
        let c = compare("production", side(1000.0, 10.0, Some(200.0)), "canary", side(800.0, 30.0, Some(500.0)), 60.0);
        assert!(c.reasons[0].contains("canary 3.75% (30 of 800)"), "{}", c.reasons[0]);
        assert!(c.reasons[0].contains("production 1.00% (10 of 1000)"), "{}", c.reasons[0]);
        assert!(c.reasons[1].contains("500 ms") && c.reasons[1].contains("200 ms"), "{}", c.reasons[1]);
        assert!(c.reasons[1].contains("n = 800 vs 1000"), "{}", c.reasons[1]);
        assert_eq!(c.verdict, Verdict::Fail);
    }

    #[test]
    fn deltas_are_absolute_and_relative() {
        let c = compare("production", side(1000.0, 10.0, Some(200.0)), "canary", side(1000.0, 20.0, Some(300.0)), 60.0);
        let p95 = c.metrics.iter().find(|m| m.metric == "latency_p95_ms").unwrap();
        assert_eq!(p95.delta, Some(100.0));
        assert_eq!(p95.delta_pct, Some(50.0));
        let json = serde_json::to_value(&c).unwrap();
        // 1% vs 2% on 1000 each: z = 1.84, p = 0.066, not significant; p95 exactly 1.5x: pass.
        assert_eq!(json["verdict"], "pass");
    }

    #[test]
    fn default_candidate_only_when_unique() {
        assert_eq!(default_candidate(["canary", "production"], "production"), Some("canary"));
        assert_eq!(default_candidate(["canary", "production", "test"], "production"), None);
        assert_eq!(default_candidate(["production"], "production"), None);
    }

    #[test]
    fn side_stats_come_from_window_counts() {
        let mut counts = Counts::default();
        counts.requests.insert("200".into(), 90.0);
        counts.requests.insert("503".into(), 10.0);
        counts.requests.insert("429".into(), 20.0);
        let s = SideStats::from_counts(&counts, 60.0);
        assert_eq!(s.requests, 120.0);
        assert_eq!(s.errors_5xx, 10.0);
        assert!(close(s.error_rate_pct.unwrap(), 100.0 / 12.0, 1e-12));
        assert!(close(s.req_rate, 2.0, 1e-12));
        assert_eq!(s.latency_p95_ms, None);
    }
}
