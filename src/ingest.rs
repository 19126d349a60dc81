//! The hand-off between the collector and storage, in the core's own types.
//!
//! The scraper closes each bucket into a [`WriteBatch`] and hands it to a [`BatchSink`]; it
//! registers targets it discovers through a [`TargetRegistry`]; the writer publishes committed
//! points through a [`PointSink`]. The store and the live hub implement these traits and `app`
//! wires them, so neither subsystem imports the other: the scraper can be tested against a sink
//! that records batches, and the store against batches built by hand.

use std::future::Future;
use std::pin::Pin;

use crate::point::{Point, TargetRow};

/// A boxed future, so registries and resolvers can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything one tick writes.
#[derive(Debug, Clone)]
pub struct WriteBatch {
    /// End of the bucket the rows belong to.
    pub bucket_end_ms: i64,
    /// One row per target that completed a scrape in the bucket.
    pub rows: Vec<TargetRow>,
    /// Per-target state after those scrapes.
    pub states: Vec<StateUpdate>,
    /// Points to publish live once written.
    pub points: Vec<Point>,
    /// The rows arrived after their bucket was closed (they may change what was already served).
    pub late: bool,
}

/// A target's persisted state after a scrape.
#[derive(Debug, Clone)]
pub struct StateUpdate {
    /// Target id.
    pub target_id: i64,
    /// Completion time of the scrape the state describes; an older state never overwrites a
    /// newer one (a retried batch must not roll a target back).
    pub scraped_ms: i64,
    /// The scraper's serialized per-target state (opaque to storage).
    pub state_json: String,
    /// Variant at that scrape.
    pub variant: String,
}

/// Where closed buckets go. Submitting never waits: the scraper's ticker must keep time even
/// when the disk is slow, so a sink that cannot take a batch now keeps or merges it itself.
pub trait BatchSink: Send + Sync + std::fmt::Debug {
    /// Hands one bucket's batch over.
    fn submit(&self, batch: WriteBatch);
}

/// Where points go once their rows are committed (the live hub).
pub trait PointSink: Send + Sync + std::fmt::Debug {
    /// Publishes the points of one bucket.
    fn publish(&self, points: Vec<Point>);
}

/// A target as registered in storage: its id, and the scraper state persisted for it.
#[derive(Debug, Clone)]
pub struct Registered {
    /// Storage id of the target.
    pub id: i64,
    /// The scraper's serialized state, if the target was scraped before.
    pub state: Option<String>,
}

/// Why a target could not be registered.
pub type RegistryError = Box<dyn std::error::Error + Send + Sync>;

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
