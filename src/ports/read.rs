//! The read contract: everything the pages, the API and the alert engine read, behind one
//! trait ([`DataSource`]), asked in the domain's terms (a window, a step, a variant, a pod).
//! Which of its tables answers is the store's choice alone; the engine's is its own.
//!
//! Two implementations answer the same questions in the same core types:
//! - the store (SQLite mode, `store::source`), from the rows zai-dash scraped itself;
//! - the PromQL source (source mode, `promsource`), from PromQL against Prometheus, VictoriaMetrics,
//!   Thanos or Mimir, which already scrape the proxies.
//!
//! The questions: the points of a window (`/api/metrics`, the export, the charts), a window's
//! increases per variant (`/api/compare`, `/api/models`, the per-model table, the alerts' window
//! statistics), the marks a chart draws (version changes, firing alerts), the variants there is
//! data for, and the grid a window is answered on (both modes answer on the same [`Grid`]).
//! Target health and live points are not here: both sources publish them to the `HealthBoard`
//! and the hub.

use std::collections::{BTreeMap, BTreeSet};

use super::BoxFuture;
use super::alert_state::AlertPeriod;
use super::ingest::Event;
use super::json_array::JsonArray;
use crate::canary::SideTick;
use crate::point::{Counts, Point, Quota};

/// Windows up to one hour are answered from raw points (where raw rows still hold them).
pub(crate) const RAW_RANGE_LIMIT_MS: i64 = 3_600_000;
/// Windows up to a day are answered from 1 min rows unless a finer `step` is asked for.
pub(crate) const ROLLUP_RANGE_LIMIT_MS: i64 = 86_400_000;
/// A coarse row spans this many rollups: windows over a day read them, so a 7 d chart reads
/// about 1,000 rows per pod instead of 10,000.
pub(crate) const COARSE_FACTOR: i64 = 10;

/// The widths points come in: a raw point (5 s), a rollup (1 min) and a coarse row (10 min).
/// A window's step is a multiple of one of them, the same in SQLite and source mode, so both
/// answer on the same bucket ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grid {
    /// Width of a raw point, ms.
    pub point_ms: i64,
    /// Width of a rollup, ms.
    pub rollup_ms: i64,
}

/// How far back each finer width still has data: older windows are answered on a coarser one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reach {
    /// Raw points exist from here on (`now - RETENTION_5S`).
    pub raw_since_ms: i64,
    /// Rollups exist from here on (`now - RETENTION_1M`).
    pub rollup_since_ms: i64,
}

impl Reach {
    /// Every width reaches back forever (an engine keeps whatever it keeps).
    pub(crate) const ALL: Reach = Reach { raw_since_ms: i64::MIN, rollup_since_ms: i64::MIN };
}

impl Grid {
    /// Width of a coarse row, ms.
    pub(crate) fn coarse_ms(&self) -> i64 {
        self.rollup_ms * COARSE_FACTOR
    }

    /// The width `(start, end]` is answered on when steps of at least `min_step_ms` are asked
    /// for (0: none asked): raw points up to an hour (while raw points reach the window), 1 min
    /// rows up to a day (or for a finer step), else 10 min rows.
    pub(crate) fn width_for(&self, (start_ms, end_ms): (i64, i64), min_step_ms: i64, reach: Reach) -> i64 {
        let span = end_ms - start_ms;
        if span <= RAW_RANGE_LIMIT_MS && start_ms >= reach.raw_since_ms {
            self.point_ms
        } else if (span <= ROLLUP_RANGE_LIMIT_MS || (min_step_ms > 0 && min_step_ms < self.coarse_ms()))
            && start_ms >= reach.rollup_since_ms
        {
            self.rollup_ms
        } else {
            self.coarse_ms()
        }
    }
}

/// Points of a window: what `/api/metrics` asks for, already validated.
#[derive(Debug, Clone)]
pub struct PointQuery {
    /// Window start (exclusive), Unix ms.
    pub start_ms: i64,
    /// Window end (inclusive), Unix ms.
    pub end_ms: i64,
    /// Bucket width of the points: a multiple of the window's grid width
    /// ([`DataSource::grid_ms`]).
    pub step_ms: i64,
    /// Only this variant.
    pub variant: Option<String>,
    /// Only this target URL (in source mode: this `instance`).
    pub target_url: Option<String>,
}

impl PointQuery {
    /// End of the first bucket of the window (the window's start may fall inside it).
    pub(crate) fn first_bucket_end(&self) -> i64 {
        crate::clock::bucket_end(self.start_ms.saturating_add(1), self.step_ms)
    }

    /// Where reading the window's rows starts (exclusive): the start of its first bucket, less
    /// than one step before the window's start. With the step bounded by the window (`web::api`),
    /// a query reads at most one window more than it shows, whatever its parameters.
    pub(crate) fn read_after_ms(&self) -> i64 {
        self.first_bucket_end().saturating_sub(self.step_ms)
    }
}

/// One variant's quota block in one bucket: the `quota` of its point of
/// [`DataSource::points`] (the pod with the newest sample speaks; quota is never summed).
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaPoint {
    /// The bucket's end (the point's timestamp), Unix ms.
    pub end_ms: i64,
    /// The variant.
    pub variant: String,
    /// The block.
    pub quota: Quota,
}

/// The quota blocks of `points`, those that have one, in their order.
pub fn quota_of(points: Vec<Point>) -> Vec<QuotaPoint> {
    points
        .into_iter()
        .filter_map(|p| Some(QuotaPoint { end_ms: p.timestamp, quota: p.quota?, variant: p.variant }))
        .collect()
}

/// A window to sum: `/api/compare`, `/api/models`, the alerts' window statistics.
#[derive(Debug, Clone)]
pub struct WindowQuery {
    /// Window start (exclusive), Unix ms.
    pub start_ms: i64,
    /// Window end (inclusive), Unix ms.
    pub end_ms: i64,
    /// Only this target URL (in source mode: this `instance`).
    pub target_url: Option<String>,
}

impl WindowQuery {
    /// The window of `window_ms` ending at `end_ms`, over every target.
    pub(crate) fn ending(end_ms: i64, window_ms: i64) -> Self {
        Self { start_ms: end_ms - window_ms, end_ms, target_url: None }
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
    pub(crate) fn covered_seconds(&self, end_ms: i64) -> f64 {
        (end_ms - self.data_from_ms).max(0) as f64 / 1000.0
    }
}

/// What one variant did over the window, reduced to the numbers the comparison needs.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SideStats {
    /// Requests in the window (the sample size).
    pub requests: f64,
    /// 5xx responses in the window.
    pub errors_5xx: f64,
    /// 5xx share in percent, `None` without requests.
    pub error_rate_pct: Option<f64>,
    /// Requests per second over the window.
    pub req_rate: f64,
    /// Latency percentiles (ms) from the window's summed buckets.
    pub latency_p50_ms: Option<f64>,
    /// p95 (ms).
    pub latency_p95_ms: Option<f64>,
    /// p99 (ms).
    pub latency_p99_ms: Option<f64>,
    /// Time to first token p95 (ms), when exported.
    pub ttft_p95_ms: Option<f64>,
    /// Input tokens per second.
    pub token_rate_in: f64,
    /// Output tokens per second.
    pub token_rate_out: f64,
    /// Estimated cost per hour (USD).
    pub cost_per_hour_usd: f64,
    /// Seconds the side's data covers inside the window: what its rates divide by.
    pub covered_seconds: f64,
}

impl SideStats {
    /// Reduces a window's summed increases, which cover `window_s` seconds.
    pub fn from_counts(c: &Counts, window_s: f64) -> Self {
        let requests = c.total_requests();
        let errors_5xx = c.requests_in_class('5');
        let per_s = |v: f64| if window_s > 0.0 { v / window_s } else { 0.0 };
        let ms = |h: &crate::point::Histogram, q: f64| h.quantile(q).map(|s| s * 1000.0);
        let tokens = c.tokens_by_direction();
        let cost: f64 = c.cost_by_direction().iter().fold(0.0, |a, b| a + b);
        Self {
            requests,
            errors_5xx,
            error_rate_pct: (requests > 0.0).then(|| 100.0 * errors_5xx / requests),
            req_rate: per_s(requests),
            latency_p50_ms: ms(&c.duration, 0.5),
            latency_p95_ms: ms(&c.duration, 0.95),
            latency_p99_ms: ms(&c.duration, 0.99),
            ttft_p95_ms: ms(&c.ttft, 0.95),
            token_rate_in: per_s(tokens[0]),
            token_rate_out: per_s(tokens[1]),
            cost_per_hour_usd: per_s(cost) * 3600.0,
            covered_seconds: window_s,
        }
    }
}

/// One variant's numbers over one window, as `/api/compare` shows them: what the alert engine
/// judges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    /// Requests, error share, latency quantiles, rates: as `/api/compare` shows them.
    pub side: SideStats,
    /// Capacity rejections per second over the window.
    pub rejection_rate: f64,
}

impl WindowStats {
    /// A variant's statistics from its window sums: rates over the time the data covers.
    pub(crate) fn from_sums(sums: &WindowSums, end_ms: i64) -> Self {
        let covered = sums.covered_seconds(end_ms);
        let rejection_rate = if covered > 0.0 { sums.counts.rejections / covered } else { 0.0 };
        Self { side: SideStats::from_counts(&sums.counts, covered), rejection_rate }
    }
}

/// Two variants' increases tick by tick over a window: the strata a canary comparison folds.
#[derive(Debug, Clone)]
pub struct StrataQuery {
    /// Window start (exclusive), Unix ms.
    pub start_ms: i64,
    /// Window end (inclusive), Unix ms.
    pub end_ms: i64,
    /// Baseline, then candidate.
    pub variants: [String; 2],
}

/// Strata read after a point, with how far they have settled: see [`DataSource::settled_strata`].
#[derive(Debug, Clone, Default)]
pub struct SettledStrata {
    /// The query's strata ending after the point asked for, ascending.
    pub strata: Vec<Stratum>,
    /// Strata ending at or before this are final: every later read of the same query gives
    /// them unchanged, as long as [`DataSource::strata_generation`] has not moved.
    pub settled_until_ms: i64,
    /// Width of the settled strata (a raw tick's, or a rollup's): an interval read from raw
    /// rows while it is short is read from rollups once it is long, and evidence folded over
    /// ticks is not the evidence over minutes.
    pub stratum_ms: i64,
}

/// One stratum: what both variants did over the same bucket (a 5 s tick, or a 1 min row for
/// windows answered from rollups), baseline first. A variant without rows in the bucket did
/// nothing in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stratum {
    /// Bucket end, Unix ms.
    pub end_ms: i64,
    /// Baseline's and candidate's increases.
    pub sides: [SideTick; 2],
}

/// How a rollout's start was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartedBy {
    /// The first scrape reporting the candidate's current `zai_proxy_build_info` version.
    Version,
    /// No version change is known: the candidate's first scrape.
    FirstScrape,
}

/// When the candidate's current rollout began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutStart {
    /// Unix ms.
    pub since_ms: i64,
    /// How it was found.
    pub by: StartedBy,
    /// The version rolled out, when a version change marks the start.
    pub version: Option<String>,
}

/// Most points per variant a history ([`DataSource::series`]) holds: its step is widened beyond.
pub(crate) const MAX_SERIES_POINTS: i64 = 1_500;

/// The step of a history over `range_ms` at `resolution_ms`: at least the asked step and the
/// resolution, wide enough for [`MAX_SERIES_POINTS`], on the resolution's grid.
pub(crate) fn series_step(range_ms: i64, step_ms: i64, resolution_ms: i64) -> i64 {
    crate::clock::bucket_end(step_ms.max(resolution_ms).max(range_ms / MAX_SERIES_POINTS), resolution_ms)
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

/// Why a source could not answer. The web layer maps each kind to one status; the alert
/// engine logs it.
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

/// Everything the pages, the API and the alert engine read, whatever holds the numbers.
pub trait DataSource: Send + Sync + std::fmt::Debug {
    /// Whether the source's background reads (the engine's poll of targets and live points)
    /// succeeded last time: pages that show only what the background keeps (target health)
    /// say the engine is down rather than showing stale health as current.
    fn status(&self) -> Result<(), SourceError> {
        Ok(())
    }

    /// Variants there is data for (stored history, or series in the engine).
    fn variants(&self) -> BoxFuture<'_, Result<BTreeSet<String>, SourceError>>;

    /// The grid width `window` is answered on at `now_ms` when steps of at least
    /// `min_step_ms` are asked for (0: none): every step of a [`PointQuery`] over the window is
    /// a multiple of it.
    fn grid_ms(&self, window: (i64, i64), min_step_ms: i64, now_ms: i64) -> i64;

    /// Points of the window, ascending by time then variant.
    fn points(&self, q: PointQuery) -> BoxFuture<'_, Result<Vec<Point>, SourceError>>;

    /// The quota blocks of [`DataSource::points`]' points, those that have one, in their order:
    /// what the quota runway reads at every evaluation, and nothing else of a point. The store
    /// reads them without building points (no running totals seeded, no summary, rate or
    /// histogram per row; [`quota_of`] otherwise).
    fn quota_points(&self, q: PointQuery) -> BoxFuture<'_, Result<Vec<QuotaPoint>, SourceError>> {
        Box::pin(async move { Ok(quota_of(self.points(q).await?)) })
    }

    /// [`DataSource::points`] as the JSON array `/api/metrics` answers, at `now_ms` (the store
    /// serves the buckets it sealed from a cache), each point's JSON a piece of its own: the
    /// response streams them rather than joining them into one allocation ([`JsonArray`]).
    fn points_json(&self, q: PointQuery, now_ms: i64) -> BoxFuture<'_, Result<JsonArray, SourceError>> {
        let _ = now_ms;
        Box::pin(async move {
            let points = self.points(q).await?;
            JsonArray::serialize(&points).map_err(|e| SourceError::Storage(e.to_string()))
        })
    }

    /// Increases of every variant over the window, with where its data starts.
    fn window(&self, q: WindowQuery) -> BoxFuture<'_, Result<BTreeMap<String, WindowSums>, SourceError>>;

    /// Everything the overview's charts draw for the window.
    fn chart(&self, q: PointQuery) -> BoxFuture<'_, Result<ChartData, SourceError>>;

    /// Each variant's statistics over `(end_ms - window_ms, end_ms]`: the window sums
    /// `/api/compare` reads, so an alert and the page agree on every value.
    fn window_stats(
        &self,
        end_ms: i64,
        window_ms: i64,
    ) -> BoxFuture<'_, Result<BTreeMap<String, WindowStats>, SourceError>> {
        Box::pin(async move {
            let sums = self.window(WindowQuery::ending(end_ms, window_ms)).await?;
            Ok(sums.into_iter().map(|(variant, s)| (variant, WindowStats::from_sums(&s, end_ms))).collect())
        })
    }

    /// Both variants' increases per stratum over the window, ascending; `None` when the source
    /// cannot give them per tick (the caller then says so rather than judging).
    fn strata(&self, q: StrataQuery) -> BoxFuture<'_, Result<Option<Vec<Stratum>>, SourceError>> {
        let _ = q;
        Box::pin(async { Ok(None) })
    }

    /// A counter that moves whenever stored rows change under strata already settled (a late
    /// row merged into a rolled bucket); `None` when the source's strata never settle.
    fn strata_generation(&self) -> Option<u64> {
        None
    }

    /// End of the newest bucket whose rows can no longer change at `now_ms` unless
    /// [`DataSource::strata_generation`] moves (a row merged late into it moves it), for a
    /// reader that keeps sums of recent buckets between calls: it reads the generation first,
    /// then this, then the rows. `None` when the source does not say.
    fn sealed_through(&self, now_ms: i64) -> Option<i64> {
        let _ = now_ms;
        None
    }

    /// [`DataSource::strata`] of `q`, only those ending after `after_ms`, read as the whole of
    /// `q` is read (each bucket from the same table), with where they settle; `None` when the
    /// source cannot say (its strata are then re-read whole every time).
    fn settled_strata(
        &self,
        q: StrataQuery,
        after_ms: i64,
    ) -> BoxFuture<'_, Result<Option<SettledStrata>, SourceError>> {
        let _ = (q, after_ms);
        Box::pin(async { Ok(None) })
    }

    /// Where canary judgements are kept between calls, for a source whose strata settle.
    fn judge_cache(&self) -> Option<&crate::ports::judge_cache::JudgeCache> {
        None
    }

    /// When `variant`'s current version first appeared (else its first scrape), as of `end_ms`;
    /// `None` when nothing is known of it.
    fn rollout_start(&self, variant: &str, end_ms: i64) -> BoxFuture<'_, Result<Option<RolloutStart>, SourceError>> {
        let _ = (variant, end_ms);
        Box::pin(async { Ok(None) })
    }

    /// Points of every variant over `(end_ms - range_ms, end_ms]`, one per `step_ms` (rounded up
    /// to the source's resolution, see [`series_step`]): a history to compare the present with.
    fn series(&self, end_ms: i64, range_ms: i64, step_ms: i64) -> BoxFuture<'_, Result<Vec<Point>, SourceError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_covers_from_its_first_data_to_its_end() {
        let s = WindowSums { counts: Counts::default(), data_from_ms: 40_000 };
        assert_eq!(s.covered_seconds(100_000), 60.0);
        assert_eq!(s.covered_seconds(30_000), 0.0);
        let q = WindowQuery::ending(10_000_000, 3_600_000);
        assert_eq!((q.start_ms, q.end_ms), (6_400_000, 10_000_000));
    }

    const GRID: Grid = Grid { point_ms: 5_000, rollup_ms: 60_000 };

    #[test]
    fn short_windows_are_answered_on_raw_points_long_ones_on_rollups() {
        let width = |span: i64, min_step: i64| GRID.width_for((0, span), min_step, Reach::ALL);
        assert_eq!(width(3_600_000, 0), 5_000);
        assert_eq!(width(3_600_001, 0), 60_000);
        assert_eq!(width(86_400_000, 0), 60_000, "a day reads 1 min rows");
        assert_eq!(width(7 * 86_400_000, 0), 600_000);
        assert_eq!(width(7 * 86_400_000, 300_000), 60_000, "a finer step over a week reads 1 min rows");
        assert_eq!(width(7 * 86_400_000, 600_000), 600_000);
    }

    #[test]
    fn a_window_older_than_a_width_reaches_is_answered_on_a_coarser_one() {
        let reach = Reach { raw_since_ms: 1_000_000, rollup_since_ms: 500_000 };
        assert_eq!(GRID.width_for((999_999, 1_600_000), 0, reach), 60_000, "raw rows of that window are gone");
        assert_eq!(GRID.width_for((1_000_000, 1_600_000), 0, reach), 5_000);
        assert_eq!(GRID.width_for((400_000, 1_000_000), 0, reach), 600_000);
    }
}
