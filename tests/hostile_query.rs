//! Hostile queries and hostile label values (issue 17, second round of hardening).
//!
//! - A `step` longer than the window, one that overflows the time arithmetic, or a
//!   `max_points` that only a step longer than the window could honour is answered 400 naming
//!   the parameter, on every endpoint that takes them, in SQLite mode and in source mode (where
//!   no PromQL is sent for it). An accepted query reads at most one step before its window and
//!   stamps no point after now rounded up to its bucket. The database is seeded with many
//!   target-days, so a query that read the whole raw table would show it in its answer.
//! - A target whose label values are tens of kilobytes long is stored with every value cut to
//!   128 bytes: rows and the persisted state stay small, each cut is counted in
//!   `zai_dash_label_values_cut_total`, two values that become equal when cut sum into one
//!   series, and a version that changes at every scrape makes at most one event a minute.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use common::*;
use serde_json::Value;
use tokio::net::TcpListener;
use zai_dash::clock::{Clock, ManualClock, bucket_end};
use zai_dash::point::TargetRow;
use zai_dash::promsource::EngineSettings;
use zai_dash::store::Store;
use zai_dash::store::downsample::{self, Plan};
use zai_dash::store::query;
use zai_dash::store::write::{self, WriteBatch};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
/// A whole hour, so seeded rows sit on every grid.
const NOW: i64 = 1_800_000_000_000;
/// Seeded targets, each with a day of rows: ten target-days.
const TARGETS: i64 = 10;
/// One seeded row a minute per target, each holding this many requests.
const ROW_REQUESTS: f64 = 1.0;

/// Serves `router` on a loopback port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// Writes a day of raw rows for each of [`TARGETS`] targets, one a minute, ending at [`NOW`]:
/// what the raw table holds with `RETENTION_5S=24h`, thinned to keep the test quick.
fn seed(db: &Path) {
    let store = Store::open(db).unwrap();
    let mut conn = store.conn().unwrap();
    let pairs: Vec<(String, String)> =
        (0..TARGETS).map(|i| (format!("http://10.0.0.{i}:8080/metrics"), "production".to_owned())).collect();
    let ids: Vec<i64> = query::register_targets(&conn, &pairs, NOW - 24 * HOUR).unwrap().iter().map(|t| t.id).collect();
    let mut rows = Vec::new();
    let mut ts = NOW - 24 * HOUR + MIN;
    while ts <= NOW {
        for &id in &ids {
            let mut row = TargetRow {
                target_id: id,
                variant: "production".into(),
                ts_ms: ts,
                elapsed_ms: MIN,
                ..Default::default()
            };
            row.present_ms = 5_000;
            row.counts.requests.insert("200".into(), ROW_REQUESTS);
            rows.push(row);
        }
        ts += MIN;
    }
    let batch = WriteBatch { bucket_end_ms: NOW, rows, states: vec![], points: vec![], events: vec![], late: false };
    write::write_batch(&mut conn, &batch, MIN).unwrap();
    // Rolled up as the app would, so its own first run finds nothing to do while queries read.
    let plan = Plan {
        point_ms: 5_000,
        rollup_ms: MIN,
        settle_ms: 11_000,
        retention_raw_ms: 24 * HOUR,
        retention_rollup_ms: 7 * 24 * HOUR,
        retention_coarse_ms: 30 * 24 * HOUR,
    };
    downsample::run_once(&mut conn, NOW, plan).unwrap();
}

/// Production widths (5 s points, 1 min rollups), a clock standing at [`NOW`], no targets.
fn seeded_settings(dir: &tempfile::TempDir) -> zai_dash::config::Settings {
    let mut s = settings(dir, Vec::new());
    s.point_width = Duration::from_secs(5);
    s.rollup_width = Duration::from_secs(60);
    s.scrape_interval = Duration::from_secs(5);
    s.scrape_timeout = Duration::from_secs(4);
    s.downsample_interval = Duration::from_secs(3600);
    s
}

async fn fetch(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Asserts a 400 whose JSON error names `param`.
async fn assert_refused(app: &TestApp, path: &str, param: &str) {
    let (status, body) = fetch(&app.url(path)).await;
    assert_eq!(status, 400, "{path}: {body}");
    let error: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"));
    let text = error["error"].as_str().unwrap_or_default();
    assert!(text.contains(&format!("{param} parameter")), "{path}: the error does not name {param}: {text}");
}

/// Every point of `path`, after checking none is stamped after `latest_ms` (now rounded up to
/// the step, when the query gives one).
async fn points_until(app: &TestApp, path: &str, latest_ms: i64) -> Vec<Value> {
    let (status, body) = fetch(&app.url(path)).await;
    assert_eq!(status, 200, "{path}: {body}");
    let pts: Vec<Value> = serde_json::from_str(&body).unwrap();
    for p in &pts {
        let ts = p["timestamp"].as_i64().unwrap();
        assert!(ts <= latest_ms, "{path}: a point stamped {} ms too late", ts - latest_ms);
    }
    pts
}

fn requests(pts: &[Value]) -> f64 {
    pts.iter().map(|p| p["requests"].as_f64().unwrap_or(0.0)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_longer_than_the_window_is_refused_and_windows_read_only_their_own_rows() {
    let dir = tempfile::tempdir().unwrap();
    seed(&dir.path().join("zai-dash.db"));
    let clock = Arc::new(ManualClock::new(NOW));
    let app = TestApp::start_with_clock(seeded_settings(&dir), clock.clone()).await;

    // Everything the database holds, for scale: a day of every target.
    // (With 1500 points, 400 days take steps of 6.5 h: now rounded up to one is within 7 h.)
    let all = points_until(&app, "/api/metrics?range=400d", NOW + 7 * HOUR).await;
    assert_eq!(requests(&all), (TARGETS * 24 * 60) as f64 * ROW_REQUESTS);

    // A step longer than the window read the whole raw table into one point; one that
    // overflows the bucket arithmetic panicked (debug) or answered negative timestamps.
    for query in ["range=1h&step=400d", "range=1h&step=12h", "range=1h&step=300000000y", "range=5m&step=6m"] {
        for endpoint in ["/api/metrics", "/api/export", "/api/models"] {
            assert_refused(&app, &format!("{endpoint}?{query}"), "step").await;
        }
    }
    assert_refused(&app, "/api/metrics?step=99999999999999999999999y", "step").await;
    // One point over a window that does not start on a bucket edge needs a longer step.
    assert_refused(&app, "/api/metrics?range=59m&max_points=1", "max_points").await;
    assert_refused(&app, "/api/compare?baseline=production&candidate=canary&window=300000000y", "window").await;
    assert_refused(&app, "/api/metrics?range=300000000y", "range").await;
    // A window after now has nothing to read; one ending after now reads up to now.
    assert_refused(&app, &format!("/api/metrics?start={}&end={}", NOW / 1000 + 60, NOW / 1000 + 3600), "start").await;

    // A step as long as the window reads at most one step before it: two hours of rows.
    let now = clock.now_ms();
    let hour = points_until(&app, "/api/metrics?range=1h&step=1h", bucket_end(now, HOUR)).await;
    assert!(hour.len() <= 2, "{} points", hour.len());
    assert!(requests(&hour) <= (TARGETS * 120) as f64 * ROW_REQUESTS, "read {} requests", requests(&hour));
    assert!(requests(&hour) >= (TARGETS * 60) as f64 * ROW_REQUESTS);
    let aligned = format!("/api/metrics?start={}&end={}&max_points=1", (NOW - HOUR) / 1000, NOW / 1000);
    let one = points_until(&app, &aligned, bucket_end(now, HOUR)).await;
    assert_eq!(one.len(), 1);
    assert_eq!(requests(&one), (TARGETS * 60) as f64 * ROW_REQUESTS);
    let future_end = format!("/api/metrics?range=2h&end={}&step=1h", (NOW + HOUR) / 1000);
    let tail = points_until(&app, &future_end, bucket_end(now, HOUR)).await;
    assert!(requests(&tail) <= (TARGETS * 120) as f64 * ROW_REQUESTS);
    for (path, step) in
        [("range=5m&step=5m", 5 * MIN), ("range=24h&max_points=2", 12 * HOUR), ("range=7d&step=1d", 24 * HOUR)]
    {
        points_until(&app, &format!("/api/metrics?{path}"), bucket_end(now, step)).await;
    }
    // Far in the past: nothing there, no overflow.
    assert_eq!(points_until(&app, "/api/metrics?start=0&end=86400", now).await.len(), 0);
    let ancient = "/api/metrics?start=0001-01-01T00:00:00Z&end=0001-01-02T00:00:00Z&step=1d";
    assert_eq!(points_until(&app, ancient, now).await.len(), 0);

    // The pages take the same parameters.
    let compare = "/api/compare?baseline=production&candidate=canary&window=7d";
    for path in ["/?range=400d", "/?range=1h&fragment=1", "/?range=7d", compare] {
        let (status, body) = fetch(&app.url(path)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = fetch(&app.url("/?range=300000000y")).await;
    assert_eq!(status, 400);
    app.stop().await;
}

/// `/api/metrics` hands its answer over as the points' JSON pieces, a frame each, rather than
/// one joined `String` (`ports::json_array`); the answer must still be byte for byte what
/// serializing the points whole gives, with its `Content-Type` and an exact `Content-Length`
/// (not chunked), for a long answer (a day of 1 min points, about 1 MB here, thousands of
/// frames) and for a variant's filtered hour of raw points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framed_answer_is_the_points_serialized_whole_with_its_length() {
    use zai_dash::ports::read::{DataSource, PointQuery};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("zai-dash.db");
    seed(&db);
    let clock = Arc::new(ManualClock::new(NOW));
    let settings = seeded_settings(&dir);
    let source = zai_dash::store::source::StoreSource::new(Store::open(&db).unwrap(), settings.store(), clock.clone());
    let app = TestApp::start_with_clock(settings, clock).await;
    let cases = [
        ("range=24h", 24 * HOUR, MIN, None, 256 << 10),
        ("range=1h&variant=production", HOUR, 5_000, Some("production"), 1),
    ];
    for (query, range_ms, step_ms, variant, at_least) in cases {
        let q = PointQuery {
            start_ms: NOW - range_ms,
            end_ms: NOW,
            step_ms,
            variant: variant.map(str::to_owned),
            target_url: None,
        };
        let expected = serde_json::to_string(&source.points(q).await.unwrap()).unwrap();
        // Twice: the first answer is read and serialized, the second mostly from the cache.
        for round in 0..2 {
            let resp = reqwest::get(app.url(&format!("/api/metrics?{query}"))).await.unwrap();
            assert_eq!(resp.status(), 200);
            let header = |name| resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(header("content-type").as_deref(), Some("application/json"), "{query}");
            assert_eq!(header("transfer-encoding"), None, "{query}: chunked");
            let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
            let body = resp.bytes().await.unwrap();
            assert_eq!(length, Some(body.len()), "{query}, round {round}");
            assert!(body.len() >= at_least, "{query}: {} bytes, too few for the frames to be tested", body.len());
            assert!(
                body[..] == *expected.as_bytes(),
                "{query}, round {round}: the answer differs from the points serialized whole"
            );
        }
    }
    app.stop().await;
}

/// What the fake engine was asked: `(path, form parameters)`.
type Asked = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// A Prometheus HTTP API that knows no series and records every query.
async fn fake_engine() -> (String, Asked) {
    async fn answer(path: &'static str, asked: Asked, form: String) -> axum::Json<Value> {
        let params = url::form_urlencoded::parse(form.as_bytes()).into_owned().collect();
        asked.lock().unwrap().push((path.to_owned(), params));
        let kind = if path.ends_with("query_range") { "matrix" } else { "vector" };
        axum::Json(serde_json::json!({"status": "success", "data": {"resultType": kind, "result": []}}))
    }
    let asked: Asked = Arc::default();
    let router = Router::new()
        .route("/api/v1/query", post(|State(a): State<Asked>, body: String| answer("/api/v1/query", a, body)))
        .route(
            "/api/v1/query_range",
            post(|State(a): State<Asked>, body: String| answer("/api/v1/query_range", a, body)),
        )
        .with_state(asked.clone());
    (serve(router).await, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_mode_sends_no_promql_for_a_step_longer_than_the_window() {
    let (engine, asked) = fake_engine().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = seeded_settings(&dir);
    s.db_path = dir.path().join("never-opened.db");
    s.engine = Some(EngineSettings::for_tests(&engine));
    let app = TestApp::start(s).await;
    let ranges = |asked: &Asked| -> Vec<Vec<(String, String)>> {
        asked.lock().unwrap().iter().filter(|(p, _)| p.ends_with("query_range")).map(|(_, q)| q.clone()).collect()
    };
    let param = |q: &[(String, String)], k: &str| -> f64 {
        q.iter().find(|(n, _)| n == k).map(|(_, v)| v.parse().unwrap()).unwrap()
    };
    let before = ranges(&asked).len();
    // The hour before the last midnight (UTC) with a step of a day: that bucket is complete, so
    // without the bound the engine was asked for `rate(...[1d])` at midnight.
    let midnight = (chrono::Utc::now().timestamp() - 60) / 86_400 * 86_400;
    let day_step = format!("start={}&end={midnight}&step=1d", midnight - 3600);
    for query in ["range=1h&step=400d", "range=1h&step=300000000y", "range=59m&max_points=1", &day_step] {
        let param_name = if query.contains("max_points") { "max_points" } else { "step" };
        assert_refused(&app, &format!("/api/metrics?{query}"), param_name).await;
        assert_refused(&app, &format!("/api/export?{query}"), param_name).await;
    }
    let sent = ranges(&asked);
    assert!(
        sent[before..].iter().all(|q| param(q, "step") <= 3600.0),
        "a refused query reached the engine: {:?}",
        &sent[before..]
    );

    // An accepted step as long as the window asks for buckets of the window only.
    let now_s = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let (status, body) = fetch(&app.url("/api/metrics?range=1h&step=1h")).await;
    assert_eq!(status, 200, "{body}");
    let sent = ranges(&asked);
    assert!(sent.iter().all(|q| param(q, "step") <= 3600.0), "{sent:?}");
    for q in sent.iter().filter(|q| param(q, "step") == 3600.0) {
        assert!(param(q, "start") >= now_s - 2.0 * 3600.0 - 1.0, "{q:?}");
        assert!(param(q, "end") <= now_s + 1.0, "{q:?}");
    }
    app.stop().await;
}

/// Twenty models of 50 KB, two of 200 KB that agree on their first 128 bytes, long values in
/// every other label the collector keeps, and a 100 KB version that changes at every scrape
/// (within its first 128 bytes). Counters grow by a fixed amount per scrape.
fn hostile_labels(n: u64) -> String {
    let long = |tag: &str, len: usize| format!("{tag}-{}", "x".repeat(len));
    let mut s = String::from("# TYPE zai_proxy_build_info gauge\n");
    s += &format!("zai_proxy_build_info{{variant=\"labels\",version=\"{n:08}-{}\"}} 1\n", "v".repeat(100_000));
    s += "# TYPE zai_proxy_tokens_total counter\n";
    for i in 0..20 {
        let model = long(&format!("model-{i:02}"), 50_000);
        s +=
            &format!("zai_proxy_tokens_total{{direction=\"input\",model=\"{model}\",variant=\"labels\"}} {}\n", 10 * n);
    }
    let shared = "s".repeat(128);
    for (suffix, per_scrape) in [("A", 3), ("B", 5)] {
        let model = format!("{shared}{}", suffix.repeat(200_000));
        s += &format!(
            "zai_proxy_tokens_total{{direction=\"input\",model=\"{model}\",variant=\"labels\"}} {}\n",
            per_scrape * n
        );
    }
    s += "# TYPE zai_proxy_requests_total counter\n";
    s += &format!(
        "zai_proxy_requests_total{{client=\"{}\",path=\"{}\",status_code=\"200\",variant=\"labels\"}} {}\n",
        long("client", 50_000),
        long("/v1/path", 50_000),
        7 * n
    );
    s += &format!("zai_proxy_requests_total{{status_code=\"{}\",variant=\"labels\"}} {n}\n", long("5", 50_000));
    s += "# TYPE zai_proxy_upstream_errors_total counter\n";
    s += &format!("zai_proxy_upstream_errors_total{{error_type=\"{}\",variant=\"labels\"}} {n}\n", long("e", 50_000));
    s += "# TYPE zai_proxy_retry_attempts_total counter\n";
    s += &format!("zai_proxy_retry_attempts_total{{reason=\"{}\",variant=\"labels\"}} {n}\n", long("r", 50_000));
    s += "# TYPE zai_proxy_quota_usage_ratio gauge\n";
    s += &format!(
        "zai_proxy_quota_usage_ratio{{limit_type=\"{}\",variant=\"labels\",window=\"weekly\"}} 0.5\n",
        long("limit", 50_000)
    );
    s
}

/// Sizes of the stored raw rows' payloads and of every persisted state.
fn stored_sizes(db: &Path) -> (Vec<usize>, Vec<usize>) {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let sizes = |sql: &str| -> Vec<usize> {
        let mut s = c.prepare(sql).unwrap();
        s.query_map([], |r| r.get::<_, Option<i64>>(0)).unwrap().map(|v| v.unwrap().unwrap_or(0) as usize).collect()
    };
    (sizes("SELECT length(data) FROM metrics_5s"), sizes("SELECT length(state) FROM targets"))
}

/// Version events stored, oldest first.
fn version_events(db: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut s = c.prepare("SELECT detail FROM events WHERE kind = 'version' ORDER BY ts").unwrap();
    s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// The value of `zai_dash_label_values_cut_total` for `target` on `/metrics`.
async fn cut_total(app: &TestApp, target: &str) -> f64 {
    let (_, body) = fetch(&app.url("/metrics")).await;
    let prefix = format!("zai_dash_label_values_cut_total{{target=\"{target}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_label_values_are_cut_counted_summed_and_version_events_rate_limited() {
    let scrapes = Arc::new(AtomicU64::new(0));
    let target = serve(Router::new().route(
        "/metrics",
        get({
            let scrapes = scrapes.clone();
            move || async move { hostile_labels(scrapes.fetch_add(1, Ordering::SeqCst) + 1) }
        }),
    ))
    .await;
    let url = format!("{target}/metrics");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("zai-dash.db");
    let clock = Arc::new(ManualClock::new(chrono::Utc::now().timestamp_millis()));
    let mut s = settings(&dir, targets(&[&url]));
    (s.scrape_interval, s.scrape_timeout) = (Duration::from_millis(500), Duration::from_millis(400));
    let app = TestApp::start_with_clock(s, clock.clone()).await;
    let ticking = tokio::spawn({
        let clock = clock.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                clock.advance_ms(100);
            }
        }
    });
    wait_for("ten rows of the target", Duration::from_secs(30), || async {
        stored_sizes(&db).0.len() >= 10 && scrapes.load(Ordering::SeqCst) >= 12
    })
    .await;

    // Twenty-two models of 50 KB and more made every row over a megabyte.
    let (rows, states) = stored_sizes(&db);
    assert!(rows.iter().all(|&n| n < 16 * 1024), "row payloads of {:?} bytes", rows.iter().max());
    assert!(states.iter().all(|&n| n < 64 * 1024), "a persisted state of {:?} bytes", states.iter().max());
    // Every long value of every scrape is counted (29 a scrape).
    let cut = cut_total(&app, &url).await;
    assert!(cut >= 29.0 && cut % 29.0 == 0.0, "cut counter: {cut}");

    // The two models that agree on their first 128 bytes are one, with both increases.
    let models = app.json("/api/models?range=5m").await;
    let models = models.as_array().unwrap();
    assert!(models.iter().all(|m| m["model"].as_str().unwrap().len() <= 128));
    let tokens = |name: &str| -> f64 {
        let found: Vec<&Value> = models.iter().filter(|m| m["model"].as_str() == Some(name)).collect();
        assert_eq!(found.len(), 1, "{name:.20}...: {} entries", found.len());
        found[0]["tokens_input"].as_f64().unwrap()
    };
    let shared = tokens(&"s".repeat(128));
    let model_00 = tokens(&format!("model-00-{}", "x".repeat(119)));
    assert!(model_00 > 0.0);
    assert_eq!(shared / model_00, 0.8, "3 + 5 per scrape against 10");

    // One version event at most while the version changed at every scrape for a second...
    let events = version_events(&db);
    assert!(events.len() <= 1, "{} version events", events.len());
    let latest = app.json("/api/targets").await[0]["version"].as_str().unwrap().to_owned();
    assert_eq!(latest.len(), 128, "the latest version, cut");
    // ... and the next one a minute later goes from the last announced version to the newest.
    clock.advance_ms(61_000);
    let first_count = events.len();
    wait_for("the next version event", Duration::from_secs(30), || async { version_events(&db).len() > first_count })
        .await;
    let events = version_events(&db);
    assert_eq!(events.len(), first_count + 1, "{events:?}");
    let last = events.last().unwrap();
    assert!(last.len() <= 2 * 128 + 20, "{} bytes", last.len());
    let (status, page) = fetch(&app.url("/?range=5m")).await;
    assert_eq!(status, 200);
    assert!(page.len() < 1024 * 1024, "the overview is {} bytes", page.len());
    ticking.abort();
    app.stop().await;
}
