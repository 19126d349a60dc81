//! The poll loop, what it keeps between polls, the families it writes and its `/health` part.
//!
//! One poll: GET the endpoint with `Authorization: <key>` (no scheme, as the provider expects),
//! read at most [`MAX_ANSWER_BYTES`], normalise. Then, under a short lock, the outcome updates
//! the kept state (a success replaces the sample; a failure keeps it), and outside the lock the
//! families are written: the outcome's `poll_total`, one extra `stale` on the first poll that
//! finds the sample not fresh (a first poll that fails included), the window gauges after a
//! success, and the sample age after every poll once a sample exists.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, header};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::schema::{Snapshot, label_value, normalise};
use super::settings::go_duration;
use super::{MAX_ANSWER_BYTES, QuotaError, QuotaSettings, result};
use crate::clock::SharedClock;
use crate::proxy::metrics::ProxyMetrics;

/// Polls one account's quota for one proxy.
pub struct QuotaPoller {
    settings: QuotaSettings,
    key: String,
    /// The proxy's variant, bounded like every quota label.
    variant: String,
    client: reqwest::Client,
    clock: SharedClock,
    state: Mutex<State>,
}

impl std::fmt::Debug for QuotaPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaPoller")
            .field("settings", &self.settings)
            .field("key", &"<redacted>")
            .field("variant", &self.variant)
            .finish_non_exhaustive()
    }
}

/// What is kept between polls.
#[derive(Debug, Default)]
struct State {
    /// The last good answer; `None` until the first success.
    sample: Option<Snapshot>,
    last_success_ms: Option<i64>,
    last_outcome: Option<&'static str>,
    /// The current staleness was counted already (re-armed by a success).
    stale_counted: bool,
    /// Whether the previous poll failed, so a failure logs once, not once per poll.
    failing: bool,
}

/// What one poll changed, to write outside the lock.
struct Recorded {
    outcome: &'static str,
    went_stale: bool,
    recovered: bool,
    first_failure: bool,
    age_seconds: Option<f64>,
}

/// The `quota` object of `/health`, fields in zai-proxy's order; details are left out while
/// there is no sample (and all but the two flags while polling is off).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct QuotaHealth {
    /// Polling is on.
    pub enabled: bool,
    /// A success within `QUOTA_STALE_AFTER`.
    pub fresh: bool,
    /// `QUOTA_POLL_INTERVAL`, Go-style (`1m0s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// `QUOTA_STALE_AFTER`, Go-style.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<String>,
    /// When the last good sample was read (RFC 3339, seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<String>,
    /// Its age now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_age_seconds: Option<f64>,
    /// `success`, `error` or `malformed`: the last poll's outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<&'static str>,
    /// The provider's plan level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_tier: Option<String>,
    /// The sample's windows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowHealth>,
}

/// One window in `/health`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct WindowHealth {
    /// `five_hour` or `weekly`.
    pub window: &'static str,
    /// The provider's spelling (`CREDIT_LIMIT`, `TOKENS_LIMIT`).
    pub limit_type: &'static str,
    /// Used fraction, [0, 1].
    pub used_fraction: f64,
    /// Next reset (RFC 3339, seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<String>,
}

impl QuotaHealth {
    /// What `/health` shows while polling is off.
    pub(crate) fn disabled() -> Self {
        Self::default()
    }
}

impl QuotaPoller {
    /// A poller for `key` with `variant`'s label; its client follows no redirect (the key would
    /// go along) and gives up after the poll timeout.
    pub(crate) fn new(
        settings: QuotaSettings,
        key: &str,
        variant: &str,
        clock: SharedClock,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .build()?;
        Ok(Self {
            settings,
            key: key.to_owned(),
            variant: label_value(variant),
            client,
            clock,
            state: Mutex::new(State::default()),
        })
    }

    /// Polls at once, then every interval, until `cancel`; a poll in flight is dropped then.
    pub(crate) async fn run(self: Arc<Self>, metrics: &ProxyMetrics, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let answer = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                answer = self.poll() => answer,
            };
            self.record(answer, metrics);
        }
    }

    /// One poll, bounded by the timeout as a whole.
    async fn poll(&self) -> Result<Snapshot, QuotaError> {
        tokio::time::timeout(self.settings.timeout, self.fetch()).await.unwrap_or(Err(QuotaError::Timeout))
    }

    async fn fetch(&self) -> Result<Snapshot, QuotaError> {
        let mut key = HeaderValue::from_str(&self.key).map_err(|_| QuotaError::KeyNotAHeader)?;
        key.set_sensitive(true);
        let mut resp = self
            .client
            .get(&self.settings.endpoint)
            .header(header::AUTHORIZATION, key)
            .header(header::ACCEPT, "application/json")
            .header(header::ACCEPT_LANGUAGE, "en-US,en;q=0.9")
            .send()
            .await
            .map_err(transport)?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(QuotaError::Status(resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
            return Err(QuotaError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(QuotaError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        normalise(&body)
    }

    /// Keeps the outcome of one poll and writes the families.
    fn record(&self, answer: Result<Snapshot, QuotaError>, metrics: &ProxyMetrics) {
        let now = self.clock.now_ms();
        let Some(done) = self.keep(&answer, now) else { return };
        let v = self.variant.as_str();
        metrics.quota_poll.add(&[done.outcome, v], 1.0);
        if done.went_stale {
            metrics.quota_poll.add(&[result::STALE, v], 1.0);
        }
        if let Ok(snapshot) = &answer {
            write_windows(metrics, snapshot, v);
        }
        if let Some(age) = done.age_seconds {
            metrics.quota_sample_age.set(&[v], age);
        }
        self.log(&done, answer.err());
    }

    /// Updates the kept state under the lock; `None` only if the lock is poisoned.
    fn keep(&self, answer: &Result<Snapshot, QuotaError>, now: i64) -> Option<Recorded> {
        let (good, bad) = (answer.as_ref().ok(), answer.as_ref().err());
        let mut s = self.state.lock().ok()?;
        let outcome = bad.map_or(result::SUCCESS, QuotaError::result);
        let recovered = good.is_some() && s.failing;
        let first_failure = bad.is_some() && !s.failing;
        if let Some(snapshot) = good {
            s.sample = Some(snapshot.clone());
            s.last_success_ms = Some(now);
            s.stale_counted = false;
        }
        s.failing = bad.is_some();
        s.last_outcome = Some(outcome);
        let went_stale = !self.fresh(&s, now) && !s.stale_counted;
        s.stale_counted |= went_stale;
        let age_seconds = s.sample.as_ref().and(s.last_success_ms).map(|t| age_seconds(t, now));
        Some(Recorded { outcome, went_stale, recovered, first_failure, age_seconds })
    }

    fn fresh(&self, s: &State, now: i64) -> bool {
        let stale_ms = i64::try_from(self.settings.stale_after.as_millis()).unwrap_or(i64::MAX);
        s.sample.is_some() && s.last_success_ms.is_some_and(|t| now.saturating_sub(t) <= stale_ms)
    }

    /// Transitions only: the first failure, a recovery, going stale; every poll at DEBUG.
    fn log(&self, done: &Recorded, error: Option<QuotaError>) {
        let code = error.as_ref().map_or("", QuotaError::code);
        tracing::debug!(variant = %self.variant, result = done.outcome, code, "Quota polled.");
        if let (true, Some(e)) = (done.first_failure, &error) {
            tracing::warn!(variant = %self.variant, result = done.outcome, code, error = %e, "Quota poll failed; the last good sample is kept.");
        }
        if done.recovered {
            tracing::info!(variant = %self.variant, "Quota poll succeeded again.");
        }
        if done.went_stale {
            let stale_after = go_duration(self.settings.stale_after);
            tracing::warn!(variant = %self.variant, %stale_after, "Quota sample is stale: no successful poll within QUOTA_STALE_AFTER.");
        }
    }

    /// The `quota` object of `/health`, ages as of now.
    pub(crate) fn health(&self) -> QuotaHealth {
        let now = self.clock.now_ms();
        let mut h = QuotaHealth {
            enabled: true,
            interval: Some(go_duration(self.settings.interval)),
            stale_after: Some(go_duration(self.settings.stale_after)),
            ..QuotaHealth::default()
        };
        let Ok(s) = self.state.lock() else { return h };
        h.fresh = self.fresh(&s, now);
        h.last_outcome = s.last_outcome;
        let (Some(sample), Some(at)) = (&s.sample, s.last_success_ms) else { return h };
        h.last_success_at = Some(rfc3339_seconds(at));
        h.sample_age_seconds = Some(age_seconds(at, now));
        h.plan_tier.clone_from(&sample.plan_tier);
        h.windows = sample
            .windows
            .iter()
            .map(|w| WindowHealth {
                window: w.window.label(),
                limit_type: w.limit_type.wire(),
                used_fraction: w.used_ratio,
                reset_at: w.reset_ms.map(rfc3339_seconds),
            })
            .collect();
        h
    }
}

/// Sets usage, remaining and (when advertised) reset of every window of a good sample.
fn write_windows(metrics: &ProxyMetrics, snapshot: &Snapshot, variant: &str) {
    for w in &snapshot.windows {
        let labels = [w.limit_type.label(), variant, w.window.label()];
        metrics.quota_usage.set(&labels, w.used_ratio);
        metrics.quota_remaining.set(&labels, 1.0 - w.used_ratio);
        if let Some(ms) = w.reset_ms {
            metrics.quota_reset.set(&labels, ms.div_euclid(1000) as f64);
        }
    }
}

fn transport(e: reqwest::Error) -> QuotaError {
    if e.is_timeout() { QuotaError::Timeout } else { QuotaError::Unreachable }
}

fn age_seconds(since_ms: i64, now_ms: i64) -> f64 {
    now_ms.saturating_sub(since_ms).max(0) as f64 / 1000.0
}

fn rfc3339_seconds(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
