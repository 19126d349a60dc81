//! Wall-clock time behind a seam.
//!
//! Bucket edges, retention cut-offs, rollup watermarks and health ages all come from one
//! injected [`Clock`], so tests can drive them exactly with [`ManualClock`] instead of sleeping.
//! Waiting itself (intervals, timeouts) uses tokio time; only *reading* the wall clock goes here.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Source of wall-clock time in Unix milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// Shared clock handle used across the application.
pub type SharedClock = Arc<dyn Clock>;

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place allowed to read the OS clock
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that only moves when told to; for tests of retention, rollups and health ages.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// A clock frozen at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self { now_ms: AtomicI64::new(now_ms) }
    }

    /// Sets the current time.
    #[cfg(test)]
    pub(crate) fn set_ms(&self, now_ms: i64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the clock forward by `delta_ms`.
    pub fn advance_ms(&self, delta_ms: i64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// Formats Unix milliseconds as RFC 3339 UTC with millisecond precision (`2026-11-25T08:00:00.000Z`).
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// End of the `width_ms`-wide, epoch-aligned bucket that contains `ms`.
///
/// Buckets are half-open on the left, `(end - width, end]`, so an event exactly on an edge
/// belongs to the bucket that ends there. Saturates at the ends of `i64` rather than overflow:
/// callers bound their times first (see [`checked_bucket_end`]), and a time that slipped past
/// them must not panic a debug build or wrap in a release one.
pub fn bucket_end(ms: i64, width_ms: i64) -> i64 {
    checked_bucket_end(ms, width_ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// [`bucket_end`], or `None` when the width is not positive or the edge lies beyond `i64`:
/// for validating times that come from outside (query parameters).
pub(crate) fn checked_bucket_end(ms: i64, width_ms: i64) -> Option<i64> {
    if width_ms <= 0 {
        return None;
    }
    match ms.rem_euclid(width_ms) {
        0 => Some(ms),
        rem => ms.checked_sub(rem)?.checked_add(width_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_end_is_left_open() {
        assert_eq!(bucket_end(5_000, 5_000), 5_000);
        assert_eq!(bucket_end(5_001, 5_000), 10_000);
        assert_eq!(bucket_end(9_999, 5_000), 10_000);
        assert_eq!(bucket_end(0, 60_000), 0);
        assert_eq!(bucket_end(-1, 5_000), 0);
    }

    #[test]
    fn bucket_edges_beyond_i64_are_none_or_saturate() {
        assert_eq!(checked_bucket_end(i64::MAX, 5_000), None);
        assert_eq!(checked_bucket_end(i64::MIN, 3), None);
        assert_eq!(checked_bucket_end(1_000, 0), None);
        assert_eq!(checked_bucket_end(i64::MAX - 807, 5_000), Some(i64::MAX - 807));
        assert_eq!(bucket_end(i64::MAX, 5_000), i64::MAX);
        assert_eq!(bucket_end(i64::MIN, 3), i64::MIN);
        assert_eq!(bucket_end(1, i64::MAX), i64::MAX);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance_ms(500);
        assert_eq!(c.now_ms(), 1_500);
        c.set_ms(42);
        assert_eq!(c.now_ms(), 42);
    }

    #[test]
    fn rfc3339_is_utc_millis() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
