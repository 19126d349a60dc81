//! From rows to points: one [`Point`] per variant per bucket, the JSON object of the Go
//! dashboard's `/api/metrics` and of every live `metrics` event.
//!
//! REST and SSE both build points with [`PointBuilder`], so they give identical values for the
//! same bucket. Per pod, increases are turned into rates over the pod's own elapsed time; pods
//! are then summed (counters and histogram buckets before quantiles, gauges as sums, utilization
//! as Σ concurrent / Σ max workers). Cumulative Go fields carry every pod's latest running total
//! forward, so a pod that missed one scrape does not make a total dip.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use std::sync::Arc;

use super::summary::{Summary, status_label};
use super::{GaugeStat, Quota, Totals};

/// One variant over one bucket, in the Go dashboard's field names and order.
///
/// Rates are per second over the bucket; `latency_*` are milliseconds; cumulative fields are
/// reset-corrected totals since zai-dash first saw the variant. `null` marks a value that does
/// not exist for the bucket (no request: no error rate, no percentile) rather than a fake 0.
#[allow(missing_docs)] // field names and meanings are the Go dashboard's (contract section 3.4)
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Bucket end, Unix ms.
    pub timestamp: i64,
    /// Variant name.
    pub variant: String,
    pub requests_2xx: f64,
    pub requests_4xx: f64,
    pub requests_5xx: f64,
    pub tokens_input: f64,
    pub tokens_output: f64,
    pub tokens_cache_read: f64,
    pub tokens_cache_write: f64,
    pub estimated_cost_usd_input: f64,
    pub estimated_cost_usd_output: f64,
    pub estimated_cost_usd_cache_read: f64,
    pub estimated_cost_usd_cache_write: f64,
    pub concurrent_requests: f64,
    pub max_workers: f64,
    pub rate_limit_rps: f64,
    pub rate_limit_rejections: f64,
    pub rate_limit_adj_increase: f64,
    pub rate_limit_adj_decrease: f64,
    pub upstream_errors: f64,
    pub retry_attempts: f64,
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

/// Turns time-ordered rows into points, remembering each pod's running totals between buckets.
///
/// A pod's rate is its increases divided by the time they cover (its `elapsed`), in every
/// bucket width. In a complete bucket that time equals the bucket; it differs in the honest
/// direction elsewhere: a missed scrape does not double the next bucket, increases accumulated
/// while zai-dash was down are spread over the outage instead of spiking, and the bucket still
/// filling up at the right edge of a chart does not dip.
#[derive(Debug, Default)]
pub struct PointBuilder {
    carry: HashMap<i64, (Arc<str>, Totals)>,
}

/// Per-pod rows within one bucket (borrowed: building a point copies no maps).
#[derive(Default)]
struct Pod<'a> {
    rows: Vec<&'a Summary>,
    elapsed_ms: i64,
    concurrent: Vec<GaugeStat>,
    max_workers: Vec<GaugeStat>,
    rps: Vec<GaugeStat>,
    quota: Option<(i64, &'a Arc<Quota>)>,
}

impl PointBuilder {
    /// A builder with no pod seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers a pod's latest row from before the window, for its running totals.
    pub fn seed(&mut self, row: &Summary) {
        self.carry.insert(row.target_id, (row.variant.clone(), row.totals));
    }

    /// Builds one point per variant present in `rows` (all rows of one bucket, time order).
    pub fn build(&mut self, bucket_end_ms: i64, rows: &[&Summary]) -> Vec<Point> {
        let mut by_variant: BTreeMap<&str, BTreeMap<i64, Pod<'_>>> = BTreeMap::new();
        for &row in rows {
            let pod = by_variant.entry(&row.variant).or_default().entry(row.target_id).or_default();
            pod.rows.push(row);
            pod.elapsed_ms += row.elapsed_ms;
            let [c, m, r] = row.gauges;
            pod.concurrent.extend(c);
            pod.max_workers.extend(m);
            pod.rps.extend(r);
            if let Some(q) = &row.quota {
                pod.quota = Some((row.ts_ms, q));
            }
            match self.carry.get_mut(&row.target_id) {
                Some(entry) if Arc::ptr_eq(&entry.0, &row.variant) || entry.0 == row.variant => entry.1 = row.totals,
                _ => {
                    self.carry.insert(row.target_id, (row.variant.clone(), row.totals));
                }
            }
        }
        by_variant.into_iter().map(|(variant, pods)| self.point(bucket_end_ms, variant, &pods)).collect()
    }

    fn point(&self, ts: i64, variant: &str, pods: &BTreeMap<i64, Pod<'_>>) -> Point {
        let mut w = Window::default();
        let mut rates = Rates::default();
        let (mut concurrent, mut max_workers, mut rps) = (0.0, 0.0, 0.0);
        for pod in pods.values() {
            let secs = pod.elapsed_ms as f64 / 1000.0;
            for row in &pod.rows {
                w.add(row);
                if secs > 0.0 {
                    rates.add(row, secs);
                }
            }
            concurrent += mean(&pod.concurrent);
            max_workers += mean(&pod.max_workers);
            rps += mean(&pod.rps);
        }
        let totals = self.variant_totals(variant);
        let q = |h: &super::Histogram, p: f64| h.quantile(p).map(|s| s * 1000.0);
        Point {
            timestamp: ts,
            variant: variant.to_owned(),
            requests_2xx: totals.requests_2xx,
            requests_4xx: totals.requests_4xx,
            requests_5xx: totals.requests_5xx,
            tokens_input: totals.tokens[0],
            tokens_output: totals.tokens[1],
            tokens_cache_read: totals.tokens[2],
            tokens_cache_write: totals.tokens[3],
            estimated_cost_usd_input: totals.cost[0],
            estimated_cost_usd_output: totals.cost[1],
            estimated_cost_usd_cache_read: totals.cost[2],
            estimated_cost_usd_cache_write: totals.cost[3],
            concurrent_requests: concurrent,
            max_workers,
            rate_limit_rps: rps,
            rate_limit_rejections: totals.rejections,
            rate_limit_adj_increase: totals.adj_increase,
            rate_limit_adj_decrease: totals.adj_decrease,
            upstream_errors: totals.upstream_errors,
            retry_attempts: totals.retry_attempts,
            latency_p50: q(&w.duration, 0.5),
            latency_p95: q(&w.duration, 0.95),
            latency_p99: q(&w.duration, 0.99),
            request_size_avg: mean_of(w.request_size.sum, w.request_size.count),
            response_size_avg: mean_of(w.response_size.sum, w.response_size.count),
            token_rate_in: rates.tokens[0],
            token_rate_out: rates.tokens[1],
            token_rate_cache_read: rates.tokens[2],
            token_rate_cache_write: rates.tokens[3],
            req_rate: rates.requests,
            error_rate_pct: (w.requests > 0.0).then(|| 100.0 * w.errors / w.requests),
            worker_utilization: if max_workers > 0.0 { concurrent / max_workers } else { 0.0 },
            status_code_rates: rates.by_status.into_iter().map(|(k, v)| (status_label(k), v)).collect(),
            quota: freshest_quota(pods),
            requests: w.requests,
            cost_rate_usd: rates.cost,
            rejection_rate: rates.rejections,
            retry_rate: rates.retries,
            upstream_error_rate: rates.upstream_errors,
            ttft_p50: q(&w.ttft, 0.5),
            ttft_p95: q(&w.ttft, 0.95),
            ttft_p99: q(&w.ttft, 0.99),
            tpot_p50: q(&w.tpot, 0.5),
            tpot_p95: q(&w.tpot, 0.95),
            tpot_p99: q(&w.tpot, 0.99),
            pods: u32::try_from(pods.len()).unwrap_or(u32::MAX),
        }
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
        self.requests += c.total_requests();
        self.errors += c.server_errors();
        self.duration.add(&c.duration);
        self.ttft.add(&c.ttft);
        self.tpot.add(&c.tpot);
        self.request_size.sum += c.request_size.sum;
        self.request_size.count += c.request_size.count;
        self.response_size.sum += c.response_size.sum;
        self.response_size.count += c.response_size.count;
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
        self.requests += c.total_requests() / secs;
        for (code, n) in &c.requests {
            *self.by_status.entry(*code).or_default() += n / secs;
        }
        for (r, t) in self.tokens.iter_mut().zip(c.tokens) {
            *r += t / secs;
        }
        self.cost += c.cost / secs;
        self.rejections += c.rejections / secs;
        self.retries += c.retries / secs;
        self.upstream_errors += c.upstream_errors / secs;
    }
}

fn mean(stats: &[GaugeStat]) -> f64 {
    GaugeStat::combine(stats.iter().copied()).map_or(0.0, |s| s.avg)
}

fn mean_of(sum: f64, count: f64) -> Option<f64> {
    (count > 0.0).then(|| sum / count)
}

/// Quota is account-wide, so it is never summed: the pod with the newest sample speaks.
fn freshest_quota(pods: &BTreeMap<i64, Pod<'_>>) -> Option<Quota> {
    pods.values()
        .filter_map(|p| p.quota)
        .max_by(|a, b| {
            let age = |q: &Quota| q.sample_age_seconds.unwrap_or(f64::INFINITY);
            a.0.cmp(&b.0).then(age(b.1).total_cmp(&age(a.1)))
        })
        .map(|(_, q)| q.as_ref().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::{Counts, GaugeStat, Gauges, Histogram, TargetRow, Totals};

    fn sum(rows: &[&TargetRow]) -> Vec<Summary> {
        rows.iter().map(|r| Summary::from(*r)).collect()
    }

    fn build(pb: &mut PointBuilder, ts: i64, rows: &[&TargetRow]) -> Vec<Point> {
        let s = sum(rows);
        pb.build(ts, &s.iter().collect::<Vec<_>>())
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
        assert_eq!(p.requests_2xx, 10.0);
        assert_eq!(p.requests_5xx, 10.0);
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
        pb.seed(&Summary::from(&row(2, "production", 0, 5_000, 7.0, 0.0, &[])));
        let p = &build(&mut pb, 5_000, &[&a])[0];
        assert_eq!(p.requests_2xx, 17.0);
    }

    #[test]
    fn wide_buckets_spread_a_long_gap_instead_of_spiking() {
        // 600 requests accumulated over a 10-minute outage of zai-dash, landing in one minute.
        let a = row(1, "production", 60_000, 600_000, 600.0, 0.0, &[]);
        let p = &build(&mut PointBuilder::new(), 60_000, &[&a])[0];
        assert_eq!(p.req_rate, 1.0);
        // A bucket still filling up (30 s observed) shows the rate while observed, not a dip.
        let b = row(1, "production", 60_000, 30_000, 60.0, 0.0, &[]);
        let p = &build(&mut PointBuilder::new(), 60_000, &[&b])[0];
        assert_eq!(p.req_rate, 2.0);
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
