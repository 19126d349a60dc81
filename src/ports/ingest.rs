//! The hand-off between the collector and storage, in the core's own types.
//!
//! The scraper closes each bucket into a [`WriteBatch`] and hands it to a [`BatchSink`]; it
//! registers targets it discovers through a [`TargetRegistry`]; the writer publishes committed
//! points through a [`PointSink`]. The store and the live hub implement these traits and `app`
//! wires them, so neither subsystem imports the other: the scraper can be tested against a sink
//! that records batches, and the store against batches built by hand.

use super::BoxFuture;
use crate::point::{Point, TargetRow, Totals};

/// Everything one tick writes.
#[derive(Debug, Clone)]
pub struct WriteBatch {
    /// End of the bucket the rows belong to.
    pub bucket_end_ms: i64,
    /// One row per target that completed a scrape in the bucket.
    pub rows: Vec<TargetRow>,
    /// Per-target state writes of those scrapes, in the order they happened.
    pub states: Vec<StateUpdate>,
    /// Points to publish live once written.
    pub points: Vec<Point>,
    /// Things that happened in the bucket (a target's version changed), stored and published.
    pub events: Vec<Event>,
    /// The rows arrived after their bucket was closed (they may change what was already served).
    pub late: bool,
}

/// A target's persisted state after a scrape.
#[derive(Debug, Clone)]
pub struct StateUpdate {
    /// Target id.
    pub target_id: i64,
    /// Time key of the write: the completion time of the scrape it describes, strictly
    /// increasing per target. An older checkpoint never overwrites a newer one (a retried
    /// batch must not roll a target back), and journal entries replay in this order.
    pub scraped_ms: i64,
    /// What to write.
    pub write: StateWrite,
    /// The target's running totals after that scrape: kept apart from the opaque state so that
    /// storage can seed cumulative fields with them after the target's rows aged out.
    pub totals: Totals,
    /// Variant at that scrape.
    pub variant: String,
}

/// The scraper's persisted state, opaque to storage: a whole checkpoint, or the changes since
/// the previous write (replayed after the newest checkpoint at start-up).
#[derive(Debug, Clone, PartialEq)]
pub enum StateWrite {
    /// The whole state; stored on the target, replacing an older one.
    Checkpoint(SavedState),
    /// The values changed since the previous write (binary); appended to the journal.
    Journal(Vec<u8>),
}

/// A whole scrape state (its JSON), deflated by the scrape that made it; storage writes the
/// bytes as they are (`targets.state`, a BLOB; TEXT when compressing failed).
///
/// Why here and not in storage: every live target checkpoints at its first scrape of each
/// 10-minute window, so one tick's batch carries every target's state at once. As JSON (about
/// 10 KB each at the fixture's 249 series, in strings grown by doubling) that batch held
/// about 6 MiB at 500 targets until the writer compressed them, the process' largest
/// transient without a dashboard open (BENCHMARKS.md, "Memory, twelfth stop"). Deflated where
/// each is made, the batch holds about 1.5 KB per target; the compression is the same work,
/// done earlier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavedState {
    /// Raw DEFLATE of the JSON.
    Deflated(Vec<u8>),
    /// The JSON itself: compressing failed (stored as the TEXT earlier builds wrote).
    Plain(String),
}

impl SavedState {
    /// The state's JSON, compressed ([`deflate_json`]) unless that fails.
    pub fn of_json(json: String) -> Self {
        match deflate_json(&json) {
            Some(blob) => Self::Deflated(blob),
            None => {
                tracing::warn!(bytes = json.len(), "Compressing a scrape state failed; it is stored uncompressed.");
                Self::Plain(json)
            }
        }
    }

    /// The state's JSON again; `None` when the compressed bytes are corrupt (or inflate past
    /// 64 MiB, far beyond any state).
    pub fn json(&self) -> Option<String> {
        match self {
            Self::Plain(json) => Some(json.clone()),
            Self::Deflated(blob) => inflate_json(blob),
        }
    }
}

/// The JSON [`deflate_json`] compressed; `None` when the bytes are corrupt or inflate past 64
/// MiB (a state is at most a few hundred KB: every series a proxy exports, with their label
/// values). Storage reads `targets.state` back with it too.
pub fn inflate_json(blob: &[u8]) -> Option<String> {
    use std::io::Read;
    let mut out = String::new();
    flate2::read::DeflateDecoder::new(blob).take(64 << 20).read_to_string(&mut out).ok()?;
    Some(out)
}

impl From<&str> for SavedState {
    fn from(json: &str) -> Self {
        Self::of_json(json.to_owned())
    }
}

impl From<String> for SavedState {
    fn from(json: String) -> Self {
        Self::of_json(json)
    }
}

/// Raw DEFLATE of a state's JSON by one shared compressor, reset between uses; `None` if
/// compressing failed.
///
/// One compressor serves every state: a new one allocates about 300 KB of tables in pieces
/// below the allocator's mmap threshold, and made and dropped about once a second (500
/// targets) they left the heap fragmented: 2.5-3 MiB more RSS in a 500-target soak
/// (BENCHMARKS.md, "Write volume, fifth stop"). Its lock is held for one state's compression
/// (about a tenth of a millisecond for 10 KB).
pub fn deflate_json(json: &str) -> Option<Vec<u8>> {
    static COMPRESSOR: std::sync::Mutex<Option<flate2::Compress>> = std::sync::Mutex::new(None);
    let mut guard = COMPRESSOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let c = guard.get_or_insert_with(|| flate2::Compress::new(flate2::Compression::default(), false));
    c.reset();
    let input = json.as_bytes();
    let mut out = Vec::with_capacity(input.len() / 4 + 64);
    loop {
        let consumed = usize::try_from(c.total_in()).unwrap_or(input.len()).min(input.len());
        match c.compress_vec(&input[consumed..], &mut out, flate2::FlushCompress::Finish) {
            Ok(flate2::Status::StreamEnd) => {
                out.shrink_to_fit();
                return Some(out);
            }
            Ok(_) => out.reserve(out.capacity().max(1024)),
            // A fresh compressor for the next state.
            Err(_) => {
                *guard = None;
                return None;
            }
        }
    }
}

/// Where closed buckets go. Submitting never waits: the scraper's ticker must keep time even
/// when the disk is slow, so a sink that cannot take a batch now keeps or merges it itself.
pub trait BatchSink: Send + Sync + std::fmt::Debug {
    /// Hands one bucket's batch over.
    fn submit(&self, batch: WriteBatch);

    /// Waits until whatever the sink holds back has been handed on (at shutdown, after the
    /// last batch): nothing submitted may be lost on a clean stop.
    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// Where points and events go once their rows are committed (the live hub).
pub trait PointSink: Send + Sync + std::fmt::Debug {
    /// Publishes the points of one bucket.
    fn publish(&self, points: Vec<Point>);
    /// Publishes events that happened in the bucket.
    fn publish_events(&self, events: Vec<Event>);
}

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A target's `zai_proxy_build_info` version changed (a rollout reached it).
    Version,
}

impl EventKind {
    /// The stored and serialized name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::Version => "version",
        }
    }

    /// The kind with this stored name.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        (s == "version").then_some(EventKind::Version)
    }
}

/// Something that happened to a target at a moment: stored for the charts' markers and sent
/// on the live stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    /// When it was seen, Unix ms.
    #[serde(rename = "timestamp")]
    pub ts_ms: i64,
    /// What happened.
    pub kind: EventKind,
    /// The target's variant.
    pub variant: String,
    /// The target's URL as shown, credentials as `***`.
    pub target: String,
    /// A short sentence (`version 1.11.1 -> 1.12.0`).
    pub detail: String,
}

/// A target's running totals as last stored: the live builder's seed at start-up.
#[derive(Debug, Clone)]
pub struct KnownTotals {
    /// Target id.
    pub target_id: i64,
    /// The variant the totals belong to.
    pub variant: String,
    /// The totals.
    pub totals: Totals,
}

/// A target as registered in storage: its id, and the scraper state persisted for it.
#[derive(Debug, Clone)]
pub struct Registered {
    /// Storage id of the target.
    pub id: i64,
    /// The scraper's serialized state (its newest checkpoint), if the target was scraped before.
    pub state: Option<String>,
    /// Journal entries written after that checkpoint, oldest first: `(time key, entry)`.
    pub journal: Vec<(i64, Vec<u8>)>,
}

/// Why a target could not be registered.
pub(crate) type RegistryError = Box<dyn std::error::Error + Send + Sync>;

/// Registers targets found at run time (discovered pod addresses), keeping ids and state of
/// ones seen before.
pub trait TargetRegistry: Send + Sync + std::fmt::Debug {
    /// Registers `url` with its current `variant` and returns its id and persisted state.
    fn register<'a>(
        &'a self,
        url: &'a str,
        variant: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Registered, RegistryError>>;
}
