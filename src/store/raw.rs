//! Raw rows at rest: open rows in `metrics_5s`, sealed chunks in `metrics_5s_chunks`.
//!
//! The writer appends each tick's rows to `metrics_5s` (one SQLite row per target and bucket,
//! keyed by time, so a kill loses at most the tick being written). Once a window of ten rollup
//! widths (10 minutes, the coarse tier's bucket) is complete and rolled into minutes, the
//! downsampler seals it ([`seal`]): each target's rows of the window become one compressed chunk
//! ([`super::chunk`]), in the same transaction that deletes them from `metrics_5s`. A row is
//! therefore in exactly one place, and every reader goes through [`scan`], which merges both
//! in time order.
//!
//! A row written late into a sealed window (two scrapes in one bucket, a batch retried after a
//! long outage) first reopens its target's chunk ([`unseal`]: its rows go back to
//! `metrics_5s`), so the merge with an existing row works as it does for open rows; the window
//! is sealed again on the next run.
//!
//! Retention deletes sealed rows a whole chunk at a time: up to one window (10 minutes) more
//! than `RETENTION_5S` is kept, never less.
//!
//! Each chunk records its window (`start_ts`, `end_ts`), so readers need not know the width it
//! was sealed with; windows of a database sealed with another width may overlap, which the
//! merge allows. No window is wider than [`MAX_CHUNK_MS`], which bounds every lookup by time.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::chunk::{self, ChunkRow, ChunkRows, ChunkWriter, Scratch};
use crate::clock::bucket_end;

/// The widest window a chunk may have (the sealer clamps to it): lookups by time start this far
/// before the time they want.
pub(crate) const MAX_CHUNK_MS: i64 = 3_600_000;
/// `meta` key of the end of the newest window ever sealed: rows after it were never sealed,
/// so writing them needs no look for a chunk.
const SEALED_KEY: &str = "raw_sealed_through_ms";
/// Windows sealed per downsampler run at most, so a first run on a database full of open rows
/// (one written before chunks existed) catches up over a few runs instead of one long one.
const WINDOWS_PER_RUN: usize = 12;

/// A raw row as [`scan`] hands it over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRow<'a> {
    /// Bucket end, ms.
    pub ts: i64,
    /// Target id.
    pub target_id: i64,
    /// Variant id.
    pub variant_id: i64,
    /// Time the row's increases cover, ms.
    pub elapsed_ms: i64,
    /// Encoded payload ([`super::codec`]).
    pub data: &'a [u8],
}

/// Start of the window of `width_ms` holding a row of bucket end `ts`: rows of `(start, start + width]`.
fn window_start(ts: i64, width_ms: i64) -> i64 {
    bucket_end(ts, width_ms).saturating_sub(width_ms)
}

/// Hands every raw row with `after < ts <= until` (every target's, or only `only`'s) to `each`
/// in `(ts, target_id)` order, open and sealed alike, until `each` returns false.
///
/// Sealed windows are decoded one at a time, every target's chunk of the window side by side,
/// each holding its blob and a few payloads (a chunk read out gives its slot to the next
/// window's): memory grows with the targets, not with the window's length. Both tables are
/// read in one snapshot (a read transaction unless the caller's own is open), so a window
/// sealed meanwhile is seen once, in one table or the other.
pub(crate) fn scan(
    conn: &Connection,
    (after, until): (i64, i64),
    only: Option<i64>,
    each: &mut dyn FnMut(RawRow<'_>) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    if after >= until {
        return Ok(());
    }
    let _snapshot = if conn.is_autocommit() { Some(conn.unchecked_transaction()?) } else { None };
    let mut open_stmt = conn.prepare_cached(
        "SELECT ts, target_id, variant_id, elapsed_ms, data FROM metrics_5s
         WHERE ts > ?1 AND ts <= ?2 AND (?3 IS NULL OR target_id = ?3) ORDER BY ts, target_id",
    )?;
    let mut open_rows = open_stmt.query(params![after, until, only])?;
    let mut chunk_stmt = conn.prepare_cached(
        "SELECT start_ts, target_id, data FROM metrics_5s_chunks
         WHERE start_ts > ?1 AND start_ts < ?2 AND end_ts > ?3 AND (?4 IS NULL OR target_id = ?4)
         ORDER BY start_ts, target_id",
    )?;
    let mut chunk_rows = chunk_stmt.query(params![after.saturating_sub(MAX_CHUNK_MS), until, after, only])?;
    let mut open = OpenRow::next(&mut open_rows, None)?;
    let mut pending = next_chunk(&mut chunk_rows)?;
    let mut window = Window::default();
    loop {
        let head = window.head();
        let next = match (head, open.as_ref().map(OpenRow::key)) {
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
        if let Some(o) = open.as_ref().filter(|o| o.key() == key) {
            if head == Some(key) {
                window.skip()?; // a row never sits in both; if it did, the open row is the newer
            }
            if !each(o.row())? {
                return Ok(());
            }
            open = OpenRow::next(&mut open_rows, open.take())?;
        } else if !window.emit(each, until)? {
            return Ok(());
        }
    }
}

/// A row of `metrics_5s`, copied out of the cursor (reusing the previous row's buffer).
struct OpenRow {
    ts: i64,
    target_id: i64,
    variant_id: i64,
    elapsed_ms: i64,
    data: Vec<u8>,
}

impl OpenRow {
    fn next(rows: &mut rusqlite::Rows<'_>, reuse: Option<OpenRow>) -> Result<Option<Self>, StoreError> {
        let Some(r) = rows.next()? else { return Ok(None) };
        let mut data = reuse.map(|o| o.data).unwrap_or_default();
        data.clear();
        data.extend_from_slice(r.get_ref(4)?.as_blob().map_err(rusqlite::Error::from)?);
        Ok(Some(Self { ts: r.get(0)?, target_id: r.get(1)?, variant_id: r.get(2)?, elapsed_ms: r.get(3)?, data }))
    }

    fn key(&self) -> (i64, i64) {
        (self.ts, self.target_id)
    }

    fn row(&self) -> RawRow<'_> {
        RawRow {
            ts: self.ts,
            target_id: self.target_id,
            variant_id: self.variant_id,
            elapsed_ms: self.elapsed_ms,
            data: &self.data,
        }
    }
}

/// A chunk as selected: window start, target id, blob.
type PendingChunk = (i64, i64, Vec<u8>);

fn next_chunk(rows: &mut rusqlite::Rows<'_>) -> Result<Option<PendingChunk>, StoreError> {
    let Some(r) = rows.next()? else { return Ok(None) };
    Ok(Some((r.get(0)?, r.get(1)?, r.get(2)?)))
}

/// The chunks being read, merged by `(ts, target_id)`: one window's at a time, unless windows
/// overlap (sealed with different widths).
#[derive(Default)]
struct Window {
    readers: Vec<(i64, ChunkRows)>,
    /// Slots of `readers` read out, for the next window's chunks.
    free: Vec<usize>,
    heap: BinaryHeap<Reverse<(i64, i64, usize)>>,
}

impl Window {
    fn head(&self) -> Option<(i64, i64)> {
        self.heap.peek().map(|Reverse((ts, target, _))| (*ts, *target))
    }

    /// Takes every pending chunk of the next window, positioned at their first row after
    /// `after`.
    fn load(
        &mut self,
        pending: &mut Option<PendingChunk>,
        rows: &mut rusqlite::Rows<'_>,
        (after, until): (i64, i64),
    ) -> Result<(), StoreError> {
        let Some(start) = pending.as_ref().map(|p| p.0) else { return Ok(()) };
        while let Some((_, target, blob)) = pending.take_if(|p| p.0 == start) {
            let mut reader = ChunkRows::new(start, blob)?;
            while reader.advance()? {
                let ts = reader.current().ts;
                if ts > after {
                    if ts <= until {
                        let slot = match self.free.pop() {
                            Some(i) => {
                                self.readers[i] = (target, reader);
                                i
                            }
                            None => {
                                self.readers.push((target, reader));
                                self.readers.len() - 1
                            }
                        };
                        self.heap.push(Reverse((ts, target, slot)));
                    }
                    break;
                }
            }
            *pending = next_chunk(rows)?;
        }
        Ok(())
    }

    /// Hands the head row to `each`; false when `each` said to stop.
    fn emit(
        &mut self,
        each: &mut dyn FnMut(RawRow<'_>) -> Result<bool, StoreError>,
        until: i64,
    ) -> Result<bool, StoreError> {
        let Some(Reverse((_, _, i))) = self.heap.pop() else { return Ok(true) };
        let (target_id, reader) = &mut self.readers[i];
        let r = reader.current();
        let go_on = each(RawRow {
            ts: r.ts,
            target_id: *target_id,
            variant_id: r.variant_id,
            elapsed_ms: r.elapsed_ms,
            data: r.data,
        })?;
        if reader.advance()? && reader.current().ts <= until {
            self.heap.push(Reverse((reader.current().ts, *target_id, i)));
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

/// Seals every complete window of `width_ms` (clamped to [`MAX_CHUNK_MS`]) ending at or
/// before `through_ms`, at most [`WINDOWS_PER_RUN`], each in its own transaction; returns the
/// rows sealed.
pub(crate) fn seal(conn: &mut Connection, width_ms: i64, through_ms: i64) -> Result<usize, StoreError> {
    let width = width_ms.clamp(1, MAX_CHUNK_MS);
    let mut sealed = 0;
    let mut scratch = Scratch::default();
    for _ in 0..WINDOWS_PER_RUN {
        let oldest: Option<i64> = conn.query_row("SELECT MIN(ts) FROM metrics_5s", [], |r| r.get(0))?;
        let Some(start) = oldest.map(|ts| window_start(ts, width)) else { break };
        let end = start.saturating_add(width);
        if end > through_ms {
            break;
        }
        sealed += seal_window(conn, (start, end), &mut scratch)?;
    }
    Ok(sealed)
}

/// Moves the open rows of the window `(start, end]` into one chunk per target.
fn seal_window(conn: &mut Connection, (start, end): (i64, i64), scratch: &mut Scratch) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    let mut writers: BTreeMap<i64, ChunkWriter> = BTreeMap::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT ts, target_id, variant_id, elapsed_ms, data FROM metrics_5s WHERE ts > ?1 AND ts <= ?2 ORDER BY ts, target_id",
        )?;
        let mut rows = stmt.query(params![start, end])?;
        while let Some(r) = rows.next()? {
            let data = r.get_ref(4)?.as_blob().map_err(rusqlite::Error::from)?;
            let row = ChunkRow { ts: r.get(0)?, variant_id: r.get(2)?, elapsed_ms: r.get(3)?, data };
            writers.entry(r.get(1)?).or_insert_with(|| ChunkWriter::new(start)).push(row, scratch);
        }
    }
    let mut sealed = 0;
    for (target_id, writer) in writers {
        sealed += writer.rows();
        put_chunk(&tx, (start, end), target_id, writer, scratch)?;
    }
    tx.execute("DELETE FROM metrics_5s WHERE ts > ?1 AND ts <= ?2", params![start, end])?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
        params![SEALED_KEY, end],
    )?;
    tx.commit()?;
    Ok(sealed)
}

/// Stores a target's chunk of a window; if the window already has one (rows sealed earlier
/// that no late row reopened), both become one chunk, the rows just sealed winning a tie.
fn put_chunk(
    conn: &Connection,
    (start, end): (i64, i64),
    target_id: i64,
    writer: ChunkWriter,
    scratch: &mut Scratch,
) -> Result<(), StoreError> {
    let Some(existing) = take_chunk(conn, start, target_id)? else {
        return insert_chunk(conn, (start, end), target_id, writer);
    };
    let mut rows: BTreeMap<i64, chunk::OwnedRow> = BTreeMap::new();
    for r in chunk::decode_all(start, existing)?.into_iter().chain(chunk::decode_all(start, writer.finish())?) {
        rows.insert(r.ts, r);
    }
    let mut merged = ChunkWriter::new(start);
    for r in rows.values() {
        merged.push(r.as_row(), scratch);
    }
    insert_chunk(conn, (start, end), target_id, merged)
}

fn insert_chunk(
    conn: &Connection,
    (start, end): (i64, i64),
    target_id: i64,
    writer: ChunkWriter,
) -> Result<(), StoreError> {
    let (rows, first_ts, last_ts) = (writer.rows() as i64, writer.first_ts(), writer.last_ts());
    conn.prepare_cached(
        "INSERT INTO metrics_5s_chunks (start_ts, end_ts, target_id, first_ts, last_ts, rows, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![start, end, target_id, first_ts, last_ts, rows, writer.finish()])?;
    Ok(())
}

/// Removes and returns a target's chunk of the window starting at `start`.
fn take_chunk(conn: &Connection, start: i64, target_id: i64) -> Result<Option<Vec<u8>>, StoreError> {
    let found: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT rowid, data FROM metrics_5s_chunks WHERE start_ts = ?1 AND target_id = ?2")?
        .query_row(params![start, target_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((rowid, data)) = found else { return Ok(None) };
    conn.prepare_cached("DELETE FROM metrics_5s_chunks WHERE rowid = ?1")?.execute([rowid])?;
    Ok(Some(data))
}

/// End of the newest window ever sealed: a row after it cannot be in a chunk.
pub(crate) fn sealed_through(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [SEALED_KEY], |r| r.get(0)).optional()?)
}

/// Reopens the target's chunks whose window holds `ts`, if sealed: their rows go back to
/// `metrics_5s`, so a row written there now meets them. True when a chunk was reopened.
pub(crate) fn unseal(conn: &Connection, target_id: i64, ts: i64) -> Result<bool, StoreError> {
    let covering: Vec<i64> = conn
        .prepare_cached(
            "SELECT start_ts FROM metrics_5s_chunks
             WHERE start_ts > ?1 AND start_ts < ?2 AND target_id = ?3 AND end_ts >= ?2",
        )?
        .query_map(params![ts.saturating_sub(MAX_CHUNK_MS), ts, target_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO metrics_5s (target_id, ts, variant_id, elapsed_ms, data) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(ts, target_id) DO NOTHING",
    )?;
    for &start in &covering {
        let Some(blob) = take_chunk(conn, start, target_id)? else { continue };
        for r in chunk::decode_all(start, blob)? {
            insert.execute(params![target_id, r.ts, r.variant_id, r.elapsed_ms, r.data])?;
        }
    }
    Ok(!covering.is_empty())
}

/// Deletes raw rows at or before `cutoff`: open rows exactly, sealed rows by whole chunks
/// (windows ending at or before it). Returns the rows deleted.
pub(crate) fn delete_through(conn: &Connection, cutoff: i64) -> Result<usize, StoreError> {
    let open = conn.execute("DELETE FROM metrics_5s WHERE ts <= ?1", [cutoff])?;
    let sealed: i64 = conn.query_row(
        "SELECT COALESCE(SUM(rows), 0) FROM metrics_5s_chunks WHERE start_ts < ?1 AND end_ts <= ?1",
        [cutoff],
        |r| r.get(0),
    )?;
    conn.execute("DELETE FROM metrics_5s_chunks WHERE start_ts < ?1 AND end_ts <= ?1", [cutoff])?;
    Ok(open + usize::try_from(sealed).unwrap_or(0))
}

/// Time of the newest raw row, open or sealed.
pub(crate) fn newest_ts(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let open: Option<i64> = conn.query_row("SELECT MAX(ts) FROM metrics_5s", [], |r| r.get(0))?;
    let sealed: Option<i64> = conn.query_row(
        "SELECT MAX(last_ts) FROM metrics_5s_chunks
         WHERE start_ts > (SELECT MAX(start_ts) FROM metrics_5s_chunks) - ?1",
        [MAX_CHUNK_MS],
        |r| r.get(0),
    )?;
    Ok(open.max(sealed))
}

/// Time of the oldest raw row, open or sealed.
pub(crate) fn oldest_ts(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let open: Option<i64> = conn.query_row("SELECT MIN(ts) FROM metrics_5s", [], |r| r.get(0))?;
    let sealed: Option<i64> = conn.query_row(
        "SELECT MIN(first_ts) FROM metrics_5s_chunks
         WHERE start_ts < (SELECT MIN(start_ts) FROM metrics_5s_chunks) + ?1",
        [MAX_CHUNK_MS],
        |r| r.get(0),
    )?;
    Ok(match (open, sealed) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// Raw rows stored, open and sealed.
pub(crate) fn count(conn: &Connection) -> Result<i64, StoreError> {
    let open: i64 = conn.query_row("SELECT count(*) FROM metrics_5s", [], |r| r.get(0))?;
    let sealed: i64 = conn.query_row("SELECT COALESCE(SUM(rows), 0) FROM metrics_5s_chunks", [], |r| r.get(0))?;
    Ok(open + sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database with open rows for two targets every 5 s over `(0, until]`, each payload
    /// naming its row.
    fn db(until: i64) -> (Connection, Vec<(i64, i64, Vec<u8>)>) {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        let mut rows = Vec::new();
        for ts in (5_000..=until).step_by(5_000) {
            for target in [1, 2] {
                let data = format!("row {ts} of {target}, some bytes that repeat").into_bytes();
                c.execute(
                    "INSERT INTO metrics_5s (target_id, ts, variant_id, elapsed_ms, data) VALUES (?1, ?2, 1, 5000, ?3)",
                    params![target, ts, data],
                )
                .unwrap();
                rows.push((ts, target, data));
            }
        }
        (c, rows)
    }

    fn read(c: &Connection, range: (i64, i64), only: Option<i64>, limit: usize) -> Vec<(i64, i64, Vec<u8>)> {
        let mut out = Vec::new();
        scan(c, range, only, &mut |r| {
            out.push((r.ts, r.target_id, r.data.to_vec()));
            Ok(out.len() < limit)
        })
        .unwrap();
        out
    }

    #[test]
    fn a_scan_merges_open_rows_and_chunks_of_any_width_in_order() {
        let (mut c, all) = db(1_200_000);
        assert_eq!(seal(&mut c, 400_000, 800_000).unwrap(), 2 * 160, "two windows of 400 s");
        // Sealed again with another width: windows that overlap the earlier ones in time.
        assert_eq!(seal(&mut c, 600_000, 1_200_000).unwrap(), 2 * 80, "(600 s, 1200 s]: the rows after 800 s");
        let open: i64 = c.query_row("SELECT count(*) FROM metrics_5s", [], |r| r.get(0)).unwrap();
        assert_eq!(open, 0);
        assert_eq!(count(&c).unwrap(), 480);
        assert_eq!(read(&c, (0, i64::MAX), None, usize::MAX), all, "every row once, in (ts, target) order");
        let part = |(a, b): (i64, i64), only: Option<i64>| {
            all.iter().filter(|r| r.0 > a && r.0 <= b && only.is_none_or(|t| t == r.1)).cloned().collect::<Vec<_>>()
        };
        for (range, only) in [((397_500, 812_345), None), ((400_000, 800_000), Some(2)), ((0, 5_000), Some(1))] {
            assert_eq!(read(&c, range, only, usize::MAX), part(range, only), "{range:?} {only:?}");
        }
        assert_eq!(read(&c, (0, i64::MAX), None, 3), all[..3], "stops when told");
        assert_eq!((oldest_ts(&c).unwrap(), newest_ts(&c).unwrap()), (Some(5_000), Some(1_200_000)));
    }

    #[test]
    fn a_late_row_reopens_its_chunk_and_retention_takes_whole_chunks() {
        let (mut c, all) = db(1_200_000);
        seal(&mut c, 600_000, 1_200_000).unwrap();
        assert_eq!(sealed_through(&c).unwrap(), Some(1_200_000));
        assert!(unseal(&c, 2, 300_000).unwrap());
        assert!(!unseal(&c, 2, 300_000).unwrap(), "already open");
        let open: i64 = c.query_row("SELECT count(*) FROM metrics_5s", [], |r| r.get(0)).unwrap();
        assert_eq!(open, 120, "target 2's rows of (0, 600 s]");
        assert_eq!(read(&c, (0, i64::MAX), None, usize::MAX), all, "still every row once");
        // Retention: the chunk holding the cutoff stays whole; open rows go exactly.
        assert_eq!(delete_through(&c, 610_000).unwrap(), 120 + 120);
        let left = read(&c, (0, i64::MAX), None, usize::MAX);
        assert_eq!(left, all.iter().filter(|r| r.0 > 600_000).cloned().collect::<Vec<_>>());
    }
}
