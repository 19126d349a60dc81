//! An hour of simulated history, written before the live loop starts, so the demo's first view
//! shows full charts instead of one minute pressed against the right edge.
//!
//! The rows come from the same model as the live traffic (the upstream profiles, the traffic
//! mix, the proxy's bucket bounds and prices), bucket by bucket, with a slow swell in the
//! request rate so the charts have a shape. They are written as each target's 5 s rows, and
//! each target's state carries the history's running totals, so the live points continue the
//! cumulative fields where the history ends. The web layer states that the hour is simulated
//! (`Settings::notice`). Nothing is written when the database already holds the last hour
//! (a demo restarted within the hour keeps what it has).

use std::f64::consts::PI;

use super::Rng;
use super::upstream::Profile;
use crate::point::{Counts, GaugeStat, Gauges, Histogram, TargetRow, Totals};
use crate::ports::ingest::{StateUpdate, StateWrite, WriteBatch};
use crate::proxy::metrics::{DURATION_BUCKETS, TTFT_BUCKETS};
use crate::proxy::pricing::{Pricing, tier};
use crate::scrape::increase::TargetState;
use crate::store::query::StoredTarget;
use crate::store::{Store, StoreError};

/// How much history is simulated.
pub(crate) const HISTORY_MS: i64 = 3_600_000;
/// Width of a simulated row: the production point width.
const ROW_MS: i64 = 5_000;
/// Period of the swell in the request rate.
const SWELL_MS: f64 = 1_200_000.0;

/// One demo target whose history is simulated.
#[derive(Debug, Clone)]
pub(crate) struct SimulatedTarget {
    /// The scrape URL, as the dashboard registers it.
    pub url: String,
    /// Its variant.
    pub variant: String,
    /// The upstream behind its proxy.
    pub profile: Profile,
    /// Requests per second it receives on average.
    pub rate: f64,
    /// Its proxy's `MAX_WORKERS`.
    pub max_workers: f64,
}

/// Writes an hour of history ending at `now_ms` for `targets`, unless the database already has
/// rows in that hour. Returns the end of the simulated hour when it wrote one.
pub(crate) fn backfill(
    store: &Store,
    targets: &[SimulatedTarget],
    now_ms: i64,
    seed: u64,
) -> Result<Option<i64>, StoreError> {
    let end = now_ms - now_ms.rem_euclid(ROW_MS);
    let pairs: Vec<(String, String)> = targets.iter().map(|t| (t.url.clone(), t.variant.clone())).collect();
    let build = |stored: &[StoredTarget]| history(targets, stored, end, seed);
    let wrote = store.write_history(&pairs, (now_ms, now_ms - HISTORY_MS), 60_000, build)?;
    Ok(wrote.then_some(end))
}

/// The hour ending at `end` of every target (registered as `stored`), as one batch.
fn history(targets: &[SimulatedTarget], stored: &[StoredTarget], end: i64, seed: u64) -> WriteBatch {
    let mut rng = Rng::new(seed ^ 0x2545_f491);
    let mut rows = Vec::new();
    let mut states = Vec::new();
    for (t, s) in targets.iter().zip(stored) {
        let mut totals = Totals::default();
        for ts in (end - HISTORY_MS + ROW_MS..=end).step_by(ROW_MS as usize) {
            let row = simulated_row(t, s.id, ts, &mut rng);
            totals.accumulate(&row.counts);
            rows.push(TargetRow { totals, ..row });
        }
        states.push(StateUpdate {
            target_id: s.id,
            scraped_ms: end,
            write: StateWrite::Checkpoint(state_json(totals).into()),
            totals,
            variant: t.variant.clone(),
        });
    }
    rows.sort_by_key(|r| (r.ts_ms, r.target_id));
    WriteBatch { bucket_end_ms: end, rows, states, points: Vec::new(), events: Vec::new(), late: false }
}

/// A state whose next scrape is a baseline (the live proxies start from zero) and whose running
/// totals continue from the history's.
fn state_json(totals: Totals) -> String {
    let state = TargetState { totals: totals.into(), ..TargetState::default() };
    serde_json::to_string(&state).unwrap_or_default()
}

/// The rate at `ts`: the target's average with a slow swell of +-30 %.
fn rate_at(t: &SimulatedTarget, ts: i64) -> f64 {
    t.rate * (1.0 + 0.3 * (2.0 * PI * ts as f64 / SWELL_MS).sin())
}

/// One 5 s row of simulated requests.
fn simulated_row(t: &SimulatedTarget, target_id: i64, ts: i64, rng: &mut Rng) -> TargetRow {
    let mut counts = Counts::default();
    let mut busy_ms = 0.0;
    for _ in 0..poisson(rate_at(t, ts) * ROW_MS as f64 / 1000.0, rng) {
        busy_ms += simulate_request(t, ts, rng, &mut counts);
    }
    finish_histograms(&mut counts);
    // Little's law: requests in flight = arrival rate x time in the system.
    let concurrent = (busy_ms / ROW_MS as f64).round().min(t.max_workers);
    TargetRow {
        target_id,
        variant: t.variant.clone(),
        ts_ms: ts,
        elapsed_ms: ROW_MS,
        present_ms: ROW_MS,
        counts,
        totals: Totals::default(),
        gauges: Gauges {
            concurrent: Some(GaugeStat::single(concurrent)),
            max_workers: Some(GaugeStat::single(t.max_workers)),
            rate_limit_rps: Some(GaugeStat::single(20.0)),
            quota: None,
        },
    }
}

/// Records one request in `counts` as the proxy would; returns its duration in ms.
fn simulate_request(t: &SimulatedTarget, ts: i64, rng: &mut Rng, counts: &mut Counts) -> f64 {
    let p = t.profile;
    let fate = rng.unit();
    let ttft_ms = rng.range(p.ttft_ms.0, p.ttft_ms.1) as f64;
    if fate < p.p_throttle {
        // The proxy retries a 429 after the upstream's Retry-After; the retry succeeds.
        *counts.retries.entry("429".into()).or_default() += 1.0;
        *counts.retries.entry("retry".into()).or_default() += 1.0;
        *counts.upstream_errors.entry("429".into()).or_default() += 1.0;
    } else if fate < p.p_throttle + p.p_error {
        *counts.requests.entry("500".into()).or_default() += 1.0;
        observe(&mut counts.duration, DURATION_BUCKETS, ttft_ms / 2000.0);
        return ttft_ms / 2.0;
    }
    let model = if rng.chance(0.7) { "glm-4.7" } else { "glm-4.5-air" };
    let stream = rng.chance(0.6);
    let output = rng.range(20, 220);
    let tokens = [
        rng.range(70, 1500),
        output,
        if rng.chance(0.6) { rng.range(500, 6000) } else { 0 },
        if rng.chance(0.2) { rng.range(100, 1500) } else { 0 },
    ];
    let duration_ms = ttft_ms + output as f64 * 1000.0 / p.tokens_per_s;
    *counts.requests.entry("200".into()).or_default() += 1.0;
    observe(&mut counts.duration, DURATION_BUCKETS, duration_ms / 1000.0);
    if stream {
        observe(&mut counts.ttft, TTFT_BUCKETS, ttft_ms / 1000.0);
    }
    add_tokens(counts, model, tokens, tier(ts));
    counts.request_size.sum += (tokens[0] * 4 + 200) as f64;
    counts.request_size.count += 1.0;
    counts.response_size.sum += (output * 5 + 300) as f64;
    counts.response_size.count += 1.0;
    duration_ms
}

fn add_tokens(counts: &mut Counts, model: &str, tokens: [u64; 4], tier: &str) {
    let pricing = Pricing::default();
    let t = counts.tokens.entry(model.into()).or_default();
    for (sum, n) in t.iter_mut().zip(tokens) {
        *sum += n as f64;
    }
    let c = counts.cost.entry(model.into()).or_default();
    for ((sum, n), direction) in c.iter_mut().zip(tokens).zip(crate::point::DIRECTIONS) {
        *sum += pricing.cost(direction, n, tier);
    }
}

/// Adds one observation to a histogram kept as per-bucket counts until [`finish_histograms`].
fn observe(h: &mut Histogram, bounds: &[f64], seconds: f64) {
    if h.buckets.is_empty() {
        h.buckets = bounds.iter().copied().chain([f64::INFINITY]).map(|le| (le, 0.0)).collect();
    }
    let i = h.buckets.iter().position(|(le, _)| seconds <= *le).unwrap_or(h.buckets.len() - 1);
    h.buckets[i].1 += 1.0;
    h.sum += seconds;
    h.count += 1.0;
}

/// Per-bucket counts to Prometheus' cumulative form.
fn finish_histograms(c: &mut Counts) {
    for h in [&mut c.duration, &mut c.ttft] {
        let mut below = 0.0;
        for b in &mut h.buckets {
            below += b.1;
            b.1 = below;
        }
    }
}

/// A Poisson draw: Knuth's method for small means, a rounded normal for large ones.
fn poisson(mean: f64, rng: &mut Rng) -> u64 {
    if mean > 30.0 {
        let normal = (-2.0 * rng.unit().max(1e-12).ln()).sqrt() * (2.0 * PI * rng.unit()).cos();
        return (mean + mean.sqrt() * normal).round().max(0.0) as u64;
    }
    let limit = (-mean).exp();
    let mut product = rng.unit();
    let mut n = 0;
    while product > limit {
        product *= rng.unit();
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query;

    fn target() -> SimulatedTarget {
        SimulatedTarget {
            url: "http://127.0.0.1:1/metrics".into(),
            variant: "production".into(),
            profile: Profile::production(),
            rate: 4.5,
            max_workers: 16.0,
        }
    }

    #[test]
    fn an_hour_of_rows_with_traffic_tokens_and_latency_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db")).unwrap();
        let now = 1_800_000_003_000;
        let end = backfill(&store, &[target()], now, 7).unwrap().expect("an empty database gets history");
        assert_eq!(end, 1_800_000_000_000);
        let conn = store.conn().unwrap();
        let names = query::variant_names(&conn).unwrap();
        let rows = query::target_rows(&conn, query::Table::Raw, 1, i64::MIN, i64::MAX, &names).unwrap();
        assert_eq!(rows.len(), 720, "one row per 5 s");
        let requests: f64 = rows.iter().map(|r| r.counts.total_requests()).sum();
        assert!((requests / 3600.0 - 4.5).abs() < 0.5, "about the configured rate: {}", requests / 3600.0);
        assert!(rows.iter().any(|r| r.counts.duration.quantile(0.95).is_some()));
        assert!(rows.iter().any(|r| !r.counts.tokens.is_empty()));
        let last = rows.last().unwrap();
        assert_eq!(last.totals.requests_2xx + last.totals.requests_5xx, requests);
        let state: TargetState =
            serde_json::from_str(&query::targets(&conn).unwrap()[0].state.as_ref().unwrap().decode().unwrap()).unwrap();
        assert_eq!(state.last_scrape_ms, None, "the live proxy's first scrape is a baseline");
        assert_eq!(Totals::from(state.totals), last.totals, "live totals continue the history's");
        drop(conn);
        assert_eq!(backfill(&store, &[target()], now + 60_000, 7).unwrap(), None, "a recent history is kept");
    }

    #[test]
    fn poisson_draws_have_the_right_mean() {
        let mut rng = Rng::new(3);
        for mean in [0.5, 4.0, 200.0] {
            let n = 4000;
            let total: u64 = (0..n).map(|_| poisson(mean, &mut rng)).sum();
            let got = total as f64 / n as f64;
            assert!((got - mean).abs() < mean.sqrt() * 0.1 + 0.05, "mean {mean}: {got}");
        }
    }
}
