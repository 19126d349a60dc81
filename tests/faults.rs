//! Faults (issue 11's reliability suite): the process killed with SIGKILL while writing, the
//! disk full, the file system read-only, the wall clock stepping backwards. In each case: a
//! clear error, the live view keeps moving, nothing already written is lost, and the database
//! opens clean afterwards.
//!
//! The disk is a small tmpfs mounted by the test (`common::disk`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::disk::SmallDisk;
use common::process::{self, ChildGuard};
use common::*;
use zai_dash::clock::{Clock, ManualClock};

/// Longest a command that must exit by itself may take.
const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// The real binary (killed when the guard drops, also if the test panics) and its base URL.
fn start_binary(db: &Path, target: &str, log: Option<&Path>) -> (ChildGuard, String) {
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::null(),
    };
    let mut child = process::spawn(
        Command::new(env!("CARGO_BIN_EXE_zai-dash"))
            .arg("serve")
            .env_remove("DASHBOARD_TOKEN")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("DB_PATH", db)
            .env("SCRAPE_TARGETS", target)
            .env("SCRAPE_INTERVAL", "1s")
            .env("SCRAPE_TIMEOUT", "800ms")
            .env("RUST_LOG", "zai_dash=info")
            .stdout(Stdio::piped())
            .stderr(stderr),
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.take_stdout()).read_line(&mut line).unwrap();
    (child, line.trim().strip_prefix("listening on ").unwrap().to_owned())
}

/// Raw points (5 s rows) of the production variant in the database, by time.
fn stored_points(db: &Path) -> Vec<(i64, f64)> {
    let read = || -> rusqlite::Result<Vec<(i64, f64)>> {
        let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut s = c.prepare("SELECT ts, elapsed_ms FROM metrics_5s ORDER BY ts")?;
        s.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as f64)))?.collect()
    };
    read().unwrap_or_default() // before the schema exists: nothing stored yet
}

fn integrity(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_writing_loses_at_most_the_last_tick_and_opens_clean() {
    let target = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let (mut child, base) = start_binary(&db, &target.url, None);
    wait_for("three stored points with traffic", Duration::from_secs(30), || async {
        points_of(&base).await.iter().filter(|p| p["requests"].as_f64().unwrap_or(0.0) > 0.0).count() >= 3
    })
    .await;
    let served = points_of(&base).await;
    child.kill(); // SIGKILL: no flush, no clean close, the WAL as it is
    assert_eq!(integrity(&db), "ok", "the database opens clean after SIGKILL");
    let stored = stored_points(&db);
    let last_served = served.last().unwrap()["timestamp"].as_i64().unwrap();
    let last_stored = stored.last().unwrap().0;
    assert!(
        last_stored >= last_served - 5_000,
        "at most the last tick lost: served {last_served}, stored {last_stored}"
    );
    // A restart resumes from the stored state: the gap is one long interval, no spike.
    let (mut child, base) = start_binary(&db, &target.url, None);
    wait_for("a point after the restart", Duration::from_secs(30), || async {
        points_of(&base).await.iter().any(|p| {
            p["timestamp"].as_i64().unwrap() > last_stored + 5_000 && p["requests"].as_f64().unwrap_or(0.0) > 0.0
        })
    })
    .await;
    for p in points_of(&base).await {
        assert!(p["req_rate"].as_f64().unwrap() <= 30.0, "no spike after the restart (true 20/s): {p}");
    }
    child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_stored_scrape_state_costs_that_target_a_new_baseline_and_nothing_else() {
    let target = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let (mut child, base) = start_binary(&db, &target.url, None);
    wait_for("three stored points with traffic", Duration::from_secs(30), || async {
        points_of(&base).await.iter().filter(|p| p["requests"].as_f64().unwrap_or(0.0) > 0.0).count() >= 3
    })
    .await;
    child.kill();
    let before = stored_points(&db);
    let last_stored = before.last().unwrap().0;
    // The checkpointed state made unreadable: not the deflate stream it must be.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE targets SET state = X'DEADBEEF', state_ms = ?1", [last_stored])
        .unwrap();
    let log = dir.path().join("restart.log");
    let (mut child, base) = start_binary(&db, &target.url, Some(&log));
    let served = points_of(&base).await;
    assert!(
        served.iter().any(|p| p["timestamp"].as_i64() == Some(last_stored)),
        "the points stored before are still read: {served:?}"
    );
    wait_for("a point with traffic after the restart", Duration::from_secs(30), || async {
        points_of(&base).await.iter().any(|p| {
            p["timestamp"].as_i64().unwrap() > last_stored + 5_000 && p["requests"].as_f64().unwrap_or(0.0) > 0.0
        })
    })
    .await;
    for p in points_of(&base).await {
        assert!(p["req_rate"].as_f64().unwrap() <= 30.0, "a new baseline, no spike (true 20/s): {p}");
    }
    child.kill();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("Stored scrape state is unreadable"), "the loss is logged: {logged}");
}

async fn points_of(base: &str) -> Vec<serde_json::Value> {
    get_json(&format!("{base}/api/metrics?range=5m")).await.as_array().cloned().unwrap_or_default()
}

/// The live view keeps moving while writes fail, the failure is logged clearly, and once the
/// disk accepts writes again the held ticks are written: the 5 s table has no gap.
async fn writes_fail_then_recover(
    break_disk: impl FnOnce(&SmallDisk),
    mend_disk: impl FnOnce(&SmallDisk),
    expected_log: &str,
) {
    let target = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let disk = SmallDisk::mount("4m");
    let db = disk.dir.join("f.db");
    let log = tempfile::NamedTempFile::new().unwrap();
    let (mut child, base) = start_binary(&db, &target.url, Some(log.path()));
    wait_for("stored points", Duration::from_secs(30), || async { stored_points(&db).len() >= 2 }).await;
    let before = stored_points(&db);
    break_disk(&disk);
    let live_before = get_json(&format!("{base}/api/status")).await["production"]["last_scrape"].clone();
    wait_for("the write failure in the log", Duration::from_secs(30), || async {
        std::fs::read_to_string(log.path()).unwrap_or_default().contains("Database write failed")
    })
    .await;
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(text.contains(expected_log), "the error says why: {text}");
    // The live view keeps moving: new scrapes, new live points.
    wait_for("live status moving on", Duration::from_secs(30), || async {
        get_json(&format!("{base}/api/status")).await["production"]["last_scrape"] != live_before
    })
    .await;
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("zai_dash_write_failures_total ") && !l.ends_with(" 0")), "counted");
    // Deliberate: the disk stays broken for 6 s more, so that more ticks are held in memory.
    tokio::time::sleep(Duration::from_secs(6)).await;
    mend_disk(&disk);
    wait_for("recovery in the log", Duration::from_secs(30), || async {
        std::fs::read_to_string(log.path()).unwrap_or_default().contains("Database writes recovered")
    })
    .await;
    let after = stored_points(&db);
    for p in &before {
        assert!(after.contains(p), "a point written before the failure survives: {p:?}");
    }
    let stamps: Vec<i64> = after.iter().map(|p| p.0).collect();
    let gaps: Vec<_> = stamps.windows(2).filter(|w| w[1] - w[0] > 5_000).collect();
    assert!(gaps.is_empty(), "the held ticks were written, no gap: {gaps:?}");
    child.kill();
    assert_eq!(integrity(&db), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_ticks_in_memory_keeps_the_live_view_and_writes_them_once_space_returns() {
    let filler = std::sync::Mutex::new(None);
    writes_fail_then_recover(
        |d| *filler.lock().unwrap() = Some(d.fill()),
        |_| std::fs::remove_file(filler.lock().unwrap().take().unwrap()).unwrap(),
        "full",
    )
    .await;
}

/// A file system that turned read-only cannot be remounted so under a running process (the
/// kernel refuses while files are open for writing), so this is the restart onto it: a clear
/// sentence, exit status 1, and the rows already written intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_file_system_refuses_to_start_with_a_clear_error_and_keeps_the_data() {
    let target = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let disk = SmallDisk::mount("4m");
    let db = disk.dir.join("ro.db");
    let (mut child, _) = start_binary(&db, &target.url, None);
    wait_for("stored points", Duration::from_secs(30), || async { stored_points(&db).len() >= 2 }).await;
    child.kill();
    let before = stored_points(&db);
    disk.remount("ro");
    let out = process::output(
        Command::new(env!("CARGO_BIN_EXE_zai-dash"))
            .arg("serve")
            .env_remove("DASHBOARD_TOKEN")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("DB_PATH", &db)
            .env("SCRAPE_TARGETS", &target.url),
        EXIT_LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DB_PATH") && stderr.contains("not writable"), "{stderr}");
    assert_eq!(stored_points(&db), before, "nothing already written is lost");
    disk.remount("rw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_stepping_backwards_neither_breaks_numbers_nor_stops_the_app() {
    let target = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let clock = Arc::new(ManualClock::new(now));
    let app = TestApp::start_with_clock(settings(&dir, targets(&[&target.url])), clock.clone()).await;
    // The clock moves with real time, then an NTP step sets it 20 s back.
    let ticking = tokio::spawn({
        let clock = clock.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                clock.advance_ms(100);
            }
        }
    });
    wait_for("points with traffic", Duration::from_secs(30), || async {
        points(&app, "range=5m").await.iter().filter(|p| p["requests"].as_f64().unwrap_or(0.0) > 0.0).count() >= 3
    })
    .await;
    let before = clock.now_ms();
    clock.advance_ms(-20_000);
    // Deliberate: the app runs for 3 s with its clock behind where it was.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(app.json("/healthz").await["status"], "ok");
    let status = app.json("/api/status").await;
    assert!(status["production"]["req_rate"].as_f64().unwrap().is_finite());
    // Once the clock passes where it was, points flow again, and no number went wrong.
    clock.advance_ms(before - clock.now_ms() + 2_000);
    wait_for("points after the step", Duration::from_secs(30), || async {
        points(&app, "range=5m").await.iter().any(|p| p["timestamp"].as_i64().unwrap() > before + 1_000)
    })
    .await;
    let pts = points(&app, "range=5m").await;
    for p in &pts {
        let rate = p["req_rate"].as_f64().unwrap();
        assert!((0.0..=30.0).contains(&rate), "no negative rate or spike (true 20/s): {p}");
    }
    let totals: Vec<f64> = pts.iter().map(|p| p["requests_2xx"].as_f64().unwrap()).collect();
    assert!(totals.windows(2).all(|w| w[1] >= w[0]), "totals never step down: {totals:?}");
    ticking.abort();
    app.stop().await;
}
