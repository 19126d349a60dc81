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
use crate::source::WindowSums;

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

impl WindowStats {
    /// A variant's statistics from its window sums: rates over the time the data covers,
    /// as `/api/compare` computes them (shared by every [`StatsSource`]).
    pub fn from_sums(sums: &WindowSums, end_ms: i64) -> Self {
        let covered = sums.covered_seconds(end_ms);
        let rejection_rate = if covered > 0.0 { sums.counts.rejections / covered } else { 0.0 };
        Self { side: SideStats::from_counts(&sums.counts, covered), rejection_rate }
    }
}

/// Most points per variant a history holds: its step is widened beyond.
pub const MAX_SERIES_POINTS: i64 = 1_500;

/// The step of a history over `range_ms` at `resolution_ms`: at least the rule's step and the
/// resolution, wide enough for [`MAX_SERIES_POINTS`], on the resolution's grid.
pub fn series_step(range_ms: i64, step_ms: i64, resolution_ms: i64) -> i64 {
    crate::clock::bucket_end(step_ms.max(resolution_ms).max(range_ms / MAX_SERIES_POINTS), resolution_ms)
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
