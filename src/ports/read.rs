//! What the web layer reads, behind one trait: where the numbers come from is the wiring's
//! choice, not the handlers'.
//!
//! Two implementations answer the same questions in the same core types:
//! - the store (SQLite mode, `store::source`), from the rows zai-dash scraped itself;
//! - the engine (source mode, `engine`), from PromQL against Prometheus, VictoriaMetrics,
//!   Thanos or Mimir, which already scrape the proxies.
//!
//! The questions are the pages' and the API's: the points of a window (`/api/metrics`, the
//! export, the charts), a window's increases per variant (`/api/compare`, `/api/models`, the
//! per-model table), the marks a chart draws (version changes, firing alerts) and the variants
//! there is data for. Target health and live points are not here: both sources publish them
//! to the `HealthBoard` and the hub, which the web layer reads as before.

use std::collections::{BTreeMap, BTreeSet};

use super::BoxFuture;
use super::alert_state::AlertPeriod;
use super::ingest::Event;
use crate::compare::SideStats;
use crate::point::{Counts, Point};

/// Ranges up to one hour are answered from raw points (when raw rows still hold them).
pub const RAW_RANGE_LIMIT_MS: i64 = 3_600_000;

/// Source mode: how long after a scrape the samples of series an engine already knows can be
/// missing from its answers. VictoriaMetrics makes them searchable up to a second later (its
/// in-memory buffer is flushed every second); Prometheus at once. A target is counted fresh
/// with this margin. Buckets wait for `PROMETHEUS_DELAY` instead (this by default), which also
/// covers series the engine has not seen before.
pub const ENGINE_DELAY_MS: i64 = 1_500;

/// What `/api/metrics` asks for, already validated.
#[derive(Debug, Clone)]
pub struct PointQuery {
    /// Window start (exclusive), Unix ms.
    pub start_ms: i64,
    /// Window end (inclusive), Unix ms.
    pub end_ms: i64,
    /// Output bucket width; a multiple of the source table's width.
    pub step_ms: i64,
    /// Read `metrics_5s` (else `metrics_1m`).
    pub raw: bool,
    /// Width of a raw point: a step of this width on raw rows gives narrow points.
    pub point_ms: i64,
    /// Only this variant.
    pub variant: Option<String>,
    /// Only this target URL (in source mode: this `instance`).
    pub target_url: Option<String>,
}

impl PointQuery {
    /// End of the first bucket of the window (the window's start may fall inside it).
    pub fn first_bucket_end(&self) -> i64 {
        crate::clock::bucket_end(self.start_ms.saturating_add(1), self.step_ms)
    }

    /// Where reading the window's rows starts (exclusive): the start of its first bucket, less
    /// than one step before the window's start. With the step bounded by the window (`web::api`),
    /// a query reads at most one window more than it shows, whatever its parameters.
    pub fn read_after_ms(&self) -> i64 {
        self.first_bucket_end().saturating_sub(self.step_ms)
    }
}

/// A window to sum: `/api/compare`, `/api/models`, the alerts' window statistics.
#[derive(Debug, Clone)]
pub struct WindowQuery {
    /// Window start (exclusive), Unix ms.
    pub start_ms: i64,
    /// Window end (inclusive), Unix ms.
    pub end_ms: i64,
    /// Read `metrics_5s` only (else `metrics_1m` up to the rollup watermark, then `metrics_5s`).
    pub raw: bool,
    /// Width of a raw point and of a rollup: a row covers its width before its timestamp.
    pub widths: (i64, i64),
    /// Only this target URL (in source mode: this `instance`).
    pub target_url: Option<String>,
}

impl WindowQuery {
    /// The window of `window_ms` ending at `end_ms` over every target, read as `/api/compare`
    /// reads it: raw rows when the window is at most an hour and raw rows still cover it
    /// (`raw_since_ms`), else rollups up to the watermark and raw rows after it.
    pub fn ending(end_ms: i64, window_ms: i64, widths: (i64, i64), raw_since_ms: i64) -> Self {
        let start_ms = end_ms - window_ms;
        let raw = window_ms <= RAW_RANGE_LIMIT_MS && start_ms >= raw_since_ms;
        Self { start_ms, end_ms, raw, widths, target_url: None }
    }
}

/// One variant's sums over a window.
#[derive(Debug, Clone, Default)]
pub struct WindowSums {
    /// Increases, summed over the variant's pods.
    pub counts: Counts,
    /// Start of the first bucket with data in the window: rates over the window divide by the
    /// time from here to the window's end (what the data covers), not by the window's length.
    pub data_from_ms: i64,
}

impl WindowSums {
    /// Seconds the data covers inside a window ending at `end_ms`.
    pub fn covered_seconds(&self, end_ms: i64) -> f64 {
        (end_ms - self.data_from_ms).max(0) as f64 / 1000.0
    }
}

/// What one overview build reads: the chart points, the window's increases per variant (for
/// the per-model and status tables; only `(start, end]`, although the first bucket may start
/// earlier) and the marks the charts draw.
#[derive(Debug, Clone, Default)]
pub struct ChartData {
    /// Points, ascending by time then variant.
    pub points: Vec<Point>,
    /// Increases per variant over the window.
    pub counts: BTreeMap<String, Counts>,
    /// Version changes in the window.
    pub events: Vec<Event>,
    /// Alert firing periods overlapping the window.
    pub periods: Vec<AlertPeriod>,
}

/// Why a source could not answer. The web layer maps each kind to one status.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Local storage failed; the text is for the log, clients get a generic 500.
    #[error("storage: {0}")]
    Storage(String),
    /// The engine could not be reached or did not answer in time (503). The sentence names
    /// the engine's URL without credentials, so it may be shown.
    #[error("{0}")]
    Unavailable(String),
    /// The engine answered with an error or with something that is not the Prometheus HTTP API
    /// (502). The sentence names the engine's URL without credentials.
    #[error("{0}")]
    BadGateway(String),
}

/// Everything the pages and the API read, whatever holds the numbers.
pub trait DataSource: Send + Sync + std::fmt::Debug {
    /// Whether the source's background reads (the engine's poll of targets and live points)
    /// succeeded last time: pages that show only what the background keeps (target health)
    /// say the engine is down rather than showing stale health as current.
    fn status(&self) -> Result<(), SourceError> {
        Ok(())
    }

    /// Variants there is data for (stored history, or series in the engine).
    fn variants(&self) -> BoxFuture<'_, Result<BTreeSet<String>, SourceError>>;

    /// Points of the window, ascending by time then variant.
    fn points(&self, q: PointQuery) -> BoxFuture<'_, Result<Vec<Point>, SourceError>>;

    /// [`DataSource::points`] as the JSON array `/api/metrics` answers, at `now_ms` (the store
    /// serves the buckets it sealed from a cache).
    fn points_json(&self, q: PointQuery, now_ms: i64) -> BoxFuture<'_, Result<String, SourceError>> {
        let _ = now_ms;
        Box::pin(async move {
            let points = self.points(q).await?;
            serde_json::to_string(&points).map_err(|e| SourceError::Storage(e.to_string()))
        })
    }

    /// Increases of every variant over the window, with where its data starts.
    fn window(&self, q: WindowQuery) -> BoxFuture<'_, Result<BTreeMap<String, WindowSums>, SourceError>>;

    /// Everything the overview's charts draw for the window.
    fn chart(&self, q: PointQuery) -> BoxFuture<'_, Result<ChartData, SourceError>>;
}

/// Tokens and cost of one model over a window.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ModelUsage {
    /// Variant.
    pub variant: String,
    /// Model name as the proxy labelled it (untrusted text: escape it when rendering).
    pub model: String,
    /// Input tokens.
    pub tokens_input: f64,
    /// Output tokens.
    pub tokens_output: f64,
    /// Cache-read tokens.
    pub tokens_cache_read: f64,
    /// Cache-write tokens.
    pub tokens_cache_write: f64,
    /// Estimated cost, all directions (USD).
    pub cost_usd: f64,
    /// Seconds of the window the variant's data covers (the window, or less when data starts
    /// later).
    pub covered_seconds: f64,
}

/// One line per variant and model, largest cost first (then most tokens, then name).
pub fn model_usage(counts: &BTreeMap<String, Counts>) -> Vec<ModelUsage> {
    model_usage_covered(counts, &BTreeMap::new())
}

/// [`model_usage`] with each variant's covered seconds.
pub fn model_usage_covered(counts: &BTreeMap<String, Counts>, covered: &BTreeMap<String, f64>) -> Vec<ModelUsage> {
    let mut out = Vec::new();
    for (variant, c) in counts {
        let models: BTreeSet<&String> = c.tokens.keys().chain(c.cost.keys()).collect();
        for model in models {
            let t = c.tokens.get(model).copied().unwrap_or_default();
            let cost = c.cost.get(model).copied().unwrap_or_default();
            out.push(ModelUsage {
                variant: variant.clone(),
                model: model.clone(),
                tokens_input: t[0],
                tokens_output: t[1],
                tokens_cache_read: t[2],
                tokens_cache_write: t[3],
                cost_usd: cost.iter().fold(0.0, |a, b| a + b),
                covered_seconds: covered.get(variant).copied().unwrap_or(0.0),
            });
        }
    }
    let tokens = |m: &ModelUsage| m.tokens_input + m.tokens_output + m.tokens_cache_read + m.tokens_cache_write;
    out.sort_by(|a, b| {
        b.cost_usd.total_cmp(&a.cost_usd).then(tokens(b).total_cmp(&tokens(a))).then(a.model.cmp(&b.model))
    });
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_listed_per_variant_costliest_first() {
        let mut a = Counts::default();
        a.tokens.insert("glm-4.7".into(), [100.0, 50.0, 10.0, 0.0]);
        a.cost.insert("glm-4.7".into(), [0.1, 0.2, 0.0, 0.0]);
        a.tokens.insert("glm-4.5-air".into(), [1000.0, 0.0, 0.0, 0.0]);
        a.cost.insert("glm-4.5-air".into(), [0.5, 0.0, 0.0, 0.0]);
        let mut b = Counts::default();
        b.cost.insert("only-cost".into(), [0.0, 0.01, 0.0, 0.0]);
        let m = model_usage(&BTreeMap::from([("production".to_owned(), a), ("canary".to_owned(), b)]));
        let names: Vec<&str> = m.iter().map(|u| u.model.as_str()).collect();
        assert_eq!(names, ["glm-4.5-air", "glm-4.7", "only-cost"]);
        assert!((m[1].cost_usd - 0.3).abs() < 1e-12);
        assert_eq!(m[1].tokens_output, 50.0);
        assert_eq!(m[2].variant, "canary");
        assert_eq!(m[2].tokens_input, 0.0);
    }

    #[test]
    fn a_window_covers_from_its_first_data_to_its_end() {
        let s = WindowSums { counts: Counts::default(), data_from_ms: 40_000 };
        assert_eq!(s.covered_seconds(100_000), 60.0);
        assert_eq!(s.covered_seconds(30_000), 0.0);
        let q = WindowQuery::ending(10_000_000, 3_600_000, (5_000, 60_000), 0);
        assert!(q.raw);
        assert!(!WindowQuery::ending(10_000_000, 3_600_001, (5_000, 60_000), 0).raw);
    }
}
