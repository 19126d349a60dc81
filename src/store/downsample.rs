//! Rollups and retention: complete minutes of `metrics_5s` into `metrics_1m`, then complete
//! 10 minutes of `metrics_1m` into `metrics_10m` (what ranges over a day read); then rolled
//! windows sealed into compressed chunks ([`super::sealed::seal`]): raw rows by 10 minutes,
//! 1 minute rows by the hour, 10 minute rows by the day.
//!
//! A watermark per rolled table in `meta` marks the end of its last rolled bucket, so the job
//! resumes after a restart and never reads a bucket twice unless told to: the writer lowers the
//! watermarks when a late row lands in an already rolled bucket, and it is rolled again.
//! Rolling replaces rows (`INSERT OR REPLACE`), so running over the same bucket twice changes
//! nothing. Retention trims each table by its own setting (a finer table only once rolled into
//! the next). Freed pages are reused by the next rows; only when they exceed half the file and
//! 64 MiB (retention cut, most pods gone) does a `VACUUM` hand them back to the file system,
//! so the file stays bounded without rewriting pages every minute.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rusqlite::Connection;
use tokio_util::sync::CancellationToken;

use super::query::{self, Table};
use super::sealed;
use super::{Store, StoreError, StoreSettings};
use crate::clock::SharedClock;

/// At most this many minutes are rolled per transaction, so a long backlog (first start on a
/// big file) never holds the write lock for long.
const MINUTES_PER_TRANSACTION: i64 = 60;
/// 1 minute rows per chunk (an hour): 60 rows share one full payload, and a late raw row
/// reopens at most an hour of a target's minutes.
const ROLLUP_ROWS_PER_CHUNK: i64 = 60;
/// 10 minute rows per chunk (a day): what a day's range reads is one chunk per target;
/// retention keeps at most a day beyond `RETENTION_10M` (30 days by default).
const COARSE_ROWS_PER_CHUNK: i64 = 144;

/// The window a chunk of `table` covers when the downsampler seals it, for a rollup width of
/// `rollup_ms`: raw rows by the coarse tier's bucket (10 minutes), 1 minute rows by
/// [`ROLLUP_ROWS_PER_CHUNK`], 10 minute rows by [`COARSE_ROWS_PER_CHUNK`]. Readers that split
/// a read at these edges decode each chunk once (`cache::read_fresh`).
pub(crate) fn chunk_window_ms(table: Table, rollup_ms: i64) -> i64 {
    let coarse_ms = rollup_ms * crate::ports::read::COARSE_FACTOR;
    match table {
        Table::Raw => coarse_ms,
        Table::Rollup => ROLLUP_ROWS_PER_CHUNK * rollup_ms,
        Table::Coarse => COARSE_ROWS_PER_CHUNK * coarse_ms,
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Rows written to `metrics_1m`.
    pub rolled_rows: usize,
    /// Rows written to `metrics_10m`.
    pub coarse_rows: usize,
    /// New watermark of `metrics_1m`, if any.
    pub watermark_ms: Option<i64>,
    /// Raw rows sealed into chunks (windows rolled into minutes; see [`super::sealed`]).
    pub sealed_rows: usize,
    /// Raw generation tables emptied whole by the seal (each a window's rows freed without
    /// writing their pages); a window sealed otherwise was deleted row by row.
    pub cleared_raw_generations: usize,
    /// 1 and 10 minute rows sealed into chunks (hours rolled into 10 minutes, complete days).
    pub sealed_rolled_rows: usize,
    /// Raw rows deleted (open rows, and sealed ones a whole chunk at a time).
    pub deleted_raw: usize,
    /// Rows deleted from `metrics_1m`.
    pub deleted_rollup: usize,
    /// Scrape state journal entries deleted (their target's checkpoint includes them).
    pub pruned_journal: usize,
    /// Rows deleted from `metrics_10m`.
    pub deleted_coarse: usize,
    /// Raw rows at or before this were deleted (when `deleted_raw > 0`).
    pub raw_cutoff_ms: i64,
    /// Rollup rows at or before this were deleted (when `deleted_rollup > 0`).
    pub rollup_cutoff_ms: i64,
    /// Coarse rows at or before this were deleted (when `deleted_coarse > 0`).
    pub coarse_cutoff_ms: i64,
    /// Wall time of the run in ms.
    pub duration_ms: u64,
}

/// The downsampler: one run every `DOWNSAMPLE_INTERVAL` until `stop`, each run's duration in
/// seconds handed to `observe` (self-metrics). A failed run is logged (at most once a minute)
/// and retried next interval; cached points of buckets retention deleted are forgotten.
pub(crate) async fn run(
    store: Store,
    settings: StoreSettings,
    clock: SharedClock,
    stop: CancellationToken,
    observe: impl Fn(f64) + Send + 'static,
) {
    let plan = settings.downsample_plan();
    let mut interval = tokio::time::interval(settings.downsample_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = interval.tick() => {}
        }
        let now = clock.now_ms();
        let started = Instant::now();
        let result = store.with_conn(move |c| run_once(c, now, plan)).await;
        observe(started.elapsed().as_secs_f64());
        match result {
            Ok(r) => {
                forget_deleted(&store, &r);
                tracing::debug!(
                    rolled = r.rolled_rows,
                    sealed = r.sealed_rows,
                    sealed_rolled = r.sealed_rolled_rows,
                    deleted_raw = r.deleted_raw,
                    deleted_rollup = r.deleted_rollup,
                    duration_ms = r.duration_ms,
                    "Downsample run finished."
                )
            }
            Err(e) => {
                static FAILED: crate::telemetry::LogThrottle = crate::telemetry::LogThrottle::new();
                if let Some(suppressed) = FAILED.admit() {
                    tracing::warn!(error = %e, suppressed, "Downsample run failed; it will be retried next interval.");
                }
            }
        }
    }
}

/// Cached points of buckets whose rows retention just deleted are forgotten.
fn forget_deleted(store: &Store, r: &Report) {
    if r.deleted_raw > 0 {
        store.cache().forget_through(true, r.raw_cutoff_ms);
    }
    if r.deleted_rollup > 0 || r.deleted_coarse > 0 {
        store.cache().forget_through(false, r.rollup_cutoff_ms.max(r.coarse_cutoff_ms));
    }
    if r.deleted_rollup > 0 {
        store.judge_cache().forget_before(r.rollup_cutoff_ms);
    }
}

/// Timing parameters of a run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Width of a raw point (5 s): each raw row is present for this long.
    pub point_ms: i64,
    /// Rollup bucket width (60 s); a coarse bucket is [`crate::ports::read::COARSE_FACTOR`] of them.
    pub rollup_ms: i64,
    /// A minute is complete once this long has passed after its end (late scrapes).
    pub settle_ms: i64,
    /// `RETENTION_5S`.
    pub retention_raw_ms: i64,
    /// `RETENTION_1M`.
    pub retention_rollup_ms: i64,
    /// `RETENTION_10M`.
    pub retention_coarse_ms: i64,
}

impl Plan {
    fn coarse_ms(&self) -> i64 {
        self.rollup_ms * crate::ports::read::COARSE_FACTOR
    }
}

/// One rolled table: which table feeds it, its bucket width, up to where its source is complete.
#[derive(Debug, Clone, Copy)]
struct Tier {
    source: Table,
    target: Table,
    width_ms: i64,
}

/// Rolls every complete minute, then every complete 10 minutes of rolled minutes, and enforces
/// retention, as of `now_ms`.
pub fn run_once(conn: &mut Connection, now_ms: i64, plan: Plan) -> Result<Report, StoreError> {
    let started = Instant::now();
    let mut report = Report::default();
    let minutes = Tier { source: Table::Raw, target: Table::Rollup, width_ms: plan.rollup_ms };
    let settled = (now_ms - plan.settle_ms).div_euclid(plan.rollup_ms) * plan.rollup_ms;
    let (wm, rolled) = roll_tier(conn, minutes, settled, plan)?;
    report.rolled_rows = rolled;
    report.watermark_ms = Some(wm);
    let tens = Tier { source: Table::Rollup, target: Table::Coarse, width_ms: plan.coarse_ms() };
    let (coarse_wm, coarse_rows) = roll_tier(conn, tens, wm.div_euclid(tens.width_ms) * tens.width_ms, plan)?;
    report.coarse_rows = coarse_rows;
    let width = |table| chunk_window_ms(table, plan.rollup_ms);
    let raw = sealed::seal(conn, Table::Raw, width(Table::Raw), wm)?;
    (report.sealed_rows, report.cleared_raw_generations) = (raw.rows, raw.cleared);
    report.sealed_rolled_rows = sealed::seal(conn, Table::Rollup, width(Table::Rollup), coarse_wm)?.rows
        + sealed::seal(conn, Table::Coarse, width(Table::Coarse), coarse_wm)?.rows;
    enforce_retention(conn, now_ms, (wm, coarse_wm), plan, &mut report)?;
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Rolls the tier's complete buckets ending at or before `complete` (in transactions of a
/// bounded size); returns the tier's watermark and the rows written.
fn roll_tier(conn: &mut Connection, tier: Tier, complete: i64, plan: Plan) -> Result<(i64, usize), StoreError> {
    let mut wm = match query::watermark_of(conn, tier.target)? {
        Some(w) => w,
        None => match first_row(conn, tier.source, tier.width_ms)? {
            Some(end) => end - tier.width_ms,
            None => complete,
        },
    };
    let mut written = 0;
    while wm < complete {
        let until = (wm + MINUTES_PER_TRANSACTION * tier.width_ms).min(complete);
        written += roll_range(conn, tier, (wm, until), plan)?;
        wm = until;
    }
    if query::watermark_of(conn, tier.target)?.is_none() {
        query::set_watermark_of(conn, tier.target, wm)?;
    }
    Ok((wm, written))
}

/// End of the first bucket of `width_ms` holding a row of `table`.
fn first_row(conn: &Connection, table: Table, width_ms: i64) -> Result<Option<i64>, StoreError> {
    Ok(sealed::oldest_ts(conn, table)?.map(|ts| crate::clock::bucket_end(ts, width_ms)))
}

/// Rolls the tier's buckets ending in `(after, until]` for every target, in one transaction.
fn roll_range(conn: &mut Connection, tier: Tier, (after, until): (i64, i64), plan: Plan) -> Result<usize, StoreError> {
    let tx = super::write_transaction(conn)?;
    let names = query::variant_names(&tx)?;
    let widths = (plan.point_ms, plan.rollup_ms);
    let mut written = 0;
    let rolled = match tier.source {
        Table::Raw => {
            let mut roller = query::Roller::new(tier.width_ms);
            let mut rolled = Vec::new();
            sealed::scan(&tx, Table::Raw, (after, until), None, &mut |r| {
                rolled.extend(roller.push_stored(r, &names, widths)?);
                Ok(true)
            })?;
            rolled.extend(roller.finish());
            rolled
        }
        Table::Rollup | Table::Coarse => {
            let mut rolled = Vec::new();
            for t in query::listed_targets(&tx)? {
                let rows = query::target_rows_with(&tx, tier.source, t.id, (after, until), &names, widths)?;
                rolled.extend(query::roll_minutes(&rows, tier.width_ms));
            }
            rolled
        }
    };
    for row in &rolled {
        query::replace_row(&tx, tier.target, row)?;
        written += 1;
    }
    // Only move forward: a concurrent writer may have lowered it for a late row meanwhile,
    // in which case its lower value must win.
    let current = query::watermark_of(&tx, tier.target)?;
    match current {
        Some(w) if w == after => query::set_watermark_of(&tx, tier.target, until)?,
        None => query::set_watermark_of(&tx, tier.target, until)?,
        Some(_) => {}
    }
    tx.commit()?;
    Ok(written)
}

/// A file with a pointer map hands back free pages beyond this share of it (incremental vacuum).
const FREE_SHARE_KEPT: i64 = 8;
/// Free bytes always kept for the next rows: below this a rewrite of the file costs more writes
/// than the space is worth (a day of raw rows of 100 targets takes about 150 MB).
const FREE_BYTES_KEPT: i64 = 64 << 20;

/// Hands free pages back to the file system once they are more than half the file and
/// [`FREE_BYTES_KEPT`] (after retention was cut by half or more, or most pods went away). The
/// file has no pointer map (`schema`), so handing pages back is a `VACUUM`: it copies every
/// page once and holds the write lock meanwhile (the writer's batches wait in its backlog). In
/// the steady state the free list holds about one sealed window of raw rows, which the next
/// window's rows reuse; half the file keeps that from ever triggering a rewrite, even in a
/// young file of thousands of targets that is mostly raw rows (an eighth, the share the
/// incremental vacuum used, would have rewritten such a file at every run). A file a build
/// before 2026-12-06 created keeps its pointer map (`schema` does not rewrite it) and gets
/// the incremental vacuum it had: beyond an eighth of the file, moving only those pages.
fn hand_back_free_pages(conn: &Connection, floor_bytes: i64, gave_up: &AtomicBool) -> Result<(), StoreError> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    let (free, pages) = (pragma("freelist_count")?, pragma("page_count")?);
    if pragma("auto_vacuum")? != 0 {
        if free > pages / FREE_SHARE_KEPT {
            // The pragma frees one page per step (each step returns a row): stepped to its end,
            // not once as `execute_batch` would, which freed one page per run.
            let mut stmt =
                conn.prepare(&format!("PRAGMA incremental_vacuum({})", free - pages / (2 * FREE_SHARE_KEPT)))?;
            let mut freed = stmt.query([])?;
            while freed.next()?.is_some() {}
        }
        return Ok(());
    }
    if free.saturating_mul(2) > pages
        && free.saturating_mul(pragma("page_size")?) > floor_bytes
        && !gave_up.load(Ordering::Relaxed)
    {
        tracing::info!(free_pages = free, pages, "Handing free pages back to the file system (VACUUM).");
        if let Err(e) = conn.execute_batch("VACUUM;") {
            // Not retried until a restart: each attempt writes its copy until it fails.
            gave_up.store(true, Ordering::Relaxed);
            tracing::warn!(error = %e, "Could not hand free pages back (VACUUM needs room for a copy of the database in SQLite's temporary directory); the file keeps them for the next rows.");
        }
    }
    Ok(())
}

/// A `VACUUM` failed in this process (its copy found no room, typically a small temporary
/// directory): the free pages are kept for the next rows rather than the copy written again
/// every run, and the run's retention (committed before) is reported as usual.
static VACUUM_FAILED: AtomicBool = AtomicBool::new(false);

/// Trims each table by its retention; a finer table only where its rows are already rolled
/// into the next (`watermarks` of the 1 min and 10 min tables).
fn enforce_retention(
    conn: &mut Connection,
    now_ms: i64,
    (minute_wm, coarse_wm): (i64, i64),
    plan: Plan,
    report: &mut Report,
) -> Result<(), StoreError> {
    report.raw_cutoff_ms = (now_ms - plan.retention_raw_ms).min(minute_wm);
    report.rollup_cutoff_ms = (now_ms - plan.retention_rollup_ms).min(coarse_wm);
    report.coarse_cutoff_ms = now_ms - plan.retention_coarse_ms;
    let tx = super::write_transaction(conn)?;
    // Open rows exactly, sealed rows a whole chunk at a time (see `sealed`).
    report.deleted_raw = sealed::delete_through(&tx, Table::Raw, report.raw_cutoff_ms)?;
    report.deleted_rollup = sealed::delete_through(&tx, Table::Rollup, report.rollup_cutoff_ms)?;
    report.deleted_coarse = sealed::delete_through(&tx, Table::Coarse, report.coarse_cutoff_ms)?;
    tx.execute("DELETE FROM events WHERE ts <= ?1", [report.coarse_cutoff_ms])?;
    super::canary_log::trim(&tx, now_ms - plan.retention_rollup_ms)?;
    report.pruned_journal = query::prune_journal_prefix(&tx)?;
    tx.commit()?;
    hand_back_free_pages(conn, FREE_BYTES_KEPT, &VACUUM_FAILED)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated file whose table of `pages` pages of rows was just dropped, and its sizes.
    fn file_with_free_pages(dir: &std::path::Path, pages: i64) -> Connection {
        file_with_free_pages_in(dir, pages, "")
    }

    /// As [`file_with_free_pages`], first setting `pragmas` on the empty file.
    fn file_with_free_pages_in(dir: &std::path::Path, pages: i64, pragmas: &str) -> Connection {
        let mut c = Connection::open(dir.join("t.db")).unwrap();
        c.execute_batch(&format!("{pragmas} PRAGMA journal_mode = WAL;")).unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        c.execute_batch("CREATE TABLE filler (b BLOB)").unwrap();
        for _ in 0..pages {
            c.execute("INSERT INTO filler (b) VALUES (zeroblob(4000))", []).unwrap();
        }
        c.execute_batch("DROP TABLE filler").unwrap();
        c
    }

    fn pragma(c: &Connection, name: &str) -> i64 {
        c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_large_surplus_of_free_pages_is_handed_back_and_a_small_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = file_with_free_pages(dir.path(), 400);
        let (free, pages) = (pragma(&c, "freelist_count"), pragma(&c, "page_count"));
        assert!(free >= 400 && free * 2 > pages, "{free} of {pages}");
        hand_back_free_pages(&c, FREE_BYTES_KEPT, &AtomicBool::new(false)).unwrap();
        assert_eq!(pragma(&c, "freelist_count"), free, "1.6 MB free: kept for the next rows");

        // Rows in use beside them: under half the file free, as in the steady state.
        c.execute_batch("CREATE TABLE live (b BLOB)").unwrap();
        for _ in 0..800 {
            c.execute("INSERT INTO live (b) VALUES (zeroblob(4000))", []).unwrap();
        }
        c.execute("DELETE FROM live WHERE rowid > 500", []).unwrap();
        let (free, pages) = (pragma(&c, "freelist_count"), pragma(&c, "page_count"));
        assert!(free >= 250 && free * 2 < pages, "{free} of {pages}");
        hand_back_free_pages(&c, 1 << 20, &AtomicBool::new(false)).unwrap();
        assert_eq!(pragma(&c, "freelist_count"), free, "under half the file: reused by the next rows");

        c.execute("DELETE FROM live WHERE rowid > 50", []).unwrap();
        let pages = pragma(&c, "page_count");
        hand_back_free_pages(&c, 1 << 20, &AtomicBool::new(false)).unwrap();
        assert_eq!(pragma(&c, "freelist_count"), 0, "over the floor and half the file: handed back");
        assert!(pragma(&c, "page_count") < pages / 2, "the file shrank");
        assert_eq!(pragma(&c, "auto_vacuum"), 0, "still without a pointer map");
        let n: i64 = c.query_row("SELECT count(*) FROM live", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 50, "the rows in use are kept");
    }

    #[test]
    fn a_file_that_kept_its_pointer_map_hands_pages_back_in_place() {
        let dir = tempfile::tempdir().unwrap();
        // As builds before 2026-12-06 created it; `migrate` leaves it so.
        let c = file_with_free_pages_in(dir.path(), 400, "PRAGMA auto_vacuum = INCREMENTAL; VACUUM;");
        assert_eq!(pragma(&c, "auto_vacuum"), 2);
        let (free, pages) = (pragma(&c, "freelist_count"), pragma(&c, "page_count"));
        assert!(free > pages / FREE_SHARE_KEPT, "{free} of {pages}");
        // Far below the VACUUM's floor: the incremental vacuum needs no copy and no floor.
        hand_back_free_pages(&c, FREE_BYTES_KEPT, &AtomicBool::new(false)).unwrap();
        let (left, now) = (pragma(&c, "freelist_count"), pragma(&c, "page_count"));
        assert!(left <= pages / (2 * FREE_SHARE_KEPT) + 1, "{left} free of {now} left");
        assert!(now < pages - free / 2, "the file shrank: {pages} -> {now} pages");
        assert_eq!(pragma(&c, "auto_vacuum"), 2, "still incremental");
    }

    #[test]
    fn a_failed_vacuum_keeps_the_free_pages_and_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let c = file_with_free_pages(dir.path(), 400);
        c.execute_batch("CREATE TABLE busy (x); INSERT INTO busy VALUES (1), (2);").unwrap();
        let free = pragma(&c, "freelist_count");
        let gave_up = AtomicBool::new(false);
        {
            // A statement under way on the connection: SQLite refuses to VACUUM.
            let mut stmt = c.prepare("SELECT x FROM busy").unwrap();
            let mut rows = stmt.query([]).unwrap();
            rows.next().unwrap();
            hand_back_free_pages(&c, 1 << 20, &gave_up).unwrap();
        }
        assert!(gave_up.load(Ordering::Relaxed), "the failure is remembered");
        assert_eq!(pragma(&c, "freelist_count"), free, "kept for the next rows");
        hand_back_free_pages(&c, 1 << 20, &gave_up).unwrap();
        assert_eq!(pragma(&c, "freelist_count"), free, "not tried again in this process");
    }
}
