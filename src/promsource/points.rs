//! Points of a window from `query_range`: one query per part of a point (status codes, tokens,
//! histogram buckets, gauges, quota, pods), all evaluated on the bucket ends of the store's own
//! grid, then summed per variant and bucket into `point::PointParts` and laid out by
//! `point::Point::assemble`, the function the store's rows go through too: quantiles from the
//! summed bucket rates with Prometheus' interpolation, error share from the status codes (5xx
//! over all), `null` where there is nothing to measure, values clamped.
//!
//! What the engine cannot know stays `null`: the Go API's cumulative fields (running totals
//! since zai-dash first saw a variant; see `promql`). Only complete buckets are answered (every
//! scrape that started in the bucket has landed): the newest, still filling, is left out.

use std::collections::BTreeMap;

use futures_util::future::try_join_all;

use super::client::{EngineError, Series};
use super::session::Session;
use super::{Timing, selector};
use crate::clock::checked_bucket_end;
use crate::point::{Histogram, PartRates, Point, PointParts, Quota, QuotaWindow, bounded, total};
use crate::ports::read::PointQuery;
use crate::promql::parts::{self, family as pfamily};
use crate::promql::{Selector, family};

/// What a query fills in a point.
#[derive(Debug, Clone, Copy)]
enum Part {
    Status,
    Tokens,
    Cost,
    Rejections,
    Retries,
    UpstreamErrors,
    /// Duration, TTFT, TPOT buckets.
    Buckets(usize),
    /// Request, response size means.
    Size(usize),
    /// Concurrency, max workers, rate limit.
    Gauge(usize),
    Quota,
    Pods,
}

/// The range, resolution and look-back the queries of buckets `width_ms` wide use.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// `rate()` range: the bucket, and at least two scrapes (a rate needs two samples).
    rate_ms: i64,
    /// Gauge instants within a bucket: every raw point, at most 60 per bucket.
    res_ms: i64,
    /// A pod's latest gauge value counts this long.
    lookback_ms: i64,
    /// Pods present in the bucket.
    presence_ms: i64,
}

impl Shape {
    fn new(t: &Timing, width_ms: i64) -> Self {
        let res_ms = gauge_resolution(width_ms, t.point_ms);
        let two_scrapes = 2 * t.scrape_ms;
        Self {
            rate_ms: width_ms.max(two_scrapes),
            res_ms,
            lookback_ms: res_ms.max(two_scrapes) - 1,
            presence_ms: width_ms.max(two_scrapes) - 1,
        }
    }
}

/// The raw point width, or a multiple of it dividing `width_ms` with at most 60 instants per
/// bucket (a 10 min bucket is sampled every 10 s, not 120 times).
fn gauge_resolution(width_ms: i64, point_ms: i64) -> i64 {
    if point_ms <= 0 || width_ms % point_ms != 0 {
        return width_ms.max(1);
    }
    let n = width_ms / point_ms;
    (1..=n).find(|d| n % d == 0 && n / d <= 60).map_or(width_ms, |d| d * point_ms)
}

/// The queries of one window, each with the part it fills.
fn plan(sel: &Selector, shape: Shape, width_ms: i64) -> Vec<(Part, String)> {
    let r = shape.rate_ms;
    let by_variant = |f: &str, extra: &[&str]| parts::rate_by(f, sel, extra, "variant", r);
    let buckets = |f: &str| parts::rate_by(&format!("{f}_bucket"), sel, &[], "variant, le", r);
    let gauge = |f: &str| parts::gauge_sum(f, sel, width_ms, shape.res_ms, shape.lookback_ms);
    vec![
        (Part::Status, parts::rate_by(family::REQUESTS, sel, &[], "variant, status_code", r)),
        (Part::Tokens, parts::rate_by(family::TOKENS, sel, &[], "variant, direction", r)),
        (Part::Cost, by_variant(family::COST, &[])),
        (Part::Rejections, by_variant(family::REJECTIONS, &[])),
        (Part::Retries, by_variant(family::RETRIES, &["reason!=\"retry\""])),
        (Part::UpstreamErrors, by_variant(family::UPSTREAM_ERRORS, &[])),
        (Part::Buckets(0), buckets(family::DURATION)),
        (Part::Buckets(1), buckets(family::TTFT)),
        (Part::Buckets(2), buckets(family::TPOT)),
        (Part::Size(0), parts::mean_of(pfamily::REQUEST_SIZE, sel, r)),
        (Part::Size(1), parts::mean_of(pfamily::RESPONSE_SIZE, sel, r)),
        (Part::Gauge(0), gauge(family::CONCURRENT)),
        (Part::Gauge(1), gauge(family::MAX_WORKERS)),
        (Part::Gauge(2), gauge(family::RATE_LIMIT)),
        (Part::Quota, parts::quota(sel, shape.lookback_ms)),
        (Part::Pods, parts::pods(sel, shape.presence_ms)),
    ]
}

/// The bucket ends of `q` that are complete at `now_ms`, first and last (`None`: none yet, or
/// a step no row of which would fit before the end of `i64`). The first bucket starts less than
/// one step before the window (the web layer bounds the step by the window before any PromQL
/// is sent), and the last has ended by `now_ms`: nothing is asked of the future.
pub(crate) fn complete_buckets(q: &PointQuery, now_ms: i64, settle_ms: i64) -> Option<(i64, i64)> {
    let step = q.step_ms.max(1);
    let first = checked_bucket_end(q.start_ms.checked_add(1)?, step)?;
    let newest = q.end_ms.min(now_ms.checked_sub(settle_ms)?);
    let last = newest.checked_sub(newest.rem_euclid(step))?;
    (last >= first).then_some((first, last))
}

/// Points of the window's complete buckets, ascending by time then variant.
pub(crate) async fn fetch(
    session: &Session<'_>,
    t: &Timing,
    q: &PointQuery,
    now_ms: i64,
) -> Result<Vec<Point>, EngineError> {
    session.check_window(q.end_ms.saturating_sub(q.start_ms))?;
    let Some((first, last)) = complete_buckets(q, now_ms, t.settle_ms()) else { return Ok(Vec::new()) };
    let sel = selector(q.variant.as_deref(), q.target_url.as_deref());
    let queries = plan(&sel, Shape::new(t, q.step_ms), q.step_ms);
    let answers = try_join_all(queries.iter().map(|(_, e)| session.range(e, first, last, q.step_ms))).await?;
    let mut acc: BTreeMap<(i64, String), Acc> = BTreeMap::new();
    for ((part, _), series) in queries.iter().zip(&answers) {
        for s in series.iter() {
            for &(ts, v) in &s.samples {
                acc.entry((ts, s.label("variant").to_owned())).or_default().add(*part, s, v);
            }
        }
    }
    Ok(acc.into_iter().map(|((ts, variant), a)| a.point(ts, &variant, q.step_ms)).collect())
}

/// One variant's parts in one bucket.
#[derive(Debug, Default)]
struct Acc {
    /// Rates by status code, tokens, cost, rejections, retries, upstream errors; `requests` is
    /// the sum over status codes, filled in by [`Acc::point`].
    rates: PartRates,
    buckets: [Vec<(f64, f64)>; 3],
    sizes: [Option<f64>; 2],
    gauges: [f64; 3],
    /// `(part, window, limit_type)` -> value.
    quota: BTreeMap<(String, String, String), f64>,
    pods: u32,
}

impl Acc {
    fn add(&mut self, part: Part, s: &Series, v: f64) {
        let finite = v.is_finite();
        let v = bounded(v);
        match part {
            Part::Status if finite => *self.rates.by_status.entry(s.label("status_code").to_owned()).or_default() += v,
            Part::Tokens if finite => {
                if let Some(i) = crate::point::DIRECTIONS.iter().position(|d| *d == s.label("direction")) {
                    self.rates.tokens[i] += v;
                }
            }
            Part::Cost if finite => self.rates.cost += v,
            Part::Rejections if finite => self.rates.rejections += v,
            Part::Retries if finite => self.rates.retries += v,
            Part::UpstreamErrors if finite => self.rates.upstream_errors += v,
            Part::Buckets(i) if finite => {
                if let Some(le) = s.le() {
                    self.buckets[i].push((le, v));
                }
            }
            Part::Size(i) if finite => self.sizes[i] = Some(v),
            Part::Gauge(i) if finite => self.gauges[i] += v,
            Part::Quota if finite => {
                let key = (s.label("part").to_owned(), s.label("window").to_owned(), s.label("limit_type").to_owned());
                self.quota.insert(key, v);
            }
            Part::Pods if finite => self.pods = v as u32,
            _ => {}
        }
    }

    /// The point, laid out by [`Point::assemble`] like the store's rows; `requests` is the
    /// bucket's count at its rate, and the cumulative fields stay `null` (no totals).
    fn point(self, ts: i64, variant: &str, width_ms: i64) -> Point {
        let secs = width_ms as f64 / 1000.0;
        let by_status = &self.rates.by_status;
        let req_rate = total(by_status.values());
        let errors = total(by_status.iter().filter(|(k, _)| k.starts_with('5')).map(|(_, v)| v));
        let parts = PointParts {
            requests: req_rate * secs,
            errors_of_all: (errors, req_rate),
            rates: PartRates { requests: req_rate, ..self.rates },
            latency: self.buckets.map(Histogram::from_cumulative),
            size_avg: self.sizes,
            gauges: self.gauges,
            totals: None,
            quota: quota(&self.quota),
            pods: self.pods as usize,
        };
        Point::assemble(ts, variant, parts)
    }
}

/// The quota block as the scraper reads it from one exposition: per window, one limit type
/// (`credit_limit` preferred, then `tokens_limit`, else the first name), the oldest sample age,
/// the gate and enforcement flags; `None` without any quota series.
fn quota(parts: &BTreeMap<(String, String, String), f64>) -> Option<Quota> {
    let has = |p: &str| parts.keys().any(|k| k.0 == p);
    if !["usage", "remaining", "reset", "age"].iter().any(|p| has(p)) {
        return None;
    }
    let value = |p: &str| parts.iter().filter(|(k, _)| k.0 == p).map(|(_, v)| *v).reduce(f64::max);
    let gate = value("gate");
    Some(Quota {
        five_hour: quota_window(parts, "five_hour"),
        weekly: quota_window(parts, "weekly"),
        sample_age_seconds: value("age"),
        gate_open: gate.map(|g| g >= 1.0),
        enforcement: Some(gate.is_some() || has("rate_cap")),
    })
}

fn quota_window(parts: &BTreeMap<(String, String, String), f64>, window: &str) -> Option<QuotaWindow> {
    let ratios = ["usage", "remaining", "reset"];
    let types: std::collections::BTreeSet<&str> =
        parts.keys().filter(|k| k.1 == window && ratios.contains(&k.0.as_str())).map(|k| k.2.as_str()).collect();
    let chosen = ["credit_limit", "tokens_limit"].into_iter().find(|t| types.contains(t)).or(types.first().copied())?;
    let value = |p: &str| parts.get(&(p.to_owned(), window.to_owned(), chosen.to_owned())).copied();
    Some(QuotaWindow {
        limit_type: (!chosen.is_empty()).then(|| chosen.to_owned()),
        usage_ratio: value("usage"),
        remaining_ratio: value("remaining"),
        reset_time_unix: value("reset").filter(|v| *v > 0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
        Series {
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            samples: samples.to_vec(),
        }
    }

    #[test]
    fn a_point_is_assembled_like_the_store_assembles_rows() {
        let mut a = Acc::default();
        a.add(Part::Status, &series(&[("status_code", "200")], &[]), 9.0);
        a.add(Part::Status, &series(&[("status_code", "503")], &[]), 1.0);
        a.add(Part::Status, &series(&[("status_code", "429")], &[]), 2.0);
        for (le, v) in [("0.1", 6.0), ("1", 12.0), ("+Inf", 12.0)] {
            a.add(Part::Buckets(0), &series(&[("le", le)], &[]), v);
        }
        a.add(Part::Gauge(0), &series(&[], &[]), 3.0);
        a.add(Part::Gauge(1), &series(&[], &[]), 12.0);
        a.add(Part::Size(0), &series(&[], &[]), f64::NAN);
        let p = a.point(10_000, "canary", 5_000);
        assert_eq!(p.req_rate, 12.0);
        assert_eq!(p.requests, 60.0);
        assert!((p.error_rate_pct.unwrap() - 100.0 / 12.0).abs() < 1e-12, "503 counts, 429 does not");
        assert!((p.latency_p50.unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(p.worker_utilization, 0.25);
        assert_eq!(p.request_size_avg, None, "no observation: null, not 0");
        assert_eq!(p.requests_2xx, None, "cumulative fields are unknown to an engine");
        assert_eq!(p.ttft_p95, None);
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"requests_2xx\":null") && json.contains("\"max_workers\":12.0"), "{json}");
    }

    #[test]
    fn an_idle_bucket_has_null_error_share_and_latency() {
        let mut a = Acc::default();
        a.add(Part::Status, &series(&[("status_code", "200")], &[]), 0.0);
        a.add(Part::Buckets(0), &series(&[("le", "+Inf")], &[]), 0.0);
        let p = a.point(5_000, "production", 5_000);
        assert_eq!((p.error_rate_pct, p.latency_p95), (None, None));
    }

    #[test]
    fn the_quota_block_prefers_credit_limits_and_keeps_the_oldest_age() {
        let mut a = Acc::default();
        let q = |part: &str, window: &str, limit: &str| {
            series(&[("part", part), ("window", window), ("limit_type", limit)], &[])
        };
        a.add(Part::Quota, &q("usage", "weekly", "credit_limit"), 0.42);
        a.add(Part::Quota, &q("usage", "weekly", "tokens_limit"), 0.9);
        a.add(Part::Quota, &q("remaining", "five_hour", "tokens_limit"), 0.87);
        a.add(Part::Quota, &q("age", "", ""), 60.0);
        let quota = a.point(5_000, "p", 5_000).quota.unwrap();
        assert_eq!(quota.weekly.unwrap().usage_ratio, Some(0.42));
        assert_eq!(quota.five_hour.unwrap().remaining_ratio, Some(0.87));
        assert_eq!(quota.sample_age_seconds, Some(60.0));
        assert_eq!((quota.gate_open, quota.enforcement), (None, Some(false)));
    }

    #[test]
    fn only_complete_buckets_are_answered_on_the_store_grid() {
        let q = PointQuery { start_ms: 100_500, end_ms: 200_000, step_ms: 10_000, variant: None, target_url: None };
        assert_eq!(complete_buckets(&q, 200_000, 5_250), Some((110_000, 190_000)));
        assert_eq!(complete_buckets(&q, 105_000, 5_250), None);
        let huge = PointQuery { step_ms: i64::MAX, ..q.clone() };
        assert_eq!(complete_buckets(&huge, 200_000, 5_250), None, "no overflow");
        let ancient = PointQuery { start_ms: i64::MIN, end_ms: i64::MIN + 10, ..q };
        assert_eq!(complete_buckets(&ancient, i64::MIN + 5, 5_250), None, "no overflow");
    }

    #[test]
    fn gauges_are_sampled_at_most_sixty_times_a_bucket() {
        assert_eq!(gauge_resolution(5_000, 5_000), 5_000);
        assert_eq!(gauge_resolution(60_000, 5_000), 5_000);
        assert_eq!(gauge_resolution(600_000, 5_000), 10_000);
        assert_eq!(gauge_resolution(20_000, 2_000), 2_000);
        assert_eq!(gauge_resolution(7_000, 5_000), 7_000);
        let t = Timing { point_ms: 5_000, rollup_ms: 60_000, scrape_ms: 15_000, delay_ms: 1_500 };
        let s = Shape::new(&t, 5_000);
        assert_eq!((s.rate_ms, s.lookback_ms), (30_000, 29_999), "two scrapes of a sparse engine");
    }
}
