//! Source mode (`serve --source prometheus`) with real engines on loopback: Debian's
//! `prometheus` and `victoria-metrics` scrape the same fake proxies as a zai-dash in SQLite
//! mode, and zai-dash in source mode answers every endpoint from each engine with the same JSON
//! shapes and the same numbers. An engine that is down or is not an engine gives a clear 503 or
//! 502 naming it without its credentials, and the process stays up. The numbers compared
//! within 1 % are the raw points' request rate, 5xx share, p95 latency, token rate and gauges
//! (means over the buckets both have), and the same four over `/api/compare`'s window;
//! the accuracy suite (`tests/accuracy.rs`) still runs in SQLite mode only.

mod common;
#[allow(dead_code)] // the accuracy harness: only its Prometheus is used here
#[path = "accuracy/mod.rs"]
mod harness;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{self, ChildGuard};
use common::*;
use serde_json::Value;
use zai_dash::config::Settings;
use zai_dash::engine::EngineSettings;

const SCRAPE_MS: u64 = 500;

/// Settings shared by both modes: 500 ms scrapes, 2 s points (four scrapes a point, so a rate
/// over one point has samples), 20 s rollups.
fn timing(mut s: Settings) -> Settings {
    s.scrape_interval = Duration::from_millis(SCRAPE_MS);
    s.scrape_timeout = Duration::from_millis(400);
    s.point_width = Duration::from_secs(2);
    s.rollup_width = Duration::from_secs(20);
    s
}

fn source_settings(engine_url: &str) -> Settings {
    let mut s = timing(Settings::for_tests(Vec::new(), std::path::PathBuf::from("/nonexistent/never-opened.db")));
    s.engine = Some(EngineSettings::for_tests(engine_url));
    s
}

/// A VictoriaMetrics single node scraping `instances`, on a free loopback port, with a
/// temporary data directory. The newest samples are visible at once (`-search.latencyOffset`,
/// 30 s by default, hides them: see README, "Source mode").
struct Victoria {
    base: String,
    /// Killed with its process group on drop, before the data directory goes.
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Victoria {
    async fn start(instances: &[String]) -> Self {
        let ok = process::run(Command::new("victoria-metrics").arg("-version"), None, Duration::from_secs(30));
        assert!(
            ok.is_ok(),
            "`victoria-metrics` is not installed: run scripts/test, which installs Debian's `victoria-metrics` package"
        );
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = instances.iter().map(|i| format!("'{i}'")).collect();
        let config = format!(
            "scrape_configs:\n  - job_name: zai\n    scrape_interval: {SCRAPE_MS}ms\n    scrape_timeout: 400ms\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.path().join("scrape.yml"), config).unwrap();
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut child = process::spawn(
                Command::new("victoria-metrics")
                    .arg(format!("-storageDataPath={}", dir.path().join("data").display()))
                    .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                    .arg(format!("-promscrape.config={}", dir.path().join("scrape.yml").display()))
                    .arg("-search.latencyOffset=0s")
                    .arg("-loggerLevel=ERROR")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .expect("cannot start victoria-metrics");
            let base = format!("http://127.0.0.1:{port}");
            for _ in 0..100 {
                if !child.running() {
                    break;
                }
                if get_status(&format!("{base}/health")).await == 200 {
                    return Self { base, _child: child, _dir: dir };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            child.kill();
        }
        panic!("VictoriaMetrics did not start");
    }
}

fn instance(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches("/metrics").to_owned()
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

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-9)
}

/// The fields compared bucket by bucket: request rate, 5xx share, p95 latency, token rate,
/// the gauges and what derives from them.
const FIELDS: [&str; 6] =
    ["req_rate", "error_rate_pct", "latency_p95", "token_rate_in", "max_workers", "worker_utilization"];

/// The mean of `field` over the buckets both answers have (SQLite mode's `a`, source mode's
/// `b`), from side `which`. A single 2 s bucket holds about 40 requests of a counter that
/// moves in whole requests, and the engine's scrapes are not zai-dash's: one bucket alone
/// differs by a request (2.5 %) between two correct readers, the mean over 20 does not.
/// Each side's first bucket is left out: the data starts inside it (the engine started
/// scraping then), and `rate()` extrapolates only half a scrape interval towards a start that
/// far from the window's edge (an engine's semantics at a series' start, see README).
fn mean_over_common(a: &[Value], b: &[Value], field: &str, which: usize) -> f64 {
    let common = common_buckets(a, b);
    assert!(common.len() >= 10, "{field}: only {} buckets in common", common.len());
    let values: Vec<f64> = common
        .iter()
        .map(|(pa, pb)| if which == 0 { pa[field].as_f64() } else { pb[field].as_f64() })
        .collect::<Option<_>>()
        .unwrap_or_else(|| panic!("{field}: a null in {common:?}"));
    values.iter().sum::<f64>() / values.len() as f64
}

/// Pairs of buckets both answers have, after either side's first.
fn common_buckets<'a>(a: &'a [Value], b: &'a [Value]) -> Vec<(&'a Value, &'a Value)> {
    let ts = |p: &Value| p["timestamp"].as_i64().unwrap_or(i64::MIN);
    let after = a.first().map_or(i64::MIN, ts).max(b.first().map_or(i64::MIN, ts));
    a.iter()
        .filter(|pa| ts(pa) > after)
        .filter_map(|pa| b.iter().find(|pb| ts(pb) == ts(pa)).map(|pb| (pa, pb)))
        .collect()
}

/// Reads `path` from both apps.
async fn both(sqlite: &TestApp, source: &TestApp, path: &str) -> (Value, Value) {
    (sqlite.json(path).await, source.json(path).await)
}

/// Every endpoint and page of a source-mode app, against the SQLite-mode app on the same
/// targets: the same shapes, the main numbers within `rel`.
async fn check_every_endpoint(name: &str, sqlite: &TestApp, source: &TestApp, engine: &str, rel: f64) {
    // /api/status: the same variants and targets, the same latest rates.
    let (a, b) = both(sqlite, source, "/api/status").await;
    assert_eq!(key_set(&a).len(), key_set(&b).len(), "{name} /api/status shape: {a} vs {b}");
    for v in ["production", "canary"] {
        assert_eq!(b[v]["healthy"], true, "{name} {v}: {b}");
        assert_eq!(b[v]["version"], "1.11.1");
        assert_eq!(b[v]["targets"].as_array().unwrap().len(), 1);
    }
    // /api/metrics: same fields; cumulative ones null; the rates as in SQLite mode.
    for variant in ["production", "canary"] {
        let q = format!("/api/metrics?range=1m&variant={variant}");
        let (a, b) = both(sqlite, source, &q).await;
        let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
        assert!(a.len() >= 10 && b.len() >= 10, "{name}: {} and {} points", a.len(), b.len());
        let newest = b[b.len() - 1]["timestamp"].as_i64().unwrap();
        let pb = &b[b.len() - 1];
        let pa = a.iter().find(|p| p["timestamp"] == newest).expect("the same bucket in SQLite mode");
        assert_eq!(key_set(pa), key_set(pb), "{name}: the same fields");
        assert!(pb["requests_2xx"].is_null() && pb["tokens_input"].is_null(), "{name}: cumulative fields are null");
        for f in FIELDS {
            let (x, y) = (mean_over_common(a, b, f, 0), mean_over_common(a, b, f, 1));
            println!("{name} {variant} {f}: SQLite {x} source {y}");
            let pairs: Vec<String> = common_buckets(a, b)
                .into_iter()
                .map(|(pa, pb)| format!("{} {} {}", pa["timestamp"], pa[f], pb[f]))
                .collect();
            assert!(close(x, y, rel), "{name} {variant} {f}: SQLite {x} vs source {y}; by bucket: {pairs:#?}");
        }
    }
    // /api/targets: the engine's instances; failures in a row unknown.
    let t = source.json("/api/targets").await;
    let t = t.as_array().unwrap();
    assert_eq!(t.len(), 2, "{name}: {t:?}");
    assert!(t.iter().all(|t| t["up"] == true && t["consecutive_failures"].is_null() && t["version"] == "1.11.1"));
    let config = source.json("/api/config").await;
    assert_eq!((config["source"].as_str(), config["prometheus_url"].as_str()), (Some("prometheus"), Some(engine)));
    assert!(config["retention_5s"].is_null());
    // /api/compare and /api/models: same shapes, the same sample sizes.
    let (a, b) = both(sqlite, source, "/api/compare?baseline=production&candidate=canary&window=1m").await;
    assert_eq!(key_set(&a), key_set(&b), "{name} /api/compare shape");
    assert_eq!(a["verdict"], b["verdict"], "{name}: {a} vs {b}");
    let (x, y) = (
        a["candidate_stats"]["error_rate_pct"].as_f64().unwrap(),
        b["candidate_stats"]["error_rate_pct"].as_f64().unwrap(),
    );
    assert!((x - y).abs() <= 0.5, "{name} canary 5xx share: {x} vs {y}");
    // Window statistics over a minute every mode has data for from start to end (the engine
    // starts scraping a few seconds after zai-dash, so a window holding the start of the data
    // would compare different data, not different readers).
    let (a, b) = both(sqlite, source, "/api/compare?baseline=production&candidate=canary&window=1m").await;
    for side in ["baseline_stats", "candidate_stats"] {
        for f in ["req_rate", "error_rate_pct", "latency_p95_ms", "token_rate_in"] {
            let (x, y) = (a[side][f].as_f64().unwrap(), b[side][f].as_f64().unwrap());
            println!("{name} /api/compare {side} {f}: SQLite {x} source {y}");
            assert!(close(x, y, rel), "{name} /api/compare {side} {f}: SQLite {x} vs source {y}");
        }
    }
    let (a, b) = both(sqlite, source, "/api/models?range=1m").await;
    assert_eq!(a.as_array().unwrap().len(), b.as_array().unwrap().len(), "{name} /api/models rows: {a} vs {b}");
    assert_eq!(key_set(&a[0]), key_set(&b[0]));
    // The export: the same columns.
    let header = |app: &TestApp| {
        let app = app.url("/api/export?range=1m&format=csv");
        async move { reqwest::get(app).await.unwrap().text().await.unwrap().lines().next().unwrap_or("").to_owned() }
    };
    assert_eq!(header(sqlite).await, header(source).await, "{name}: export columns");
    // Pages.
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
async fn source_mode_answers_every_endpoint_from_prometheus_and_victoria_metrics() {
    // Rates are multiples of the scrape frequency (2/s): the fake's counters move in whole
    // requests at fixed instants, and a rate of 1/s would step in phase with the engine's
    // scrapes, so that every 2 s window saw the same one step in its 1.5 s of samples (a
    // sampling artefact of the fake, not of either reader; real traffic has no such phase).
    let mut canary = Sim::new("canary", 10.0);
    canary.err_rate = 2.0;
    let prod = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let canary = FakeTarget::start(canary, Behaviour::Healthy).await;
    let instances = [instance(&prod.url), instance(&canary.url)];
    let prom = harness::prom::Prometheus::start(&instances, SCRAPE_MS, 400).await;
    let vm = Victoria::start(&instances).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = TestApp::start(timing(settings(&dir, targets(&[&prod.url, &canary.url])))).await;
    let from_prom = TestApp::start(source_settings(&prom.base)).await;
    let from_vm = TestApp::start(source_settings(&vm.base)).await;
    // Over a minute of data everywhere (Prometheus applies its targets up to 5 s after start).
    wait_for("70 s of points in every mode", Duration::from_secs(100), || async {
        let mut ok = true;
        for app in [&sqlite, &from_prom, &from_vm] {
            ok &= points(app, "range=2m&variant=production").await.len() >= 35;
        }
        ok
    })
    .await;
    check_every_endpoint("Prometheus", &sqlite, &from_prom, &prom.base, 0.01).await;
    check_every_endpoint("VictoriaMetrics", &sqlite, &from_vm, &vm.base, 0.01).await;
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
        let out = process::output(zai_dash().arg("serve").args(args), Duration::from_secs(60));
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
        let mut child = process::spawn(
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
        BufReader::new(child.take_stdout()).read_line(&mut line).unwrap();
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
        assert!(child.running(), "the process is still up");
        child.signal(libc::SIGTERM);
        let status = tokio::task::spawn_blocking(move || {
            let s = child.wait();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.take_stderr(), &mut err);
            (s, err)
        })
        .await
        .unwrap();
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
    let prom =
        harness::prom::Prometheus::start(&[instance(&production.url), instance(&canary.url)], SCRAPE_MS, 400).await;
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
