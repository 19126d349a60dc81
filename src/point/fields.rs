//! A point: one variant over one bucket in the Go dashboard's fields, and the one function that
//! fills them ([`Point::assemble`]) from what a source summed ([`PointParts`]): the store's rows
//! (`aggregate::PointBuilder`) and an engine's answers (`promsource::points`) both end here, so
//! every field, every quantile and the error share are computed in one place.
//!
//! Values a target cannot be trusted with (non-finite, beyond [`MAX_VALUE`]) never reach a
//! point: they are clamped where they are summed and again here, so the JSON always holds
//! finite numbers.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Histogram, Quota, Totals};

/// Largest magnitude a point reports. Real values are far below (a trillion requests per
/// second, tokens or dollars); a hostile target's `1.7e308` is clamped here so that sums of two
/// such values stay finite.
pub const MAX_VALUE: f64 = 1e15;

/// `v` as a point may hold it: NaN is 0, anything beyond [`MAX_VALUE`] is [`MAX_VALUE`].
pub fn bounded(v: f64) -> f64 {
    if v.is_nan() { 0.0 } else { v.clamp(-MAX_VALUE, MAX_VALUE) }
}

/// The 5xx share in percent of `errors` among `all` (in any one unit: counts or rates), `None`
/// without requests: the error rate of points, `/api/compare`, the alerts and the tables.
pub fn error_share_pct(errors: f64, all: f64) -> Option<f64> {
    (all > 0.0).then(|| bounded(100.0 * errors / all))
}

/// One variant over one bucket, in the Go dashboard's field names and order.
///
/// Rates are per second over the bucket; `latency_*` are milliseconds; cumulative fields are
/// reset-corrected totals since zai-dash first saw the variant. `null` marks a value that does
/// not exist for the bucket (no request: no error rate, no percentile) rather than a fake 0.
/// The cumulative fields are `Option` because a source without zai-dash's own history (the
/// PromQL source mode) cannot know them: it answers `null` rather than a made-up total.
#[allow(missing_docs)] // field names and meanings are the Go dashboard's (docs/decisions.md, API shapes)
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Point {
    /// Bucket end, Unix ms.
    pub timestamp: i64,
    /// Variant name.
    pub variant: String,
    pub requests_2xx: Option<f64>,
    pub requests_4xx: Option<f64>,
    pub requests_5xx: Option<f64>,
    pub tokens_input: Option<f64>,
    pub tokens_output: Option<f64>,
    pub tokens_cache_read: Option<f64>,
    pub tokens_cache_write: Option<f64>,
    pub estimated_cost_usd_input: Option<f64>,
    pub estimated_cost_usd_output: Option<f64>,
    pub estimated_cost_usd_cache_read: Option<f64>,
    pub estimated_cost_usd_cache_write: Option<f64>,
    pub concurrent_requests: f64,
    pub max_workers: f64,
    pub rate_limit_rps: f64,
    pub rate_limit_rejections: Option<f64>,
    pub rate_limit_adj_increase: Option<f64>,
    pub rate_limit_adj_decrease: Option<f64>,
    pub upstream_errors: Option<f64>,
    pub retry_attempts: Option<f64>,
    pub latency_p50: Option<f64>,
    pub latency_p95: Option<f64>,
    pub latency_p99: Option<f64>,
    pub request_size_avg: Option<f64>,
    pub response_size_avg: Option<f64>,
    pub token_rate_in: f64,
    pub token_rate_out: f64,
    pub token_rate_cache_read: f64,
    pub token_rate_cache_write: f64,
    pub req_rate: f64,
    pub error_rate_pct: Option<f64>,
    pub worker_utilization: f64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub status_code_rates: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// Requests in the bucket: the sample size behind the rates and percentiles.
    pub requests: f64,
    /// Estimated cost per second over the bucket, all directions.
    pub cost_rate_usd: f64,
    /// Rejections per second over the bucket.
    pub rejection_rate: f64,
    /// Retries per second over the bucket (without the generic `retry` series).
    pub retry_rate: f64,
    /// Upstream errors per second over the bucket.
    pub upstream_error_rate: f64,
    /// Time to first token percentiles (ms), when the targets export them.
    pub ttft_p50: Option<f64>,
    pub ttft_p95: Option<f64>,
    pub ttft_p99: Option<f64>,
    /// Time per output token percentiles (ms), when the targets export them.
    pub tpot_p50: Option<f64>,
    pub tpot_p95: Option<f64>,
    pub tpot_p99: Option<f64>,
    /// Pods that contributed a row to this bucket.
    pub pods: u32,
}

/// Per-second rates summed over a variant's pods.
#[derive(Debug, Clone, Default)]
pub struct PartRates {
    /// Requests.
    pub requests: f64,
    /// Requests by status code label (`200`, `503`, `other`).
    pub by_status: BTreeMap<String, f64>,
    /// Tokens by direction (input, output, cache read, cache write).
    pub tokens: [f64; 4],
    /// Estimated cost, all directions (USD).
    pub cost: f64,
    /// Capacity rejections.
    pub rejections: f64,
    /// Retries (without the generic `retry` series).
    pub retries: f64,
    /// Upstream errors.
    pub upstream_errors: f64,
}

/// What a point is made of, summed over a variant's pods by whichever source read them.
#[derive(Debug, Clone, Default)]
pub struct PointParts {
    /// Requests in the bucket: the sample size behind the rates and percentiles.
    pub requests: f64,
    /// 5xx and all requests, in any one unit (counts, or rates): the error share's inputs.
    pub errors_of_all: (f64, f64),
    /// Rates per second over the bucket.
    pub rates: PartRates,
    /// Summed bucket increases (or rates) of duration, TTFT and TPOT, in seconds.
    pub latency: [Histogram; 3],
    /// Mean request and response size, when observed.
    pub size_avg: [Option<f64>; 2],
    /// Concurrency, max workers, rate limit, summed over pods.
    pub gauges: [f64; 3],
    /// Running totals of every pod ever seen (`None`: the source cannot know them).
    pub totals: Option<Totals>,
    /// The freshest pod's quota block (never summed: quota is account-wide).
    pub quota: Option<Quota>,
    /// Pods that contributed.
    pub pods: usize,
}

impl Point {
    /// Lays `parts` out in the Go dashboard's fields (a table: one line per field). Every value
    /// is clamped to a finite one; a quantile or share with nothing to measure is `null`.
    pub(crate) fn assemble(timestamp: i64, variant: &str, parts: PointParts) -> Point {
        let t = bounded;
        let PointParts {
            requests,
            errors_of_all: (errors, all),
            rates,
            latency,
            size_avg,
            gauges,
            totals,
            quota,
            pods,
        } = parts;
        let [duration, ttft, tpot] = &latency;
        let [concurrent, max_workers, rps] = gauges;
        let total = |f: fn(&Totals) -> f64| totals.as_ref().map(|x| t(f(x)));
        Point {
            timestamp,
            variant: variant.to_owned(),
            requests_2xx: total(|x| x.requests_2xx),
            requests_4xx: total(|x| x.requests_4xx),
            requests_5xx: total(|x| x.requests_5xx),
            tokens_input: total(|x| x.tokens[0]),
            tokens_output: total(|x| x.tokens[1]),
            tokens_cache_read: total(|x| x.tokens[2]),
            tokens_cache_write: total(|x| x.tokens[3]),
            estimated_cost_usd_input: total(|x| x.cost[0]),
            estimated_cost_usd_output: total(|x| x.cost[1]),
            estimated_cost_usd_cache_read: total(|x| x.cost[2]),
            estimated_cost_usd_cache_write: total(|x| x.cost[3]),
            concurrent_requests: t(concurrent),
            max_workers: t(max_workers),
            rate_limit_rps: t(rps),
            rate_limit_rejections: total(|x| x.rejections),
            rate_limit_adj_increase: total(|x| x.adj_increase),
            rate_limit_adj_decrease: total(|x| x.adj_decrease),
            upstream_errors: total(|x| x.upstream_errors),
            retry_attempts: total(|x| x.retry_attempts),
            latency_p50: duration.quantile_ms(0.5),
            latency_p95: duration.quantile_ms(0.95),
            latency_p99: duration.quantile_ms(0.99),
            request_size_avg: size_avg[0].map(t),
            response_size_avg: size_avg[1].map(t),
            token_rate_in: t(rates.tokens[0]),
            token_rate_out: t(rates.tokens[1]),
            token_rate_cache_read: t(rates.tokens[2]),
            token_rate_cache_write: t(rates.tokens[3]),
            req_rate: t(rates.requests),
            error_rate_pct: error_share_pct(errors, all),
            worker_utilization: if max_workers > 0.0 { t(concurrent / max_workers) } else { 0.0 },
            status_code_rates: rates.by_status.into_iter().map(|(k, v)| (k, t(v))).collect(),
            quota,
            requests: t(requests),
            cost_rate_usd: t(rates.cost),
            rejection_rate: t(rates.rejections),
            retry_rate: t(rates.retries),
            upstream_error_rate: t(rates.upstream_errors),
            ttft_p50: ttft.quantile_ms(0.5),
            ttft_p95: ttft.quantile_ms(0.95),
            ttft_p99: ttft.quantile_ms(0.99),
            tpot_p50: tpot.quantile_ms(0.5),
            tpot_p95: tpot.quantile_ms(0.95),
            tpot_p99: tpot.quantile_ms(0.99),
            pods: u32::try_from(pods).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_beyond_the_bound_are_clamped_and_what_is_unknown_is_null() {
        let parts = PointParts {
            rates: PartRates { cost: 2.0 * MAX_VALUE, ..PartRates::default() },
            gauges: [2.0 * MAX_VALUE, 0.0, 0.0],
            errors_of_all: (1.0, 0.0),
            size_avg: [Some(f64::NAN), None],
            ..PointParts::default()
        };
        let p = Point::assemble(5_000, "canary", parts);
        assert_eq!((p.cost_rate_usd, p.concurrent_requests), (MAX_VALUE, MAX_VALUE));
        assert_eq!(p.worker_utilization, 0.0, "no max workers: no utilization");
        assert_eq!(p.error_rate_pct, None, "no requests: no error share");
        assert_eq!(p.request_size_avg, Some(0.0));
        assert_eq!((p.requests_2xx, p.latency_p95), (None, None));
    }
}
