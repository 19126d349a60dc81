//! Window statistics per variant, behind a trait: what a reader that judges numbers (the alert
//! engine) asks for, without knowing where the numbers come from.
//!
//! The store answers from the same window sums `/api/compare` reads, so an alert and the page
//! agree on every value; an engine-backed source (PromQL against Prometheus) can answer the same
//! questions. Both speak the core's types: [`SideStats`] for a window, [`Point`] for a series.

use std::collections::BTreeMap;

use crate::compare::SideStats;
use crate::ingest::BoxFuture;
use crate::point::Point;

/// Why statistics could not be read (the source's own error, as text: readers only log it).
#[derive(Debug, thiserror::Error)]
#[error("window statistics unavailable: {0}")]
pub struct StatsError(pub String);

/// One variant's numbers over one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    /// Requests, error share, latency quantiles, rates: as `/api/compare` shows them.
    pub side: SideStats,
    /// Capacity rejections per second over the window.
    pub rejection_rate: f64,
}

/// Per-variant statistics for windows ending at a given time.
pub trait StatsSource: Send + Sync + std::fmt::Debug {
    /// Each variant's statistics over `(end_ms - window_ms, end_ms]`.
    fn window_stats(
        &self,
        end_ms: i64,
        window_ms: i64,
    ) -> BoxFuture<'_, Result<BTreeMap<String, WindowStats>, StatsError>>;

    /// Points of every variant over `(end_ms - range_ms, end_ms]`, one per `step_ms` (rounded up
    /// to the source's resolution): a history to compare the present with.
    fn series(&self, end_ms: i64, range_ms: i64, step_ms: i64) -> BoxFuture<'_, Result<Vec<Point>, StatsError>>;
}
