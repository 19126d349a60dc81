//! Points of sealed buckets, kept between range queries, serialized.
//!
//! Dashboards ask for the same windows again and again (every reconnect backfills, every chart
//! refresh re-reads the range), and a window's old buckets do not change once every scrape that
//! completed in them is written. So the points of those *sealed* buckets are kept per query shape
//! (table, step, target filter), already serialized to JSON: a repeated query reads only the rows
//! after the last sealed bucket it has, exactly as a fresh query would (the running totals of that
//! tail are seeded from the rows before it), and copies the cached JSON for the rest. A bucket is
//! sealed once the rollup watermark passed it (1 min table) or two point widths and a second have
//! passed since it closed (5 s table).
//!
//! Any write that could touch a sealed bucket (a scrape that arrived after its bucket closed, a
//! batch retried after a failed transaction, a merge into an existing row) bumps the generation
//! and drops every cached point. The first query of a shape pays the full cost; BENCHMARKS.md
//! gives both figures.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;

use super::StoreError;
use super::held::HeldRows;
use super::range::{self, RangeRead, Reach};
use super::{downsample, query};
use crate::clock::bucket_end;
use crate::point::Point;
use crate::ports::json_array::{JsonArray, Piece, PieceWriter};
use crate::ports::read::COARSE_FACTOR;

/// Query shapes kept at once (least recently used goes first).
const MAX_SHAPES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    raw: bool,
    step_ms: i64,
    target_url: Option<String>,
}

/// One point, serialized, with what filtering needs.
#[derive(Debug, Clone)]
struct Cached {
    timestamp: i64,
    variant: std::sync::Arc<str>,
    json: Piece,
}

#[derive(Debug)]
struct Entry {
    shape: Shape,
    generation: u64,
    /// Points of every variant for buckets ending in `[from, to]`, time order.
    from: i64,
    to: i64,
    points: Vec<Cached>,
    used: u64,
}

/// The cache; one per store.
#[derive(Debug, Default)]
pub struct PointCache {
    entries: Mutex<Vec<Entry>>,
    generation: AtomicU64,
    clock: AtomicU64,
}

impl PointCache {
    /// Forgets every cached point: something was written into a bucket that may be sealed.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut e) = self.entries.lock() {
            e.clear();
        }
    }

    /// Moves on every [`PointCache::invalidate`]: whatever was computed from sealed buckets
    /// at an older generation may be wrong now (the canary judgements kept by
    /// `ports::judge_cache` are checked against it).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Retention deleted rows of one table up to `cutoff_ms`: cached points of buckets that held
    /// any of them are forgotten (a fresh query would no longer give them), the rest stay.
    pub fn forget_through(&self, raw: bool, cutoff_ms: i64) {
        let Ok(mut entries) = self.entries.lock() else { return };
        entries.retain_mut(|e| {
            if e.shape.raw != raw {
                return true;
            }
            // A bucket ending at T held rows of (T - step, T]: intact only if T - step >= cutoff.
            let first_intact = bucket_end(cutoff_ms.saturating_add(e.shape.step_ms), e.shape.step_ms);
            if e.from < first_intact {
                e.points.retain(|p| p.timestamp >= first_intact);
                e.from = first_intact;
            }
            e.from <= e.to
        });
    }

    /// The JSON array of the points of `r`, byte for byte what serializing [`range::points`]
    /// gives, reading only what is not cached. `raw_sealed_ms`: buckets of the 5 s table ending
    /// at or before it are complete. Joined into one `String`, for comparing (the API streams
    /// the pieces of [`PointCache::points_array_with`]).
    pub fn points_json(&self, conn: &Connection, r: &RangeRead, raw_sealed_ms: i64) -> Result<String, StoreError> {
        self.points_json_with(conn, r, raw_sealed_ms, &HeldRows::default())
    }

    /// [`PointCache::points_json`] with the rows the writer still holds.
    pub(crate) fn points_json_with(
        &self,
        conn: &Connection,
        r: &RangeRead,
        raw_sealed_ms: i64,
        held: &HeldRows,
    ) -> Result<String, StoreError> {
        Ok(self.points_array_with(conn, r, raw_sealed_ms, held)?.joined())
    }

    /// [`PointCache::points_json_with`] as the points' JSON pieces, shared with the cache rather
    /// than copied into one 2 MB `String` (`ports::json_array` says why). The rows the writer
    /// still holds are newer than the last committed bucket, so never in a sealed one, except a
    /// late batch's rows, which may be: they are cached with their bucket, and the writer drops
    /// the cache when it writes a late batch (or recovers from a failure), so the cache never
    /// outlives what it read.
    pub(crate) fn points_array_with(
        &self,
        conn: &Connection,
        r: &RangeRead,
        raw_sealed_ms: i64,
        held: &HeldRows,
    ) -> Result<JsonArray, StoreError> {
        self.points_array_helped(conn, &|_| None, r, raw_sealed_ms, held)
    }

    /// [`PointCache::points_json`], a long read split into parts read side by side, the older
    /// ones on the connections `more` gives ([`read_fresh`]). The answer is the same byte for
    /// byte.
    pub fn points_json_split(
        &self,
        conn: &Connection,
        more: PartConn<'_>,
        r: &RangeRead,
        raw_sealed_ms: i64,
    ) -> Result<String, StoreError> {
        Ok(self.points_array_helped(conn, more, r, raw_sealed_ms, &HeldRows::default())?.joined())
    }

    /// [`PointCache::points_array_with`], a long read split into parts read side by side, the
    /// older ones on the connections `more` gives ([`read_fresh`]).
    pub(crate) fn points_array_helped(
        &self,
        conn: &Connection,
        more: PartConn<'_>,
        r: &RangeRead,
        raw_sealed_ms: i64,
        held: &HeldRows,
    ) -> Result<JsonArray, StoreError> {
        let q = &r.q;
        let generation = self.generation.load(Ordering::SeqCst);
        let shape = Shape { raw: r.raw, step_ms: q.step_ms, target_url: q.target_url.clone() };
        let first_end = q.first_bucket_end();
        // A bucket is sealed once it is read from the table it will always be read from: raw
        // rows once written, else the rolled table the step reads (its watermark).
        let sealed_edge = if r.raw {
            raw_sealed_ms
        } else if q.step_ms % (r.rollup_ms * COARSE_FACTOR) == 0 {
            query::watermark_of(conn, query::Table::Coarse)?.unwrap_or(i64::MIN)
        } else {
            query::watermark(conn)?.unwrap_or(i64::MIN)
        };
        // The last bucket that is both sealed and wholly inside this window.
        let sealed = floor_to(sealed_edge.min(q.end_ms), q.step_ms);
        let (mut points, covered) = match self.cached(&shape, generation, first_end, q.end_ms) {
            Some(hit) => hit,
            None => (Vec::new(), q.read_after_ms()),
        };
        if covered < q.end_ms {
            let mut tail = r.clone();
            (tail.q.start_ms, tail.q.variant) = (covered, None);
            let read = read_fresh(conn, more, &tail, held)?;
            // Exactly: `extend` alone may double the cached points' vector (see [`copied`]).
            points.reserve_exact(read.len());
            points.extend(read);
        }
        self.keep(shape, generation, first_end, sealed, &points);
        let wanted = |p: &&Cached| q.variant.as_deref().is_none_or(|v| v == &*p.variant);
        Ok(JsonArray::from_items(points.iter().filter(wanted).map(|p| p.json.clone()).collect()))
    }

    /// Cached points from `first_end` on, and the last bucket end they cover.
    fn cached(&self, shape: &Shape, generation: u64, first_end: i64, end: i64) -> Option<(Vec<Cached>, i64)> {
        let mut entries = self.entries.lock().ok()?;
        let e = entries.iter_mut().find(|e| &e.shape == shape && e.generation == generation)?;
        if e.from > first_end || e.to < first_end {
            return None;
        }
        e.used = self.clock.fetch_add(1, Ordering::Relaxed);
        // Up to the last whole bucket of this window; the bucket holding `end` is read fresh.
        let covered = e.to.min(floor_to(end, shape.step_ms));
        Some((copied(&e.points, |t| t >= first_end && t <= covered), covered))
    }

    /// Remembers the sealed part of a result (buckets `[first_end, sealed]`).
    fn keep(&self, shape: Shape, generation: u64, first_end: i64, sealed: i64, points: &[Cached]) {
        if sealed < first_end || self.generation.load(Ordering::SeqCst) != generation {
            return; // nothing sealed, or a write raced this query
        }
        let Ok(mut entries) = self.entries.lock() else { return };
        entries.retain(|e| e.shape != shape);
        if entries.len() >= MAX_SHAPES
            && let Some(oldest) = entries.iter().enumerate().min_by_key(|(_, e)| e.used).map(|(i, _)| i)
        {
            entries.swap_remove(oldest);
        }
        entries.push(Entry {
            shape,
            generation,
            from: first_end,
            to: sealed,
            points: copied(points, |t| t <= sealed),
            used: self.clock.fetch_add(1, Ordering::Relaxed),
        });
    }
}

/// Another connection for a read of the given number of buckets, to read a part of it on
/// ([`read_fresh`] asks once per part after the first); `None` reads it in fewer parts, or whole.
/// `Store::points_json` gives one for a read of at least [`SPLIT_BUCKETS`] and only if the pool
/// has one idle (never a wait for it).
pub type PartConn<'a> =
    &'a (dyn Fn(i64) -> Option<r2d2::PooledConnection<r2d2_sqlite::SqliteConnectionManager>> + Sync);

/// Reads of at least this many buckets are split into parts read side by side ([`read_fresh`]):
/// a dashboard's repeated read (the newest bucket or two after the cached ones) is not worth a
/// thread and another seed.
pub(crate) const SPLIT_BUCKETS: i64 = 256;

/// The points of `r` (what the cache lacks), each serialized. A long read is split at the
/// edges of its chunks' windows ([`part_edges`]) into up to [`PARTS`] parts of time, read side
/// by side, each on a connection of its own, and through a mapping of the file ([`Mapped`])
/// if it covers a few targets: the first request of a chart (an hour of 5 s points, a week of
/// 10 min ones) decodes and summarises all its rows, then builds and serializes its points,
/// tens of milliseconds of one core's work and of page reads one after the other, on a machine
/// with a core and a disk queue to spare (BENCHMARKS.md, "First request, fourteenth stop" and
/// "sixteenth stop").
///
/// The parts give the points of the read unsplit, byte for byte: each part's running totals
/// are seeded as of its start, as every read of the cache's tail is, and a part's newest bucket
/// is covered whole ([`Reach::PastEnd`]) when a newer part found rows, as in the read unsplit;
/// the newest part with rows is read as the newest part of a read ([`Reach::Data`]), again if
/// its thread had read it otherwise. A part gets a connection only if one is idle (`more`),
/// and is read here if no thread can be started; without any, the read is whole.
fn read_fresh(
    conn: &Connection,
    more: PartConn<'_>,
    r: &RangeRead,
    held: &HeldRows,
) -> Result<Vec<Cached>, StoreError> {
    let (after, step) = (r.q.read_after_ms(), r.q.step_ms.max(1));
    let buckets = (r.q.end_ms - after) / step;
    let map = worth_mapping(conn, r, buckets)?;
    let _mapped = map.then(|| Mapped::new(conn));
    let helpers: Vec<_> = (1..PARTS.min(buckets)).map_while(|_| more(buckets)).collect();
    if helpers.is_empty() {
        return read_serialized(conn, r, held, r.raw && buckets >= SERIALIZE_APART_BUCKETS, Reach::Data);
    }
    let edges = part_edges(r, helpers.len() as i64 + 1);
    let parts: Vec<RangeRead> = edges
        .windows(2)
        .map(|w| {
            let mut part = r.clone();
            (part.q.start_ms, part.q.end_ms) = (w[0], w[1]);
            part
        })
        .collect();
    let Some((newest, older)) = parts.split_last() else { return Ok(Vec::new()) };
    let (older_reads, newest_read) = std::thread::scope(|s| {
        let threads: Vec<_> = older
            .iter()
            .zip(helpers)
            .map(|(part, helper)| {
                let read = move || {
                    let _mapped = map.then(|| Mapped::new(&helper));
                    read_serialized(&helper, part, held, false, Reach::PastEnd)
                };
                std::thread::Builder::new().name("zai-read".into()).spawn_scoped(s, read)
            })
            .collect();
        let newest_read = read_serialized(conn, newest, held, false, Reach::Data);
        let joined: Vec<_> =
            threads.into_iter().map(|t| t.map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))).collect();
        (joined, newest_read)
    });
    // From the newest part back: a part is read right as its thread read it only if a newer
    // part found rows.
    let mut reads = vec![newest_read?];
    let mut newer_rows = !reads[0].is_empty();
    for (part, read) in older.iter().zip(older_reads).rev() {
        let read = match read {
            Ok(read) if newer_rows => read?,
            _ => read_serialized(conn, part, held, false, if newer_rows { Reach::PastEnd } else { Reach::Data })?,
        };
        newer_rows |= !read.is_empty();
        reads.push(read);
    }
    let mut points = Vec::with_capacity(reads.iter().map(Vec::len).sum());
    for read in reads.into_iter().rev() {
        points.extend(read);
    }
    Ok(points)
}

/// While held, SQLite reads pages of the database file through a memory mapping of it (up to
/// [`MAPPED_BYTES`]) on `conn`; dropped, the mapping goes. For a long read that is not cached
/// (a chart's first request) of a few targets ([`worth_mapping`]): a page read through a
/// mapping that is not in memory brings its neighbours in with it in one disk request (the
/// kernel reads around the fault), where each `pread` of SQLite's own reads asked the disk for
/// 4 KiB, pages of one chunk being neither adjacent in order nor read in the order the
/// kernel's read-ahead looks for. A cold hour of 6 pods took about 180 disk requests that way
/// and about 75 mapped, with its parts at the chunks' edges (BENCHMARKS.md, "First request,
/// sixteenth stop").
///
/// Only for the read: mapped pages count in the process's resident memory as long as they
/// stay mapped, and a dashboard's repeated reads are short. The price of a mapping is that a
/// disk error while reading it cannot be returned as an error: the kernel stops the process
/// (SIGBUS), as it would any engine that reads through mappings (Prometheus reads its blocks
/// that way); SQLite writes through its own calls either way. If the setting fails, the read
/// goes on with SQLite's own reads.
struct Mapped<'c> {
    conn: Option<&'c Connection>,
}

/// The most of the database file a read maps: SQLite maps the file from its start up to this,
/// and reads pages beyond it with its own calls.
const MAPPED_BYTES: i64 = 1 << 30;

impl<'c> Mapped<'c> {
    fn new(conn: &'c Connection) -> Self {
        let set = conn.execute_batch(&format!("PRAGMA mmap_size = {MAPPED_BYTES}"));
        Self { conn: set.is_ok().then_some(conn) }
    }
}

impl Drop for Mapped<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn
            && let Err(e) = conn.execute_batch("PRAGMA mmap_size = 0")
        {
            tracing::warn!(error = %e, "a read's mapping of the database file could not be released");
        }
    }
}

/// Whether a read of `buckets` buckets goes through a mapping ([`Mapped`]): a long one (a
/// chart's first request) of at most [`MAPPED_TARGETS`] targets. The pages a mapped read
/// touches are resident while it runs, with the kernel's neighbours around each fault: a cold
/// hour of 6 pods added about 3 MiB, a week about 6 (BENCHMARKS.md, "First request, sixteenth
/// stop"), which a fleet of hundreds of pods would multiply.
fn worth_mapping(conn: &Connection, r: &RangeRead, buckets: i64) -> Result<bool, StoreError> {
    if buckets < SPLIT_BUCKETS {
        return Ok(false);
    }
    Ok(r.q.target_url.is_some() || query::target_ids(conn)?.len() <= MAPPED_TARGETS)
}

/// The most targets a mapped read covers ([`worth_mapping`]): a production and a canary
/// deployment of a few pods each.
const MAPPED_TARGETS: usize = 16;

/// Where the `n` parts of a long read begin and end: even shares of its buckets, each inner
/// edge moved to the nearest edge of the windows the read's chunks were sealed by
/// ([`downsample::chunk_window_ms`]), when those are whole buckets. Split anywhere else, a
/// chunk across the edge is decoded by both parts, and by the newer part's seed as well: 15
/// minute parts of an hour decoded about twice the raw chunks the hour holds. Edges that meet
/// are merged, so there may be fewer parts than `n`.
fn part_edges(r: &RangeRead, n: i64) -> Vec<i64> {
    let (after, end, step) = (r.q.read_after_ms(), r.q.end_ms, r.q.step_ms.max(1));
    let table = if r.raw {
        query::Table::Raw
    } else if step % (r.rollup_ms * COARSE_FACTOR) == 0 {
        query::Table::Coarse
    } else {
        query::Table::Rollup
    };
    let window = downsample::chunk_window_ms(table, r.rollup_ms);
    let buckets = (end - after) / step;
    let mut edges = vec![after];
    for k in 1..n {
        let even = after + k * buckets / n * step;
        let edge = if window > 0 && window % step == 0 { nearest_multiple(even, window) } else { even };
        if edge > edges[edges.len() - 1] && edge < end {
            edges.push(edge);
        }
    }
    edges.push(end);
    edges
}

/// The multiple of `unit` nearest to `ms` (halves round up).
fn nearest_multiple(ms: i64, unit: i64) -> i64 {
    ms.saturating_add(unit / 2).div_euclid(unit) * unit
}

/// Parts a long read is split into at most ([`read_fresh`]): a first request's time is half
/// page reads that wait for the disk, so more parts than cores still shorten it.
const PARTS: i64 = 4;

/// The points of `r`, each serialized. `apart`: on a thread of its own, while the rows are read
/// (a raw window hands its points over bucket by bucket), so the two overlap on a machine with
/// a core to spare: serializing an hour's 1,440 points (2 MB) took about 2 ms, a fifth of a
/// first request's time (BENCHMARKS.md, "First request, seventh stop"). Inline if no thread
/// can be started.
fn read_serialized(
    conn: &Connection,
    r: &RangeRead,
    held: &HeldRows,
    apart: bool,
    reach: Reach,
) -> Result<Vec<Cached>, StoreError> {
    let read =
        |sink: &mut range::PointSink<'_>| range::points_reaching(conn, r, held, (&mut |_, _, _| {}, true, reach), sink);
    let read = &read;
    if apart {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Point>>(SERIALIZE_QUEUE);
        let done = std::thread::scope(|s| {
            let writer = std::thread::Builder::new().name("zai-json".into()).spawn_scoped(s, move || {
                let mut w = PointWriter::default();
                for batch in rx {
                    batch.iter().try_for_each(|p| w.push(p))?;
                }
                Ok::<_, StoreError>(w.finish())
            });
            let Ok(writer) = writer else { return None };
            let mut batch = Vec::with_capacity(SERIALIZE_BATCH);
            let mut send = |p| {
                batch.push(p);
                if batch.len() == SERIALIZE_BATCH {
                    // A writer gone (it failed) reports why when joined.
                    let _ = tx.send(std::mem::replace(&mut batch, Vec::with_capacity(SERIALIZE_BATCH)));
                }
            };
            let read = read(&mut send);
            let _ = tx.send(batch);
            drop(tx);
            let written = writer.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            Some(read.and(written))
        });
        if let Some(done) = done {
            return done;
        }
    }
    // Each point serialized as it comes, not collected first: an hour's 1,440 points in one
    // `Vec<Point>` are over 128 KiB, a fresh mapping faulted in on every read (`heap`).
    let mut w = PointWriter::default();
    let mut written = Ok(());
    read(&mut |p| {
        if written.is_ok() {
            written = w.push(&p);
        }
    })?;
    written.map(|()| w.finish())
}

/// Points a batch sent to the serializing thread holds: few enough that it starts early, enough
/// that it is woken a few dozen times an hour's read rather than per point.
const SERIALIZE_BATCH: usize = 64;
/// Batches waiting for the serializing thread at most (the reader waits beyond).
const SERIALIZE_QUEUE: usize = 16;
/// Raw reads of at least this many buckets that are not split into parts (no connection to
/// spare, [`read_fresh`]) serialize apart ([`read_serialized`]): a dashboard's
/// repeated read (the newest bucket or two after the cached ones) is not worth a thread, and a
/// read of rolled rows builds its points only once every row is read, so nothing would overlap.
const SERIALIZE_APART_BUCKETS: i64 = 256;

/// Serializes points one after the other into buffers shared by many of them
/// ([`PieceWriter`]): one allocation each, each under the one arena's lock (`heap`), was 1,440
/// for an hour's points; and one `Arc<str>` of the variant's name per point, where a window has
/// a few variants.
#[derive(Default)]
struct PointWriter {
    pieces: PieceWriter<(i64, std::sync::Arc<str>)>,
    variants: Vec<std::sync::Arc<str>>,
}

impl PointWriter {
    fn push(&mut self, p: &Point) -> Result<(), StoreError> {
        let variant = match self.variants.iter().find(|v| ***v == *p.variant) {
            Some(v) => v.clone(),
            None => {
                let v: std::sync::Arc<str> = p.variant.as_str().into();
                self.variants.push(v.clone());
                v
            }
        };
        self.pieces.push_with((p.timestamp, variant), |out| {
            p.write_json(out);
            Ok(())
        })?;
        Ok(())
    }

    fn finish(self) -> Vec<Cached> {
        self.pieces
            .finish()
            .into_iter()
            .map(|((timestamp, variant), json)| Cached { timestamp, variant, json })
            .collect()
    }
}

/// The points whose timestamps `keep`, in a vector of exactly their number: collected by
/// doubling, a day's 2,880 points (40 bytes each) took 160 KiB, a fresh mapping on every request
/// above the process's 128 KiB mmap threshold (`heap::limit_arenas`), rather than 115 KiB.
fn copied(points: &[Cached], keep: impl Fn(i64) -> bool) -> Vec<Cached> {
    let mut out = Vec::with_capacity(points.iter().filter(|p| keep(p.timestamp)).count());
    out.extend(points.iter().filter(|p| keep(p.timestamp)).cloned());
    out
}

/// `ms` rounded down to a multiple of `step`; `i64::MIN` (nothing sealed yet) stays itself.
fn floor_to(ms: i64, step: i64) -> i64 {
    ms.checked_sub(ms.rem_euclid(step)).unwrap_or(i64::MIN)
}

/// Serializes points as `/api/metrics` does (for comparing with [`PointCache::points_json`]).
pub fn to_json(points: &[Point]) -> String {
    serde_json::to_string(points).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::read::PointQuery;

    const MIN: i64 = 60_000;
    /// A whole day, so whole windows of every table start on it.
    const T0: i64 = 1_799_971_200_000;

    fn read(raw: bool, step_ms: i64, (start_ms, end_ms): (i64, i64)) -> RangeRead {
        let q = PointQuery { start_ms, end_ms, step_ms, variant: None, target_url: None };
        RangeRead { q, raw, point_ms: 5_000, rollup_ms: MIN }
    }

    /// Inner edges fall on the windows chunks are sealed by (raw 10 minutes, 1 minute rows an
    /// hour, 10 minute rows a day), the outer ones on the read's own; edges that would meet are
    /// merged, and a step the window is not a whole number of is split evenly.
    #[test]
    fn a_long_read_is_split_at_the_edges_of_its_chunks() {
        assert_eq!(
            part_edges(&read(true, 5_000, (T0 + 3 * MIN, T0 + 63 * MIN)), 4),
            [T0 + 3 * MIN, T0 + 20 * MIN, T0 + 30 * MIN, T0 + 50 * MIN, T0 + 63 * MIN],
            "an hour of raw points"
        );
        let day = 24 * 60 * MIN;
        let edges = part_edges(&read(false, MIN, (T0 + 90 * MIN, T0 + 90 * MIN + day)), 4);
        assert_eq!(edges.len(), 5, "a day of minutes: {edges:?}");
        assert!(edges[1..4].iter().all(|e| e % (60 * MIN) == 0), "on hours: {edges:?}");
        let week = part_edges(&read(false, 10 * MIN, (T0 + 7 * 60 * MIN, T0 + 7 * 60 * MIN + 7 * day)), 4);
        assert!(week[1..week.len() - 1].iter().all(|e| e % day == 0), "on days: {week:?}");
        assert_eq!(
            part_edges(&read(true, 5_000, (T0 + 3 * MIN, T0 + 23 * MIN)), 4),
            [T0 + 3 * MIN, T0 + 10 * MIN, T0 + 20 * MIN, T0 + 23 * MIN],
            "twenty minutes: three parts"
        );
        assert_eq!(
            part_edges(&read(true, 5_000, (T0 + 11 * MIN, T0 + 19 * MIN)), 4),
            [T0 + 11 * MIN, T0 + 19 * MIN],
            "inside one window: one part"
        );
        let odd = read(true, 7 * MIN, (T0, T0 + 4 * 70 * MIN));
        let (after, end) = (odd.q.read_after_ms(), odd.q.end_ms);
        let even = |k: i64| after + k * ((end - after) / (7 * MIN)) / 4 * 7 * MIN;
        assert_eq!(
            part_edges(&odd, 4),
            [after, even(1), even(2), even(3), end],
            "a step windows are not whole numbers of"
        );
    }

    /// Long reads of at most [`MAPPED_TARGETS`] targets, or of one, are mapped; short ones and
    /// reads of more targets are not.
    #[test]
    fn only_long_reads_of_a_few_targets_are_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("w.db")).unwrap();
        let conn = store.conn().unwrap();
        let register = |from: usize, to: usize| {
            let pairs: Vec<_> = (from..to).map(|i| (format!("http://pod-{i}/metrics"), "production".into())).collect();
            query::register_targets(&conn, &pairs, T0).unwrap();
        };
        let hour = read(true, 5_000, (T0, T0 + 60 * MIN));
        let mut one = hour.clone();
        one.q.target_url = Some("http://pod-0/metrics".into());
        register(0, MAPPED_TARGETS);
        assert!(worth_mapping(&conn, &hour, SPLIT_BUCKETS).unwrap(), "a long read of a few targets");
        assert!(!worth_mapping(&conn, &hour, SPLIT_BUCKETS - 1).unwrap(), "a short read");
        register(MAPPED_TARGETS, MAPPED_TARGETS + 1);
        assert!(!worth_mapping(&conn, &hour, SPLIT_BUCKETS).unwrap(), "one target more");
        assert!(worth_mapping(&conn, &one, SPLIT_BUCKETS).unwrap(), "one target of many");
    }

    /// Whether the process maps `path` now (`/proc/self/maps`).
    fn mapped(path: &std::path::Path) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let name = path.to_str().unwrap();
        maps.lines().any(|l| l.ends_with(name))
    }

    /// A read under [`Mapped`] reads the database file through a mapping, and the mapping is
    /// gone once it is dropped.
    #[test]
    fn a_mapped_read_maps_the_file_only_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x BLOB); INSERT INTO t VALUES (zeroblob(20000));",
        )
        .unwrap();
        let count = |c: &Connection| c.query_row("SELECT length(x) FROM t", [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(count(&conn), 20_000);
        assert!(!mapped(&path), "not mapped by SQLite's own reads");
        {
            let _mapped = Mapped::new(&conn);
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
            assert_eq!(count(&conn), 20_000);
            assert!(mapped(&path), "mapped while held");
        }
        assert!(!mapped(&path), "released when dropped");
        assert_eq!(count(&conn), 20_000);
        assert!(!mapped(&path), "later reads are SQLite's own again");
    }
}
