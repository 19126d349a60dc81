//! The points tables by resolution: a type of its own so that `query` (rows by target) and
//! `sealed` (rows at rest, open or in chunks) both name a table without importing each other:
//! the points tables, the raw rows' generations and the journal's.

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;

/// Which points table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `metrics_5s`: a view over the generation tables [`RAW_TABLES`], which the store's own
    /// statements address directly.
    Raw,
    /// `metrics_1m`.
    Rollup,
    /// `metrics_10m`: rollups of rollups, for ranges over a day.
    Coarse,
}

impl Table {
    /// The table's SQL name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Raw => "metrics_5s",
            Table::Rollup => "metrics_1m",
            Table::Coarse => "metrics_10m",
        }
    }
}

/// The tables raw rows rest in, by generation ([`raw_table`]); the view `metrics_5s` reads
/// both, for SQL readers outside the store (a view over a `UNION ALL` sorts what it reads into
/// a temporary b-tree for an `ORDER BY`, and answers `MIN` by scanning every row, so the
/// store's statements name the tables and merge them in Rust).
pub(crate) const RAW_TABLES: [&str; 2] = ["metrics_5s_0", "metrics_5s_1"];

/// Width of a raw generation: the raw seal's window (the coarse tier's bucket) as configured
/// by default. The rows of `(k * w, (k + 1) * w]` go to table `k mod 2`, so when window `k`
/// is sealed its table holds (in the steady state) only that window's rows and is emptied
/// whole, which frees its pages without writing them. A constant, not the configured width,
/// so that a row's table depends on its time alone and a key is never in both tables; with
/// another seal width (a shorter test rollup) most windows are deleted row by row, as before.
pub(crate) const RAW_GENERATION_MS: i64 = 600_000;

/// The generation table of a raw row of bucket end `ts`.
pub(crate) fn raw_table(ts: i64) -> &'static str {
    RAW_TABLES[raw_generation(ts)]
}

/// The generation (an index of [`RAW_TABLES`]) of a raw row of bucket end `ts`.
pub(crate) fn raw_generation(ts: i64) -> usize {
    ts.saturating_sub(1).div_euclid(RAW_GENERATION_MS).rem_euclid(2) as usize
}

/// Bits of a raw row's key that hold its target id: the key is `ts << 20 | target_id`, so rows
/// sort by time, then target, and a tick's rows are appended at the end of the table's b-tree
/// (a rowid table, whose rightmost page SQLite splits without rebalancing its neighbours).
/// Room: target ids below 2^20, times (ms) below 2^43 (the year 2248).
pub(crate) const RAW_TARGET_BITS: u32 = 20;
/// The target id's part of a raw key.
pub(crate) const RAW_TARGET_MASK: i64 = (1 << RAW_TARGET_BITS) - 1;
/// The earliest and latest times a raw key holds.
const RAW_TS_MIN: i64 = i64::MIN >> RAW_TARGET_BITS;
const RAW_TS_MAX: i64 = i64::MAX >> RAW_TARGET_BITS;

/// The key of a raw row; an error for a target id or time the key has no room for, which is
/// refused rather than stored under another row's key.
pub(crate) fn raw_key(ts: i64, target_id: i64) -> Result<i64, rusqlite::Error> {
    if !(0..=RAW_TARGET_MASK).contains(&target_id) {
        return Err(rusqlite::Error::IntegralValueOutOfRange(0, target_id));
    }
    if !(RAW_TS_MIN..=RAW_TS_MAX).contains(&ts) {
        return Err(rusqlite::Error::IntegralValueOutOfRange(1, ts));
    }
    Ok((ts << RAW_TARGET_BITS) | target_id)
}

/// The greatest raw key at a time (any time: clamped to what a key holds): rows with `ts > a`
/// are those with `key > raw_key_through(a)`, rows with `ts <= b` those with
/// `key <= raw_key_through(b)`, so every time range is one key range. Computed here and bound
/// as a plain integer: the same bound written in SQL (`min`, `max`, shifts) made a multi-row
/// DELETE open a statement journal, which spilled every page it changed to a temporary file.
pub(crate) fn raw_key_through(ts: i64) -> i64 {
    (ts.clamp(RAW_TS_MIN, RAW_TS_MAX) << RAW_TARGET_BITS) | RAW_TARGET_MASK
}

/// The journal's two generations (schema version 14): entries no raw row carries (since
/// schema version 16 most ride in their tick's raw row, [`super::query::upsert_raw_row`]) are appended to
/// the current one ([`journal_table`]); the other is emptied whole once every checkpoint
/// covers it ([`super::query::prune_journal_prefix`]). The view `state_log` reads both, not the raw rows.
pub(crate) const JOURNAL_TABLES: [&str; 2] = ["state_log_0", "state_log_1"];

/// The statement appending an entry to each of [`JOURNAL_TABLES`] (ts, target id, entry).
pub(crate) const JOURNAL_INSERTS: [&str; 2] = [
    "INSERT INTO state_log_0 (ts, target_id, data) VALUES (?1, ?2, ?3)",
    "INSERT INTO state_log_1 (ts, target_id, data) VALUES (?1, ?2, ?3)",
];

/// Which generation new journal entries are appended to: an index of [`JOURNAL_TABLES`].
fn journal_generation(conn: &Connection) -> Result<usize, StoreError> {
    let g: Option<i64> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'journal_generation'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(usize::from(g == Some(1)))
}

/// The generation new journal entries are appended to.
pub(crate) fn journal_table(conn: &Connection) -> Result<&'static str, StoreError> {
    Ok(JOURNAL_TABLES[journal_generation(conn)?])
}

/// The statement that appends a journal entry to the current generation (no SQL is built per
/// entry: a tick appends one per target).
pub(crate) fn journal_insert(conn: &Connection) -> Result<&'static str, StoreError> {
    Ok(JOURNAL_INSERTS[journal_generation(conn)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_keys_sort_by_time_then_target_and_refuse_what_they_cannot_hold() {
        let mut keys = [
            raw_key(10_000, 1).unwrap(),
            raw_key(5_000, RAW_TARGET_MASK).unwrap(),
            raw_key(5_000, 0).unwrap(),
            raw_key(-5_000, 3).unwrap(),
        ];
        keys.sort();
        let decoded: Vec<(i64, i64)> = keys.iter().map(|k| (k >> RAW_TARGET_BITS, k & RAW_TARGET_MASK)).collect();
        assert_eq!(decoded, vec![(-5_000, 3), (5_000, 0), (5_000, RAW_TARGET_MASK), (10_000, 1)]);
        assert!(raw_key(0, RAW_TARGET_MASK + 1).is_err());
        assert!(raw_key(0, -1).is_err());
        assert!(raw_key(RAW_TS_MAX + 1, 1).is_err());
        assert!(raw_key(RAW_TS_MIN - 1, 1).is_err());
        assert_eq!(raw_key(RAW_TS_MAX, RAW_TARGET_MASK).unwrap(), i64::MAX);
    }

    #[test]
    fn a_raw_row_goes_to_its_windows_generation() {
        let w = RAW_GENERATION_MS;
        assert_eq!(w, crate::config::ROLLUP_WIDTH.as_millis() as i64 * crate::ports::read::COARSE_FACTOR);
        let tables: Vec<&str> = [1, w, w + 1, 2 * w, 2 * w + 1, 0, -w, -w + 1].into_iter().map(raw_table).collect();
        let [a, b] = RAW_TABLES;
        assert_eq!(tables, [a, a, b, b, a, b, a, b], "windows (k w, (k + 1) w] alternate");
        assert!(RAW_TABLES.contains(&raw_table(i64::MIN)) && RAW_TABLES.contains(&raw_table(i64::MAX)));
    }

    #[test]
    fn a_time_range_is_the_key_range_between_their_greatest_keys() {
        assert_eq!(raw_key_through(5_000), raw_key(5_000, RAW_TARGET_MASK).unwrap());
        assert!(raw_key_through(5_000) < raw_key(5_001, 0).unwrap());
        assert_eq!(raw_key_through(-1), -1);
        assert_eq!(raw_key_through(i64::MAX), i64::MAX);
        assert_eq!(raw_key_through(i64::MIN), (RAW_TS_MIN << RAW_TARGET_BITS) | RAW_TARGET_MASK);
    }
}
