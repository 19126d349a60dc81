//! The domain model: what one target contributes to one bucket ([`TargetRow`]), and how rows
//! become the points the API and the live stream serve ([`aggregate`]).
//!
//! A row holds *increases* since the target's previous successful scrape (never lifetime
//! totals), the reset-corrected running totals the Go API's cumulative fields need, and gauges.
//! Everything a point shows is derived from these at read time, so the 5 s table, the 1 min
//! table and re-bucketed answers share one code path.

pub(crate) mod aggregate;
pub(crate) mod fields;
pub(crate) mod histogram;
mod json;
pub(crate) mod label;
pub(crate) mod summary;

use std::collections::BTreeMap;

use serde::Serialize;

pub(crate) use aggregate::{Bucket, PointBuilder};
pub use fields::{MAX_VALUE, PartRates, Point, PointParts, bounded, error_share_pct};
pub use histogram::Histogram;
pub use label::Label;
pub(crate) use summary::Summary;

/// Token directions, in the order used by the `[f64; 4]` arrays below.
pub(crate) const DIRECTIONS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];
/// Rate limit adjustment directions, in the order of [`Counts::adjustments`].
pub(crate) const ADJUSTMENTS: [&str; 3] = ["increase", "decrease", "probe"];

/// Sum and count of a size histogram, for averages.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SumCount {
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

impl SumCount {
    /// The mean observation, `None` without any.
    pub(crate) fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    fn add(&mut self, o: &SumCount) {
        self.sum += o.sum;
        self.count += o.count;
    }
}

/// Increases of every counter family we show, over one row's interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Requests by HTTP status code.
    pub requests: BTreeMap<Label, f64>,
    /// Tokens by model, per direction ([`DIRECTIONS`]), summed over pricing tiers.
    pub tokens: BTreeMap<Label, [f64; 4]>,
    /// Estimated USD cost by model, per direction.
    pub cost: BTreeMap<Label, [f64; 4]>,
    /// Upstream errors by `error_type`.
    pub upstream_errors: BTreeMap<Label, f64>,
    /// Retries by `reason`, including the generic `retry` series.
    pub retries: BTreeMap<Label, f64>,
    /// Capacity rejections (503 at `MAX_WORKERS`).
    pub rejections: f64,
    /// Rate limit adjustments by direction ([`ADJUSTMENTS`]).
    pub adjustments: [f64; 3],
    /// Request size observations.
    pub request_size: SumCount,
    /// Response size observations.
    pub response_size: SumCount,
    /// Request duration buckets, summed over all label sets.
    pub duration: Histogram,
    /// Time to first token buckets, when the target exports them.
    pub ttft: Histogram,
    /// Time per output token buckets, when the target exports them.
    pub tpot: Histogram,
    /// Per caller bucket (the proxy's `client` label, `source-00` ... `source-63`): capacity
    /// rejections and rate-limiter waits; only buckets with an increase in the row.
    pub clients: BTreeMap<Label, ClientCounts>,
}

/// What one caller bucket (`client` label) did over a row's interval: who is waiting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientCounts {
    /// Capacity rejections (`zai_proxy_rate_limit_rejections_total{client}`).
    pub rejections: f64,
    /// Rate-limiter waits (`zai_proxy_rate_limit_wait_seconds{client}`), buckets as exported.
    pub wait: Histogram,
}

impl ClientCounts {
    /// Adds `o`'s increases.
    pub(crate) fn add(&mut self, o: &ClientCounts) {
        self.rejections += o.rejections;
        self.wait.add(&o.wait);
    }
}

/// Adds `from` into `into` key by key. A key already there is added to in place: sums over a
/// window add the same few keys (statuses, models) row after row, and cloning each key to look
/// it up (`entry`) was about 7 % of a 500-target process's allocations (heaptrack,
/// BENCHMARKS.md "Memory, ninth stop").
fn add_map<V: Copy + Default>(into: &mut BTreeMap<Label, V>, from: &BTreeMap<Label, V>, add: fn(&mut V, &V)) {
    for (k, v) in from {
        match into.get_mut(k) {
            Some(mine) => add(mine, v),
            None => {
                let mut sum = V::default();
                add(&mut sum, v);
                into.insert(k.clone(), sum);
            }
        }
    }
}

fn add_f64(a: &mut f64, b: &f64) {
    *a += b;
}

fn add_arr<const N: usize>(a: &mut [f64; N], b: &[f64; N]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

impl Counts {
    /// Adds every increase of `o` into `self`.
    pub(crate) fn add(&mut self, o: &Counts) {
        add_map(&mut self.requests, &o.requests, add_f64);
        add_map(&mut self.tokens, &o.tokens, add_arr);
        add_map(&mut self.cost, &o.cost, add_arr);
        add_map(&mut self.upstream_errors, &o.upstream_errors, add_f64);
        add_map(&mut self.retries, &o.retries, add_f64);
        self.rejections += o.rejections;
        add_arr(&mut self.adjustments, &o.adjustments);
        self.request_size.add(&o.request_size);
        self.response_size.add(&o.response_size);
        self.duration.add(&o.duration);
        self.ttft.add(&o.ttft);
        self.tpot.add(&o.tpot);
        for (k, c) in &o.clients {
            match self.clients.get_mut(k) {
                Some(mine) => mine.add(c),
                None => {
                    self.clients.insert(k.clone(), c.clone());
                }
            }
        }
    }

    /// All requests, any status.
    pub fn total_requests(&self) -> f64 {
        total(self.requests.values())
    }

    /// Requests whose status code starts with `class` (`'2'`, `'4'`, `'5'`).
    pub(crate) fn requests_in_class(&self, class: char) -> f64 {
        total(self.requests.iter().filter(|(k, _)| k.starts_with(class)).map(|(_, v)| v))
    }

    /// Tokens per direction, over all models.
    pub(crate) fn tokens_by_direction(&self) -> [f64; 4] {
        sum_arrays(self.tokens.values())
    }

    /// Cost per direction, over all models.
    pub(crate) fn cost_by_direction(&self) -> [f64; 4] {
        sum_arrays(self.cost.values())
    }

    /// Retries actually performed: every reason except the generic `retry` series, which
    /// zai-proxy increments alongside the specific one (the Go dashboard counted both).
    pub(crate) fn retry_attempts(&self) -> f64 {
        total(self.retries.iter().filter(|(k, _)| k.as_str() != "retry").map(|(_, v)| v))
    }
}

/// Sum starting from +0.0: `Iterator::sum` of no `f64` is -0.0, which would reach the JSON as
/// `-0.0`.
pub(crate) fn total<'a>(values: impl Iterator<Item = &'a f64>) -> f64 {
    values.fold(0.0, |a, b| a + b)
}

fn sum_arrays<'a>(it: impl Iterator<Item = &'a [f64; 4]>) -> [f64; 4] {
    let mut out = [0.0; 4];
    for a in it {
        add_arr(&mut out, a);
    }
    out
}

/// Reset-corrected running totals of one target since zai-dash first saw it: the Go API's
/// cumulative fields (`requests_2xx`, `tokens_input`, ...), which survive counter resets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// 2xx responses.
    pub requests_2xx: f64,
    /// 4xx responses.
    pub requests_4xx: f64,
    /// 5xx responses.
    pub requests_5xx: f64,
    /// Tokens per direction.
    pub tokens: [f64; 4],
    /// Estimated cost per direction.
    pub cost: [f64; 4],
    /// Capacity rejections.
    pub rejections: f64,
    /// Rate limit increases.
    pub adj_increase: f64,
    /// Rate limit decreases.
    pub adj_decrease: f64,
    /// Upstream errors of every type.
    pub upstream_errors: f64,
    /// Retries performed (without the generic `retry` series).
    pub retry_attempts: f64,
}

impl Totals {
    /// Accumulates one interval's increases.
    pub(crate) fn accumulate(&mut self, c: &Counts) {
        self.requests_2xx += c.requests_in_class('2');
        self.requests_4xx += c.requests_in_class('4');
        self.requests_5xx += c.requests_in_class('5');
        add_arr(&mut self.tokens, &c.tokens_by_direction());
        add_arr(&mut self.cost, &c.cost_by_direction());
        self.rejections += c.rejections;
        self.adj_increase += c.adjustments[0];
        self.adj_decrease += c.adjustments[1];
        self.upstream_errors += total(c.upstream_errors.values());
        self.retry_attempts += c.retry_attempts();
    }

    /// Adds another target's totals (a variant sums its pods).
    pub(crate) fn add(&mut self, o: &Totals) {
        self.requests_2xx += o.requests_2xx;
        self.requests_4xx += o.requests_4xx;
        self.requests_5xx += o.requests_5xx;
        add_arr(&mut self.tokens, &o.tokens);
        add_arr(&mut self.cost, &o.cost);
        self.rejections += o.rejections;
        self.adj_increase += o.adj_increase;
        self.adj_decrease += o.adj_decrease;
        self.upstream_errors += o.upstream_errors;
        self.retry_attempts += o.retry_attempts;
    }
}

/// A gauge over a row's interval: one value in a 5 s row; average, extremes and last value in
/// a rolled-up row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaugeStat {
    /// Mean of the 5 s values.
    pub avg: f64,
    /// Smallest 5 s value.
    pub min: f64,
    /// Largest 5 s value.
    pub max: f64,
    /// Latest 5 s value.
    pub last: f64,
}

impl GaugeStat {
    /// A single observation.
    pub fn single(v: f64) -> Self {
        Self { avg: v, min: v, max: v, last: v }
    }

    /// Combines consecutive stats, in time order: equal-weight mean, extremes, last.
    pub(crate) fn combine(stats: impl Iterator<Item = GaugeStat>) -> Option<GaugeStat> {
        let mut n = 0.0;
        let mut acc: Option<GaugeStat> = None;
        for s in stats {
            n += 1.0;
            acc = Some(match acc {
                None => s,
                Some(a) => GaugeStat {
                    avg: a.avg + (s.avg - a.avg) / n,
                    min: a.min.min(s.min),
                    max: a.max.max(s.max),
                    last: s.last,
                },
            });
        }
        acc
    }
}

/// One quota window (`five_hour` or `weekly`) as the proxy reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QuotaWindow {
    /// Provider limit schema (`credit_limit`, `tokens_limit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_type: Option<String>,
    /// Used fraction 0..1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_ratio: Option<f64>,
    /// Remaining fraction 0..1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_ratio: Option<f64>,
    /// Unix seconds of the next reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_time_unix: Option<f64>,
}

/// The provider quota block, in the Go dashboard's JSON shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Quota {
    /// Five-hour window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub five_hour: Option<QuotaWindow>,
    /// Weekly window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekly: Option<QuotaWindow>,
    /// Age of the proxy's last good quota sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_age_seconds: Option<f64>,
    /// Whether confirmed exhaustion is rejecting work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_open: Option<bool>,
    /// Whether quota enforcement is configured at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<bool>,
}

/// Gauges of one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// In-flight requests.
    pub concurrent: Option<GaugeStat>,
    /// Configured worker cap.
    pub max_workers: Option<GaugeStat>,
    /// Current rate limit (requests per second).
    pub rate_limit_rps: Option<GaugeStat>,
    /// Latest quota block, when the target exports one.
    pub quota: Option<Quota>,
}

/// What one target contributed to one bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetRow {
    /// Database id of the target.
    pub target_id: i64,
    /// Variant the target belonged to when scraped.
    pub variant: String,
    /// Bucket end, Unix ms.
    pub ts_ms: i64,
    /// Milliseconds covered by the increases (time since the previous successful scrape;
    /// 0 for a baseline scrape, which has no increases).
    pub elapsed_ms: i64,
    /// Milliseconds the target was present in the row's bucket: one point width for a raw row
    /// (it was scraped in that bucket, baseline included), the sum over its rows for a rollup.
    /// Gauges of wide buckets are weighted by it.
    pub present_ms: i64,
    /// Increases.
    pub counts: Counts,
    /// Running totals at the end of the bucket.
    pub totals: Totals,
    /// Gauges.
    pub gauges: Gauges,
}

impl TargetRow {
    /// Folds a later scrape of the same target into this row (two scrapes completed in one
    /// bucket): increases and elapsed time add up, totals and gauges take the later values.
    pub(crate) fn absorb_later(&mut self, later: &TargetRow) {
        self.counts.add(&later.counts);
        self.elapsed_ms += later.elapsed_ms;
        self.present_ms = self.present_ms.max(later.present_ms);
        self.totals = later.totals;
        self.variant.clone_from(&later.variant);
        let g = &later.gauges;
        self.gauges.concurrent = g.concurrent.or(self.gauges.concurrent);
        self.gauges.max_workers = g.max_workers.or(self.gauges.max_workers);
        self.gauges.rate_limit_rps = g.rate_limit_rps.or(self.gauges.rate_limit_rps);
        if g.quota.is_some() {
            self.gauges.quota.clone_from(&g.quota);
        }
    }

    /// Starts a rollup ending at `ts_ms` from a target's first row of the bucket; later rows
    /// are folded in with [`TargetRow::fold_later`], giving exactly what [`TargetRow::rollup`]
    /// gives for the same rows, without holding them.
    pub(crate) fn start_rollup(first: TargetRow, ts_ms: i64) -> RollingRow {
        let n = [&first.gauges.concurrent, &first.gauges.max_workers, &first.gauges.rate_limit_rps]
            .map(|g| if g.is_some() { 1.0 } else { 0.0 });
        // Summed into empty counts, as `rollup` sums (adding to zero normalises what a row may
        // hold as is, such as a -0.0).
        let mut counts = Counts::default();
        counts.add(&first.counts);
        RollingRow { row: TargetRow { ts_ms, counts, ..first }, n }
    }

    /// Rolls consecutive rows of one target (time order) into one row ending at `ts_ms`:
    /// increases and histogram buckets summed, gauges as avg/min/max/last, totals and quota
    /// from the last row. Never averages percentiles or cumulative values.
    pub(crate) fn rollup(rows: &[TargetRow], ts_ms: i64) -> Option<TargetRow> {
        let last = rows.last()?;
        let mut counts = Counts::default();
        for r in rows {
            counts.add(&r.counts);
        }
        let gauge = |f: fn(&Gauges) -> Option<GaugeStat>| GaugeStat::combine(rows.iter().filter_map(|r| f(&r.gauges)));
        Some(TargetRow {
            target_id: last.target_id,
            variant: last.variant.clone(),
            ts_ms,
            elapsed_ms: rows.iter().map(|r| r.elapsed_ms).sum(),
            present_ms: rows.iter().map(|r| r.present_ms).sum(),
            counts,
            totals: last.totals,
            gauges: Gauges {
                concurrent: gauge(|g| g.concurrent),
                max_workers: gauge(|g| g.max_workers),
                rate_limit_rps: gauge(|g| g.rate_limit_rps),
                quota: rows.iter().rev().find_map(|r| r.gauges.quota.clone()),
            },
        })
    }
}

/// A rollup being built row by row ([`TargetRow::start_rollup`]): the rolled row so far, and
/// how many rows each gauge's running average has seen.
#[derive(Debug, Clone)]
pub(crate) struct RollingRow {
    row: TargetRow,
    n: [f64; 3],
}

impl RollingRow {
    /// Folds in the target's next row of the bucket, as [`TargetRow::rollup`] would.
    pub(crate) fn fold_later(&mut self, later: TargetRow) {
        self.row.counts.add(&later.counts);
        if self.row.variant != later.variant {
            self.row.variant = later.variant;
        }
        let g = &later.gauges;
        let gauges = [g.concurrent, g.max_workers, g.rate_limit_rps];
        let times = (later.elapsed_ms, later.present_ms);
        self.fold_rest(later.target_id, times, later.totals, gauges, later.gauges.quota);
    }

    /// [`Self::fold_later`] of a row whose increases the caller adds into [`Self::counts_mut`]
    /// itself (from the stored payload, without decoding it into a [`Counts`]), given the
    /// rest of it.
    pub(crate) fn fold_parts(
        &mut self,
        (target_id, variant): (i64, &str),
        times: (i64, i64),
        totals: Totals,
        gauges: [Option<GaugeStat>; 3],
        quota: Option<Quota>,
    ) {
        if self.row.variant != variant {
            variant.clone_into(&mut self.row.variant);
        }
        self.fold_rest(target_id, times, totals, gauges, quota);
    }

    /// The increases rolled so far, to add a later row's into.
    pub(crate) fn counts_mut(&mut self) -> &mut Counts {
        &mut self.row.counts
    }

    fn fold_rest(
        &mut self,
        target_id: i64,
        (elapsed_ms, present_ms): (i64, i64),
        totals: Totals,
        [concurrent, max_workers, rate_limit_rps]: [Option<GaugeStat>; 3],
        quota: Option<Quota>,
    ) {
        let r = &mut self.row;
        r.elapsed_ms += elapsed_ms;
        r.present_ms += present_ms;
        r.totals = totals;
        r.target_id = target_id;
        let pairs = [
            (&mut r.gauges.concurrent, concurrent),
            (&mut r.gauges.max_workers, max_workers),
            (&mut r.gauges.rate_limit_rps, rate_limit_rps),
        ];
        for ((acc, next), n) in pairs.into_iter().zip(&mut self.n) {
            if let Some(s) = next {
                *n += 1.0;
                *acc = Some(match *acc {
                    None => s,
                    Some(a) => GaugeStat {
                        avg: a.avg + (s.avg - a.avg) / *n,
                        min: a.min.min(s.min),
                        max: a.max.max(s.max),
                        last: s.last,
                    },
                });
            }
        }
        if quota.is_some() {
            r.gauges.quota = quota;
        }
    }

    /// The rolled row.
    pub(crate) fn finish(self) -> TargetRow {
        self.row
    }

    /// End of the bucket being rolled.
    pub(crate) fn ts_ms(&self) -> i64 {
        self.row.ts_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts: i64, req200: f64, req500: f64, conc: f64) -> TargetRow {
        let mut counts = Counts::default();
        counts.requests.insert("200".into(), req200);
        counts.requests.insert("500".into(), req500);
        counts.retries.insert("retry".into(), 2.0);
        counts.retries.insert("429".into(), 2.0);
        let mut totals = Totals::default();
        totals.accumulate(&counts);
        TargetRow {
            target_id: 1,
            variant: "production".into(),
            ts_ms: ts,
            elapsed_ms: 5_000,
            present_ms: 5_000,
            counts,
            totals,
            gauges: Gauges { concurrent: Some(GaugeStat::single(conc)), ..Gauges::default() },
        }
    }

    #[test]
    fn totals_exclude_generic_retry_series() {
        let r = row(5_000, 3.0, 1.0, 0.0);
        assert_eq!(r.totals.retry_attempts, 2.0);
        assert_eq!(r.totals.requests_2xx, 3.0);
        assert_eq!(r.totals.requests_5xx, 1.0);
    }

    #[test]
    fn rollup_sums_increases_and_summarises_gauges() {
        let rows = [row(5_000, 1.0, 0.0, 2.0), row(10_000, 2.0, 1.0, 4.0), row(15_000, 3.0, 0.0, 0.0)];
        let r = TargetRow::rollup(&rows, 60_000).unwrap();
        assert_eq!(r.counts.requests["200"], 6.0);
        assert_eq!(r.counts.requests["500"], 1.0);
        assert_eq!(r.elapsed_ms, 15_000);
        assert_eq!(r.totals, rows[2].totals);
        let c = r.gauges.concurrent.unwrap();
        assert_eq!((c.avg, c.min, c.max, c.last), (2.0, 0.0, 4.0, 0.0));
    }

    #[test]
    fn a_rollup_folded_row_by_row_is_the_rollup_of_the_rows() {
        let mut rows: Vec<TargetRow> =
            (1..=12).map(|i| row(i * 5_000, i as f64, (i % 3) as f64, 0.37 * i as f64)).collect();
        rows[3].gauges.concurrent = None;
        rows[0].gauges.concurrent = None;
        rows[5].gauges.max_workers = Some(GaugeStat::single(4.0));
        rows[7].gauges.quota = Some(Quota { gate_open: Some(true), ..Quota::default() });
        rows[9].variant = "canary".into();
        rows[4].counts.duration.buckets = vec![(0.5, 1.0), (f64::INFINITY, 3.0)];
        rows[4].counts.duration.count = 3.0;
        let batch = TargetRow::rollup(&rows, 60_000).unwrap();
        let mut rolling = TargetRow::start_rollup(rows[0].clone(), 60_000);
        for r in &rows[1..] {
            rolling.fold_later(r.clone());
        }
        assert_eq!(format!("{:?}", rolling.finish()), format!("{batch:?}"));
    }

    #[test]
    fn rollup_sums_each_caller_bucket() {
        let wait = |n: f64| Histogram { buckets: vec![(0.1, n), (f64::INFINITY, n)], sum: n * 0.05, count: n };
        let mut rows = vec![row(5_000, 1.0, 0.0, 1.0), row(10_000, 1.0, 0.0, 1.0)];
        rows[0].counts.clients.insert("source-01".into(), ClientCounts { rejections: 1.0, wait: wait(2.0) });
        rows[1].counts.clients.insert("source-01".into(), ClientCounts { rejections: 2.0, wait: wait(3.0) });
        rows[1].counts.clients.insert("source-02".into(), ClientCounts { rejections: 0.0, wait: wait(1.0) });
        let r = TargetRow::rollup(&rows, 60_000).unwrap();
        assert_eq!(r.counts.clients["source-01"], ClientCounts { rejections: 3.0, wait: wait(5.0) });
        assert_eq!(r.counts.clients["source-02"].wait.count, 1.0);
    }

    #[test]
    fn rollup_of_rollups_keeps_equal_weights() {
        let a = GaugeStat::combine([1.0, 2.0, 3.0].map(GaugeStat::single).into_iter()).unwrap();
        assert_eq!(a.avg, 2.0);
        assert_eq!(a.last, 3.0);
    }

    #[test]
    fn absorb_later_adds_increases_and_takes_latest_gauges() {
        let mut a = row(5_000, 1.0, 0.0, 2.0);
        a.absorb_later(&row(5_000, 2.0, 0.0, 7.0));
        assert_eq!(a.counts.requests["200"], 3.0);
        assert_eq!(a.elapsed_ms, 10_000);
        assert_eq!(a.gauges.concurrent.unwrap().last, 7.0);
    }
}
