//! The remote writer's appender: the hand-off from the scrapers to memory, or to the durable
//! queue when samples would wait there (the shipper is retrying or stopped), and the backlog's
//! byte limit, kept before and after every append to the database.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::status::{Pending, RemoteStatus, Removal};
use super::wire;
use crate::clock::SharedClock;
use crate::ports::samples::{Chunk, SampleQueue, ScrapeSamples};

/// Most scrapes gathered into one append.
const MAX_APPEND: usize = 512;

/// Moves offered scrapes to the shipper: into memory, or into the database when they would
/// wait (the shipper is retrying or stopped).
pub(super) struct Appender {
    pub queue: Arc<dyn SampleQueue>,
    pub status: Arc<RemoteStatus>,
    pub clock: SharedClock,
    pub wake: Arc<Notify>,
    pub window: Duration,
    /// `REMOTE_WRITE_MAX_BACKLOG_BYTES`, kept after every append to the database.
    pub max_bytes: u64,
}

impl Appender {
    /// Runs until the hand-off closes (every scraper stopped), queueing everything offered.
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<ScrapeSamples>) {
        while let Some(first) = rx.recv().await {
            let batch = gather(&mut rx, first, self.window).await;
            let samples: u64 = batch.iter().map(|s| s.series.len() as u64).sum();
            match tokio::task::spawn_blocking(move || batch.into_iter().map(wire::encode_chunk).collect()).await {
                Ok(chunks) => self.queue(chunks, samples).await,
                Err(e) => self.lost(samples, format!("encoding samples failed: {e}")),
            }
        }
        tracing::debug!("Remote write appender stopped; every offered scrape is queued.");
    }

    async fn queue(&self, chunks: Vec<Chunk>, samples: u64) {
        let _serial = self.status.queue_lock.lock().await;
        let Some(chunks) = self.status.with_pending(|p| to_memory_unless_waiting(p, chunks)) else {
            self.status.queued(samples);
            self.wake.notify_one();
            return;
        };
        let bytes = payload_bytes(&chunks);
        // Room first, so the queue never holds more than the limit, not even for a moment.
        self.trim(bytes).await;
        match self.queue.append(chunks).await {
            Ok(state) => {
                self.status.queued(samples);
                self.status.with_pending(|p| {
                    p.disk_head = p.disk_head.or(state.head_ms);
                    p.disk_bytes += bytes;
                });
                self.trim(0).await; // a scrape larger than the whole limit
                self.wake.notify_one();
            }
            Err(e) => self.lost(samples, format!("cannot queue samples: {e}")),
        }
    }

    /// Makes room for `incoming` bytes within the byte limit; a failure is kept as the last
    /// error (the next append tries again).
    async fn trim(&self, incoming: u64) {
        let now = self.clock.now_ms();
        if let Err(e) = trim_to_bytes(self.queue.as_ref(), &self.status, self.max_bytes, incoming, now).await {
            self.status.error(now, format!("cannot trim the queue: {e}"));
        }
    }

    fn lost(&self, samples: u64, message: String) {
        if let Some(suppressed) = self.status.warnings.queue.admit() {
            tracing::warn!(samples, error = %message, suppressed, "Remote write samples dropped before queueing.");
        }
        self.status.dropped_before_queue(samples);
        self.status.error(self.clock.now_ms(), message);
    }
}

/// Payload bytes of `chunks`.
pub(super) fn payload_bytes(chunks: &[Chunk]) -> u64 {
    chunks.iter().map(|c| c.payload.len() as u64).sum()
}

/// Drops the oldest database chunks, never those of the request under way, until everything
/// waiting and `incoming` more bytes fit in `max_bytes`; counts them. Called with `queue_lock`
/// held.
pub(super) async fn trim_to_bytes(
    queue: &dyn SampleQueue,
    status: &RemoteStatus,
    max_bytes: u64,
    incoming: u64,
    now_ms: i64,
) -> Result<(), crate::ports::samples::QueueError> {
    let (excess, after, on_disk) = status.with_pending(|p| {
        (p.bytes().saturating_add(incoming).saturating_sub(max_bytes), p.sending_through, p.disk_head.is_some())
    });
    if excess == 0 || !on_disk {
        return Ok(());
    }
    let state = queue.drop_bytes(excess, after).await?;
    status.with_pending(|p| {
        p.disk_bytes = p.disk_bytes.saturating_sub(state.removed_bytes);
        p.disk_head = state.head_ms;
    });
    if state.removed > 0 {
        if let Some(suppressed) = status.warnings.too_big.admit() {
            tracing::warn!(
                samples = state.removed,
                suppressed,
                max_bytes,
                "Remote write backlog is over REMOTE_WRITE_MAX_BACKLOG_BYTES; the oldest samples are dropped."
            );
        }
        status.removed(state.removed, Removal::Dropped, now_ms);
    }
    Ok(())
}

/// Adds `chunks` to memory, unless they would wait there: then they are handed back for the
/// database.
pub(super) fn to_memory_unless_waiting(p: &mut Pending, chunks: Vec<Chunk>) -> Option<Vec<Chunk>> {
    if p.to_disk() {
        return Some(chunks);
    }
    p.memory_bytes += chunks.iter().map(|c| c.payload.len()).sum::<usize>();
    p.memory.extend(chunks);
    None
}

/// `first` plus whatever arrives within `window`, up to [`MAX_APPEND`] scrapes: one encoding
/// pass and at most one transaction for many targets' scrapes.
async fn gather(rx: &mut mpsc::Receiver<ScrapeSamples>, first: ScrapeSamples, window: Duration) -> Vec<ScrapeSamples> {
    let deadline = tokio::time::Instant::now() + window;
    let mut batch = vec![first];
    while batch.len() < MAX_APPEND {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => batch.push(s),
            Ok(None) | Err(_) => break,
        }
    }
    batch
}
