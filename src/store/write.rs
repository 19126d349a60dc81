//! The single writer: one transaction per tick, a bounded queue in front, a bounded retry
//! backlog behind.
//!
//! The ticker never waits for the disk: [`WriteQueue::submit`] is a `try_send`; when the queue
//! is full the batch is kept and merged with the next ones until the writer takes them, so a slow
//! disk delays rows but loses none. A batch whose transaction fails (disk full,
//! locked file) stays in a backlog of [`MAX_BACKLOG`] batches and is retried, oldest first,
//! before each new batch, so a transient failure loses nothing. Points are published to the
//! live hub after the write attempt, so REST reflects what SSE has shown whenever the disk
//! accepts writes, and the live view keeps moving when it does not.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};
use tokio::sync::mpsc;

use super::{Store, StoreError, query};
use crate::clock::bucket_end;
use crate::ingest::{BatchSink, PointSink};
pub use crate::ingest::{StateUpdate, StateWrite, WriteBatch};

/// Failed batches kept for retry: one hour of 5 s ticks.
pub const MAX_BACKLOG: usize = 720;

/// Counters of the writer, for logs and self-metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Batches committed.
    pub committed: AtomicU64,
    /// Batches dropped: the retry backlog or the held batches overflowed (an hour each).
    pub dropped: AtomicU64,
    /// Batches that found the queue full and were merged into the next one (none is lost).
    pub merged: AtomicU64,
    /// Failed transaction attempts.
    pub failed: AtomicU64,
    /// Batches waiting in the retry backlog.
    pub backlog: AtomicU64,
    /// Batches waiting in the queue for the writer.
    pub queued: AtomicU64,
}

/// The sending side of the writer's queue.
#[derive(Debug, Clone)]
pub struct WriteQueue {
    tx: mpsc::Sender<WriteBatch>,
    stats: Arc<WriterStats>,
    /// Batches that found the queue full, merged into one, with how many buckets it holds.
    held: Arc<Mutex<Option<(WriteBatch, usize)>>>,
}

/// Creates the queue; the receiver goes to [`run_writer`].
pub fn channel(capacity: usize, stats: Arc<WriterStats>) -> (WriteQueue, mpsc::Receiver<WriteBatch>) {
    let (tx, rx) = mpsc::channel(capacity);
    (WriteQueue { tx, stats, held: Arc::default() }, rx)
}

impl BatchSink for WriteQueue {
    fn submit(&self, batch: WriteBatch) {
        WriteQueue::submit(self, batch);
    }

    fn flush(&self) -> crate::ingest::BoxFuture<'_, ()> {
        Box::pin(WriteQueue::flush(self))
    }
}

impl WriteQueue {
    /// Hands a batch to the writer without waiting. When the queue is full, the batch is held
    /// and merged with later ones until the writer takes them (counted, logged once); only
    /// beyond [`MAX_BACKLOG`] held buckets, a writer stuck for an hour, is the oldest dropped.
    pub fn submit(&self, batch: WriteBatch) {
        let Ok(mut held) = self.held.lock() else { return };
        let (batch, buckets) = match held.take() {
            Some((mut earlier, n)) => {
                earlier.absorb(batch);
                (earlier, n + 1)
            }
            None => (batch, 1),
        };
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(batch) {
            Ok(()) => {
                if buckets > 1 {
                    tracing::info!(buckets, "Write queue has room again; held batches handed to the writer.");
                }
            }
            Err(mpsc::error::TrySendError::Full(batch)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.merged.fetch_add(1, Ordering::Relaxed);
                if buckets == 1 {
                    tracing::warn!("Write queue full; holding batches and merging them until the writer catches up.");
                }
                *held = self.hold(batch, buckets);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Keeps a held batch unless it already holds an hour of buckets.
    fn hold(&self, batch: WriteBatch, buckets: usize) -> Option<(WriteBatch, usize)> {
        if buckets <= MAX_BACKLOG {
            return Some((batch, buckets));
        }
        self.stats.dropped.fetch_add(buckets as u64, Ordering::Relaxed);
        tracing::error!(buckets, "The writer has taken nothing for an hour; held batches dropped.");
        None
    }

    /// Waits until a held batch is in the queue (the ticker calls it after its last batch).
    pub async fn flush(&self) {
        let held = self.held.lock().ok().and_then(|mut h| h.take());
        if let Some((batch, _)) = held {
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
            if self.tx.send(batch).await.is_err() {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Writes batches until every sender is gone, then makes one last attempt at the backlog.
pub async fn run_writer(
    store: Store,
    mut rx: mpsc::Receiver<WriteBatch>,
    hub: impl PointSink,
    stats: Arc<WriterStats>,
    rollup_ms: i64,
) {
    let mut backlog: VecDeque<Arc<WriteBatch>> = VecDeque::new();
    let mut failing = false;
    while let Some(mut batch) = rx.recv().await {
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        let points = std::mem::take(&mut batch.points);
        let events = batch.events.clone();
        backlog.push_back(Arc::new(batch));
        if backlog.len() > MAX_BACKLOG {
            backlog.pop_front();
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        failing = drain(&store, &mut backlog, &stats, rollup_ms, failing).await;
        hub.publish(points);
        if !events.is_empty() {
            hub.publish_events(events);
        }
    }
    if !backlog.is_empty() {
        drain(&store, &mut backlog, &stats, rollup_ms, failing).await;
    }
    if !backlog.is_empty() {
        tracing::error!(
            batches = backlog.len(),
            "Shutting down with unwritten batches; the database kept refusing writes."
        );
    }
}

/// Writes the backlog oldest first, stopping at the first failure. Returns whether writes are
/// failing, logging only when that changes.
async fn drain(
    store: &Store,
    backlog: &mut VecDeque<Arc<WriteBatch>>,
    stats: &WriterStats,
    rollup_ms: i64,
    was_failing: bool,
) -> bool {
    let mut written = 0;
    while let Some(batch) = backlog.front().cloned() {
        let touches_served = batch.late || was_failing;
        let bucket_end_ms = batch.bucket_end_ms;
        match store.with_conn(move |c| write_batch(c, &batch, rollup_ms)).await {
            Ok(merged) => {
                if merged || touches_served {
                    store.cache().invalidate(); // rows landed in buckets that may have been served
                }
                store.note_committed(bucket_end_ms);
                backlog.pop_front();
                written += 1;
                stats.committed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                stats.backlog.store(backlog.len() as u64, Ordering::Relaxed);
                if !was_failing {
                    tracing::error!(error = %e, backlog = backlog.len(), "Database write failed; keeping batches in memory to retry.");
                }
                return true;
            }
        }
    }
    stats.backlog.store(0, Ordering::Relaxed);
    if was_failing {
        tracing::info!(batches = written, "Database writes recovered; the backlog is written.");
    }
    false
}

/// Checkpoints replace a target's stored state (never with an older one); journal entries are
/// appended (a retried batch writes the same keys again, harmlessly).
fn write_states(conn: &Connection, states: &[StateUpdate]) -> Result<(), StoreError> {
    for s in states {
        match &s.write {
            StateWrite::Checkpoint(json) => {
                let totals = super::codec::encode_totals(&s.totals);
                conn.prepare_cached(
                    "UPDATE targets SET state = ?1, state_ms = ?2, variant = ?3, totals = ?5
                     WHERE id = ?4 AND (state_ms IS NULL OR state_ms <= ?2)",
                )?
                .execute(params![json, s.scraped_ms, s.variant, s.target_id, totals])?;
            }
            StateWrite::Journal(entry) => {
                conn.prepare_cached("INSERT OR REPLACE INTO state_log (ts, target_id, data) VALUES (?1, ?2, ?3)")?
                    .execute(params![s.scraped_ms, s.target_id, entry])?;
            }
        }
    }
    Ok(())
}

fn insert_events(conn: &Connection, events: &[crate::ingest::Event]) -> Result<(), StoreError> {
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
            (&mut self.coarse, query::Table::Coarse, rollup_ms * super::COARSE_FACTOR),
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
    let tx = conn.transaction()?;
    let mut watermarks = Watermarks::read(&tx)?;
    let mut changed_served = false;
    for row in &batch.rows {
        changed_served |= query::upsert_raw_row(&tx, row)?;
        changed_served |= watermarks.reopen(&tx, row.ts_ms, rollup_ms)?;
    }
    write_states(&tx, &batch.states)?;
    insert_events(&tx, &batch.events)?;
    tx.commit()?;
    Ok(changed_served)
}
