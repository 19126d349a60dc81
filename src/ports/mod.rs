//! The contracts: what one part of zai-dash needs from another, as traits and the types they
//! hand over, so that no subsystem imports another (`app` plugs implementations in). Like
//! Prometheus' `storage/` interfaces beside `tsdb/`: this room says what a store or a source
//! must do; the store, the PromQL source, the hub and the remote writer do it.
//!
//! - [`ingest`]: the collector's hand-off to storage (`BatchSink`, `TargetRegistry`) and the
//!   writer's to the live stream (`PointSink`).
//! - [`samples`]: raw samples to remote write (`SampleSink`) and their durable queue
//!   (`SampleQueue`).
//! - [`alert_state`]: what the alert engine persists (`AlertStateStore`) and announces
//!   (`Announcer`).
//! - [`read`]: everything the pages, the API and the alert engine read (`DataSource`), in the
//!   domain's terms (a window and a step), answered by the store or by an engine in source mode.
//! - [`rollout`]: the one path from that contract to a canary judgement (interval, strata,
//!   verdict), shared by the API, the pages, the alerts and the gauge; [`judge_cache`] keeps
//!   each rollout's evidence folded so far, so a judgement reads only what is new.
//! - [`json_array`]: a JSON array handed over as its items' pieces (`/api/metrics`' answer),
//!   so that no one joins a 2 MB answer into one allocation.

pub(crate) mod alert_state;
pub mod ingest;
pub mod json_array;
pub mod judge_cache;
pub mod read;
pub mod rollout;
pub mod samples;

use std::future::Future;
use std::pin::Pin;

/// A boxed future, so the contracts' async methods can be called on trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
