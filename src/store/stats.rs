//! The store as a [`StatsSource`]: window statistics from the same window sums `/api/compare`
//! reads ([`super::window::window_sums`]), and histories from the range query behind
//! `/api/metrics?step=`, so alerts judge exactly the numbers the pages show (the rows the writer
//! still holds included: alerts keep working while the database refuses writes).

use std::collections::BTreeMap;

use super::Store;
use super::query::RAW_RANGE_LIMIT_MS;
use super::range::{self, PointQuery};
use super::window::{WindowQuery, window_sums};
use crate::point::Point;
use crate::ports::BoxFuture;
use crate::ports::read::{StatsError, StatsSource, WindowStats, series_step};

/// Window statistics read from the store.
#[derive(Debug, Clone)]
pub struct StoreStats {
    store: Store,
    /// Width of a raw point and of a rollup, ms.
    widths: (i64, i64),
    /// How long raw rows are kept, ms.
    retention_raw_ms: i64,
}

impl StoreStats {
    /// Statistics over `store` with its point widths and raw retention.
    pub fn new(store: Store, widths: (i64, i64), retention_raw_ms: i64) -> Self {
        Self { store, widths, retention_raw_ms }
    }
}

impl StatsSource for StoreStats {
    fn window_stats(
        &self,
        end_ms: i64,
        window_ms: i64,
    ) -> BoxFuture<'_, Result<BTreeMap<String, WindowStats>, StatsError>> {
        let q = WindowQuery::ending(end_ms, window_ms, self.widths, end_ms - self.retention_raw_ms);
        let held = self.store.held_rows();
        Box::pin(async move {
            let sums = self
                .store
                .with_conn(move |c| window_sums(c, &q, &held))
                .await
                .map_err(|e| StatsError(e.to_string()))?;
            Ok(sums.into_iter().map(|(variant, s)| (variant, WindowStats::from_sums(&s, end_ms))).collect())
        })
    }

    fn series(&self, end_ms: i64, range_ms: i64, step_ms: i64) -> BoxFuture<'_, Result<Vec<Point>, StatsError>> {
        let start_ms = end_ms - range_ms;
        let (point_ms, rollup_ms) = self.widths;
        let raw = range_ms <= RAW_RANGE_LIMIT_MS && start_ms >= end_ms - self.retention_raw_ms;
        let resolution = if raw { point_ms } else { rollup_ms };
        let step = series_step(range_ms, step_ms, resolution);
        let q = PointQuery { start_ms, end_ms, step_ms: step, raw, point_ms, variant: None, target_url: None };
        let held = self.store.held_rows();
        Box::pin(async move {
            let points =
                move |c: &mut rusqlite::Connection| range::points_with(c, &q, rollup_ms, &held, &mut |_, _, _| {});
            self.store.with_conn(points).await.map_err(|e| StatsError(e.to_string()))
        })
    }
}
