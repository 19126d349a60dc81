//! A dashboard that says when its storage fails (issue 17): with the database's disk full,
//! `/healthz` turns `degraded` with the reason, every page carries a banner, the live stream
//! and the charts keep moving from the batches held in memory, `zai_dash_storage_healthy` is 0
//! and `StorageFailing` fires and reaches a webhook although its state cannot be saved. Once
//! space returns, every bucket of the failure is in the database exactly once and health is ok
//! again. Source mode keeps no database: its health stays ok.
//!
//! The disk is a small tmpfs mounted by the test (`common::disk`, root needed as in CI).

mod common;
#[path = "alerts/receiver.rs"]
mod receiver;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::disk::SmallDisk;
use common::*;
use receiver::Receiver;
use serde_json::Value;
use zai_dash::alerts::AlertSettings;
use zai_dash::alerts::rules::{default_rules, parse_rules};
use zai_dash::config::Settings;
use zai_dash::promsource::EngineSettings;

/// The built-in rule with a `for` of a second, so the suite stays short (the built-in minute is
/// unit-tested in `alerts::rules`).
const STORAGE_RULE: &str = r#"rules:
  - name: StorageFailing
    expr: storage_healthy
    op: "=="
    threshold: 0
    for: 1s
    severity: critical
    summary: "zai-dash cannot write to its database"
"#;

const BANNER: &str = "Numbers are not being saved";
const DISK_FULL: &str = "The disk holding the database is full.";
const PAGES: [&str; 4] = ["/", "/compare", "/targets", "/alerts"];

/// Everything zai-dash logs in this test binary. The tests with a writer take [`ONE_WRITER`], so
/// the writer's lines logged during one of them are its own.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static ONE_WRITER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("zai_dash=info"))
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
}

/// Bytes logged so far: where a test's own lines start.
fn log_mark() -> usize {
    LOGS.lock().unwrap().len()
}

fn log_lines_with(needle: &str, since: usize) -> usize {
    String::from_utf8_lossy(&LOGS.lock().unwrap()[since..]).lines().filter(|l| l.contains(needle)).count()
}

/// The writer's failures logged since `since`, SQLite's own text included: what a failing
/// assertion about the banner's reason prints.
fn write_failures(since: usize) -> String {
    let logs = LOGS.lock().unwrap();
    let text = String::from_utf8_lossy(&logs[since..]);
    let failures: Vec<&str> =
        text.lines().filter(|l| l.contains("write failed") || l.contains("writes recovered")).collect();
    format!(
        "{} write failures logged; the last ones:\n{}",
        failures.len(),
        failures[failures.len().saturating_sub(5)..].join("\n")
    )
}

/// The `error` of each "Database write failed" line logged since `since`, in order.
fn write_failure_reasons(since: usize) -> Vec<String> {
    let logs = LOGS.lock().unwrap();
    let text = String::from_utf8_lossy(&logs[since..]);
    text.lines()
        .filter(|l| l.contains("Database write failed"))
        .map(|l| {
            let error = l.split_once("error=").map_or("", |(_, rest)| rest);
            error.split_once(" backlog=").map_or(error, |(e, _)| e).to_owned()
        })
        .collect()
}

/// A live point as the stream delivered it.
#[derive(Debug, Clone)]
struct LivePoint {
    variant: String,
    timestamp: i64,
}

/// Reads the live stream in the background, keeping every `metrics` event.
fn collect_live(base: &str) -> (Arc<Mutex<Vec<LivePoint>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Vec<LivePoint>>> = Arc::default();
    let url = format!("{base}/api/events");
    let sink = seen.clone();
    let task = tokio::spawn(async move {
        let mut resp = reqwest::get(url).await.unwrap();
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find('\n') {
                let line: String = buf.drain(..=end).collect();
                let Some(json) = line.trim_end().strip_prefix("data:") else { continue };
                let Ok(event) = serde_json::from_str::<Value>(json.trim()) else { continue };
                if event["type"] == "metrics" {
                    let p = &event["data"];
                    let point = LivePoint {
                        variant: p["variant"].as_str().unwrap_or_default().to_owned(),
                        timestamp: p["timestamp"].as_i64().unwrap_or_default(),
                    };
                    sink.lock().unwrap().push(point);
                }
            }
        }
    });
    (seen, task)
}

/// Bucket ends of the raw rows stored for any target, oldest first.
fn stored_buckets(db: &Path) -> Vec<i64> {
    let read = || -> rusqlite::Result<Vec<i64>> {
        let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut s = c.prepare("SELECT ts FROM metrics_5s ORDER BY ts")?;
        s.query_map([], |r| r.get(0))?.collect()
    };
    read().unwrap_or_default() // before the schema exists: nothing stored yet
}

async fn text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

fn firing_storage(alerts: &Value) -> bool {
    alerts["data"]["alerts"].as_array().into_iter().flatten().any(|a| {
        a["labels"]["alertname"] == "StorageFailing" && a["labels"]["variant"] == "zai-dash" && a["state"] == "firing"
    })
}

fn webhook_statuses(hook: &Receiver) -> Vec<String> {
    hook.bodies()
        .iter()
        .filter(|b| b["commonLabels"]["alertname"] == "StorageFailing")
        .map(|b| b["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn failing_app_settings(db: &Path, target: &str, hook: &Receiver) -> Settings {
    let mut s = Settings::for_tests(targets(&[target]), db.to_path_buf());
    s.alerts = AlertSettings {
        rules: parse_rules(STORAGE_RULE, "test rules").unwrap(),
        webhook_url: Some(hook.url.parse().unwrap()),
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        ..AlertSettings::default()
    };
    s
}

/// Consecutive stored points of the window `(from, to]` agree with each other: the requests of
/// each bucket are exactly what its running total grew by since the previous bucket. A bucket
/// written twice would count its requests twice; a lost one would make the total jump.
fn assert_each_bucket_counted_once(points: &[Value], from: i64, to: i64) {
    let window: Vec<&Value> = points
        .iter()
        .filter(|p| p["timestamp"].as_i64().is_some_and(|t| t > from && t <= to) && p["variant"] == "production")
        .collect();
    assert!(window.len() >= 4, "points of the failure stored: {window:?}");
    for pair in window.windows(2) {
        let total = |p: &Value| p["requests_2xx"].as_f64().unwrap();
        let grew = total(pair[1]) - total(pair[0]);
        assert_eq!(grew, pair[1]["requests"].as_f64().unwrap(), "bucket counted once: {:?}", pair);
    }
}

/// The disk fills under a running zai-dash, then space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_everywhere_keeps_the_live_view_and_is_written_exactly_once_when_space_returns() {
    capture_logs();
    let _one_writer = ONE_WRITER.lock().await;
    let logged = log_mark();
    let target = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let hook = Receiver::start().await;
    let disk = SmallDisk::mount("4m");
    let db = disk.dir.join("h.db");
    let app = TestApp::start(failing_app_settings(&db, &target.url, &hook)).await;
    wait_for("stored points", Duration::from_secs(30), || async { stored_buckets(&db).len() >= 3 }).await;
    assert_eq!(app.json("/healthz").await, serde_json::json!({ "status": "ok" }));
    let (live, reader) = collect_live(&app.base);

    let filler = disk.fill();
    let health = wait_for_value("/healthz degraded", Duration::from_secs(20), || async {
        let h = app.json("/healthz").await;
        (h["status"] == "degraded").then_some(h)
    })
    .await;
    let storage = &health["storage"];
    assert_eq!(storage["last_error"], DISK_FULL, "{health}");
    assert!(storage["batches_held"].as_u64().unwrap() >= 1, "{health}");
    assert!(storage["failed_commits"].as_u64().unwrap() >= 1, "{health}");
    let since = storage["since"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(since).is_ok(), "since is RFC 3339: {since}");
    let stored_until =
        chrono::DateTime::parse_from_rfc3339(storage["stored_until"].as_str().unwrap()).unwrap().timestamp_millis();
    assert_eq!(get_status(&app.url("/healthz")).await, 200, "alive and serving: still 200");
    assert_eq!(get_status(&app.url("/readyz")).await, 200);

    // The live stream keeps delivering new buckets, and REST reads include the held ones.
    wait_for("live points well after the failure", Duration::from_secs(30), || async {
        live.lock().unwrap().iter().filter(|p| p.timestamp > stored_until).count() >= 6
    })
    .await;
    let served = points(&app, "range=5m").await;
    let newest_served = served.iter().filter_map(|p| p["timestamp"].as_i64()).max().unwrap();
    assert!(newest_served > stored_until + 2_000, "charts keep moving past {stored_until}: {newest_served}");
    assert!(stored_buckets(&db).iter().all(|&t| t <= stored_until), "nothing new reached the database");

    for page in PAGES {
        let html = text(&app.url(page)).await;
        if !(html.contains(BANNER) && html.contains(DISK_FULL)) {
            let banner = html.lines().find(|l| l.contains("storage-failing")).unwrap_or("(no banner)");
            let health = app.json("/healthz").await;
            panic!("{page}: the banner says why\nbanner: {banner}\n/healthz now: {health}\n{}", write_failures(logged));
        }
        assert!(html.contains("held in memory") && html.contains("stored history ends at"), "{page}");
    }
    let metrics = text(&app.url("/metrics")).await;
    assert!(metrics.contains("\nzai_dash_storage_healthy 0\n"), "{metrics}");
    wait_for("StorageFailing firing", Duration::from_secs(30), || async {
        firing_storage(&app.json("/api/alerts").await)
    })
    .await;
    wait_for("StorageFailing delivered to the webhook", Duration::from_secs(30), || async {
        webhook_statuses(&hook).contains(&"firing".to_owned())
    })
    .await;
    let failing_until = live.lock().unwrap().iter().map(|p| p.timestamp).max().unwrap();

    std::fs::remove_file(filler).unwrap();
    wait_for("/healthz ok again", Duration::from_secs(30), || async {
        app.json("/healthz").await == serde_json::json!({ "status": "ok" })
    })
    .await;
    assert!(text(&app.url("/metrics")).await.contains("\nzai_dash_storage_healthy 1\n"));
    for page in PAGES {
        assert!(!text(&app.url(page)).await.contains(BANNER), "{page}: no banner once writes succeed");
    }
    wait_for("StorageFailing resolved at the webhook", Duration::from_secs(30), || async {
        webhook_statuses(&hook).contains(&"resolved".to_owned())
    })
    .await;

    // Every bucket the live stream showed during the failure is stored, once.
    let stored: BTreeSet<i64> = stored_buckets(&db).into_iter().collect();
    let shown: Vec<LivePoint> = live.lock().unwrap().clone();
    let mut per_bucket: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for p in &shown {
        *per_bucket.entry((p.variant.clone(), p.timestamp)).or_default() += 1;
    }
    let repeated: Vec<_> = per_bucket.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "no bucket on the live stream twice: {repeated:?}");
    for p in shown.iter().filter(|p| p.timestamp > stored_until && p.timestamp <= failing_until) {
        assert!(stored.contains(&p.timestamp), "bucket {} shown live during the failure is stored", p.timestamp);
    }
    let all = points(&app, "range=5m").await;
    assert_each_bucket_counted_once(&all, stored_until - 1_000, failing_until);

    let failures = write_failures(logged);
    // One ERROR when writes start failing, and another only when the reason changes, never one
    // per retry. A write that really waits out the busy timeout behind another connection
    // ("database is locked") would be a reason of its own. (Before write transactions began
    // IMMEDIATE, a write that met another connection's failed at once with that reason, which
    // then replaced the full disk on the banner: `store::write_transaction`.)
    let reasons = write_failure_reasons(logged);
    assert!(reasons.first().is_some_and(|r| r.contains("full")), "the first ERROR names the full disk\n{failures}");
    assert!(reasons.windows(2).all(|w| w[0] != w[1]), "an ERROR per retry, not per reason\n{failures}");
    assert!(reasons.len() <= 3, "ERRORs while the disk was full\n{failures}");
    assert_eq!(log_lines_with("Database writes recovered", logged), 1, "one INFO when they recover\n{failures}");
    assert!(log_lines_with("Alert state not saved", logged) <= 1, "the alert engine logs the failure once");
    reader.abort();
    app.stop().await;
}

/// Polls `probe` until it returns something, or panics naming `what`.
async fn wait_for_value<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Source mode has no database to fail: `/healthz` stays ok, the gauge 1, no banner, and the
/// built-in `StorageFailing` never fires, even with the engine down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_mode_has_no_store_and_stays_healthy() {
    let engine = dead_url().await.trim_end_matches("/metrics").to_owned();
    let mut s = Settings::for_tests(Vec::new(), std::path::PathBuf::from("/nonexistent/never-opened.db"));
    s.engine = Some(EngineSettings::for_tests(&engine));
    s.alerts = AlertSettings { rules: default_rules(), ..AlertSettings::default() };
    let app = TestApp::start(s).await;
    wait_for("an alert evaluation", Duration::from_secs(30), || async {
        text(&app.url("/alerts")).await.contains("StorageFailing")
            && !text(&app.url("/alerts")).await.contains("not yet")
    })
    .await;
    assert_eq!(app.json("/healthz").await, serde_json::json!({ "status": "ok" }));
    assert!(text(&app.url("/metrics")).await.contains("\nzai_dash_storage_healthy 1\n"));
    assert!(!firing_storage(&app.json("/api/alerts").await));
    let page = reqwest::get(app.url("/alerts")).await.unwrap().text().await.unwrap();
    assert!(!page.contains(BANNER));
    app.stop().await;
}

/// A writer holding batches notices that the disk has room again by itself: the backlog is
/// retried on a timer, so health returns to ok although no new batch arrives (every target
/// down, say).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_batches_are_written_and_health_recovers_without_new_batches() {
    use zai_dash::point::TargetRow;
    use zai_dash::store::write::{self, WriteBatch, WriterStats};
    let _one_writer = ONE_WRITER.lock().await;
    let disk = SmallDisk::mount("2m");
    let store = zai_dash::store::Store::open(&disk.dir.join("w.db")).unwrap();
    let pair = vec![("http://a/metrics".to_owned(), "production".to_owned())];
    let id = zai_dash::store::query::register_targets(&store.conn().unwrap(), &pair, 0).unwrap()[0].id;
    let health = zai_dash::health::HealthBoard::default();
    let stats = Arc::new(WriterStats::default());
    let (queue, rx) = write::channel(8, stats.clone(), &store);
    let reporting = write::Reporting { health: health.clone(), clock: Arc::new(zai_dash::clock::SystemClock) };
    let hub = zai_dash::hub::Hub::new(1, 8, 8);
    let writer = tokio::spawn(write::run_writer(store.clone(), rx, hub, stats.clone(), reporting, 60_000));
    let batch = |ts_ms: i64| {
        let row =
            TargetRow { target_id: id, variant: "production".into(), ts_ms, present_ms: 5_000, ..Default::default() };
        WriteBatch {
            bucket_end_ms: ts_ms,
            rows: vec![row],
            states: vec![],
            points: vec![],
            events: vec![],
            late: false,
        }
    };
    let filler = disk.fill();
    queue.submit(batch(5_000));
    queue.submit(batch(10_000));
    wait_for("the failure on the board", Duration::from_secs(30), || async {
        health.storage().is_some_and(|f| f.batches_held == 2 && f.last_error == DISK_FULL)
    })
    .await;
    std::fs::remove_file(filler).unwrap();
    wait_for("health back without a new batch", Duration::from_secs(30), || async { health.storage().is_none() }).await;
    assert_eq!(stored_buckets(&disk.dir.join("w.db")), [5_000, 10_000]);
    drop(queue);
    writer.await.unwrap();
}
