//! What the remote writer holds and reports: the chunks not in the database yet, queue size and
//! age, samples sent, failed and dropped, the last error. Read by `/metrics` and the `/targets`
//! page; written by the remote writer's two tasks only.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::ports::samples::{Chunk, QueueSummary};
use crate::telemetry::LogThrottle;

/// No request succeeded yet.
const NEVER: i64 = i64::MIN;

/// Chunks that are not in the durable queue: the newest ones, shipped straight from memory while
/// the receiver keeps up, so a healthy receiver costs no database writes. The database always
/// holds older chunks than memory (only the shipper moves chunks there, oldest first), so
/// shipping the database first and memory next keeps every series in time order.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Newest chunks, oldest first.
    pub memory: VecDeque<Chunk>,
    /// Bytes of their payloads.
    pub memory_bytes: usize,
    /// Chunks taken from memory for the request under way.
    pub in_flight: Vec<Chunk>,
    /// Time of the oldest chunk in the database, `None` when it holds none.
    pub disk_head: Option<i64>,
    /// Payload bytes in the database.
    pub disk_bytes: u64,
    /// The last database chunk of the request under way: the byte limit drops chunks behind it,
    /// never the ones being sent (they are shipped or retried).
    pub sending_through: Option<i64>,
    /// The last request failed and will be retried: chunks wait in the database, so a crash
    /// during an outage loses nothing the appender took.
    pub failing: bool,
    /// The shipper stopped and wrote memory to the database: later chunks go there directly.
    pub shipper_gone: bool,
}

impl Pending {
    /// Whether new chunks go straight to the database: the shipper is gone, or retrying with
    /// nothing of its own outside the database (appending then keeps the order).
    pub(crate) fn to_disk(&self) -> bool {
        self.shipper_gone || (self.failing && self.memory.is_empty() && self.in_flight.is_empty())
    }

    /// Time of the oldest chunk anywhere.
    fn head(&self) -> Option<i64> {
        self.disk_head.or_else(|| self.in_flight.first().or(self.memory.front()).map(|c| c.ts_ms))
    }

    /// Payload bytes waiting anywhere: what `REMOTE_WRITE_MAX_BACKLOG_BYTES` bounds.
    pub(crate) fn bytes(&self) -> u64 {
        let in_flight: usize = self.in_flight.iter().map(|c| c.payload.len()).sum();
        self.disk_bytes.saturating_add((self.memory_bytes + in_flight) as u64)
    }
}

/// The remote writer's warnings that can repeat with every request or append, one throttle per
/// kind: each is written at most once a minute, with the count left out since.
#[derive(Debug, Default)]
pub(super) struct Warnings {
    /// The receiver refused a request for good.
    pub refused: LogThrottle,
    /// The receiver became unreachable or answers 5xx/429 (written on the change only).
    pub outage: LogThrottle,
    /// Requests are being retried: the receiver has not answered since.
    pub in_outage: AtomicBool,
    /// Whether the current outage's warning was written (then its end is written too).
    pub outage_logged: AtomicBool,
    /// The age limit dropped samples.
    pub too_old: LogThrottle,
    /// The byte limit dropped samples.
    pub too_big: LogThrottle,
    /// The database refused or lost samples.
    pub queue: LogThrottle,
}

/// Counters and the queue's shape, shared between the remote writer and the web layer.
#[derive(Debug)]
pub struct RemoteStatus {
    /// The receiver as shown (no credentials, no query string).
    receiver: String,
    queued: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    last_sent_ms: AtomicI64,
    last_error: Mutex<Option<(i64, String)>>,
    pub(super) pending: Mutex<Pending>,
    /// Held across every change of the database queue and the accounting that goes with it,
    /// so the appender and the shipper never interleave a stale head, count or order.
    pub(super) queue_lock: tokio::sync::Mutex<()>,
    /// Throttles of repeated warnings.
    pub(super) warnings: Warnings,
}

/// A copy of the status at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSnapshot {
    /// The receiver (scheme, host, port and path).
    pub receiver: String,
    /// Samples waiting, in the database or in memory.
    pub queued: u64,
    /// Bytes of those samples, as encoded.
    pub queued_bytes: u64,
    /// Seconds since the oldest waiting sample was scraped (0 when none waits).
    pub age_seconds: f64,
    /// Samples the receiver accepted.
    pub sent: u64,
    /// Samples the receiver refused for good (a 4xx other than 429).
    pub failed: u64,
    /// Samples dropped before shipping: older than the backlog's age limit, the oldest beyond
    /// its byte limit, beyond the per-scrape series limit, or offered while the hand-off was
    /// full.
    pub dropped: u64,
    /// When a request last succeeded, Unix ms.
    pub last_sent_ms: Option<i64>,
    /// The last error and when it happened, Unix ms.
    pub last_error: Option<(i64, String)>,
}

/// Where samples left the queue to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Removal {
    /// The receiver took them.
    Sent,
    /// The receiver refused them for good.
    Failed,
    /// A backlog limit dropped them.
    Dropped,
}

impl RemoteStatus {
    /// A status for `receiver` with what an earlier run left in the database.
    pub(crate) fn new(receiver: String, queue: QueueSummary) -> Self {
        Self {
            receiver,
            queued: AtomicU64::new(queue.samples),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_sent_ms: AtomicI64::new(NEVER),
            last_error: Mutex::new(None),
            pending: Mutex::new(Pending { disk_head: queue.head_ms, disk_bytes: queue.bytes, ..Pending::default() }),
            queue_lock: tokio::sync::Mutex::new(()),
            warnings: Warnings::default(),
        }
    }

    /// Everything at `now_ms`.
    pub fn snapshot(&self, now_ms: i64) -> StatusSnapshot {
        let (head, bytes) = self.pending.lock().map(|p| (p.head(), p.bytes())).unwrap_or_default();
        let last_sent = self.last_sent_ms.load(Ordering::Relaxed);
        StatusSnapshot {
            receiver: self.receiver.clone(),
            queued: self.queued.load(Ordering::Relaxed),
            queued_bytes: bytes,
            age_seconds: head.map_or(0.0, |h| now_ms.saturating_sub(h).max(0) as f64 / 1000.0),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            last_sent_ms: (last_sent != NEVER).then_some(last_sent),
            last_error: self.last_error.lock().map(|e| e.clone()).unwrap_or(None),
        }
    }

    /// Samples that joined the queue (memory or database).
    pub(super) fn queued(&self, samples: u64) {
        self.queued.fetch_add(samples, Ordering::Relaxed);
    }

    /// Samples that left the queue.
    pub(super) fn removed(&self, samples: u64, outcome: Removal, now_ms: i64) {
        let counter = match outcome {
            Removal::Sent => {
                self.last_sent_ms.store(now_ms, Ordering::Relaxed);
                &self.sent
            }
            Removal::Failed => &self.failed,
            Removal::Dropped => &self.dropped,
        };
        counter.fetch_add(samples, Ordering::Relaxed);
        let _ = self.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q.saturating_sub(samples)));
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

    /// Runs `f` on the chunks outside the database (a poisoned lock is taken over: the data is
    /// plain and every change to it is complete before the guard drops).
    pub(super) fn with_pending<T>(&self, f: impl FnOnce(&mut Pending) -> T) -> T {
        let mut guard = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}
