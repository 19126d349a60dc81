//! Reading and writing rows: targets, variants, the rollup watermark, rows of either table, and
//! each target's running totals as of any moment (what cumulative fields are seeded from).
//!
//! The range query behind `/api/metrics` is [`super::range`].

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension, params};

use super::sealed::{self, StoredRow};
use super::{StoreError, codec};
use crate::clock::bucket_end;
use crate::point::{Counts, RollingRow, TargetRow, Totals};
use crate::ports::ingest::SavedState;

pub use super::table::Table;
use super::table::{JOURNAL_TABLES, raw_generation, raw_key};
pub(crate) use super::table::{journal_insert, journal_table};

/// The `meta` key of the end of the last bucket rolled into `table`.
fn watermark_key(table: Table) -> &'static str {
    match table {
        Table::Raw | Table::Rollup => WATERMARK_KEY,
        Table::Coarse => COARSE_WATERMARK_KEY,
    }
}

/// A target as stored.
#[derive(Debug, Clone)]
pub struct StoredTarget {
    /// Id.
    pub id: i64,
    /// Scrape URL as configured, credentials included: the target's identity.
    pub url: String,
    /// Latest variant.
    pub variant: String,
    /// Serialized scraper state as stored, if the target was ever scraped: decoded only by
    /// whoever restores it ([`StoredState::decode`]).
    pub state: Option<StoredState>,
    /// When that state was written (the completion time of its scrape).
    pub state_ms: Option<i64>,
    /// Latest running totals, if the target was ever scraped.
    pub totals: Option<Totals>,
    /// When the target was first registered: it has no totals before.
    pub first_seen_ms: i64,
}

/// A target's checkpointed scrape state as read from `targets.state`, kept as stored. Every
/// range read lists the targets, and inflating each one's compressed state there cost about
/// a tenth of the process at 100 targets (perf) for a field only a scraper's restore reads;
/// a corrupt state also failed every such read instead of that one target's restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredState {
    /// Deflated, as [`codec::StateColumn`] stores it (since the fifth write-volume stop).
    Compressed(Vec<u8>),
    /// Plain JSON text, as written before.
    Text(String),
}

impl StoredState {
    /// The serialized state.
    pub fn decode(&self) -> Result<String, StoreError> {
        match self {
            Self::Compressed(blob) => Ok(codec::decode_state(blob)?),
            Self::Text(text) => Ok(text.clone()),
        }
    }
}

impl StoredTarget {
    /// The stored scrape state, decoded; an unreadable one (a corrupt blob) is logged and read
    /// as none, so this target starts from a new baseline and nothing else fails.
    pub fn readable_state(&self) -> Option<String> {
        let decoded = self.state.as_ref()?.decode();
        decoded
            .inspect_err(|e| {
                tracing::warn!(target_url = %crate::redact::RedactedUrl(&self.url), error = %e, "Stored scrape state is unreadable; the next scrape is a new baseline.");
            })
            .ok()
    }
}

const WATERMARK_KEY: &str = "rollup_watermark_ms";
const COARSE_WATERMARK_KEY: &str = "coarse_watermark_ms";

/// End of the last minute rolled into `metrics_1m`, if any.
pub fn watermark(conn: &Connection) -> Result<Option<i64>, StoreError> {
    watermark_of(conn, Table::Rollup)
}

/// End of the last bucket rolled into `table` (`metrics_1m` or `metrics_10m`), if any.
pub fn watermark_of(conn: &Connection, table: Table) -> Result<Option<i64>, StoreError> {
    let key = watermark_key(table);
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

/// Moves the rollup watermark.
pub fn set_watermark(conn: &Connection, ms: i64) -> Result<(), StoreError> {
    set_watermark_of(conn, Table::Rollup, ms)
}

/// Moves the watermark of `table`.
pub(crate) fn set_watermark_of(conn: &Connection, table: Table, ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![watermark_key(table), ms],
    )?;
    Ok(())
}

/// Every stored target.
pub fn targets(conn: &Connection) -> Result<Vec<StoredTarget>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id, url, variant, state, state_ms, totals, first_seen_ms FROM targets ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let totals = r.get_ref(5)?.as_blob_or_null().map_err(rusqlite::Error::from)?;
        let state = match r.get_ref(3)? {
            rusqlite::types::ValueRef::Blob(b) => Some(StoredState::Compressed(b.to_vec())),
            _ => r.get::<_, Option<String>>(3)?.map(StoredState::Text),
        };
        out.push(StoredTarget {
            id: r.get(0)?,
            url: r.get(1)?,
            variant: r.get(2)?,
            state,
            state_ms: r.get(4)?,
            totals: totals.map(codec::decode_totals).transpose()?,
            first_seen_ms: r.get(6)?,
        });
    }
    Ok(out)
}

/// A target as the readers that only select and group by target see it: no state, no totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedTarget {
    /// Id.
    pub id: i64,
    /// Scrape URL as configured: what a `target=` filter names.
    pub url: String,
    /// Latest variant.
    pub variant: String,
    /// When the target was first registered.
    pub first_seen_ms: i64,
}

/// Every stored target, without its state and totals: the alert engine's window reads list the
/// targets each evaluation, and [`targets`] copied each one's checkpointed state and decoded
/// its totals there (at 500 targets about 3,000 allocations a second of a soak, the most of
/// any one store function; heaptrack, BENCHMARKS.md "Memory, ninth stop"), for ids and variants.
pub(crate) fn listed_targets(conn: &Connection) -> Result<Vec<ListedTarget>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, url, variant, first_seen_ms FROM targets ORDER BY id")?;
    let listed = stmt.query_map([], |r| {
        Ok(ListedTarget { id: r.get(0)?, url: r.get(1)?, variant: r.get(2)?, first_seen_ms: r.get(3)? })
    })?;
    Ok(listed.collect::<Result<_, _>>()?)
}

/// Every stored target's id, ascending: all a read of every target's rows needs of the
/// listing. The window sums list the targets at each call, and [`listed_targets`]' URL and
/// variant `String`s were 22 allocations per target scrape at 500 targets (heaptrack,
/// BENCHMARKS.md "Allocations, tenth stop").
pub(crate) fn target_ids(conn: &Connection) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id FROM targets ORDER BY id")?;
    let ids = stmt.query_map([], |r| r.get(0))?;
    Ok(ids.collect::<Result<_, _>>()?)
}

/// What [`select_targets`] needs of a target.
pub(crate) trait TargetUrl {
    fn target_url(&self) -> &str;
}

impl TargetUrl for StoredTarget {
    fn target_url(&self) -> &str {
        &self.url
    }
}

impl TargetUrl for ListedTarget {
    fn target_url(&self) -> &str {
        &self.url
    }
}

/// The targets a `target=` filter selects: every one without a filter; else the one whose URL
/// it is, or failing that the first whose shown form (credentials as `***`, what pages link
/// to) it matches. Two URLs that differ only in their credentials show alike: the full URL
/// picks between them.
pub(crate) fn select_targets<T: TargetUrl>(all: Vec<T>, filter: Option<&str>) -> Vec<T> {
    let Some(filter) = filter else { return all };
    let exact = all.iter().position(|t| t.target_url() == filter);
    let chosen = exact.or_else(|| all.iter().position(|t| crate::redact::same_target(filter, t.target_url())));
    chosen.and_then(|i| all.into_iter().nth(i)).into_iter().collect()
}

/// Registers configured targets (keeping ids and state of known ones) and returns them in
/// configuration order.
pub fn register_targets(
    conn: &Connection,
    urls_and_variants: &[(String, String)],
    now_ms: i64,
) -> Result<Vec<StoredTarget>, StoreError> {
    let mut insert =
        conn.prepare_cached("INSERT OR IGNORE INTO targets (url, variant, first_seen_ms) VALUES (?1, ?2, ?3)")?;
    for (url, variant) in urls_and_variants {
        insert.execute(params![url, variant, now_ms])?;
    }
    let all = targets(conn)?;
    let chosen: Vec<StoredTarget> =
        urls_and_variants.iter().filter_map(|(url, _)| all.iter().find(|t| &t.url == url).cloned()).collect();
    if let Some(t) = chosen.iter().find(|t| t.id > super::table::RAW_TARGET_MASK) {
        return Err(StoreError::TooManyTargets(t.id));
    }
    Ok(chosen)
}

/// The journal entries of one target written after its checkpoint, oldest first: those of the
/// journal tables and those carried by its open raw rows.
pub(crate) fn journal_of(
    conn: &Connection,
    target_id: i64,
    after_ms: Option<i64>,
) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    let after = after_ms.unwrap_or(i64::MIN);
    let mut stmt =
        conn.prepare_cached("SELECT ts, data FROM state_log WHERE target_id = ?1 AND ts > ?2 ORDER BY ts")?;
    let rows = stmt.query_map(params![target_id, after], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut out: Vec<(i64, Vec<u8>)> = rows.collect::<Result<_, _>>()?;
    for table in super::table::RAW_TABLES {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT ts - state_lag AS ms, state_entry FROM {table}
             WHERE state_entry IS NOT NULL AND target_id = ?1 AND ts - state_lag > ?2"
        ))?;
        let rows = stmt.query_map(params![target_id, after], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for r in rows {
            out.push(r?);
        }
    }
    out.sort_by_key(|&(ms, _)| ms);
    Ok(out)
}

/// Journal entries by target id: `(time key, entry)`, oldest first.
pub(crate) type Journals = BTreeMap<i64, Vec<(i64, Vec<u8>)>>;

/// Every target's journal entries written after its checkpoint, oldest first, read in one pass
/// over the journal tables and one over each raw generation's open rows (which carry most).
pub fn pending_journals(conn: &Connection) -> Result<Journals, StoreError> {
    let mut out = Journals::new();
    let mut sources = vec![
        "SELECT l.target_id, l.ts, l.data FROM state_log l JOIN targets t ON t.id = l.target_id
         WHERE t.state_ms IS NULL OR l.ts > t.state_ms"
            .to_owned(),
    ];
    sources.extend(super::table::RAW_TABLES.iter().map(|table| {
        format!(
            "SELECT r.target_id, r.ts - r.state_lag, r.state_entry FROM {table} r JOIN targets t ON t.id = r.target_id
             WHERE r.state_entry IS NOT NULL AND (t.state_ms IS NULL OR r.ts - r.state_lag > t.state_ms)"
        )
    }));
    for sql in sources {
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            out.entry(r.get(0)?).or_default().push((r.get(1)?, r.get(2)?));
        }
    }
    for entries in out.values_mut() {
        entries.sort_by_key(|&(ms, _)| ms);
    }
    Ok(out)
}

/// A whole target state to store in place of its checkpoint and journal.
#[derive(Debug, Clone)]
pub(crate) struct Checkpoint {
    /// Target id.
    pub target_id: i64,
    /// Time key of the newest write it includes.
    pub ms: i64,
    /// The scraper's serialized state, compressed.
    pub state: SavedState,
    /// Its running totals.
    pub totals: Totals,
}

/// Stores consolidated checkpoints and drops the journal entries they include, in one
/// transaction.
pub(crate) fn save_checkpoints(conn: &mut Connection, checkpoints: &[Checkpoint]) -> Result<usize, StoreError> {
    let tx = super::write_transaction(conn)?;
    for c in checkpoints {
        tx.prepare_cached(
            "UPDATE targets SET state = ?1, state_ms = ?2, totals = ?3
             WHERE id = ?4 AND (state_ms IS NULL OR state_ms <= ?2)",
        )?
        .execute(params![codec::StateColumn(&c.state), c.ms, codec::encode_totals(&c.totals), c.target_id])?;
    }
    let pruned = prune_journal(&tx)?;
    tx.commit()?;
    Ok(pruned)
}

/// Deletes the journal entries a target's checkpoint already includes.
pub(crate) fn prune_journal(conn: &Connection) -> Result<usize, StoreError> {
    let mut pruned = 0;
    for table in JOURNAL_TABLES {
        pruned += conn.execute(
            &format!(
                "DELETE FROM {table} WHERE ts <= (SELECT t.state_ms FROM targets t WHERE t.id = {table}.target_id)"
            ),
            [],
        )?;
    }
    Ok(pruned)
}

/// How far the journal's oldest entry may lag its newest before [`prune_journal_prefix`] falls
/// back to the exact prune: a target that keeps entries after its checkpoint this long (its
/// task stopped without its final checkpoint) would otherwise keep every target's entries.
const JOURNAL_PREFIX_LAG_MS: i64 = 3_600_000;

/// Deletes the journal entries every checkpoint includes, as the downsampler does each run:
/// the older generation, whole, once all its entries are at or before the oldest checkpoint of
/// a target that has entries after its checkpoint (any, when none has); the emptied table then
/// takes the next entries and the current one waits its turn. Emptying a table whole (a
/// `DELETE` without a condition) hands its pages to the free list without writing them, where
/// deleting a prefix of one table wrote every page it emptied to the WAL, about 480 pages per
/// target-day (BENCHMARKS.md, "Write volume, seventh stop"); and the exact prune
/// ([`prune_journal`]) took a few entries out of every page (fifth stop). Entries stay up to
/// two checkpoint intervals (every live target checkpoints each `CHECKPOINT_EVERY_MS`); should
/// one target's entries stay behind its checkpoint for [`JOURNAL_PREFIX_LAG_MS`], the exact
/// prune runs too, so the journal stays bounded either way.
pub(crate) fn prune_journal_prefix(conn: &Connection) -> Result<usize, StoreError> {
    let cut: Option<i64> = conn.query_row(
        "SELECT MIN(COALESCE(t.state_ms, ?1)) FROM targets t
         JOIN (SELECT target_id, MAX(ts) AS newest FROM state_log GROUP BY target_id) j ON j.target_id = t.id
         WHERE t.state_ms IS NULL OR j.newest > t.state_ms",
        [i64::MIN],
        |r| r.get(0),
    )?;
    let current = journal_table(conn)?;
    let (older, next) = if current == JOURNAL_TABLES[0] { (JOURNAL_TABLES[1], 1) } else { (JOURNAL_TABLES[0], 0) };
    let older_newest: Option<i64> = conn.query_row(&format!("SELECT MAX(ts) FROM {older}"), [], |r| r.get(0))?;
    let mut pruned = 0;
    if older_newest.is_none_or(|newest| newest <= cut.unwrap_or(i64::MAX)) {
        // No condition: SQLite frees the table's pages without rewriting them. Not on an empty
        // table, whose root page the clear would still write: with entries riding in raw rows
        // the journal tables are mostly empty, and the downsampler runs every minute.
        if older_newest.is_some() {
            pruned += conn.execute(&format!("DELETE FROM {older}"), [])?;
        }
        let waiting: bool = conn.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {current})"), [], |r| r.get(0))?;
        if waiting {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('journal_generation', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [next],
            )?;
        }
    }
    let (oldest, newest): (Option<i64>, Option<i64>) =
        conn.query_row("SELECT MIN(ts), MAX(ts) FROM state_log", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if let (Some(oldest), Some(newest)) = (oldest, newest)
        && newest.saturating_sub(oldest) > JOURNAL_PREFIX_LAG_MS
    {
        pruned += prune_journal(conn)?;
    }
    Ok(pruned)
}

/// Every variant name by id.
pub fn variant_names(conn: &Connection) -> Result<HashMap<i64, String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, name FROM variants")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The id of a variant name, created on first use.
pub(crate) fn variant_id(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("INSERT OR IGNORE INTO variants (name) VALUES (?1)")?.execute([name])?;
    Ok(conn.prepare_cached("SELECT id FROM variants WHERE name = ?1")?.query_row([name], |r| r.get(0))?)
}

/// The writer's insert of a new raw row (key, variant, elapsed, payload, entry lag, journal
/// entry), by generation ([`super::table::RAW_TABLES`]): fixed statements, as a tick writes one
/// row per target and formatting the SQL would cost an allocation each.
const RAW_INSERTS: [&str; 2] = [
    "INSERT INTO metrics_5s_0 (ts_target, variant_id, elapsed_ms, data, state_lag, state_entry)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(ts_target) DO NOTHING",
    "INSERT INTO metrics_5s_1 (ts_target, variant_id, elapsed_ms, data, state_lag, state_entry)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(ts_target) DO NOTHING",
];

/// A raw row replaced (a merge of two scrapes in one bucket), by generation: an upsert, not a
/// replace, so that the row keeps the journal entry it carries.
const RAW_REPLACES: [&str; 2] = [
    "INSERT INTO metrics_5s_0 (ts_target, variant_id, elapsed_ms, data) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT(ts_target) DO UPDATE SET
     variant_id = excluded.variant_id, elapsed_ms = excluded.elapsed_ms, data = excluded.data",
    "INSERT INTO metrics_5s_1 (ts_target, variant_id, elapsed_ms, data) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT(ts_target) DO UPDATE SET
     variant_id = excluded.variant_id, elapsed_ms = excluded.elapsed_ms, data = excluded.data",
];

/// Inserts a raw row; if the target already has a row for that bucket (two scrapes completed
/// in one bucket, or a retried late batch), the two are merged instead of one being lost.
/// A row at or before `sealed_through` ([`sealed::sealed_through`]) may land in a sealed window,
/// whose chunk is reopened first so that the merge finds its rows. `entry` is the target's
/// state journal entry of the same tick (its time key and bytes), carried in the row when the
/// row is new ([`RawInsert::carried`]; one row written per target and tick instead of a row and
/// a journal entry in two b-trees, BENCHMARKS.md "Write volume, ninth stop"); a merged row
/// keeps the entry it has, and the caller appends this one to the journal tables.
pub(crate) fn upsert_raw_row(
    conn: &Connection,
    row: &TargetRow,
    sealed_through: Option<i64>,
    entry: Option<(i64, &[u8])>,
) -> Result<RawInsert, StoreError> {
    if sealed_through.is_some_and(|s| row.ts_ms <= s) {
        sealed::unseal(conn, Table::Raw, row.target_id, row.ts_ms)?;
    }
    let vid = variant_id(conn, &row.variant)?;
    let data = codec::encode(&row.counts, &row.totals, &row.gauges);
    // The entry's key as an offset from the row's time: a few bytes where the key takes six.
    let (lag, entry) = match entry.and_then(|(ms, e)| Some((row.ts_ms.checked_sub(ms)?, e))) {
        Some((lag, e)) => (Some(lag), Some(e)),
        None => (None, None),
    };
    // Its generation (by time alone), where any row of the same key is.
    let inserted = conn.prepare_cached(RAW_INSERTS[raw_generation(row.ts_ms)])?.execute(params![
        raw_key(row.ts_ms, row.target_id)?,
        vid,
        row.elapsed_ms,
        data,
        lag,
        entry
    ])?;
    if inserted == 0 {
        let names = variant_names(conn)?;
        if let Some(mut existing) = row_at(conn, Table::Raw, row.target_id, row.ts_ms, &names)? {
            existing.absorb_later(row);
            replace_row(conn, Table::Raw, &existing)?;
        }
    }
    Ok(RawInsert { merged: inserted == 0, carried: inserted == 1 && entry.is_some() })
}

/// What [`upsert_raw_row`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawInsert {
    /// The row merged into one already stored (data already served may have changed).
    pub merged: bool,
    /// The row carries the journal entry handed to it.
    pub carried: bool,
}

/// Writes a row, replacing any row of the same target and bucket: one in a sealed window (a
/// minute rolled again after a late raw row) is reopened first, so the row stays in one place.
pub fn replace_row(conn: &Connection, table: Table, row: &TargetRow) -> Result<(), StoreError> {
    if sealed::sealed_through(conn, table)?.is_some_and(|s| row.ts_ms <= s) {
        sealed::unseal(conn, table, row.target_id, row.ts_ms)?;
    }
    let vid = variant_id(conn, &row.variant)?;
    let data = codec::encode(&row.counts, &row.totals, &row.gauges);
    match table {
        Table::Raw => conn.prepare_cached(RAW_REPLACES[raw_generation(row.ts_ms)])?.execute(params![
            raw_key(row.ts_ms, row.target_id)?,
            vid,
            row.elapsed_ms,
            data
        ])?,
        Table::Rollup | Table::Coarse => conn
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO {} (target_id, ts, variant_id, elapsed_ms, data, present_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                table.name()
            ))?
            .execute(params![row.target_id, row.ts_ms, vid, row.elapsed_ms, data, row.present_ms])?,
    };
    Ok(())
}

/// Presence of a row: stored for rollups (rows rolled before it was stored get their elapsed
/// time, at most the width), one point width for a raw row.
pub(crate) fn presence(table: Table, stored: i64, elapsed_ms: i64, widths: (i64, i64)) -> i64 {
    match table {
        Table::Raw => widths.0,
        Table::Rollup | Table::Coarse if stored > 0 => stored,
        Table::Rollup | Table::Coarse => elapsed_ms.min(widths.1),
    }
}

/// Decodes a row as [`sealed::scan`] hands it over, with its presence ([`presence`]).
fn decode_row(
    table: Table,
    r: StoredRow<'_>,
    names: &HashMap<i64, String>,
    widths: (i64, i64),
) -> Result<TargetRow, StoreError> {
    let (counts, totals, gauges) = codec::decode(r.data)?;
    Ok(TargetRow {
        target_id: r.target_id,
        variant: names.get(&r.variant_id).cloned().unwrap_or_else(|| "unknown".to_owned()),
        ts_ms: r.ts,
        elapsed_ms: r.elapsed_ms,
        present_ms: presence(table, r.present_ms, r.elapsed_ms, widths),
        counts,
        totals,
        gauges,
    })
}

/// Widths assumed by reads that never use the rows' presences (merging a late raw row, tests,
/// seeds); presences matter only to points, whose reads pass the real widths.
const UNKNOWN_WIDTHS: (i64, i64) = (5_000, 60_000);

fn row_at(
    conn: &Connection,
    table: Table,
    target_id: i64,
    ts: i64,
    names: &HashMap<i64, String>,
) -> Result<Option<TargetRow>, StoreError> {
    let mut found = None;
    sealed::scan(conn, table, (ts.saturating_sub(1), ts), Some(target_id), &mut |r| {
        found = Some(decode_row(table, r, names, UNKNOWN_WIDTHS)?);
        Ok(false)
    })?;
    Ok(found)
}

/// Rows of one target with `after < ts <= until`, in time order; raw rows are present for
/// `point_ms` each.
pub fn target_rows(
    conn: &Connection,
    table: Table,
    target_id: i64,
    after: i64,
    until: i64,
    names: &HashMap<i64, String>,
) -> Result<Vec<TargetRow>, StoreError> {
    target_rows_with(conn, table, target_id, (after, until), names, UNKNOWN_WIDTHS)
}

/// [`target_rows`] with the widths presences are computed from.
pub(crate) fn target_rows_with(
    conn: &Connection,
    table: Table,
    target_id: i64,
    (after, until): (i64, i64),
    names: &HashMap<i64, String>,
    widths: (i64, i64),
) -> Result<Vec<TargetRow>, StoreError> {
    let mut out = Vec::new();
    sealed::scan(conn, table, (after, until), Some(target_id), &mut |r| {
        out.push(decode_row(table, r, names, widths)?);
        Ok(true)
    })?;
    Ok(out)
}

/// Hands every raw row with `after < ts <= until` (of one target, or all) to `each`, in time
/// order, decoding one at a time: a caller that only adds rows up (window sums, run every tick
/// by the alert rules) never holds a window's rows at once.
pub(crate) fn each_raw_row(
    conn: &Connection,
    (after, until): (i64, i64),
    only: Option<i64>,
    names: &HashMap<i64, String>,
    widths: (i64, i64),
    each: &mut dyn FnMut(TargetRow),
) -> Result<(), StoreError> {
    sealed::scan(conn, Table::Raw, (after, until), only, &mut |r| {
        each(decode_row(Table::Raw, r, names, widths)?);
        Ok(true)
    })
}

/// A raw row read in place ([`codec::view`]): what callers that only add rows up need.
pub(crate) struct RawView<'a> {
    /// Bucket end, ms.
    pub ts_ms: i64,
    /// Target id.
    pub target_id: i64,
    /// The variant's name (`unknown` for an id without one, as [`decode_row`] names it).
    pub variant: &'a str,
    /// The payload, read in place.
    pub row: codec::RowView<'a>,
}

/// [`each_raw_row`] (over the rows of `variant_ids` only, when given: a canary pair's strata
/// need two variants' rows of a store that may hold many) without decoding the rows: each is
/// handed over read in place, so adding it into sums allocates only for labels the sums lack.
/// Decoding every row of the alert engine's windows into a [`TargetRow`] (a `String` per
/// label, a map per family, the quota) was the largest share of a 500-target process's
/// allocations (heaptrack, BENCHMARKS.md "Allocations, tenth stop").
pub(crate) fn each_raw_view(
    conn: &Connection,
    (after, until): (i64, i64),
    (only, variant_ids): (Option<i64>, Option<&[i64]>),
    names: &HashMap<i64, String>,
    each: &mut dyn FnMut(RawView<'_>),
) -> Result<(), StoreError> {
    sealed::scan(conn, Table::Raw, (after, until), only, &mut |r| {
        if variant_ids.is_none_or(|ids| ids.contains(&r.variant_id)) {
            let variant = names.get(&r.variant_id).map_or("unknown", String::as_str);
            each(RawView { ts_ms: r.ts, target_id: r.target_id, variant, row: codec::view(r.data)? });
        }
        Ok(true)
    })
}

/// The running totals of a target's row of a rolled table (open or sealed), as `find` finds
/// it ([`sealed::newest_through`], [`sealed::oldest_after`]): what its payload says at its end.
fn row_totals(find: sealed::Lookup, table: Table, target_id: i64, t0: i64, conn: &Connection) -> RowTotals {
    find(conn, table, target_id, t0)?.map(|r| found(r.ts, r.variant_id, &r.data)).transpose()
}

/// A row found for a target's totals.
struct Found {
    ts: i64,
    variant_id: i64,
    /// Totals at the row's end.
    totals: Totals,
    /// The row's own increases (its totals minus these are the totals at its start).
    counts: Counts,
}

type RowTotals = Result<Option<Found>, StoreError>;

/// Every target's running totals as of `t0`, and the variant they belong to; a target not seen
/// by then is absent.
///
/// Every table, range and cache must agree on cumulative fields, whatever has aged out, so
/// for each target this looks in order: its latest row at or before `t0` in any table (exact);
/// else, for a target last scraped before `t0` whose rows aged out, its persisted final totals
/// (a pod that vanished long ago keeps counting in its variant's totals); else its first row
/// after `t0`, minus its own increases (its totals at that row's start: a live target whose
/// older rows aged out). A target first registered after `t0` had no totals then: it is absent,
/// exactly as the live stream starts it.
///
/// The raw table is keyed by time, so it is scanned once for every target, only over the rows
/// a rolled row cannot stand for: `t0`'s own minute and the minutes not rolled yet. A target
/// found there needs nothing more: a rolled row at or before `t0` is either at or before the
/// rollup watermark, which that scan starts after, or ends a bucket holding the raw row found
/// (the scan covers `t0`'s whole minute), and a rolled row takes the totals and variant of its
/// bucket's newest raw row, which is the one found. Only the others look up their latest
/// rolled row, target by target (key or index: one lookup, plus decoding the chunk that holds
/// it when sealed, [`sealed::newest_through`]); these lookups were most of the pages a cold
/// one-hour read touched (BENCHMARKS.md, "First request, seventh stop").
pub(crate) fn totals_at(
    conn: &Connection,
    targets: &[StoredTarget],
    t0: i64,
    names: &HashMap<i64, String>,
    rollup_ms: i64,
) -> Result<HashMap<i64, (String, Totals)>, StoreError> {
    let unrolled = unrolled_after(watermark(conn)?, t0, rollup_ms);
    let mut raw = raw_newest(conn, (unrolled, t0))?;
    let mut out = HashMap::with_capacity(targets.len());
    let mut unseen = Vec::new();
    for t in targets {
        let name = |vid: i64| names.get(&vid).cloned().unwrap_or_else(|| t.variant.clone());
        // A raw row found here is as new as any rolled row at or before t0 can be, and holds
        // the same totals and variant: see the function's doc.
        let mut before = raw.remove(&t.id);
        if before.is_none() {
            for table in [Table::Rollup, Table::Coarse] {
                // A row ending at t0 itself is as new as a coarser table's can be (a tie keeps
                // the finer row): decoding the coarser chunk, a day of 10 min rows, would find
                // nothing newer. A read split into parts starts each at a bucket edge, where
                // the 1 min row usually is (`cache::read_fresh`).
                if before.as_ref().is_some_and(|f| f.ts >= t0) {
                    break;
                }
                before = newest(before, row_totals(sealed::newest_through, table, t.id, t0, conn)?);
            }
        }
        if let Some(f) = before {
            out.insert(t.id, (name(f.variant_id), f.totals));
        } else if let Some(totals) = t.totals.filter(|_| t.state_ms.is_some_and(|ms| ms <= t0)) {
            // Scraped last before t0 and every row aged out: its totals at t0 are its final ones.
            out.insert(t.id, (t.variant.clone(), totals));
        } else if t.first_seen_ms <= t0 {
            // Seen before t0 but its rows up to t0 aged out: derived from its first row after.
            unseen.push(t);
        }
    }
    if unseen.is_empty() {
        return Ok(out);
    }
    let mut raw_after = raw_oldest_after(conn, t0, unseen.iter().map(|t| t.id).collect())?;
    for t in unseen {
        let mut after = raw_after.remove(&t.id);
        for table in [Table::Rollup, Table::Coarse] {
            after = oldest(after, row_totals(sealed::oldest_after, table, t.id, t0, conn)?);
        }
        if let Some(f) = after {
            let variant = names.get(&f.variant_id).cloned().unwrap_or_else(|| t.variant.clone());
            out.insert(t.id, (variant, totals_before(&f.totals, &f.counts)));
        }
    }
    Ok(out)
}

/// Where the raw rows a rolled row cannot stand for begin, for totals as of `t0`: `t0`'s own
/// minute and the minutes after the rollup `watermark`; none at all when `t0` ends a minute
/// that is rolled. There the 1 min row ending at `t0` holds the totals and variant of its
/// minute's newest raw row (the writer lowers the watermark in the same transaction as a late
/// row lands in a rolled minute), so scanning that minute's raw rows, which decodes the raw
/// chunk holding them from its start, finds nothing newer. A read split into parts starts each
/// inner part on a window's edge, a minute's end (`cache::part_edges`): rolled unless it is
/// newer than the watermark.
fn unrolled_after(watermark: Option<i64>, t0: i64, rollup_ms: i64) -> i64 {
    let watermark = watermark.unwrap_or(i64::MIN);
    if t0.rem_euclid(rollup_ms) == 0 && t0 <= watermark { t0 } else { watermark.min(t0.saturating_sub(rollup_ms)) }
}

/// Each target's newest raw row in `(after, until]`, from one scan.
fn raw_newest(conn: &Connection, (after, until): (i64, i64)) -> Result<HashMap<i64, Found>, StoreError> {
    let mut newest: HashMap<i64, (i64, i64, Vec<u8>)> = HashMap::new();
    sealed::scan(conn, Table::Raw, (after, until), None, &mut |r| {
        let slot = newest.entry(r.target_id).or_default();
        (slot.0, slot.1) = (r.ts, r.variant_id);
        slot.2.clear();
        slot.2.extend_from_slice(r.data);
        Ok(true)
    })?;
    newest.into_iter().map(|(id, (ts, variant_id, data))| Ok((id, found(ts, variant_id, &data)?))).collect()
}

/// The first raw row after `t0` of each of `wanted`, scanning forward until all are found.
fn raw_oldest_after(
    conn: &Connection,
    t0: i64,
    mut wanted: std::collections::HashSet<i64>,
) -> Result<HashMap<i64, Found>, StoreError> {
    let mut out = HashMap::new();
    sealed::scan(conn, Table::Raw, (t0, i64::MAX), None, &mut |r| {
        if wanted.remove(&r.target_id) {
            out.insert(r.target_id, found(r.ts, r.variant_id, r.data)?);
        }
        Ok(!wanted.is_empty())
    })?;
    Ok(out)
}

/// A [`Found`] from a row's time, variant and payload.
fn found(ts: i64, variant_id: i64, data: &[u8]) -> Result<Found, StoreError> {
    let v = codec::view(data)?;
    let mut counts = Counts::default();
    v.add_to(&mut counts);
    Ok(Found { ts, variant_id, totals: v.totals, counts })
}

fn newest(a: Option<Found>, b: Option<Found>) -> Option<Found> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.ts > a.ts { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn oldest(a: Option<Found>, b: Option<Found>) -> Option<Found> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.ts < a.ts { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Totals before a row's increases were added: the inverse of [`Totals::accumulate`].
fn totals_before(after: &Totals, counts: &Counts) -> Totals {
    let mut added = Totals::default();
    added.accumulate(counts);
    let sub = |a: f64, b: f64| (a - b).max(0.0);
    let arr = |a: [f64; 4], b: [f64; 4]| std::array::from_fn(|i| sub(a[i], b[i]));
    Totals {
        requests_2xx: sub(after.requests_2xx, added.requests_2xx),
        requests_4xx: sub(after.requests_4xx, added.requests_4xx),
        requests_5xx: sub(after.requests_5xx, added.requests_5xx),
        tokens: arr(after.tokens, added.tokens),
        cost: arr(after.cost, added.cost),
        rejections: sub(after.rejections, added.rejections),
        adj_increase: sub(after.adj_increase, added.adj_increase),
        adj_decrease: sub(after.adj_decrease, added.adj_decrease),
        upstream_errors: sub(after.upstream_errors, added.upstream_errors),
        retry_attempts: sub(after.retry_attempts, added.retry_attempts),
    }
}

/// Every target ever seen with its latest running totals and variant: the live point
/// builder's seed, so the first live points carry the totals of pods that vanished before
/// zai-dash started as well as of the live ones. The newest row says them exactly; the stored
/// totals (written with each checkpoint) serve once a target's rows aged out.
pub(crate) fn latest_totals(conn: &Connection, rollup_ms: i64) -> Result<Vec<(i64, String, Totals)>, StoreError> {
    let names = variant_names(conn)?;
    let all = targets(conn)?;
    let mut totals = totals_at(conn, &all, i64::MAX, &names, rollup_ms)?;
    Ok(all.iter().filter_map(|t| totals.remove(&t.id).map(|(variant, totals)| (t.id, variant, totals))).collect())
}

/// Rolls raw rows of many targets, streaming by in time order, into rows per `rollup_ms`
/// bucket, folding each row into its target's open bucket as it comes: rolling a long range (a
/// catch-up after a restart, a wide chart step) or every target's minute holds one rolled row
/// per target, not the rows (at 500 targets a minute's decoded rows were 6.4 MB of the
/// downsampler's heap; BENCHMARKS.md, "Memory").
#[derive(Debug)]
pub(crate) struct Roller {
    width_ms: i64,
    open: HashMap<i64, RollingRow>,
}

impl Roller {
    /// A roller into buckets of `width_ms`.
    pub(crate) fn new(width_ms: i64) -> Self {
        Self { width_ms, open: HashMap::new() }
    }

    /// Takes the target's next row; when it starts a new bucket, returns the target's previous
    /// bucket rolled up.
    pub(crate) fn push(&mut self, row: TargetRow) -> Option<TargetRow> {
        let end = bucket_end(row.ts_ms, self.width_ms);
        match self.open.entry(row.target_id) {
            std::collections::hash_map::Entry::Occupied(mut slot) if slot.get().ts_ms() == end => {
                slot.get_mut().fold_later(row);
                None
            }
            std::collections::hash_map::Entry::Occupied(mut slot) => {
                let done = std::mem::replace(slot.get_mut(), TargetRow::start_rollup(row, end));
                Some(done.finish())
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(TargetRow::start_rollup(row, end));
                None
            }
        }
    }

    /// [`Self::push`] of a stored raw row: the row that opens a target's bucket is decoded to
    /// start the rollup, the later ones are added in from their payload read in place, so
    /// rolling a minute decodes one row per target instead of twelve (each a `String` per
    /// label and a map per family; BENCHMARKS.md "Allocations, tenth stop").
    pub(crate) fn push_stored(
        &mut self,
        r: StoredRow<'_>,
        names: &HashMap<i64, String>,
        widths: (i64, i64),
    ) -> Result<Option<TargetRow>, StoreError> {
        let end = bucket_end(r.ts, self.width_ms);
        if let Some(open) = self.open.get_mut(&r.target_id)
            && open.ts_ms() == end
        {
            let v = codec::view(r.data)?;
            let quota = v.quota()?;
            v.add_to(open.counts_mut());
            let variant = names.get(&r.variant_id).map_or("unknown", String::as_str);
            let times = (r.elapsed_ms, presence(Table::Raw, r.present_ms, r.elapsed_ms, widths));
            open.fold_parts((r.target_id, variant), times, v.totals, v.gauges, quota);
            return Ok(None);
        }
        Ok(self.push(decode_row(Table::Raw, r, names, widths)?))
    }

    /// The buckets still open, rolled up.
    pub(crate) fn finish(self) -> Vec<TargetRow> {
        self.open.into_values().map(RollingRow::finish).collect()
    }
}

/// Groups time-ordered raw rows of one target into rolled-up rows per `rollup_ms` bucket.
pub fn roll_minutes(rows: &[TargetRow], rollup_ms: i64) -> Vec<TargetRow> {
    rows.chunk_by(|a, b| bucket_end(a.ts_ms, rollup_ms) == bucket_end(b.ts_ms, rollup_ms))
        .filter_map(|chunk| TargetRow::rollup(chunk, bucket_end(chunk[0].ts_ms, rollup_ms)))
        .collect()
}

/// Events with `after < ts <= until`, oldest first.
pub(crate) fn events(
    conn: &Connection,
    after: i64,
    until: i64,
) -> Result<Vec<crate::ports::ingest::Event>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT ts, kind, variant, target, detail FROM events WHERE ts > ?1 AND ts <= ?2 ORDER BY ts, id",
    )?;
    let mut rows = stmt.query(params![after, until])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let kind: String = r.get(1)?;
        let Some(kind) = crate::ports::ingest::EventKind::parse(&kind) else { continue }; // a newer build's kind
        out.push(crate::ports::ingest::Event {
            ts_ms: r.get(0)?,
            kind,
            variant: r.get(2)?,
            target: r.get(3)?,
            detail: r.get(4)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_raw_statement_writes_its_own_generation() {
        use super::super::table::RAW_TABLES;
        for (g, table) in RAW_TABLES.iter().enumerate() {
            for sql in [super::RAW_INSERTS[g], super::RAW_REPLACES[g]] {
                let into = sql.split_whitespace().skip_while(|w| *w != "INTO").nth(1);
                assert_eq!(into, Some(*table), "{sql}");
            }
        }
    }

    use super::*;

    /// Raw rows written before payload version 3 (an existing database's open rows) read back
    /// as they were, beside new rows, open and after the seal has put both in one chunk; a late
    /// row merges into an old one.
    #[test]
    fn raw_rows_of_the_previous_payload_format_read_back_beside_new_ones() {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        c.execute_batch("INSERT INTO targets (id, url, variant, first_seen_ms) VALUES (1, 'a', 'p', 0)").unwrap();
        let (counts, totals, gauges) = codec::tests::typical_row();
        let row = |ts_ms| TargetRow {
            target_id: 1,
            variant: "p".into(),
            ts_ms,
            elapsed_ms: 5_000,
            present_ms: 0,
            counts: counts.clone(),
            totals,
            gauges: gauges.clone(),
        };
        let vid = variant_id(&c, "p").unwrap();
        c.execute(
            "INSERT INTO metrics_5s_0 (ts_target, variant_id, elapsed_ms, data) VALUES (?1, ?2, 5000, ?3)",
            params![raw_key(5_000, 1).unwrap(), vid, codec::tests::typical_row_v2()],
        )
        .unwrap();
        upsert_raw_row(&c, &row(10_000), None, None).unwrap();
        let old: Vec<u8> = c.query_row("SELECT data FROM metrics_5s_0 ORDER BY ts_target", [], |r| r.get(0)).unwrap();
        let new: Vec<u8> = c.query_row("SELECT data FROM metrics_5s_0 WHERE ts = 10000", [], |r| r.get(0)).unwrap();
        assert_eq!((old[0], new[0]), (2, 3), "one row of each format");
        let names = variant_names(&c).unwrap();
        // Raw rows read back present for one point width (5 s when the caller gives none).
        let want: Vec<_> = [row(5_000), row(10_000)].map(|r| TargetRow { present_ms: 5_000, ..r }).into();
        let read = |c: &Connection| target_rows(c, Table::Raw, 1, 0, 20_000, &names).unwrap();
        assert_eq!(read(&c), want, "open");
        super::super::sealed::seal(&mut c, Table::Raw, 600_000, 600_000).unwrap();
        let open: i64 = c.query_row("SELECT count(*) FROM metrics_5s", [], |r| r.get(0)).unwrap();
        assert_eq!(open, 0);
        assert_eq!(read(&c), want, "sealed in one chunk");
        // A late scrape of the old row's bucket merges into it (reopening the chunk).
        let sealed = super::super::sealed::sealed_through(&c, Table::Raw).unwrap();
        upsert_raw_row(&c, &row(5_000), sealed, None).unwrap();
        let merged = read(&c).remove(0);
        let mut twice = counts.clone();
        twice.add(&counts);
        assert_eq!((merged.counts, merged.totals, merged.gauges), (twice, totals, gauges.clone()));
    }

    fn target(id: i64, url: &str) -> StoredTarget {
        StoredTarget {
            id,
            url: url.into(),
            variant: "production".into(),
            state: None,
            state_ms: None,
            totals: None,
            first_seen_ms: 0,
        }
    }

    /// Journal keys of every entry left, by target.
    fn journal(c: &Connection) -> Vec<(i64, i64)> {
        let mut stmt = c.prepare("SELECT target_id, ts FROM state_log ORDER BY target_id, ts").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn a_target_beyond_the_raw_keys_room_is_refused_at_registration() {
        let last = super::super::table::RAW_TARGET_MASK;
        let c = journal_db(&[(last, None)], &[]);
        let fits = register_targets(&c, &[(format!("http://pod-{last}/metrics"), "p".into())], 0).unwrap();
        assert_eq!(fits[0].id, last);
        // The next URL gets the next id, which a raw row's key cannot hold.
        let refused = register_targets(&c, &[("http://pod-new/metrics".into(), "p".into())], 0);
        assert!(matches!(refused, Err(StoreError::TooManyTargets(id)) if id == last + 1), "{refused:?}");
    }

    fn journal_db(targets: &[(i64, Option<i64>)], entries: &[(i64, i64)]) -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        for &(id, state_ms) in targets {
            c.execute(
                "INSERT INTO targets (id, url, variant, state, state_ms, first_seen_ms) VALUES (?1, ?2, 'p', '{}', ?3, 0)",
                params![id, format!("http://pod-{id}/metrics"), state_ms],
            )
            .unwrap();
        }
        for &(id, ts) in entries {
            append_entry(&c, id, ts);
        }
        c
    }

    /// Appends a journal entry to the current generation, as the writer does.
    fn append_entry(c: &Connection, target_id: i64, ts: i64) {
        let table = journal_table(c).unwrap();
        c.execute(&format!("INSERT INTO {table} (ts, target_id, data) VALUES (?1, ?2, x'01')"), [ts, target_id])
            .unwrap();
    }

    /// `t0`'s own minute is scanned when it is not rolled yet, or when `t0` is inside it;
    /// a rolled minute ending at `t0` stands for its raw rows.
    #[test]
    fn a_raw_row_in_the_seeded_minute_gives_the_totals_unless_the_minute_is_rolled() {
        let c = journal_db(&[(1, None), (2, None)], &[]);
        let row = |target_id, ts_ms, requests_2xx| TargetRow {
            target_id,
            ts_ms,
            variant: "p".into(),
            totals: Totals { requests_2xx, ..Totals::default() },
            ..TargetRow::default()
        };
        set_watermark(&c, 60_000).unwrap();
        replace_row(&c, Table::Raw, &row(1, 115_000, 7.0)).unwrap();
        // A 1 min row after target 1's raw row: one the downsampler rolled would repeat the raw
        // row's totals; these differ so that reading it would show in the answer.
        replace_row(&c, Table::Rollup, &row(1, 120_000, 99.0)).unwrap();
        replace_row(&c, Table::Coarse, &row(1, 120_000, 98.0)).unwrap();
        // Target 2 has no raw row in the minute: its rolled row answers.
        replace_row(&c, Table::Rollup, &row(2, 60_000, 5.0)).unwrap();
        let (names, all) = (variant_names(&c).unwrap(), targets(&c).unwrap());
        let got = totals_at(&c, &all, 120_000, &names, 60_000).unwrap();
        assert_eq!(got[&1].1.requests_2xx, 7.0, "the raw row, found by the scan, is enough");
        assert_eq!(got[&2].1.requests_2xx, 5.0, "without one, the newest rolled row");
        set_watermark(&c, 120_000).unwrap();
        let got = totals_at(&c, &all, 120_000, &names, 60_000).unwrap();
        assert_eq!(got[&1].1.requests_2xx, 99.0, "a rolled minute ending at t0: its 1 min row, the raw rows unread");
        assert_eq!(got[&2].1.requests_2xx, 5.0);
        let got = totals_at(&c, &all, 119_000, &names, 60_000).unwrap();
        assert_eq!(got[&1].1.requests_2xx, 7.0, "inside a rolled minute, its raw rows");
    }

    #[test]
    fn each_generation_is_appended_to_by_its_own_statement() {
        use super::super::table::JOURNAL_INSERTS;
        for (table, insert) in JOURNAL_TABLES.iter().zip(JOURNAL_INSERTS) {
            assert!(insert.starts_with(&format!("INSERT INTO {table} ")), "{insert}");
        }
        let c = journal_db(&[], &[]);
        assert_eq!(journal_insert(&c).unwrap(), JOURNAL_INSERTS[0]);
        c.execute("UPDATE meta SET value = 1 WHERE key = 'journal_generation'", []).unwrap();
        assert_eq!(journal_insert(&c).unwrap(), JOURNAL_INSERTS[1]);
    }

    #[test]
    fn the_journal_goes_a_generation_at_a_time_once_checkpoints_cover_it() {
        // Target 1 has entries after its checkpoint (100), target 2 has none after its own
        // (180), target 3 stopped long ago.
        let c = journal_db(
            &[(1, Some(100)), (2, Some(180)), (3, Some(10)), (4, None)],
            &[(1, 50), (1, 100), (1, 150), (1, 200), (2, 60), (2, 120), (2, 180), (3, 5)],
        );
        let pending = pending_journals(&c).unwrap();
        assert_eq!(journal_table(&c).unwrap(), "state_log_0");
        assert_eq!(prune_journal_prefix(&c).unwrap(), 0, "the other generation was empty");
        assert_eq!(journal_table(&c).unwrap(), "state_log_1", "new entries go to the emptied one");
        assert_eq!(journal(&c).len(), 8);
        assert_eq!(pending_journals(&c).unwrap(), pending);

        append_entry(&c, 2, 240);
        assert_eq!(prune_journal_prefix(&c).unwrap(), 0, "target 1's entry at 200 is after its checkpoint");
        assert_eq!(journal(&c).len(), 9);
        assert_eq!(journal_table(&c).unwrap(), "state_log_1");

        c.execute("UPDATE targets SET state_ms = 200 WHERE id = 1", []).unwrap();
        assert_eq!(prune_journal_prefix(&c).unwrap(), 0, "target 2's checkpoint (180) is before target 1's 200");
        c.execute("UPDATE targets SET state_ms = 240 WHERE id = 2", []).unwrap();
        let pending = pending_journals(&c).unwrap();
        assert_eq!(prune_journal_prefix(&c).unwrap(), 8, "every checkpoint covers the older generation: all of it");
        assert_eq!(journal(&c), [(2, 240)]);
        assert_eq!(pending_journals(&c).unwrap(), pending, "nothing a replay needs is gone");
        assert_eq!(journal_table(&c).unwrap(), "state_log_0");

        append_entry(&c, 4, 90);
        let pending = pending_journals(&c).unwrap();
        assert_eq!(prune_journal_prefix(&c).unwrap(), 0, "target 4 has no checkpoint: all its entries count");
        assert_eq!(pending_journals(&c).unwrap(), pending);
        assert_eq!(journal(&c), [(2, 240), (4, 90)]);
    }

    #[test]
    fn a_target_stuck_behind_its_checkpoint_for_an_hour_gets_the_exact_prune() {
        // Target 1's entry after its checkpoint pins the prefix; target 2 checkpoints on.
        let hour = JOURNAL_PREFIX_LAG_MS;
        let two: Vec<(i64, i64)> = (0..=12).map(|i| (2, 300 + i * hour / 6)).collect();
        let mut entries = vec![(1, 200), (1, 300)];
        entries.extend(&two);
        let c = journal_db(&[(1, Some(200)), (2, Some(300 + 2 * hour))], &entries);
        let pending = pending_journals(&c).unwrap();
        prune_journal_prefix(&c).unwrap();
        assert_eq!(journal(&c), [(1, 300)], "target 2's entries went although target 1 pins the prefix");
        assert_eq!(pending_journals(&c).unwrap(), pending);
    }

    #[test]
    fn checkpointed_states_are_stored_compressed_and_read_back_exactly_as_older_plain_ones() {
        use crate::ports::ingest::{StateUpdate, StateWrite, WriteBatch};
        let mut c = journal_db(&[(1, None), (2, None), (3, None)], &[]);
        // A state as the scraper writes it: series and their values, much repeated text.
        let json = |n: usize| {
            let series: Vec<String> = (0..n)
                .map(|i| format!("{{\"name\":\"zai_proxy_requests_total\",\"code\":\"{i}\",\"v\":{i}.5}}"))
                .collect();
            format!("{{\"series\":[{}]}}", series.join(","))
        };
        let update = |target_id, json: String| StateUpdate {
            target_id,
            scraped_ms: 5_000,
            write: StateWrite::Checkpoint(json.into()),
            totals: Totals::default(),
            variant: "p".into(),
        };
        let batch = WriteBatch {
            bucket_end_ms: 5_000,
            rows: vec![],
            states: vec![update(1, json(200))],
            points: vec![],
            events: vec![],
            late: false,
        };
        super::super::write::write_batch(&mut c, &batch, 60_000).unwrap();
        let start_up = Checkpoint { target_id: 2, ms: 5_000, state: json(3).into(), totals: Totals::default() };
        save_checkpoints(&mut c, &[start_up]).unwrap();
        c.execute("UPDATE targets SET state = ?1, state_ms = 5000 WHERE id = 3", [json(2)]).unwrap();
        let stored: Vec<(String, i64)> = c
            .prepare("SELECT typeof(state), length(state) FROM targets ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!((stored[0].0.as_str(), stored[1].0.as_str(), stored[2].0.as_str()), ("blob", "blob", "text"));
        assert!(stored[0].1 * 4 < json(200).len() as i64, "compressed: {} of {} bytes", stored[0].1, json(200).len());
        let states: Vec<Option<String>> =
            targets(&c).unwrap().into_iter().map(|t| t.state.map(|s| s.decode().unwrap())).collect();
        assert_eq!(states, [Some(json(200)), Some(json(3)), Some(json(2))]);

        // The light listing is the full one without state and totals, column for column.
        c.execute("UPDATE targets SET variant = 'canary', first_seen_ms = 700 WHERE id = 2", []).unwrap();
        let projected: Vec<ListedTarget> = targets(&c)
            .unwrap()
            .into_iter()
            .map(|t| ListedTarget { id: t.id, url: t.url, variant: t.variant, first_seen_ms: t.first_seen_ms })
            .collect();
        assert_eq!(listed_targets(&c).unwrap(), projected);
        assert_eq!((projected[1].variant.as_str(), projected[1].first_seen_ms), ("canary", 700));
        assert_ne!(projected[0].url, projected[0].variant);
    }

    #[test]
    fn a_target_filter_picks_one_target_by_its_url_or_its_shown_form() {
        let all =
            || vec![target(1, "http://h/m"), target(2, "http://u:a@h/m?token=a"), target(3, "http://u:b@h/m?token=b")];
        let ids = |filter| select_targets(all(), filter).iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(ids(None), [1, 2, 3]);
        assert_eq!(ids(Some("http://h/m")), [1]);
        assert_eq!(ids(Some("http://u:b@h/m?token=b")), [3], "the full URL picks exactly");
        assert_eq!(ids(Some("http://***@h/m?token=***")), [2], "the shown form: the first that shows so");
        assert!(ids(Some("http://elsewhere/m")).is_empty());
    }

    /// Rolling stored rows from their payloads ([`Roller::push_stored`]) gives, to the bit,
    /// what rolling the decoded rows gives: increases (labels that come and go, histograms
    /// whose bounds change), gauges, quota, variant and totals of the last row.
    #[test]
    fn rolling_stored_rows_in_place_rolls_as_the_decoded_rows() {
        use crate::point::{ClientCounts, GaugeStat, Histogram, Quota};
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        let hist = |bounds: &[f64], n: f64| Histogram {
            buckets: bounds.iter().enumerate().map(|(i, &le)| (le, n * (i + 1) as f64 + 0.1)).collect(),
            sum: n / 3.0,
            count: n * bounds.len() as f64 + 0.1,
        };
        for i in 0..40_i64 {
            for target_id in [1, 2] {
                let n = (i * target_id) as f64 / 7.0;
                let mut row = TargetRow {
                    target_id,
                    variant: if i % 11 == 5 { "canary" } else { "production" }.into(),
                    ts_ms: 1_000_000 + i * 5_000,
                    elapsed_ms: 5_000,
                    ..TargetRow::default()
                };
                let k = &mut row.counts;
                k.requests.insert(format!("{}", 200 + i % 4).into(), n);
                k.tokens.insert(if i % 3 == 0 { "glm-4.7" } else { "glm-4.5-air" }.into(), [n, 1.0, 0.0, n]);
                k.duration = hist(if i % 6 == 2 { &[0.1, 0.5, f64::INFINITY] } else { &[0.1, f64::INFINITY] }, n);
                if i % 2 == 0 {
                    k.clients.insert("source-07".into(), ClientCounts { rejections: n, wait: hist(&[1.0], n) });
                }
                row.totals.requests_2xx = (i * 10) as f64;
                row.gauges.concurrent = (i % 5 != 0).then(|| GaugeStat::single(n));
                row.gauges.quota = (i % 4 == 1).then(|| Quota { gate_open: Some(i % 8 == 1), ..Quota::default() });
                replace_row(&c, Table::Raw, &row).unwrap();
            }
        }
        let names = variant_names(&c).unwrap();
        let widths = (5_000, 60_000);
        let mut decoded = Roller::new(60_000);
        let mut from_decoded = Vec::new();
        each_raw_row(&c, (0, i64::MAX), None, &names, widths, &mut |r| from_decoded.extend(decoded.push(r))).unwrap();
        from_decoded.extend(decoded.finish());
        let mut in_place = Roller::new(60_000);
        let mut from_stored = Vec::new();
        sealed::scan(&c, Table::Raw, (0, i64::MAX), None, &mut |r| {
            from_stored.extend(in_place.push_stored(r, &names, widths)?);
            Ok(true)
        })
        .unwrap();
        from_stored.extend(in_place.finish());
        let key = |rows: &mut Vec<TargetRow>| {
            rows.sort_by_key(|r| (r.ts_ms, r.target_id));
            format!("{rows:?}")
        };
        assert_eq!(from_decoded.len(), 2 * 4, "two targets, three full minutes and a partial one");
        assert_eq!(key(&mut from_stored), key(&mut from_decoded));
    }
}
