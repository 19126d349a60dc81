//! What each field of a point must be, read from the engine itself with PromQL written here,
//! bucket by bucket on zai-dash's grid (bucket ends, epoch-aligned, `query_range` with the
//! bucket width as step), and the comparison of zai-dash's answers with it.
//!
//! The definitions are README's ("Source mode" and the point fields of `/api/metrics`), the
//! same as the accuracy suite's for SQLite mode (`tests/accuracy/fields.rs`), with the rate
//! range of source mode: a bucket of width `W` is read over `R = max(W, 2 × scrape interval)`
//! (a rate needs two samples).
//!
//! | field | PromQL at the bucket's end |
//! |---|---|
//! | `req_rate`, token, cost, rejection, retry (not `reason="retry"`), upstream error rates | `sum by (variant) (rate(x[R]))` |
//! | `status_code_rates` | `sum by (variant, status_code) (rate(requests[R]))`, every code the engine has |
//! | `requests` | `req_rate × W` |
//! | `error_rate_pct` | `100 × 5xx rate / all rate` (`null` without requests) |
//! | `latency_p*`, `ttft_p*`, `tpot_p*` | `1000 × histogram_quantile(q, sum by (variant, le) (rate(x_bucket[R])))` |
//! | size averages | `rate(x_sum[R]) / rate(x_count[R])` summed by variant |
//! | gauges | `sum_over_time((sum by (variant) (last_over_time(g[L])))[W-1ms:P]) / (W/P)`: each raw instant's sum over pods, averaged over the bucket, absent pods counting 0 (P the raw point width, `L = max(P, 2 × scrape) - 1`) |
//! | `worker_utilization` | the two gauges above, divided (0 without workers) |
//! | `pods` | instances with a `zai_proxy_build_info` sample in the last `R - 1 ms` |
//! | `quota` | per window the `credit_limit` series, else `tokens_limit`, highest over pods of `last_over_time(q[L])`; age the highest, the gate open at 1, enforcement when a gate exists |
//! | the running totals (`requests_2xx`, `tokens_input`, ...) | `null`: an engine has no starting point (README, "Fields that are null in source mode") |
//!
//! Numbers agree when they are within 1e-9 of each other (relative): both sides read the same
//! samples, so only the order of floating-point sums may differ. Every comparison is counted
//! per field; a failure is kept, not thrown, so one run shows every broken field at once.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::engine::Engine;
use super::tally::{Tally, same_number};

/// A point's key: variant and bucket end.
pub type Key = (String, i64);

/// The running totals: always `null` in source mode.
pub const NULL_FIELDS: [&str; 16] = [
    "requests_2xx",
    "requests_4xx",
    "requests_5xx",
    "tokens_input",
    "tokens_output",
    "tokens_cache_read",
    "tokens_cache_write",
    "estimated_cost_usd_input",
    "estimated_cost_usd_output",
    "estimated_cost_usd_cache_read",
    "estimated_cost_usd_cache_write",
    "rate_limit_rejections",
    "rate_limit_adj_increase",
    "rate_limit_adj_decrease",
    "upstream_errors",
    "retry_attempts",
];

/// Fields that are `null` when there is nothing to measure (no request, no observation).
const OPTIONAL: [&str; 12] = [
    "error_rate_pct",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "ttft_p50",
    "ttft_p95",
    "ttft_p99",
    "tpot_p50",
    "tpot_p95",
    "tpot_p99",
    "request_size_avg",
    "response_size_avg",
];

/// The grid of one answer: bucket width, raw point width, the engine's scrape interval; and
/// the pod (`instance`) of a per-pod view.
#[derive(Debug, Clone)]
pub struct Grid {
    pub width_ms: i64,
    pub point_ms: i64,
    pub scrape_ms: i64,
    pub pod: Option<String>,
}

impl Grid {
    /// `family{extra..., instance="pod"}`.
    fn sel(&self, family: &str, extra: &[&str]) -> String {
        let mut matchers: Vec<String> = extra.iter().map(|m| (*m).to_owned()).collect();
        matchers.extend(self.pod.iter().map(|p| format!("instance=\"{p}\"")));
        if matchers.is_empty() { family.to_owned() } else { format!("{family}{{{}}}", matchers.join(",")) }
    }

    fn rate_range(&self) -> String {
        format!("{}ms", self.width_ms.max(2 * self.scrape_ms))
    }

    fn gauge(&self, family: &str) -> String {
        let n = self.width_ms / self.point_ms;
        assert!(self.width_ms % self.point_ms == 0 && n <= 60, "a gauge is read at every raw instant");
        format!(
            "sum_over_time((sum by (variant) (last_over_time({}[{}ms])))[{}ms:{}ms]) / {n}",
            self.sel(family, &[]),
            self.lookback_ms(),
            self.width_ms - 1,
            self.point_ms
        )
    }

    fn lookback_ms(&self) -> i64 {
        self.point_ms.max(2 * self.scrape_ms) - 1
    }

    /// The scalar fields of a point and their PromQL.
    fn scalar_fields(&self) -> Vec<(&'static str, String)> {
        let r = self.rate_range();
        let rate_of =
            |family: &str, extra: &[&str]| format!("sum by (variant) (rate({}[{r}]))", self.sel(family, extra));
        let rate = |family: &str| rate_of(family, &[]);
        let requests = rate("zai_proxy_requests_total");
        let quantile = |q: f64, h: &str| {
            let buckets = self.sel(&format!("{h}_bucket"), &[]);
            format!("1000 * histogram_quantile({q}, sum by (variant, le) (rate({buckets}[{r}])))")
        };
        let mean = |h: &str| format!("{} / {}", rate(&format!("{h}_sum")), rate(&format!("{h}_count")));
        let seconds = self.width_ms as f64 / 1000.0;
        let (duration, ttft, tpot) = (
            "zai_proxy_request_duration_seconds",
            "zai_proxy_time_to_first_token_seconds",
            "zai_proxy_time_per_output_token_seconds",
        );
        let tokens = |d: &str| rate_of("zai_proxy_tokens_total", &[&format!("direction=\"{d}\"")]);
        vec![
            ("req_rate", requests.clone()),
            ("requests", format!("{requests} * {seconds}")),
            (
                "error_rate_pct",
                format!(
                    "(100 * {} / {requests}) or on (variant) (0 * {requests})",
                    rate_of("zai_proxy_requests_total", &["status_code=~\"5..\""])
                ),
            ),
            ("latency_p50", quantile(0.5, duration)),
            ("latency_p95", quantile(0.95, duration)),
            ("latency_p99", quantile(0.99, duration)),
            ("ttft_p50", quantile(0.5, ttft)),
            ("ttft_p95", quantile(0.95, ttft)),
            ("ttft_p99", quantile(0.99, ttft)),
            ("tpot_p50", quantile(0.5, tpot)),
            ("tpot_p95", quantile(0.95, tpot)),
            ("tpot_p99", quantile(0.99, tpot)),
            ("request_size_avg", mean("zai_proxy_request_size_bytes")),
            ("response_size_avg", mean("zai_proxy_response_size_bytes")),
            ("token_rate_in", tokens("input")),
            ("token_rate_out", tokens("output")),
            ("token_rate_cache_read", tokens("cache_read")),
            ("token_rate_cache_write", tokens("cache_write")),
            ("cost_rate_usd", rate("zai_proxy_estimated_cost_usd_total")),
            ("rejection_rate", rate("zai_proxy_rate_limit_rejections_total")),
            ("retry_rate", rate_of("zai_proxy_retry_attempts_total", &["reason!=\"retry\""])),
            ("upstream_error_rate", rate("zai_proxy_upstream_errors_total")),
            ("concurrent_requests", self.gauge("zai_proxy_concurrent_requests")),
            ("max_workers", self.gauge("zai_proxy_max_workers")),
            ("rate_limit_rps", self.gauge("zai_proxy_rate_limit_requests_per_second")),
            (
                "pods",
                format!(
                    "count by (variant) (count by (variant, instance) (count_over_time({}[{}ms])))",
                    self.sel("zai_proxy_build_info", &[]),
                    self.width_ms.max(2 * self.scrape_ms) - 1
                ),
            ),
        ]
    }
}

/// The engine's answer for every point of a window.
#[derive(Debug, Default)]
pub struct Expected {
    /// Every bucket any of the queries has a sample for.
    pub keys: BTreeSet<Key>,
    scalars: BTreeMap<&'static str, BTreeMap<Key, f64>>,
    codes: BTreeMap<Key, BTreeMap<String, f64>>,
    /// `(family part, window, limit type)` -> value.
    quota: BTreeMap<Key, BTreeMap<(String, String, String), f64>>,
}

impl Expected {
    /// Reads the buckets ending at `first`, `first + width`, ... `last` from `engine`.
    pub async fn read(engine: &Engine, grid: &Grid, first: i64, last: i64) -> Self {
        let mut out = Self::default();
        let step = grid.width_ms;
        for (field, expr) in grid.scalar_fields() {
            let mut values = BTreeMap::new();
            for (labels, samples) in engine.range(&expr, first, last, step).await {
                for (ts, v) in samples {
                    let key = (labels.get("variant").cloned().unwrap_or_default(), ts);
                    out.keys.insert(key.clone());
                    assert!(values.insert(key, v).is_none(), "{field}: two series of one variant: {expr}");
                }
            }
            out.scalars.insert(field, values);
        }
        let codes = format!(
            "sum by (variant, status_code) (rate({}[{}]))",
            grid.sel("zai_proxy_requests_total", &[]),
            grid.rate_range()
        );
        for (labels, samples) in engine.range(&codes, first, last, step).await {
            for (ts, v) in samples {
                let key = (labels["variant"].clone(), ts);
                out.keys.insert(key.clone());
                out.codes.entry(key).or_default().insert(labels["status_code"].clone(), v);
            }
        }
        let l = grid.lookback_ms();
        for (family, part) in [
            ("zai_proxy_quota_usage_ratio", "usage"),
            ("zai_proxy_quota_remaining_ratio", "remaining"),
            ("zai_proxy_quota_reset_time_seconds", "reset"),
            ("zai_proxy_quota_sample_age_seconds", "age"),
            ("zai_proxy_quota_gate_open", "gate"),
            ("zai_proxy_quota_rate_cap", "rate_cap"),
        ] {
            let expr =
                format!("max by (variant, window, limit_type) (last_over_time({}[{l}ms]))", grid.sel(family, &[]));
            for (labels, samples) in engine.range(&expr, first, last, step).await {
                let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
                for (ts, v) in samples {
                    let key = (label("variant"), ts);
                    out.keys.insert(key.clone());
                    out.quota
                        .entry(key)
                        .or_default()
                        .insert((part.to_owned(), label("window"), label("limit_type")), v);
                }
            }
        }
        out
    }

    fn scalar(&self, field: &str, key: &Key) -> Option<f64> {
        self.scalars.get(field).and_then(|m| m.get(key)).copied().filter(|v| v.is_finite())
    }

    /// The point's field as JSON: a number, or `null` when optional and unmeasured.
    fn field(&self, field: &str, key: &Key) -> Option<f64> {
        let v = self.scalar(field, key);
        if OPTIONAL.contains(&field) { v } else { Some(v.unwrap_or(0.0)) }
    }

    fn worker_utilization(&self, key: &Key) -> f64 {
        let (c, m) = (self.field("concurrent_requests", key), self.field("max_workers", key));
        match (c, m) {
            (Some(c), Some(m)) if m > 0.0 => c / m,
            _ => 0.0,
        }
    }

    /// The quota block as zai-dash serializes it, or `null`.
    fn quota(&self, key: &Key) -> Value {
        let Some(parts) = self.quota.get(key) else { return Value::Null };
        let has = |p: &str| parts.keys().any(|k| k.0 == p);
        if !["usage", "remaining", "reset", "age"].iter().any(|p| has(p)) {
            return Value::Null;
        }
        let max = |p: &str| parts.iter().filter(|(k, _)| k.0 == p).map(|(_, v)| *v).reduce(f64::max);
        let mut q = serde_json::Map::new();
        for window in ["five_hour", "weekly"] {
            if let Some(w) = quota_window(parts, window) {
                q.insert(window.into(), w);
            }
        }
        if let Some(age) = max("age") {
            q.insert("sample_age_seconds".into(), json!(age));
        }
        if let Some(gate) = max("gate") {
            q.insert("gate_open".into(), json!(gate >= 1.0));
        }
        q.insert("enforcement".into(), json!(has("gate") || has("rate_cap")));
        Value::Object(q)
    }
}

fn quota_window(parts: &BTreeMap<(String, String, String), f64>, window: &str) -> Option<Value> {
    let ratios = ["usage", "remaining", "reset"];
    let types: BTreeSet<&str> =
        parts.keys().filter(|k| k.1 == window && ratios.contains(&k.0.as_str())).map(|k| k.2.as_str()).collect();
    let chosen = ["credit_limit", "tokens_limit"].into_iter().find(|t| types.contains(t)).or(types.first().copied())?;
    let value = |p: &str| parts.get(&(p.to_owned(), window.to_owned(), chosen.to_owned())).copied();
    let mut w = serde_json::Map::new();
    w.insert("limit_type".into(), json!(chosen));
    for (part, name) in [("usage", "usage_ratio"), ("remaining", "remaining_ratio")] {
        if let Some(v) = value(part) {
            w.insert(name.into(), json!(v));
        }
    }
    if let Some(v) = value("reset").filter(|v| *v > 0.0) {
        w.insert("reset_time_unix".into(), json!(v));
    }
    Some(Value::Object(w))
}

/// The scalar fields compared in every point, and the keys a point may have at all.
pub fn compared_fields(grid: &Grid) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = grid.scalar_fields().into_iter().map(|(f, _)| f).collect();
    names.push("worker_utilization");
    names
}

fn key_of(p: &Value) -> Key {
    (p["variant"].as_str().unwrap_or_default().to_owned(), p["timestamp"].as_i64().unwrap_or(i64::MIN))
}

/// Compares every point of `points` with `expected`: the same buckets (no missing, no extra),
/// every field, `null` where source mode has nothing to say, and no field nothing checks.
pub fn check_points(tally: &mut Tally, area: &str, grid: &Grid, points: &[Value], expected: &Expected) {
    let got: BTreeSet<Key> = points.iter().map(key_of).collect();
    if got.len() != points.len() {
        tally.fail(area, format!("{} points for {} buckets: a bucket twice", points.len(), got.len()));
    }
    let missing: Vec<&Key> = expected.keys.difference(&got).collect();
    let extra: Vec<&Key> = got.difference(&expected.keys).collect();
    if !missing.is_empty() || !extra.is_empty() {
        tally.fail(
            area,
            format!(
                "{} buckets, the engine has {}: missing {missing:?}, extra {extra:?}",
                got.len(),
                expected.keys.len()
            ),
        );
    }
    let fields = compared_fields(grid);
    for p in points {
        let key = key_of(p);
        if !expected.keys.contains(&key) {
            continue;
        }
        let at = format!("{} @ {}", key.0, key.1);
        for f in &fields {
            let want = if *f == "worker_utilization" {
                Some(expected.worker_utilization(&key))
            } else {
                expected.field(f, &key)
            };
            tally.num(area, f, &at, &p[*f], want);
        }
        for f in NULL_FIELDS {
            tally.value(area, &format!("null {f}"), &at, &p[f], &Value::Null);
        }
        check_codes(tally, area, &at, p, expected.codes.get(&key));
        tally.value(area, "quota", &at, &p["quota"], &expected.quota(&key));
        count_quota_parts(tally, area, &p["quota"]);
        for k in p.as_object().map(|o| o.keys()).into_iter().flatten() {
            let known = ["timestamp", "variant", "status_code_rates", "quota"].contains(&k.as_str())
                || fields.contains(&k.as_str())
                || NULL_FIELDS.contains(&k.as_str());
            if !known {
                tally.fail(area, format!("{at}: field {k} is not compared with the engine"));
            }
        }
    }
}

fn check_codes(tally: &mut Tally, area: &str, at: &str, p: &Value, want: Option<&BTreeMap<String, f64>>) {
    let empty = serde_json::Map::new();
    let got = p["status_code_rates"].as_object().unwrap_or(&empty);
    let want_keys: BTreeSet<&String> = want.map(|w| w.keys().collect()).unwrap_or_default();
    let got_keys: BTreeSet<&String> = got.keys().collect();
    tally.count(area, "status_code_rates codes", got_keys == want_keys, || {
        format!("{at}: codes {got_keys:?}, the engine has {want_keys:?}")
    });
    for (code, v) in want.into_iter().flatten() {
        let want = Some(if v.is_finite() { *v } else { 0.0 });
        tally.num(area, &format!("status_code_rates.{code}"), at, &got.get(code).cloned().unwrap_or_default(), want);
    }
}

/// Counts the quota's parts compared (the block is compared whole), so a part that went
/// missing on both sides still shows up in the counts.
fn count_quota_parts(tally: &mut Tally, area: &str, q: &Value) {
    for path in [
        "five_hour.usage_ratio",
        "five_hour.remaining_ratio",
        "five_hour.reset_time_unix",
        "weekly.usage_ratio",
        "weekly.limit_type",
        "sample_age_seconds",
        "gate_open",
    ] {
        let present = path.split('.').try_fold(q, |v, k| v.get(k)).is_some();
        if present {
            tally.seen(area, &format!("quota.{path}"));
        }
    }
}

/// Fields that must move from one bucket to the next: traffic, latency mix, sizes and gauges
/// all swing, so a bucket read one step early or late, or over a shorter range, differs.
const MOVING: [&str; 25] = [
    "req_rate",
    "error_rate_pct",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "ttft_p50",
    "ttft_p95",
    "ttft_p99",
    "tpot_p50",
    "tpot_p95",
    "tpot_p99",
    "request_size_avg",
    "response_size_avg",
    "token_rate_in",
    "token_rate_out",
    "token_rate_cache_read",
    "token_rate_cache_write",
    "cost_rate_usd",
    "rejection_rate",
    "retry_rate",
    "upstream_error_rate",
    "concurrent_requests",
    "max_workers",
    "rate_limit_rps",
    "worker_utilization",
];

/// The harness' own check: in at least three of four pairs of neighbouring buckets of a
/// variant, each moving field differs (else a comparison could not see a shifted bucket).
pub fn check_motion(tally: &mut Tally, area: &str, points: &[Value]) {
    for f in MOVING {
        let (mut pairs, mut moved) = (0, 0);
        for variant in ["production", "canary"] {
            let values: Vec<Option<f64>> =
                points.iter().filter(|p| p["variant"] == variant).map(|p| p[f].as_f64()).collect();
            for w in values.windows(2) {
                pairs += 1;
                moved += usize::from(!matches!((w[0], w[1]), (Some(a), Some(b)) if same_number(a, b)));
            }
        }
        tally.count(&format!("harness: {area}"), &format!("{f} moves"), 4 * moved >= 3 * pairs && pairs > 0, || {
            format!("changes in {moved} of {pairs} pairs of neighbouring buckets")
        });
    }
}
