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
//!   20 s rollup bucket ("a pod present for 20 s of a 60 s bucket").
//! - **Prometheus** 2.42 (Debian's package), started with a generated config and a temporary
//!   TSDB, scraping the five pods every 500 ms (timeout 400 ms). The test fails, naming
//!   scripts/test, when the binary is missing.
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
//! - Every field of a point at 2 s (the 5 s table), at `step=10s`, at 20 s (the 1 min table)
//!   and at `step=40s` on it, for both variants, through steady state, churn, death and reset.
//! - `/api/compare` windows (1 min) at the start (the data covers ~25 s of the window), across
//!   the churn, death and reset, and in steady state, read right after a bucket was stored so
//!   the window's data ends on a known bucket; `/api/models` over a recent explicit window and
//!   over one older than RETENTION_5S; `/api/metrics` over an explicit window older than
//!   RETENTION_5S.
//! - Cumulative fields against `sum(increase(x[10m]))` (the whole run) in every answer: every
//!   5 s-table and step read, the live stream, rollups, re-bucketed points, the explicit window,
//!   the live stream after a zai-dash restart; never stepping down; the same at a rollup bucket
//!   end whichever answer gives them; a bucket read again gives the same point.
//! - The live stream equals the stored points field for field (to the bit, decisions section
//!   8); `/api/status` equals the latest live point.
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
//! - **5 s points divide each pod's increases by its own elapsed time** by design (decisions
//!   section 8), Prometheus by the bucket: where a pod enters, leaves or resets, the two
//!   definitions differ on purpose, and the point is held to its own definition replayed from
//!   zai-dash's scrape times instead (`... per-pod elapsed` in the summary). zai-dash measures
//!   that elapsed time with its own clock after parsing, so 10 ms of timing jitter per bucket
//!   edge is allowed on these rates (1 % at the scaled 2 s points, 0.4 % at real 5 s points).
//! - **Gauges** over a bucket are the time-weighted sum over pods (decisions section 8), in
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
//! `[decisions §8: REST = live to the bit]`, or `[steady-state accuracy]` for a failure no
//! finding explains. A `harness:` area failing means the suite itself is wrong.
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
use harness::dash::{Dash, Read, connected_variants, spawn_collector, spawn_sse};
use harness::fake::{Life, Pod};
use harness::ledger::Ledger;
use harness::model::PodRun;
use harness::prom::Prometheus;
use harness::verify::{self, CompareObs, Key, Run, ctx};
use harness::{fields, pods};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
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
async fn compare_at(dash: &Dash, mut e: i64, label: &'static str) -> CompareObs {
    for _ in 0..4 {
        sleep_until(e + 250).await;
        let mut stored = false;
        while !stored && now() < e + RAW_MS - 600 {
            stored = dash.points("range=10s").await.iter().any(|p| p["timestamp"].as_i64() == Some(e));
            if !stored {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let body = dash.json("/api/compare?baseline=production&candidate=canary&window=1m").await;
        let t_after = now();
        if stored && t_after < e + RAW_MS {
            return CompareObs { label, data_end: e, t_after, body };
        }
        e += RAW_MS;
    }
    panic!("could not read /api/compare between two bucket closes: the machine is too loaded");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zai_dash_numbers_match_prometheus() {
    let wall = Instant::now();
    let t_setup = now();
    let far = i64::MAX / 4;
    let running = |age_ms: i64| Life { born_ms: t_setup - age_ms, up_from_ms: 0, down_from_ms: None, reset_ms: None };
    let fleet = vec![
        Pod::start(pods::prod_a(), running(3_600_000), RAW_MS).await,
        Pod::start(pods::prod_b(), running(1_800_000), RAW_MS).await,
        Pod::start(pods::prod_c(), Life { born_ms: far, up_from_ms: far, down_from_ms: None, reset_ms: None }, RAW_MS)
            .await,
        Pod::start(pods::canary_a(), running(7_200_000), RAW_MS).await,
        Pod::start(pods::canary_b(), running(900_000), RAW_MS).await,
    ];
    let instances: Vec<String> = fleet.iter().map(|p| p.instance.clone()).collect();
    let prom = Prometheus::start(&instances, SCRAPE_MS as u64, SCRAPE_TIMEOUT_MS as u64).await;
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

    let stop = CancellationToken::new();
    let sse = spawn_sse(&dash, stop.clone()).await;
    let reads = spawn_collector(
        dash.clone(),
        vec![("raw", "range=30s".to_owned()), ("step", "range=40s&step=10s".to_owned())],
        Duration::from_secs(3),
        stop.clone(),
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
    let old_window =
        dash.get(&format!("/api/metrics?start={}&end={}", (r0 - ROLLUP_MS) / 1000, (r0 + ROLLUP_MS) / 1000)).await;
    let models_old = dash.get(&format!("/api/models?start={}&end={}", r0 / 1000, (r0 + 40_000) / 1000)).await;
    let latest = dash.points("range=20s").await;
    let latest_at = now();
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Restart zai-dash on the same database: the live points must carry on.
    let t_stop = now();
    app.stop().await;
    let app = TestApp::start(settings(&dir, &urls)).await;
    let t_up = now();
    let dash2 = Dash::new(&app.base);
    let stop2 = CancellationToken::new();
    let sse2 = spawn_sse(&dash2, stop2.clone()).await;
    wait_for("two live points per variant after the restart", Duration::from_secs(20), || async {
        let l = sse2.lock().unwrap();
        ["production", "canary"].iter().all(|v| l.points.iter().filter(|(_, p)| p["variant"] == *v).count() >= 2)
    })
    .await;
    stop2.cancel();
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
    let mut reads = reads.lock().unwrap().clone();
    reads.push(Read { shape: "raw", at_ms: latest_at, points: latest });
    let sse: Vec<(i64, Value)> = sse.lock().unwrap().points.clone();
    let sse2: Vec<(i64, Value)> = sse2.lock().unwrap().points.clone();
    let from = warm;
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

    println!("{}", ledger.report(3));
    println!("run: R0 at +{:.1} s, wall time {:.1} s", (r0 - t_setup) as f64 / 1000.0, wall.elapsed().as_secs_f64());
    drop(prom);
    let mut by_tag: BTreeMap<String, usize> = BTreeMap::new();
    for c in ledger.failures() {
        *by_tag.entry(harness::ledger::tag(c.finding)).or_default() += 1;
    }
    assert!(
        by_tag.is_empty(),
        "{} of {} accuracy checks failed (summary above): {by_tag:?}",
        ledger.failures().count(),
        ledger.checks.len()
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
    // Live points equal stored points, field for field.
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
    let prod = Pod::start(pods::prod_a(), life, 500).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/canary/metrics", listener.local_addr().unwrap());
    let spec = harness::fake::PodSpec { variant: "test", ..pods::canary_a() };
    let labelled = Pod::start_on(listener, spec, life, 500, &url).await;
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
    let stop = CancellationToken::new();
    let sse = spawn_sse(&dash, stop.clone()).await;
    wait_for("the connected event", Duration::from_secs(5), || async { sse.lock().unwrap().connected.is_some() }).await;
    let connected = sse.lock().unwrap().connected.clone().unwrap();
    stop.cancel();
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
    assert!(
        problems.is_empty(),
        "[finding 5] URL-rule guess `canary` stayed a variant after the label said `test`:\n{}",
        problems.join("\n")
    );
}
