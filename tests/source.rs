//! Source mode (`serve --source prometheus`) with real engines on loopback: Debian's
//! `prometheus` and `victoria-metrics` scrape fake proxies whose traffic and gauges never stand
//! still (`source/fake.rs`), and zai-dash in source mode must answer, **bucket by bucket**,
//! what the engine itself answers to the PromQL definition of each field (`source/expect.rs`):
//!
//! - `/api/metrics` over an explicit 40 s window, at 2 s points and at `step=10s` (gauges
//!   averaged over five raw instants there), for both variants: every bucket the engine has
//!   data for and no other, every field of every point (rates, shares, percentiles, token,
//!   cost, rejection, retry and upstream error rates, size averages, gauges, utilization, pods,
//!   every status code's rate, the quota block), the running totals `null`, and no field that
//!   nothing compares. A pod joins and another leaves inside the window.
//! - One pod's view (`target=`) against the engine's series of that `instance`.
//! - `/api/export` (CSV and JSON) row by row against those points, `/api/models` against the
//!   engine's increases of tokens and cost over the window, `variant=` against the full answer,
//!   and the live stream: every bucket of the window published once, equal to its point. The
//!   VictoriaMetrics app runs with `PROMETHEUS_DELAY=12s`, as README asks: with less, the
//!   buckets right after a pod joins reach the live stream without it.
//! - Each field must have been compared a minimum number of times (the whole grid), so a
//!   comparison that silently stops happening fails too; and the fakes must move from one
//!   bucket to the next in most fields (`harness:` lines), or a shifted bucket could pass.
//!
//! A SQLite-mode zai-dash on the same pods still checks that both modes answer every endpoint
//! with the same shapes. An engine that is down or is not an engine gives a clear 503 or 502
//! naming it without its credentials, and the process stays up. The accuracy suite
//! (`tests/accuracy.rs`) holds SQLite mode to the same PromQL definitions.

mod common;
#[path = "source/engine.rs"]
mod engine;
#[path = "source/expect.rs"]
mod expect;
#[path = "source/fake.rs"]
mod fake;
#[path = "source/tally.rs"]
mod tally;
#[path = "source/windows.rs"]
mod windows;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process;
use common::*;
use engine::{Engine, Kind};
use expect::{Expected, Grid, NULL_FIELDS, check_points, compared_fields};
use fake::{Life, Pod, PodSpec};
use serde_json::Value;
use tally::Tally;
use zai_dash::clock::{Clock, SystemClock, bucket_end};
use zai_dash::config::Settings;
use zai_dash::promsource::EngineSettings;

const SCRAPE_MS: u64 = 500;
const POINT_MS: i64 = 2_000;
const STEP_MS: i64 = 10_000;
/// The compared window: 20 raw points and 4 steps per variant.
const WINDOW_MS: i64 = 40_000;
/// `PROMETHEUS_DELAY` for VictoriaMetrics, which makes a new series searchable up to ~10 s
/// after its first sample (README, "Source mode").
const VM_DELAY: Duration = Duration::from_secs(12);

/// Settings shared by both modes: 500 ms scrapes, 2 s points (four scrapes a point, so a rate
/// over one point has samples), 20 s rollups.
fn timing(mut s: Settings) -> Settings {
    s.scrape_interval = Duration::from_millis(SCRAPE_MS);
    s.scrape_timeout = Duration::from_millis(400);
    s.point_width = Duration::from_millis(POINT_MS as u64);
    s.rollup_width = Duration::from_secs(20);
    s
}

fn source_settings(engine_url: &str) -> Settings {
    let mut s = timing(Settings::for_tests(Vec::new(), std::path::PathBuf::from("/nonexistent/never-opened.db")));
    s.engine = Some(EngineSettings::for_tests(engine_url));
    s
}

/// Source mode on VictoriaMetrics, with the delay README asks for.
fn victoria_settings(engine_url: &str) -> Settings {
    let mut s = source_settings(engine_url);
    if let Some(e) = s.engine.as_mut() {
        e.delay = VM_DELAY;
    }
    s
}

fn instance(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches("/metrics").to_owned()
}

fn now() -> i64 {
    SystemClock.now_ms()
}

/// Keys of a JSON object, recursively into objects (`quota.five_hour.usage_ratio`).
fn keys(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            let path = format!("{prefix}{k}");
            if k != "status_code_rates" {
                keys(x, &format!("{path}."), out);
            }
            out.insert(path);
        }
    }
}

fn key_set(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    keys(v, "", &mut out);
    out
}

/// A body zai-dash answered with 200; anything else fails the test.
async fn read(app: &TestApp, path: &str) -> String {
    let resp = reqwest::get(app.url(path)).await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status.as_u16(), 200, "{path}: {body}");
    body
}

async fn read_json(app: &TestApp, path: &str) -> Value {
    let body = read(app, path).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

async fn read_points(app: &TestApp, path: &str) -> Vec<Value> {
    read_json(app, path).await.as_array().unwrap_or_else(|| panic!("{path}: not an array")).clone()
}

/// Two pods per variant, each swinging on its own phase; the canary fails four times as often.
fn fleet() -> [PodSpec; 4] {
    let prod = PodSpec {
        variant: "production",
        version: "1.11.1",
        scale: 1.0,
        phase: 0.0,
        errors: 1.0,
        models: [("glm-4.7", 0.65), ("glm-4.5-air", 0.35)],
        extra_code: None,
        concurrent_base: 3.0,
        max_workers: 10.0,
    };
    let canary = PodSpec {
        variant: "canary",
        version: "1.12.0",
        scale: 0.6,
        phase: 2.1,
        errors: 4.0,
        models: [("glm-4.7", 0.5), ("glm-5", 0.5)],
        concurrent_base: 2.0,
        max_workers: 8.0,
        ..prod.clone()
    };
    [
        prod.clone(),
        PodSpec { scale: 1.4, phase: 1.3, concurrent_base: 5.0, ..prod },
        canary.clone(),
        PodSpec { phase: 4.4, extra_code: Some("502"), concurrent_base: 1.0, ..canary },
    ]
}

/// Every bucket end of `(start, end]` on a grid of `width_ms`, for `variants`.
fn full_grid(start: i64, end: i64, width_ms: i64, variants: &[&str]) -> BTreeSet<expect::Key> {
    let ends = (1..=(end - start) / width_ms).map(|i| start + i * width_ms);
    ends.flat_map(|t| variants.iter().map(move |v| ((*v).to_owned(), t))).collect()
}

/// One `/api/metrics` answer (`query`) against the engine: every bucket and field, each field
/// compared at least once per bucket of the full grid. Returns the points.
async fn check_answer(
    tally: &mut Tally,
    area: &str,
    (engine, app): (&Engine, &TestApp),
    grid: &Grid,
    query: &str,
    full: &BTreeSet<expect::Key>,
) -> Vec<Value> {
    let points = read_points(app, &format!("/api/metrics?{query}")).await;
    let (first, last) = (full.first().unwrap().1, full.last().unwrap().1);
    let expected = Expected::read(engine, grid, first, last).await;
    if expected.keys != *full {
        tally.fail(&format!("harness: {area}"), format!("the engine has {:?}, not every bucket", expected.keys));
    }
    check_points(tally, area, grid, &points, &expected);
    expect::check_motion(tally, area, &points);
    for f in compared_fields(grid).into_iter().chain(["quota", "status_code_rates codes"]) {
        tally.require(area, f, full.len());
    }
    for f in NULL_FIELDS {
        tally.require(area, &format!("null {f}"), full.len());
    }
    for code in ["200", "429", "500", "503"] {
        tally.require(area, &format!("status_code_rates.{code}"), full.len());
    }
    for part in ["five_hour.usage_ratio", "five_hour.reset_time_unix", "weekly.usage_ratio", "gate_open"] {
        tally.require(area, &format!("quota.{part}"), full.len());
    }
    points
}

/// The compared window `(start, end]` and the pod whose own view is compared (one that stays
/// from start to end).
struct Window<'a> {
    start: i64,
    end: i64,
    pod: &'a str,
}

/// Every point, export row, live point and model of one engine's source-mode app over the
/// window, and one pod's view.
async fn check_engine(tally: &mut Tally, engine: &Engine, app: &TestApp, live: &[Value], w: &Window<'_>) {
    let (name, start, end) = (engine.kind.name(), w.start, w.end);
    let window = format!("start={}&end={}", start / 1000, end / 1000);
    let both = ["production", "canary"];
    for (width, step) in [(POINT_MS, ""), (STEP_MS, "&step=10s")] {
        let grid = Grid { width_ms: width, point_ms: POINT_MS, scrape_ms: SCRAPE_MS as i64, pod: None };
        let area = format!("{name} {} s points", width / 1000);
        let query = format!("{window}{step}");
        let full = full_grid(start, end, width, &both);
        let points = check_answer(tally, &area, (engine, app), &grid, &query, &full).await;
        tally.require(&area, "status_code_rates.502", 2);
        let canary = read_points(app, &format!("/api/metrics?{query}&variant=canary")).await;
        let subset: Vec<&Value> = points.iter().filter(|p| p["variant"] == "canary").collect();
        tally.value(&area, "variant=canary", "-", &Value::from(canary.len()), &Value::from(subset.len()));
        for (a, b) in canary.iter().zip(subset) {
            tally.value(&area, "variant=canary", &format!("{}", a["timestamp"]), a, b);
        }
        let csv = windows::parse_csv(&read(app, &format!("/api/export?{query}&format=csv")).await);
        let json = windows::parse_json(&read_json(app, &format!("/api/export?{query}&format=json")).await);
        for (format, export) in [("CSV", csv), ("JSON", json)] {
            let area = format!("{area}, {format} export");
            windows::check_export(tally, &area, &export, &points);
            let columns = export.columns.iter().map(String::as_str).filter(|c| *c != "status_502_rate");
            for column in columns.chain(["bucket", "time"]) {
                tally.require(&area, column, full.len());
            }
        }
        if width == POINT_MS {
            windows::check_live(tally, &format!("{name} live stream"), live, &points, &full);
        }
    }
    let pod = w.pod;
    let grid = Grid { width_ms: POINT_MS, point_ms: POINT_MS, scrape_ms: SCRAPE_MS as i64, pod: Some(pod.to_owned()) };
    let query = format!("{window}&target={pod}");
    let full = full_grid(start, end, POINT_MS, &["production"]);
    check_answer(tally, &format!("{name} 2 s points of pod {pod}"), (engine, app), &grid, &query, &full).await;
    let area = format!("{name} /api/models");
    let models = read_points(app, &format!("/api/models?{window}")).await;
    windows::check_models(tally, &area, engine, &models, start, end).await;
    for f in ["tokens_input", "tokens_output", "tokens_cache_read", "tokens_cache_write", "cost_usd", "covered_seconds"]
    {
        tally.require(&area, f, 4);
    }
}

/// Both modes answer every endpoint and page with the same shapes; what only source mode says
/// (`/api/targets`, `/api/config`) is as documented.
async fn check_shapes(name: &str, sqlite: &TestApp, source: &TestApp, engine: &str, pods: &[Pod; 4]) {
    let (a, b) = (read_json(sqlite, "/api/status").await, read_json(source, "/api/status").await);
    assert_eq!(key_set(&a), key_set(&b), "{name} /api/status shape: {a} vs {b}");
    for (v, version) in [("production", "1.11.1"), ("canary", "1.12.0")] {
        assert_eq!(b[v]["healthy"], true, "{name} {v}: {b}");
        assert_eq!(b[v]["version"], version);
        assert_eq!(b[v]["targets"].as_array().unwrap().len(), 2, "{name} {v}: {b}");
    }
    let (a, b) =
        (read_points(sqlite, "/api/metrics?range=20s").await, read_points(source, "/api/metrics?range=20s").await);
    let pb = b.last().expect("source mode has recent points");
    let pa = a.iter().find(|p| p["timestamp"] == pb["timestamp"] && p["variant"] == pb["variant"]);
    assert_eq!(key_set(pa.expect("the same bucket in SQLite mode")), key_set(pb), "{name}: the same fields");
    let t = read_points(source, "/api/targets").await;
    assert_eq!(t.len(), 4, "{name}: {t:?}");
    for t in &t {
        let left = t["url"] == pods[1].instance.as_str();
        assert_eq!(t["up"], !left, "{name}: only the pod that left is down: {t}");
        assert!(t["consecutive_failures"].is_null() && t["last_error"].is_null(), "{name}: {t}");
    }
    let config = read_json(source, "/api/config").await;
    assert_eq!((config["source"].as_str(), config["prometheus_url"].as_str()), (Some("prometheus"), Some(engine)));
    assert!(config["retention_5s"].is_null() && config["scrape_timeout"].is_null(), "{config}");
    let compare = "/api/compare?baseline=production&candidate=canary&window=1m";
    let (a, b) = (read_json(sqlite, compare).await, read_json(source, compare).await);
    assert_eq!(key_set(&a), key_set(&b), "{name} /api/compare shape");
    assert_eq!(a["verdict"], b["verdict"], "{name}: a canary failing four times as often: {a} vs {b}");
    assert!(b["strata"].as_u64().unwrap_or(0) > 0, "{name}: the engine's per-tick increases are judged: {b}");
    let models = "/api/models?range=1m";
    let (a, b) = (read_points(sqlite, models).await, read_points(source, models).await);
    assert_eq!(a.len(), b.len(), "{name} /api/models rows: {a:?} vs {b:?}");
    assert_eq!(key_set(&a[0]), key_set(&b[0]));
    let export = "/api/export?range=30s&format=csv";
    let header = |body: String| body.lines().next().unwrap_or_default().to_owned();
    assert_eq!(header(read(sqlite, export).await), header(read(source, export).await), "{name}: export columns");
    for page in ["/", "/?range=1h&variant=canary", "/targets", "/compare", "/alerts"] {
        assert_eq!(get_status(&source.url(page)).await, 200, "{name} {page}");
    }
    // The live stream: connected, then points of the engine's newest complete bucket.
    let events = tokio::time::timeout(Duration::from_secs(10), async {
        let mut resp = reqwest::get(source.url("/api/events")).await.unwrap();
        let mut text = String::new();
        while !text.contains("\"type\":\"metrics\"") {
            let Some(chunk) = resp.chunk().await.unwrap() else { break };
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    })
    .await
    .expect("a live point within 10 s");
    assert!(events.contains("\"type\":\"connected\"") && events.contains("\"requests_2xx\":null"), "{name}: {events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_mode_answers_every_bucket_as_prometheus_and_victoria_metrics_do() {
    let [prod_a, prod_b, canary_a, canary_b] = fleet();
    let pods = [
        Pod::start(prod_a, Life::ALWAYS).await,
        Pod::start(prod_b, Life::ALWAYS).await,
        Pod::start(canary_a, Life::ALWAYS).await,
        Pod::start(canary_b, Life::NOT_YET).await,
    ];
    let instances: Vec<String> = pods.iter().map(|p| p.instance.clone()).collect();
    let prom = Engine::start(Kind::Prometheus, &instances, SCRAPE_MS).await;
    let vm = Engine::start(Kind::Victoria, &instances, SCRAPE_MS).await;
    let dir = tempfile::tempdir().unwrap();
    let named: Vec<String> = pods
        .iter()
        .zip(["production", "production", "canary", "canary"])
        .map(|(p, v)| format!("{v}={}", p.url))
        .collect();
    let sqlite = TestApp::start(timing(settings(&dir, targets(&named)))).await;
    let from_prom = TestApp::start(source_settings(&prom.base)).await;
    let from_vm = TestApp::start(victoria_settings(&vm.base)).await;
    let (live_prom, prom_stream) = windows::collect_live(&from_prom.url("/api/events"));
    let (live_vm, vm_stream) = windows::collect_live(&from_vm.url("/api/events"));
    // Prometheus applies its targets up to 5 s after it is ready.
    wait_for("both engines hold samples of the three serving pods", Duration::from_secs(30), || async {
        let mut ok = true;
        for e in [&prom, &vm] {
            let n = e.instant("count(zai_proxy_build_info)", now()).await;
            ok &= n.first().is_some_and(|s| s.1[0].1 == 3.0);
        }
        ok
    })
    .await;
    // The window starts once the engines have samples, on the 10 s grid; one pod joins a third
    // of the way in (mid-bucket at both widths), another leaves two thirds in.
    let start = bucket_end(now() + 1_000, STEP_MS);
    let end = start + WINDOW_MS;
    pods[3].set_life(Life { up_from_ms: start + 11_300, down_from_ms: i64::MAX });
    pods[1].set_life(Life { up_from_ms: i64::MIN, down_from_ms: start + 27_700 });
    // Every pod's newest scrape in both engines is past the window's end by more than either
    // app waits for a bucket (a scrape interval and the engine's delay), so every scrape of the
    // window has landed and both apps answer up to its last bucket, also live.
    let after = end + SCRAPE_MS as i64 + VM_DELAY.as_millis() as i64 + POINT_MS;
    wait_for("every scrape of the window in both engines", Duration::from_secs(120), || async {
        let mut ok = true;
        for e in [&prom, &vm] {
            let newest = e.instant("up[5s]", now()).await;
            ok &= newest.len() == 4 && newest.iter().all(|s| s.1.last().is_some_and(|x| x.0 > after));
        }
        ok
    })
    .await;
    prom_stream.abort();
    vm_stream.abort();
    let window = Window { start, end, pod: &pods[0].instance };
    println!("window ({start}, {end}]: a pod joins at {}, another leaves at {}", start + 11_300, start + 27_700);
    let mut tally = Tally::default();
    let live = live_prom.lock().unwrap().clone();
    check_engine(&mut tally, &prom, &from_prom, &live, &window).await;
    let live = live_vm.lock().unwrap().clone();
    check_engine(&mut tally, &vm, &from_vm, &live, &window).await;
    tally.finish();
    check_shapes("Prometheus", &sqlite, &from_prom, &prom.base, &pods).await;
    check_shapes("VictoriaMetrics", &sqlite, &from_vm, &vm.base, &pods).await;
    for app in [from_prom, from_vm, sqlite] {
        app.stop().await;
    }
}

fn zai_dash() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zai-dash"));
    for (var, _) in std::env::vars() {
        let ours = ["LISTEN_ADDR", "SCRAPE_", "DB_PATH", "RETENTION_", "DASHBOARD_TOKEN", "SOURCE", "PROMETHEUS_"];
        if ours.iter().any(|p| var.starts_with(p)) {
            c.env_remove(var);
        }
    }
    c
}

#[test]
fn source_mode_without_an_engine_or_with_sqlite_settings_refuses_to_start() {
    let cases: [(&[&str], &str); 4] = [
        (&["--source", "prometheus"], "SOURCE=prometheus needs PROMETHEUS_URL"),
        (
            &["--source", "prometheus", "--prometheus-url", "http://p:9090", "--scrape-targets", "http://a/metrics"],
            "SCRAPE_TARGETS has no effect with SOURCE=prometheus",
        ),
        (&["--source", "prometheus", "--prometheus-url", "http://u:hunter2@/"], "PROMETHEUS_URL is not an http"),
        (
            &["--scrape-targets", "http://a/metrics", "--prometheus-url", "http://p:9090"],
            "PROMETHEUS_URL is set but SOURCE is sqlite",
        ),
    ];
    for (args, expected) in cases {
        let out = zai_dash().arg("serve").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

/// The real binary in source mode, pointed at a dead port and then at something that is not an
/// engine: every page and API says so with the engine's URL (never its password), probes stay
/// green, the process stays up and still stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_is_down_gives_a_clear_error_and_the_process_stays_up() {
    let dead = dead_url().await.trim_end_matches("/metrics").replace("http://", "http://zai:hunter2@");
    let not_an_engine = FakeTarget::start(Sim::new("production", 1.0), Behaviour::Healthy).await;
    for (url, status, says) in [
        (dead.clone(), 503, "cannot be reached"),
        (not_an_engine.url.trim_end_matches("/metrics").to_owned(), 502, "answered HTTP 404"),
    ] {
        let shown = url.replace("zai:hunter2@", "");
        let mut process = process::spawn(
            zai_dash()
                .arg("serve")
                .env("LISTEN_ADDR", "127.0.0.1:0")
                .env("SOURCE", "prometheus")
                .env("PROMETHEUS_URL", &url)
                .env("PROMETHEUS_TIMEOUT", "2s")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(process.take_stdout()).read_line(&mut line).unwrap();
        let base = line.trim().strip_prefix("listening on ").expect("first stdout line").to_owned();
        for path in
            ["/api/metrics?range=5m", "/api/status", "/api/compare?baseline=production&candidate=canary", "/api/models"]
        {
            let resp = reqwest::get(format!("{base}{path}")).await.unwrap();
            assert_eq!(resp.status().as_u16(), status, "{url} {path}");
            let body: Value = resp.json().await.unwrap();
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains(&shown) && error.contains(says), "{path}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
        wait_for("the poller's first failure", Duration::from_secs(10), || async {
            get_status(&format!("{base}/api/targets")).await == status
        })
        .await;
        for page in ["/", "/targets", "/compare?baseline=production&candidate=canary"] {
            let resp = reqwest::get(format!("{base}{page}")).await.unwrap();
            assert_eq!(resp.status().as_u16(), status, "{page}");
            let html = resp.text().await.unwrap();
            assert!(html.contains(&shown) && !html.contains("hunter2"), "{page}: {html}");
        }
        assert_eq!(get_status(&format!("{base}/healthz")).await, 200);
        assert_eq!(get_status(&format!("{base}/readyz")).await, 200);
        assert!(process.try_wait().is_none(), "the process is still up");
        let mut stderr = process.take_stderr();
        let log = std::thread::spawn(move || {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
            err
        });
        process.signal(libc::SIGTERM);
        let exit = tokio::task::spawn_blocking(move || process.wait()).await.unwrap();
        let status = (exit, log.join().unwrap());
        assert!(status.0.success(), "{:?}", status);
        assert!(!status.1.contains("hunter2"), "the log never shows the password: {}", status.1);
    }
}

/// Alerts in source mode: the rules are evaluated on the engine's window statistics, so a
/// canary whose 5xx share crosses the threshold fires (listed by `/api/alerts`), and a healthy
/// production stays silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_from_the_engines_numbers() {
    let production = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let mut bad = Sim::new("canary", 20.0);
    bad.err_rate = 20.0;
    let canary = FakeTarget::start(bad, Behaviour::Healthy).await;
    let prom = Engine::start(Kind::Prometheus, &[instance(&production.url), instance(&canary.url)], SCRAPE_MS).await;
    let mut s = source_settings(&prom.base);
    s.alerts = zai_dash::alerts::AlertSettings {
        rules: zai_dash::alerts::rules::parse_rules(
            "rules:\n  - name: HighErrorRate\n    variant: \"*\"\n    expr: error_rate_pct\n    op: \">\"\n    threshold: 5\n    window: 4s\n    for: 1s\n    min_requests: 10\n    severity: critical\n",
            "test rules",
        )
        .unwrap(),
        ..zai_dash::alerts::AlertSettings::default()
    };
    let app = TestApp::start(s).await;
    let firing = |v: &Value| v["data"]["alerts"].as_array().is_some_and(|a| a.iter().any(|a| a["state"] == "firing"));
    wait_for("HighErrorRate firing for canary", Duration::from_secs(45), || async {
        firing(&app.json("/api/alerts").await)
    })
    .await;
    let listed = app.json("/api/alerts").await;
    let alerts = listed["data"]["alerts"].as_array().unwrap();
    let firing: Vec<&Value> = alerts.iter().filter(|a| a["state"] == "firing").collect();
    assert_eq!(firing.len(), 1, "{listed}");
    assert_eq!(firing[0]["labels"]["variant"], "canary", "{listed}");
    let value: f64 = firing[0]["value"].as_str().unwrap().parse().unwrap();
    assert!((value - 50.0).abs() < 2.0, "half the canary's requests fail: {listed}");
    assert_eq!(get_status(&app.url("/alerts")).await, 200);
    app.stop().await;
}

/// Spend reads through the read contract, so source mode answers `/api/spend` from the engine's
/// `increase()` of the cost counters, as SQLite mode does from its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_comes_from_the_engine_in_source_mode() {
    let sim = Sim { models: vec![("glm-4.7".into(), 1.0)], ..Sim::new("production", 50.0) };
    let production = FakeTarget::start(sim, Behaviour::Healthy).await;
    let prom = Engine::start(Kind::Prometheus, &[instance(&production.url)], SCRAPE_MS).await;
    let mut s = source_settings(&prom.base);
    s.alerts.budgets.daily_usd = Some(1000.0);
    let app = TestApp::start(s).await;
    // 503 until the alert engine's first evaluation has read the costs.
    wait_for("spend with a pace from the engine", Duration::from_secs(45), || async {
        let Ok(resp) = reqwest::get(app.url("/api/spend")).await else { return false };
        let report: Value = resp.json().await.unwrap_or_default();
        report["total"]["projected_day_usd"].as_f64().is_some_and(|p| p > 0.0)
    })
    .await;
    let report = app.json("/api/spend").await;
    let model = &report["variants"]["production"]["models"]["glm-4.7"];
    let today = model["today_usd"].as_f64().unwrap();
    assert!(today > 0.0 && model["month_usd"].as_f64().unwrap() >= today, "{report}");
    assert!(model["projected_day_usd"].as_f64().unwrap() > today, "{report}");
    assert_eq!(report["budgets"]["daily"]["budget_usd"], 1000.0, "{report}");
    app.stop().await;
}
