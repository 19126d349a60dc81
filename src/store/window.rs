//! Sums of increases over a whole window, per variant: the per-model table (tokens and cost by
//! model) and the compare page's sample sizes, error counts and latency histograms.
//!
//! Unlike [`super::range::points`], nothing is re-bucketed: the window's rows are added up once,
//! so a quantile over the window comes from the window's summed bucket increases. The query and
//! result types are the read contract's ([`crate::ports::read`]), shared with the PromQL source mode.

use std::collections::{BTreeMap, HashSet};

use rusqlite::Connection;

use super::StoreError;
use super::held::HeldRows;
use super::query::{Table, each_raw_row, select_targets, target_rows, targets, variant_names, watermark};
use super::range::{self, RangeRead};
use crate::point::{Counts, Point, TargetRow};
use crate::ports::read::{WindowQuery, WindowSums};

/// Increases of every variant over the window, summed over its pods, with where its data starts;
/// the rows the writer still `held` count too (see [`super::held`]). Read from raw rows only
/// (`raw`), else from rollups up to their watermark and raw rows after it; `widths`: a raw
/// point's and a rollup's (a row covers its width before its timestamp).
pub(crate) fn window_sums(
    conn: &Connection,
    q: &WindowQuery,
    (raw, widths): (bool, (i64, i64)),
    held: &HeldRows,
) -> Result<BTreeMap<String, WindowSums>, StoreError> {
    let names = variant_names(conn)?;
    let wm = if raw { i64::MIN } else { watermark(conn)?.unwrap_or(i64::MIN) };
    let (point_ms, rollup_ms) = widths;
    let targets = select_targets(targets(conn)?, q.target_url.as_deref());
    let only = q.target_url.as_ref().and(targets.first()).map(|t| t.id);
    let mut out: BTreeMap<String, WindowSums> = BTreeMap::new();
    let mut add = |r: &TargetRow, width: i64| {
        let from = (r.ts_ms - width).max(q.start_ms);
        let sums =
            out.entry(r.variant.clone()).or_insert_with(|| WindowSums { data_from_ms: from, ..Default::default() });
        sums.counts.add(&r.counts);
        sums.data_from_ms = sums.data_from_ms.min(from);
    };
    if !raw && wm > q.start_ms {
        for t in &targets {
            for r in target_rows(conn, Table::Rollup, t.id, q.start_ms, q.end_ms.min(wm), &names)? {
                add(&r, rollup_ms);
            }
        }
    }
    if targets.is_empty() {
        return Ok(out);
    }
    let after_rollups = (q.start_ms.max(wm), q.end_ms);
    let mut stored = HashSet::new();
    each_raw_row(conn, after_rollups, only, &names, widths, &mut |r| {
        stored.insert((r.ts_ms, r.target_id));
        add(&r, point_ms);
    })?;
    for r in held.rows_in(after_rollups, only, &stored) {
        add(&r, point_ms);
    }
    Ok(out)
}

/// Chart points and the window's sums per variant from one read of the rows (the overview
/// needs both; decoding the rows dominates the cost of long ranges). Only rows inside
/// `(start_ms, end_ms]` are summed, although the points' first bucket may start earlier.
pub(crate) fn points_and_counts(
    conn: &Connection,
    r: &RangeRead,
    held: &HeldRows,
) -> Result<(Vec<Point>, BTreeMap<String, Counts>), StoreError> {
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let (start, end) = (r.q.start_ms, r.q.end_ms);
    let points = range::points_with(conn, r, held, &mut |variant, ts, row| {
        if ts > start && ts <= end {
            match counts.get_mut(variant) {
                Some(c) => row.add_to(c),
                None => row.add_to(counts.entry(variant.to_owned()).or_default()),
            }
        }
    })?;
    Ok((points, counts))
}
