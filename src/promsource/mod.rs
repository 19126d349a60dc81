//! Source mode (`serve --source prometheus`): every number from PromQL against an engine that
//! already scrapes the proxies (Prometheus, VictoriaMetrics, Thanos, Mimir all answer the
//! Prometheus HTTP API), so zai-dash keeps no state of its own and any number of replicas can
//! run behind one Service.
//!
//! [`PromSource`] answers the read contract ([`DataSource`]: the web layer's and the alert
//! engine's reads) with the same queries (`promql::parts`, the catalog's definitions split by
//! the labels zai-dash keeps), on the store's bucket grid, so the numbers agree with SQLite mode
//! on the same targets. [`live::run`] polls the engine every point interval: target health into
//! the `HealthBoard`, the newest complete bucket to the live stream (the same `PointSink` the
//! writer publishes to in SQLite mode), version changes as events.
//!
//! - [`settings`]: URL, credentials, headers, timeout; [`client`]: the HTTP API client;
//!   [`session`]: one request's queries (slots, byte budget, answer cache, variant gate).
//! - [`points`]: points of a window; [`window`]: a window's increases; [`targets`]: health and
//!   version changes; [`memory_alerts`]: alert records in memory; [`live`]: the poller.

pub(crate) mod client;
pub(crate) mod live;
pub(crate) mod memory_alerts;
pub(crate) mod points;
pub(crate) mod session;
pub(crate) mod settings;
pub(crate) mod targets;
pub(crate) mod window;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::clock::SharedClock;
use crate::point::Point;
use crate::ports::BoxFuture;
use crate::ports::read::{
    ChartData, DataSource, Grid, PointQuery, Reach, RolloutStart, SourceError, StrataQuery, Stratum, WindowQuery,
    WindowSums, series_step,
};
use crate::promql::{Selector, parts};
pub(crate) use client::{Client, EngineError};
pub use memory_alerts::MemoryAlerts;
pub(crate) use session::{EngineStats, Session};
pub use settings::{EngineArgs, EngineSettings};

/// The widths of zai-dash's grid and how often the engine scrapes the proxies.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Width of a raw point, ms.
    pub point_ms: i64,
    /// Width of a rollup, ms (steps of longer ranges are multiples of it, as in SQLite mode).
    pub rollup_ms: i64,
    /// The engine's scrape interval of the proxies (`SCRAPE_INTERVAL`), ms.
    pub scrape_ms: i64,
    /// How long the engine may take to answer with a scrape's samples (`PROMETHEUS_DELAY`), ms.
    pub delay_ms: i64,
}

impl Timing {
    /// How long after a bucket's end every scrape that started in it is visible in the engine:
    /// a scrape lasts less than its interval, and the engine may take `delay_ms` to make it
    /// searchable.
    pub(crate) fn settle_ms(&self) -> i64 {
        self.scrape_ms + self.delay_ms
    }
}

/// How long after a scrape the samples of series an engine already knows can be missing from
/// its answers. VictoriaMetrics makes them searchable up to a second later (its in-memory
/// buffer is flushed every second); Prometheus at once. A target is counted fresh with this
/// margin. Buckets wait for `PROMETHEUS_DELAY` instead (this by default), which also covers
/// series the engine has not seen before.
pub(crate) const ENGINE_DELAY_MS: i64 = 1_500;

/// Variants are those with a pod that reported within this.
const VARIANTS_LOOKBACK_MS: i64 = 3_600_000;

/// The series of one variant (or all) and one pod (its `instance`, or all).
pub(crate) fn selector(variant: Option<&str>, instance: Option<&str>) -> Selector {
    let mut sel = match variant {
        Some(v) => Selector::variant(v),
        None => Selector::all(),
    };
    if let Some(i) = instance {
        sel.matchers.push(("instance".to_owned(), i.to_owned()));
    }
    sel
}

/// The engine as a source of points, window sums, marks and window statistics.
#[derive(Debug)]
pub struct PromSource {
    client: Client,
    /// What every request's session shares: query slots, the answer cache, counters.
    shared: Arc<session::Shared>,
    timing: Timing,
    clock: SharedClock,
    alerts: Arc<MemoryAlerts>,
    /// Why the last background read failed: `(unreachable, sentence)`.
    poll_error: Mutex<Option<(bool, String)>>,
    /// Variants and when they were read.
    variants: Mutex<Option<(i64, BTreeSet<String>)>>,
}

impl PromSource {
    /// A source reading `settings`' engine; alert periods come from `alerts`.
    pub fn new(
        settings: &EngineSettings,
        timing: Timing,
        clock: SharedClock,
        alerts: Arc<MemoryAlerts>,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: Client::new(settings)?,
            shared: Arc::default(),
            timing,
            clock,
            alerts,
            poll_error: Mutex::new(None),
            variants: Mutex::new(None),
        })
    }

    /// The engine's client (the live poller shares it).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Counters of what was left out of the engine's answers (self-metrics).
    pub(crate) fn stats(&self) -> Arc<EngineStats> {
        self.shared.stats.clone()
    }

    /// The grid and scrape interval.
    pub(crate) fn timing(&self) -> Timing {
        self.timing
    }

    /// The queries of one request, in the current point interval (answers of the same
    /// interval are shared between requests).
    pub(crate) fn session(&self) -> Session<'_> {
        Session::new(&self.client, &self.shared, self.clock.now_ms().div_euclid(self.timing.point_ms.max(1)))
    }

    /// Records how the last background read went; returns whether that changed (the poller
    /// logs transitions, not repetitions).
    pub(crate) fn record_poll(&self, result: Result<(), &EngineError>) -> bool {
        let next = result.err().map(|e| (e.is_unavailable(), e.to_string()));
        let Ok(mut current) = self.poll_error.lock() else { return false };
        let changed = current.is_some() != next.is_some();
        *current = next;
        changed
    }

    async fn read_variants(&self) -> Result<BTreeSet<String>, SourceError> {
        let now = self.clock.now_ms();
        if let Ok(cached) = self.variants.lock()
            && let Some((at, names)) = cached.as_ref()
            && now - at < self.timing.point_ms
        {
            return Ok(names.clone());
        }
        let series = self.session().instant(&parts::variants(VARIANTS_LOOKBACK_MS), now).await?;
        let names: BTreeSet<String> =
            series.iter().map(|s| s.label("variant").to_owned()).filter(|v| !v.is_empty()).collect();
        if let Ok(mut cached) = self.variants.lock() {
            *cached = Some((now, names.clone()));
        }
        Ok(names)
    }

    async fn read_chart(&self, q: PointQuery) -> Result<ChartData, SourceError> {
        let now = self.clock.now_ms();
        let wq = WindowQuery { start_ms: q.start_ms, end_ms: q.end_ms, target_url: q.target_url.clone() };
        let res = q.step_ms.max(self.timing.point_ms);
        let sel = selector(q.variant.as_deref(), q.target_url.as_deref());
        let versions = parts::first_seen(
            crate::promql::family::BUILD_INFO,
            &sel,
            "job, instance, variant, version",
            (q.end_ms - q.start_ms).max(1),
            res,
        );
        let session = self.session();
        session.check_window(q.end_ms - q.start_ms)?;
        let (points, sums, firsts) = futures_util::try_join!(
            points::fetch(&session, &self.timing, &q, now),
            window::fetch(&session, &self.timing, &wq),
            session.instant(&versions, q.end_ms),
        )?;
        Ok(ChartData {
            points,
            counts: sums.into_iter().map(|(v, s)| (v, s.counts)).collect(),
            events: targets::events_from_first_seen(&firsts, q.start_ms, res),
            periods: self.alerts.periods(q.start_ms, q.end_ms),
        })
    }
}

impl DataSource for PromSource {
    fn status(&self) -> Result<(), SourceError> {
        match self.poll_error.lock().ok().and_then(|e| e.clone()) {
            None => Ok(()),
            Some((true, m)) => Err(SourceError::Unavailable(m)),
            Some((false, m)) => Err(SourceError::BadGateway(m)),
        }
    }

    fn variants(&self) -> BoxFuture<'_, Result<BTreeSet<String>, SourceError>> {
        Box::pin(self.read_variants())
    }

    fn points(&self, q: PointQuery) -> BoxFuture<'_, Result<Vec<Point>, SourceError>> {
        Box::pin(async move { Ok(points::fetch(&self.session(), &self.timing, &q, self.clock.now_ms()).await?) })
    }

    fn window(&self, q: WindowQuery) -> BoxFuture<'_, Result<BTreeMap<String, WindowSums>, SourceError>> {
        Box::pin(async move { Ok(window::fetch(&self.session(), &self.timing, &q).await?) })
    }

    fn chart(&self, q: PointQuery) -> BoxFuture<'_, Result<ChartData, SourceError>> {
        Box::pin(self.read_chart(q))
    }

    fn strata(&self, q: StrataQuery) -> BoxFuture<'_, Result<Option<Vec<Stratum>>, SourceError>> {
        let now = self.clock.now_ms();
        let width = window::strata_width(&self.timing, self.grid_ms((q.start_ms, q.end_ms), 0, now));
        Box::pin(async move { Ok(Some(window::strata(&self.session(), &self.timing, &q, width, now).await?)) })
    }

    fn rollout_start(&self, variant: &str, end_ms: i64) -> BoxFuture<'_, Result<Option<RolloutStart>, SourceError>> {
        let variant = variant.to_owned();
        Box::pin(async move { Ok(window::rollout_start(&self.session(), &self.timing, &variant, end_ms).await?) })
    }

    /// The store's grid, reaching back forever: the engine keeps what it keeps.
    fn grid_ms(&self, window: (i64, i64), min_step_ms: i64, _now_ms: i64) -> i64 {
        let grid = Grid { point_ms: self.timing.point_ms, rollup_ms: self.timing.rollup_ms };
        grid.width_for(window, min_step_ms, Reach::ALL)
    }

    /// On the raw point grid whatever the range: the engine answers any step.
    fn series(&self, end_ms: i64, range_ms: i64, step_ms: i64) -> BoxFuture<'_, Result<Vec<Point>, SourceError>> {
        let step_ms = series_step(range_ms, step_ms, self.timing.point_ms);
        let q = PointQuery { start_ms: end_ms - range_ms, end_ms, step_ms, variant: None, target_url: None };
        Box::pin(async move { Ok(points::fetch(&self.session(), &self.timing, &q, self.clock.now_ms()).await?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_answered_only_once_the_engine_delay_has_passed() {
        let t = Timing { point_ms: 2_000, rollup_ms: 20_000, scrape_ms: 500, delay_ms: 12_000 };
        assert_eq!(t.settle_ms(), 12_500);
        let q = PointQuery { start_ms: 0, end_ms: 100_000, step_ms: 2_000, variant: None, target_url: None };
        // At 100 s, a bucket that ended 12.5 s ago is complete; the one after it is not.
        assert_eq!(points::complete_buckets(&q, 100_000, t.settle_ms()), Some((2_000, 86_000)));
        let prometheus = Timing { delay_ms: 1_500, ..t };
        assert_eq!(points::complete_buckets(&q, 100_000, prometheus.settle_ms()), Some((2_000, 98_000)));
    }
}
