//! Rows at rest: open rows in each points table, sealed chunks beside it.
//!
//! Every points table (`metrics_5s`, `metrics_1m`, `metrics_10m`) has a chunk table
//! (`<table>_chunks`). Rows are written to the table itself, one SQLite row per target and
//! bucket, so a kill loses at most what was being written. Once a window of a table is complete
//! (and rolled into the next table, if any), the downsampler seals it ([`seal`]): each target's rows of
//! the window become one compressed chunk ([`super::chunk`]), in the same transaction that
//! deletes them from the table. A row is therefore in exactly one place, and every reader goes
//! through [`scan`] (or the lookups built on it), which merges both in time order.
//!
//! The windows: raw rows 10 minutes (the coarse tier's bucket, once rolled into minutes),
//! 1 minute rows an hour (60 rows, once rolled into 10 minutes), 10 minute rows a UTC day (144
//! rows, once complete): wider chunks compress better (each starts from a full payload), and
//! these still bound what one late row reopens and what retention keeps beyond its setting.
//! Raw rows are keyed by time, so a raw window is written and read with every target's chunk
//! side by side (see [`seal_raw`]). Rolled rows are read by target, and sealed a target at a
//! time.
//!
//! A row written late into a sealed window (two scrapes in one bucket, a batch retried after a
//! long outage, a minute rolled again because of one) first reopens its target's chunk
//! ([`unseal`]: its rows go back to the table), so the merge or replacement meets the existing
//! row as it does for open rows; the window is sealed again on the next run.
//!
//! Retention deletes sealed rows a whole chunk at a time: up to one window more than the
//! table's retention is kept, never less.
//!
//! Each chunk records its window (`start_ts`, `end_ts`), so readers need not know the width it
//! was sealed with; windows of a database sealed with another width may overlap, which the
//! merge allows. No window is wider than the table's [`Layout::max_chunk_ms`], which bounds
//! every lookup by time.
//!
//! Open raw rows rest in two generation tables, `metrics_5s_0` and `metrics_5s_1`
//! ([`super::table::raw_table`]: 10-minute windows alternate between them; the view
//! `metrics_5s` reads both). Sealing a window whose table holds nothing else (the steady
//! state: the older window of that table was sealed ten minutes earlier) empties the table
//! with a `DELETE` without a condition, which frees its pages without writing them; SQLite in
//! WAL mode writes every page a `DELETE` of a key range empties, which was the largest share
//! of the downsampler's writes. A table holding other rows too (a catch-up of many windows,
//! rows reopened by a late row, a seal width other than 10 minutes) has the window's range
//! deleted as before. Statements on open rows run on each of a table's open tables
//! ([`Layout`]) and merge what they give in key order.
//!
//! Raw rows are keyed by time then target in one integer (`ts_target`, the rowid: a tick's rows
//! are appended together; `ts` and `target_id` are computed from it, so statements filter and
//! order on the key itself), open 1 min rows by `(ts, target_id)` with an index by target (what
//! their readers use), 10 min rows and the rolled chunks by target (`(target_id, ts)`: their
//! readers read target by target); [`Layout`] says which, and every statement here is written
//! for the key it runs on.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::chunk::{self, ChunkRow, ChunkRows, ChunkWriter, Scratch, Step};
use super::table::{RAW_TABLES, Table, raw_key, raw_key_through, raw_table};
use crate::clock::bucket_end;

/// Windows sealed per table per downsampler run at most, so a first run on a database full of
/// open rows (one written before chunks existed) catches up over a few runs instead of one
/// long one.
const WINDOWS_PER_RUN: usize = 12;

/// Where a table's rows rest and how they are keyed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// The tables of open rows: one for rolled rows, the two generations for raw rows (a row's
    /// time decides which, [`raw_table`]); every statement on open rows runs on each and
    /// merges what they give.
    open: &'static [&'static str],
    /// Its chunk table.
    chunks: &'static str,
    /// `meta` key of the end of the newest window ever sealed: rows after it were never
    /// sealed, so writing them needs no look for a chunk.
    sealed_key: &'static str,
    /// The widest window a chunk may have (the sealer clamps to it): lookups by time start
    /// this far before the time they want.
    pub(crate) max_chunk_ms: i64,
    /// Rolled rows: read by target first (through the key or an index), and carrying a presence.
    rolled: bool,
}

const HOUR_MS: i64 = 3_600_000;

impl Layout {
    pub(crate) fn of(table: Table) -> Self {
        match table {
            Table::Raw => Self {
                open: &RAW_TABLES,
                chunks: "metrics_5s_chunks",
                sealed_key: "raw_sealed_through_ms",
                max_chunk_ms: HOUR_MS,
                rolled: false,
            },
            Table::Rollup => Self {
                open: &["metrics_1m"],
                chunks: "metrics_1m_chunks",
                sealed_key: "rollup_sealed_through_ms",
                max_chunk_ms: 24 * HOUR_MS,
                rolled: true,
            },
            Table::Coarse => Self {
                open: &["metrics_10m"],
                chunks: "metrics_10m_chunks",
                sealed_key: "coarse_sealed_through_ms",
                max_chunk_ms: 7 * 24 * HOUR_MS,
                rolled: true,
            },
        }
    }

    /// The presence column (a raw row has none: 0).
    fn presence(self) -> &'static str {
        if self.rolled { "present_ms" } else { "0" }
    }

    /// Rows with `after < ts`, the parameter `after` bound to [`Layout::bound`] of the time: a
    /// range of the raw table's key.
    fn after(self, after: &str) -> String {
        if self.rolled { format!("ts > {after}") } else { format!("ts_target > {after}") }
    }

    /// Rows with `ts <= until`, the parameter `until` bound to [`Layout::bound`] of the time.
    fn through(self, until: &str) -> String {
        if self.rolled { format!("ts <= {until}") } else { format!("ts_target <= {until}") }
    }

    /// What a time filter of [`Layout::after`] or [`Layout::through`] is bound to: the time, or
    /// for raw rows the greatest key at that time.
    fn bound(self, ts: i64) -> i64 {
        if self.rolled { ts } else { raw_key_through(ts) }
    }

    /// Time order (then target order), as the key gives it.
    fn order(self) -> &'static str {
        if self.rolled { "ts, target_id" } else { "ts_target" }
    }

    /// The time column's oldest (`agg` MIN) or newest (MAX) value over the open tables, as a
    /// scalar subquery each table's key answers by looking at one end of it (a `MIN` of the view
    /// over both raw generations would read every row).
    fn edge(self, agg: &str) -> String {
        let column = if self.rolled { "ts" } else { "ts_target" };
        let ends: Vec<String> = self.open.iter().map(|t| format!("SELECT {agg}({column}) AS e FROM {t}")).collect();
        let edge = format!("(SELECT {agg}(e) FROM ({}))", ends.join(" UNION ALL "));
        if self.rolled { edge } else { format!("({edge} >> {})", super::table::RAW_TARGET_BITS) }
    }

    /// Filter on the target (parameter `?n`, NULL for every target) that the table's key can
    /// use: rolled tables are read by target first, so they take one target at a time (every
    /// target's rows of a rolled table are read by a full scan, which nothing does).
    fn target_filter(self, n: u8, only: Option<i64>) -> String {
        match (self.rolled, only) {
            (true, Some(_)) => format!("target_id = ?{n}"),
            (true, None) => format!("?{n} IS NULL"),
            (false, _) => format!("(?{n} IS NULL OR target_id = ?{n})"),
        }
    }

    /// Rows of every live target in a time range (`?1 < ts <= ?2`): one range for raw rows,
    /// one range per target for rolled ones (rows of a target no longer registered stay open,
    /// as retention leaves them).
    fn window_filter(self) -> String {
        let range = format!("{} AND {}", self.after("?1"), self.through("?2"));
        if self.rolled { format!("target_id IN (SELECT id FROM targets) AND {range}") } else { range }
    }
}

/// A stored row as [`scan`] hands it over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredRow<'a> {
    /// Bucket end, ms.
    pub ts: i64,
    /// Target id.
    pub target_id: i64,
    /// Variant id.
    pub variant_id: i64,
    /// Time the row's increases cover, ms.
    pub elapsed_ms: i64,
    /// Stored presence of a rolled row (0 in raw rows, and in rolled rows written before it
    /// was stored; see [`super::query::presence`]).
    pub present_ms: i64,
    /// Encoded payload ([`super::codec`]).
    pub data: &'a [u8],
}

/// Start of the window of `width_ms` holding a row of bucket end `ts`: rows of `(start, start + width]`.
fn window_start(ts: i64, width_ms: i64) -> i64 {
    bucket_end(ts, width_ms).saturating_sub(width_ms)
}

/// Hands every row of `table` with `after < ts <= until` (every target's, or only `only`'s)
/// to `each` in `(ts, target_id)` order, open and sealed alike, until `each` returns false.
///
/// Sealed windows are decoded one at a time, every target's chunk of the window side by side,
/// each holding a piece of its blob and a few payloads ([`Window`]; a chunk read out gives its
/// slot to the next window's): memory grows with the targets, not with the window's length.
/// Both tables are read in one snapshot (a read transaction unless the caller's own is open),
/// so a window sealed meanwhile is seen once, in one table or the other.
pub(crate) fn scan(
    conn: &Connection,
    table: Table,
    (after, until): (i64, i64),
    only: Option<i64>,
    each: &mut dyn FnMut(StoredRow<'_>) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    if after >= until {
        return Ok(());
    }
    let l = Layout::of(table);
    let _snapshot = if conn.is_autocommit() { Some(conn.unchecked_transaction()?) } else { None };
    let mut open_stmts = l
        .open
        .iter()
        .map(|t| {
            conn.prepare_cached(&format!(
                "SELECT ts, target_id, variant_id, elapsed_ms, data, {} FROM {t}
                 WHERE {} AND {} AND {} ORDER BY {}",
                l.presence(),
                l.target_filter(3, only),
                l.after("?1"),
                l.through("?2"),
                l.order()
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut open = OpenRows::new(&mut open_stmts, params![l.bound(after), l.bound(until), only])?;
    // Chunks without a row in the range (their first and last rows are in the index) are not
    // read: a lookup near a window's edge decodes only the chunk that holds its row.
    let mut chunk_stmt = conn.prepare_cached(&format!(
        "SELECT start_ts, target_id, rowid FROM {}
         WHERE {} AND start_ts > ?1 AND start_ts < ?2 AND end_ts > ?3 AND last_ts > ?3 AND first_ts <= ?2
         ORDER BY start_ts, target_id",
        l.chunks,
        l.target_filter(4, only)
    ))?;
    let mut chunk_rows = chunk_stmt.query(params![after.saturating_sub(l.max_chunk_ms), until, after, only])?;
    let mut pending = next_chunk(&mut chunk_rows)?;
    let mut window = Window::new(conn, l);
    loop {
        let head = window.head();
        let next = match (head, open.head().map(OpenRow::key)) {
            (Some(c), Some(o)) => Some(c.min(o)),
            (c, o) => c.or(o),
        };
        if let Some((start, ..)) = pending.as_ref()
            && next.is_none_or(|(ts, _)| ts > *start)
        {
            window.load(&mut pending, &mut chunk_rows, (after, until))?;
            continue;
        }
        let Some(key) = next else { return Ok(()) };
        if let Some(o) = open.head().filter(|o| o.key() == key) {
            if head == Some(key) {
                window.skip()?; // a row never sits in both; if it did, the open row is the newer
            }
            if !each(o.row())? {
                return Ok(());
            }
            open.advance()?;
        } else if !window.emit(each, until)? {
            return Ok(());
        }
    }
}

/// A row of an open table, copied out of the cursor (reusing the previous row's buffer).
struct OpenRow {
    ts: i64,
    target_id: i64,
    variant_id: i64,
    elapsed_ms: i64,
    present_ms: i64,
    data: Vec<u8>,
}

impl OpenRow {
    fn next(rows: &mut rusqlite::Rows<'_>, reuse: Option<OpenRow>) -> Result<Option<Self>, StoreError> {
        let Some(r) = rows.next()? else { return Ok(None) };
        let mut data = reuse.map(|o| o.data).unwrap_or_default();
        data.clear();
        data.extend_from_slice(r.get_ref(4)?.as_blob().map_err(rusqlite::Error::from)?);
        Ok(Some(Self {
            ts: r.get(0)?,
            target_id: r.get(1)?,
            variant_id: r.get(2)?,
            elapsed_ms: r.get(3)?,
            present_ms: r.get(5)?,
            data,
        }))
    }

    fn key(&self) -> (i64, i64) {
        (self.ts, self.target_id)
    }

    fn row(&self) -> StoredRow<'_> {
        StoredRow {
            ts: self.ts,
            target_id: self.target_id,
            variant_id: self.variant_id,
            elapsed_ms: self.elapsed_ms,
            present_ms: self.present_ms,
            data: &self.data,
        }
    }
}

/// The open rows of a table's open tables ([`Layout::open`]), each read in key order, merged
/// into one key order: the raw generations are two ordered ranges of their rowids, merged here
/// rather than through the view, which would sort them.
struct OpenRows<'s> {
    cursors: Vec<(rusqlite::Rows<'s>, Option<OpenRow>)>,
    /// The cursor holding the smallest key, if any row is left.
    least: Option<usize>,
}

impl<'s> OpenRows<'s> {
    fn new(
        stmts: &'s mut [rusqlite::CachedStatement<'_>],
        params: impl rusqlite::Params + Copy,
    ) -> Result<Self, StoreError> {
        let mut cursors = Vec::with_capacity(stmts.len());
        for stmt in stmts {
            let mut rows = stmt.query(params)?;
            let first = OpenRow::next(&mut rows, None)?;
            cursors.push((rows, first));
        }
        let mut me = Self { cursors, least: None };
        me.find_least();
        Ok(me)
    }

    fn find_least(&mut self) {
        self.least = self
            .cursors
            .iter()
            .enumerate()
            .filter_map(|(i, (_, head))| head.as_ref().map(|h| (h.key(), i)))
            .min()
            .map(|(_, i)| i);
    }

    /// The row with the smallest key.
    fn head(&self) -> Option<&OpenRow> {
        self.least.and_then(|i| self.cursors[i].1.as_ref())
    }

    /// Drops the head row.
    fn advance(&mut self) -> Result<(), StoreError> {
        if let Some(i) = self.least {
            let (rows, head) = &mut self.cursors[i];
            *head = OpenRow::next(rows, head.take())?;
            self.find_least();
        }
        Ok(())
    }
}

/// A chunk as selected: window start, target id, row id (its blob is opened by [`Window::load`]).
type PendingChunk = (i64, i64, i64);

fn next_chunk(rows: &mut rusqlite::Rows<'_>) -> Result<Option<PendingChunk>, StoreError> {
    let Some(r) = rows.next()? else { return Ok(None) };
    Ok(Some((r.get(0)?, r.get(1)?, r.get(2)?)))
}

/// One target's chunk being read: its rows, and the blob they are read from piece by piece.
struct ChunkReader<'c> {
    target_id: i64,
    rows: ChunkRows,
    blob: rusqlite::blob::Blob<'c>,
}

impl ChunkReader<'_> {
    /// Decodes the next row, reading more of the blob as it asks; false after the last.
    fn advance(&mut self) -> Result<bool, StoreError> {
        loop {
            match self.rows.step()? {
                Step::Row => return Ok(true),
                Step::End => return Ok(false),
                Step::More => self.rows.fill(|buf, at| self.blob.read_at_exact(buf, at))?,
            }
        }
    }
}

/// The chunks being read, merged by `(ts, target_id)`: one window's at a time, unless windows
/// overlap (sealed with different widths).
///
/// Each chunk is read from its blob a piece at a time ([`chunk::PIECE_BYTES`], SQLite's
/// incremental blob reads) rather than loaded whole: a window of 500 targets held every
/// target's 10-minute chunk at once, about 21 KB each, 10 MiB for every read of a sealed window
/// (a dashboard's refresh, the alert engine's windows), where pieces hold 1-2 MiB
/// (BENCHMARKS.md, "Memory and first request, fifteenth stop").
struct Window<'c> {
    conn: &'c Connection,
    /// The chunk table, as SQLite's blob reads name it.
    table: std::ffi::CString,
    readers: Vec<ChunkReader<'c>>,
    /// Slots of `readers` read out, for the next window's chunks.
    free: Vec<usize>,
    heap: BinaryHeap<Reverse<(i64, i64, usize)>>,
    /// Bytes of the largest window's chunks, reported to the allocator policy when the scan
    /// ends: no longer held at once, but still what the read's decoding allocated and freed
    /// grows with, so the trim after large reads comes as it did when they were.
    largest: usize,
    /// Bytes the readers held at once at most (a test checks them).
    #[cfg(test)]
    held: usize,
}

impl Drop for Window<'_> {
    fn drop(&mut self) {
        crate::heap::note_transient(self.largest);
        #[cfg(test)]
        tests::LAST_WINDOW_HELD.set(self.held);
    }
}

impl<'c> Window<'c> {
    fn new(conn: &'c Connection, l: Layout) -> Self {
        Self {
            conn,
            table: std::ffi::CString::new(l.chunks).unwrap_or_default(),
            readers: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            largest: 0,
            #[cfg(test)]
            held: 0,
        }
    }

    fn head(&self) -> Option<(i64, i64)> {
        self.heap.peek().map(|Reverse((ts, target, _))| (*ts, *target))
    }

    /// Opens every pending chunk of the next window, positioned at their first row after
    /// `after`.
    fn load(
        &mut self,
        pending: &mut Option<PendingChunk>,
        rows: &mut rusqlite::Rows<'_>,
        (after, until): (i64, i64),
    ) -> Result<(), StoreError> {
        let Some(start) = pending.as_ref().map(|p| p.0) else { return Ok(()) };
        let mut loaded = 0;
        while let Some((_, target_id, rowid)) = pending.take_if(|p| p.0 == start) {
            let blob = self.conn.blob_open(rusqlite::MAIN_DB, self.table.as_c_str(), c"data", rowid, true)?;
            loaded += blob.len();
            let mut first = vec![0; chunk::PIECE_BYTES.min(blob.len())];
            blob.read_at_exact(&mut first, 0)?;
            let mut reader = ChunkReader { target_id, rows: ChunkRows::begin(start, first, blob.len())?, blob };
            while reader.advance()? {
                let ts = reader.rows.current().ts;
                if ts > after {
                    if ts <= until {
                        let slot = match self.free.pop() {
                            Some(i) => {
                                self.readers[i] = reader;
                                i
                            }
                            None => {
                                self.readers.push(reader);
                                self.readers.len() - 1
                            }
                        };
                        self.heap.push(Reverse((ts, target_id, slot)));
                    }
                    break;
                }
            }
            *pending = next_chunk(rows)?;
        }
        self.largest = self.largest.max(loaded);
        #[cfg(test)]
        {
            self.held = self.held.max(self.readers.iter().map(|r| r.rows.held_bytes()).sum());
        }
        Ok(())
    }

    /// Hands the head row to `each`; false when `each` said to stop.
    fn emit(
        &mut self,
        each: &mut dyn FnMut(StoredRow<'_>) -> Result<bool, StoreError>,
        until: i64,
    ) -> Result<bool, StoreError> {
        let Some(Reverse((_, _, i))) = self.heap.pop() else { return Ok(true) };
        let reader = &mut self.readers[i];
        let r = reader.rows.current();
        let go_on = each(StoredRow {
            ts: r.ts,
            target_id: reader.target_id,
            variant_id: r.variant_id,
            elapsed_ms: r.elapsed_ms,
            present_ms: r.present_ms,
            data: r.data,
        })?;
        if reader.advance()? && reader.rows.current().ts <= until {
            self.heap.push(Reverse((reader.rows.current().ts, reader.target_id, i)));
        } else {
            self.free.push(i);
        }
        Ok(go_on)
    }

    /// Drops the head row.
    fn skip(&mut self) -> Result<(), StoreError> {
        self.emit(&mut |_| Ok(true), i64::MAX).map(|_| ())
    }
}

/// A row found by [`newest_through`] or [`oldest_after`], copied out.
#[derive(Debug, Clone)]
pub(crate) struct FoundRow {
    /// Bucket end, ms.
    pub ts: i64,
    /// Variant id.
    pub variant_id: i64,
    /// Encoded payload.
    pub data: Vec<u8>,
}

impl FoundRow {
    fn copy(&mut self, r: StoredRow<'_>) {
        (self.ts, self.variant_id) = (r.ts, r.variant_id);
        self.data.clear();
        self.data.extend_from_slice(r.data);
    }
}

/// A lookup of one target's row of a table near a time: [`newest_through`], [`oldest_after`].
pub(crate) type Lookup = fn(&Connection, Table, i64, i64) -> Result<Option<FoundRow>, StoreError>;

/// The target's newest row of `table` at or before `t0`, open or sealed.
///
/// The sealed candidate is the chunk with the latest start holding a row at or before `t0`:
/// it holds a row after its start, and every chunk that could hold a newer one starts less
/// than a window earlier, so a scan from that start finds it, decoding only those chunks.
pub(crate) fn newest_through(
    conn: &Connection,
    table: Table,
    target_id: i64,
    t0: i64,
) -> Result<Option<FoundRow>, StoreError> {
    let l = Layout::of(table);
    let mut open = None;
    for t in l.open {
        let ts = time_of(
            conn,
            &format!("SELECT ts FROM {t} WHERE {{}} {} ORDER BY {} DESC", l.through("?2"), l.order()),
            (target_id, l.bound(t0)),
        )?;
        open = open.max(ts);
    }
    let sealed = time_of(
        conn,
        &format!(
            "SELECT start_ts FROM {} WHERE {{}} start_ts < ?2 AND first_ts <= ?2 ORDER BY start_ts DESC",
            l.chunks
        ),
        (target_id, t0),
    )?;
    let after = match (open, sealed) {
        (None, None) => return Ok(None),
        (o, s) => o.map(|ts| ts - 1).max(s).unwrap_or(i64::MIN),
    };
    row_in(conn, table, target_id, (after, t0), true)
}

/// The target's oldest row of `table` after `t0`, open or sealed: the first chunk (by start)
/// holding a row after `t0` holds one by its end, so the scan stops there at the latest.
pub(crate) fn oldest_after(
    conn: &Connection,
    table: Table,
    target_id: i64,
    t0: i64,
) -> Result<Option<FoundRow>, StoreError> {
    let l = Layout::of(table);
    let mut open: Option<i64> = None;
    for t in l.open {
        let ts = time_of(
            conn,
            &format!("SELECT ts FROM {t} WHERE {{}} {} ORDER BY {}", l.after("?2"), l.order()),
            (target_id, l.bound(t0)),
        )?;
        open = match (open, ts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    // Chunks holding a row after t0 end after it, so they start less than a window before it.
    let sealed = time_of(
        conn,
        &format!(
            "SELECT end_ts FROM {} WHERE {{}} start_ts > ?2 - {} AND last_ts > ?2 ORDER BY start_ts",
            l.chunks, l.max_chunk_ms
        ),
        (target_id, t0),
    )?;
    let until = match (open, sealed) {
        (None, None) => return Ok(None),
        (a, b) => a.into_iter().chain(b).min().unwrap_or(t0),
    };
    row_in(conn, table, target_id, (t0, until), false)
}

/// The first value a query about one target selects: `sql` has `{}` where the target's filter
/// goes, `?1` is the target and `?2` the time (for an open table, as [`Layout::bound`] gives it).
fn time_of(conn: &Connection, sql: &str, (target_id, t0): (i64, i64)) -> Result<Option<i64>, StoreError> {
    let sql = format!("{} LIMIT 1", sql.replacen("{}", "target_id = ?1 AND", 1));
    Ok(conn.prepare_cached(&sql)?.query_row(params![target_id, t0], |r| r.get(0)).optional()?)
}

/// The target's first row of `table` in `(after, until]`, or its last (`last`), copied out.
fn row_in(
    conn: &Connection,
    table: Table,
    target_id: i64,
    range: (i64, i64),
    last: bool,
) -> Result<Option<FoundRow>, StoreError> {
    let mut found: Option<FoundRow> = None;
    scan(conn, table, range, Some(target_id), &mut |r| {
        found.get_or_insert_with(|| FoundRow { ts: 0, variant_id: 0, data: Vec::new() }).copy(r);
        Ok(last)
    })?;
    Ok(found)
}

/// What [`seal`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sealed {
    /// Rows moved into chunks.
    pub rows: usize,
    /// Open tables emptied whole (a raw generation holding only the window sealed), whose
    /// pages were freed without being written.
    pub cleared: usize,
    /// The most bytes chunk writers held at once (the seal's transient, which the allocator
    /// policy hears of).
    pub held: usize,
}

/// Seals every complete window of `width_ms` (clamped to the table's widest) of `table` ending
/// at or before `through_ms`, at most [`WINDOWS_PER_RUN`], each in its own transaction.
pub(crate) fn seal(conn: &mut Connection, table: Table, width_ms: i64, through_ms: i64) -> Result<Sealed, StoreError> {
    let l = Layout::of(table);
    let width = width_ms.clamp(1, l.max_chunk_ms);
    // Rolled tables are read by target: their oldest row is one lookup per target.
    let oldest_sql = if l.rolled {
        format!("SELECT MIN((SELECT MIN(ts) FROM {} WHERE target_id = t.id)) FROM targets t", l.open[0])
    } else {
        format!("SELECT {}", l.edge("MIN"))
    };
    let mut sealed = Sealed::default();
    let mut scratch = Scratch::default();
    for _ in 0..WINDOWS_PER_RUN {
        let oldest: Option<i64> = conn.query_row(&oldest_sql, [], |r| r.get(0))?;
        let Some(start) = oldest.map(|ts| window_start(ts, width)) else { break };
        let end = start.saturating_add(width);
        if end > through_ms {
            break;
        }
        let done = seal_window(conn, l, (start, end), &mut scratch)?;
        sealed.rows += done.rows;
        sealed.cleared += done.cleared;
        sealed.held = sealed.held.max(done.held);
    }
    Ok(sealed)
}

/// Moves the open rows of the window `(start, end]` into one chunk per target (see
/// [`seal_raw`] and [`seal_rolled`]).
fn seal_window(
    conn: &mut Connection,
    l: Layout,
    (start, end): (i64, i64),
    scratch: &mut Scratch,
) -> Result<Sealed, StoreError> {
    let tx = super::write_transaction(conn)?;
    let (mut sealed, held) =
        if l.rolled { seal_rolled(&tx, l, (start, end), scratch)? } else { seal_raw(&tx, l, (start, end), scratch)? };
    sealed.held = held;
    for table in l.open {
        if !l.rolled {
            keep_carried_entries(&tx, table, (l.bound(start), l.bound(end)))?;
        }
        if !l.rolled && only_rows_within(&tx, table, (start, end))? {
            // Every row of this generation was just read into a chunk: a DELETE without a
            // condition frees the table's pages without reading or writing them (SQLite's clear
            // path), where the range DELETE below writes every page it empties to the WAL.
            tx.execute(&format!("DELETE FROM {table}"), [])?;
            sealed.cleared += 1;
        } else {
            tx.execute(
                &format!("DELETE FROM {table} WHERE {}", l.window_filter()),
                params![l.bound(start), l.bound(end)],
            )?;
        }
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
        params![l.sealed_key, end],
    )?;
    tx.commit()?;
    crate::heap::note_transient(held);
    Ok(sealed)
}

/// Seals the raw rows of the window, one chunk per target, in one pass over its rows in key
/// order. Returns what was sealed and the bytes the chunk writers held.
///
/// The window is sealed whole, every target's chunk side by side: its rows are keyed by
/// time then target, so whoever decodes it holds every target's chunk of the window at once (at
/// 500 targets a 10-minute chunk is about 21 KB and its writer's buffer 32 KB). Cutting the
/// window into four parts took about 9 MiB off the process' peaks, but a quarter chunk of 5-6
/// KB takes a b-tree page of its own (two do not fit in one) and restarts the payload history:
/// raw chunk bytes +32 % with the fixture's traffic (stored per target-day 0.87 -> 0.99 MB) and
/// written per target-day 15.9 -> 17.1 MB at 100 targets, which undid the write-volume goal
/// (BENCHMARKS.md, "Memory, twelfth stop"). The reads of a sealed window now hold a piece of
/// each chunk ([`Window`]); bounding the seal without smaller chunks (a window sealed in groups
/// of targets) is the next step.
fn seal_raw(
    conn: &Connection,
    l: Layout,
    (start, end): (i64, i64),
    scratch: &mut Scratch,
) -> Result<(Sealed, usize), StoreError> {
    let mut writers: BTreeMap<i64, ChunkWriter> = BTreeMap::new();
    // Merged in key order: a target's rows reach its chunk in time order whichever generation
    // holds them (a window wider than a generation spans both).
    let mut stmts = l
        .open
        .iter()
        .map(|t| {
            conn.prepare_cached(&format!(
                "SELECT ts, target_id, variant_id, elapsed_ms, data, {} FROM {t} WHERE {} ORDER BY {}",
                l.presence(),
                l.window_filter(),
                l.order()
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = OpenRows::new(&mut stmts, params![l.bound(start), l.bound(end)])?;
    while let Some(r) = rows.head() {
        let row =
            ChunkRow { ts: r.ts, variant_id: r.variant_id, elapsed_ms: r.elapsed_ms, present_ms: 0, data: &r.data };
        writers.entry(r.target_id).or_insert_with(|| ChunkWriter::new(start, false)).push(row, scratch);
        rows.advance()?;
    }
    drop(rows);
    drop(stmts);
    let held = writers.values().map(ChunkWriter::held_bytes).sum();
    let mut sealed = Sealed::default();
    for (target_id, writer) in writers {
        sealed.rows += writer.rows();
        put_chunk(conn, l, (start, end), target_id, writer, scratch)?;
    }
    Ok((sealed, held))
}

/// Seals the rolled rows of the window target by target (through the open table's index by
/// target): one chunk writer is held at a time. Sealing them side by side, as raw rows are,
/// held every target's writer of an hour of 1 min rows at once.
fn seal_rolled(
    conn: &Connection,
    l: Layout,
    (start, end): (i64, i64),
    scratch: &mut Scratch,
) -> Result<(Sealed, usize), StoreError> {
    let (mut sealed, mut held) = (Sealed::default(), 0);
    let targets: Vec<i64> = conn
        .prepare_cached("SELECT id FROM targets ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT ts, variant_id, elapsed_ms, data, present_ms FROM {} WHERE target_id = ?3 AND ts > ?1 AND ts <= ?2 ORDER BY ts",
        l.open[0]
    ))?;
    for target_id in targets {
        let mut writer: Option<ChunkWriter> = None;
        let mut rows = stmt.query(params![start, end, target_id])?;
        while let Some(r) = rows.next()? {
            let row = ChunkRow {
                ts: r.get(0)?,
                variant_id: r.get(1)?,
                elapsed_ms: r.get(2)?,
                present_ms: r.get(4)?,
                data: r.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?,
            };
            writer.get_or_insert_with(|| ChunkWriter::new(start, true)).push(row, scratch);
        }
        drop(rows);
        if let Some(writer) = writer {
            held = held.max(writer.held_bytes());
            sealed.rows += writer.rows();
            put_chunk(conn, l, (start, end), target_id, writer, scratch)?;
        }
    }
    Ok((sealed, held))
}

/// Whether every row of the raw generation `table` lies in the window `(start, end]`: a look
/// at each end of its key. False for an empty table (nothing to free).
fn only_rows_within(conn: &Connection, table: &str, (start, end): (i64, i64)) -> Result<bool, StoreError> {
    let (first, last): (Option<i64>, Option<i64>) = conn
        .prepare_cached(&format!("SELECT (SELECT MIN(ts_target) FROM {table}), (SELECT MAX(ts_target) FROM {table})"))?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(matches!((first, last), (Some(a), Some(b)) if a > raw_key_through(start) && b <= raw_key_through(end)))
}

/// Stores a target's chunk of a window; if the window already has one (rows sealed earlier
/// that no late row reopened), both become one chunk, the rows just sealed winning a tie.
fn put_chunk(
    conn: &Connection,
    l: Layout,
    (start, end): (i64, i64),
    target_id: i64,
    writer: ChunkWriter,
    scratch: &mut Scratch,
) -> Result<(), StoreError> {
    let Some((existing, existing_end)) = take_chunk(conn, l, start, target_id)? else {
        return insert_chunk(conn, l, (start, end), target_id, writer);
    };
    // A chunk of the same start sealed with another width (a development database sealed with
    // the twelfth stop's quarter-window raw chunks) keeps its rows' whole window.
    let end = end.max(existing_end);
    let mut rows: BTreeMap<i64, chunk::OwnedRow> = BTreeMap::new();
    for r in chunk::decode_all(start, existing)?.into_iter().chain(chunk::decode_all(start, writer.finish())?) {
        rows.insert(r.ts, r);
    }
    let mut merged = ChunkWriter::new(start, l.rolled);
    for r in rows.values() {
        merged.push(r.as_row(), scratch);
    }
    insert_chunk(conn, l, (start, end), target_id, merged)
}

fn insert_chunk(
    conn: &Connection,
    l: Layout,
    (start, end): (i64, i64),
    target_id: i64,
    writer: ChunkWriter,
) -> Result<(), StoreError> {
    let (rows, first_ts, last_ts) = (writer.rows() as i64, writer.first_ts(), writer.last_ts());
    conn.prepare_cached(&format!(
        "INSERT INTO {} (start_ts, end_ts, target_id, first_ts, last_ts, rows, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        l.chunks
    ))?
    .execute(params![start, end, target_id, first_ts, last_ts, rows, writer.finish()])?;
    Ok(())
}

/// Removes and returns a target's chunk of the window starting at `start`, with its window's end.
fn take_chunk(conn: &Connection, l: Layout, start: i64, target_id: i64) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
    let found: Option<(i64, Vec<u8>, i64)> = conn
        .prepare_cached(&format!(
            "SELECT rowid, data, end_ts FROM {} WHERE start_ts = ?1 AND target_id = ?2",
            l.chunks
        ))?
        .query_row(params![start, target_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((rowid, data, end)) = found else { return Ok(None) };
    conn.prepare_cached(&format!("DELETE FROM {} WHERE rowid = ?1", l.chunks))?.execute([rowid])?;
    Ok(Some((data, end)))
}

/// End of the newest window of `table` ever sealed: a row after it cannot be in a chunk.
pub(crate) fn sealed_through(conn: &Connection, table: Table) -> Result<Option<i64>, StoreError> {
    let key = Layout::of(table).sealed_key;
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

/// Reopens the target's chunks of `table` whose window holds `ts`, if sealed: their rows go
/// back to the table, so a row written there now meets them. True when a chunk was reopened.
pub(crate) fn unseal(conn: &Connection, table: Table, target_id: i64, ts: i64) -> Result<bool, StoreError> {
    let l = Layout::of(table);
    let covering: Vec<i64> = conn
        .prepare_cached(&format!(
            "SELECT start_ts FROM {} WHERE target_id = ?3 AND start_ts > ?1 AND start_ts < ?2 AND end_ts >= ?2",
            l.chunks
        ))?
        .query_map(params![ts.saturating_sub(l.max_chunk_ms), ts, target_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let insert = |table: &str| {
        conn.prepare_cached(&if l.rolled {
            format!(
                "INSERT INTO {table} (target_id, ts, variant_id, elapsed_ms, data, present_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING"
            )
        } else {
            format!(
                "INSERT INTO {table} (ts_target, variant_id, elapsed_ms, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING"
            )
        })
    };
    for &start in &covering {
        let Some((blob, _)) = take_chunk(conn, l, start, target_id)? else { continue };
        for r in chunk::decode_all(start, blob)? {
            if l.rolled {
                insert(l.open[0])?.execute(params![
                    target_id,
                    r.ts,
                    r.variant_id,
                    r.elapsed_ms,
                    r.data,
                    r.present_ms
                ])?;
            } else {
                // Back into its own generation, where a write of the same key looks for it.
                insert(raw_table(r.ts))?.execute(params![
                    raw_key(r.ts, target_id)?,
                    r.variant_id,
                    r.elapsed_ms,
                    r.data
                ])?;
            }
        }
    }
    Ok(!covering.is_empty())
}

/// Deletes rows of `table` at or before `cutoff`: open rows exactly, sealed rows by whole
/// chunks (windows ending at or before it). Returns the rows deleted.
pub(crate) fn delete_through(conn: &Connection, table: Table, cutoff: i64) -> Result<usize, StoreError> {
    let l = Layout::of(table);
    // Rolled rows: per live target (what the key serves), as retention always trimmed them.
    let targets = if l.rolled { "target_id IN (SELECT id FROM targets) AND " } else { "" };
    let mut open = 0;
    for t in l.open {
        if !l.rolled {
            keep_carried_entries(conn, t, (i64::MIN, l.bound(cutoff)))?;
        }
        open += conn.execute(&format!("DELETE FROM {t} WHERE {targets}{}", l.through("?1")), [l.bound(cutoff)])?;
    }
    let whole = format!("{targets}start_ts < ?1 AND end_ts <= ?1");
    let sealed: i64 =
        conn.query_row(&format!("SELECT COALESCE(SUM(rows), 0) FROM {} WHERE {whole}", l.chunks), [cutoff], |r| {
            r.get(0)
        })?;
    conn.execute(&format!("DELETE FROM {} WHERE {whole}", l.chunks), [cutoff])?;
    Ok(open + usize::try_from(sealed).unwrap_or(0))
}

/// Time of the newest row of `table`, open or sealed.
pub(crate) fn newest_ts(conn: &Connection, table: Table) -> Result<Option<i64>, StoreError> {
    edge_ts(conn, table, true)
}

/// Time of the oldest row of `table`, open or sealed.
pub(crate) fn oldest_ts(conn: &Connection, table: Table) -> Result<Option<i64>, StoreError> {
    edge_ts(conn, table, false)
}

/// Time of the newest (`newest`) or oldest row of `table`: of the open rows, and of the chunks
/// starting within a widest window of the newest (oldest) start, which hold the sealed one.
fn edge_ts(conn: &Connection, table: Table, newest: bool) -> Result<Option<i64>, StoreError> {
    let l = Layout::of(table);
    let (agg, edge, cmp, op) = if newest { ("MAX", "last_ts", ">", "-") } else { ("MIN", "first_ts", "<", "+") };
    let open: Option<i64> = conn.query_row(&format!("SELECT {}", l.edge(agg)), [], |r| r.get(0))?;
    let sealed: Option<i64> = conn.query_row(
        &format!(
            "SELECT {agg}({edge}) FROM {0} WHERE start_ts {cmp} (SELECT {agg}(start_ts) FROM {0}) {op} ?1",
            l.chunks
        ),
        [l.max_chunk_ms],
        |r| r.get(0),
    )?;
    Ok(match (open, sealed) {
        (Some(a), Some(b)) => Some(if newest { a.max(b) } else { a.min(b) }),
        (a, b) => a.or(b),
    })
}

/// Rows of `table` stored, open and sealed.
pub(crate) fn count(conn: &Connection, table: Table) -> Result<i64, StoreError> {
    let l = Layout::of(table);
    let mut open: i64 = 0;
    for t in l.open {
        open += conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0))?;
    }
    let sealed: i64 = conn.query_row(&format!("SELECT COALESCE(SUM(rows), 0) FROM {}", l.chunks), [], |r| r.get(0))?;
    Ok(open + sealed)
}

/// Moves the journal entries that open raw rows of `table` with keys in `(lo, hi]` carry and a
/// checkpoint does not yet include into the journal's current generation, before those rows
/// leave the table (the raw seal, retention): a target's checkpoint normally follows every
/// entry of a window before the window is sealed (`scrape::persist` checkpoints at each window
/// edge), so this moves the entries of a target that went quiet without one. Returns how many.
fn keep_carried_entries(conn: &Connection, table: &str, (lo, hi): (i64, i64)) -> Result<usize, StoreError> {
    let journal = super::table::journal_table(conn)?;
    Ok(conn
        .prepare_cached(&format!(
            "INSERT INTO {journal} (ts, target_id, data)
             SELECT r.ts - r.state_lag, r.target_id, r.state_entry FROM {table} r JOIN targets t ON t.id = r.target_id
             WHERE r.ts_target > ?1 AND r.ts_target <= ?2 AND r.state_entry IS NOT NULL
               AND (t.state_ms IS NULL OR r.ts - r.state_lag > t.state_ms)
             ORDER BY r.ts_target"
        ))?
        .execute(params![lo, hi])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Bytes the last scan's window of chunks held at most ([`Window`]'s drop).
        pub(super) static LAST_WINDOW_HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// An open raw row of one variant, in its generation's table.
    fn put_raw(c: &Connection, ts: i64, target: i64, data: &[u8]) {
        let sql =
            format!("INSERT INTO {} (ts_target, variant_id, elapsed_ms, data) VALUES (?1, 1, 5000, ?2)", raw_table(ts));
        c.execute(&sql, params![raw_key(ts, target).unwrap(), data]).unwrap();
    }

    /// A database with open rows for two targets every 5 s over `(0, until]`, each payload
    /// naming its row.
    fn db(until: i64) -> (Connection, Vec<(i64, i64, Vec<u8>)>) {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        let mut rows = Vec::new();
        for ts in (5_000..=until).step_by(5_000) {
            for target in [1, 2] {
                let data = format!("row {ts} of {target}, some bytes that repeat").into_bytes();
                put_raw(&c, ts, target, &data);
                rows.push((ts, target, data));
            }
        }
        (c, rows)
    }

    fn read(c: &Connection, range: (i64, i64), only: Option<i64>, limit: usize) -> Vec<(i64, i64, Vec<u8>)> {
        let mut out = Vec::new();
        scan(c, Table::Raw, range, only, &mut |r| {
            out.push((r.ts, r.target_id, r.data.to_vec()));
            Ok(out.len() < limit)
        })
        .unwrap();
        out
    }

    #[test]
    fn a_scan_merges_open_rows_and_chunks_of_any_width_in_order() {
        let (mut c, all) = db(1_200_000);
        assert_eq!(seal(&mut c, Table::Raw, 400_000, 800_000).unwrap().rows, 2 * 160, "two windows of 400 s");
        // Sealed again with another width: windows that overlap the earlier ones in time.
        assert_eq!(
            seal(&mut c, Table::Raw, 600_000, 1_200_000).unwrap().rows,
            2 * 80,
            "(600 s, 1200 s]: the rows after 800 s"
        );
        let open: i64 = c.query_row("SELECT count(*) FROM metrics_5s", [], |r| r.get(0)).unwrap();
        assert_eq!(open, 0);
        assert_eq!(count(&c, Table::Raw).unwrap(), 480);
        assert_eq!(read(&c, (0, i64::MAX), None, usize::MAX), all, "every row once, in (ts, target) order");
        let part = |(a, b): (i64, i64), only: Option<i64>| {
            all.iter().filter(|r| r.0 > a && r.0 <= b && only.is_none_or(|t| t == r.1)).cloned().collect::<Vec<_>>()
        };
        for (range, only) in [((397_500, 812_345), None), ((400_000, 800_000), Some(2)), ((0, 5_000), Some(1))] {
            assert_eq!(read(&c, range, only, usize::MAX), part(range, only), "{range:?} {only:?}");
        }
        assert_eq!(read(&c, (0, i64::MAX), None, 3), all[..3], "stops when told");
        assert_eq!(
            (oldest_ts(&c, Table::Raw).unwrap(), newest_ts(&c, Table::Raw).unwrap()),
            (Some(5_000), Some(1_200_000))
        );
    }

    /// A window of many targets is read from pieces of each chunk, not from every blob loaded
    /// whole: what the reads hold is a fraction of the window's chunks, rows longer than a
    /// piece included, and the rows are exactly the ones written.
    #[test]
    fn a_sealed_window_is_read_from_pieces_of_its_chunks() {
        // Rows that share nothing (each costs its whole payload), a few longer than a piece.
        let long = |ts: i64, target: i64| ts % 200_000 == 0 && target % 10 == 0;
        let (mut c, all) = noise_window(40, |ts, target| if long(ts, target) { 3 * chunk::PIECE_BYTES } else { 300 });
        assert_eq!(seal(&mut c, Table::Raw, 600_000, 600_000).unwrap().rows, all.len());
        let blobs = chunk_bytes(&c, "metrics_5s_chunks");
        assert!(blobs > 40 * 30_000, "chunks of about 36 KB each: {blobs} bytes");
        assert_eq!(read(&c, (0, i64::MAX), None, usize::MAX), all, "every row, in (ts, target) order");
        let held = LAST_WINDOW_HELD.get();
        assert!(held < blobs / 4, "the window held {held} bytes of {blobs} bytes of chunks");
        let range = (300_000, 450_000);
        let part: Vec<_> = all.iter().filter(|r| r.0 > range.0 && r.0 <= range.1).cloned().collect();
        assert_eq!(read(&c, range, None, usize::MAX), part, "a range inside the window");
        assert_eq!(
            read(&c, range, Some(20), usize::MAX),
            part.iter().filter(|r| r.1 == 20).cloned().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_late_row_reopens_its_chunk_and_retention_takes_whole_chunks() {
        let (mut c, all) = db(1_200_000);
        seal(&mut c, Table::Raw, 600_000, 1_200_000).unwrap();
        assert_eq!(sealed_through(&c, Table::Raw).unwrap(), Some(1_200_000));
        assert!(unseal(&c, Table::Raw, 2, 300_000).unwrap());
        assert!(!unseal(&c, Table::Raw, 2, 300_000).unwrap(), "already open");
        let open: i64 = c.query_row("SELECT count(*) FROM metrics_5s", [], |r| r.get(0)).unwrap();
        assert_eq!(open, 120, "target 2's rows of (0, 600 s]");
        assert_eq!(read(&c, (0, i64::MAX), None, usize::MAX), all, "still every row once");
        // Retention: the chunk holding the cutoff stays whole; open rows go exactly.
        assert_eq!(delete_through(&c, Table::Raw, 610_000).unwrap(), 120 + 120);
        let left = read(&c, (0, i64::MAX), None, usize::MAX);
        assert_eq!(left, all.iter().filter(|r| r.0 > 600_000).cloned().collect::<Vec<_>>());
    }

    /// Rows sealed and generations cleared.
    fn rc(s: Sealed) -> (usize, usize) {
        (s.rows, s.cleared)
    }

    /// A payload of `len` bytes no other row shares a run of, so chunks grow by the whole
    /// payload per row (as rows of many changing counters do).
    fn noise(seed: i64, len: usize) -> Vec<u8> {
        let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A database with one 10-minute window of open raw rows of `targets` targets, every 5 s,
    /// payloads of `len(ts, target)` bytes that share no run ([`noise`]).
    fn noise_window(targets: i64, len: impl Fn(i64, i64) -> usize) -> (Connection, Vec<(i64, i64, Vec<u8>)>) {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        let mut all = Vec::new();
        for ts in (5_000..=600_000).step_by(5_000) {
            for target in 1..=targets {
                let data = noise(ts * 1_000 + target, len(ts, target));
                put_raw(&c, ts, target, &data);
                all.push((ts, target, data));
            }
        }
        (c, all)
    }

    /// Bytes of every chunk of a chunk table.
    fn chunk_bytes(c: &Connection, chunks: &str) -> usize {
        c.query_row(&format!("SELECT SUM(length(data)) FROM {chunks}"), [], |r| r.get::<_, i64>(0)).unwrap() as usize
    }

    #[test]
    fn a_seal_holds_one_target_of_a_rolled_window_at_a_time() {
        // Eight targets' raw rows of one 10-minute window, 2 KB each that do not compress.
        let (mut c, all) = noise_window(8, |_, _| 2_000);
        let raw = seal(&mut c, Table::Raw, 600_000, 600_000).unwrap();
        assert_eq!(raw.rows, 960);
        let chunks: i64 = c.query_row("SELECT count(*) FROM metrics_5s_chunks", [], |r| r.get(0)).unwrap();
        assert_eq!(chunks, 8, "a chunk per target");
        assert!(raw.held > 0, "the raw seal reports what it held");
        assert_eq!(read(&c, (0, i64::MAX), None, usize::MAX), all, "every row once, in order");

        // Eight targets' 1 min rows of an hour, likewise.
        c.execute(
            "INSERT INTO targets (id, url, variant, first_seen_ms) VALUES (1, 'a', 'p', 0), (2, 'b', 'p', 0),
             (3, 'c', 'p', 0), (4, 'd', 'p', 0), (5, 'e', 'p', 0), (6, 'f', 'p', 0), (7, 'g', 'p', 0), (8, 'h', 'p', 0)",
            [],
        )
        .unwrap();
        for ts in (60_000..=HOUR_MS).step_by(60_000) {
            for target in 1..=8 {
                c.execute(
                    "INSERT INTO metrics_1m (target_id, ts, variant_id, elapsed_ms, data, present_ms)
                     VALUES (?1, ?2, 1, 60000, ?3, 60000)",
                    params![target, ts, noise(ts * 7 + target, 2_000)],
                )
                .unwrap();
            }
        }
        let rolled = seal(&mut c, Table::Rollup, HOUR_MS, HOUR_MS).unwrap();
        assert_eq!(rolled.rows, 480);
        let total = chunk_bytes(&c, "metrics_1m_chunks");
        assert!(rolled.held > 0 && rolled.held <= total / 3, "held {} B at once of {total} B of chunks", rolled.held);
        for target in 1..=8 {
            assert_eq!(read_rolled(&c, (0, i64::MAX), target).len(), 60, "target {target}'s hour, from its chunk");
        }
    }

    /// Open rows in each raw generation table.
    fn in_generations(c: &Connection) -> [i64; 2] {
        RAW_TABLES.map(|t| c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap())
    }

    #[test]
    fn a_generation_holding_only_the_sealed_window_is_emptied_whole() {
        // Windows (0, 600 s] and (600 s, 1200 s]: one in each generation.
        let (mut c, all) = db(1_200_000);
        assert_eq!(in_generations(&c), [240, 240], "each window's rows in its own table");
        let first = seal(&mut c, Table::Raw, 600_000, 600_000).unwrap();
        assert_eq!(rc(first), (240, 1));
        assert_eq!(in_generations(&c), [0, 240], "the sealed window's table emptied, the other kept");
        assert_eq!(read(&c, (0, i64::MAX), None, usize::MAX), all, "every row, now from a chunk");
        assert_eq!(rc(seal(&mut c, Table::Raw, 600_000, 1_200_000).unwrap()), (240, 1));
        assert_eq!(in_generations(&c), [0, 0]);
        assert_eq!(read(&c, (0, i64::MAX), None, usize::MAX), all);
        // The view still reads open rows of both generations.
        assert!(unseal(&c, Table::Raw, 2, 300_000).unwrap() && unseal(&c, Table::Raw, 1, 900_000).unwrap());
        assert_eq!(in_generations(&c), [120, 120], "reopened rows go back to their own generation");
        let in_view: i64 = c.query_row("SELECT count(*) FROM metrics_5s", [], |r| r.get(0)).unwrap();
        assert_eq!(in_view, 240);
        assert_eq!(read(&c, (0, i64::MAX), None, usize::MAX), all);
    }

    #[test]
    fn a_generation_holding_other_rows_is_deleted_row_by_row() {
        // Three windows: the first and the third share a generation.
        let (mut c, all) = db(1_800_000);
        assert_eq!(in_generations(&c), [480, 240]);
        let first = seal(&mut c, Table::Raw, 600_000, 600_000).unwrap();
        assert_eq!(rc(first), (240, 0), "the third window's rows stay");
        assert_eq!(in_generations(&c), [240, 240]);
        assert_eq!(read(&c, (0, i64::MAX), None, usize::MAX), all, "no row lost");
        // A window wider than a generation spans both; neither holds only it.
        let (mut c, all) = db(1_800_000);
        assert_eq!(rc(seal(&mut c, Table::Raw, 1_200_000, 1_200_000).unwrap()), (480, 1));
        assert_eq!(in_generations(&c), [240, 0], "the second window's table held only sealed rows");
        assert_eq!(read(&c, (0, i64::MAX), None, usize::MAX), all);
        let (mut c, all) = db(1_200_000);
        c.execute("DELETE FROM metrics_5s_0 WHERE ts_target > ?1", [raw_key_through(300_000)]).unwrap();
        let kept: Vec<_> = all.iter().filter(|r| r.0 <= 300_000 || r.0 > 600_000).cloned().collect();
        assert_eq!(rc(seal(&mut c, Table::Raw, 400_000, 400_000).unwrap()), (120, 1));
        assert_eq!(read(&c, (0, i64::MAX), None, usize::MAX), kept, "a window ending after its rows");
        // Rolled tables have one table of open rows and are never emptied whole.
        let (mut c, _) = rolled_db(2 * 3_600_000);
        assert_eq!(seal(&mut c, Table::Rollup, 3_600_000, 3_600_000).unwrap().cleared, 0);
    }

    /// A rolled row as the tests compare it: time, target, presence, payload.
    type RolledRow = (i64, i64, i64, Vec<u8>);

    /// A database with open 1 min rows of targets 1 and 2 (registered) every minute over
    /// `(0, until]`, target 2's with a gap and partial presences, each payload naming its row.
    fn rolled_db(until: i64) -> (Connection, Vec<RolledRow>) {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        c.execute(
            "INSERT INTO targets (id, url, variant, first_seen_ms) VALUES (1, 'a', 'p', 0), (2, 'b', 'p', 0)",
            [],
        )
        .unwrap();
        let mut rows = Vec::new();
        for ts in (60_000..=until).step_by(60_000) {
            for target in [1, 2] {
                let minute = ts / 60_000;
                if target == 2 && (100..130).contains(&minute) {
                    continue; // the pod was gone for half an hour
                }
                let present = if target == 2 && minute % 17 == 0 { 20_000 + minute } else { 60_000 };
                let data = format!("minute {minute} of {target}, labels that repeat, {}", minute % 3).into_bytes();
                c.execute(
                    "INSERT INTO metrics_1m (target_id, ts, variant_id, elapsed_ms, data, present_ms)
                     VALUES (?1, ?2, 1, 60000, ?3, ?4)",
                    params![target, ts, data, present],
                )
                .unwrap();
                rows.push((ts, target, present, data));
            }
        }
        (c, rows)
    }

    /// Every row of `target` in `range`, as a scan gives them, with presences.
    fn read_rolled(c: &Connection, range: (i64, i64), target: i64) -> Vec<RolledRow> {
        let mut out = Vec::new();
        scan(c, Table::Rollup, range, Some(target), &mut |r| {
            out.push((r.ts, r.target_id, r.present_ms, r.data.to_vec()));
            Ok(true)
        })
        .unwrap();
        out
    }

    /// Every read of rolled rows the readers make: ranges, the newest row at or before a time
    /// and the oldest after it, per target.
    fn rolled_reads(c: &Connection) -> Vec<String> {
        let mut out = Vec::new();
        for target in [1, 2] {
            for range in [(0, i64::MAX), (3_570_000, 3_660_000), (5_000_000, 11_000_000), (3_600_000, 7_200_000)] {
                out.push(format!("{range:?} {:?}", read_rolled(c, range, target)));
            }
            for t0 in [0, 59_999, 60_000, 3_600_000, 3_630_000, 6_300_000, 7_150_000, 14_400_000, i64::MAX] {
                let row = |r: Option<FoundRow>| r.map(|r| (r.ts, r.variant_id, r.data));
                out.push(format!(
                    "{t0} {:?} {:?}",
                    row(newest_through(c, Table::Rollup, target, t0).unwrap()),
                    row(oldest_after(c, Table::Rollup, target, t0).unwrap())
                ));
            }
        }
        out
    }

    #[test]
    fn sealed_rolled_rows_read_exactly_as_open_ones() {
        let (mut c, all) = rolled_db(4 * 3_600_000 + 30 * 60_000);
        let open = rolled_reads(&c);
        assert_eq!(
            read_rolled(&c, (0, i64::MAX), 2),
            all.iter().filter(|r| r.1 == 2).cloned().collect::<Vec<_>>(),
            "the reads read what was written"
        );
        // Hours up to 3 h are complete (rolled further): sealed; the rest stays open.
        assert_eq!(seal(&mut c, Table::Rollup, 3_600_000, 3 * 3_600_000).unwrap().rows, 180 + 150);
        let chunks: i64 = c.query_row("SELECT count(*) FROM metrics_1m_chunks", [], |r| r.get(0)).unwrap();
        assert_eq!(chunks, 6);
        assert_eq!(count(&c, Table::Rollup).unwrap(), all.len() as i64, "every row once");
        assert_eq!(rolled_reads(&c), open, "the same answers, presences included, from chunks");
        // Sealed again with another width (a changed rollup width): windows that overlap.
        assert_eq!(seal(&mut c, Table::Rollup, 5_400_000, 4 * 3_600_000).unwrap().rows, 0, "(2.5 h, 4 h] is not whole");
        assert_eq!(seal(&mut c, Table::Rollup, 5_400_000, 5 * 3_600_000).unwrap().rows, 2 * 90, "(3 h, 4.5 h]");
        assert_eq!(rolled_reads(&c), open);
        // A row replaced inside a sealed hour reopens that hour only.
        assert_eq!(sealed_through(&c, Table::Rollup).unwrap(), Some(4 * 3_600_000 + 30 * 60_000));
        assert!(unseal(&c, Table::Rollup, 2, 3_630_000).unwrap());
        let open_rows: i64 = c.query_row("SELECT count(*) FROM metrics_1m", [], |r| r.get(0)).unwrap();
        assert_eq!(open_rows, 39, "target 2's minutes of (1 h, 2 h]: 61 to 99, then the gap");
        assert_eq!(rolled_reads(&c), open);
        // Retention: whole chunks; the hour holding the cutoff stays.
        assert_eq!(delete_through(&c, Table::Rollup, 3_000_000).unwrap(), 0);
        assert_eq!(delete_through(&c, Table::Rollup, 3_700_000).unwrap(), 60 + 60 + 1);
        let left = read_rolled(&c, (0, i64::MAX), 1);
        assert_eq!(left.first().map(|r| r.0), Some(3_660_000));
    }
}
