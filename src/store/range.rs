//! The range query behind `/api/metrics`, the charts and the export: points of a window.
//!
//! A window is read from `metrics_5s` when it is at most an hour long and raw rows still hold
//! it ([`RangeRead::raw`], which `source` picks); otherwise from `metrics_1m` (or `metrics_10m`
//! for a step that is a multiple of its rows) plus the newest minutes not rolled up yet, rolled
//! from `metrics_5s` on the fly, so a long range never misses its most recent end (the Go
//! dashboard lost up to 10 minutes there).
//!
//! Every target's running totals are seeded as of the window's start ([`query::totals_at`]),
//! so cumulative fields agree whatever table, range or cache answers. Buckets wider than a
//! point are wide buckets ([`Bucket`]); the newest one counts only the time the data reached.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rusqlite::Connection;

use super::held::HeldRows;
use super::query::{self, StoredTarget, Table};
use super::sealed::{self, StoredRow};
use super::{StoreError, codec};
use crate::clock::bucket_end;
use crate::point::aggregate::fresher_quota;
use crate::point::{Bucket, Point, PointBuilder, Quota, Summary, TargetRow};

use crate::ports::read::{COARSE_FACTOR, PointQuery, QuotaPoint};

/// A read of points as the store answers it: the reader's query, whether raw rows answer it
/// (else the rolled tables, the newest minutes rolled on the fly) and the widths of both.
/// `source` picks the rows for a reader; tests pick them to compare the two.
#[derive(Debug, Clone)]
pub struct RangeRead {
    /// The window, step and filters asked for.
    pub q: PointQuery,
    /// Raw rows answer (else the rolled tables).
    pub raw: bool,
    /// Width of a raw point, ms.
    pub point_ms: i64,
    /// Width of a rollup, ms.
    pub rollup_ms: i64,
}

/// A row as read by a range query: in place ([`codec::RowView`]) from a table, or decoded (the
/// raw tail of a long range, rolled on the fly).
#[derive(Debug, Clone, Copy)]
pub enum RowRef<'a> {
    /// Read in place.
    View(&'a codec::RowView<'a>),
    /// Decoded.
    Row(&'a TargetRow),
}

impl RowRef<'_> {
    /// Adds the row's increases into `counts` (allocating only for labels `counts` lacks).
    pub(crate) fn add_to(&self, counts: &mut crate::point::Counts) {
        match self {
            RowRef::View(v) => v.add_to(counts),
            RowRef::Row(r) => counts.add(&r.counts),
        }
    }
}

/// Visitor of every row a range query reads: variant, bucket end, row (in no particular order).
pub(crate) type RowVisitor<'v> = dyn FnMut(&str, i64, RowRef<'_>) + 'v;

/// Points of the window from the stored rows alone, ascending by time then variant.
pub fn points(conn: &Connection, r: &RangeRead) -> Result<Vec<Point>, StoreError> {
    points_with(conn, r, &HeldRows::default(), &mut |_, _, _| {})
}

/// What one read of the window's rows gave.
#[derive(Default)]
struct Read {
    rows: Vec<Summary>,
    /// End of the newest raw point read: how far the data reaches.
    newest_ms: Option<i64>,
    /// The data reaches past the window's end ([`Reach::PastEnd`]).
    past_end: bool,
}

/// How far a window's data reaches: its newest row, or the window's end if the data reaches
/// past it.
fn reach(newest_ms: Option<i64>, past_end: bool, end_ms: i64) -> i64 {
    if past_end { end_ms } else { newest_ms.unwrap_or(end_ms).min(end_ms) }
}

/// [`points`] with the rows the writer still `held` (see [`super::held`]), also handing every
/// row read to `each_row`, so a caller that needs window sums too (the dashboard's per-model
/// table) reads the rows only once.
pub(crate) fn points_with(
    conn: &Connection,
    r: &RangeRead,
    held: &HeldRows,
    each_row: &mut RowVisitor<'_>,
) -> Result<Vec<Point>, StoreError> {
    points_seeded(conn, r, held, each_row, true)
}

/// [`points_with`], seeding the cumulative fields with every target's running totals as of
/// the window's start only if `seed` (not for the quota blocks of a read of the rolled tables:
/// [`crate::ports::read::DataSource::quota_points`]).
pub(crate) fn points_seeded(
    conn: &Connection,
    r: &RangeRead,
    held: &HeldRows,
    each_row: &mut RowVisitor<'_>,
    seed: bool,
) -> Result<Vec<Point>, StoreError> {
    let mut out = Vec::new();
    points_into(conn, r, held, (each_row, seed), &mut |p| out.push(p))?;
    Ok(out)
}

/// Receiver of a range query's points, in their order.
pub(crate) type PointSink<'s> = dyn FnMut(Point) + 's;

/// [`points_seeded`], handing each point to `sink` as soon as it is built: a raw window's points
/// bucket by bucket while its rows are read, so a caller can serialize them meanwhile
/// (`cache::PointCache::points_json_with`).
pub(crate) fn points_into(
    conn: &Connection,
    r: &RangeRead,
    held: &HeldRows,
    (each_row, seed): (&mut RowVisitor<'_>, bool),
    sink: &mut PointSink<'_>,
) -> Result<(), StoreError> {
    points_reaching(conn, r, held, (each_row, seed, Reach::Data), sink)
}

/// How far a read's data reaches, which the newest bucket's coverage follows (a wide bucket the
/// data has not filled yet must not read as a dip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// As far as the newest row read: the window is the newest part of the answer.
    Data,
    /// Past the window's end: the window is an older part of a read split into parts of time
    /// (`cache::read_fresh`), and a newer part found rows, so its newest bucket is covered
    /// whole, as in the same read unsplit.
    PastEnd,
}

/// [`points_into`], the newest bucket covered as `reach` says.
pub(crate) fn points_reaching(
    conn: &Connection,
    r: &RangeRead,
    held: &HeldRows,
    (each_row, seed, reach): (&mut RowVisitor<'_>, bool, Reach),
    sink: &mut PointSink<'_>,
) -> Result<(), StoreError> {
    let (q, rollup_ms) = (&r.q, r.rollup_ms);
    let owned = query::variant_names(conn)?;
    let shared = owned.iter().map(|(id, n)| (*id, Arc::from(n.as_str()))).collect();
    let names = Names { owned, shared };
    let targets: Vec<StoredTarget> = query::select_targets(query::targets(conn)?, q.target_url.as_deref());
    let after = q.read_after_ms();
    let mut builder = PointBuilder::new();
    let mut seeds =
        if seed { query::totals_at(conn, &targets, after, &names.owned, rollup_ms)? } else { HashMap::new() };
    for t in &targets {
        if let Some((variant, totals)) = seeds.remove(&t.id) {
            builder.seed(t.id, Arc::from(variant.as_str()), totals);
        }
    }
    let mut read = Read { past_end: reach == Reach::PastEnd, ..Read::default() };
    if targets.is_empty() {
        build_points(r, &read, &mut builder).into_iter().for_each(sink);
        return Ok(());
    }
    let only = q.target_url.as_ref().and(targets.first()).map(|t| t.id);
    let widths = (r.point_ms, rollup_ms);
    if r.raw {
        let past_end = read.past_end;
        let mut stream = BucketStream { r, builder: &mut builder, rows: Vec::new(), newest_ms: None, past_end, sink };
        raw_points(conn, (only, held), (after, q.end_ms), (&names.shared, widths), each_row, &mut stream)?;
        stream.flush();
        return Ok(());
    }
    let coarse = q.step_ms % (rollup_ms * COARSE_FACTOR) == 0;
    let from = rolled_rows(conn, &targets, (after, q.end_ms), (&names.shared, widths, coarse), each_row, &mut read)?;
    rolled_raw_tail(conn, (only, held), (from, q.end_ms), (&names.owned, widths), each_row, &mut read)?;
    build_points(r, &read, &mut builder).into_iter().for_each(sink);
    Ok(())
}

/// Groups the rows into buckets of the step and builds each bucket's points.
fn build_points(r: &RangeRead, read: &Read, builder: &mut PointBuilder) -> Vec<Point> {
    // Sort references, not the rows themselves: a summary is a few hundred bytes.
    let mut order: Vec<&Summary> = read.rows.iter().collect();
    order.sort_by_key(|r| (r.ts_ms, r.target_id));
    let reach = reach(read.newest_ms, read.past_end, r.q.end_ms);
    let step = r.q.step_ms;
    let mut out = Vec::new();
    for rows in order.chunk_by(|a, b| bucket_end(a.ts_ms, step) == bucket_end(b.ts_ms, step)) {
        out.extend(bucket_points(r, reach, rows, builder));
    }
    out
}

/// The points of one bucket of the step from its rows (in time then target order), of the
/// variant asked for. `reach`: how far the window's data reaches (the newest bucket counts only
/// the time up to it).
fn bucket_points(r: &RangeRead, reach: i64, rows: &[&Summary], builder: &mut PointBuilder) -> Vec<Point> {
    let q = &r.q;
    let end_ms = bucket_end(rows[0].ts_ms, q.step_ms);
    let bucket = if r.raw && q.step_ms == r.point_ms {
        Bucket::narrow(end_ms, q.step_ms)
    } else {
        let covered_ms = (end_ms.min(reach.max(end_ms - q.step_ms + r.point_ms)) - (end_ms - q.step_ms)).max(1);
        Bucket { end_ms, covered_ms, narrow: false }
    };
    let mut pts = builder.build(bucket, rows);
    pts.retain(|p| q.variant.as_ref().is_none_or(|v| v == &p.variant));
    pts
}

/// Points built bucket by bucket from rows that arrive in time order, so that a read holds one
/// bucket's rows at a time rather than the window's: a 15-minute read of 100 targets held all
/// 18,000 row summaries at once, the largest part of the process's peak heap (heaptrack;
/// BENCHMARKS.md, "Memory").
struct BucketStream<'a, 's> {
    r: &'a RangeRead,
    builder: &'a mut PointBuilder,
    /// Rows of the bucket being filled.
    rows: Vec<Summary>,
    /// Newest row so far: how far the data reaches.
    newest_ms: Option<i64>,
    /// The data reaches past the window's end ([`Reach::PastEnd`]).
    past_end: bool,
    sink: &'a mut PointSink<'s>,
}

impl BucketStream<'_, '_> {
    /// Takes the next row; rows come in time order (see [`raw_points`]).
    fn push(&mut self, s: Summary) {
        let step = self.r.q.step_ms;
        let current = self.rows.first().map(|f| bucket_end(f.ts_ms, step));
        debug_assert!(current.is_none_or(|c| c <= bucket_end(s.ts_ms, step)), "rows out of time order");
        // The row is seen before the bucket it closes is built: that bucket's data reaches past
        // its end.
        self.newest_ms = self.newest_ms.max(Some(s.ts_ms));
        if current.is_some_and(|c| c != bucket_end(s.ts_ms, step)) {
            self.flush();
        }
        self.rows.push(s);
    }

    /// Builds the points of the bucket being filled. Before the last bucket, a newer row was
    /// seen, so the data reaches past this bucket's end, as it does in [`build_points`].
    fn flush(&mut self) {
        if self.rows.is_empty() {
            return;
        }
        let reach = reach(self.newest_ms, self.past_end, self.r.q.end_ms);
        let mut order: Vec<&Summary> = self.rows.iter().collect();
        order.sort_by_key(|r| (r.ts_ms, r.target_id));
        bucket_points(self.r, reach, &order, self.builder).into_iter().for_each(&mut *self.sink);
        self.rows.clear();
    }
}

/// Variant names by id: owned for decoded rows, shared for summaries.
struct Names {
    owned: HashMap<i64, String>,
    shared: HashMap<i64, Arc<str>>,
}

/// Names by variant id, shared, and the (point, rollup) widths.
type Context<'a> = (&'a HashMap<i64, Arc<str>>, (i64, i64));

/// Summaries of one target's rows of a rolled table with `after < ts <= until` (open or
/// sealed), read in place from the encoded payloads: no string is allocated per label, and a
/// quota block repeated byte for byte is decoded once.
pub fn target_summaries(
    conn: &Connection,
    table: Table,
    target_id: i64,
    (after, until): (i64, i64),
    (names, widths): Context<'_>,
    each_row: &mut RowVisitor<'_>,
) -> Result<Vec<Summary>, StoreError> {
    let mut out = Vec::new();
    let mut summariser = Summariser::new(table, (names, widths));
    sealed::scan(conn, table, (after, until), Some(target_id), &mut |row| {
        out.push(summariser.summary(row, each_row)?);
        Ok(true)
    })?;
    Ok(out)
}

/// Summarises stored rows read in place; a target's quota block repeated byte for byte (it
/// changes rarely) is decoded once.
struct Summariser<'a> {
    table: Table,
    names: &'a HashMap<i64, Arc<str>>,
    widths: (i64, i64),
    unknown: Arc<str>,
    last_quota: HashMap<i64, (Vec<u8>, Option<Arc<Quota>>)>,
}

impl<'a> Summariser<'a> {
    fn new(table: Table, (names, widths): Context<'a>) -> Self {
        Self { table, names, widths, unknown: Arc::from("unknown"), last_quota: HashMap::new() }
    }

    /// The row's summary, after handing the row to `each_row`.
    fn summary(&mut self, row: StoredRow<'_>, each_row: &mut RowVisitor<'_>) -> Result<Summary, StoreError> {
        let v = codec::view(row.data)?;
        let quota = match self.last_quota.get(&row.target_id) {
            Some((bytes, q)) if bytes.as_slice() == v.quota_bytes => q.clone(),
            _ => {
                let q = v.quota()?.map(Arc::new);
                self.last_quota.insert(row.target_id, (v.quota_bytes.to_vec(), q.clone()));
                q
            }
        };
        let variant = self.names.get(&row.variant_id).cloned().unwrap_or_else(|| self.unknown.clone());
        each_row(&variant, row.ts, RowRef::View(&v));
        let mut s = v.summary(row.target_id, variant, (row.ts, row.elapsed_ms), quota);
        s.present_ms = query::presence(self.table, row.present_ms, row.elapsed_ms, self.widths);
        Ok(s)
    }
}

/// Every target's rolled rows for `after < ts <= until`, coarsest first: stored 10 min rows (for
/// a step that is a multiple of them) up to their watermark, then stored 1 min rows up to
/// theirs. Returns where the stored rows end: the raw tail is read from there.
fn rolled_rows(
    conn: &Connection,
    targets: &[StoredTarget],
    (after, until): (i64, i64),
    (names, widths, coarse): (&HashMap<i64, Arc<str>>, (i64, i64), bool),
    each_row: &mut RowVisitor<'_>,
    read: &mut Read,
) -> Result<i64, StoreError> {
    let tables: &[Table] = if coarse { &[Table::Coarse, Table::Rollup] } else { &[Table::Rollup] };
    let mut from = after;
    for &table in tables {
        let to = until.min(query::watermark_of(conn, table)?.unwrap_or(i64::MIN));
        if to <= from {
            continue;
        }
        for t in targets {
            let stored = target_summaries(conn, table, t.id, (from, to), (names, widths), each_row)?;
            read.newest_ms = read.newest_ms.max(stored.last().map(|s| s.ts_ms));
            read.rows.extend(stored);
        }
        from = to;
    }
    Ok(from)
}

/// Which targets' raw rows a read takes (every target's or only `only`'s), and the held rows
/// to add.
type RawSource<'a> = (Option<i64>, &'a HeldRows);

/// The raw rows of `(from, until]`, every target's (or only `only`'s) in one scan, plus the
/// held rows the database lacks, into `stream` in time order: the held rows are merged into
/// the scan by `(ts, target_id)` (a late batch's row may be older than stored ones), and one
/// the scan also found (committed since the snapshot) is left out.
fn raw_points(
    conn: &Connection,
    (only, held): RawSource<'_>,
    (from, until): (i64, i64),
    (names, widths): Context<'_>,
    each_row: &mut RowVisitor<'_>,
    stream: &mut BucketStream<'_, '_>,
) -> Result<(), StoreError> {
    if from >= until {
        return Ok(());
    }
    let mut pending = HeldMerge::new(held.rows_in((from, until), only, &HashSet::new()));
    let mut summariser = Summariser::new(Table::Raw, (names, widths));
    sealed::scan(conn, Table::Raw, (from, until), only, &mut |row| {
        for r in pending.before((row.ts, row.target_id)) {
            each_row(&r.variant, r.ts_ms, RowRef::Row(&r));
            stream.push(Summary::from(&r));
        }
        stream.push(summariser.summary(row, each_row)?);
        Ok(true)
    })?;
    for r in pending.rest() {
        each_row(&r.variant, r.ts_ms, RowRef::Row(&r));
        stream.push(Summary::from(&r));
    }
    Ok(())
}

/// The freshest quota block of each variant in each bucket of a raw read, ascending by time
/// then variant: exactly the `quota` of the points [`points_seeded`] builds over the same rows
/// (the newest row with a block of each pod in the bucket, then the pod with the newest of
/// those, as `PointBuilder` picks it), read without building the points. The quota runway
/// reads only these blocks at every evaluation; building whole points for them (a summary per
/// row, rates, histograms, the target listing with every target's state) was 9.5 % of a
/// 500-target process' samples, this read 5.1 % (BENCHMARKS.md, "Alert engine CPU, eleventh
/// stop"). `None` for a read of the rolled tables, which [`points_seeded`] answers.
pub(crate) fn quota_points(
    conn: &Connection,
    r: &RangeRead,
    held: &HeldRows,
) -> Result<Option<Vec<QuotaPoint>>, StoreError> {
    if !r.raw {
        return Ok(None);
    }
    let q = &r.q;
    let (from, until) = (q.read_after_ms(), q.end_ms);
    let mut out = Vec::new();
    // As `points_into`: no target stored, no point (whatever is held).
    if from >= until || query::target_ids(conn)?.is_empty() {
        return Ok(Some(out));
    }
    let names = query::variant_names(conn)?;
    let held_rows = held.rows_in_ref((from, until), None, &HashSet::new());
    let mut pending = held_rows.iter().map(|r| &**r).peekable();
    let mut bucket = QuotaBucket { step_ms: q.step_ms, rows: Vec::new() };
    // The decoded block of each target's last row, kept while its bytes repeat (as `Summariser`).
    let mut decoded: HashMap<i64, (Vec<u8>, Option<Arc<Quota>>)> = HashMap::new();
    sealed::scan(conn, Table::Raw, (from, until), None, &mut |row| {
        let key = (row.ts, row.target_id);
        // Held rows before the stored one, in its place (one of the same key is stored).
        while let Some(h) = pending.next_if(|h| (h.ts_ms, h.target_id) <= key) {
            if (h.ts_ms, h.target_id) < key {
                bucket.push((h.ts_ms, h.target_id), &h.variant, h.gauges.quota.as_ref().map(QuotaRef::Held), &mut out);
            }
        }
        let v = codec::view(row.data)?;
        let quota = match decoded.get(&row.target_id) {
            Some((bytes, q)) if bytes.as_slice() == v.quota_bytes => q.clone(),
            _ => {
                let q = v.quota()?.map(Arc::new);
                decoded.insert(row.target_id, (v.quota_bytes.to_vec(), q.clone()));
                q
            }
        };
        let variant = names.get(&row.variant_id).map_or("unknown", String::as_str);
        bucket.push(key, variant, quota.map(QuotaRef::Stored), &mut out);
        Ok(true)
    })?;
    for h in pending {
        bucket.push((h.ts_ms, h.target_id), &h.variant, h.gauges.quota.as_ref().map(QuotaRef::Held), &mut out);
    }
    bucket.flush(&mut out);
    out.retain(|p| q.variant.as_ref().is_none_or(|v| v == &p.variant));
    Ok(Some(out))
}

/// A row's quota block: a held row's, borrowed, or a stored row's, decoded.
enum QuotaRef<'a> {
    Held(&'a Quota),
    Stored(Arc<Quota>),
}

impl QuotaRef<'_> {
    fn get(&self) -> &Quota {
        match self {
            QuotaRef::Held(q) => q,
            QuotaRef::Stored(q) => q,
        }
    }
}

/// A pod's newest block in a bucket, with its row's bucket end.
type PodQuota<'q> = Option<(i64, &'q Quota)>;

/// The rows of one bucket of a [`quota_points`] read: `((ts, target id), variant, block)`.
struct QuotaBucket<'a> {
    step_ms: i64,
    rows: Vec<((i64, i64), &'a str, Option<QuotaRef<'a>>)>,
}

impl<'a> QuotaBucket<'a> {
    /// Takes the next row (in time order, as [`BucketStream::push`]).
    fn push(&mut self, key: (i64, i64), variant: &'a str, quota: Option<QuotaRef<'a>>, out: &mut Vec<QuotaPoint>) {
        let current = self.rows.first().map(|f| bucket_end(f.0.0, self.step_ms));
        if current.is_some_and(|c| c != bucket_end(key.0, self.step_ms)) {
            self.flush(out);
        }
        self.rows.push((key, variant, quota));
    }

    /// The bucket's blocks, as `PointBuilder::build` and `freshest_quota` pick them.
    fn flush(&mut self, out: &mut Vec<QuotaPoint>) {
        let Some(first) = self.rows.first() else { return };
        let end_ms = bucket_end(first.0.0, self.step_ms);
        self.rows.sort_by_key(|r| r.0);
        // Per variant, per pod: its newest row's block in the bucket and that row's time.
        let mut by_variant: BTreeMap<&str, BTreeMap<i64, PodQuota<'_>>> = BTreeMap::new();
        for ((ts, target), variant, quota) in &self.rows {
            let pod = by_variant.entry(variant).or_default().entry(*target).or_default();
            if let Some(q) = quota {
                *pod = Some((*ts, q.get()));
            }
        }
        for (variant, pods) in by_variant {
            let freshest = pods.into_values().flatten().max_by(|a, b| fresher_quota(*a, *b));
            if let Some((_, quota)) = freshest {
                out.push(QuotaPoint { end_ms, variant: variant.to_owned(), quota: quota.clone() });
            }
        }
        self.rows.clear();
    }
}

/// Held rows (sorted by `(ts, target_id)`) handed out in step with a scan of stored rows in the
/// same order: those before each stored row, and none with the stored row's own key.
struct HeldMerge {
    rows: std::iter::Peekable<std::vec::IntoIter<TargetRow>>,
}

impl HeldMerge {
    fn new(rows: Vec<TargetRow>) -> Self {
        Self { rows: rows.into_iter().peekable() }
    }

    /// The held rows before the stored row `key`; a held row of that key is dropped (the
    /// database has it: committed since the snapshot, or a row the held one merges into when
    /// written).
    fn before(&mut self, key: (i64, i64)) -> Vec<TargetRow> {
        let mut out = Vec::new();
        while let Some(r) = self.rows.next_if(|r| (r.ts_ms, r.target_id) <= key) {
            if (r.ts_ms, r.target_id) < key {
                out.push(r);
            }
        }
        out
    }

    /// The held rows after the last stored one.
    fn rest(self) -> impl Iterator<Item = TargetRow> {
        self.rows
    }
}

/// The raw rows of `(from, until]` after a long range's stored rollups, every target's (or
/// only `only`'s) in one scan plus the held rows the database lacks, rolled into minutes on
/// the fly.
fn rolled_raw_tail(
    conn: &Connection,
    (only, held): RawSource<'_>,
    (from, until): (i64, i64),
    (names, widths): (&HashMap<i64, String>, (i64, i64)),
    each_row: &mut RowVisitor<'_>,
    read: &mut Read,
) -> Result<(), StoreError> {
    if from >= until {
        return Ok(());
    }
    let mut roller = query::Roller::new(widths.1);
    let mut take = |r: TargetRow, read: &mut Read| {
        each_row(&r.variant, r.ts_ms, RowRef::Row(&r));
        read.newest_ms = read.newest_ms.max(Some(r.ts_ms));
        if let Some(rolled) = roller.push(r) {
            read.rows.push(Summary::from(&rolled));
        }
    };
    // Held rows merged into the scan by (ts, target_id): each target's rows reach the roller in
    // time order (see `raw_points`).
    let mut pending = HeldMerge::new(held.rows_in((from, until), only, &HashSet::new()));
    query::each_raw_row(conn, (from, until), only, names, widths, &mut |r| {
        for h in pending.before((r.ts_ms, r.target_id)) {
            take(h, read);
        }
        take(r, read);
    })?;
    for r in pending.rest() {
        take(r, read);
    }
    read.rows.extend(roller.finish().iter().map(Summary::from));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::QuotaWindow;
    use crate::ports::ingest::WriteBatch;
    use crate::ports::read::quota_of;
    use crate::store::{Store, write};

    const T0: i64 = 1_800_000_000_000; // a whole minute
    const MIN: i64 = 60_000;

    /// Target `k`'s quota block at bucket `i`: none for target 3 ever, none now and then for
    /// the others; its usage moves every third bucket (so consecutive rows repeat it byte for
    /// byte, then change); sample ages that tie across pods at times and are unknown at others.
    fn quota(k: i64, i: i64) -> Option<Quota> {
        if k == 3 || (i + k) % 7 == 0 {
            return None;
        }
        let window = |used: f64| QuotaWindow {
            limit_type: Some(if k % 2 == 0 { "tokens_limit" } else { "credit_limit" }.into()),
            usage_ratio: Some(used),
            reset_time_unix: Some(1.79e9 + k as f64),
            ..Default::default()
        };
        Some(Quota {
            five_hour: Some(window(0.01 * k as f64 + 0.001 * (i / 3) as f64)),
            weekly: (k != 2).then(|| window(0.5 - 0.002 * (i / 3) as f64)),
            sample_age_seconds: ((i + k) % 5 != 0).then_some(((i * k) % 3) as f64),
            ..Default::default()
        })
    }

    /// Five targets of three variants scraped every 5 s for 4 minutes (the fifth goes away
    /// after 100 s), one batch per bucket as the ticker makes them.
    fn batches(store: &Store) -> Vec<WriteBatch> {
        let pairs: Vec<(String, String)> = [
            ("http://a/metrics", "production"),
            ("http://b/metrics", "production"),
            ("http://c/metrics", "canary"),
            ("http://d/metrics", "canary"),
            ("http://e/metrics", "shadow"),
        ]
        .map(|(u, v)| (u.to_owned(), v.to_owned()))
        .to_vec();
        let ids: Vec<i64> =
            query::register_targets(&store.conn().unwrap(), &pairs, T0).unwrap().iter().map(|t| t.id).collect();
        (1..=48)
            .map(|i| {
                let ts_ms = T0 + i * 5_000;
                let rows = (0..5)
                    .filter(|&k| k < 4 || i <= 20)
                    .map(|k| {
                        let mut row = TargetRow {
                            target_id: ids[k],
                            variant: pairs[k].1.clone(),
                            ts_ms,
                            elapsed_ms: 5_000,
                            present_ms: 5_000,
                            ..Default::default()
                        };
                        row.counts.requests.insert("200".into(), (i * 3 + k as i64) as f64);
                        row.gauges.quota = quota(k as i64, i);
                        row
                    })
                    .collect();
                WriteBatch { bucket_end_ms: ts_ms, rows, states: vec![], points: vec![], events: vec![], late: false }
            })
            .collect()
    }

    fn commit(store: &Store, b: &WriteBatch) {
        write::write_batch(&mut store.conn().unwrap(), b, MIN).unwrap();
        store.note_committed(b.bucket_end_ms);
    }

    /// Both reads of every window ending at each bucket (a raw read's steps: the point width
    /// and wider ones, several rows of a pod in a bucket), with the rows `held`.
    fn both(store: &Store, held: &HeldRows) -> Vec<(Vec<QuotaPoint>, Vec<QuotaPoint>)> {
        let c = store.conn().unwrap();
        let mut out = Vec::new();
        for step_ms in [5_000, 15_000, 20_000] {
            for i in (0..=50).step_by(3) {
                let end_ms = T0 + i * 5_000;
                let q = PointQuery { start_ms: end_ms - 2 * MIN, end_ms, step_ms, variant: None, target_url: None };
                let r = RangeRead { q, raw: true, point_ms: 5_000, rollup_ms: MIN };
                let points = points_seeded(&c, &r, held, &mut |_, _, _| {}, false).unwrap();
                out.push((quota_of(points), quota_points(&c, &r, held).unwrap().expect("a raw read")));
            }
        }
        let q = PointQuery {
            start_ms: T0,
            end_ms: T0 + 4 * MIN,
            step_ms: 5_000,
            variant: Some("canary".into()),
            target_url: None,
        };
        let r = RangeRead { q, raw: true, point_ms: 5_000, rollup_ms: MIN };
        let points = points_seeded(&c, &r, held, &mut |_, _, _| {}, false).unwrap();
        out.push((quota_of(points), quota_points(&c, &r, held).unwrap().expect("a raw read")));
        out
    }

    fn assert_same(store: &Store, held: &HeldRows, what: &str) {
        let reads = both(store, held);
        assert!(reads.iter().map(|(old, _)| old.len()).sum::<usize>() > 300, "{what}: the blocks are read");
        for (k, (points, blocks)) in reads.iter().enumerate() {
            assert_eq!(blocks, points, "{what}: read {k}");
        }
    }

    /// The runway's read of the quota blocks alone answers the quota of the points a whole read
    /// builds over the same rows: stored rows of several variants, a target that went away, a
    /// target without quota, pods whose newest samples tie, held batches after the stored ones,
    /// a held late row older than stored rows, and a held batch committed after the snapshot.
    #[test]
    fn quota_blocks_read_alone_are_the_quota_of_the_points() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.db")).unwrap();
        let mut all = batches(&store);
        // Target b's scrape of bucket 30 reached the ticker late: held as a late batch.
        let late_row = all[29].rows.remove(1);
        let late = WriteBatch { late: true, ..WriteBatch { rows: vec![late_row], ..all[29].clone() } };
        let (stored, failing) = all.split_at(36);
        for b in stored {
            commit(&store, b);
        }
        assert_same(&store, &HeldRows::default(), "stored rows only");
        store.held().push(late.clone());
        for b in failing {
            store.held().push(b.clone());
        }
        let held = store.held_rows();
        assert!(both(&store, &held) != both(&store, &HeldRows::default()), "the held rows change the blocks");
        assert_same(&store, &held, "with held batches");
        commit(&store, &failing[0]);
        commit(&store, &late);
        assert_same(&store, &held, "held batches committed after the snapshot");
    }
}
