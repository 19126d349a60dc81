//! Rollup of complete minutes from `metrics_5s` into `metrics_1m`, and retention.
//!
//! A watermark in `meta` marks the end of the last rolled minute, so the job resumes after a
//! restart and never reads a minute twice unless told to: the writer lowers the watermark when
//! a late row lands in an already rolled minute, and the minute is rolled again. Rolling
//! replaces rows (`INSERT OR REPLACE`), so running over the same minute twice changes nothing.
//! Retention trims each table by its own setting (raw rows only once rolled), then hands freed
//! pages back with an incremental vacuum, so the file stays bounded.

use std::time::Instant;

use rusqlite::Connection;

use super::StoreError;
use super::query::{self, Table};

/// At most this many minutes are rolled per transaction, so a long backlog (first start on a
/// big file) never holds the write lock for long.
const MINUTES_PER_TRANSACTION: i64 = 60;

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Rows written to `metrics_1m`.
    pub rolled_rows: usize,
    /// New watermark, if any.
    pub watermark_ms: Option<i64>,
    /// Rows deleted from `metrics_5s`.
    pub deleted_raw: usize,
    /// Rows deleted from `metrics_1m`.
    pub deleted_rollup: usize,
    /// Raw rows at or before this were deleted (when `deleted_raw > 0`).
    pub raw_cutoff_ms: i64,
    /// Rollup rows at or before this were deleted (when `deleted_rollup > 0`).
    pub rollup_cutoff_ms: i64,
    /// Wall time of the run in ms.
    pub duration_ms: u64,
}

/// Timing parameters of a run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Width of a raw point (5 s): each raw row is present for this long.
    pub point_ms: i64,
    /// Rollup bucket width (60 s).
    pub rollup_ms: i64,
    /// A minute is complete once this long has passed after its end (late scrapes).
    pub settle_ms: i64,
    /// `RETENTION_5S`.
    pub retention_raw_ms: i64,
    /// `RETENTION_1M`.
    pub retention_rollup_ms: i64,
}

/// Rolls every complete minute and enforces retention, as of `now_ms`.
pub fn run_once(conn: &mut Connection, now_ms: i64, plan: Plan) -> Result<Report, StoreError> {
    let started = Instant::now();
    let mut report = Report::default();
    let last_complete = (now_ms - plan.settle_ms).div_euclid(plan.rollup_ms) * plan.rollup_ms;
    let mut wm = match query::watermark(conn)? {
        Some(w) => w,
        None => match first_raw_minute(conn, plan.rollup_ms)? {
            Some(m) => m - plan.rollup_ms,
            None => last_complete,
        },
    };
    while wm < last_complete {
        let until = (wm + MINUTES_PER_TRANSACTION * plan.rollup_ms).min(last_complete);
        report.rolled_rows += roll_range(conn, wm, until, plan)?;
        wm = until;
    }
    if query::watermark(conn)?.is_none() {
        query::set_watermark(conn, wm)?;
    }
    report.watermark_ms = Some(wm);
    let (raw, rolled) = enforce_retention(conn, now_ms, wm, plan)?;
    report.deleted_raw = raw;
    report.deleted_rollup = rolled;
    report.raw_cutoff_ms = (now_ms - plan.retention_raw_ms).min(wm);
    report.rollup_cutoff_ms = now_ms - plan.retention_rollup_ms;
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

fn first_raw_minute(conn: &Connection, rollup_ms: i64) -> Result<Option<i64>, StoreError> {
    let min: Option<i64> = conn.query_row("SELECT MIN(ts) FROM metrics_5s", [], |r| r.get(0))?;
    Ok(min.map(|ts| crate::clock::bucket_end(ts, rollup_ms)))
}

/// Rolls minutes ending in `(after, until]` for every target, in one transaction.
fn roll_range(conn: &mut Connection, after: i64, until: i64, plan: Plan) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    let names = query::variant_names(&tx)?;
    let mut written = 0;
    for t in query::targets(&tx)? {
        let rows =
            query::target_rows_with(&tx, Table::Raw, t.id, (after, until), &names, (plan.point_ms, plan.rollup_ms))?;
        for rolled in query::roll_minutes(&rows, plan.rollup_ms) {
            query::replace_row(&tx, Table::Rollup, &rolled)?;
            written += 1;
        }
    }
    // Only move forward: a concurrent writer may have lowered it for a late row meanwhile,
    // in which case its lower value must win.
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'rollup_watermark_ms' AND value = ?2",
        rusqlite::params![until, after],
    )?;
    if query::watermark(&tx)?.is_none() {
        query::set_watermark(&tx, until)?;
    }
    tx.commit()?;
    Ok(written)
}

fn enforce_retention(
    conn: &mut Connection,
    now_ms: i64,
    watermark: i64,
    plan: Plan,
) -> Result<(usize, usize), StoreError> {
    let raw_cutoff = (now_ms - plan.retention_raw_ms).min(watermark);
    let rollup_cutoff = now_ms - plan.retention_rollup_ms;
    let tx = conn.transaction()?;
    let mut raw = 0;
    let mut rolled = 0;
    for t in query::targets(&tx)? {
        raw += tx
            .execute("DELETE FROM metrics_5s WHERE target_id = ?1 AND ts <= ?2", rusqlite::params![t.id, raw_cutoff])?;
        rolled += tx.execute(
            "DELETE FROM metrics_1m WHERE target_id = ?1 AND ts <= ?2",
            rusqlite::params![t.id, rollup_cutoff],
        )?;
    }
    tx.execute("DELETE FROM events WHERE ts <= ?1", [rollup_cutoff])?;
    tx.commit()?;
    if raw + rolled > 0 {
        conn.execute_batch("PRAGMA incremental_vacuum;")?;
    }
    Ok((raw, rolled))
}
