//! Raw samples on their way out to an external engine (remote write), in the core's own types.
//!
//! With remote write configured, the scraper hands the `zai_proxy_*` series of every successful
//! scrape, as scraped, to a [`SampleSink`]; the remote writer encodes them and keeps them in a
//! [`SampleQueue`] until a receiver has taken them. Storage implements the queue and `app`
//! wires both, so the scraper, the remote writer and the store never import each other: the
//! scraper is tested against a sink that records, the remote writer against an in-memory queue.

use super::BoxFuture;

/// One series of a scrape, as little changed from the exposition as possible: this is built on
/// the scrape path, and the remote writer completes it when it encodes it: `__name__`, its own
/// labels and the target's, sorted by name, a target label winning over one of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Index of its sample name in [`ScrapeSamples::names`].
    pub name: usize,
    /// Its own labels, in exposition order: none empty, none named `__name__` or like a target
    /// label.
    pub labels: Vec<(String, String)>,
    /// The value as scraped (absolute; non-finite values are kept).
    pub value: f64,
}

/// Every kept series of one scrape of one target, at the scrape's time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapeSamples {
    /// When the scrape completed, Unix ms (the samples' timestamp).
    pub ts_ms: i64,
    /// Labels of the target every series carries (`instance`, `variant`).
    pub target_labels: Vec<(String, String)>,
    /// Sample names (`zai_proxy_requests_total`, `zai_proxy_request_duration_seconds_bucket`).
    pub names: Vec<String>,
    /// The series.
    pub series: Vec<Series>,
    /// Series left out by the per-scrape series limit.
    pub left_out: usize,
}

/// Where a scrape's samples go. Offering never waits: a scrape must not slow down because the
/// receiver or the disk is slow, so a sink that cannot take samples now drops and counts them.
pub trait SampleSink: Send + Sync + std::fmt::Debug {
    /// Hands one scrape's samples over.
    fn offer(&self, samples: ScrapeSamples);
}

/// A queued piece of a write request: one scrape's series, encoded by the remote writer.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The scrape's time, Unix ms: what the backlog limit and the queue age are measured on.
    pub ts_ms: i64,
    /// Samples it holds.
    pub samples: u64,
    /// The encoded series (opaque to storage).
    pub payload: Vec<u8>,
}

/// A chunk as stored, with its place in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// Position in the queue: chunks are shipped and removed in this order.
    pub id: i64,
    /// The chunk.
    pub chunk: Chunk,
}

/// What the queue holds after a change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueState {
    /// Samples removed by the change (zero for an append).
    pub removed: u64,
    /// Payload bytes removed by the change (zero for an append).
    pub removed_bytes: u64,
    /// Time of the oldest chunk still queued, if any.
    pub head_ms: Option<i64>,
}

/// What the queue holds, read once at start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSummary {
    /// Samples queued.
    pub samples: u64,
    /// Payload bytes queued (what the byte limit of the backlog counts).
    pub bytes: u64,
    /// Time of the oldest chunk, if any.
    pub head_ms: Option<i64>,
}

/// Why the queue could not be read or written.
pub(crate) type QueueError = Box<dyn std::error::Error + Send + Sync>;

/// A durable first-in, first-out queue of chunks: what it holds survives a restart, so samples a
/// receiver has not taken yet are shipped by the next process.
pub trait SampleQueue: Send + Sync + std::fmt::Debug {
    /// Appends chunks in the given order.
    fn append(&self, chunks: Vec<Chunk>) -> BoxFuture<'_, Result<QueueState, QueueError>>;

    /// The oldest chunks, in order, as many as fit in `max_samples` (at least one when the
    /// queue is not empty, however large).
    fn oldest(&self, max_samples: u64) -> BoxFuture<'_, Result<Vec<Queued>, QueueError>>;

    /// Removes every chunk up to and including `id` (shipped, or refused for good).
    fn remove_through(&self, id: i64) -> BoxFuture<'_, Result<QueueState, QueueError>>;

    /// Removes the chunks at the head of the queue older than `ts_ms` (the backlog's age limit).
    fn drop_before(&self, ts_ms: i64) -> BoxFuture<'_, Result<QueueState, QueueError>>;

    /// Removes the oldest chunks after `after_id` (the request under way, which stays) until
    /// at least `bytes` payload bytes are gone (the backlog's byte limit).
    fn drop_bytes(&self, bytes: u64, after_id: Option<i64>) -> BoxFuture<'_, Result<QueueState, QueueError>>;

    /// What the queue holds (read once at start-up).
    fn summary(&self) -> BoxFuture<'_, Result<QueueSummary, QueueError>>;
}
