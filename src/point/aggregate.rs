//! From rows to points: one [`Point`] per variant per bucket, the JSON object of the Go
//! dashboard's `/api/metrics` and of every live `metrics` event.
//!
//! REST and SSE both build points with [`PointBuilder`], so they give identical values for the
//! same bucket; the builder sums, and [`Point::assemble`] lays the sums out. What a point means
//! depends on its bucket (docs/decisions.md, Point semantics):
//! - a **narrow** bucket (one point width, one scrape per pod) gives each pod's rate over the
//!   time its increases cover (its `elapsed`), and sums each pod's latest gauges;
//! - a **wide** bucket (1 min rows, a re-bucketed `step`) gives each pod's increases over the
//!   bucket's length, so a pod present for 20 s of a minute adds 20 s of increases, not a
//!   minute's rate; only a pod whose increases cover more than the bucket (a gap while zai-dash
//!   was down, missed scrapes) has them spread over its own `elapsed`. Gauges are time-weighted:
//!   each pod's average counts by the share of the bucket it was present in.
//!
//! Pods are summed before quantiles (counters and histogram buckets), utilization is
//! Σ concurrent / Σ max workers, and cumulative Go fields carry every pod's latest running total
//! forward, so a pod that missed a bucket, or vanished, never makes a total dip. Values a target
//! cannot be trusted with (non-finite, beyond [`MAX_VALUE`]) never reach a point: they are
//! clamped where they are summed, so the JSON always holds finite numbers.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::fields::{PartRates, Point, PointParts, bounded};
use super::summary::{Summary, status_label};
use super::{GaugeStat, Quota, Totals};

/// The time one point covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Bucket end, the point's timestamp (Unix ms).
    pub end_ms: i64,
    /// The bucket's length; for the newest bucket of a window, only the part the data has
    /// reached (a bucket still filling up must not read as a dip).
    pub covered_ms: i64,
    /// A point-width bucket: rates over each pod's own elapsed time, each pod's latest gauges.
    /// Otherwise a wide bucket: rates over the bucket, time-weighted gauges.
    pub narrow: bool,
}

impl Bucket {
    /// A point-width bucket ending at `end_ms` (the live ticker's, and raw points').
    pub(crate) fn narrow(end_ms: i64, width_ms: i64) -> Self {
        Self { end_ms, covered_ms: width_ms, narrow: true }
    }
}

/// Turns time-ordered rows into points, remembering each pod's running totals between buckets.
#[derive(Debug, Default)]
pub(crate) struct PointBuilder {
    /// By target id, ordered: totals are summed over pods in the same order by every builder,
    /// so REST, the live stream and a cache agree to the bit.
    carry: BTreeMap<i64, (Arc<str>, Totals)>,
}

/// Per-pod rows within one bucket (borrowed: building a point copies no maps).
#[derive(Default)]
struct Pod<'a> {
    rows: Vec<&'a Summary>,
    elapsed_ms: i64,
    present_ms: i64,
    quota: Option<(i64, &'a Arc<Quota>)>,
}

impl Pod<'_> {
    /// Seconds this pod's increases are divided by.
    fn rate_secs(&self, bucket: Bucket) -> f64 {
        let ms = if bucket.narrow { self.elapsed_ms } else { self.elapsed_ms.max(bucket.covered_ms) };
        ms as f64 / 1000.0
    }

    /// The pod's share of gauge `i` in the point: its latest value in a narrow bucket; in a
    /// wide one its presence-weighted average times the share of the bucket it was present in.
    fn gauge(&self, i: usize, bucket: Bucket) -> f64 {
        let stats = self.rows.iter().filter_map(|r| r.gauges[i].map(|g| (g, r.present_ms)));
        if bucket.narrow {
            return GaugeStat::combine(stats.map(|(g, _)| g)).map_or(0.0, |g| bounded(g.avg));
        }
        let (mut weighted, mut present) = (0.0, 0.0);
        for (g, ms) in stats {
            weighted += bounded(g.avg) * ms as f64;
            present += ms as f64;
        }
        if present <= 0.0 {
            return 0.0;
        }
        let share = (present / bucket.covered_ms.max(1) as f64).min(1.0);
        weighted / present * share
    }
}

impl PointBuilder {
    /// A builder with no pod seen yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Remembers a pod's running totals as of the window's start (it may be absent from the
    /// window's first buckets, or from all of them if it vanished).
    pub(crate) fn seed(&mut self, target_id: i64, variant: Arc<str>, totals: Totals) {
        self.carry.insert(target_id, (variant, totals));
    }

    /// Builds one point per variant present in `rows` (all rows of one bucket, time order).
    pub(crate) fn build(&mut self, bucket: Bucket, rows: &[&Summary]) -> Vec<Point> {
        let mut by_variant: BTreeMap<&str, BTreeMap<i64, Pod<'_>>> = BTreeMap::new();
        for &row in rows {
            let pod = by_variant.entry(&row.variant).or_default().entry(row.target_id).or_default();
            pod.rows.push(row);
            pod.elapsed_ms += row.elapsed_ms;
            pod.present_ms += row.present_ms;
            if let Some(q) = &row.quota {
                pod.quota = Some((row.ts_ms, q));
            }
            self.carry_forward(row);
        }
        by_variant.into_iter().map(|(variant, pods)| self.point(bucket, variant, &pods)).collect()
    }

    fn carry_forward(&mut self, row: &Summary) {
        match self.carry.get_mut(&row.target_id) {
            Some(entry) if Arc::ptr_eq(&entry.0, &row.variant) || entry.0 == row.variant => entry.1 = row.totals,
            _ => {
                self.carry.insert(row.target_id, (row.variant.clone(), row.totals));
            }
        }
    }

    fn point(&self, bucket: Bucket, variant: &str, pods: &BTreeMap<i64, Pod<'_>>) -> Point {
        let mut w = Window::default();
        let mut rates = Rates::default();
        let mut gauges = [0.0; 3];
        for pod in pods.values() {
            let secs = pod.rate_secs(bucket);
            for row in &pod.rows {
                w.add(row);
                if secs > 0.0 {
                    rates.add(row, secs);
                }
            }
            for (i, g) in gauges.iter_mut().enumerate() {
                *g += pod.gauge(i, bucket);
            }
        }
        let sums = Sums { w, rates, gauges, totals: self.variant_totals(variant) };
        Point::assemble(bucket.end_ms, variant, parts(sums, freshest_quota(pods), pods.len()))
    }

    fn variant_totals(&self, variant: &str) -> Totals {
        let mut t = Totals::default();
        for (v, totals) in self.carry.values() {
            if &**v == variant {
                t.add(totals);
            }
        }
        t
    }
}

/// What a point is made of, summed over the variant's pods.
struct Sums {
    w: Window,
    rates: Rates,
    /// Concurrency, max workers, rate limit.
    gauges: [f64; 3],
    totals: Totals,
}

/// The parts of a point from the sums of the variant's rows.
fn parts(s: Sums, quota: Option<Quota>, pods: usize) -> PointParts {
    let Sums { w, rates, gauges, totals } = s;
    PointParts {
        requests: w.requests,
        errors_of_all: (w.errors, w.requests),
        rates: PartRates {
            requests: rates.requests,
            by_status: rates.by_status.iter().map(|(k, v)| (status_label(*k), *v)).collect(),
            tokens: rates.tokens,
            cost: rates.cost,
            rejections: rates.rejections,
            retries: rates.retries,
            upstream_errors: rates.upstream_errors,
        },
        size_avg: [w.request_size.mean(), w.response_size.mean()],
        latency: [w.duration, w.ttft, w.tpot],
        gauges,
        totals: Some(totals),
        quota,
        pods,
    }
}

/// Counts of the whole variant over the bucket that feed ratios and quantiles.
#[derive(Default)]
struct Window {
    requests: f64,
    errors: f64,
    duration: super::Histogram,
    ttft: super::Histogram,
    tpot: super::Histogram,
    request_size: super::SumCount,
    response_size: super::SumCount,
}

impl Window {
    fn add(&mut self, c: &Summary) {
        self.requests += bounded(c.total_requests());
        self.errors += bounded(c.server_errors());
        self.duration.add(&c.duration);
        self.ttft.add(&c.ttft);
        self.tpot.add(&c.tpot);
        self.request_size.sum += bounded(c.request_size.sum);
        self.request_size.count += bounded(c.request_size.count);
        self.response_size.sum += bounded(c.response_size.sum);
        self.response_size.count += bounded(c.response_size.count);
    }
}

/// Per-second rates summed over pods.
#[derive(Default)]
struct Rates {
    requests: f64,
    by_status: BTreeMap<u16, f64>,
    tokens: [f64; 4],
    cost: f64,
    rejections: f64,
    retries: f64,
    upstream_errors: f64,
}

impl Rates {
    fn add(&mut self, c: &Summary, secs: f64) {
        self.requests += bounded(c.total_requests()) / secs;
        for (code, n) in &c.requests {
            *self.by_status.entry(*code).or_default() += bounded(*n) / secs;
        }
        for (r, t) in self.tokens.iter_mut().zip(c.tokens) {
            *r += bounded(t) / secs;
        }
        self.cost += bounded(c.cost) / secs;
        self.rejections += bounded(c.rejections) / secs;
        self.retries += bounded(c.retries) / secs;
        self.upstream_errors += bounded(c.upstream_errors) / secs;
    }
}

/// Quota is account-wide, so it is never summed: the pod with the newest sample speaks.
fn freshest_quota(pods: &BTreeMap<i64, Pod<'_>>) -> Option<Quota> {
    pods.values()
        .filter_map(|p| p.quota)
        .max_by(|a, b| fresher_quota((a.0, a.1), (b.0, b.1)))
        .map(|(_, q)| q.as_ref().clone())
}

/// Which of two pods' quota blocks speaks for the account (the greater): the one of the newer
/// row, then the fresher sample, an unknown age counting as the stalest. The points and the
/// quota runway's own read (`store::range`) pick by this one rule, so they always agree.
pub(crate) fn fresher_quota(a: (i64, &Quota), b: (i64, &Quota)) -> std::cmp::Ordering {
    let age = |q: &Quota| q.sample_age_seconds.unwrap_or(f64::INFINITY);
    a.0.cmp(&b.0).then(age(b.1).total_cmp(&age(a.1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::{Counts, GaugeStat, Gauges, Histogram, TargetRow, Totals};

    fn sum(rows: &[&TargetRow]) -> Vec<Summary> {
        rows.iter().map(|r| Summary::from(*r)).collect()
    }

    fn build(pb: &mut PointBuilder, ts: i64, rows: &[&TargetRow]) -> Vec<Point> {
        build_in(pb, Bucket::narrow(ts, 5_000), rows)
    }

    fn build_in(pb: &mut PointBuilder, bucket: Bucket, rows: &[&TargetRow]) -> Vec<Point> {
        let s = sum(rows);
        pb.build(bucket, &s.iter().collect::<Vec<_>>())
    }

    #[test]
    fn the_newer_row_speaks_for_the_quota_then_the_fresher_sample() {
        use std::cmp::Ordering::{Greater, Less};
        let aged = |age: Option<f64>| Quota { sample_age_seconds: age, ..Quota::default() };
        let (fresh, stale, unknown) = (aged(Some(1.0)), aged(Some(90.0)), aged(None));
        // A newer row wins whatever its sample's age.
        assert_eq!(fresher_quota((10, &stale), (5, &fresh)), Greater);
        assert_eq!(fresher_quota((10, &unknown), (5, &fresh)), Greater);
        // Rows of the same time: the fresher sample; an unknown age is the stalest.
        assert_eq!(fresher_quota((5, &fresh), (5, &stale)), Greater);
        assert_eq!(fresher_quota((5, &unknown), (5, &stale)), Less);
    }

    fn minute(end_ms: i64) -> Bucket {
        Bucket { end_ms, covered_ms: 60_000, narrow: false }
    }

    fn row(target: i64, variant: &str, ts: i64, elapsed_ms: i64, ok: f64, err: f64, lat: &[(f64, f64)]) -> TargetRow {
        let mut counts = Counts::default();
        counts.requests.insert("200".into(), ok);
        counts.requests.insert("503".into(), err);
        counts.duration = Histogram { buckets: lat.to_vec(), sum: 0.0, count: lat.last().map_or(0.0, |b| b.1) };
        let mut totals = Totals::default();
        totals.accumulate(&counts);
        TargetRow {
            target_id: target,
            variant: variant.into(),
            ts_ms: ts,
            elapsed_ms,
            present_ms: elapsed_ms.clamp(5_000, 60_000),
            counts,
            totals,
            gauges: Gauges {
                concurrent: Some(GaugeStat::single(2.0)),
                max_workers: Some(GaugeStat::single(10.0)),
                ..Gauges::default()
            },
        }
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn two_pods_add_up_and_quantiles_come_from_summed_buckets() {
        let a = row(1, "production", 5_000, 5_000, 10.0, 0.0, &[(0.1, 10.0), (1.0, 10.0), (INF, 10.0)]);
        let b = row(2, "production", 5_000, 5_000, 0.0, 10.0, &[(0.1, 0.0), (1.0, 10.0), (INF, 10.0)]);
        let mut pb = PointBuilder::new();
        let pts = build(&mut pb, 5_000, &[&a, &b]);
        assert_eq!(pts.len(), 1);
        let p = &pts[0];
        assert_eq!(p.req_rate, 4.0);
        assert_eq!(p.error_rate_pct, Some(50.0));
        assert_eq!(p.concurrent_requests, 4.0);
        assert_eq!(p.max_workers, 20.0);
        assert_eq!(p.worker_utilization, 0.2);
        assert_eq!(p.requests_2xx, Some(10.0));
        assert_eq!(p.requests_5xx, Some(10.0));
        // 20 observations: 10 <= 0.1 s, 10 in (0.1, 1]: p50 = 100 ms, p95 = 0.1 + 0.9 * 0.9 s.
        assert!((p.latency_p50.unwrap() - 100.0).abs() < 1e-9);
        assert!((p.latency_p95.unwrap() - 910.0).abs() < 1e-9);
        assert_eq!(p.pods, 2);
    }

    #[test]
    fn a_missed_scrape_does_not_double_the_rate() {
        let a = row(1, "production", 10_000, 10_000, 20.0, 0.0, &[]);
        let p = &build(&mut PointBuilder::new(), 10_000, &[&a])[0];
        assert_eq!(p.req_rate, 2.0);
    }

    #[test]
    fn empty_bucket_has_null_error_rate_and_latency() {
        let a = row(1, "canary", 5_000, 5_000, 0.0, 0.0, &[]);
        let p = &build(&mut PointBuilder::new(), 5_000, &[&a])[0];
        assert_eq!(p.req_rate, 0.0);
        assert_eq!(p.error_rate_pct, None);
        assert_eq!(p.latency_p50, None);
        let json = serde_json::to_string(p).unwrap();
        assert!(json.contains("\"error_rate_pct\":null"));
        assert!(!json.contains("NaN"));
        assert!(json.contains("\"requests\":0.0"), "no negative zero: {json}");
    }

    #[test]
    fn totals_carry_forward_for_pods_missing_from_a_bucket() {
        let mut pb = PointBuilder::new();
        let a = row(1, "production", 5_000, 5_000, 10.0, 0.0, &[]);
        let seed = row(2, "production", 0, 5_000, 7.0, 0.0, &[]);
        pb.seed(2, "production".into(), seed.totals);
        let p = &build(&mut pb, 5_000, &[&a])[0];
        assert_eq!(p.requests_2xx, Some(17.0));
    }

    #[test]
    fn a_long_gap_is_spread_over_its_own_elapsed_time_instead_of_spiking() {
        // 600 requests accumulated over a 10-minute outage of zai-dash, landing in one minute.
        let a = row(1, "production", 60_000, 600_000, 600.0, 0.0, &[]);
        let p = &build_in(&mut PointBuilder::new(), minute(60_000), &[&a])[0];
        assert_eq!(p.req_rate, 1.0);
    }

    #[test]
    fn a_pod_replaced_mid_bucket_counts_its_own_share_of_the_bucket() {
        // Pod 1 serves 10 req/s for the first 30 s of the minute, pod 2 for the last 30 s: the
        // variant served 10 req/s all minute, with 10 workers throughout.
        let a = row(1, "production", 60_000, 30_000, 300.0, 0.0, &[]);
        let b = row(2, "production", 60_000, 30_000, 300.0, 0.0, &[]);
        let p = &build_in(&mut PointBuilder::new(), minute(60_000), &[&a, &b])[0];
        assert_eq!(p.req_rate, 10.0, "not 20: each pod adds its increases over the whole minute");
        assert_eq!(p.max_workers, 10.0, "not 20: each pod's 10 workers weigh by the half it was present");
        assert_eq!(p.concurrent_requests, 2.0);
        assert_eq!(p.pods, 2);
    }

    #[test]
    fn the_newest_bucket_counts_only_the_time_the_data_reached() {
        // 30 s into the minute, 60 requests at 2 req/s: not a dip to 1 req/s.
        let b = row(1, "production", 60_000, 30_000, 60.0, 0.0, &[]);
        let bucket = Bucket { end_ms: 60_000, covered_ms: 30_000, narrow: false };
        let p = &build_in(&mut PointBuilder::new(), bucket, &[&b])[0];
        assert_eq!(p.req_rate, 2.0);
        assert_eq!(p.max_workers, 10.0);
    }

    #[test]
    fn hostile_values_are_clamped_and_json_stays_finite() {
        let mut a = row(1, "production", 5_000, 5_000, 1.0, 0.0, &[]);
        let mut b = row(2, "production", 5_000, 5_000, 1.0, 0.0, &[]);
        a.gauges.concurrent = Some(GaugeStat::single(1.7e308));
        b.gauges.concurrent = Some(GaugeStat::single(1.7e308));
        a.gauges.max_workers = Some(GaugeStat::single(f64::NAN));
        b.counts.requests.insert("200".into(), f64::INFINITY);
        let p = &build(&mut PointBuilder::new(), 5_000, &[&a, &b])[0];
        assert!(p.concurrent_requests.is_finite() && p.req_rate.is_finite() && p.max_workers.is_finite());
        let json = serde_json::to_string(p).unwrap();
        assert!(!json.contains("null,\"max_workers") && !json.contains("\"concurrent_requests\":null"), "{json}");
    }

    #[test]
    fn variants_get_separate_points() {
        let a = row(1, "production", 5_000, 5_000, 5.0, 0.0, &[]);
        let b = row(2, "canary", 5_000, 5_000, 5.0, 5.0, &[]);
        let pts = build(&mut PointBuilder::new(), 5_000, &[&a, &b]);
        let names: Vec<_> = pts.iter().map(|p| p.variant.as_str()).collect();
        assert_eq!(names, ["canary", "production"]);
    }
}
