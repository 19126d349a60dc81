//! The single writer: one transaction per tick, a bounded backlog in front of it.
//!
//! The ticker never waits for the disk. [`WriteQueue::submit`] puts the batch's rows in the
//! store's backlog ([`super::held`]) at once, where every read finds them from that moment on,
//! and tells the writer with a `try_send`; a slow or locked disk delays rows but never hides or
//! loses them (a batch waiting in the channel would be invisible to reads for as long as the
//! writer is busy). The writer writes the backlog oldest first, one transaction per batch. While the database refuses writes (disk full, read-only, I/O error, locked) the backlog
//! keeps up to [`MAX_BACKLOG`] batches and is retried every [`RETRY_INTERVAL`], new batches or
//! not; the failure is on the health board (`/healthz`, the pages' banner,
//! `zai_dash_storage_healthy`, the `StorageFailing` rule) until every held batch is written.
//!
//! Points are published to the live hub once, when the writer takes their notice: after the
//! write while writes succeed, at once while they fail. A notice that finds the channel full is
//! merged into the next one, so no point is dropped and none reaches the live stream or the
//! alerts twice; reads add the held rows to the stored ones, so REST agrees with what SSE has
//! shown either way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, params};
use tokio::sync::mpsc;

pub(crate) use super::held::MAX_BACKLOG;
use super::{Store, StoreError, query};
use crate::clock::{SharedClock, bucket_end};
use crate::health::HealthBoard;
use crate::point::Point;
use crate::ports::ingest::{BatchSink, Event, PointSink};
pub use crate::ports::ingest::{StateUpdate, StateWrite, WriteBatch};

/// How often held batches are retried while the database refuses writes. A timer rather than
/// the next batch, so that recovery shows within a second even when no target answers.
pub(crate) const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Counters of the writer, for logs and self-metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Batches committed.
    pub committed: AtomicU64,
    /// Batches dropped: the backlog outgrew an hour of them, or the writer was gone.
    pub dropped: AtomicU64,
    /// Notices that found the channel full and were merged into the next one (none is lost).
    pub merged: AtomicU64,
    /// Failed transaction attempts.
    pub failed: AtomicU64,
    /// Batches waiting in the retry backlog.
    pub backlog: AtomicU64,
    /// Notices waiting in the channel for the writer.
    pub queued: AtomicU64,
}

/// What the writer is told about a batch already in the backlog: the points and events to
/// publish once it is written (of several buckets, when notices were merged).
#[derive(Debug, Default)]
pub struct Notice {
    points: Vec<Point>,
    events: Vec<Event>,
}

impl Notice {
    fn absorb(&mut self, later: Notice) {
        self.points.extend(later.points);
        self.events.extend(later.events);
    }
}

/// The sending side of the writer's queue.
#[derive(Debug, Clone)]
pub struct WriteQueue {
    tx: mpsc::Sender<Notice>,
    stats: Arc<WriterStats>,
    /// Where batches wait to be written, and reads find them meanwhile.
    store: Store,
    /// Notices that found the channel full, merged into one, with how many buckets it holds.
    merged: Arc<Mutex<Option<(Notice, usize)>>>,
}

/// Creates the queue in front of `store`'s backlog; the receiver goes to [`run_writer`].
pub fn channel(capacity: usize, stats: Arc<WriterStats>, store: &Store) -> (WriteQueue, mpsc::Receiver<Notice>) {
    let (tx, rx) = mpsc::channel(capacity);
    (WriteQueue { tx, stats, store: store.clone(), merged: Arc::default() }, rx)
}

impl BatchSink for WriteQueue {
    fn submit(&self, batch: WriteBatch) {
        WriteQueue::submit(self, batch);
    }

    fn flush(&self) -> crate::ports::BoxFuture<'_, ()> {
        Box::pin(WriteQueue::flush(self))
    }
}

impl WriteQueue {
    /// Puts the batch's rows in the backlog, where reads see them at once, and tells the writer
    /// without waiting. When the channel is full, the notice is merged with later ones until the
    /// writer takes them (counted, logged once). Only beyond [`MAX_BACKLOG`] held batches, a
    /// writer stuck for an hour, is the oldest dropped.
    pub fn submit(&self, mut batch: WriteBatch) {
        let notice = Notice { points: std::mem::take(&mut batch.points), events: batch.events.clone() };
        if self.store.held().push(batch) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut merged) = self.merged.lock() else { return };
        let (notice, buckets) = match merged.take() {
            Some((mut earlier, n)) => {
                earlier.absorb(notice);
                (earlier, n + 1)
            }
            None => (notice, 1),
        };
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(notice) {
            Ok(()) => {
                if buckets > 1 {
                    tracing::info!(buckets, "Write queue has room again; merged notices handed to the writer.");
                }
            }
            Err(mpsc::error::TrySendError::Full(notice)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.merged.fetch_add(1, Ordering::Relaxed);
                if buckets == 1 {
                    tracing::warn!("Write queue full; merging notices until the writer catches up.");
                }
                *merged = self.keep(notice, buckets);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Keeps a merged notice unless it already holds an hour of buckets (its points go; the
    /// rows stay in the backlog).
    fn keep(&self, notice: Notice, buckets: usize) -> Option<(Notice, usize)> {
        if buckets <= MAX_BACKLOG {
            return Some((notice, buckets));
        }
        tracing::error!(buckets, "The writer has taken nothing for an hour; their live points dropped.");
        None
    }

    /// Waits until a merged notice is in the channel (the ticker calls it after its last batch).
    pub(crate) async fn flush(&self) {
        let merged = self.merged.lock().ok().and_then(|mut h| h.take());
        if let Some((notice, _)) = merged {
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
            if self.tx.send(notice).await.is_err() {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Where the writer says whether the database takes writes, and the clock that dates it.
#[derive(Debug, Clone)]
pub struct Reporting {
    /// The board `/healthz`, the pages and the alert rules read.
    pub health: HealthBoard,
    /// Wall clock (when a failure started).
    pub clock: SharedClock,
}

/// Writes the backlog whenever told, until every sender is gone, then makes one last attempt.
pub async fn run_writer(
    store: Store,
    mut rx: mpsc::Receiver<Notice>,
    hub: impl PointSink,
    stats: Arc<WriterStats>,
    reporting: Reporting,
    rollup_ms: i64,
) {
    let mut w = Writer { store, stats, reporting, rollup_ms, failing: None };
    let mut retry_at = tokio::time::Instant::now();
    loop {
        let notice = tokio::select! {
            notice = rx.recv() => match notice {
                Some(n) => n,
                None => break,
            },
            () = tokio::time::sleep_until(retry_at), if w.failing.is_some() => {
                w.drain().await;
                retry_at = tokio::time::Instant::now() + RETRY_INTERVAL;
                continue;
            }
        };
        w.stats.queued.fetch_sub(1, Ordering::Relaxed);
        if w.failing.is_some() {
            w.report_holding();
        } else {
            w.drain().await;
            retry_at = tokio::time::Instant::now() + RETRY_INTERVAL;
        }
        hub.publish(notice.points);
        if !notice.events.is_empty() {
            hub.publish_events(notice.events);
        }
    }
    if !w.store.held().is_empty() {
        w.drain().await;
    }
    let left = w.store.held().len();
    if left > 0 {
        tracing::error!(batches = left, "Shutting down with unwritten batches; the database kept refusing writes.");
    }
}

/// The writer task's state.
struct Writer {
    store: Store,
    stats: Arc<WriterStats>,
    reporting: Reporting,
    rollup_ms: i64,
    /// Why the last attempt failed, if it did: the backlog is then retried on the timer, not
    /// per batch.
    failing: Option<&'static str>,
}

impl Writer {
    /// Puts the backlog's size on the health board while writes fail.
    fn report_holding(&self) {
        let held = self.store.held().len();
        self.stats.backlog.store(held as u64, Ordering::Relaxed);
        self.reporting.health.storage_holding(held);
    }

    /// Writes the backlog oldest first, stopping at the first failure; logs and reports only
    /// when writes start failing or recover.
    async fn drain(&mut self) {
        let was_failing = self.failing.is_some();
        let mut written = 0;
        while let Some(batch) = self.store.held().front() {
            let touches_served = batch.late || was_failing;
            let bucket_end_ms = batch.bucket_end_ms;
            let rollup_ms = self.rollup_ms;
            match self.store.with_conn(move |c| write_batch(c, &batch, rollup_ms)).await {
                Ok(merged) => {
                    if merged || touches_served {
                        self.store.cache().invalidate(); // rows landed in buckets that may have been served
                    }
                    self.store.held().release_front(|| self.store.note_committed(bucket_end_ms));
                    written += 1;
                    self.stats.committed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return self.failed(&e),
            }
        }
        self.stats.backlog.store(0, Ordering::Relaxed);
        if was_failing {
            tracing::info!(batches = written, "Database writes recovered; the backlog is written.");
            self.reporting.health.storage_recovered();
        }
        self.failing = None;
    }

    fn failed(&mut self, e: &StoreError) {
        let held = self.store.held().len();
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.stats.backlog.store(held as u64, Ordering::Relaxed);
        let reason = e.write_failure();
        // Logged when writes start failing and whenever the reason changes (a full disk, then a
        // lock), so the log explains every reason `/healthz` has shown, not only the first.
        if self.failing != Some(reason) {
            tracing::error!(error = %e, backlog = held, "Database write failed; keeping batches in memory to retry.");
        }
        let stored_until = Some(self.store.committed_until()).filter(|&ms| ms != i64::MIN);
        let now = self.reporting.clock.now_ms();
        self.reporting.health.storage_failed(now, reason.to_owned(), held, stored_until);
        self.failing = Some(reason);
    }
}

/// Checkpoints replace a target's stored state (never with an older one); journal entries not
/// carried by a raw row (`carried`, indices into `states`) are appended to the journal's
/// current generation (`query::journal_insert`, read once per batch; a batch is committed
/// once: a failed attempt wrote nothing).
fn write_states(conn: &Connection, states: &[StateUpdate], carried: &[bool]) -> Result<(), StoreError> {
    let mut journal = None;
    for (i, s) in states.iter().enumerate() {
        match &s.write {
            StateWrite::Checkpoint(saved) => {
                let totals = super::codec::encode_totals(&s.totals);
                let json = super::codec::StateColumn(saved);
                conn.prepare_cached(
                    "UPDATE targets SET state = ?1, state_ms = ?2, variant = ?3, totals = ?5
                     WHERE id = ?4 AND (state_ms IS NULL OR state_ms <= ?2)",
                )?
                .execute(params![json, s.scraped_ms, s.variant, s.target_id, totals])?;
            }
            StateWrite::Journal(_) if carried.get(i).copied().unwrap_or(false) => {}
            StateWrite::Journal(entry) => {
                let insert = match journal {
                    Some(sql) => sql,
                    None => *journal.insert(query::journal_insert(conn)?),
                };
                conn.prepare_cached(insert)?.execute(params![s.scraped_ms, s.target_id, entry])?;
            }
        }
    }
    Ok(())
}

/// For each target with exactly one journal entry in the batch, the entry's index in
/// `states`: the raw row of the target written first carries it. A target with two (two
/// scrapes in one bucket) journals both in the journal tables, in order.
fn carriable(states: &[StateUpdate]) -> HashMap<i64, usize> {
    let mut by_target: HashMap<i64, Option<usize>> = HashMap::new();
    for (i, s) in states.iter().enumerate() {
        if matches!(s.write, StateWrite::Journal(_)) {
            by_target.entry(s.target_id).and_modify(|e| *e = None).or_insert(Some(i));
        }
    }
    by_target.into_iter().filter_map(|(t, i)| Some((t, i?))).collect()
}

fn insert_events(conn: &Connection, events: &[crate::ports::ingest::Event]) -> Result<(), StoreError> {
    let mut insert =
        conn.prepare_cached("INSERT INTO events (ts, kind, variant, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for e in events {
        insert.execute(params![e.ts_ms, e.kind.as_str(), e.variant, e.target, e.detail])?;
    }
    Ok(())
}

/// The watermarks of the rolled tables, lowered when a late row lands in a rolled bucket so
/// that the bucket is rolled again (first the minute, then its 10 minutes).
struct Watermarks {
    minute: Option<i64>,
    coarse: Option<i64>,
}

impl Watermarks {
    fn read(conn: &Connection) -> Result<Self, StoreError> {
        Ok(Self { minute: query::watermark(conn)?, coarse: query::watermark_of(conn, query::Table::Coarse)? })
    }

    /// Reopens the rolled buckets holding `ts_ms`; true when one was reopened.
    fn reopen(&mut self, conn: &Connection, ts_ms: i64, rollup_ms: i64) -> Result<bool, StoreError> {
        let mut reopened = false;
        let tiers = [
            (&mut self.minute, query::Table::Rollup, rollup_ms),
            (&mut self.coarse, query::Table::Coarse, rollup_ms * crate::ports::read::COARSE_FACTOR),
        ];
        for (wm, table, width) in tiers {
            let bucket = bucket_end(ts_ms, width);
            if let Some(w) = *wm
                && bucket <= w
            {
                *wm = Some(bucket - width);
                query::set_watermark_of(conn, table, bucket - width)?;
                reopened = true;
            }
        }
        Ok(reopened)
    }
}

/// Writes one batch in one transaction: rows (merged with an existing row of the same bucket),
/// target states, and a lowered rollup watermark when a row lands in an already rolled-up minute.
/// Returns true when a row was merged or a rolled minute reopened: data already served changed.
pub fn write_batch(conn: &mut Connection, batch: &WriteBatch, rollup_ms: i64) -> Result<bool, StoreError> {
    let tx = super::write_transaction(conn)?;
    let mut watermarks = Watermarks::read(&tx)?;
    let sealed_through = super::sealed::sealed_through(&tx, query::Table::Raw)?;
    let mut changed_served = false;
    // In key order (time, then target), so each row is appended after the raw table's last one
    // and filled pages are left as they are; the sort is stable, so two rows of one target and
    // bucket still merge in the order they came.
    let mut rows: Vec<&crate::point::TargetRow> = batch.rows.iter().collect();
    rows.sort_by_key(|r| (r.ts_ms, r.target_id));
    // Each target's journal entry rides in its row: one row per target and tick.
    let mut entries = carriable(&batch.states);
    let mut carried = vec![false; batch.states.len()];
    for row in rows {
        let entry = entries.remove(&row.target_id).and_then(|i| match &batch.states[i].write {
            StateWrite::Journal(e) => Some((i, batch.states[i].scraped_ms, e.as_slice())),
            StateWrite::Checkpoint(_) => None,
        });
        let done = query::upsert_raw_row(&tx, row, sealed_through, entry.map(|(_, ms, e)| (ms, e)))?;
        if let (Some((i, _, _)), true) = (entry, done.carried) {
            carried[i] = true;
        }
        changed_served |= done.merged;
        changed_served |= watermarks.reopen(&tx, row.ts_ms, rollup_ms)?;
    }
    write_states(&tx, &batch.states, &carried)?;
    insert_events(&tx, &batch.events)?;
    tx.commit()?;
    Ok(changed_served)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::TargetRow;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        c.execute_batch(
            "INSERT INTO targets (id, url, variant, first_seen_ms) VALUES (1, 'a', 'p', 0), (2, 'b', 'p', 0)",
        )
        .unwrap();
        c
    }

    fn row(target_id: i64, ts_ms: i64) -> TargetRow {
        TargetRow { target_id, ts_ms, variant: "p".into(), elapsed_ms: 5_000, ..TargetRow::default() }
    }

    fn state(target_id: i64, scraped_ms: i64, write: StateWrite) -> StateUpdate {
        StateUpdate { target_id, scraped_ms, write, totals: Default::default(), variant: "p".into() }
    }

    fn entry(target_id: i64, scraped_ms: i64, byte: u8) -> StateUpdate {
        state(target_id, scraped_ms, StateWrite::Journal(vec![byte, byte]))
    }

    fn batch(rows: Vec<TargetRow>, states: Vec<StateUpdate>) -> WriteBatch {
        let bucket_end_ms = rows.iter().map(|r| r.ts_ms).max().unwrap_or(0);
        WriteBatch { bucket_end_ms, rows, states, points: vec![], events: vec![], late: false }
    }

    fn logged(c: &Connection) -> Vec<(i64, i64)> {
        let mut stmt = c.prepare("SELECT target_id, ts FROM state_log ORDER BY ts").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn a_ticks_journal_entry_rides_in_its_raw_row_and_replays_in_order() {
        let mut c = db();
        let checkpoint = state(2, 4_000, StateWrite::Checkpoint("{}".into()));
        write_batch(&mut c, &batch(vec![row(1, 5_000), row(2, 5_000)], vec![entry(1, 4_000, 1), checkpoint]), 60_000)
            .unwrap();
        assert_eq!(logged(&c), [], "the entry is in target 1's row, not in the journal tables");
        let carried: (i64, Vec<u8>) = c
            .query_row("SELECT state_lag, state_entry FROM metrics_5s_0 WHERE target_id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(carried, (1_000, vec![1, 1]), "the key as an offset from the row's time");
        // Two scrapes in one bucket: one row, both entries in the journal tables, in order.
        write_batch(
            &mut c,
            &batch(vec![row(1, 10_000), row(1, 10_000)], vec![entry(1, 8_000, 2), entry(1, 9_000, 3)]),
            60_000,
        )
        .unwrap();
        assert_eq!(logged(&c), [(1, 8_000), (1, 9_000)]);
        // A row merging into a stored one keeps the entry that one carries; the later entry is
        // journaled.
        write_batch(&mut c, &batch(vec![row(2, 15_000)], vec![entry(2, 14_000, 4)]), 60_000).unwrap();
        write_batch(&mut c, &batch(vec![row(2, 15_000)], vec![entry(2, 14_500, 5)]), 60_000).unwrap();
        let journals = query::pending_journals(&c).unwrap();
        let want1 = vec![(4_000, vec![1, 1]), (8_000, vec![2, 2]), (9_000, vec![3, 3])];
        let want2 = vec![(14_000, vec![4, 4]), (14_500, vec![5, 5])];
        assert_eq!(journals.get(&1), Some(&want1));
        assert_eq!(journals.get(&2), Some(&want2), "after target 2's checkpoint only");
        assert_eq!(query::journal_of(&c, 1, None).unwrap(), want1);
        assert_eq!(query::journal_of(&c, 2, Some(4_000)).unwrap(), want2);
        assert_eq!(query::journal_of(&c, 1, Some(4_000)).unwrap(), want1[1..]);
    }

    /// Another connection writing while a batch is written makes the batch wait for the lock,
    /// not fail: with a deferred transaction the batch's first read took a snapshot, its first
    /// write could not upgrade it and SQLite failed it at once with `SQLITE_BUSY`.
    #[test]
    fn a_batch_waits_for_another_connections_write_instead_of_failing_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let other = store.conn().unwrap();
        other.execute_batch("INSERT INTO targets (id, url, variant, first_seen_ms) VALUES (1, 'a', 'p', 0)").unwrap();
        other
            .execute_batch(
                "BEGIN IMMEDIATE; INSERT INTO targets (id, url, variant, first_seen_ms) VALUES (2, 'b', 'p', 0)",
            )
            .unwrap();
        let mut writer = store.conn().unwrap();
        // The other write is held for 300 ms after the writer thread is about to write, so the
        // batch meets it however late the thread is scheduled.
        let started = std::sync::Arc::new(std::sync::Barrier::new(2));
        let writer_started = started.clone();
        let written = std::thread::spawn(move || {
            writer_started.wait();
            let outcome = write_batch(&mut writer, &batch(vec![row(1, 5_000)], vec![]), 60_000);
            outcome.map_err(|e| e.to_string())
        });
        started.wait();
        std::thread::sleep(Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
        assert_eq!(written.join().unwrap(), Ok(false), "the batch waited for the other write, then committed");
        let rows: i64 = other.query_row("SELECT count(*) FROM metrics_5s_0", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn sealing_a_window_keeps_the_entries_no_checkpoint_covers() {
        let mut c = db();
        for tick in 1..=120 {
            let ts = tick * 5_000;
            let states = vec![entry(1, ts - 1_000, 1), entry(2, ts - 1_000, 2)];
            write_batch(&mut c, &batch(vec![row(1, ts), row(2, ts)], states), 60_000).unwrap();
        }
        // Target 2 checkpointed after the window, target 1 halfway through it.
        let after = state(2, 601_000, StateWrite::Checkpoint("{}".into()));
        let halfway = state(1, 300_000, StateWrite::Checkpoint("{}".into()));
        write_batch(&mut c, &batch(vec![row(2, 605_000)], vec![after, halfway]), 60_000).unwrap();
        let before = query::pending_journals(&c).unwrap();
        assert_eq!(before.get(&1).map(Vec::len), Some(60), "entries after 300 s");
        assert_eq!(before.get(&2), None);
        let sealed = super::super::sealed::seal(&mut c, query::Table::Raw, 600_000, 600_000).unwrap();
        assert_eq!(sealed.rows, 240);
        assert_eq!(logged(&c).len(), 60, "target 1's pending entries moved to the journal tables, no others");
        assert_eq!(query::pending_journals(&c).unwrap(), before, "a replay finds the same entries");
        // Retention drops open rows the same way.
        write_batch(&mut c, &batch(vec![row(1, 610_000)], vec![entry(1, 609_000, 3)]), 60_000).unwrap();
        let before = query::pending_journals(&c).unwrap();
        super::super::sealed::delete_through(&c, query::Table::Raw, 700_000).unwrap();
        assert_eq!(query::pending_journals(&c).unwrap(), before);
    }
}
