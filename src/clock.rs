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
    pub fn set_ms(&self, now_ms: i64) {
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
/// belongs to the bucket that ends there.
pub fn bucket_end(ms: i64, width_ms: i64) -> i64 {
    debug_assert!(width_ms > 0);
    let rem = ms.rem_euclid(width_ms);
    if rem == 0 { ms } else { ms - rem + width_ms }
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
