//! Receivers: each on its own task, fed through a mailbox that keeps the latest news per alert.
//!
//! The engine never waits for a receiver. It posts to a [`Mailbox`], which holds at most one
//! notification per alert (a newer one replaces an unsent older one) and at most
//! [`MAILBOX_ALERTS`] alerts, so a receiver that is down costs bounded memory and delays nothing
//! else. The receiver's task sends what the mailbox holds (Alertmanager: everything in one
//! request; webhooks: one alert per message), retries failures with capped exponential backoff,
//! and reports each success back to the engine, which records it so that a restart only sends
//! what a receiver has not acknowledged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::notify::{self, Notification};
use crate::clock::SharedClock;
use crate::phase::AlertPhase;

/// Alerts a mailbox holds before it drops news of further alerts (counted).
pub(crate) const MAILBOX_ALERTS: usize = 1024;
/// Alerts per Alertmanager request.
const BATCH: usize = 64;
/// Longest a single delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a delivery attempt failed. Never quotes the receiver's body or its URL's path (a Slack
/// webhook URL is a secret).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// The receiver answered with a status other than 2xx.
    #[error("HTTP {0}")]
    Status(u16),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// Could not connect or the exchange broke.
    #[error("connection failed: {0}")]
    Transport(String),
}

/// How a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Alertmanager API v2.
    Alertmanager,
    /// Alertmanager's webhook JSON.
    Webhook,
    /// Slack's `{"text": ...}`.
    Slack,
}

/// Counters and the last outcome of one receiver (self-metrics and the alerts page).
#[derive(Debug)]
pub struct ReceiverStats {
    /// `alertmanager` or `webhook`.
    pub name: &'static str,
    /// How it speaks.
    pub format: Format,
    /// Where it is, reduced to scheme, host and port.
    pub origin: String,
    /// Notifications delivered.
    pub sent: AtomicU64,
    /// Failed attempts (each is retried).
    pub failures: AtomicU64,
    /// Notifications dropped because the mailbox was full.
    pub dropped: AtomicU64,
    /// Last success and last failure.
    pub last: Mutex<LastDelivery>,
}

/// The last outcomes of a receiver, Unix ms.
#[derive(Debug, Clone, Default)]
pub struct LastDelivery {
    /// Last successful delivery.
    pub success_ms: Option<i64>,
    /// Last failed attempt and why.
    pub error: Option<(i64, String)>,
}

/// A receiver acknowledged an alert's phase.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ack {
    /// Which receiver.
    pub receiver: &'static str,
    /// Rule and variant.
    pub key: (String, String),
    /// The phase it was told.
    pub phase: AlertPhase,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// The latest undelivered notification per alert, bounded.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    items: Mutex<BTreeMap<(String, String), Notification>>,
    wake: Notify,
}

impl Mailbox {
    /// Posts a notification, replacing an unsent one of the same alert; returns false when the
    /// mailbox is full and the notification was dropped.
    pub(crate) fn post(&self, n: Notification) -> bool {
        let Ok(mut items) = self.items.lock() else { return false };
        if !items.contains_key(&n.key) && items.len() >= MAILBOX_ALERTS {
            return false;
        }
        items.insert(n.key.clone(), n);
        drop(items);
        self.wake.notify_one();
        true
    }

    /// Notifications waiting.
    pub(crate) fn len(&self) -> usize {
        self.items.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// Whether nothing waits.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes up to `max` notifications, waiting until there is one.
    pub(crate) async fn take(&self, max: usize) -> Vec<Notification> {
        loop {
            if let Ok(mut items) = self.items.lock()
                && !items.is_empty()
            {
                let keys: Vec<_> = items.keys().take(max).cloned().collect();
                return keys.iter().filter_map(|k| items.remove(k)).collect();
            }
            self.wake.notified().await;
        }
    }

    /// Puts back notifications that failed, unless a newer one for the same alert arrived.
    fn put_back(&self, failed: Vec<Notification>) {
        if let Ok(mut items) = self.items.lock() {
            for n in failed {
                items.entry(n.key.clone()).or_insert(n);
            }
        }
    }
}

/// Timings of delivery.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// First retry delay; doubled per failure.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long Alertmanager may consider a firing alert valid without hearing again.
    pub valid_for: Duration,
}

/// One receiver's task.
#[derive(Debug)]
pub(crate) struct Receiver {
    /// Counters, shared with the page.
    pub stats: Arc<ReceiverStats>,
    /// What to send.
    pub mailbox: Arc<Mailbox>,
    /// Where.
    pub url: url::Url,
    /// HTTP client.
    pub client: reqwest::Client,
    /// Backoff and validity.
    pub timing: Timing,
    /// Where acknowledgements go.
    pub acks: mpsc::Sender<Ack>,
    /// Wall clock.
    pub clock: SharedClock,
}

impl Receiver {
    /// Sends until `stop`: a failure waits out its backoff, then the mailbox's latest is sent.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let max = if self.stats.format == Format::Alertmanager { BATCH } else { 1 };
        let mut failures = 0u32;
        loop {
            let batch = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                b = self.mailbox.take(max) => b,
            };
            let now = self.clock.now_ms();
            // A send in progress at shutdown is abandoned: unacknowledged, it is sent after the
            // restart, and shutdown never waits out a slow receiver.
            let result = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                r = self.send(&batch, now) => r,
            };
            match result {
                Ok(()) => {
                    self.succeeded(&batch, now, failures);
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.failed(&e, now, failures);
                    self.mailbox.put_back(batch);
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff(self.timing, failures)) => {}
                    }
                }
            }
        }
    }

    async fn send(&self, batch: &[Notification], now_ms: i64) -> Result<(), DeliveryError> {
        let (url, body) = match self.stats.format {
            Format::Alertmanager => {
                let valid = now_ms + i64::try_from(self.timing.valid_for.as_millis()).unwrap_or(i64::MAX / 2);
                (alertmanager_endpoint(&self.url), notify::alertmanager_body(batch, valid))
            }
            Format::Webhook => (self.url.clone(), batch.first().map(notify::webhook_body).unwrap_or_default()),
            Format::Slack => (self.url.clone(), batch.first().map(notify::slack_body).unwrap_or_default()),
        };
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(ATTEMPT_TIMEOUT);
        let resp = request.send().await.map_err(|e| {
            if e.is_timeout() { DeliveryError::Timeout } else { DeliveryError::Transport(e.without_url().to_string()) }
        })?;
        let status = resp.status();
        if status.is_success() { Ok(()) } else { Err(DeliveryError::Status(status.as_u16())) }
    }

    fn succeeded(&self, batch: &[Notification], now_ms: i64, failures_before: u32) {
        if failures_before > 0 {
            tracing::info!(receiver = self.stats.name, failures = failures_before, "Alert receiver reachable again.");
        }
        self.stats.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Ok(mut last) = self.stats.last.lock() {
            last.success_ms = Some(now_ms);
        }
        for n in batch {
            let ack = Ack { receiver: self.stats.name, key: n.key.clone(), phase: n.phase, at_ms: now_ms };
            let _ = self.acks.try_send(ack); // a lost ack only means a resend after a restart
        }
    }

    fn failed(&self, e: &DeliveryError, now_ms: i64, failures: u32) {
        // The first failure of a run; a receiver that fails every other request would still
        // write one line per request, so at most one a minute.
        static FAILED: crate::telemetry::LogThrottle = crate::telemetry::LogThrottle::new();
        if failures == 1
            && let Some(suppressed) = FAILED.admit()
        {
            tracing::warn!(receiver = self.stats.name, origin = %self.stats.origin, error = %e, suppressed, "Alert delivery failed; retrying with backoff.");
        }
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.stats.last.lock() {
            last.error = Some((now_ms, e.to_string()));
        }
    }
}

/// `{base}/api/v2/alerts`, keeping a path prefix the base URL may have.
fn alertmanager_endpoint(base: &url::Url) -> url::Url {
    let mut u = base.clone();
    let path = format!("{}/api/v2/alerts", base.path().trim_end_matches('/'));
    u.set_path(&path);
    u
}

/// Delay after the `failures`-th failure in a row: base, 2x, 4x, ... up to the maximum.
pub(crate) fn backoff(t: Timing, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    t.retry_base.saturating_mul(factor).min(t.retry_max)
}

/// Scheme, host and port of a URL: enough to say where, never a secret path or credentials.
pub(crate) fn origin(u: &url::Url) -> String {
    u.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(rule: &str, phase: AlertPhase) -> Notification {
        Notification {
            key: (rule.into(), "canary".into()),
            phase,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            starts_ms: 0,
            ends_ms: None,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let t = Timing {
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            valid_for: Duration::ZERO,
        };
        let d: Vec<u64> = (1..=7).map(|f| backoff(t, f).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(t, u32::MAX), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn the_mailbox_keeps_the_latest_per_alert_and_never_overwrites_with_a_failed_one() {
        let m = Mailbox::default();
        assert!(m.post(n("A", AlertPhase::Firing)));
        assert!(m.post(n("A", AlertPhase::Resolved)));
        assert!(m.post(n("B", AlertPhase::Firing)));
        assert_eq!(m.len(), 2);
        let taken = m.take(1).await;
        assert_eq!(taken[0].phase, AlertPhase::Resolved);
        m.post(n("A", AlertPhase::Firing));
        m.put_back(taken);
        let rest = m.take(10).await;
        assert_eq!(
            rest.iter().map(|x| (x.key.0.as_str(), x.phase)).collect::<Vec<_>>(),
            [("A", AlertPhase::Firing), ("B", AlertPhase::Firing)]
        );
    }

    #[test]
    fn a_full_mailbox_drops_news_of_new_alerts_only() {
        let m = Mailbox::default();
        for i in 0..MAILBOX_ALERTS {
            assert!(m.post(n(&format!("R{i}"), AlertPhase::Firing)));
        }
        assert!(!m.post(n("new", AlertPhase::Firing)));
        assert!(m.post(n("R0", AlertPhase::Resolved)), "an alert already waiting is updated");
    }

    #[test]
    fn endpoints_and_origins() {
        let u = url::Url::parse("http://am:9093/prefix/").unwrap();
        assert_eq!(alertmanager_endpoint(&u).as_str(), "http://am:9093/prefix/api/v2/alerts");
        let s = url::Url::parse("https://user:pw@hooks.slack.com/services/T0/B0/secret").unwrap();
        assert_eq!(origin(&s), "https://hooks.slack.com");
    }
}
