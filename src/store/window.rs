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
use super::query::{
    Table, each_raw_view, events, listed_targets, select_targets, target_ids, target_rows, variant_names, watermark,
    watermark_of,
};
use super::range::{self, RangeRead, RowRef};
use crate::canary::SideTick;
use crate::point::{Counts, Point};
use crate::ports::ingest::EventKind;
use crate::ports::read::{
    COARSE_FACTOR, RolloutStart, SettledStrata, StartedBy, StrataQuery, Stratum, WindowQuery, WindowSums,
};

/// Increases of every variant over the window, summed over its pods, with where its data starts;
/// the rows the writer still `held` count too (see [`super::held`]). Read from raw rows only
/// (`raw`), else from 10 min rows up to `coarse_until` (where the 1 min rows may already be
/// gone: a month's spend, a 28-day objective), then 1 min rows up to their watermark and raw
/// rows after it; `widths`: a raw point's and a 1 min rollup's (a row covers its width before
/// its timestamp).
pub(crate) fn window_sums(
    conn: &Connection,
    q: &WindowQuery,
    (raw, widths, coarse_until): (bool, (i64, i64), i64),
    held: &HeldRows,
) -> Result<BTreeMap<String, WindowSums>, StoreError> {
    let names = variant_names(conn)?;
    let wm = if raw { i64::MIN } else { watermark(conn)?.unwrap_or(i64::MIN) };
    let (point_ms, rollup_ms) = widths;
    // Without a filter only the ids are needed (no URL or variant copied per target).
    let ids: Vec<i64> = match q.target_url.as_deref() {
        None => target_ids(conn)?,
        filter => select_targets(listed_targets(conn)?, filter).iter().map(|t| t.id).collect(),
    };
    let only = q.target_url.as_ref().and(ids.first().copied());
    let mut out: BTreeMap<String, WindowSums> = BTreeMap::new();
    let mut add = |variant: &str, ts_ms: i64, row: RowRef<'_>, width: i64| {
        let from = (ts_ms - width).max(q.start_ms);
        // Looked up before inserting: a window adds row after row of the same variants.
        let sums = match out.get_mut(variant) {
            Some(sums) => sums,
            None => {
                out.entry(variant.to_owned()).or_insert_with(|| WindowSums { data_from_ms: from, ..Default::default() })
            }
        };
        row.add_to(&mut sums.counts);
        sums.data_from_ms = sums.data_from_ms.min(from);
    };
    let mut from = q.start_ms;
    if !raw {
        let coarse_wm = watermark_of(conn, Table::Coarse)?.unwrap_or(i64::MIN);
        let coarse_to = coarse_until.min(coarse_wm).min(q.end_ms);
        if coarse_to > from {
            for &id in &ids {
                for r in target_rows(conn, Table::Coarse, id, from, coarse_to, &names)? {
                    add(&r.variant, r.ts_ms, RowRef::Row(&r), rollup_ms * COARSE_FACTOR);
                }
            }
            from = coarse_to;
        }
    }
    if !raw && wm > from {
        for &id in &ids {
            for r in target_rows(conn, Table::Rollup, id, from, q.end_ms.min(wm), &names)? {
                add(&r.variant, r.ts_ms, RowRef::Row(&r), rollup_ms);
            }
        }
    }
    if ids.is_empty() {
        return Ok(out);
    }
    let after_rollups = (from.max(wm), q.end_ms);
    let (mut stored, held_from) = (HashSet::new(), held.earliest_in(after_rollups).unwrap_or(i64::MAX));
    each_raw_view(conn, after_rollups, (only, None), &names, &mut |r| {
        if r.ts_ms >= held_from {
            stored.insert((r.ts_ms, r.target_id));
        }
        add(r.variant, r.ts_ms, RowRef::View(&r.row), point_ms);
    })?;
    for r in held.rows_in_ref(after_rollups, only, &stored) {
        add(&r.variant, r.ts_ms, RowRef::Row(&r), point_ms);
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

/// Both variants' increases per bucket over `(q.start_ms, q.end_ms]`, summed over their pods,
/// ascending: the strata of a canary comparison. Read as [`window_sums`] reads (rollups up to
/// their watermark unless `raw`, raw rows after it, and the rows the writer still `held`), so a
/// comparison and the window sums it shows agree on every request.
pub fn strata(
    conn: &Connection,
    q: &StrataQuery,
    read: (bool, (i64, i64)),
    held: &HeldRows,
) -> Result<Vec<Stratum>, StoreError> {
    Ok(strata_after(conn, q, q.start_ms, (read.0, read.1, i64::MIN), held)?.strata)
}

/// [`strata`] ending after `after_ms` only (each bucket still read from the table the whole of
/// `q` reads it from), with where they settle. In a read of rollups, the strata of rolled
/// minutes (up to the rollup watermark) change only when a late row lowers the watermark, and
/// the raw ticks after it are replaced by their minute once it is rolled. In a read of raw rows
/// only (an interval of an hour or less), a tick settles at `raw_settled_ms` (the point cache's
/// sealed bound: later writes into it move the generation), or earlier when a held late batch
/// writes below it. Only the two variants' rows are decoded.
pub fn strata_after(
    conn: &Connection,
    q: &StrataQuery,
    after_ms: i64,
    (raw, widths, raw_settled_ms): (bool, (i64, i64), i64),
    held: &HeldRows,
) -> Result<SettledStrata, StoreError> {
    let names = variant_names(conn)?;
    let wm = if raw { i64::MIN } else { watermark(conn)?.unwrap_or(i64::MIN) };
    let from = q.start_ms.max(after_ms);
    let mut ticks: BTreeMap<i64, [Counts; 2]> = BTreeMap::new();
    let mut add = |variant: &str, ts_ms: i64, row: RowRef<'_>| {
        if let Some(side) = q.variants.iter().position(|v| v == variant) {
            row.add_to(&mut ticks.entry(ts_ms).or_default()[side]);
        }
    };
    if !raw && wm > from {
        for t in listed_targets(conn)?.iter().filter(|t| q.variants.contains(&t.variant)) {
            for r in target_rows(conn, Table::Rollup, t.id, from, q.end_ms.min(wm), &names)? {
                add(&r.variant, r.ts_ms, RowRef::Row(&r));
            }
        }
    }
    let pair: Vec<i64> = names.iter().filter(|(_, n)| q.variants.contains(n)).map(|(id, _)| *id).collect();
    let after_rollups = (from.max(wm), q.end_ms);
    let (mut stored, held_from) = (HashSet::new(), held.earliest_in(after_rollups).unwrap_or(i64::MAX));
    each_raw_view(conn, after_rollups, (None, Some(&pair)), &names, &mut |r| {
        if r.ts_ms >= held_from {
            stored.insert((r.ts_ms, r.target_id));
        }
        add(r.variant, r.ts_ms, RowRef::View(&r.row));
    })?;
    for r in held.rows_in_ref(after_rollups, None, &stored) {
        add(&r.variant, r.ts_ms, RowRef::Row(&r));
    }
    let strata = ticks
        .into_iter()
        .map(|(end_ms, [b, c])| Stratum { end_ms, sides: [SideTick::from_counts(&b), SideTick::from_counts(&c)] })
        .collect();
    let (settled, stratum_ms) = if raw {
        let late = held.earliest_late_ms().map_or(i64::MAX, |ts| ts - 1);
        (raw_settled_ms.min(late), widths.0)
    } else {
        (wm, widths.1)
    };
    let settled_until_ms = settled.clamp(q.start_ms, q.end_ms.max(q.start_ms));
    Ok(SettledStrata { strata, settled_until_ms, stratum_ms })
}

/// When `variant`'s current version first appeared as of `end_ms`: walking back from its newest
/// version change, the earliest change to the same version with none to another in between
/// (pods reach a version one by one); without any, its first scrape.
pub fn rollout_start(conn: &Connection, variant: &str, end_ms: i64) -> Result<Option<RolloutStart>, StoreError> {
    let changes: Vec<(i64, String)> = events(conn, i64::MIN, end_ms)?
        .into_iter()
        .filter(|e| e.kind == EventKind::Version && e.variant == variant)
        .filter_map(|e| e.detail.rsplit_once(" -> ").map(|(_, to)| (e.ts_ms, to.trim().to_owned())))
        .collect();
    if let Some((_, current)) = changes.last() {
        let mut since = end_ms;
        for (ts, to) in changes.iter().rev() {
            if to != current {
                break;
            }
            since = *ts;
        }
        return Ok(Some(RolloutStart { since_ms: since, by: StartedBy::Version, version: Some(current.clone()) }));
    }
    let first = listed_targets(conn)?.iter().filter(|t| t.variant == variant).map(|t| t.first_seen_ms).min();
    Ok(first.map(|since_ms| RolloutStart { since_ms, by: StartedBy::FirstScrape, version: None }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::TargetRow;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        c.execute(
            "INSERT INTO targets (url, variant, first_seen_ms) VALUES ('http://a/m', 'canary', 5000), ('http://b/m', 'canary', 9000), ('http://p/m', 'production', 1000)",
            [],
        )
        .unwrap();
        c
    }

    /// A `target=` filter sums that target's rows alone; without one, every target's.
    #[test]
    fn a_target_filter_sums_that_target_alone() {
        let c = db();
        for (id, variant, n) in [(1, "canary", 1.0), (2, "canary", 2.0), (3, "production", 4.0)] {
            let mut row = TargetRow { target_id: id, variant: variant.into(), ts_ms: 10_000, ..Default::default() };
            row.counts.requests.insert("200".into(), n);
            super::super::query::replace_row(&c, Table::Raw, &row).unwrap();
        }
        let sums = |target_url: Option<&str>| {
            let q = WindowQuery { start_ms: 0, end_ms: 20_000, target_url: target_url.map(str::to_owned) };
            let read = (true, (5_000, 60_000), i64::MIN);
            let out = window_sums(&c, &q, read, &HeldRows::default()).unwrap();
            out.into_iter().map(|(v, s)| (v, s.counts.total_requests())).collect::<Vec<_>>()
        };
        assert_eq!(sums(None), [("canary".to_owned(), 3.0), ("production".to_owned(), 4.0)]);
        assert_eq!(sums(Some("http://b/m")), [("canary".to_owned(), 2.0)]);
        assert_eq!(sums(Some("http://elsewhere/m")), []);
    }

    fn version(c: &Connection, ts: i64, target: &str, detail: &str) {
        c.execute(
            "INSERT INTO events (ts, kind, variant, target, detail) VALUES (?1, 'version', 'canary', ?2, ?3)",
            rusqlite::params![ts, target, detail],
        )
        .unwrap();
    }

    #[test]
    fn a_rollout_starts_when_its_version_first_appeared_else_at_the_first_scrape() {
        let c = db();
        let start = |end| rollout_start(&c, "canary", end).unwrap();
        assert_eq!(start(100_000), Some(RolloutStart { since_ms: 5000, by: StartedBy::FirstScrape, version: None }));
        assert_eq!(rollout_start(&c, "nobody", 100_000).unwrap(), None);
        version(&c, 20_000, "http://a/m", "version 1.0 -> 1.1");
        version(&c, 30_000, "http://a/m", "version 1.1 -> 1.2");
        // Pods reach 1.2 one after the other: the rollout began with the first.
        version(&c, 40_000, "http://b/m", "version 1.1 -> 1.2");
        let v12 = Some(RolloutStart { since_ms: 30_000, by: StartedBy::Version, version: Some("1.2".into()) });
        assert_eq!(start(100_000), v12);
        assert_eq!(start(25_000).map(|s| s.since_ms), Some(20_000), "as of an earlier end");
        version(&c, 50_000, "http://a/m", "version 1.2 -> 1.3");
        assert_eq!(start(100_000).map(|s| (s.since_ms, s.version)), Some((50_000, Some("1.3".into()))));
    }

    #[test]
    fn raw_strata_settle_at_the_sealed_bound_or_before_a_held_late_row() {
        let c = db();
        let q = StrataQuery { start_ms: 0, end_ms: 200_000, variants: ["production".into(), "canary".into()] };
        let read = (true, (5_000, 60_000), 100_000);
        let settled = |held: &HeldRows| strata_after(&c, &q, 0, read, held).unwrap();
        let none = settled(&HeldRows::default());
        assert_eq!((none.settled_until_ms, none.stratum_ms), (100_000, 5_000));
        let row = |ts_ms| TargetRow { target_id: 3, ts_ms, variant: "production".into(), ..Default::default() };
        let batch = |rows, late| crate::ports::ingest::WriteBatch {
            bucket_end_ms: 150_000,
            rows,
            states: Vec::new(),
            points: Vec::new(),
            events: Vec::new(),
            late,
        };
        let held = super::super::held::Held::default();
        held.push(batch(vec![row(150_000)], false));
        assert_eq!(settled(&held.snapshot(|| 145_000)).settled_until_ms, 100_000, "a batch on time changes nothing");
        held.push(batch(vec![row(40_000)], true));
        let late = settled(&held.snapshot(|| 145_000));
        assert_eq!(late.settled_until_ms, 39_999, "the late row's tick is open again");
        assert_eq!(late.strata.iter().map(|s| s.end_ms).collect::<Vec<_>>(), [40_000, 150_000]);
        let rolled = strata_after(&c, &q, 0, (false, (5_000, 60_000), 100_000), &HeldRows::default()).unwrap();
        assert_eq!((rolled.settled_until_ms, rolled.stratum_ms), (0, 60_000), "nothing rolled yet");
    }
}
