//! The source mode's live loop: once per point interval, shortly after a bucket is complete in
//! the engine, read the targets (health into the `HealthBoard`, version changes as events) and
//! the newest complete bucket's points, and publish them through the same `PointSink` the
//! writer publishes to in SQLite mode (the hub and the alerts' feed). Every replica polls on its
//! own; they publish the same numbers, since they ask the same engine the same questions.
//!
//! A failing engine never stops the loop: the error is kept for pages (`DataSource::status`),
//! logged once when it starts and once when it ends, and the next interval tries again. Buckets
//! missed while the engine was down are published when it is back (at most
//! [`MAX_CATCH_UP`] of them, oldest first), so the live stream has no silent gap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::EngineError;
use super::{PromSource, Session, points, targets};
use crate::clock::SharedClock;
use crate::health::{HealthBoard, TargetHealth};
use crate::ports::ingest::PointSink;
use crate::ports::read::PointQuery;

/// Most missed buckets published after an outage.
pub(crate) const MAX_CATCH_UP: i64 = 12;

/// What the loop remembers between ticks.
#[derive(Debug, Default)]
struct Memory {
    /// End of the newest bucket published.
    published_ms: Option<i64>,
    /// Each target's up state and version at the last read.
    seen: BTreeMap<String, (bool, Option<String>)>,
}

/// Runs until `stop`: polls `source`, fills `health`, publishes to `sink`.
pub(crate) async fn run(
    source: Arc<PromSource>,
    health: HealthBoard,
    sink: Arc<dyn PointSink>,
    clock: SharedClock,
    stop: CancellationToken,
) {
    let timing = source.timing();
    let mut memory = Memory::default();
    tracing::info!(engine = %source.client().engine(), "Reading every number from the engine (source mode).");
    loop {
        let result = tick(&source, &health, sink.as_ref(), clock.now_ms(), &mut memory).await;
        if source.record_poll(result.as_ref().map(|_| ())) {
            match &result {
                Err(e) => tracing::warn!(error = %e, "The engine does not answer; pages say so until it does."),
                Ok(()) => tracing::info!(engine = %source.client().engine(), "The engine answers again."),
            }
        }
        let wait = next_wake(clock.now_ms(), timing.point_ms, timing.settle_ms());
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Time until the next bucket is complete: its end plus `settle_ms`.
fn next_wake(now_ms: i64, point_ms: i64, settle_ms: i64) -> Duration {
    let next = ((now_ms - settle_ms).div_euclid(point_ms) + 1) * point_ms + settle_ms;
    Duration::from_millis(u64::try_from(next - now_ms).unwrap_or(0).max(1))
}

/// One poll: targets first (a page shows who is down even while points fail), then points.
async fn tick(
    source: &PromSource,
    health: &HealthBoard,
    sink: &dyn PointSink,
    now_ms: i64,
    memory: &mut Memory,
) -> Result<(), EngineError> {
    let session = source.session();
    let found = targets::fetch(&session, now_ms).await?;
    let previous: BTreeMap<String, String> =
        memory.seen.iter().filter_map(|(url, (_, v))| v.clone().map(|v| (url.clone(), v))).collect();
    let events = targets::version_changes(&previous, &found, now_ms);
    log_transitions(&memory.seen, &found);
    memory.seen = found.iter().map(|h| (h.url.clone(), (h.up, h.version.clone()))).collect();
    health.replace(found);
    if !events.is_empty() {
        sink.publish_events(events);
    }
    publish_new_buckets(source, &session, sink, now_ms, memory).await
}

/// Publishes every bucket completed since the last one published (the newest alone at start).
async fn publish_new_buckets(
    source: &PromSource,
    session: &Session<'_>,
    sink: &dyn PointSink,
    now_ms: i64,
    memory: &mut Memory,
) -> Result<(), EngineError> {
    let t = source.timing();
    let newest = (now_ms - t.settle_ms()).div_euclid(t.point_ms) * t.point_ms;
    let after = memory.published_ms.map_or(newest - t.point_ms, |p| p.max(newest - MAX_CATCH_UP * t.point_ms));
    if newest <= after {
        return Ok(());
    }
    let q = PointQuery { start_ms: after, end_ms: newest, step_ms: t.point_ms, variant: None, target_url: None };
    let found = points::fetch(session, &t, &q, now_ms).await?;
    for bucket in found.chunk_by(|a, b| a.timestamp == b.timestamp) {
        sink.publish(bucket.to_vec());
    }
    memory.published_ms = Some(newest);
    Ok(())
}

/// One line per target going down or coming back, as the scraper logs them.
fn log_transitions(before: &BTreeMap<String, (bool, Option<String>)>, now: &[TargetHealth]) {
    for h in now {
        match before.get(&h.url) {
            Some((true, _)) if !h.up => tracing::warn!(target_url = %h.url, "Target is down (the engine's up == 0)."),
            Some((false, _)) if h.up => tracing::info!(target_url = %h.url, variant = %h.variant, "Target is up."),
            None if !h.up => tracing::warn!(target_url = %h.url, "Target is down (the engine's up == 0)."),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_wakes_when_the_next_bucket_is_complete() {
        assert_eq!(next_wake(10_000, 5_000, 750), Duration::from_millis(750));
        assert_eq!(next_wake(10_750, 5_000, 750), Duration::from_millis(5_000));
        assert_eq!(next_wake(12_000, 5_000, 750), Duration::from_millis(3_750));
    }
}
