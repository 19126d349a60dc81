//! The store as the read contract's [`DataSource`] (SQLite mode): the pages, the API and the
//! alert engine read the stored rows plus the rows the writer still holds ([`super::held`]),
//! so alerts keep working while the database refuses writes. Which table answers is decided
//! here, from the window and the retention ([`StoreSettings`]), and nowhere else.

use std::collections::{BTreeMap, BTreeSet};

use super::range::{self, RangeRead};
use super::settings::StoreSettings;
use super::{Store, StoreError, alerts, query, window};
use crate::clock::SharedClock;
use crate::point::Point;
use crate::ports::BoxFuture;
use crate::ports::json_array::JsonArray;
use crate::ports::read::{
    ChartData, DataSource, Grid, PointQuery, QuotaPoint, RAW_RANGE_LIMIT_MS, RolloutStart, SettledStrata, SourceError,
    StrataQuery, Stratum, WindowQuery, WindowSums, quota_of, series_step,
};

impl From<StoreError> for SourceError {
    fn from(e: StoreError) -> Self {
        SourceError::Storage(e.to_string())
    }
}

/// The store with the widths its rows have and how long it keeps them.
#[derive(Debug, Clone)]
pub struct StoreSource {
    store: Store,
    settings: StoreSettings,
    clock: SharedClock,
}

impl StoreSource {
    /// The store, whose rows and retention `settings` describe; `clock` says which rows are
    /// still kept.
    pub fn new(store: Store, settings: StoreSettings, clock: SharedClock) -> Self {
        Self { store, settings, clock }
    }

    /// End of the newest raw bucket that can no longer change at `now_ms`: all its scrapes are
    /// written two point widths and a second after it closed, and not before the writer has
    /// committed it (a slow disk delays sealing, never data).
    fn sealed_until(&self, now_ms: i64) -> i64 {
        (now_ms - 2 * self.settings.grid().point_ms - 1_000).min(self.store.committed_until())
    }

    fn range_read(&self, q: PointQuery) -> RangeRead {
        self.settings.range_read(q, self.clock.now_ms())
    }

    async fn read_points(&self, r: RangeRead) -> Result<Vec<Point>, StoreError> {
        let held = self.store.held_rows();
        self.store.with_conn(move |c| range::points_with(c, &r, &held, &mut |_, _, _| {})).await
    }

    /// The quota blocks of the points of `r`: from the raw rows' blocks alone, else (a read of
    /// the rolled tables) from the points, built without seeding running totals (the blocks
    /// do not depend on them).
    async fn read_quota_points(&self, r: RangeRead) -> Result<Vec<QuotaPoint>, StoreError> {
        let held = self.store.held_rows();
        self.store
            .with_conn(move |c| match range::quota_points(c, &r, &held)? {
                Some(points) => Ok(points),
                None => Ok(quota_of(range::points_seeded(c, &r, &held, &mut |_, _, _| {}, false)?)),
            })
            .await
    }
}

impl DataSource for StoreSource {
    fn variants(&self) -> BoxFuture<'_, Result<BTreeSet<String>, SourceError>> {
        Box::pin(async move {
            let names = self.store.with_conn(|c| query::variant_names(c)).await?;
            Ok(names.into_values().collect())
        })
    }

    fn grid_ms(&self, window: (i64, i64), min_step_ms: i64, now_ms: i64) -> i64 {
        self.settings.grid().width_for(window, min_step_ms, self.settings.reach(now_ms))
    }

    fn points(&self, q: PointQuery) -> BoxFuture<'_, Result<Vec<Point>, SourceError>> {
        let r = self.range_read(q);
        Box::pin(async move { Ok(self.read_points(r).await?) })
    }

    fn quota_points(&self, q: PointQuery) -> BoxFuture<'_, Result<Vec<QuotaPoint>, SourceError>> {
        let r = self.range_read(q);
        Box::pin(async move { Ok(self.read_quota_points(r).await?) })
    }

    fn points_json(&self, q: PointQuery, now_ms: i64) -> BoxFuture<'_, Result<JsonArray, SourceError>> {
        let r = self.settings.range_read(q, now_ms);
        let sealed = self.sealed_until(now_ms);
        Box::pin(async move { Ok(self.store.points_json(r, sealed).await?) })
    }

    fn window(&self, q: WindowQuery) -> BoxFuture<'_, Result<BTreeMap<String, WindowSums>, SourceError>> {
        let now_ms = self.clock.now_ms();
        let raw = self.settings.reads_raw((q.start_ms, q.end_ms), now_ms);
        let grid = self.settings.grid();
        let coarse_until = coarse_until(self.settings.reach(now_ms).rollup_since_ms, grid.coarse_ms());
        let held = self.store.held_rows();
        Box::pin(async move {
            let read = (raw, (grid.point_ms, grid.rollup_ms), coarse_until);
            Ok(self.store.with_conn(move |c| window::window_sums(c, &q, read, &held)).await?)
        })
    }

    fn strata(&self, q: StrataQuery) -> BoxFuture<'_, Result<Option<Vec<Stratum>>, SourceError>> {
        let raw = self.settings.reads_raw((q.start_ms, q.end_ms), self.clock.now_ms());
        let Grid { point_ms, rollup_ms } = self.settings.grid();
        let held = self.store.held_rows();
        Box::pin(async move {
            let read = (raw, (point_ms, rollup_ms));
            Ok(Some(self.store.with_conn(move |c| window::strata(c, &q, read, &held)).await?))
        })
    }

    fn strata_generation(&self) -> Option<u64> {
        Some(self.store.cache().generation())
    }

    fn sealed_through(&self, now_ms: i64) -> Option<i64> {
        // As `settled_strata` settles raw ticks: the held rows first, then the bound; a late
        // batch held now keeps every bucket from its oldest row open until it is written
        // (which moves the generation).
        let late = self.store.held_rows().earliest_late_ms().map_or(i64::MAX, |ts| ts - 1);
        Some(self.sealed_until(now_ms).min(late))
    }

    fn settled_strata(
        &self,
        q: StrataQuery,
        after_ms: i64,
    ) -> BoxFuture<'_, Result<Option<SettledStrata>, SourceError>> {
        let now_ms = self.clock.now_ms();
        let raw = self.settings.reads_raw((q.start_ms, q.end_ms), now_ms);
        let Grid { point_ms, rollup_ms } = self.settings.grid();
        // The held rows first, then the settled bound: a late batch the writer holds now is in
        // the snapshot, and the strata settle only before its oldest row; one held after this
        // moves the generation, which makes the judge drop what it kept from this read.
        let held = self.store.held_rows();
        let raw_settled_ms = self.sealed_until(now_ms);
        Box::pin(async move {
            let read = (raw, (point_ms, rollup_ms), raw_settled_ms);
            Ok(Some(self.store.with_conn(move |c| window::strata_after(c, &q, after_ms, read, &held)).await?))
        })
    }

    fn judge_cache(&self) -> Option<&crate::ports::judge_cache::JudgeCache> {
        Some(self.store.judge_cache())
    }

    fn rollout_start(&self, variant: &str, end_ms: i64) -> BoxFuture<'_, Result<Option<RolloutStart>, SourceError>> {
        let variant = variant.to_owned();
        // Never before what the 1 min rows still hold: older strata are gone.
        let oldest = self.settings.reach(end_ms).rollup_since_ms;
        Box::pin(async move {
            let start = self.store.with_conn(move |c| window::rollout_start(c, &variant, end_ms)).await?;
            Ok(start.map(|s| RolloutStart { since_ms: s.since_ms.max(oldest), ..s }))
        })
    }

    fn chart(&self, q: PointQuery) -> BoxFuture<'_, Result<ChartData, SourceError>> {
        let r = self.range_read(q);
        let held = self.store.held_rows();
        Box::pin(async move {
            let data = self
                .store
                .with_conn(move |c| {
                    let events = query::events(c, r.q.start_ms, r.q.end_ms)?;
                    let periods = alerts::periods(c, r.q.start_ms, r.q.end_ms)?;
                    let (points, counts) = window::points_and_counts(c, &r, &held)?;
                    Ok(ChartData { points, counts, events, periods })
                })
                .await?;
            Ok(data)
        })
    }

    /// Raw points when the history is at most an hour that raw rows still hold at its end, else
    /// rollups (never coarse rows: a history is a few hundred points of a day or two).
    fn series(&self, end_ms: i64, range_ms: i64, step_ms: i64) -> BoxFuture<'_, Result<Vec<Point>, SourceError>> {
        let start_ms = end_ms - range_ms;
        let Grid { point_ms, rollup_ms } = self.settings.grid();
        let raw = range_ms <= RAW_RANGE_LIMIT_MS && start_ms >= self.settings.reach(end_ms).raw_since_ms;
        let step_ms = series_step(range_ms, step_ms, if raw { point_ms } else { rollup_ms });
        let q = PointQuery { start_ms, end_ms, step_ms, variant: None, target_url: None };
        let r = RangeRead { q, raw, point_ms, rollup_ms };
        Box::pin(async move { Ok(self.read_points(r).await?) })
    }
}

/// Where window sums stop reading 10 min rows: the first 10 min boundary at or after the oldest
/// instant the 1 min rows surely still hold (`rollup_since_ms`, now less `RETENTION_1M`), so
/// what retention deleted from the 1 min table is read from the coarse one, and everything newer
/// from the finer rows (a 5-minute burn window must not be answered in 10-minute rows).
fn coarse_until(rollup_since_ms: i64, coarse_ms: i64) -> i64 {
    let c = coarse_ms.max(1);
    let floor = rollup_since_ms.div_euclid(c) * c;
    if floor == rollup_since_ms { floor } else { floor.saturating_add(c) }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::point::TargetRow;
    use crate::ports::ingest::WriteBatch;

    /// Buckets are sealed two point widths and a second after they closed, once committed; a
    /// late batch the writer still holds keeps every bucket from its oldest row open (the
    /// alert engine would otherwise keep a bucket's sums without that row).
    #[test]
    fn a_late_batch_held_keeps_its_buckets_unsealed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sealed.db")).unwrap();
        let t0 = 1_800_000_000_000_i64;
        let clock = Arc::new(ManualClock::new(t0));
        let mut settings = crate::config::Settings::for_tests(vec![], "unused.db".into()).store();
        settings.point_width = Duration::from_secs(5);
        let source = StoreSource::new(store.clone(), settings, clock);
        let now = t0 + 20_000;
        assert_eq!(source.sealed_through(now), Some(i64::MIN), "nothing committed, nothing sealed");
        store.note_committed(t0);
        assert_eq!(source.sealed_through(now), Some(t0), "not past the last committed bucket");
        store.note_committed(now);
        assert_eq!(source.sealed_through(now), Some(now - 11_000));
        let row = TargetRow { target_id: 1, ts_ms: t0 - 5_000, variant: "production".into(), ..Default::default() };
        let batch = WriteBatch {
            bucket_end_ms: now,
            rows: vec![row],
            states: vec![],
            points: vec![],
            events: vec![],
            late: true,
        };
        store.held().push(batch);
        assert_eq!(source.sealed_through(now), Some(t0 - 5_001), "open from the held late row's bucket");
    }
}
