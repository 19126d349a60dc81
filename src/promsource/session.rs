//! The engine queries of one request, and what every request shares (README, "Source mode").
//!
//! A page or an API call in source mode runs 15 to 32 PromQL queries. They used to go out all
//! at once, each allowed 64 MiB of answer: one unauthenticated GET reached 2.5 GB of memory. A
//! [`Session`] is one request's queries (a page, an API call, a live tick, an alert
//! evaluation): at most [`PER_REQUEST`] at the engine at a time, and
//! [`MAX_REQUEST_BYTES`](super::client::MAX_REQUEST_BYTES) of answers in all. Each query also
//! takes one of the [`OVERALL`] slots every session shares, so any number of requests together
//! never have more queries than that at the engine.
//!
//! Answers are cached by query text and times until the next tick (one point interval), so the
//! same chart asked by many viewers, or refreshed, costs the engine one query; the cache is
//! small and bounded, and forgets everything when the tick changes.
//!
//! Every answer passes the variant gate before anyone reads it: a series whose `variant` label
//! is not a valid variant name (`[a-z0-9_.-]{1,64}`, as configured names) is left out, and so are
//! those of variants beyond the first [`MAX_VARIANTS`] by name; both are counted
//! (`zai_dash_engine_series_dropped_total`). Variant names reach CSV exports, Slack messages,
//! pages and self-metrics, and the engine's labels are whatever the proxies exported.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::client::{Client, EngineError, MAX_REQUEST_BYTES, Series, seconds};
use crate::telemetry::LogThrottle;
use crate::variant::is_valid_variant;

/// Queries of one request at the engine at a time.
pub(crate) const PER_REQUEST: usize = 4;
/// Queries of all requests together at the engine at a time.
pub(crate) const OVERALL: usize = 16;
/// Most variants an answer may name; series of further variants (by name) are left out.
pub(crate) const MAX_VARIANTS: usize = 64;
/// Longest window sent to the engine: the longest `range` SQLite mode answers.
pub(crate) const MAX_WINDOW_MS: i64 = 400 * 86_400_000;
/// Most steps of one range query (Prometheus refuses more than 11,000 itself).
pub(crate) const MAX_STEPS: i64 = 11_000;
/// Answers the cache holds at most, and their bytes as read.
const CACHE_ANSWERS: usize = 256;
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// An answer: shared, since the cache may hand it to several requests.
pub(crate) type Answer = Arc<Vec<Series>>;

/// Series left out of the engine's answers, by why (self-metrics).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// The `variant` label is not a valid variant name.
    pub invalid_variant: AtomicU64,
    /// The variant is beyond the first [`MAX_VARIANTS`] of its answer.
    pub too_many_variants: AtomicU64,
}

/// What every session of one source shares: the overall query slots, the answer cache, the
/// counters.
#[derive(Debug)]
pub(crate) struct Shared {
    overall: Semaphore,
    cache: Mutex<AnswerCache>,
    pub(super) stats: Arc<EngineStats>,
    invalid_logged: LogThrottle,
    excess_logged: LogThrottle,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            overall: Semaphore::new(OVERALL),
            cache: Mutex::default(),
            stats: Arc::default(),
            invalid_logged: LogThrottle::new(),
            excess_logged: LogThrottle::new(),
        }
    }
}

/// Answers of the current tick, by query.
#[derive(Debug, Default)]
struct AnswerCache {
    tick: i64,
    answers: HashMap<String, Answer>,
    bytes: usize,
}

impl AnswerCache {
    /// The answer to `key` in `tick`; a newer tick empties the cache first.
    fn get(&mut self, tick: i64, key: &str) -> Option<Answer> {
        self.roll(tick);
        (tick == self.tick).then(|| self.answers.get(key).cloned()).flatten()
    }

    /// Keeps an answer of `tick` that took `bytes`, while the cache has room.
    fn put(&mut self, tick: i64, key: String, answer: Answer, bytes: usize) {
        self.roll(tick);
        let room = self.answers.len() < CACHE_ANSWERS && self.bytes + bytes <= CACHE_BYTES;
        if tick == self.tick && room {
            self.bytes += bytes;
            self.answers.insert(key, answer);
        }
    }

    fn roll(&mut self, tick: i64) {
        if tick > self.tick {
            *self = Self { tick, ..Self::default() };
        }
    }
}

/// The queries of one request.
#[derive(Debug)]
pub(crate) struct Session<'a> {
    client: &'a Client,
    shared: &'a Shared,
    /// The point interval it runs in (answers of the same tick are reused).
    tick: i64,
    slots: Semaphore,
    /// Answer bytes this request may still read.
    budget: AtomicUsize,
}

impl<'a> Session<'a> {
    /// A request's session in `tick` (the current point interval's number), sharing `shared`
    /// with every other session of the source.
    pub(crate) fn new(client: &'a Client, shared: &'a Shared, tick: i64) -> Self {
        let (slots, budget) = (Semaphore::new(PER_REQUEST), AtomicUsize::new(MAX_REQUEST_BYTES));
        Self { client, shared, tick, slots, budget }
    }

    /// An instant query at `at_ms`.
    pub(crate) async fn instant(&self, expr: &str, at_ms: i64) -> Result<Answer, EngineError> {
        self.query("/api/v1/query", &[("query", expr), ("time", &seconds(at_ms))]).await
    }

    /// A range query evaluated at `start_ms`, `start_ms + step_ms`, ... up to `end_ms`, with
    /// at most [`MAX_STEPS`] steps.
    pub(crate) async fn range(
        &self,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Answer, EngineError> {
        let steps = (end_ms.saturating_sub(start_ms) / step_ms.max(1)).saturating_add(1);
        if step_ms <= 0 || steps > MAX_STEPS {
            return Err(self.client.bounds(format!("more than {MAX_STEPS} steps in one query ({steps})")));
        }
        let params =
            [("query", expr), ("start", &seconds(start_ms)), ("end", &seconds(end_ms)), ("step", &seconds(step_ms))];
        self.query("/api/v1/query_range", &params).await
    }

    /// Refuses a window longer than [`MAX_WINDOW_MS`] before any query is sent.
    pub(crate) fn check_window(&self, window_ms: i64) -> Result<(), EngineError> {
        if window_ms > MAX_WINDOW_MS {
            let asked = humantime::format_duration(std::time::Duration::from_millis(window_ms.unsigned_abs()));
            return Err(self.client.bounds(format!("a window longer than 400d ({asked})")));
        }
        Ok(())
    }

    /// One query: from the cache, or at the engine within this request's and the overall slots.
    async fn query(&self, path: &str, params: &[(&str, &str)]) -> Result<Answer, EngineError> {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let key = format!("{path}?{body}");
        let shared = self.shared;
        if let Some(hit) = shared.cache.lock().ok().and_then(|mut c| c.get(self.tick, &key)) {
            return Ok(hit);
        }
        let busy = || EngineError::Busy { engine: self.client.engine().to_owned() };
        let _mine = self.slots.acquire().await.map_err(|_| busy())?;
        let _overall = tokio::time::timeout(self.client.timeout(), shared.overall.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let (series, bytes) = self.client.post(path, body, &self.budget).await?;
        let answer: Answer = Arc::new(gate(series, shared));
        if let Ok(mut cache) = shared.cache.lock() {
            cache.put(self.tick, key, answer.clone(), bytes);
        }
        Ok(answer)
    }
}

/// The variant gate: leaves out series whose `variant` label is not a valid variant name, and
/// those of variants beyond the first [`MAX_VARIANTS`] by name; counts both. Series without
/// the label (`up`, `scrape_duration_seconds`) pass.
fn gate(series: Vec<Series>, shared: &Shared) -> Vec<Series> {
    let allowed: BTreeSet<String> = series
        .iter()
        .filter_map(|s| s.labels.get("variant"))
        .filter(|v| is_valid_variant(v))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(MAX_VARIANTS)
        .collect();
    let (mut invalid, mut excess) = (0u64, 0u64);
    let kept: Vec<Series> = series
        .into_iter()
        .filter(|s| match s.labels.get("variant") {
            None => true,
            Some(v) if !is_valid_variant(v) => {
                invalid += 1;
                false
            }
            Some(v) => {
                let ok = allowed.contains(v);
                excess += u64::from(!ok);
                ok
            }
        })
        .collect();
    count_left_out(shared, invalid, excess);
    kept
}

fn count_left_out(shared: &Shared, invalid: u64, excess: u64) {
    if invalid > 0 {
        shared.stats.invalid_variant.fetch_add(invalid, Ordering::Relaxed);
        if let Some(suppressed) = shared.invalid_logged.admit() {
            tracing::warn!(
                series = invalid,
                suppressed,
                "The engine's answer names variants that are not valid names (a-z 0-9 _ . -, at most 64); their series are left out."
            );
        }
    }
    if excess > 0 {
        shared.stats.too_many_variants.fetch_add(excess, Ordering::Relaxed);
        if let Some(suppressed) = shared.excess_logged.admit() {
            tracing::warn!(
                series = excess,
                suppressed,
                max = MAX_VARIANTS,
                "The engine's answer names more variants than are shown; the series of the rest (by name) are left out."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(variant: Option<&str>) -> Series {
        Series {
            labels: variant.map(|v| ("variant".to_owned(), v.to_owned())).into_iter().collect(),
            samples: vec![(0, 1.0)],
        }
    }

    #[test]
    fn the_gate_keeps_valid_names_up_to_the_limit_and_counts_the_rest() {
        let shared = Shared::default();
        let mut answer = vec![
            s(None),
            s(Some("=HYPERLINK(\"http://evil\",\"x\")")),
            s(Some("<!channel>")),
            s(Some("Canary")),
            s(Some("")),
        ];
        answer.extend((0..100).rev().map(|i| s(Some(&format!("v{i:03}")))));
        answer.push(s(Some("v000")));
        let kept = gate(answer, &shared);
        let names: BTreeSet<&str> = kept.iter().filter_map(|s| s.labels.get("variant").map(String::as_str)).collect();
        assert_eq!(names.len(), MAX_VARIANTS);
        assert_eq!((names.first(), names.last()), (Some(&"v000"), Some(&"v063")), "the first 64 by name");
        assert_eq!(kept.len(), MAX_VARIANTS + 2, "v000's two series and the one without a variant");
        assert_eq!(shared.stats.invalid_variant.load(Ordering::Relaxed), 4);
        assert_eq!(shared.stats.too_many_variants.load(Ordering::Relaxed), 36);
    }

    #[test]
    fn the_cache_answers_within_a_tick_and_forgets_at_the_next() {
        let mut c = AnswerCache::default();
        let a: Answer = Arc::new(vec![s(Some("canary"))]);
        c.put(7, "q".into(), a.clone(), 100);
        assert!(c.get(7, "q").is_some());
        assert!(c.get(7, "other").is_none());
        c.put(6, "late".into(), a.clone(), 100);
        assert!(c.get(7, "late").is_none(), "an answer of an older tick is not kept");
        assert!(c.get(8, "q").is_none(), "the next tick starts empty");
        c.put(8, "big".into(), a.clone(), CACHE_BYTES + 1);
        assert!(c.get(8, "big").is_none(), "an answer beyond the byte bound is not kept");
        for i in 0..CACHE_ANSWERS + 10 {
            c.put(8, format!("q{i}"), a.clone(), 1);
        }
        assert_eq!(c.answers.len(), CACHE_ANSWERS);
    }
}
