//! Per-target scrape health, recorded as data (Prometheus' `up`), and logged on transitions only.

use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::clock::rfc3339_ms;

/// Health of one target, as `/api/targets` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetHealth {
    /// Database id.
    #[serde(skip)]
    pub target_id: i64,
    /// Scrape URL.
    pub url: String,
    /// Current variant.
    pub variant: String,
    /// Whether the last scrape succeeded.
    pub up: bool,
    /// When the last scrape (successful or not) completed, Unix ms.
    #[serde(skip)]
    pub last_scrape_ms: Option<i64>,
    /// When the last successful scrape completed, Unix ms.
    #[serde(skip)]
    pub last_success_ms: Option<i64>,
    /// Why the last scrape failed; cleared by a success.
    pub last_error: Option<String>,
    /// Duration of the last scrape.
    pub scrape_duration_ms: f64,
    /// Samples in the last successful exposition.
    pub samples: usize,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// `zai_proxy_build_info` version of the target.
    pub version: Option<String>,
}

impl TargetHealth {
    /// A target not scraped yet.
    pub fn new(target_id: i64, url: String, variant: String) -> Self {
        Self {
            target_id,
            url,
            variant,
            up: false,
            last_scrape_ms: None,
            last_success_ms: None,
            last_error: None,
            scrape_duration_ms: 0.0,
            samples: 0,
            consecutive_failures: 0,
            version: None,
        }
    }

    /// `last_success` as RFC 3339.
    pub fn last_success(&self) -> Option<String> {
        self.last_success_ms.map(rfc3339_ms)
    }

    /// True when the target had a successful scrape within `window_ms` of `now_ms`.
    pub fn fresh(&self, now_ms: i64, window_ms: i64) -> bool {
        self.last_success_ms.is_some_and(|t| now_ms - t <= window_ms)
    }
}

/// The health of every configured target, shared between scrapers and readers.
#[derive(Debug, Clone, Default)]
pub struct HealthBoard {
    inner: Arc<RwLock<Vec<TargetHealth>>>,
}

/// A successful scrape, as health data.
#[derive(Debug)]
pub struct Success {
    /// Completion time.
    pub at_ms: i64,
    /// Scrape duration.
    pub duration_ms: f64,
    /// Samples parsed.
    pub samples: usize,
    /// Resolved variant.
    pub variant: String,
    /// Reported version.
    pub version: Option<String>,
}

impl HealthBoard {
    /// A board for these targets, in configuration order.
    pub fn new(targets: Vec<TargetHealth>) -> Self {
        Self { inner: Arc::new(RwLock::new(targets)) }
    }

    /// A copy of every target's health.
    pub fn snapshot(&self) -> Vec<TargetHealth> {
        self.inner.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Records a success; logs once when a target comes (back) up or changes version.
    pub fn record_success(&self, idx: usize, s: Success) {
        let Ok(mut all) = self.inner.write() else { return };
        let Some(h) = all.get_mut(idx) else { return };
        if !h.up {
            tracing::info!(target_url = %h.url, variant = %s.variant, "Target is up.");
        }
        if h.version.is_some() && s.version.is_some() && h.version != s.version {
            tracing::info!(target_url = %h.url, from = ?h.version, to = ?s.version, "Target version changed.");
        }
        h.up = true;
        h.last_scrape_ms = Some(s.at_ms);
        h.last_success_ms = Some(s.at_ms);
        h.last_error = None;
        h.scrape_duration_ms = s.duration_ms;
        h.samples = s.samples;
        h.consecutive_failures = 0;
        h.variant = s.variant;
        if s.version.is_some() {
            h.version = s.version;
        }
    }

    /// Records a failure; logs once when a target goes down (or fails its first scrape).
    pub fn record_failure(&self, idx: usize, at_ms: i64, duration_ms: f64, error: String) {
        let Ok(mut all) = self.inner.write() else { return };
        let Some(h) = all.get_mut(idx) else { return };
        if h.up || h.consecutive_failures == 0 {
            tracing::warn!(target_url = %h.url, error = %error, "Target is down.");
        }
        h.up = false;
        h.last_scrape_ms = Some(at_ms);
        h.last_error = Some(error);
        h.scrape_duration_ms = duration_ms;
        h.consecutive_failures = h.consecutive_failures.saturating_add(1);
    }
}
