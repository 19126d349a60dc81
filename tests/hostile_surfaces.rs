//! What zai-dash reads from systems it does not control, and what it writes for others, when
//! those systems are hostile or broken (hardening, second round):
//!
//! - source mode against a fake PromQL engine on loopback that names hostile variants, counts
//!   the queries it has at once, and answers with huge bodies: variant names are validated and
//!   capped, queries are bounded per request and overall, answers are cached within a tick,
//!   and a request reads a bounded number of bytes (errors no further than 64 KiB);
//! - remote write to a receiver answering 400 with a huge body (the real binary: bytes read per
//!   answer and warnings in its log), and the byte bound of the backlog;
//! - rules files too big, too deep, or with huge ranges (the real binary refuses to start);
//! - CSV export cells and Slack text that a spreadsheet or Slack would run.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Form, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::process;
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use zai_dash::clock::ManualClock;
use zai_dash::config::Settings;
use zai_dash::promsource::EngineSettings;
use zai_dash::remote::RemoteSettings;

const MIB: u64 = 1024 * 1024;

/// Variant labels a hostile or careless exporter can produce, none of them a valid name.
const HOSTILE: [&str; 5] = [
    "=HYPERLINK(\"http://evil.example\",\"x\")",
    "<!channel>",
    "<https://evil.example|click>",
    "Bad Name",
    "-2+3+cmd|' /C calc'!A0",
];

/// Serves `router` on a loopback port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// A body of `total` bytes of `fill` after `head`, produced as hyper asks for it; `sent` counts
/// the bytes handed over (a client that stops reading stops the count, give or take the socket
/// buffers).
fn counted_body(head: &'static str, fill: u8, total: u64, sent: Arc<AtomicU64>) -> Body {
    let chunk = Bytes::from(vec![fill; 64 * 1024]);
    let pieces = std::iter::once(Bytes::from_static(head.as_bytes()))
        .chain(std::iter::repeat_n(chunk, usize::try_from(total / (64 * 1024)).unwrap()));
    Body::from_stream(futures_util::stream::iter(pieces).map(move |b| {
        sent.fetch_add(b.len() as u64, Ordering::SeqCst);
        Ok::<_, Infallible>(b)
    }))
}

// ---------------------------------------------------------------------------------------------
// A fake PromQL engine.

/// Counts of queries at the engine at one time.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

/// Holds one place in a [`Gauge`] until dropped.
struct Place(Arc<EngineState>, bool);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.all.now.fetch_sub(1, Ordering::SeqCst);
        if self.1 {
            self.0.marked.now.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[derive(Default)]
struct EngineState {
    /// `variant` label values every answer carries.
    variants: Vec<String>,
    /// How long each query takes.
    delay: Duration,
    /// Every query at once.
    all: Gauge,
    /// Queries with `variant="canary"` at once (only a request for that variant asks them).
    marked: Gauge,
    /// Queries with `variant="canary"` so far.
    marked_total: AtomicU64,
    /// Bytes of the huge answers handed out (`variant="big"`: 70 MiB each, `variant="err"`:
    /// a 500 of 40 MiB each).
    huge_sent: Arc<AtomicU64>,
}

const MARK: &str = "variant=\"canary\"";

/// `POST /api/v1/query` and `/api/v1/query_range`: every variant as a series with the labels
/// each part of zai-dash's queries reads, value 1 at every instant.
async fn engine_query(
    State(e): State<Arc<EngineState>>,
    uri: Uri,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let query = form.get("query").cloned().unwrap_or_default();
    let marked = query.contains(MARK);
    let n = e.all.now.fetch_add(1, Ordering::SeqCst) + 1;
    e.all.max.fetch_max(n, Ordering::SeqCst);
    if marked {
        e.marked_total.fetch_add(1, Ordering::SeqCst);
        let n = e.marked.now.fetch_add(1, Ordering::SeqCst) + 1;
        e.marked.max.fetch_max(n, Ordering::SeqCst);
    }
    let _place = Place(e.clone(), marked);
    tokio::time::sleep(e.delay).await;
    if query.contains("variant=\"big\"") {
        let head = "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[{\"metric\":{\"variant\":\"big\"},\"values\":[[1,\"";
        return (StatusCode::OK, counted_body(head, b'1', 70 * MIB, e.huge_sent.clone())).into_response();
    }
    if query.contains("variant=\"err\"") {
        return (StatusCode::INTERNAL_SERVER_ERROR, counted_body("overloaded ", b'x', 40 * MIB, e.huge_sent.clone()))
            .into_response();
    }
    let range = uri.path().ends_with("query_range");
    let f = |k: &str| form.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let instants: Vec<f64> = if range {
        let (start, end, step) = (f("start"), f("end"), f("step").max(0.001));
        (0..=((end - start) / step).round() as usize).map(|k| start + k as f64 * step).collect()
    } else {
        vec![f("time")]
    };
    let result: Vec<Value> = e
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let metric = json!({
                "variant": v, "status_code": "200", "le": "+Inf", "direction": "input", "model": "glm-4.7",
                "job": "zai", "instance": format!("10.0.0.{i}:8080"), "version": "1.0.0",
            });
            let samples: Vec<Value> = instants.iter().map(|t| json!([t, "1"])).collect();
            if range {
                json!({"metric": metric, "values": samples})
            } else {
                json!({"metric": metric, "value": samples[0]})
            }
        })
        .collect();
    let kind = if range { "matrix" } else { "vector" };
    axum::Json(json!({"status": "success", "data": {"resultType": kind, "result": result}})).into_response()
}

/// A fake engine on loopback.
async fn fake_engine(variants: &[&str], delay: Duration) -> (Arc<EngineState>, String) {
    let state = Arc::new(EngineState {
        variants: variants.iter().map(|v| (*v).to_owned()).collect(),
        delay,
        ..EngineState::default()
    });
    let router = Router::new()
        .route("/api/v1/query", post(engine_query))
        .route("/api/v1/query_range", post(engine_query))
        .with_state(state.clone());
    (state, serve(router).await)
}

fn source_settings(engine: &str) -> Settings {
    let mut s = Settings::for_tests(Vec::new(), std::path::PathBuf::from("/nonexistent/never-opened.db"));
    s.engine = Some(EngineSettings::for_tests(engine));
    s
}

/// A `zai_dash_*` sample of `/metrics` (`name{labels}` as written there), 0 when absent.
async fn self_metric(app: &TestApp, series: &str) -> f64 {
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn valid_variant(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variant_names_from_the_engine_are_validated_and_capped_at_64() {
    let mut variants: Vec<String> = HOSTILE.iter().map(|v| (*v).to_owned()).collect();
    variants.push("canary".into());
    variants.extend((0..100).map(|i| format!("v{i:03}")));
    let names: Vec<&str> = variants.iter().map(String::as_str).collect();
    let (_engine, base) = fake_engine(&names, Duration::ZERO).await;
    let app = TestApp::start(source_settings(&base)).await;

    let points = points(&app, "range=1m").await;
    assert!(!points.is_empty());
    let seen: BTreeSet<String> = points.iter().map(|p| p["variant"].as_str().unwrap().to_owned()).collect();
    assert!(seen.iter().all(|v| valid_variant(v)), "only valid names: {seen:?}");
    assert_eq!(seen.len(), 64, "at most 64 variants: {seen:?}");
    assert_eq!(
        (seen.first().unwrap().as_str(), seen.last().unwrap().as_str()),
        ("canary", "v062"),
        "the first by name"
    );

    let status = app.json("/api/status").await;
    let listed: Vec<&String> = status.as_object().unwrap().keys().collect();
    assert!(listed.len() <= 64 && listed.iter().all(|v| valid_variant(v)), "{listed:?}");

    let csv = reqwest::get(app.url("/api/export?range=1m&format=csv")).await.unwrap().text().await.unwrap();
    for line in csv.lines() {
        let cells: Vec<&str> = line.split(',').collect();
        assert!(!cells.iter().any(|c| c.starts_with(['=', '+', '@', '<', '"'])), "{line}");
    }
    assert!(!csv.contains("HYPERLINK") && !csv.contains("channel"), "no hostile name reaches the export");

    let invalid = self_metric(&app, "zai_dash_engine_series_dropped_total{reason=\"invalid_variant\"}").await;
    let excess = self_metric(&app, "zai_dash_engine_series_dropped_total{reason=\"too_many_variants\"}").await;
    assert!(invalid > 0.0 && excess > 0.0, "left-out series are counted: {invalid} {excess}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_has_at_most_4_queries_at_the_engine_and_all_together_16() {
    let (engine, base) = fake_engine(&["canary", "production"], Duration::from_millis(150)).await;
    let app = TestApp::start(source_settings(&base)).await;
    let points = points(&app, "range=1m&variant=canary").await;
    assert!(!points.is_empty());
    assert_eq!(engine.marked_total.load(Ordering::SeqCst), 16, "every part of a point was asked");
    let most = engine.marked.max.load(Ordering::SeqCst);
    assert!((1..=4).contains(&most), "one request had {most} queries at the engine at once");

    let requests = (0..8).map(|i| {
        let url = app.url(&format!("/api/metrics?range=1m&variant=v{i}"));
        async move { reqwest::get(url).await.unwrap().status() }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| s.is_success()), "{statuses:?}");
    let most = engine.all.max.load(Ordering::SeqCst);
    assert!(most <= 16, "{most} queries at the engine at once over every request");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_query_is_answered_from_the_cache_until_the_next_tick() {
    let (engine, base) = fake_engine(&["canary"], Duration::ZERO).await;
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let settings = source_settings(&base);
    let point_ms = i64::try_from(settings.point_width.as_millis()).unwrap();
    let app = TestApp::start_with_clock(settings, clock.clone()).await;
    let asked = || engine.marked_total.load(Ordering::SeqCst);
    let first = app.json("/api/metrics?range=1m&variant=canary").await;
    assert_eq!(asked(), 16);
    let second = app.json("/api/metrics?range=1m&variant=canary").await;
    assert_eq!(asked(), 16, "the same queries in the same tick are not asked again");
    assert_eq!(first, second);
    clock.advance_ms(point_ms);
    app.json("/api/metrics?range=1m&variant=canary").await;
    assert_eq!(asked(), 32, "the next tick asks again");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reads_at_most_64_mib_of_answers_in_all() {
    let (engine, base) = fake_engine(&["big"], Duration::ZERO).await;
    let app = TestApp::start(source_settings(&base)).await;
    let resp = reqwest::get(app.url("/api/metrics?range=1m&variant=big")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("more than 64 MiB for one request"), "{body}");
    // Sixteen answers of 70 MiB each: 1 GiB read before; now 64 MiB and what the sockets hold.
    let sent = engine.huge_sent.load(Ordering::SeqCst);
    assert!(sent < 160 * MIB, "the engine handed out {} MiB for one request", sent / MIB);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_error_answer_is_read_no_further_than_64_kib() {
    let (engine, base) = fake_engine(&["err"], Duration::ZERO).await;
    let app = TestApp::start(source_settings(&base)).await;
    let resp = reqwest::get(app.url("/api/metrics?range=1m&variant=err")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let error = resp.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("answered HTTP 500: overloaded xxx") && error.len() < 400, "{error}");
    // Answers of 40 MiB each: the whole of every one was read before.
    let sent = engine.huge_sent.load(Ordering::SeqCst);
    assert!(sent < 40 * MIB, "the engine handed out {} MiB of error text", sent / MIB);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Slack.

#[derive(Clone, Default)]
struct Hook {
    bodies: Arc<Mutex<Vec<Value>>>,
}

async fn hook(State(h): State<Hook>, axum::Json(body): axum::Json<Value>) -> StatusCode {
    h.bodies.lock().unwrap().push(body);
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_messages_show_variants_and_summaries_literally() {
    let (_engine, base) = fake_engine(&["canary", "<!here>", "=cmd"], Duration::ZERO).await;
    let receiver = Hook::default();
    let hook_url =
        format!("{}/hook", serve(Router::new().route("/hook", post(hook)).with_state(receiver.clone())).await);
    let mut s = source_settings(&base);
    s.alerts = zai_dash::alerts::AlertSettings {
        rules: zai_dash::alerts::rules::parse_rules(
            "rules:\n  - name: Everything\n    variant: \"*\"\n    expr: req_rate\n    op: \">=\"\n    threshold: 0\n    window: 1m\n    for: 0\n    summary: \"{{ variant }} <!channel> & <https://evil.example|click>\"\n",
            "test rules",
        )
        .unwrap(),
        webhook_url: Some(hook_url.parse().unwrap()),
        webhook_format: zai_dash::alerts::Format::Slack,
        ..zai_dash::alerts::AlertSettings::default()
    };
    let app = TestApp::start(s).await;
    let text = |b: &Value| b["text"].as_str().unwrap_or_default().to_owned();
    wait_for("a Slack message about canary", Duration::from_secs(30), || async {
        receiver.bodies.lock().unwrap().iter().any(|b| text(b).contains("(canary)"))
    })
    .await;
    let bodies = receiver.bodies.lock().unwrap().clone();
    for b in &bodies {
        let t = text(b);
        assert!(!t.contains(['<', '>']), "nothing Slack would read as a mention or a link: {t}");
        assert!(t.contains("canary &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"), "{t}");
        assert!(!t.contains("here") && !t.contains("=cmd"), "no alert for an invalid variant: {t}");
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The real binary: remote write to a refusing receiver, rules files.

/// `zai-dash` with none of our settings inherited from the environment.
fn zai_dash() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zai-dash"));
    for (var, _) in std::env::vars() {
        let ours = [
            "LISTEN_ADDR",
            "SCRAPE_",
            "DB_PATH",
            "RETENTION_",
            "DASHBOARD_TOKEN",
            "SOURCE",
            "PROMETHEUS_",
            "REMOTE_WRITE_",
            "ALERT",
            "RUST_LOG",
            "LOG_FORMAT",
        ];
        if ours.iter().any(|p| var.starts_with(p)) {
            c.env_remove(var);
        }
    }
    c
}

#[derive(Clone, Default)]
struct Refusing {
    requests: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

/// Every write refused with a 400 whose body is 100 MiB.
async fn refuse(State(r): State<Refusing>) -> Response {
    r.requests.fetch_add(1, Ordering::SeqCst);
    (StatusCode::BAD_REQUEST, counted_body("out of order sample ", b'x', 100 * MIB, r.sent.clone())).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_receiver_costs_64_kib_per_answer_and_one_warning_a_minute() {
    let receiver = Refusing::default();
    let url = format!(
        "{}/api/v1/write",
        serve(Router::new().route("/api/v1/write", post(refuse)).with_state(receiver.clone())).await
    );
    let pod = FakeTarget::start(Sim::new("production", 10.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut command = zai_dash();
    let child = command
        .arg("serve")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DB_PATH", dir.path().join("zai.db"))
        .env("SCRAPE_TARGETS", &pod.url)
        .env("SCRAPE_INTERVAL", "250ms")
        .env("SCRAPE_TIMEOUT", "200ms")
        .env("REMOTE_WRITE_URL", &url)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut running = process::spawn(child).unwrap();
    let mut line = String::new();
    BufReader::new(running.take_stdout()).read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    wait_for("six refused writes", Duration::from_secs(60), || async { receiver.requests.load(Ordering::SeqCst) >= 6 })
        .await;
    running.signal(libc::SIGTERM);
    assert!(running.wait_for(Duration::from_secs(15)).is_some(), "exit within the grace period");
    let (requests, sent) = (receiver.requests.load(Ordering::SeqCst), receiver.sent.load(Ordering::SeqCst));
    assert!(sent / requests < 8 * MIB, "{} MiB handed out per refusal of 100 MiB", sent / requests / MIB);
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> =
        text.lines().filter(|l| l.contains("WARN") && l.contains("receiver refused samples")).collect();
    assert_eq!(warnings.len(), 1, "{requests} refusals, one warning a minute: {warnings:#?}");
    assert!(text.lines().all(|l| l.len() < 1_000), "no log line quotes the body at length");
}

/// Starts `zai-dash serve` with `rules` as `ALERT_RULES`; returns its exit code (`None`: it
/// started instead of refusing, and was killed) and its stderr.
fn serve_with_rules(rules: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, rules).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = zai_dash()
        .arg("serve")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DB_PATH", dir.path().join("zai.db"))
        .env("SCRAPE_TARGETS", "http://127.0.0.1:9/metrics")
        .env("ALERT_RULES", &path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Generous: the unbounded parser took 47 s on the deep file; a start is not a refusal.
    let deadline = Instant::now() + Duration::from_secs(120);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline || std::fs::read_to_string(&log).unwrap_or_default().contains("INFO") {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap())
}

fn assert_refused(rules: &[u8], sentence: &str) {
    let (code, stderr) = serve_with_rules(rules);
    assert_eq!(code, Some(1), "refuses to start: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
    assert!(stderr.contains(sentence), "{stderr}");
}

#[test]
fn a_rules_file_over_one_mebibyte_refuses_to_start() {
    let mut big = b"rules: []\n# ".to_vec();
    big.resize(1024 * 1024 + 1, b'x');
    assert_refused(&big, "rules.yaml is larger than 1 MiB; a rules file must be at most 1 MiB.");
}

#[test]
fn a_deeply_nested_rules_file_is_refused_by_the_bound_not_by_the_parser() {
    let deep = format!("rules: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    assert_refused(deep.as_bytes(), "rules.yaml nests lists and mappings deeper than 32 levels");
}

#[test]
fn rule_ranges_longer_than_30_days_refuse_to_start_naming_the_rule_and_field() {
    let rule = |extra: &str| {
        format!(
            "rules:\n  - name: Slow\n    expr: latency_p95_ms / median_over_time(latency_p95_ms[{extra}\n    threshold: 2\n"
        )
    };
    assert_refused(
        rule("300000000y])").as_bytes(),
        "ALERT_RULES rule \"Slow\": field `expr` takes a median over \"300000000y\", longer than 30d.",
    );
    assert_refused(
        rule("24h])\n    window: 31d").as_bytes(),
        "ALERT_RULES rule \"Slow\": field `window` is \"31d\", longer than 30d.",
    );
}

// ---------------------------------------------------------------------------------------------
// The backlog's byte bound.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_write_backlog_stays_within_its_bytes_and_drops_the_oldest() {
    const BOUND: u64 = 16 * 1024;
    let pod = FakeTarget::start(Sim::new("production", 10.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir, targets(std::slice::from_ref(&pod.url)));
    s.scrape_interval = Duration::from_millis(250);
    s.scrape_timeout = Duration::from_millis(240);
    let mut r = RemoteSettings::new(dead_url().await.parse().unwrap());
    r.min_backoff = Duration::from_millis(100);
    r.max_backoff = Duration::from_millis(800);
    r.append_window = Duration::from_millis(50);
    r.max_backlog_bytes = BOUND;
    s.remote = Some(r);
    let app = TestApp::start(s).await;
    let dropped = || self_metric(&app, "zai_dash_remote_write_samples_dropped_total");
    let bytes = || self_metric(&app, "zai_dash_remote_write_queue_bytes");
    wait_for("samples dropped by the byte bound", Duration::from_secs(30), || async { dropped().await > 0.0 }).await;
    // While the receiver stays down and drops go on, the queue never holds more than the bound.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut drops_seen) = (dropped().await, 0);
    while drops_seen < 3 {
        assert!(Instant::now() < deadline, "timed out waiting for three more drops");
        let held = bytes().await;
        assert!(held <= BOUND as f64, "{held} bytes queued, over the bound of {BOUND}");
        let now = dropped().await;
        if now > last {
            (last, drops_seen) = (now, drops_seen + 1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(bytes().await > 0.0, "the newest samples are kept");
    assert_eq!(self_metric(&app, "zai_dash_remote_write_samples_sent_total").await, 0.0);
    app.stop().await;
}
