//! The store as the web layer's [`DataSource`] (SQLite mode): each question delegates to the
//! query that answered it before the trait existed, so the pages and the API read exactly what
//! they read before, plus the rows the writer still holds ([`super::held`]).

use std::collections::{BTreeMap, BTreeSet};

use super::{Store, StoreError, alerts, query, range, window};
use crate::point::Point;
use crate::ports::BoxFuture;
use crate::ports::read::{ChartData, DataSource, PointQuery, SourceError, WindowQuery, WindowSums};

impl From<StoreError> for SourceError {
    fn from(e: StoreError) -> Self {
        SourceError::Storage(e.to_string())
    }
}

/// The store with the widths its rows have.
#[derive(Debug, Clone)]
pub struct StoreSource {
    store: Store,
    /// Width of a raw point, ms.
    point_ms: i64,
    /// Width of a rollup, ms.
    rollup_ms: i64,
}

impl StoreSource {
    /// The store, whose raw points are `point_ms` wide and rollups `rollup_ms`.
    pub fn new(store: Store, point_ms: i64, rollup_ms: i64) -> Self {
        Self { store, point_ms, rollup_ms }
    }

    /// End of the newest raw bucket that can no longer change at `now_ms`: all its scrapes are
    /// written two point widths and a second after it closed, and not before the writer has
    /// committed it (a slow disk delays sealing, never data).
    fn sealed_until(&self, now_ms: i64) -> i64 {
        (now_ms - 2 * self.point_ms - 1_000).min(self.store.committed_until())
    }
}

impl DataSource for StoreSource {
    fn variants(&self) -> BoxFuture<'_, Result<BTreeSet<String>, SourceError>> {
        Box::pin(async move {
            let names = self.store.with_conn(|c| query::variant_names(c)).await?;
            Ok(names.into_values().collect())
        })
    }

    fn points(&self, q: PointQuery) -> BoxFuture<'_, Result<Vec<Point>, SourceError>> {
        let rollup_ms = self.rollup_ms;
        let held = self.store.held_rows();
        Box::pin(async move {
            let points =
                move |c: &mut rusqlite::Connection| range::points_with(c, &q, rollup_ms, &held, &mut |_, _, _| {});
            Ok(self.store.with_conn(points).await?)
        })
    }

    fn points_json(&self, q: PointQuery, now_ms: i64) -> BoxFuture<'_, Result<String, SourceError>> {
        let sealed = self.sealed_until(now_ms);
        Box::pin(async move { Ok(self.store.points_json(q, self.rollup_ms, sealed).await?) })
    }

    fn window(&self, q: WindowQuery) -> BoxFuture<'_, Result<BTreeMap<String, WindowSums>, SourceError>> {
        let held = self.store.held_rows();
        Box::pin(async move { Ok(self.store.with_conn(move |c| window::window_sums(c, &q, &held)).await?) })
    }

    fn chart(&self, q: PointQuery) -> BoxFuture<'_, Result<ChartData, SourceError>> {
        let rollup_ms = self.rollup_ms;
        let held = self.store.held_rows();
        Box::pin(async move {
            let data = self
                .store
                .with_conn(move |c| {
                    let events = query::events(c, q.start_ms, q.end_ms)?;
                    let periods = alerts::periods(c, q.start_ms, q.end_ms)?;
                    let (points, counts) = window::points_and_counts(c, &q, rollup_ms, &held)?;
                    Ok(ChartData { points, counts, events, periods })
                })
                .await?;
            Ok(data)
        })
    }
}
