//! Accuracy suite: zai-dash's numbers against a real Prometheus scraping the same targets.
//!
//! # What runs
//!
//! - **Targets**: five fake zai-proxy pods on loopback (`accuracy/fake.rs`, specs in
//!   `accuracy/pods.rs`), client_golang-style expositions whose counters are exact linear
//!   functions of wall time: requests by status (200, 422, 429, 500, 502, 503), request
//!   duration histograms with a different latency mix per pod (so that summing buckets before
//!   the quantile matters), two models with tokens and cost in four directions and two pricing
//!   tiers, TTFT and TPOT histograms, size histograms, rejections, retries (with the generic
//!   `reason="retry"` series), upstream errors, rate limit adjustments, and gauges (in-flight
//!   requests changing every raw bucket, max workers, rate limit, quota). `production` = prod-a +
//!   prod-b, with prod-b **replaced** by prod-c at R0+27 s (prod-c is configured from the start
//!   and answers 503 until then; prod-b's listener closes at that moment); `canary` = canary-a +
//!   canary-b, canary-b **dies** at R0+33 s, canary-a's counters **reset** to 0 at R0+47 s on the
//!   same URL. Churn and death fall in the middle of a raw bucket and a third of the way into a
//!   20 s rollup bucket ("a pod present for 20 s of a 60 s bucket"). Each pod answers each
//!   scraper only on a path of its own, random per run (`/metrics/<run id>/zai-dash`,
//!   `/metrics/<run id>/prometheus`, with that scraper's `User-Agent`); any other request (a
//!   scraper left over from an earlier run on a reused port, another path, another client) gets
//!   404 and fails the run as `harness: fake targets`, naming what came in.
//! - **Prometheus** 2.42 (Debian's package), started with a generated config and a temporary
//!   TSDB, scraping the five pods every 500 ms (timeout 400 ms). The test fails, naming
//!   scripts/test, when the binary is missing. It runs under `common::process`'s guard: killed
//!   with the test, also when the test panics.
//! - **zai-dash** in-process (`TestApp`, `app::run_with_resolver`) with a temporary SQLite file,
//!   scraping the same pods every 500 ms, started once Prometheus scrapes (Prometheus applies
//!   its targets up to 5 s after it is ready), so both see each pod first within an interval.
//!   Everything zai-dash answers is read **only over HTTP** through its base URL (`Dash`), so
//!   the same checks can run against another deployment of the API (a later issue points them
//!   at the PromQL source mode). The harness alone restarts it once, on the same database.
//!
//! # Scaled time (every width is a `Settings` field)
//!
//! | production | here | why |
//! |---|---|---|
//! | scrape 5 s, timeout 3 s | 500 ms, 400 ms (both scrapers) | many scrapes per bucket within the 4 minute budget |
//! | 5 s points | 2 s points | 4 scrapes per point, so Prometheus' `increase[2s]` always has samples |
//! | 1 min rollups | 20 s rollups (`rollup_width`) | 40 scrapes per rollup: one scrape is 2.5 % of a bucket |
//! | `step` | `step=10s` on the 5 s table, `step=40s` on the 1 min table | re-bucketed points |
//! | RETENTION_5S 24 h | 64 s | the vanished pods' raw rows age out during the run, while 60 s `/api/compare` windows still read complete raw rows |
//! | DOWNSAMPLE_INTERVAL 1 min | 2 s | rollups and retention happen within seconds |
//!
//! The run lasts about two minutes after a warm-up that ends at R0, a multiple of 20 s (about
//! 2.5 minutes of wall time in all). The 5 s-table answers are read every 3 s while they exist;
//! rollups, explicit old windows and `/api/models` at the end; Prometheus is queried last, at
//! the very bucket ends zai-dash answered (`query_range` with the bucket width as step, on the
//! same epoch-aligned grid; buckets are `(end - width, end]`).
//!
//! # What is compared (the PromQL of each field is in `accuracy/fields.rs`)
//!
//! - **Which buckets each answer holds** (`accuracy/buckets.rs`), before any number: every
//!   5 s-table and `step=10s` read, the three 1 min-table answers, the explicit old window and
//!   both live streams hold a point of each variant for every bucket in which zai-dash scraped
//!   one of its pods (the fakes log every scrape), none for a bucket without scrapes, none off
//!   the grid, outside the window or in the future, none twice; and the reads together saw every
//!   settled bucket since the warm-up. A bucket dropped across the replacement, the death or
//!   the reset, or moved by a step, fails here even when the points around it are right.
//! - Every field of a point at 2 s (the 5 s table), at `step=10s`, at 20 s (the 1 min table)
//!   and at `step=40s` on it, for both variants, through steady state, churn, death and reset.
//!   A field the model says has no value (a status code no pod of the variant exports; the
//!   latency of an empty bucket) must be absent on both sides; PromQL's NaN counts as absent
//!   only there. Every other comparison needs a finite value on both sides.
//! - The quota block of every point at every width (and of the live points and the old window)
//!   against what every pod exports (the quota is account-wide: never a sum over pods), and at
//!   2 s against Prometheus' reading of the same gauges.
//! - `/api/compare` windows (1 min) at the start (the data covers ~25 s of the window), across
//!   the churn, death and reset, and in steady state, read right after a bucket was stored so
//!   the window's data ends on a known bucket; `/api/models` over a recent explicit window and
//!   over one older than RETENTION_5S; `/api/metrics` over an explicit window older than
//!   RETENTION_5S.
//! - Cumulative fields against `sum(increase(x[10m]))` (the whole run) in every answer: every
//!   5 s-table and step read, the live stream, rollups, re-bucketed points, the explicit window,
//!   the live stream after a zai-dash restart; never stepping down; the same at a rollup bucket
//!   end whichever answer gives them; a bucket read again gives the same point.
//! - The live stream equals the stored points field for field (to the bit; docs/decisions.md,
//!   Point semantics), and every live point inside the span the reads covered was stored; `/api/status`
//!   equals the latest live point; `/api/models` holds one row per variant and model served,
//!   and no other.
//! - **How many checks ran.** Each kind of check (each area of the summary) must run at least
//!   as often as the run's length says: its buckets (from the warm-up to the last settled read)
//!   times the variants times the checks per bucket. The counts and minimums are printed; a
//!   kind with fewer checks fails as `harness: checks per kind`.
//! - **The readers.** The point collector and both live-stream readers end the test with an
//!   error (`harness: readers`) on a failed request, an answer that is not JSON of the expected
//!   shape, an unknown event, a skipped event id or a stream that ends before it is stopped,
//!   instead of stopping quietly with fewer points to check.
//!
//! # Tolerances, and where zai-dash and Prometheus legitimately differ
//!
//! - **1 %** of the PromQL value for every rate, count, quantile, average and gauge; **0.3
//!   points** for an error share.
//! - **Plus the difference the two scrapers' sample times explain, computed per bucket and zero
//!   in steady state** (`accuracy/model.rs`). Counters are linear in time and carry explicit
//!   timestamps for Prometheus, so each scraper's view of a window reduces to one coverage per
//!   pod: Prometheus' `increase()` is replayed on the sample times stored in its TSDB
//!   (extrapolation rules included; the replay must match Prometheus to 0.2 %, else the harness
//!   reports itself broken), zai-dash's from the render times of its own scrapes. They differ
//!   only at series edges: zai-dash's first scrape of a pod is a baseline (no increase), while
//!   Prometheus extrapolates up to half an interval before a series' first and after its last
//!   sample (to the counter's zero point for a new pod); both lose the requests between the
//!   last scrape and a counter reset, at different phases; and a scrape rendered less than
//!   30 ms before a bucket edge may complete, and count, after it. The allowance is the field's
//!   spread between those coverages: about two scrape intervals of the pod's traffic per edge
//!   (at most 5 % of one pod at a 20 s rollup, 10 % at `step=10s`). A pod counted at its full
//!   rate for a bucket it was present in for a third of (finding 1) is 60 % off and fails.
//!   The explained spread must be finite and at most half of the reference value: a model that
//!   cannot bound a difference fails the check instead of allowing anything. The summary
//!   prints the widest spread each area allowed.
//! - **5 s points divide each pod's increases by its own elapsed time** by design (docs/decisions.md,
//!   Point semantics), Prometheus by the bucket: where a pod enters, leaves or resets, the two
//!   definitions differ on purpose, and the point is held to its own definition replayed from
//!   zai-dash's scrape times instead (`... per-pod elapsed` in the summary). zai-dash measures
//!   that elapsed time with its own clock after parsing, so 10 ms of timing jitter per bucket
//!   edge is allowed on these rates (1 % at the scaled 2 s points, 0.4 % at real 5 s points).
//!   The sample size (`requests`) of a 5 s point is compared with Prometheus, except where a
//!   counter reset makes the explained spread exceed its bound (each scraper loses the traffic
//!   between its own last scrape and the reset, and zai-dash's scrapes just before both edges may
//!   complete on either side): there it is held to zai-dash's increases replayed from its scrape
//!   times (`... own increases`), a tighter check than the unbounded comparison.
//! - **Gauges** over a bucket are the time-weighted sum over pods (docs/decisions.md, Point semantics), in
//!   PromQL the average over the bucket's raw instants of `sum(last_over_time(g[2s]))`, absent
//!   pods counting 0. Presence differences between the scrapers come from their sample times;
//!   a pod entering or leaving a wide bucket may be weighted by share of points or share of
//!   elapsed time (both readings of "the share of the bucket it was present in"), so one raw
//!   bucket of its value is allowed per edge (10 % of one pod at a rollup; the doubling of
//!   finding 1 is 50 % of the variant).
//! - **`/api/compare` rates** are the window's increase over `covered_seconds`, whose expected
//!   span runs from the variant's first bucket with data (its start or end) or the window start,
//!   to the data end or the request time: the band of those readings is allowed.
//! - Cumulative fields and points read twice are compared exactly (relative 1e-9), and the live
//!   stream with the stored points to the bit.
//!
//! # Reading the output
//!
//! The test prints one line per pod (scrapes by each scraper, first and last, coverage of the
//! totals), then a summary per area and scenario with each field group's passed and failed
//! checks, then failures tagged with the finding they map to: `[finding 1]`...`[finding 5]`,
//! `[point semantics: REST = live to the bit]`, or `[steady-state accuracy]` for a failure no
//! finding explains, then the checks per kind against their minimums. A `harness:` area
//! failing means the suite itself (or the machine: a leftover process) is wrong.
//!
//! # Findings the suite must catch
//!
//! 1. Churn doubling rates and gauges in wide buckets (step, 1 min table).
//! 2. Cumulative fields differing between tables, ranges, reads, the live stream and a restart;
//!    dropping a vanished pod once its raw rows age out; stepping down.
//! 3. Window rates over the covered span (`covered_seconds`).
//! 4. Explicit windows older than RETENTION_5S answered from 1 min rows (`/api/metrics`,
//!    `/api/models`).
//! 5. A URL-rule guess (`canary` in the URL) left as a phantom variant once the target's label
//!    named it: `url_rule_guess_leaves_no_phantom_variant` below.

mod common;
#[path = "accuracy/mod.rs"]
mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TestApp, targets, wait_for};
use harness::buckets::{self, Expect};
use harness::dash::{Dash, Read, connected_variants, spawn_collector, spawn_sse};
use harness::fake::{Life, Paths, Pod};
use harness::ledger::Ledger;
use harness::model::PodRun;
use harness::prom::Prometheus;
use harness::verify::{self, CompareObs, Key, Run, ctx};
use harness::{fields, pods};
use serde_json::Value;
use zai_dash::clock::{Clock, SystemClock};
use zai_dash::config::Settings;

const SCRAPE_MS: i64 = 500;
const SCRAPE_TIMEOUT_MS: i64 = 400;
const RAW_MS: i64 = 2_000;
const STEP_MS: i64 = 10_000;
const ROLLUP_MS: i64 = 20_000;
const ROLLUP_STEP_MS: i64 = 40_000;
const RETENTION_5S_MS: i64 = 64_000;
const DOWNSAMPLE_MS: i64 = 2_000;
/// Moments after R0.
const CHURN_AT: i64 = 27_000;
const DEATH_AT: i64 = 33_000;
const RESET_AT: i64 = 47_000;
/// A raw bucket is final once zai-dash sealed it (two points and a second after it closed).
const SETTLED_MS: i64 = 2 * RAW_MS + 2_000;
/// The collector's queries: raw points, and the 5 s table at `step=10s`.
const RAW_RANGE_MS: i64 = 30_000;
const STEP_RANGE_MS: i64 = 40_000;

fn now() -> i64 {
    SystemClock.now_ms()
}

async fn sleep_until(t: i64) {
    let d = t - now();
    if d > 0 {
        tokio::time::sleep(Duration::from_millis(d as u64)).await;
    }
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(v as u64)
}

fn settings(dir: &tempfile::TempDir, urls: &[String]) -> Settings {
    let mut s = Settings::for_tests(targets(urls), dir.path().join("zai-dash.db"));
    s.scrape_interval = ms(SCRAPE_MS);
    s.scrape_timeout = ms(SCRAPE_TIMEOUT_MS);
    s.point_width = ms(RAW_MS);
    s.rollup_width = ms(ROLLUP_MS);
    s.retention_5s = ms(RETENTION_5S_MS);
    s.downsample_interval = ms(DOWNSAMPLE_MS);
    s
}

/// How long zai-dash takes from start to its first scrape, measured on a probe instance with a
/// throwaway database (its scrapes are then forgotten).
///
/// zai-dash starts target k's scrape task `k × interval / targets` (100 ms here) after it
/// starts, and assigns a scrape to the bucket in which it completes. A scrape rendered just
/// before a bucket edge may complete after it; the suite allows for that (see `model`), but
/// each such scrape widens the allowance of its pod. Knowing the delay, [`start_in_phase`]
/// starts the real instance so that every scrape renders a few milliseconds after a 100 ms
/// boundary, ~95 ms before the next bucket edge.
async fn start_delay(fleet: &[Pod], urls: &[String]) -> i64 {
    let probe_dir = tempfile::tempdir().unwrap();
    let t_call = now();
    let probe = TestApp::start(settings(&probe_dir, urls)).await;
    wait_for("the probe's first scrape", Duration::from_secs(10), || async { !fleet[0].dash_renders().is_empty() })
        .await;
    let delay = fleet[0].dash_renders()[0] - t_call;
    probe.stop().await;
    for pod in fleet {
        pod.forget_dash_scrapes();
    }
    delay
}

/// Starts zai-dash so that its scrapes render just after a 100 ms boundary.
async fn start_in_phase(delay: i64, urls: &[String], dir: &tempfile::TempDir) -> TestApp {
    let t = now() + 20;
    sleep_until(t - (t + delay).rem_euclid(100) + 100 + 5).await;
    TestApp::start(settings(dir, urls)).await
}

/// Reads `/api/compare` right after the raw bucket ending at `e` was stored and before the next
/// one can be, so that the window's data ends exactly at `e`.
///
/// Four buckets are tried (the "across" read must still see the churn at its window's start); a
/// failure names, for each, whether the bucket was seen stored in time and how long the
/// comparison took, so a slow machine is told from a slow store or endpoint.
async fn compare_at(dash: &Dash, mut e: i64, label: &'static str) -> CompareObs {
    let mut attempts = Vec::new();
    for _ in 0..4 {
        sleep_until(e + 250).await;
        let mut stored = None;
        while stored.is_none() && now() < e + RAW_MS - 600 {
            if dash.points("range=10s").await.iter().any(|p| p["timestamp"].as_i64() == Some(e)) {
                stored = Some(now() - e);
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let t_before = now();
        let body = dash.json("/api/compare?baseline=production&candidate=canary&window=1m").await;
        let t_after = now();
        if stored.is_some() && t_after < e + RAW_MS {
            return CompareObs { label, data_end: e, t_after, body };
        }
        attempts.push(match stored {
            Some(seen) => format!("bucket seen {seen} ms after its close, compare took {} ms", t_after - t_before),
            None => format!("bucket not seen {} ms after its close", t_before - e),
        });
        e += RAW_MS;
    }
    panic!(
        "could not read /api/compare between two bucket closes ({label}): the machine is too loaded; attempts: {}; \
         zai-dash's storage then: {}",
        attempts.join("; "),
        dash.storage_figures().await
    );
}

/// `/api/status` and the live points known when it answered.
struct StatusObs {
    at: i64,
    body: Value,
}

/// Every settled read of a bucket: key, read time, point.
type Observed = Vec<(Key, i64, Value)>;

/// First settled read of every bucket of one query shape, and every settled read.
fn settled(reads: &[Read], shape: &str) -> (BTreeMap<Key, Value>, Observed) {
    let mut first = BTreeMap::new();
    let mut all = Vec::new();
    for r in reads.iter().filter(|r| r.shape == shape) {
        for p in &r.points {
            let ts = p["timestamp"].as_i64().unwrap();
            if ts > r.at_ms - SETTLED_MS {
                continue;
            }
            let key = (p["variant"].as_str().unwrap().to_owned(), ts);
            first.entry(key.clone()).or_insert_with(|| p.clone());
            all.push((key, r.at_ms, p.clone()));
        }
    }
    (first, all)
}

fn keyed(points: &[Value], from: i64, until: i64) -> BTreeMap<Key, Value> {
    points
        .iter()
        .filter_map(|p| {
            let ts = p["timestamp"].as_i64()?;
            let v = p["variant"].as_str()?.to_owned();
            (ts > from && ts <= until).then(|| ((v, ts), p.clone()))
        })
        .collect()
}

/// Every answer whose buckets the presence model checks (`accuracy/buckets.rs`).
struct Answers<'a> {
    reads: &'a [Read],
    rollup: &'a [Value],
    rollup_step: &'a [Value],
    rollup_minute: &'a [Value],
    /// When the end-of-run reads were sent, and when the last of them was answered.
    end_read: (i64, i64),
    old_window: &'a Value,
    /// The live stream, and the live stream after the restart.
    live: [&'a [(i64, Value)]; 2],
}

/// Every answer holds every bucket in which zai-dash scraped a pod of the variant, and no
/// other bucket, and none twice.
fn presence_checks(ledger: &mut Ledger, run: &Run, a: &Answers, r0: i64) {
    for r in a.reads {
        let when = (r.sent_ms, r.at_ms);
        let settled = r.at_ms - SETTLED_MS;
        let (area, e) = match r.shape {
            "raw" => ("every 5 s-table read", Expect::range_read(RAW_MS, RAW_RANGE_MS, when, settled, false)),
            "step" => ("every step=10s read", Expect::range_read(STEP_MS, STEP_RANGE_MS, when, settled, true)),
            other => panic!("unknown read shape {other}"),
        };
        buckets::check(ledger, run, area, &r.points, e, r0);
    }
    let long_ms = 7_200_000;
    let settled = a.end_read.0 - SETTLED_MS;
    for (area, width, pts) in [
        ("1 min table range=2h", ROLLUP_MS, a.rollup),
        ("1 min table range=2h&step=40s", ROLLUP_STEP_MS, a.rollup_step),
        ("1 min table range=2h&step=60s", 60_000, a.rollup_minute),
    ] {
        buckets::check(ledger, run, area, pts, Expect::range_read(width, long_ms, a.end_read, settled, true), r0);
    }
    let old: Vec<Value> = a.old_window.as_array().cloned().unwrap_or_default();
    let window = (r0 - ROLLUP_MS, r0 + ROLLUP_MS);
    let e = Expect { width: ROLLUP_MS, may: window, must: window };
    buckets::check(ledger, run, "explicit window older than RETENTION_5S", &old, e, r0);
    for (area, live) in [("live stream", a.live[0]), ("live stream after the restart", a.live[1])] {
        let pts: Vec<Value> = live.iter().map(|(_, p)| p.clone()).collect();
        let ts: Vec<i64> = pts.iter().filter_map(|p| p["timestamp"].as_i64()).collect();
        let (first, last) = (ts.iter().min().copied().unwrap_or(0), ts.iter().max().copied().unwrap_or(0));
        // The stream starts and stops between two variants' points of a tick: the edges are free.
        let e = Expect { width: RAW_MS, may: (first - RAW_MS, last), must: (first, last - RAW_MS) };
        buckets::check(ledger, run, area, &pts, e, r0);
    }
}

/// The harness itself: every reader ran until it was stopped, and nothing but the two
/// scrapers asked a pod for its metrics (a process left over from another run would).
fn harness_checks(ledger: &mut Ledger, fleet: &[Pod], readers: &[(&str, &Result<(), String>)]) {
    for (name, end) in readers {
        let c = ctx(None, "harness: readers", "-", name);
        ledger.fact(&c, "reader", "ran until stopped", end.is_ok(), format!("{end:?}"));
    }
    for pod in fleet {
        let intruders = pod.intruders();
        let c = ctx(None, "harness: fake targets", "-", pod.spec.name);
        let detail = format!("{} requests from something else: {intruders:?}", intruders.len());
        ledger.fact(&c, "requests", "only the two scrapers, each on its own path", intruders.is_empty(), detail);
    }
}

/// The moments of the run the minimum number of checks of each kind follows from.
struct Timeline {
    /// End of the warm-up: buckets are compared from here on.
    from: i64,
    /// The newest settled bucket of the last raw read, and of the last `step=10s` read.
    raw_until: i64,
    step_until: i64,
    /// When the end-of-run reads were sent.
    end_read: i64,
    /// When the live stream was followed.
    live: (i64, i64),
}

/// Bucket ends of `width` in `[lo, hi]`.
fn grid(width: i64, lo: i64, hi: i64) -> usize {
    usize::try_from(hi.div_euclid(width) - (lo + width - 1).div_euclid(width) + 1).unwrap_or(0)
}

/// How many checks of each kind the run must make, from its length: each bucket of each
/// compared answer, times the variants, times the checks per bucket. Printed with the counts.
fn require_minimums(ledger: &mut Ledger, t: &Timeline) {
    let v = 2;
    let point = fields::point_fields().len();
    let (numbers, limits) = fields::quota_fields();
    let quota = numbers.len() + limits.len() + 1;
    let totals = fields::total_fields().len();
    let until = t.end_read - SETTLED_MS;
    let raw = grid(RAW_MS, t.from + RAW_MS, t.raw_until);
    let step = grid(STEP_MS, t.from + STEP_MS, t.step_until);
    let rolled = grid(ROLLUP_MS, t.from + ROLLUP_MS + 1, until);
    let rolled_step = grid(ROLLUP_STEP_MS, t.from + ROLLUP_STEP_MS + 1, until);
    let live = grid(RAW_MS, t.live.0 + 2 * RAW_MS, t.live.1 - 2 * RAW_MS);
    let live_read =
        grid(RAW_MS, (t.live.0 + 2 * RAW_MS).max(t.from + RAW_MS), (t.live.1 - 2 * RAW_MS).min(t.raw_until));
    let rollup_ends = grid(ROLLUP_MS, t.from + ROLLUP_MS, t.raw_until);
    let b = |n: usize, w: i64| format!("{n} buckets of {} s × {v} variants", w / 1000);
    let mut req = |kind: &str, min: usize, why: String| ledger.require(kind, min, why);
    req(
        "5 s table (2 s points)",
        raw * v * (point + quota + numbers.len()),
        format!("{} × {} checks", b(raw, RAW_MS), point + quota + numbers.len()),
    );
    req("5 s table step=10s", step * v * (point + quota), format!("{} × {} checks", b(step, STEP_MS), point + quota));
    req(
        "1 min table (20 s rollups)",
        rolled * v * (point + quota),
        format!("{} × {} checks", b(rolled, ROLLUP_MS), point + quota),
    );
    req(
        "1 min table step=40s",
        rolled_step * v * (point + quota),
        format!("{} × {} checks", b(rolled_step, ROLLUP_STEP_MS), point + quota),
    );
    req(
        "cumulative: every 5 s-table read",
        raw * v * totals,
        format!("{} × {totals} fields, read at least once", b(raw, RAW_MS)),
    );
    req(
        "cumulative: every step=10s read",
        step * v * totals,
        format!("{} × {totals} fields, read at least once", b(step, STEP_MS)),
    );
    req("cumulative: live stream", live * v * totals, format!("{} × {totals} fields", b(live, RAW_MS)));
    req("cumulative: live after restart", 2 * v * totals, format!("2 points × {v} variants × {totals} fields"));
    let rolled_all = grid(ROLLUP_MS, t.from + RAW_MS, until) + grid(ROLLUP_STEP_MS, t.from + RAW_MS, until);
    req(
        "cumulative: 1 min table",
        rolled_all * v * totals,
        format!("{rolled_all} buckets of 20 and 40 s × {v} variants × {totals} fields"),
    );
    req(
        "cumulative: explicit old window",
        2 * v * totals,
        format!("2 buckets of 20 s × {v} variants × {totals} fields"),
    );
    req("cumulative never step down", totals * (1 + v), format!("{totals} fields × (presence + {v} variants)"));
    req("re-read of a 5 s table bucket", raw * v * 3, format!("{} read at least twice × 3 facts", b(raw, RAW_MS)));
    req("live stream vs /api/metrics", live_read * v * 3, format!("{} live and read × 3 facts", b(live_read, RAW_MS)));
    req(
        "same totals in every answer",
        rollup_ends * v * totals * 2,
        format!("{} × {totals} fields × at least 2 other answers", b(rollup_ends, ROLLUP_MS)),
    );
    req("/api/compare window=1m", 3 * v * 13, format!("3 windows × {v} variants × 13 fields"));
    req("/api/models recent window", 2 + v * 2 * 5, format!("2 facts + {v} variants × 2 models × 5 fields"));
    req(
        "/api/models window older than RETENTION_5S",
        2 + v * 2 * 5,
        format!("2 facts + {v} variants × 2 models × 5 fields"),
    );
    req(
        "/api/metrics explicit window older than RETENTION_5S",
        2 + 2 * v,
        format!("2 facts + 2 buckets × {v} variants"),
    );
    req("/api/status vs latest live point", 2 * v, format!("2 reads × {v} variants"));
    req("quota: live stream", live * v * quota, format!("{} × {quota} checks", b(live, RAW_MS)));
    req("quota: live after restart", 2 * v * quota, format!("2 points × {v} variants × {quota} checks"));
    req("quota: explicit old window", 2 * v * quota, format!("2 buckets × {v} variants × {quota} checks"));
    let presence = 1 + 3 * v;
    let reads =
        |w: i64, range: i64, lo: i64, hi: i64| usize::try_from((hi - lo) / (range - SETTLED_MS - w)).unwrap_or(0) + 1;
    let raw_reads = reads(RAW_MS, RAW_RANGE_MS, t.from, t.raw_until);
    let step_reads = reads(STEP_MS, STEP_RANGE_MS, t.from, t.step_until);
    req(
        "bucket presence: every 5 s-table read",
        raw_reads * presence,
        format!("{raw_reads} reads (each bucket read settled once) × {presence} facts"),
    );
    req(
        "bucket presence: every step=10s read",
        step_reads * presence,
        format!("{step_reads} reads (each bucket read settled once) × {presence} facts"),
    );
    for area in [
        "bucket presence: all 5 s-table reads",
        "bucket presence: all step=10s reads",
        "bucket presence: 1 min table range=2h",
        "bucket presence: live stream",
        "bucket presence: explicit window older than RETENTION_5S",
    ] {
        req(area, presence, format!("1 answer × {presence} facts"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zai_dash_numbers_match_prometheus() {
    let wall = Instant::now();
    let t_setup = now();
    let far = i64::MAX / 4;
    let running = |age_ms: i64| Life { born_ms: t_setup - age_ms, up_from_ms: 0, down_from_ms: None, reset_ms: None };
    let paths = Paths::new("/metrics");
    let fleet = vec![
        Pod::start(pods::prod_a(), running(3_600_000), RAW_MS, &paths).await,
        Pod::start(pods::prod_b(), running(1_800_000), RAW_MS, &paths).await,
        Pod::start(
            pods::prod_c(),
            Life { born_ms: far, up_from_ms: far, down_from_ms: None, reset_ms: None },
            RAW_MS,
            &paths,
        )
        .await,
        Pod::start(pods::canary_a(), running(7_200_000), RAW_MS, &paths).await,
        Pod::start(pods::canary_b(), running(900_000), RAW_MS, &paths).await,
    ];
    let instances: Vec<String> = fleet.iter().map(|p| p.instance.clone()).collect();
    let prom = Prometheus::start_at(&instances, &paths.prom, SCRAPE_MS as u64, SCRAPE_TIMEOUT_MS as u64).await;
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = fleet.iter().map(|p| p.url.clone()).collect();
    let delay = start_delay(&fleet, &urls).await;
    // Prometheus applies its first target list up to 5 s after it is ready; zai-dash starts once
    // Prometheus scrapes, so both see each pod first within a scrape interval of each other.
    wait_for("Prometheus' first scrape of every running pod", Duration::from_secs(30), || async {
        [0, 1, 3, 4].iter().all(|&i| fleet[i].served_scrapes().1 >= 1)
    })
    .await;
    let app = start_in_phase(delay, &urls, &dir).await;
    let dash = Dash::new(&app.base);

    // Warm-up: both scrapers have answers from every pod that is up.
    wait_for("three scrapes of every running pod by both scrapers", Duration::from_secs(30), || async {
        [0, 1, 3, 4].iter().all(|&i| {
            let (d, o) = fleet[i].served_scrapes();
            d >= 3 && o >= 3
        })
    })
    .await;
    let warm = now();
    let r0 = (warm + 5_000 + ROLLUP_MS - 1).div_euclid(ROLLUP_MS) * ROLLUP_MS;
    let (churn, death, reset) = (r0 + CHURN_AT, r0 + DEATH_AT, r0 + RESET_AT);
    fleet[1].set_life(|l| l.down_from_ms = Some(churn));
    fleet[1].schedule_death();
    fleet[2].set_life(|l| {
        l.born_ms = churn;
        l.up_from_ms = churn;
    });
    fleet[3].set_life(|l| l.reset_ms = Some(reset));
    fleet[4].set_life(|l| l.down_from_ms = Some(death));
    fleet[4].schedule_death();

    let sse_from = now();
    let sse = spawn_sse(&dash).await;
    let collector = spawn_collector(
        dash.clone(),
        vec![
            ("raw", format!("range={}s", RAW_RANGE_MS / 1000)),
            ("step", format!("range={}s&step={}s", STEP_RANGE_MS / 1000, STEP_MS / 1000)),
        ],
        Duration::from_secs(3),
    );
    let mut statuses = Vec::new();
    let early = compare_at(&dash, r0 + 10_000, "first minute: data covers part of the window").await;
    statuses.push(StatusObs { at: now(), body: dash.json("/api/status").await });
    let across = compare_at(&dash, r0 + 80_000, "across churn, death and reset").await;
    statuses.push(StatusObs { at: now(), body: dash.json("/api/status").await });
    let steady = compare_at(&dash, r0 + 110_000, "steady").await;
    let models_recent =
        dash.json(&format!("/api/models?start={}&end={}", (r0 + 50_000) / 1000, (r0 + 110_000) / 1000)).await;

    // End of the run: the vanished pods' raw rows are gone (RETENTION_5S + a downsample run).
    sleep_until(r0 + 112_000).await;
    let end_read = now();
    let rollup = dash.points("range=2h").await;
    let rollup_step = dash.points("range=2h&step=40s").await;
    let rollup_minute = dash.points("range=2h&step=60s").await;
    let end_answered = now();
    let old_window =
        dash.get(&format!("/api/metrics?start={}&end={}", (r0 - ROLLUP_MS) / 1000, (r0 + ROLLUP_MS) / 1000)).await;
    let models_old = dash.get(&format!("/api/models?start={}&end={}", r0 / 1000, (r0 + 40_000) / 1000)).await;
    let latest_sent = now();
    let latest = dash.points(&format!("range={}s", RAW_RANGE_MS / 1000)).await;
    let latest_at = now();
    let (collected, collector_end) = collector.finish().await;
    let (sse, sse_end) = sse.finish().await;
    let sse_until = now();

    // Whether the database kept up through the run (printed with the summary; a flake's
    // first suspect).
    let storage = dash.storage_figures().await;

    // Restart zai-dash on the same database: the live points must carry on.
    let t_stop = now();
    app.stop().await;
    let app = TestApp::start(settings(&dir, &urls)).await;
    let t_up = now();
    let dash2 = Dash::new(&app.base);
    let sse2 = spawn_sse(&dash2).await;
    // Scrapes run every 500 ms, so two points come within seconds; the limit is generous for a
    // debug build on a loaded machine, and a timeout says what did arrive.
    let per_variant = || {
        let l = sse2.data.lock().unwrap();
        ["production", "canary"].map(|v| l.points.iter().filter(|(_, p)| p["variant"] == v).count())
    };
    let restarted = Instant::now();
    while !sse2.stopped() && per_variant().iter().any(|&n| n < 2) {
        assert!(
            restarted.elapsed() < Duration::from_secs(45),
            "timed out after 45 s waiting for two live points per variant after the restart; \
             points (production, canary): {:?}, connected event: {}",
            per_variant(),
            sse2.data.lock().unwrap().connected.is_some()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (sse2, sse2_end) = sse2.finish().await;
    app.stop().await;

    // What Prometheus stored: every pod's sample times.
    let t_end = now();
    let mut runs = Vec::new();
    for pod in &fleet {
        let times = |expr: String| {
            let prom = &prom;
            async move {
                prom.instant(&expr, t_end)
                    .await
                    .into_iter()
                    .next()
                    .map(|(_, v)| v.iter().map(|s| s.0).collect())
                    .unwrap_or_default()
            }
        };
        let counter =
            times(format!("zai_proxy_requests_total{{instance=\"{}\",status_code=\"200\"}}[10m]", pod.instance)).await;
        let gauge = times(format!("zai_proxy_max_workers{{instance=\"{}\"}}[10m]", pod.instance)).await;
        let mut run =
            PodRun::new(pod.spec.clone(), pod.life(), pod.instance.clone(), pod.dash_renders(), counter, gauge);
        run.dash_uncertain.push((t_stop - 2 * SCRAPE_MS, t_up + 2 * SCRAPE_MS));
        runs.push(run);
    }
    for r in &runs {
        let first =
            |v: &[i64]| v.first().map_or_else(|| "-".to_owned(), |t| format!("{:+.3}", (t - r0) as f64 / 1000.0));
        let last = |v: &[i64]| v.last().map_or_else(|| "-".to_owned(), |t| format!("{:+.3}", (t - r0) as f64 / 1000.0));
        let c = r.cov_total(r0 + 100_000);
        let phase = r.dash.first().map_or(0, |t| t.rem_euclid(SCRAPE_MS));
        println!(
            "{} ({}, zai-dash phase {phase} ms): zai-dash {} scrapes R0{}..R0{}, Prometheus {} samples R0{}..R0{}; totals at R0+100 s: Prometheus {:.3} s, zai-dash {:.3}..{:.3} s",
            r.spec.name,
            r.instance,
            r.dash.len(),
            first(&r.dash),
            last(&r.dash),
            r.prom.len(),
            first(&r.prom),
            last(&r.prom),
            c.prom,
            c.lo,
            c.hi
        );
    }
    let mut events: Vec<(i64, &'static str, String)> = Vec::new();
    for r in &runs {
        if let Some(first) = r.dash.first().copied().into_iter().chain(r.prom.first().copied()).min() {
            events.push((first, "first sight", r.variant().to_owned()));
        }
    }
    events.push((churn, "churn", "production".into()));
    events.push((death, "death", "canary".into()));
    events.push((reset, "reset", "canary".into()));
    let run = Run { pods: runs, scrape_ms: SCRAPE_MS, slot_ms: RAW_MS, events };

    let mut ledger = Ledger::default();
    let readers = [("point collector", &collector_end), ("live stream", &sse_end), ("live after restart", &sse2_end)];
    harness_checks(&mut ledger, &fleet, &readers);
    let mut reads = collected;
    reads.push(Read { shape: "raw", sent_ms: latest_sent, at_ms: latest_at, points: latest });
    let sse: Vec<(i64, Value)> = sse.points;
    let sse2: Vec<(i64, Value)> = sse2.points;
    let from = warm;
    let answers = Answers {
        reads: &reads,
        rollup: &rollup,
        rollup_step: &rollup_step,
        rollup_minute: &rollup_minute,
        end_read: (end_read, end_answered),
        old_window: &old_window.1,
        live: [&sse, &sse2],
    };
    presence_checks(&mut ledger, &run, &answers, r0);
    verify_points(&mut ledger, &run, &prom, &reads, &rollup, &rollup_step, end_read, from, r0).await;
    for obs in [&early, &across, &steady] {
        verify::compare(&mut ledger, &run, &prom, obs, r0).await;
    }
    verify::models(
        &mut ledger,
        &run,
        &prom,
        "/api/models recent window",
        None,
        r0 + 50_000,
        r0 + 110_000,
        &models_recent,
        r0,
    )
    .await;
    verify::models(
        &mut ledger,
        &run,
        &prom,
        "/api/models window older than RETENTION_5S",
        Some(4),
        r0,
        r0 + 40_000,
        &models_old.1,
        r0,
    )
    .await;
    let shapes: [(&str, &[Value]); 3] =
        [("range=2h", &rollup), ("range=2h&step=40s", &rollup_step), ("range=2h&step=60s", &rollup_minute)];
    let old_points = old_window_checks(&mut ledger, &old_window, &shapes, r0);
    consistency(
        &mut ledger,
        &run,
        &prom,
        &reads,
        &sse,
        &sse2,
        &rollup,
        &rollup_step,
        &old_points,
        (from, end_read - SETTLED_MS),
        r0,
    )
    .await;
    status_checks(&mut ledger, &statuses, &sse);
    let live_keyed =
        |pts: &[(i64, Value)]| keyed(&pts.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(), from, i64::MAX);
    verify::quota(&mut ledger, &run, "quota: live stream", RAW_MS, &live_keyed(&sse), r0);
    verify::quota(&mut ledger, &run, "quota: live after restart", RAW_MS, &live_keyed(&sse2), r0);
    verify::quota(&mut ledger, &run, "quota: explicit old window", ROLLUP_MS, &keyed(&old_points, from, i64::MAX), r0);
    let step_until = reads.iter().filter(|r| r.shape == "step").map(|r| r.at_ms).max().unwrap_or(from) - SETTLED_MS;
    let live = (sse_from, sse_until);
    let timeline = Timeline { from, raw_until: latest_at - SETTLED_MS, step_until, end_read, live };
    require_minimums(&mut ledger, &timeline);
    let counts = ledger.check_minimums();

    println!("{}", ledger.report(3));
    println!("{counts}");
    println!("run: R0 at +{:.1} s, wall time {:.1} s", (r0 - t_setup) as f64 / 1000.0, wall.elapsed().as_secs_f64());
    println!("zai-dash's storage before the restart: {storage}");
    drop(prom);
    let mut by_tag: BTreeMap<String, usize> = BTreeMap::new();
    for c in ledger.failures() {
        *by_tag.entry(harness::ledger::tag(c.finding)).or_default() += 1;
    }
    // The first failures again in the panic message: a CI log that keeps only its start and
    // its end still shows what failed, not only the summary's counts.
    let first: Vec<String> = ledger.failures().take(5).map(harness::ledger::Check::line).collect();
    assert!(
        by_tag.is_empty(),
        "{} of {} accuracy checks failed (summary above): {by_tag:?}; the first:\n{}",
        ledger.failures().count(),
        ledger.checks.len(),
        first.join("\n")
    );
}

/// Every point field at the four resolutions.
#[allow(clippy::too_many_arguments)]
async fn verify_points(
    ledger: &mut Ledger,
    run: &Run,
    prom: &Prometheus,
    reads: &[Read],
    rollup: &[Value],
    rollup_step: &[Value],
    end_read: i64,
    from: i64,
    r0: i64,
) {
    let keep = |m: BTreeMap<Key, Value>, width: i64| -> BTreeMap<Key, Value> {
        m.into_iter().filter(|((_, ts), _)| ts - width >= from).collect()
    };
    let raw = keep(settled(reads, "raw").0, RAW_MS);
    let step = keep(settled(reads, "step").0, STEP_MS);
    // Together, the reads saw every settled bucket since the warm-up (each one in some read).
    for (area, shape, width, seen) in
        [("all 5 s-table reads", "raw", RAW_MS, &raw), ("all step=10s reads", "step", STEP_MS, &step)]
    {
        let last = reads.iter().filter(|r| r.shape == shape).map(|r| r.at_ms).max().unwrap_or(from);
        let span = (from + width - 1, last - SETTLED_MS);
        let pts: Vec<Value> = seen.values().cloned().collect();
        buckets::check(ledger, run, area, &pts, Expect { width, may: span, must: span }, r0);
    }
    verify::points(ledger, run, prom, "5 s table (2 s points)", RAW_MS, &raw, r0).await;
    verify::points(ledger, run, prom, "5 s table step=10s", STEP_MS, &step, r0).await;
    let rolled = keyed(rollup, from + ROLLUP_MS, end_read - SETTLED_MS);
    verify::points(ledger, run, prom, "1 min table (20 s rollups)", ROLLUP_MS, &rolled, r0).await;
    let rolled_step = keyed(rollup_step, from + ROLLUP_STEP_MS, end_read - SETTLED_MS);
    verify::points(ledger, run, prom, "1 min table step=40s", ROLLUP_STEP_MS, &rolled_step, r0).await;
}

/// Finding 4: an explicit window older than RETENTION_5S answers from 1 min rows, with a step
/// that is a multiple of the rollup width, giving the points the 1 min table gives for a long
/// range at that step (`shapes`: the 1 min table at 20, 40 and 60 s steps).
fn old_window_checks(ledger: &mut Ledger, old: &(u16, Value), shapes: &[(&str, &[Value])], r0: i64) -> Vec<Value> {
    let area = "/api/metrics explicit window older than RETENTION_5S";
    let c = ctx(Some(4), area, "-", "start=R0-20s end=R0+20s");
    let pts: Vec<Value> = old.1.as_array().cloned().unwrap_or_default();
    let variants: std::collections::BTreeSet<&str> = pts.iter().filter_map(|p| p["variant"].as_str()).collect();
    ledger.fact(
        &c,
        "answer",
        "points",
        old.0 == 200 && variants.len() == 2,
        format!(
            "HTTP {}, {} points of {variants:?} (expected points of both variants from 1 min rows)",
            old.0,
            pts.len()
        ),
    );
    let got = keyed(&pts, i64::MIN, i64::MAX);
    let mut steps: Vec<i64> = Vec::new();
    for w in got.keys().collect::<Vec<_>>().windows(2) {
        if w[0].0 == w[1].0 {
            steps.push(w[1].1 - w[0].1);
        }
    }
    let off_grid =
        got.keys().any(|k| k.1.rem_euclid(ROLLUP_MS) != 0) || steps.iter().any(|s| s.rem_euclid(ROLLUP_MS) != 0);
    ledger.fact(
        &c,
        "answer",
        "step is a multiple of the rollup width",
        !pts.is_empty() && !off_grid,
        format!("timestamps {:?}", got.keys().map(|k| (k.1 - r0) / 1000).collect::<Vec<_>>()),
    );
    for (key, p) in &got {
        let c = ctx(Some(4), area, "-", &format!("{} @ R0{:+}s", key.0, (key.1 - r0) / 1000));
        let candidates: Vec<(&str, Value)> =
            shapes.iter().filter_map(|(name, s)| keyed(s, key.1 - 1, key.1).remove(key).map(|v| (*name, v))).collect();
        match candidates.iter().find(|(_, v)| verify::same_enough(p, v)) {
            Some(_) => ledger.fact(&c, "answer", "point equals the 1 min table's", true, String::new()),
            None => match candidates.first() {
                Some((name, v)) => verify::same_point(ledger, &c, p, v, &format!("explicit window vs {name}")),
                None => ledger.fact(
                    &c,
                    "answer",
                    "point equals the 1 min table's",
                    false,
                    "no 1 min-table point at this time".into(),
                ),
            },
        }
    }
    pts
}

/// Finding 2 and the live stream: cumulative fields against PromQL in every answer, never
/// stepping down, equal across answers; live points equal stored ones.
#[allow(clippy::too_many_arguments)]
async fn consistency(
    ledger: &mut Ledger,
    run: &Run,
    prom: &Prometheus,
    reads: &[Read],
    sse: &[(i64, Value)],
    sse2: &[(i64, Value)],
    rollup: &[Value],
    rollup_step: &[Value],
    old: &[Value],
    (from, until): (i64, i64),
    r0: i64,
) {
    let obs = |pts: Vec<(Key, Value)>| -> Vec<(String, i64, Value)> {
        pts.into_iter().filter(|((_, ts), _)| *ts - RAW_MS >= from).map(|((v, ts), p)| (v, ts, p)).collect()
    };
    let (raw_first, raw_all) = settled(reads, "raw");
    let (step_first, step_all) = settled(reads, "step");
    let live = |s: &[(i64, Value)]| -> Vec<(Key, Value)> {
        s.iter()
            .map(|(_, p)| ((p["variant"].as_str().unwrap().to_owned(), p["timestamp"].as_i64().unwrap()), p.clone()))
            .collect()
    };
    let all_raw: Vec<(Key, Value)> = raw_all.iter().map(|(k, _, p)| (k.clone(), p.clone())).collect();
    verify::totals(ledger, run, prom, "cumulative: every 5 s-table read", &obs(all_raw), r0, Some(2)).await;
    let all_step: Vec<(Key, Value)> = step_all.iter().map(|(k, _, p)| (k.clone(), p.clone())).collect();
    verify::totals(ledger, run, prom, "cumulative: every step=10s read", &obs(all_step), r0, Some(2)).await;
    verify::totals(ledger, run, prom, "cumulative: live stream", &obs(live(sse)), r0, Some(2)).await;
    verify::totals(ledger, run, prom, "cumulative: live after restart", &obs(live(sse2)), r0, Some(2)).await;
    let rolled: Vec<(Key, Value)> =
        keyed(rollup, from, until).into_iter().chain(keyed(rollup_step, from, until)).collect();
    verify::totals(ledger, run, prom, "cumulative: 1 min table", &obs(rolled), r0, Some(2)).await;
    verify::totals(
        ledger,
        run,
        prom,
        "cumulative: explicit old window",
        &obs(keyed(old, from, i64::MAX).into_iter().collect()),
        r0,
        Some(2),
    )
    .await;

    // Never stepping down, along every answer in time order.
    let mut along: Vec<(String, i64, Value, String)> = Vec::new();
    for ((v, ts), at, p) in &raw_all {
        along.push((v.clone(), *ts, p.clone(), format!("5 s read at R0{:+.0}s", (at - r0) as f64 / 1000.0)));
    }
    for ((v, ts), p) in live(sse) {
        along.push((v, ts, p, "live".into()));
    }
    for ((v, ts), p) in live(sse2) {
        along.push((v, ts, p, "live after restart".into()));
    }
    verify::monotonic(ledger, run, "cumulative never step down (5 s reads, live, restart)", &along, r0);

    // The same bucket read again gives the same point (cache, retention).
    for (shape, first, all) in [("5 s table", &raw_first, &raw_all), ("step=10s", &step_first, &step_all)] {
        for ((v, ts), at, p) in all.iter() {
            let f = &first[&(v.clone(), *ts)];
            if std::ptr::eq(f, p) || *ts - RAW_MS < from {
                continue;
            }
            let c = ctx(
                None,
                &format!("re-read of a {shape} bucket"),
                &run.scenario(v, ts - RAW_MS, *ts),
                &format!("{v} @ R0{:+.0}s read at R0{:+.0}s", (ts - r0) as f64 / 1000.0, (at - r0) as f64 / 1000.0),
            );
            verify::same_point(ledger, &c, p, f, "later read vs first read");
        }
    }
    // Live points equal stored points, field for field; every live point inside the span the
    // reads covered has its stored twin.
    let read_span =
        (raw_first.keys().map(|k| k.1).min().unwrap_or(0), raw_first.keys().map(|k| k.1).max().unwrap_or(0));
    let unread: Vec<String> = live(sse)
        .into_iter()
        .filter(|((v, ts), _)| *ts > read_span.0 && *ts < read_span.1 && !raw_first.contains_key(&(v.clone(), *ts)))
        .map(|((v, ts), _)| format!("{v} @ R0{:+.0}s", (ts - r0) as f64 / 1000.0))
        .collect();
    let c = ctx(Some(2), "live stream vs /api/metrics", "-", "every live point read");
    ledger.fact(&c, "same answer", "a stored twin", unread.is_empty(), format!("live points never stored: {unread:?}"));
    for ((v, ts), p) in live(sse) {
        if let Some(stored) = raw_first.get(&(v.clone(), ts)) {
            let c = ctx(
                None,
                "live stream vs /api/metrics",
                &run.scenario(&v, ts - RAW_MS, ts),
                &format!("{v} @ R0{:+.0}s", (ts - r0) as f64 / 1000.0),
            );
            verify::same_point(ledger, &c, &p, stored, "live vs stored");
        }
    }
    // Every answer gives the same running totals at a rollup bucket end.
    let mut at_rollup: BTreeMap<Key, Vec<(&str, Value)>> = BTreeMap::new();
    let mut add = |src: &'static str, pts: Vec<(Key, Value)>| {
        for (k, p) in pts {
            if k.1.rem_euclid(ROLLUP_MS) == 0 && k.1 - ROLLUP_MS >= from {
                at_rollup.entry(k).or_default().push((src, p));
            }
        }
    };
    add("5 s table", raw_first.clone().into_iter().collect());
    add("step=10s", step_first.clone().into_iter().collect());
    add("1 min table", keyed(rollup, from, until).into_iter().collect());
    add("1 min step=40s", keyed(rollup_step, from, until).into_iter().collect());
    add("live", live(sse));
    add("explicit old window", keyed(old, from, i64::MAX).into_iter().collect());
    for ((v, ts), answers) in at_rollup {
        let Some((src0, first)) = answers.first() else { continue };
        for (src, p) in &answers[1..] {
            let c = ctx(
                Some(2),
                "same totals in every answer",
                &run.scenario(&v, ts - ROLLUP_MS, ts),
                &format!("{v} @ R0{:+.0}s", (ts - r0) as f64 / 1000.0),
            );
            for f in fields::total_fields() {
                let (a, b) = (fields::json_num(p, f.name), fields::json_num(first, f.name));
                let same = match (a, b) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    _ => a == b,
                };
                ledger.fact(&c, "cumulative", f.name, same, format!("{src} {a:?} vs {src0} {b:?}"));
            }
        }
    }
}

/// `/api/status` shows the latest live point of each variant.
fn status_checks(ledger: &mut Ledger, statuses: &[StatusObs], sse: &[(i64, Value)]) {
    let pairs = [
        ("req_rate", "req_rate"),
        ("error_rate_pct", "error_rate_pct"),
        ("latency_p50_ms", "latency_p50"),
        ("latency_p95_ms", "latency_p95"),
        ("latency_p99_ms", "latency_p99"),
        ("concurrent", "concurrent_requests"),
        ("worker_utilization", "worker_utilization"),
        ("rate_limit_rps", "rate_limit_rps"),
        ("token_rate_in", "token_rate_in"),
        ("token_rate_out", "token_rate_out"),
    ];
    for s in statuses {
        for variant in ["production", "canary"] {
            let st = &s.body[variant];
            let recent: Vec<&Value> = sse
                .iter()
                .filter(|(at, p)| *at <= s.at + 1_000 && p["variant"] == variant)
                .map(|(_, p)| p)
                .rev()
                .take(3)
                .collect();
            let matches = recent.iter().any(|p| pairs.iter().all(|(a, b)| st[a] == p[b]));
            let c = ctx(None, "/api/status vs latest live point", "-", variant);
            ledger.fact(&c, "status", "every field", matches, format!("status {st} vs the last live points"));
        }
    }
}

/// Finding 5: a target whose URL says `canary` but whose own `variant` label says `test` leaves
/// no phantom `canary` anywhere the variant list shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_rule_guess_leaves_no_phantom_variant() {
    let t = now();
    let life = Life { born_ms: t - 600_000, up_from_ms: 0, down_from_ms: None, reset_ms: None };
    let prod = Pod::start(pods::prod_a(), life, 500, &Paths::new("/metrics")).await;
    // `canary` in the URL: the URL rule guesses `canary` before the first scrape.
    let spec = harness::fake::PodSpec { variant: "test", ..pods::canary_a() };
    let labelled = Pod::start(spec, life, 500, &Paths::new("/canary")).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(common::settings(&dir, targets(&[&prod.url, &labelled.url]))).await;
    let dash = Dash::new(&app.base);
    wait_for("both targets scraped with their labels", Duration::from_secs(15), || async {
        let t = dash.json("/api/targets").await;
        t.as_array().unwrap().iter().all(|t| t["up"] == true && t["variant"] != "canary")
    })
    .await;
    let mut problems = Vec::new();
    let status = dash.json("/api/status").await;
    let keys: Vec<&String> = status.as_object().unwrap().keys().collect();
    if keys != ["production", "test"] {
        problems.push(format!("/api/status variants {keys:?}, expected [\"production\", \"test\"]"));
    }
    let config = dash.json("/api/config").await;
    let mut listed: Vec<&str> =
        config["variants"].as_array().map(|v| v.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    listed.sort_unstable();
    listed.dedup();
    if listed != ["production", "test"] {
        problems.push(format!("/api/config variants {}, expected production and test", config["variants"]));
    }
    let sse = spawn_sse(&dash).await;
    wait_for("the connected event", Duration::from_secs(5), || async {
        sse.stopped() || sse.data.lock().unwrap().connected.is_some()
    })
    .await;
    let (log, ended) = sse.finish().await;
    if let Err(e) = ended {
        problems.push(format!("harness: the live stream reader failed: {e}"));
    }
    let connected = log.connected.unwrap_or_default();
    for list in connected_variants(&connected) {
        if list != ["production", "test"] {
            problems.push(format!("SSE connected variants {list:?}, expected [\"production\", \"test\"]"));
        }
    }
    let (code, cmp) = dash.get("/api/compare?window=1m").await;
    if code != 200 || cmp["candidate"] != "test" {
        problems.push(format!(
            "/api/compare default candidate: HTTP {code} {}",
            cmp.get("error").or(cmp.get("candidate")).unwrap_or(&Value::Null)
        ));
    }
    app.stop().await;
    for pod in [&prod, &labelled] {
        let intruders = pod.intruders();
        if !intruders.is_empty() {
            problems.push(format!("harness: {} was asked by something else: {intruders:?}", pod.spec.name));
        }
    }
    assert!(
        problems.is_empty(),
        "[finding 5] URL-rule guess `canary` stayed a variant after the label said `test`:\n{}",
        problems.join("\n")
    );
}
