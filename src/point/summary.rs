//! What a point needs from one row, without the per-label detail it does not show.
//!
//! Points sum requests by status, tokens and cost by direction, and error and retry totals;
//! they never need the per-model or per-error-type maps. A [`Summary`] keeps just that, so a
//! range query can summarise encoded rows without allocating a string per label (see
//! `store::codec::RowView`), and the live ticker summarises its freshly scraped rows the same
//! way: both paths then share [`super::PointBuilder`].

use std::sync::Arc;

use super::{GaugeStat, Histogram, Quota, SumCount, TargetRow, Totals, total};

/// An HTTP status code label; non-numeric values (the `other` of a capped label) are 0.
pub(crate) type Status = u16;

/// Parses a `status_code` label value.
pub(crate) fn status(label: &str) -> Status {
    label.parse().unwrap_or(0)
}

/// The label text of a status.
pub(crate) fn status_label(s: Status) -> String {
    if s == 0 { "other".to_owned() } else { s.to_string() }
}

/// One row reduced to what points use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Target id.
    pub target_id: i64,
    /// Variant of the row.
    pub variant: Arc<str>,
    /// Bucket end.
    pub ts_ms: i64,
    /// Time the increases cover.
    pub elapsed_ms: i64,
    /// Time the target was present in the row's bucket.
    pub present_ms: i64,
    /// Requests by status.
    pub requests: Vec<(Status, f64)>,
    /// Tokens per direction.
    pub tokens: [f64; 4],
    /// Cost, all directions.
    pub cost: f64,
    /// Upstream errors, all types.
    pub upstream_errors: f64,
    /// Retries performed (without the generic `retry` series).
    pub retries: f64,
    /// Capacity rejections.
    pub rejections: f64,
    /// Request sizes.
    pub request_size: SumCount,
    /// Response sizes.
    pub response_size: SumCount,
    /// Request duration buckets.
    pub duration: Histogram,
    /// Time to first token buckets.
    pub ttft: Histogram,
    /// Time per output token buckets.
    pub tpot: Histogram,
    /// Running totals.
    pub totals: Totals,
    /// Concurrency, max workers, rate limit.
    pub gauges: [Option<GaugeStat>; 3],
    /// Quota block, shared between rows that repeat it.
    pub quota: Option<Arc<Quota>>,
}

impl Summary {
    /// All requests.
    pub(crate) fn total_requests(&self) -> f64 {
        total(self.requests.iter().map(|(_, n)| n))
    }

    /// 5xx requests.
    pub(crate) fn server_errors(&self) -> f64 {
        total(self.requests.iter().filter(|(s, _)| (500..600).contains(s)).map(|(_, n)| n))
    }
}

impl From<&TargetRow> for Summary {
    fn from(r: &TargetRow) -> Self {
        let c = &r.counts;
        Self {
            target_id: r.target_id,
            variant: Arc::from(r.variant.as_str()),
            ts_ms: r.ts_ms,
            elapsed_ms: r.elapsed_ms,
            present_ms: r.present_ms,
            requests: c.requests.iter().map(|(k, v)| (status(k), *v)).collect(),
            tokens: c.tokens_by_direction(),
            cost: total(c.cost_by_direction().iter()),
            upstream_errors: total(c.upstream_errors.values()),
            retries: c.retry_attempts(),
            rejections: c.rejections,
            request_size: c.request_size,
            response_size: c.response_size,
            duration: c.duration.clone(),
            ttft: c.ttft.clone(),
            tpot: c.tpot.clone(),
            totals: r.totals,
            gauges: [r.gauges.concurrent, r.gauges.max_workers, r.gauges.rate_limit_rps],
            quota: r.gauges.quota.clone().map(Arc::new),
        }
    }
}
