//! What the remote writer reports: queue size and age, samples sent, failed and dropped, the
//! last error. Read by `/metrics` and the `/targets` page; written by the remote writer's two
//! tasks only.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::samples::QueueState;

/// No chunk queued.
const EMPTY: i64 = i64::MIN;

/// Counters and the queue's shape, shared between the remote writer and the web layer.
#[derive(Debug)]
pub struct RemoteStatus {
    /// The receiver as shown (no credentials, no query string).
    receiver: String,
    queued: AtomicU64,
    head_ms: AtomicI64,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    last_sent_ms: AtomicI64,
    last_error: Mutex<Option<(i64, String)>>,
    /// Held across a queue change and its accounting, so the appender and the shipper cannot
    /// interleave a stale head or count.
    pub(super) queue_lock: tokio::sync::Mutex<()>,
}

/// A copy of the status at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSnapshot {
    /// The receiver (scheme, host, port and path).
    pub receiver: String,
    /// Samples waiting in the queue.
    pub queued: u64,
    /// Seconds since the oldest queued sample was scraped (0 when the queue is empty).
    pub age_seconds: f64,
    /// Samples the receiver accepted.
    pub sent: u64,
    /// Samples the receiver refused for good (a 4xx other than 429).
    pub failed: u64,
    /// Samples dropped before shipping: older than the backlog limit, beyond the per-scrape
    /// series limit, or offered while the hand-off was full.
    pub dropped: u64,
    /// When a request last succeeded, Unix ms.
    pub last_sent_ms: Option<i64>,
    /// The last error and when it happened, Unix ms.
    pub last_error: Option<(i64, String)>,
}

impl RemoteStatus {
    /// A status for `receiver` with `queued` samples already waiting (from an earlier run).
    pub fn new(receiver: String, queued: u64, head_ms: Option<i64>) -> Self {
        Self {
            receiver,
            queued: AtomicU64::new(queued),
            head_ms: AtomicI64::new(head_ms.unwrap_or(EMPTY)),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_sent_ms: AtomicI64::new(EMPTY),
            last_error: Mutex::new(None),
            queue_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Everything at `now_ms`.
    pub fn snapshot(&self, now_ms: i64) -> StatusSnapshot {
        let head = self.head_ms.load(Ordering::Relaxed);
        let last_sent = self.last_sent_ms.load(Ordering::Relaxed);
        StatusSnapshot {
            receiver: self.receiver.clone(),
            queued: self.queued.load(Ordering::Relaxed),
            age_seconds: if head == EMPTY { 0.0 } else { (now_ms.saturating_sub(head)).max(0) as f64 / 1000.0 },
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            last_sent_ms: (last_sent != EMPTY).then_some(last_sent),
            last_error: self.last_error.lock().map(|e| e.clone()).unwrap_or(None),
        }
    }

    /// Samples appended to the queue.
    pub(super) fn appended(&self, samples: u64, state: QueueState) {
        self.queued.fetch_add(samples, Ordering::Relaxed);
        self.set_head(state);
    }

    /// The head was removed: shipped (`sent`), refused (`failed`) or too old (`dropped`).
    pub(super) fn removed(&self, state: QueueState, outcome: Removal, now_ms: i64) {
        let counter = match outcome {
            Removal::Sent => {
                self.last_sent_ms.store(now_ms, Ordering::Relaxed);
                &self.sent
            }
            Removal::Failed => &self.failed,
            Removal::Dropped => &self.dropped,
        };
        counter.fetch_add(state.removed, Ordering::Relaxed);
        let _ =
            self.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q.saturating_sub(state.removed)));
        self.set_head(state);
    }

    /// Samples that never reached the queue.
    pub(super) fn dropped_before_queue(&self, samples: u64) {
        self.dropped.fetch_add(samples, Ordering::Relaxed);
    }

    /// Remembers an error (already free of secrets).
    pub(super) fn error(&self, now_ms: i64, message: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some((now_ms, message));
        }
    }

    fn set_head(&self, state: QueueState) {
        self.head_ms.store(state.head_ms.unwrap_or(EMPTY), Ordering::Relaxed);
    }
}

/// Why chunks left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Removal {
    /// The receiver took them.
    Sent,
    /// The receiver refused them for good.
    Failed,
    /// The backlog limit dropped them.
    Dropped,
}
