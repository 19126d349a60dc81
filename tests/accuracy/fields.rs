//! The fields the pages show, each with the PromQL that defines it and the same definition
//! evaluated on the fakes' catalogue (for the explained spread).
//!
//! | point field | PromQL over a bucket of width W ending at the point's timestamp |
//! |---|---|
//! | rates (`req_rate`, `status_code_rates`, token, cost, rejection, retry, upstream error) | `sum by (variant) (increase(x[W])) / W` |
//! | `requests` (sample size) | `sum by (variant) (increase(x[W]))` |
//! | `error_rate_pct` | `100 * sum(increase(5xx[W])) / sum(increase(all[W]))` |
//! | `latency_p*`, `ttft_p*`, `tpot_p*` (ms) | `1000 * histogram_quantile(q, sum by (variant, le) (increase(x_bucket[W])))` |
//! | `request_size_avg`, `response_size_avg` | `sum(increase(x_sum[W])) / sum(increase(x_count[W]))` |
//! | gauges | `sum_over_time((sum by (variant) (last_over_time(g[R-1ms])))[W-1ms:R]) / (W/R)`: per raw bucket R the sum of each present pod's last value, averaged over the W/R raw buckets with absent pods counting 0 (time-weighted by presence) |
//! | `worker_utilization` | the concurrency gauge over the max-workers gauge, both as above |
//! | cumulative fields | `sum by (variant) (increase(x[10m]))` (the whole run) |
//! | `quota.*` | `max by (variant) (last_over_time(q[R-1ms]))` at raw points; at every width, the value every fake pod exports (the quota is account-wide) |

use serde_json::Value;

use super::model::{Op, PodRun, Sel, count, quantile};

/// What kind of number a field is.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Rate(Sel),
    Count(Sel),
    Ratio(Sel, Sel, f64),
    /// Histogram family and quantile; milliseconds.
    Quantile(&'static str, f64),
    Gauge(&'static str),
    Util,
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// JSON path in a point (`status_code_rates.503`, `quota.five_hour.usage_ratio`).
    pub name: &'static str,
    /// Summary group.
    pub group: &'static str,
    pub kind: Kind,
}

pub const REQ: Sel = Sel::new("zai_proxy_requests_total");
pub const REQ_5XX: Sel = Sel::with("zai_proxy_requests_total", &[("status_code", Op::Class, "5")]);
pub const COST: Sel = Sel::new("zai_proxy_estimated_cost_usd_total");
pub const DURATION: &str = "zai_proxy_request_duration_seconds";
pub const TTFT: &str = "zai_proxy_time_to_first_token_seconds";
pub const TPOT: &str = "zai_proxy_time_per_output_token_seconds";

const fn code(c: &'static [(&'static str, Op, &'static str)]) -> Kind {
    Kind::Rate(Sel::with("zai_proxy_requests_total", c))
}

const fn dir(name: &'static str, d: &'static [(&'static str, Op, &'static str)]) -> Sel {
    Sel::with(name, d)
}

const IN: &[(&str, Op, &str)] = &[("direction", Op::Eq, "input")];
const OUT: &[(&str, Op, &str)] = &[("direction", Op::Eq, "output")];
const CR: &[(&str, Op, &str)] = &[("direction", Op::Eq, "cache_read")];
const CW: &[(&str, Op, &str)] = &[("direction", Op::Eq, "cache_write")];

/// The fields of a point that are computed over its bucket.
pub fn point_fields() -> Vec<Field> {
    let f = |name, group, kind| Field { name, group, kind };
    vec![
        f("req_rate", "rates", Kind::Rate(REQ)),
        f("status_code_rates.200", "rates", code(&[("status_code", Op::Eq, "200")])),
        f("status_code_rates.422", "rates", code(&[("status_code", Op::Eq, "422")])),
        f("status_code_rates.429", "rates", code(&[("status_code", Op::Eq, "429")])),
        f("status_code_rates.500", "rates", code(&[("status_code", Op::Eq, "500")])),
        f("status_code_rates.502", "rates", code(&[("status_code", Op::Eq, "502")])),
        f("status_code_rates.503", "rates", code(&[("status_code", Op::Eq, "503")])),
        f("token_rate_in", "rates", Kind::Rate(dir("zai_proxy_tokens_total", IN))),
        f("token_rate_out", "rates", Kind::Rate(dir("zai_proxy_tokens_total", OUT))),
        f("token_rate_cache_read", "rates", Kind::Rate(dir("zai_proxy_tokens_total", CR))),
        f("token_rate_cache_write", "rates", Kind::Rate(dir("zai_proxy_tokens_total", CW))),
        f("cost_rate_usd", "rates", Kind::Rate(COST)),
        f("rejection_rate", "rates", Kind::Rate(Sel::new("zai_proxy_rate_limit_rejections_total"))),
        f(
            "retry_rate",
            "rates",
            Kind::Rate(Sel::with("zai_proxy_retry_attempts_total", &[("reason", Op::Ne, "retry")])),
        ),
        f("upstream_error_rate", "rates", Kind::Rate(Sel::new("zai_proxy_upstream_errors_total"))),
        f("requests", "sample size", Kind::Count(REQ)),
        f("error_rate_pct", "error %", Kind::Ratio(REQ_5XX, REQ, 100.0)),
        f("latency_p50", "quantiles", Kind::Quantile(DURATION, 0.5)),
        f("latency_p95", "quantiles", Kind::Quantile(DURATION, 0.95)),
        f("latency_p99", "quantiles", Kind::Quantile(DURATION, 0.99)),
        f("ttft_p50", "quantiles", Kind::Quantile(TTFT, 0.5)),
        f("ttft_p95", "quantiles", Kind::Quantile(TTFT, 0.95)),
        f("ttft_p99", "quantiles", Kind::Quantile(TTFT, 0.99)),
        f("tpot_p50", "quantiles", Kind::Quantile(TPOT, 0.5)),
        f("tpot_p95", "quantiles", Kind::Quantile(TPOT, 0.95)),
        f("tpot_p99", "quantiles", Kind::Quantile(TPOT, 0.99)),
        f(
            "request_size_avg",
            "size averages",
            Kind::Ratio(
                Sel::new("zai_proxy_request_size_bytes_sum"),
                Sel::new("zai_proxy_request_size_bytes_count"),
                1.0,
            ),
        ),
        f(
            "response_size_avg",
            "size averages",
            Kind::Ratio(
                Sel::new("zai_proxy_response_size_bytes_sum"),
                Sel::new("zai_proxy_response_size_bytes_count"),
                1.0,
            ),
        ),
        f("concurrent_requests", "gauges", Kind::Gauge("zai_proxy_concurrent_requests")),
        f("max_workers", "gauges", Kind::Gauge("zai_proxy_max_workers")),
        f("rate_limit_rps", "gauges", Kind::Gauge("zai_proxy_rate_limit_requests_per_second")),
        f("worker_utilization", "gauges", Kind::Util),
    ]
}

/// One number of a point's quota block. The quota is account-wide: every fake pod exports the
/// same values (`fake::QUOTA`), so every point of every width must show exactly them (never
/// a sum over pods), and Prometheus must read them too.
#[derive(Debug, Clone)]
pub struct QuotaField {
    /// JSON path (`quota.five_hour.usage_ratio`).
    pub path: String,
    /// The gauge and its label matchers, as PromQL.
    pub selector: String,
    /// What every pod exports.
    pub value: f64,
}

impl QuotaField {
    /// The quota value of a raw bucket of `slot` ms in PromQL: any pod's latest (they agree).
    pub fn promql(&self, slot: i64) -> String {
        format!("max by (variant) (last_over_time({}[{}ms]))", self.selector, slot - 1)
    }
}

/// Every quota number a point carries, and its other fields with the exact JSON they must
/// hold: the limit type each window names, and `enforcement: false` (zai-dash derives it: no
/// pod exports a quota gate or rate cap, so `gate_open` is absent too).
pub fn quota_fields() -> (Vec<QuotaField>, Vec<(String, Value)>) {
    let mut numbers = Vec::new();
    let mut limits = Vec::new();
    for (family, limit, window, value) in super::fake::QUOTA {
        let key = match family {
            "zai_proxy_quota_remaining_ratio" => "remaining_ratio",
            "zai_proxy_quota_usage_ratio" => "usage_ratio",
            "zai_proxy_quota_reset_time_seconds" => "reset_time_unix",
            other => panic!("no quota field for {other}"),
        };
        let selector = format!("{family}{{window=\"{window}\",limit_type=\"{limit}\"}}");
        numbers.push(QuotaField { path: format!("quota.{window}.{key}"), selector, value });
        limits.push((format!("quota.{window}.limit_type"), Value::from(limit)));
    }
    limits.sort_by(|a, b| a.0.cmp(&b.0));
    limits.dedup();
    limits.push(("quota.enforcement".into(), Value::Bool(false)));
    numbers.push(QuotaField {
        path: "quota.sample_age_seconds".into(),
        selector: "zai_proxy_quota_sample_age_seconds".into(),
        value: super::fake::QUOTA_SAMPLE_AGE_S,
    });
    (numbers, limits)
}

/// The Go dashboard's cumulative fields: running totals since zai-dash first saw the variant.
pub fn total_fields() -> Vec<Field> {
    let f = |name, sel| Field { name, group: "cumulative", kind: Kind::Count(sel) };
    vec![
        f("requests_2xx", Sel::with("zai_proxy_requests_total", &[("status_code", Op::Class, "2")])),
        f("requests_4xx", Sel::with("zai_proxy_requests_total", &[("status_code", Op::Class, "4")])),
        f("requests_5xx", REQ_5XX),
        f("tokens_input", dir("zai_proxy_tokens_total", IN)),
        f("tokens_output", dir("zai_proxy_tokens_total", OUT)),
        f("tokens_cache_read", dir("zai_proxy_tokens_total", CR)),
        f("tokens_cache_write", dir("zai_proxy_tokens_total", CW)),
        f("estimated_cost_usd_input", dir("zai_proxy_estimated_cost_usd_total", IN)),
        f("estimated_cost_usd_output", dir("zai_proxy_estimated_cost_usd_total", OUT)),
        f("estimated_cost_usd_cache_read", dir("zai_proxy_estimated_cost_usd_total", CR)),
        f("estimated_cost_usd_cache_write", dir("zai_proxy_estimated_cost_usd_total", CW)),
        f("rate_limit_rejections", Sel::new("zai_proxy_rate_limit_rejections_total")),
        f(
            "rate_limit_adj_increase",
            Sel::with("zai_proxy_rate_limit_adjustments_total", &[("direction", Op::Eq, "increase")]),
        ),
        f(
            "rate_limit_adj_decrease",
            Sel::with("zai_proxy_rate_limit_adjustments_total", &[("direction", Op::Eq, "decrease")]),
        ),
        f("upstream_errors", Sel::new("zai_proxy_upstream_errors_total")),
        f("retry_attempts", Sel::with("zai_proxy_retry_attempts_total", &[("reason", Op::Ne, "retry")])),
    ]
}

/// A number at a dotted JSON path (`None` when absent or `null`).
pub fn json_num(v: &Value, path: &str) -> Option<f64> {
    path.split('.').try_fold(v, |v, k| v.get(k)).and_then(Value::as_f64)
}

fn gauge_promql(g: &str, w: i64, slot: i64) -> String {
    format!(
        "sum_over_time((sum by (variant) (last_over_time({g}[{}ms])))[{}ms:{slot}ms]) / {}",
        slot - 1,
        w - 1,
        w / slot
    )
}

impl Field {
    /// The PromQL defining the field over buckets of `w` ms (raw buckets of `slot` ms).
    pub fn promql(&self, w: i64, slot: i64) -> String {
        let inc = |s: &Sel| format!("sum by (variant) (increase({}[{w}ms]))", s.promql());
        let secs = w as f64 / 1000.0;
        match self.kind {
            Kind::Rate(s) => format!("{} / {secs}", inc(&s)),
            Kind::Count(s) => inc(&s),
            Kind::Ratio(n, d, k) => format!("{k} * {} / {}", inc(&n), inc(&d)),
            Kind::Quantile(h, q) => {
                format!("1000 * histogram_quantile({q}, sum by (variant, le) (increase({h}_bucket[{w}ms])))")
            }
            Kind::Gauge(g) => gauge_promql(g, w, slot),
            Kind::Util => format!(
                "({}) / ({})",
                gauge_promql("zai_proxy_concurrent_requests", w, slot),
                gauge_promql("zai_proxy_max_workers", w, slot)
            ),
        }
    }

    /// The field as a function of the pods' coverages (counter-derived kinds only).
    pub fn eval<'a>(&'a self, pods: &'a [&'a PodRun], w_secs: f64) -> impl Fn(&[f64]) -> Option<f64> + 'a {
        // PromQL has no result for a selector that matches no series of the variant.
        let exists = |s: &Sel| pods.iter().any(|p| p.series(s).next().is_some());
        move |covs: &[f64]| match self.kind {
            Kind::Rate(s) => exists(&s).then(|| count(pods, covs, &s) / w_secs),
            Kind::Count(s) => exists(&s).then(|| count(pods, covs, &s)),
            Kind::Ratio(n, d, k) => {
                let den = count(pods, covs, &d);
                (den > 0.0).then(|| k * count(pods, covs, &n) / den)
            }
            Kind::Quantile(h, q) => quantile(pods, covs, h, &[], q).map(|s| s * 1000.0),
            _ => None,
        }
    }
}
