//! The remote writer's shipper: the oldest chunks to the receiver, the database's before
//! memory's, one request at a time so each series stays in time order; after a failure memory
//! moves to the database, and the request is retried with backoff (`attempt` makes each one).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::RemoteSettings;
use super::append::{payload_bytes, trim_to_bytes};
use super::attempt::{self, Backoff, Failure, MAX_RETRY_AFTER};
use super::status::{Pending, RemoteStatus, Removal};
use crate::clock::SharedClock;
use crate::ports::samples::{QueueState, SampleQueue};

/// Memory chunks beyond this many bytes (or the byte limit, if smaller) go to the database even
/// while the receiver keeps up (a slow request let them pile up).
const SPILL_BYTES: usize = 16 * 1024 * 1024;

/// Sends the oldest chunks to the receiver: the database's first, then memory's.
pub(super) struct Shipper {
    pub settings: Arc<RemoteSettings>,
    pub queue: Arc<dyn SampleQueue>,
    pub status: Arc<RemoteStatus>,
    pub client: reqwest::Client,
    pub clock: SharedClock,
    pub wake: Arc<Notify>,
}

/// What the shipper does after a step.
#[derive(Debug, PartialEq)]
enum Next {
    /// Ship the next request now.
    Again,
    /// Nothing queued: wait for the appender.
    Idle,
    /// Wait this long, then retry.
    Wait(Duration),
    /// Stop (shutdown during a request).
    Stop,
}

/// Where a request's chunks came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The database, through this id.
    Disk(i64),
    /// Memory (`Pending::in_flight`).
    Memory,
}

impl Shipper {
    /// Ships until `cancel`, then writes what memory holds to the database for the next start.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.settings.min_backoff, self.settings.max_backoff);
        loop {
            let stop = match self.step(&mut backoff, &cancel).await {
                Next::Stop => true,
                Next::Again => cancel.is_cancelled(),
                Next::Idle => pause(&cancel, self.wake.notified()).await,
                Next::Wait(d) => pause(&cancel, tokio::time::sleep(d)).await,
            };
            if stop {
                break;
            }
        }
        self.stop().await;
    }

    /// Drops what is too old, moves memory to the database when it would wait (a request failed,
    /// or memory outgrew its bound), then sends the oldest request's worth of samples once. While
    /// the database is being caught up with, new chunks stay in memory behind it. Only the request itself is cut short by `cancel`:
    /// queue changes always complete, so no chunk is ever half moved.
    async fn step(&self, backoff: &mut Backoff, cancel: &CancellationToken) -> Next {
        if let Err(e) = self.drop_old().await {
            return self.retry_later(backoff, format!("cannot trim the queue: {e}"), None);
        }
        let spill_at = SPILL_BYTES.min(usize::try_from(self.settings.max_backlog_bytes).unwrap_or(usize::MAX));
        if self.status.with_pending(|p| p.failing || p.memory_bytes > spill_at)
            && let Err(e) = self.spill().await
        {
            return self.retry_later(backoff, format!("cannot queue samples: {e}"), None);
        }
        let (payloads, samples, source) = match self.next_batch().await {
            Ok(Some(batch)) => batch,
            Ok(None) => return Next::Idle,
            Err(e) => return self.retry_later(backoff, format!("cannot read the queue: {e}"), None),
        };
        let sent = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            sent = attempt::send(&self.client, &self.settings, || self.clock.now_ms(), payloads) => Some(sent),
        };
        self.status.with_pending(|p| p.sending_through = None);
        let Some(sent) = sent else { return Next::Stop };
        match sent {
            Ok(()) => {
                backoff.reset();
                self.status.with_pending(|p| p.failing = false);
                self.outage_over();
                self.settle(source, samples, Removal::Sent).await
            }
            Err(Failure::Permanent(message)) => {
                self.outage_over();
                if let Some(suppressed) = self.status.warnings.refused.admit() {
                    tracing::warn!(error = %message, suppressed, "Remote write receiver refused samples; they are dropped.");
                }
                self.status.error(self.clock.now_ms(), message);
                self.settle(source, samples, Removal::Failed).await
            }
            Err(Failure::Retry(message, after)) => {
                self.status.with_pending(|p| p.failing = true);
                self.outage_begins(&message);
                if let Err(e) = self.spill().await
                    && let Some(suppressed) = self.status.warnings.queue.admit()
                {
                    tracing::warn!(error = %e, suppressed, "Remote write cannot move waiting samples to the database.");
                }
                self.retry_later(backoff, message, after)
            }
        }
    }

    /// A request is to be retried: the first of a run starts an outage, written once (and at
    /// most once a minute for a receiver that keeps coming and going).
    fn outage_begins(&self, message: &str) {
        let w = &self.status.warnings;
        if w.in_outage.swap(true, Ordering::Relaxed) {
            return;
        }
        let logged = w.outage.admit().inspect(|suppressed| {
            tracing::warn!(error = %message, suppressed, receiver = %self.settings.receiver(), "Remote write receiver is not taking samples; they wait in the queue and the request is retried.");
        });
        w.outage_logged.store(logged.is_some(), Ordering::Relaxed);
    }

    /// The receiver answered (taking or refusing the request): an outage, if any, is over; its
    /// end is written when its start was.
    fn outage_over(&self) {
        let w = &self.status.warnings;
        if w.in_outage.swap(false, Ordering::Relaxed) && w.outage_logged.swap(false, Ordering::Relaxed) {
            tracing::info!(receiver = %self.settings.receiver(), "Remote write receiver answers again.");
        }
    }

    fn retry_later(&self, backoff: &mut Backoff, message: String, after: Option<Duration>) -> Next {
        let wait = after.map_or_else(|| backoff.next(), |a| a.min(MAX_RETRY_AFTER));
        tracing::debug!(error = %message, retry_in_ms = wait.as_millis() as u64, "Remote write will retry.");
        self.status.error(self.clock.now_ms(), message);
        Next::Wait(wait)
    }

    /// The oldest chunks up to the request size: from the database while it holds any (they are
    /// older), else taken from memory into `in_flight`.
    async fn next_batch(&self) -> Result<Option<(Vec<Vec<u8>>, u64, Source)>, crate::ports::samples::QueueError> {
        if self.status.with_pending(|p| p.disk_head.is_some()) {
            // Under the lock, so the byte limit never drops a chunk between this read and the
            // mark that keeps the request's chunks.
            let _serial = self.status.queue_lock.lock().await;
            let batch = self.queue.oldest(self.settings.max_samples_per_send).await?;
            if let Some(last) = batch.last().map(|q| q.id) {
                let samples = batch.iter().map(|q| q.chunk.samples).sum();
                self.status.with_pending(|p| p.sending_through = Some(last));
                return Ok(Some((batch.into_iter().map(|q| q.chunk.payload).collect(), samples, Source::Disk(last))));
            }
            self.status.with_pending(|p| p.disk_head = None);
        }
        Ok(self.status.with_pending(|p| take_from_memory(p, self.settings.max_samples_per_send)))
    }

    /// Counts the request's samples and removes them from where they came from.
    async fn settle(&self, source: Source, samples: u64, outcome: Removal) -> Next {
        let now = self.clock.now_ms();
        let Source::Disk(last) = source else {
            self.status.with_pending(|p| p.in_flight.clear());
            self.status.removed(samples, outcome, now);
            return Next::Again;
        };
        let _serial = self.status.queue_lock.lock().await;
        match self.queue.remove_through(last).await {
            Ok(state) => {
                self.status.removed(state.removed, outcome, now);
                self.status.with_pending(|p| {
                    p.disk_head = state.head_ms;
                    p.disk_bytes = p.disk_bytes.saturating_sub(state.removed_bytes);
                });
                Next::Again
            }
            Err(e) => {
                self.status.error(now, format!("cannot remove shipped samples: {e}"));
                Next::Wait(self.settings.max_backoff)
            }
        }
    }

    /// Moves the request under way and memory, oldest first, to the end of the database queue.
    async fn spill(&self) -> Result<(), crate::ports::samples::QueueError> {
        let _serial = self.status.queue_lock.lock().await;
        self.spill_locked().await
    }

    async fn spill_locked(&self) -> Result<(), crate::ports::samples::QueueError> {
        let chunks = self.status.with_pending(|p| {
            let mut chunks = std::mem::take(&mut p.in_flight);
            chunks.extend(p.memory.drain(..));
            p.memory_bytes = 0;
            chunks
        });
        if chunks.is_empty() {
            return Ok(());
        }
        let bytes = payload_bytes(&chunks);
        let (max, now) = (self.settings.max_backlog_bytes, self.clock.now_ms());
        if let Err(e) = trim_to_bytes(self.queue.as_ref(), &self.status, max, bytes, now).await {
            self.status.error(now, format!("cannot trim the queue: {e}"));
        }
        match self.queue.append(chunks.clone()).await {
            Ok(state) => {
                self.status.with_pending(|p| {
                    p.disk_head = p.disk_head.or(state.head_ms);
                    p.disk_bytes += bytes;
                });
                if let Err(e) = trim_to_bytes(self.queue.as_ref(), &self.status, max, 0, now).await {
                    self.status.error(now, format!("cannot trim the queue: {e}"));
                }
                Ok(())
            }
            Err(e) => {
                // Back to memory, in front of what arrived since: nothing lost, order kept.
                self.status.with_pending(|p| {
                    p.memory_bytes += chunks.iter().map(|c| c.payload.len()).sum::<usize>();
                    for c in chunks.into_iter().rev() {
                        p.memory.push_front(c);
                    }
                });
                Err(e)
            }
        }
    }

    /// At shutdown: memory to the database, then the appender writes there itself.
    async fn stop(&self) {
        let _serial = self.status.queue_lock.lock().await;
        if let Err(e) = self.spill_locked().await {
            let lost = self.status.with_pending(|p| {
                p.memory_bytes = 0;
                p.memory.drain(..).map(|c| c.samples).sum::<u64>()
            });
            tracing::warn!(samples = lost, error = %e, "Remote write samples lost at shutdown: the database refused them.");
            self.status.removed(lost, Removal::Dropped, self.clock.now_ms());
        }
        self.status.with_pending(|p| p.shipper_gone = true);
        tracing::debug!("Remote write shipper stopped; queued samples wait for the next start.");
    }

    /// Drops database chunks scraped before the backlog's age limit, then the oldest beyond its
    /// byte limit.
    async fn drop_old(&self) -> Result<(), crate::ports::samples::QueueError> {
        if self.status.with_pending(|p| p.disk_head.is_none()) {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let cutoff = now.saturating_sub(crate::setting::duration_ms(self.settings.max_backlog));
        let _serial = self.status.queue_lock.lock().await;
        let state: QueueState = self.queue.drop_before(cutoff).await?;
        self.status.with_pending(|p| {
            p.disk_head = state.head_ms;
            p.disk_bytes = p.disk_bytes.saturating_sub(state.removed_bytes);
        });
        if state.removed > 0 {
            if let Some(suppressed) = self.status.warnings.too_old.admit() {
                tracing::warn!(
                    samples = state.removed,
                    suppressed,
                    "Remote write backlog is older than REMOTE_WRITE_MAX_BACKLOG; the oldest samples are dropped."
                );
            }
            self.status.removed(state.removed, Removal::Dropped, now);
        }
        trim_to_bytes(self.queue.as_ref(), &self.status, self.settings.max_backlog_bytes, 0, now).await
    }
}

/// Waits for `until` unless `cancel` comes first; true when cancelled.
async fn pause(cancel: &CancellationToken, until: impl std::future::Future<Output = ()>) -> bool {
    tokio::select! {
        biased;
        () = cancel.cancelled() => true,
        () = until => false,
    }
}

/// Takes the oldest memory chunks that fit in `max_samples` (at least one) into `in_flight`;
/// returns copies of their payloads, their samples and the source.
fn take_from_memory(p: &mut Pending, max_samples: u64) -> Option<(Vec<Vec<u8>>, u64, Source)> {
    let mut samples = 0;
    while let Some(front) = p.memory.front() {
        if !p.in_flight.is_empty() && samples + front.samples > max_samples {
            break;
        }
        samples += front.samples;
        p.memory_bytes = p.memory_bytes.saturating_sub(front.payload.len());
        p.in_flight.extend(p.memory.pop_front());
    }
    (!p.in_flight.is_empty())
        .then(|| (p.in_flight.iter().map(|c| c.payload.clone()).collect(), samples, Source::Memory))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::samples::Chunk;
    use crate::remote::append::to_memory_unless_waiting;

    fn chunk(ts_ms: i64, samples: u64) -> Chunk {
        Chunk { ts_ms, samples, payload: vec![0; 10] }
    }

    #[test]
    fn memory_is_shipped_oldest_first_within_the_request_size() {
        let mut p = Pending::default();
        assert!(to_memory_unless_waiting(&mut p, vec![chunk(1, 3), chunk(2, 3), chunk(3, 3)]).is_none());
        assert_eq!(p.memory_bytes, 30);
        let (payloads, samples, source) = take_from_memory(&mut p, 7).unwrap();
        assert_eq!((payloads.len(), samples, source), (2, 6, Source::Memory));
        assert_eq!(p.in_flight.iter().map(|c| c.ts_ms).collect::<Vec<_>>(), [1, 2]);
        assert_eq!((p.memory.len(), p.memory_bytes), (1, 10));
        p.in_flight.clear();
        assert_eq!(take_from_memory(&mut p, 1).unwrap().1, 3, "one chunk even when it exceeds the size");
    }

    #[test]
    fn chunks_go_to_the_database_only_when_they_would_wait() {
        let mut p = Pending { failing: true, ..Pending::default() };
        assert!(to_memory_unless_waiting(&mut p, vec![chunk(1, 1)]).is_some(), "retrying, nothing in memory");
        p.memory.push_back(chunk(0, 1));
        assert!(to_memory_unless_waiting(&mut p, vec![chunk(2, 1)]).is_none(), "behind memory, to keep the order");
        let mut p = Pending { shipper_gone: true, ..Pending::default() };
        assert!(to_memory_unless_waiting(&mut p, vec![chunk(1, 1)]).is_some(), "after shutdown");
    }

    #[test]
    fn the_byte_limit_counts_memory_the_request_and_the_database() {
        let mut p = Pending { disk_bytes: 100, ..Pending::default() };
        assert!(to_memory_unless_waiting(&mut p, vec![chunk(1, 1), chunk(2, 1)]).is_none());
        take_from_memory(&mut p, 1);
        assert_eq!((p.memory_bytes, p.bytes()), (10, 120), "the database, memory and the request under way");
    }
}
