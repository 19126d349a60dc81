//! zai-proxy's adaptive rate limiter (docs/decisions.md, Built-in proxy): a token bucket whose rate follows
//! an EWMA estimate of the upstream's ceiling.
//!
//! Feedback is evaluated lazily, at most once per 30 s window of the injected clock: more than
//! 5 % throttled responses pulls the ceiling towards the current rate and drops just below it;
//! a clean window (< 1 %) climbs halfway back towards the ceiling, and every `probe_interval`
//! clean windows probes just above it. The ceiling is persisted (temp file + rename) so a
//! restart resumes at the learned rate. The bucket itself refills on tokio time, so waiting is
//! cancellable: a client that goes away stops waiting.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::{SharedClock, rfc3339_ms};

/// Limiter parameters (`RATE_LIMIT_*`).
#[derive(Debug, Clone)]
pub struct LimiterSettings {
    /// Starting rate, requests per second.
    pub initial: f64,
    /// Lowest rate.
    pub min: f64,
    /// Highest rate, and the starting ceiling estimate.
    pub max: f64,
    /// EWMA weight of the current rate when the ceiling moves.
    pub alpha: f64,
    /// Distance kept below (hold) or gone above (probe) the ceiling.
    pub hold_margin: f64,
    /// Clean windows between probes; 0 disables probing.
    pub probe_interval: u32,
    /// Evaluation window.
    pub window: Duration,
    /// Where the learned ceiling is kept.
    pub state_file: Option<PathBuf>,
    /// A state file older than this is ignored.
    pub state_max_age: Duration,
}

/// A rate change decided by feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Adjustment {
    /// Climbed towards the ceiling.
    Increase,
    /// Backed off after throttling.
    Decrease,
    /// Tried just above the ceiling.
    Probe,
}

impl Adjustment {
    /// The `direction` label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Increase => "increase",
            Self::Decrease => "decrease",
            Self::Probe => "probe",
        }
    }
}

/// What `/health` shows.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LimiterView {
    /// Current rate.
    pub current_rate: f64,
    /// Ceiling estimate.
    pub ceiling: f64,
    /// Rate held below the ceiling.
    pub hold: f64,
    /// When the ceiling last moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling_updated_at: Option<String>,
    /// State file path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<String>,
    /// Whether the start state came from the file.
    pub restored_from_state: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Persisted {
    ceiling: f64,
    hold: f64,
    #[serde(default)]
    ts: Option<String>,
}

#[derive(Debug)]
struct Inner {
    current: f64,
    ceiling: f64,
    clean_windows: u32,
    window_start_ms: i64,
    successes: u64,
    throttled: u64,
    tokens: f64,
    refilled_at: Instant,
    restored: bool,
    ceiling_updated_ms: Option<i64>,
}

/// The limiter; shared by all requests of one proxy.
#[derive(Debug)]
pub struct Limiter {
    s: LimiterSettings,
    clock: SharedClock,
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Limiter {
    /// A limiter at the initial rate, or at the persisted state when it is fresh.
    pub(crate) fn new(s: LimiterSettings, clock: SharedClock) -> Self {
        let now = clock.now_ms();
        let mut inner = Inner {
            current: s.initial.clamp(s.min, s.max),
            ceiling: s.max,
            clean_windows: 0,
            window_start_ms: now,
            successes: 0,
            throttled: 0,
            tokens: 0.0,
            refilled_at: Instant::now(),
            restored: false,
            ceiling_updated_ms: None,
        };
        if let Some((p, at)) = restore(&s, now) {
            inner.ceiling = p.ceiling.clamp(s.min, s.max);
            inner.current = p.hold.clamp(s.min, inner.ceiling);
            inner.restored = true;
            inner.ceiling_updated_ms = Some(at);
        }
        inner.tokens = burst(inner.current);
        Self { s, clock, inner: Mutex::new(inner), changed: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current rate.
    pub(crate) fn current(&self) -> f64 {
        self.lock().current
    }

    /// Waits for one token; returns how long it waited. Dropping the future stops waiting.
    pub(crate) async fn acquire(&self) -> Duration {
        let started = Instant::now();
        loop {
            let wait = {
                let mut g = self.lock();
                let now = Instant::now();
                let rate = g.current;
                g.tokens = (g.tokens + now.duration_since(g.refilled_at).as_secs_f64() * rate).min(burst(rate));
                g.refilled_at = now;
                if g.tokens >= 1.0 {
                    g.tokens -= 1.0;
                    return started.elapsed();
                }
                if rate > 0.0 { Some(Duration::from_secs_f64((1.0 - g.tokens) / rate)) } else { None }
            };
            match wait {
                Some(d) => tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = self.changed.notified() => {}
                },
                None => self.changed.notified().await,
            }
        }
    }

    /// A request ended 2xx.
    pub(crate) fn record_success(&self) -> Option<Adjustment> {
        self.feedback(false)
    }

    /// The upstream throttled a request (frequency or unknown 429).
    pub(crate) fn record_throttle(&self) -> Option<Adjustment> {
        self.feedback(true)
    }

    fn feedback(&self, throttled: bool) -> Option<Adjustment> {
        let now = self.clock.now_ms();
        let mut g = self.lock();
        if throttled {
            g.throttled += 1;
        } else {
            g.successes += 1;
        }
        if now - g.window_start_ms < crate::setting::duration_ms(self.s.window) {
            return None;
        }
        let share = g.throttled as f64 / (g.throttled + g.successes) as f64;
        g.throttled = 0;
        g.successes = 0;
        g.window_start_ms = now;
        let adj = self.evaluate(&mut g, share, now);
        if adj.is_some() {
            self.changed.notify_waiters();
        }
        adj
    }

    fn evaluate(&self, g: &mut Inner, share: f64, now: i64) -> Option<Adjustment> {
        let s = &self.s;
        let target = (g.ceiling * (1.0 - s.hold_margin)).clamp(s.min, s.max);
        if share > 0.05 {
            g.ceiling = s.alpha * g.current + (1.0 - s.alpha) * g.ceiling;
            g.current = (g.ceiling * (1.0 - s.hold_margin)).max(s.min);
            g.clean_windows = 0;
            g.ceiling_updated_ms = Some(now);
            self.persist(g, now);
            return Some(Adjustment::Decrease);
        }
        if share >= 0.01 {
            return None;
        }
        g.clean_windows += 1;
        if s.probe_interval > 0 && g.clean_windows >= s.probe_interval && g.current < s.max {
            g.current = (g.ceiling * (1.0 + s.hold_margin)).min(s.max);
            g.clean_windows = 0;
            return Some(Adjustment::Probe);
        }
        if g.current < target {
            g.current = (g.current + ((target - g.current) / 2.0).max(0.25)).min(target);
            return Some(Adjustment::Increase);
        }
        None
    }

    /// Back to the initial rate (ceiling too), forgetting the state file.
    pub(crate) fn reset(&self) -> f64 {
        let mut g = self.lock();
        g.current = self.s.initial.clamp(self.s.min, self.s.max);
        g.ceiling = g.current;
        g.clean_windows = 0;
        g.ceiling_updated_ms = None;
        g.restored = false;
        if let Some(path) = &self.s.state_file {
            let _ = std::fs::remove_file(path);
        }
        self.changed.notify_waiters();
        g.current
    }

    /// For `/health`.
    pub(crate) fn view(&self) -> LimiterView {
        let g = self.lock();
        LimiterView {
            current_rate: g.current,
            ceiling: g.ceiling,
            hold: (g.ceiling * (1.0 - self.s.hold_margin)).clamp(self.s.min, self.s.max),
            ceiling_updated_at: g.ceiling_updated_ms.map(rfc3339_ms),
            state_file: self.s.state_file.as_ref().map(|p| p.display().to_string()),
            restored_from_state: g.restored,
        }
    }

    fn persist(&self, g: &Inner, now: i64) {
        let Some(path) = &self.s.state_file else { return };
        let body = Persisted { ceiling: g.ceiling, hold: g.current, ts: Some(rfc3339_ms(now)) };
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec(&body)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        // Tried at every adjustment: at most one line a minute while the disk refuses.
        static NOT_PERSISTED: crate::telemetry::LogThrottle = crate::telemetry::LogThrottle::new();
        if let Err(e) = result
            && let Some(suppressed) = NOT_PERSISTED.admit()
        {
            tracing::warn!(path = %path.display(), error = %e, suppressed, "Cannot persist the rate limit state.");
        }
    }
}

fn burst(rate: f64) -> f64 {
    (2.0 * rate).floor().max(1.0)
}

fn restore(s: &LimiterSettings, now_ms: i64) -> Option<(Persisted, i64)> {
    let path = s.state_file.as_ref()?;
    let text = std::fs::read_to_string(path).ok()?;
    let p: Persisted = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "Ignoring an unreadable rate limit state file.");
            return None;
        }
    };
    let at =
        p.ts.as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
            .or_else(|| {
                let modified = std::fs::metadata(path).ok()?.modified().ok()?;
                let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
                i64::try_from(since.as_millis()).ok()
            })?;
    let fresh = now_ms - at <= crate::setting::duration_ms(s.state_max_age);
    (p.ceiling > 0.0 && p.hold > 0.0 && fresh).then_some((p, at))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    fn settings(file: Option<PathBuf>) -> LimiterSettings {
        LimiterSettings {
            initial: 10.0,
            min: 1.0,
            max: 50.0,
            alpha: 0.3,
            hold_margin: 0.02,
            probe_interval: 3,
            window: Duration::from_secs(30),
            state_file: file,
            state_max_age: Duration::from_secs(6 * 3600),
        }
    }

    #[test]
    fn throttling_backs_off_and_clean_windows_climb_then_probe() {
        let clock = Arc::new(ManualClock::new(0));
        let l = Limiter::new(settings(None), clock.clone());
        // Clean windows climb halfway towards the ceiling (50 * 0.98 = 49).
        clock.advance_ms(30_000);
        assert_eq!(l.record_success(), Some(Adjustment::Increase));
        assert!((l.current() - 29.5).abs() < 1e-9);
        // Within a window nothing moves.
        assert_eq!(l.record_success(), None);
        // A window with 10 % throttling: ceiling = 0.3 * 29.5 + 0.7 * 50, rate just below it.
        for _ in 0..9 {
            l.record_success();
        }
        clock.advance_ms(30_000);
        assert_eq!(l.record_throttle(), Some(Adjustment::Decrease));
        let ceiling = 0.3 * 29.5 + 0.7 * 50.0;
        assert!((l.view().ceiling - ceiling).abs() < 1e-9);
        assert!((l.current() - ceiling * 0.98).abs() < 1e-9);
        // Three clean windows: the third probes above the ceiling.
        for expected in [None, None, Some(Adjustment::Probe)] {
            clock.advance_ms(30_000);
            assert_eq!(l.record_success(), expected);
        }
        assert!((l.current() - ceiling * 1.02).abs() < 1e-9);
    }

    #[test]
    fn the_ceiling_survives_a_restart_until_it_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ceiling.json");
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let l = Limiter::new(settings(Some(file.clone())), clock.clone());
        clock.advance_ms(30_000);
        l.record_throttle();
        let learned = l.current();
        let again = Limiter::new(settings(Some(file.clone())), clock.clone());
        assert!(again.view().restored_from_state);
        assert!((again.current() - learned).abs() < 1e-9);
        clock.advance_ms(7 * 3600 * 1000);
        assert!(!Limiter::new(settings(Some(file.clone())), clock.clone()).view().restored_from_state);
        again.reset();
        assert!(!file.exists());
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_paces_requests_at_the_rate() {
        let l = Limiter::new(LimiterSettings { initial: 2.0, ..settings(None) }, Arc::new(ManualClock::new(0)));
        let start = Instant::now();
        for _ in 0..8 {
            l.acquire().await; // burst of 4, then one every 500 ms
        }
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(1900) && waited <= Duration::from_millis(2100), "{waited:?}");
    }
}
