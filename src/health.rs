//! Per-target scrape health, recorded as data (Prometheus' `up`), and logged on transitions only;
//! and whether the database takes writes ([`StorageFailure`]), recorded by the writer.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::clock::rfc3339_ms;
use crate::expo::AtomicHistogram;

/// Shortest time between two version-change events of one target. A version that changes at
/// every scrape (a build stamped with the time, a hostile exporter) would otherwise write an
/// event every few seconds, each kept for 30 days and drawn on every chart.
pub(crate) const VERSION_EVENT_INTERVAL_MS: i64 = 60_000;

/// Whether a target whose last version-change event was at `last_event_ms` may have another at
/// `now_ms`.
pub(crate) fn version_event_due(last_event_ms: Option<i64>, now_ms: i64) -> bool {
    last_event_ms.is_none_or(|last| now_ms.saturating_sub(last) >= VERSION_EVENT_INTERVAL_MS)
}

/// Health of one target, as `/api/targets` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetHealth {
    /// Database id.
    #[serde(skip)]
    pub target_id: i64,
    /// Scrape URL as shown, credentials as `***` (the scraper alone holds the real one): every
    /// page, answer, label and log line that names a target takes it from here.
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
    /// Successful scrapes since start (self-metrics).
    #[serde(skip)]
    pub scrapes_ok: u64,
    /// Series left out by the per-scrape limits since start (self-metrics).
    #[serde(skip)]
    pub series_dropped: u64,
    /// Label names and values cut to 128 bytes since start (self-metrics).
    #[serde(skip)]
    pub labels_cut: u64,
    /// Failed scrapes since start by kind of failure (self-metrics; a handful of fixed kinds).
    #[serde(skip)]
    pub scrape_failures: BTreeMap<&'static str, u64>,
    /// A discovered address that no longer resolves: hidden from lists and self-metrics, kept so
    /// its index stays valid and a returning address gets its entry back.
    #[serde(skip)]
    pub retired: bool,
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
            scrapes_ok: 0,
            series_dropped: 0,
            labels_cut: 0,
            scrape_failures: BTreeMap::new(),
            retired: false,
        }
    }

    /// `last_success` as RFC 3339.
    pub(crate) fn last_success(&self) -> Option<String> {
        self.last_success_ms.map(rfc3339_ms)
    }

    /// True when the target had a successful scrape within `window_ms` of `now_ms`.
    pub(crate) fn fresh(&self, now_ms: i64, window_ms: i64) -> bool {
        self.last_success_ms.is_some_and(|t| now_ms - t <= window_ms)
    }
}

/// The health of every configured or discovered target, shared between scrapers and readers.
/// Scrape tasks address entries by index; a vanished address's entry is cleared and its slot
/// given to the next discovered address, so pod churn does not grow the board.
#[derive(Debug, Clone, Default)]
pub struct HealthBoard {
    inner: Arc<RwLock<Vec<TargetHealth>>>,
    durations: Arc<AtomicHistogram>,
    storage: Arc<RwLock<Option<StorageFailure>>>,
}

/// Why the database refuses writes and since when, as the writer last found it. `/healthz`, the
/// pages' banner, self-metrics and the `StorageFailing` rule read it; it is absent while writes
/// succeed, and always in source mode, which keeps no database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFailure {
    /// The first failed write of this episode, Unix ms.
    pub since_ms: i64,
    /// Why the last attempt failed: one sentence, never a path or SQL (probes and pages show it).
    pub last_error: String,
    /// Batches (one per bucket) held in memory until the database takes them.
    pub batches_held: usize,
    /// Failed write attempts in this episode.
    pub failed_commits: u64,
    /// End of the newest bucket in the database: stored history stops there (`None`: nothing
    /// was written since start).
    pub stored_until_ms: Option<i64>,
}

/// A successful scrape, as health data.
#[derive(Debug)]
pub(crate) struct Success {
    /// The target scraped (an entry whose target changed ignores it).
    pub target_id: i64,
    /// Completion time.
    pub at_ms: i64,
    /// Scrape duration.
    pub duration_ms: f64,
    /// Samples parsed.
    pub samples: usize,
    /// Series left out by the per-scrape limits.
    pub dropped: usize,
    /// Label names and values cut to 128 bytes.
    pub cut: usize,
    /// Resolved variant.
    pub variant: String,
    /// Reported version.
    pub version: Option<String>,
}

impl HealthBoard {
    /// A board for these targets, in configuration order.
    pub fn new(targets: Vec<TargetHealth>) -> Self {
        Self {
            inner: Arc::new(RwLock::new(targets)),
            durations: Arc::new(AtomicHistogram::scrape_seconds()),
            storage: Arc::default(),
        }
    }

    /// Records a failed write at `at_ms`: the start of an episode, or one more failure in it.
    pub(crate) fn storage_failed(&self, at_ms: i64, error: String, batches_held: usize, stored_until_ms: Option<i64>) {
        let Ok(mut storage) = self.storage.write() else { return };
        let (since_ms, failed_commits) = storage.as_ref().map_or((at_ms, 0), |f| (f.since_ms, f.failed_commits));
        *storage = Some(StorageFailure {
            since_ms,
            last_error: error,
            batches_held,
            failed_commits: failed_commits + 1,
            stored_until_ms,
        });
    }

    /// Updates how many batches wait, during an episode (batches held between two attempts).
    pub(crate) fn storage_holding(&self, batches_held: usize) {
        if let Ok(mut storage) = self.storage.write()
            && let Some(f) = storage.as_mut()
        {
            f.batches_held = batches_held;
        }
    }

    /// Ends the episode: every held batch is written.
    pub(crate) fn storage_recovered(&self) {
        if let Ok(mut storage) = self.storage.write() {
            *storage = None;
        }
    }

    /// The current storage failure, if writes fail.
    pub fn storage(&self) -> Option<StorageFailure> {
        self.storage.read().ok().and_then(|s| s.clone())
    }

    /// A copy of every current target's health (retired addresses left out).
    pub fn snapshot(&self) -> Vec<TargetHealth> {
        self.inner.read().map(|g| g.iter().filter(|h| !h.retired).cloned().collect()).unwrap_or_default()
    }

    /// Replaces every entry: in source mode the engine's view of the targets (`up` and each
    /// pod's `zai_proxy_build_info`), read afresh each point interval.
    pub(crate) fn replace(&self, targets: Vec<TargetHealth>) {
        if let Ok(mut all) = self.inner.write() {
            *all = targets;
        }
    }

    /// Durations of every scrape, in seconds.
    pub(crate) fn durations(&self) -> &AtomicHistogram {
        &self.durations
    }

    /// Adds a discovered target and returns its index, reusing the slot of a retired address,
    /// so the board never holds more entries than addresses were live at once.
    pub(crate) fn add(&self, target: TargetHealth) -> Option<usize> {
        let mut all = self.inner.write().ok()?;
        if let Some(idx) = all.iter().position(|h| h.retired) {
            all[idx] = target;
            return Some(idx);
        }
        all.push(target);
        Some(all.len() - 1)
    }

    /// Forgets a target whose address vanished (its history stays in the database); the slot
    /// waits for the next discovered address.
    pub(crate) fn retire(&self, idx: usize) {
        if let Ok(mut all) = self.inner.write()
            && let Some(h) = all.get_mut(idx)
        {
            *h = TargetHealth { retired: true, ..TargetHealth::new(0, String::new(), String::new()) };
        }
    }

    /// The live entry at `idx` if it still belongs to `target_id` (a cancelled scrape of a
    /// retired address must not write into the slot's next owner).
    fn entry(all: &mut [TargetHealth], idx: usize, target_id: i64) -> Option<&mut TargetHealth> {
        all.get_mut(idx).filter(|h| !h.retired && h.target_id == target_id)
    }

    /// Records a success; logs once when a target comes (back) up, and the first time it
    /// exceeds a limit. Version changes are logged with their events (at most one a minute).
    pub(crate) fn record_success(&self, idx: usize, s: Success) {
        self.durations.observe(s.duration_ms / 1000.0);
        let Ok(mut all) = self.inner.write() else { return };
        let Some(h) = Self::entry(&mut all, idx, s.target_id) else { return };
        h.scrapes_ok += 1;
        if s.dropped > 0 && h.series_dropped == 0 {
            tracing::warn!(target_url = %h.url, dropped = s.dropped, "Target exports more series than kept; the rest are dropped.");
        }
        h.series_dropped += s.dropped as u64;
        if s.cut > 0 && h.labels_cut == 0 {
            tracing::warn!(target_url = %h.url, cut = s.cut, "Target exports label values longer than 128 bytes; they are cut.");
        }
        h.labels_cut += s.cut as u64;
        if !h.up {
            tracing::info!(target_url = %h.url, variant = %s.variant, "Target is up.");
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
    /// `kind` is one of a few fixed failure kinds (`timeout`, `connect`, ...), a metrics label.
    pub(crate) fn record_failure(
        &self,
        (idx, target_id): (usize, i64),
        at_ms: i64,
        duration_ms: f64,
        kind: &'static str,
        error: String,
    ) {
        self.durations.observe(duration_ms / 1000.0);
        let Ok(mut all) = self.inner.write() else { return };
        let Some(h) = Self::entry(&mut all, idx, target_id) else { return };
        *h.scrape_failures.entry(kind).or_default() += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_episode_keeps_its_start_and_counts_its_failures_until_it_recovers() {
        let board = HealthBoard::default();
        assert_eq!(board.storage(), None);
        board.storage_failed(1_000, "The disk is full.".into(), 1, Some(500));
        board.storage_holding(3);
        board.storage_failed(2_000, "The disk reported an I/O error.".into(), 4, Some(500));
        let f = board.storage().unwrap();
        assert_eq!((f.since_ms, f.failed_commits, f.batches_held), (1_000, 2, 4));
        assert_eq!(f.last_error, "The disk reported an I/O error.");
        board.storage_recovered();
        board.storage_holding(9);
        assert_eq!(board.storage(), None, "holding outside an episode is no failure");
        board.storage_failed(5_000, "The disk is full.".into(), 1, Some(4_000));
        assert_eq!(board.storage().map(|f| (f.since_ms, f.failed_commits)), Some((5_000, 1)), "a new episode");
    }
}
