//! The proxy's `zai_proxy_*` families: the same names, types, labels, label values and bucket
//! bounds as zai-proxy (docs/decisions.md, zai-proxy's exposition), printed like client_golang (families sorted by
//! name, series by label values, `le` last, Go `%g` numbers), so the Go dashboard and our
//! collector read it alike. A family with no series prints nothing, as a Go `*Vec` does.
//!
//! Requests to an LLM are few and slow, so a mutex per family is far below any measurable cost.
//! Label values that come from clients cannot grow the exposition without bound (issue 11):
//! `method` is one of a fixed set or `other`; `model` and `path` are cut to
//! [`LABEL_MAX_BYTES`], then capped at [`LABEL_CAP`] distinct values, then `other`. Every
//! limit that trips is counted in `zai_dash_proxy_limit_trips_total{limit}` ([`LimitTrips`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::Method;

use crate::expo::{CONTENT_TYPE, Exposition};
use crate::net::ListenerTrips;

/// Distinct client-controlled label values (models, paths) kept before folding into `other`.
pub(crate) const LABEL_CAP: usize = 50;
pub(crate) use crate::expo::cut_label_value as truncate_label;
/// Methods kept as their own `method` label value; any other is `other`.
pub(crate) const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// The family counting limit trips.
pub(crate) const LIMIT_TRIPS: &str = "zai_dash_proxy_limit_trips_total";

/// A proxy limit that can trip: the `limit` label of [`LIMIT_TRIPS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// A request body not complete within `REQUEST_BODY_TIMEOUT` (408).
    BodyTimeout,
    /// A request body over `MAX_REQUEST_BODY_BYTES` (413).
    BodyTooLarge,
    /// A state-changing POST from another site (403).
    CrossSite,
    /// A path with a `.` or `..` segment (400).
    DotSegment,
    /// A model or path folded into `other` past [`LABEL_CAP`].
    LabelCapped,
    /// A label value cut to [`LABEL_MAX_BYTES`].
    LabelTruncated,
    /// A method outside [`METHODS`], labelled `other`.
    MethodOther,
}

impl Limit {
    const ALL: [Limit; 7] = [
        Limit::BodyTimeout,
        Limit::BodyTooLarge,
        Limit::CrossSite,
        Limit::DotSegment,
        Limit::LabelCapped,
        Limit::LabelTruncated,
        Limit::MethodOther,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Limit::BodyTimeout => "body_timeout",
            Limit::BodyTooLarge => "body_too_large",
            Limit::CrossSite => "cross_site",
            Limit::DotSegment => "dot_segment",
            Limit::LabelCapped => "label_capped",
            Limit::LabelTruncated => "label_truncated",
            Limit::MethodOther => "method_other",
        }
    }
}

/// Counts of limit trips; lock-free, since some trip on every request of a flood.
#[derive(Debug, Default)]
pub struct LimitTrips {
    counts: [AtomicU64; Limit::ALL.len()],
}

impl LimitTrips {
    /// Counts one trip.
    pub(crate) fn add(&self, limit: Limit) {
        self.counts[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Trips so far (tests).
    pub(crate) fn get(&self, limit: Limit) -> u64 {
        self.counts[limit as usize].load(Ordering::Relaxed)
    }

    /// Every limit, at zero too, so an alert can use the series before the first trip; the
    /// listener's own closes (`header_timeout`, `idle_timeout`) come from `listener`.
    fn write(&self, listener: &ListenerTrips, e: &mut Exposition) {
        let mut rows: Vec<(&str, u64)> = Limit::ALL.iter().map(|l| (l.label(), self.get(*l))).collect();
        rows.push(("header_timeout", listener.header_timeouts.load(Ordering::Relaxed)));
        rows.push(("idle_timeout", listener.idle_closes.load(Ordering::Relaxed)));
        rows.sort_unstable();
        e.family(
            LIMIT_TRIPS,
            "Requests or connections stopped by a proxy limit (timeouts, sizes, label bounds, path and origin rules)",
            "counter",
        );
        for (limit, n) in rows {
            e.sample(LIMIT_TRIPS, &[("limit", limit)], n as f64);
        }
    }
}

/// Request duration buckets (seconds).
pub const DURATION_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Request and response size buckets (bytes): 100 x 10^n.
pub(crate) const SIZE_BUCKETS: &[f64] = &[100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
/// Rate limiter wait buckets (seconds).
pub(crate) const WAIT_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Token counting duration buckets (seconds).
pub(crate) const TOKEN_COUNT_BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1];
/// `zai_proxy_token_rate_seconds` buckets.
pub(crate) const TOKEN_RATE_SECONDS_BUCKETS: &[f64] = &[1e-5, 5e-5, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1];
/// `zai_proxy_token_rate` buckets (tokens per second).
pub(crate) const TOKEN_RATE_BUCKETS: &[f64] =
    &[10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0, 50000.0, 100000.0];
/// Time to first token buckets (seconds), LLM-scale up to two minutes.
pub(crate) const TTFT_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0];
/// Time per output token buckets (seconds).
pub(crate) const TPOT_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A labelled counter or gauge family.
#[derive(Debug)]
pub struct Vector {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    series: Mutex<Vec<(Vec<String>, f64)>>,
}

/// Finds the series with these label values without allocating (series per family are few).
fn find<T>(series: &mut [(Vec<String>, T)], values: &[&str]) -> Option<usize> {
    series.iter().position(|(k, _)| k.len() == values.len() && k.iter().zip(values).all(|(a, b)| a == b))
}

fn key(values: &[&str]) -> Vec<String> {
    values.iter().map(|x| (*x).to_owned()).collect()
}

impl Vector {
    const fn new(name: &'static str, kind: &'static str, labels: &'static [&'static str], help: &'static str) -> Self {
        Self { name, help, kind, labels, series: Mutex::new(Vec::new()) }
    }

    fn update(&self, values: &[&str], f: impl FnOnce(&mut f64)) {
        let Ok(mut s) = self.series.lock() else { return };
        match find(&mut s, values) {
            Some(i) => f(&mut s[i].1),
            None => {
                let mut v = 0.0;
                f(&mut v);
                s.push((key(values), v));
            }
        }
    }

    /// Adds `v` to the series with these label values (in the family's label order).
    pub(crate) fn add(&self, values: &[&str], v: f64) {
        self.update(values, |x| *x += v);
    }

    /// Sets the series to `v`.
    pub fn set(&self, values: &[&str], v: f64) {
        self.update(values, |x| *x = v);
    }

    /// Current value of a series (tests, `/health`).
    pub fn get(&self, values: &[&str]) -> f64 {
        let Ok(mut s) = self.series.lock() else { return 0.0 };
        find(&mut s, values).map_or(0.0, |i| s[i].1)
    }

    fn write(&self, e: &mut Exposition) {
        let Ok(mut series) = self.series.lock() else { return };
        if series.is_empty() {
            return;
        }
        series.sort_by(|a, b| a.0.cmp(&b.0)); // client_golang order: by label values
        e.family(self.name, self.help, self.kind);
        for (values, v) in series.iter() {
            let labels: Vec<(&str, &str)> =
                self.labels.iter().copied().zip(values.iter().map(String::as_str)).collect();
            e.sample(self.name, &labels, *v);
        }
    }
}

#[derive(Debug, Clone)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A labelled histogram family with fixed bounds.
#[derive(Debug)]
pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    series: Mutex<Vec<(Vec<String>, Hist)>>,
}

impl HistogramVec {
    const fn new(
        name: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
        help: &'static str,
    ) -> Self {
        Self { name, help, labels, bounds, series: Mutex::new(Vec::new()) }
    }

    /// Records one observation.
    pub(crate) fn observe(&self, values: &[&str], v: f64) {
        if !v.is_finite() {
            return;
        }
        let Ok(mut s) = self.series.lock() else { return };
        let i = find(&mut s, values).unwrap_or_else(|| {
            s.push((key(values), Hist { counts: vec![0; self.bounds.len()], sum: 0.0, count: 0 }));
            s.len() - 1
        });
        let h = &mut s[i].1;
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            h.counts[i] += 1;
        }
        h.sum += v;
        h.count += 1;
    }

    /// Observations of a series (tests).
    pub fn count(&self, values: &[&str]) -> u64 {
        let Ok(mut s) = self.series.lock() else { return 0 };
        find(&mut s, values).map_or(0, |i| s[i].1.count)
    }

    fn write(&self, e: &mut Exposition) {
        let Ok(mut series) = self.series.lock() else { return };
        if series.is_empty() {
            return;
        }
        series.sort_by(|a, b| a.0.cmp(&b.0));
        e.family(self.name, self.help, "histogram");
        let bucket = format!("{}_bucket", self.name);
        for (values, h) in series.iter() {
            let mut labels: Vec<(&str, &str)> =
                self.labels.iter().copied().zip(values.iter().map(String::as_str)).collect();
            let mut cumulative = 0;
            let bounds: Vec<String> = self.bounds.iter().map(|b| crate::expo::go_float(*b)).collect();
            for (le, c) in bounds.iter().zip(&h.counts) {
                cumulative += c;
                labels.push(("le", le));
                e.sample(&bucket, &labels, cumulative as f64);
                labels.pop();
            }
            labels.push(("le", "+Inf"));
            e.sample(&bucket, &labels, h.count as f64);
            labels.pop();
            e.sample(&format!("{}_sum", self.name), &labels, h.sum);
            e.sample(&format!("{}_count", self.name), &labels, h.count as f64);
        }
    }
}

/// Every family the proxy exports.
#[allow(missing_docs)] // each field is the family its name spells (docs/decisions.md, zai-proxy's exposition)
#[derive(Debug)]
pub struct ProxyMetrics {
    pub build_info: Vector,
    pub concurrent_requests: Vector,
    pub estimated_cost_usd: Vector,
    pub max_workers: Vector,
    pub quota_poll: Vector,
    pub quota_remaining: Vector,
    pub quota_reset: Vector,
    pub quota_sample_age: Vector,
    pub quota_usage: Vector,
    pub rate_limit_adjustments: Vector,
    pub rate_limit_rejections: Vector,
    pub rate_limit_rps: Vector,
    pub rate_limit_wait: HistogramVec,
    pub request_duration: HistogramVec,
    pub request_size: HistogramVec,
    pub requests: Vector,
    pub response_size: HistogramVec,
    pub retry_attempts: Vector,
    pub time_per_output_token: HistogramVec,
    pub time_to_first_token: HistogramVec,
    pub token_count_duration: HistogramVec,
    pub token_rate: HistogramVec,
    pub token_rate_seconds: HistogramVec,
    pub tokens: Vector,
    pub upstream_errors: Vector,
    pub worker_utilization: Vector,
    /// `zai_dash_proxy_limit_trips_total`, except the listener's closes.
    pub trips: LimitTrips,
    /// The proxy listener's closes (header and idle timeouts), filled in by `net::serve`.
    pub listener: Arc<ListenerTrips>,
    models: Mutex<Vec<Arc<str>>>,
    paths: Mutex<Vec<Arc<str>>>,
    other: Arc<str>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    /// Every family, empty.
    pub(crate) fn new() -> Self {
        Self {
            build_info: Vector::new(
                "zai_proxy_build_info",
                "gauge",
                &["build_time", "commit", "variant", "version"],
                "Build information including version, variant, commit, and build time",
            ),
            concurrent_requests: Vector::new(
                "zai_proxy_concurrent_requests",
                "gauge",
                &["variant"],
                "Number of requests currently being processed",
            ),
            estimated_cost_usd: Vector::new(
                "zai_proxy_estimated_cost_usd_total",
                "counter",
                &["direction", "model", "pricing_tier", "variant"],
                "Estimated Z.AI API cost in USD by token direction, model, deployment variant, and pricing tier",
            ),
            max_workers: Vector::new(
                "zai_proxy_max_workers",
                "gauge",
                &["variant"],
                "Maximum number of concurrent workers allowed",
            ),
            quota_poll: Vector::new(
                "zai_proxy_quota_poll_total",
                "counter",
                &["result", "variant"],
                "Quota poll outcomes by result (success, error, malformed, stale)",
            ),
            quota_remaining: Vector::new(
                "zai_proxy_quota_remaining_ratio",
                "gauge",
                &["limit_type", "variant", "window"],
                "Remaining fraction of the provider-reported quota after no local policy adjustment",
            ),
            quota_reset: Vector::new(
                "zai_proxy_quota_reset_time_seconds",
                "gauge",
                &["limit_type", "variant", "window"],
                "Provider quota reset time as a Unix timestamp",
            ),
            quota_sample_age: Vector::new(
                "zai_proxy_quota_sample_age_seconds",
                "gauge",
                &["variant"],
                "Age of the last valid account quota sample",
            ),
            quota_usage: Vector::new(
                "zai_proxy_quota_usage_ratio",
                "gauge",
                &["limit_type", "variant", "window"],
                "Normalized provider-reported quota usage ratio by window and limit type",
            ),
            rate_limit_adjustments: Vector::new(
                "zai_proxy_rate_limit_adjustments_total",
                "counter",
                &["direction", "variant"],
                "Total number of rate limit adjustments",
            ),
            rate_limit_rejections: Vector::new(
                "zai_proxy_rate_limit_rejections_total",
                "counter",
                &["client", "variant"],
                "Total number of requests rejected due to proxy capacity, by bounded source bucket",
            ),
            rate_limit_rps: Vector::new(
                "zai_proxy_rate_limit_requests_per_second",
                "gauge",
                &["variant"],
                "Current rate limit in requests per second",
            ),
            rate_limit_wait: HistogramVec::new(
                "zai_proxy_rate_limit_wait_seconds",
                &["client", "variant"],
                WAIT_BUCKETS,
                "Time spent waiting for the rate limiter, by bounded source bucket",
            ),
            request_duration: HistogramVec::new(
                "zai_proxy_request_duration_seconds",
                &["method", "path", "status_code", "variant"],
                DURATION_BUCKETS,
                "Request duration in seconds",
            ),
            request_size: HistogramVec::new(
                "zai_proxy_request_size_bytes",
                &["method", "path", "variant"],
                SIZE_BUCKETS,
                "Request size in bytes",
            ),
            requests: Vector::new(
                "zai_proxy_requests_total",
                "counter",
                &["method", "path", "status_code", "variant"],
                "Total number of requests by method, path, status code, and variant",
            ),
            response_size: HistogramVec::new(
                "zai_proxy_response_size_bytes",
                &["method", "path", "status_code", "variant"],
                SIZE_BUCKETS,
                "Response size in bytes",
            ),
            retry_attempts: Vector::new(
                "zai_proxy_retry_attempts_total",
                "counter",
                &["reason", "variant"],
                "Total number of retry attempts",
            ),
            time_per_output_token: HistogramVec::new(
                "zai_proxy_time_per_output_token_seconds",
                &["model", "variant"],
                TPOT_BUCKETS,
                "Time per output token after the first, in seconds, for streamed responses",
            ),
            time_to_first_token: HistogramVec::new(
                "zai_proxy_time_to_first_token_seconds",
                &["model", "variant"],
                TTFT_BUCKETS,
                "Time from request arrival to the first content token, in seconds, for streamed responses",
            ),
            token_count_duration: HistogramVec::new(
                "zai_proxy_token_count_duration_seconds",
                &["variant"],
                TOKEN_COUNT_BUCKETS,
                "Duration of token counting operations",
            ),
            token_rate: HistogramVec::new(
                "zai_proxy_token_rate",
                &["direction", "model", "variant"],
                TOKEN_RATE_BUCKETS,
                "Token processing rate in tokens per second (throughput). Labels: direction (input/output), model (glm-4, etc.), variant (stable/canary)",
            ),
            token_rate_seconds: HistogramVec::new(
                "zai_proxy_token_rate_seconds",
                &["direction", "model", "variant"],
                TOKEN_RATE_SECONDS_BUCKETS,
                "Token processing rate histogram - tracks time taken to process tokens (lower is faster). Labels: direction (input/output), model (glm-4, etc.), variant (stable/canary)",
            ),
            tokens: Vector::new(
                "zai_proxy_tokens_total",
                "counter",
                &["direction", "model", "pricing_tier", "variant"],
                "Total number of tokens processed by direction (input/output), model, deployment variant, and pricing tier",
            ),
            upstream_errors: Vector::new(
                "zai_proxy_upstream_errors_total",
                "counter",
                &["error_type", "variant"],
                "Total number of upstream errors by type",
            ),
            worker_utilization: Vector::new(
                "zai_proxy_worker_utilization_ratio",
                "gauge",
                &["variant"],
                "Current worker utilization ratio (concurrent_requests/max_workers)",
            ),
            trips: LimitTrips::default(),
            listener: Arc::default(),
            models: Mutex::new(Vec::new()),
            paths: Mutex::new(Vec::new()),
            other: Arc::from("other"),
        }
    }

    /// The model label for `model`: cut to [`LABEL_MAX_BYTES`], capped at [`LABEL_CAP`]
    /// distinct values. Shared, so recording it never allocates.
    pub(crate) fn model_label(&self, model: &str) -> Arc<str> {
        self.bounded(&self.models, model)
    }

    /// The path label for `path`, bounded like [`Self::model_label`].
    pub(crate) fn path_label(&self, path: &str) -> Arc<str> {
        self.bounded(&self.paths, path)
    }

    /// The method label: one of [`METHODS`], else `other`.
    pub(crate) fn method_label(&self, method: &Method) -> &'static str {
        METHODS.iter().find(|m| **m == method.as_str()).copied().unwrap_or_else(|| {
            self.trips.add(Limit::MethodOther);
            "other"
        })
    }

    fn bounded(&self, set: &Mutex<Vec<Arc<str>>>, value: &str) -> Arc<str> {
        let value = match truncate_label(value) {
            Some(cut) => {
                self.trips.add(Limit::LabelTruncated);
                cut
            }
            None => value,
        };
        let Ok(mut seen) = set.lock() else { return self.other.clone() };
        // At most LABEL_CAP values: a scan comparing lengths first beats hashing the value.
        if let Some(known) = seen.iter().find(|k| k.len() == value.len() && ***k == *value) {
            return known.clone();
        }
        if seen.len() < LABEL_CAP {
            let v: Arc<str> = Arc::from(value);
            seen.push(v.clone());
            return v;
        }
        self.trips.add(Limit::LabelCapped);
        self.other.clone()
    }

    /// The exposition, families in name order (`zai_dash_` sorts before `zai_proxy_`).
    pub(crate) fn render(&self) -> String {
        let mut e = Exposition::new();
        self.trips.write(&self.listener, &mut e);
        self.build_info.write(&mut e);
        self.concurrent_requests.write(&mut e);
        self.estimated_cost_usd.write(&mut e);
        self.max_workers.write(&mut e);
        self.quota_poll.write(&mut e);
        self.quota_remaining.write(&mut e);
        self.quota_reset.write(&mut e);
        self.quota_sample_age.write(&mut e);
        self.quota_usage.write(&mut e);
        self.rate_limit_adjustments.write(&mut e);
        self.rate_limit_rejections.write(&mut e);
        self.rate_limit_rps.write(&mut e);
        self.rate_limit_wait.write(&mut e);
        self.request_duration.write(&mut e);
        self.request_size.write(&mut e);
        self.requests.write(&mut e);
        self.response_size.write(&mut e);
        self.retry_attempts.write(&mut e);
        self.time_per_output_token.write(&mut e);
        self.time_to_first_token.write(&mut e);
        self.token_count_duration.write(&mut e);
        self.token_rate.write(&mut e);
        self.token_rate_seconds.write(&mut e);
        self.tokens.write(&mut e);
        self.upstream_errors.write(&mut e);
        self.worker_utilization.write(&mut e);
        e.finish()
    }

    /// `Content-Type` of [`Self::render`].
    pub(crate) fn content_type() -> &'static str {
        CONTENT_TYPE
    }
}

/// The 64 client buckets' label values, made once so a request never formats one.
static BUCKETS: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| (0..64).map(|i| format!("source-{i:02}")).collect());

/// zai-proxy's client bucket: FNV-1a 32 of the peer IP text, modulo 64 (`source-00`..`source-63`).
pub(crate) fn client_bucket(ip: &str) -> &'static str {
    let ip = if ip.is_empty() { "unknown" } else { ip };
    let mut h: u32 = 0x811c_9dc5;
    for b in ip.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    BUCKETS.get(h as usize % 64).map_or("source-00", String::as_str)
}

/// [`client_bucket`] of a peer address, formatted on the stack.
pub(crate) fn client_bucket_of(ip: Option<std::net::IpAddr>) -> &'static str {
    use std::io::Write as _;
    let Some(ip) = ip else { return client_bucket("") };
    let mut buf = [0u8; 64]; // the longest IPv6 text is 45 bytes
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let n = match write!(cur, "{ip}") {
        Ok(()) => usize::try_from(cur.position()).unwrap_or(0),
        Err(_) => 0,
    };
    client_bucket(std::str::from_utf8(&buf[..n]).unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_buckets_match_zai_proxy() {
        assert_eq!(client_bucket("10.42.3.17"), "source-43");
        assert_eq!(client_bucket("10.42.5.88"), "source-53");
        assert_eq!(client_bucket("127.0.0.1"), "source-30");
        assert_eq!(client_bucket(""), "source-57");
    }

    #[test]
    fn empty_families_print_nothing_and_histograms_print_like_go() {
        let m = ProxyMetrics::new();
        assert!(!m.render().contains("zai_proxy_"));
        m.request_size.observe(&["POST", "/v1/messages", "production"], 2_000_000.0);
        let text = m.render();
        assert!(text.contains("zai_proxy_request_size_bytes_bucket{method=\"POST\",path=\"/v1/messages\",variant=\"production\",le=\"1e+06\"} 0\n"));
        assert!(text.contains("le=\"1e+07\"} 1\n"));
        assert!(text.contains("le=\"+Inf\"} 1\n"));
        assert!(text.contains(
            "zai_proxy_request_size_bytes_sum{method=\"POST\",path=\"/v1/messages\",variant=\"production\"} 2e+06\n"
        ));
        let parsed = crate::scrape::parse::parse(&text).unwrap();
        assert_eq!(parsed.families.len(), 2, "the size histogram and the limit trips");
    }

    #[test]
    fn labels_from_clients_are_capped() {
        let m = ProxyMetrics::new();
        for i in 0..LABEL_CAP {
            assert_eq!(&*m.model_label(&format!("m{i}")), format!("m{i}"));
        }
        assert_eq!(&*m.model_label("one-too-many"), "other");
        assert_eq!(&*m.model_label("m3"), "m3");
        assert_eq!(m.trips.get(Limit::LabelCapped), 1);
    }

    #[test]
    fn long_labels_are_cut_at_a_char_boundary_before_the_cap() {
        let m = ProxyMetrics::new();
        let long = format!("{}é{}", "a".repeat(127), "b".repeat(60_000));
        let label = m.path_label(&long);
        assert_eq!(label.len(), 127, "the two-byte char at 127..129 does not fit");
        assert!(long.starts_with(&*label));
        assert_eq!(&*m.path_label(&format!("{}{}", "a".repeat(127), "é-other-tail")), &*label, "same cut, same value");
        assert_eq!(m.trips.get(Limit::LabelTruncated), 2);
        assert_eq!(truncate_label("short"), None);
    }

    #[test]
    fn methods_outside_the_fixed_set_are_other() {
        let m = ProxyMetrics::new();
        assert_eq!(m.method_label(&Method::POST), "POST");
        assert_eq!(m.method_label(&Method::from_bytes(b"XYZZY").unwrap()), "other");
        assert_eq!(m.trips.get(Limit::MethodOther), 1);
        let text = m.render();
        assert!(text.contains("zai_dash_proxy_limit_trips_total{limit=\"method_other\"} 1\n"), "{text}");
        assert!(text.contains("zai_dash_proxy_limit_trips_total{limit=\"header_timeout\"} 0\n"));
    }
}
