//! The real binary: the `listening on` line, refusal of bad settings, a clean SIGTERM, and
//! the guard every real-binary test starts its processes through (`common::process`): a test
//! that panics leaves nothing running.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{self, ChildGuard};
use common::*;

/// Longest a command that must exit by itself may take.
const EXIT_LIMIT: Duration = Duration::from_secs(60);

fn zai_dash() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zai-dash"));
    for var in [
        "LISTEN_ADDR",
        "SCRAPE_TARGETS",
        "SCRAPE_INTERVAL",
        "SCRAPE_TIMEOUT",
        "DB_PATH",
        "RETENTION_5S",
        "RETENTION_1M",
        "DASHBOARD_TOKEN",
    ] {
        c.env_remove(var);
    }
    c
}

#[test]
fn version_comes_from_the_version_file() {
    let out = process::output(zai_dash().arg("--version"), EXIT_LIMIT);
    let expected = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/VERSION")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("zai-dash {}", expected.trim()));
}

#[test]
fn bad_settings_refuse_to_start_with_one_sentence_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "SCRAPE_TARGETS is empty"),
        (
            &[("SCRAPE_TARGETS", "http://a/metrics"), ("SCRAPE_INTERVAL", "fast")],
            "SCRAPE_INTERVAL has an invalid duration",
        ),
        (&[("SCRAPE_TARGETS", "http://a/metrics"), ("SCRAPE_TIMEOUT", "10s")], "SCRAPE_TIMEOUT (10s) must be shorter"),
        (&[("SCRAPE_TARGETS", "http://a/metrics"), ("LISTEN_ADDR", "nowhere")], "LISTEN_ADDR"),
    ];
    for (env, expected) in cases {
        let out = process::output(zai_dash().arg("serve").env("DB_PATH", &db).envs(env.iter().copied()), EXIT_LIMIT);
        assert_eq!(out.status.code(), Some(1), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_closes_streams_and_exits_cleanly() {
    let target = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/z.db");
    let (mut child, base) = serve(&target.url, &db);
    assert_eq!(get_status(&format!("{base}/healthz")).await, 200);
    wait_for("a stored row", Duration::from_secs(30), || async {
        get_json(&format!("{base}/api/metrics?range=5m")).await.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let sse = reqwest::get(format!("{base}/api/events")).await.unwrap();
    let stored_before: usize = get_json(&format!("{base}/api/metrics?range=5m")).await.as_array().unwrap().len();

    child.signal(libc::SIGTERM);
    // Readiness answers 503 for a drain before the listener closes: poll until it does, or
    // until the listener is gone (0: no answer), whichever comes first.
    let deadline = Instant::now() + Duration::from_secs(30);
    let readiness = loop {
        let status = get_status(&format!("{base}/readyz")).await;
        if status != 200 || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(readiness, 503, "readiness turned 503 before the listener closed");
    let body = tokio::time::timeout(Duration::from_secs(30), sse.text()).await.expect("the SSE stream ended");
    assert!(body.unwrap().contains("\"type\":\"connected\""));
    // Within SHUTDOWN_GRACE is the process's own verdict: past it, it exits non-zero. The
    // test only guards against a hang.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "the process did not exit in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    // Every committed row is still there for the next process.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM metrics_5s", [], |r| r.get(0)).unwrap();
    assert!(rows as usize >= stored_before, "rows {rows} >= points seen before shutdown {stored_before}");
}

/// A SIGTERM sent the moment `listening on` is printed (an orchestrator stopping a pod that has
/// just started) is a graceful shutdown, exit status 0: the handlers are installed before the
/// line is printed, not by a task that may not have run yet.
#[test]
fn sigterm_right_after_the_listening_line_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let mut child = process::spawn(
            zai_dash()
                .arg("serve")
                .env("LISTEN_ADDR", "127.0.0.1:0")
                .env("SCRAPE_TARGETS", "http://127.0.0.1:9/metrics")
                .env("DB_PATH", dir.path().join(format!("z{round}.db")))
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(child.take_stdout()).read_line(&mut line).unwrap();
        assert!(line.starts_with("listening on "), "{line}");
        child.signal(libc::SIGTERM);
        let status = child.wait();
        assert!(status.success(), "round {round}: {status:?} (killed by the signal instead of shutting down)");
    }
}

/// `zai-dash serve` scraping `target` every second into `db`; the guard and the base URL.
fn serve(target: &str, db: &std::path::Path) -> (ChildGuard, String) {
    let mut child = process::spawn(
        zai_dash()
            .arg("serve")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("SCRAPE_TARGETS", target)
            .env("SCRAPE_INTERVAL", "1s")
            .env("SCRAPE_TIMEOUT", "500ms")
            .env("DB_PATH", db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.take_stdout()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").expect("first stdout line").to_owned();
    (child, base)
}

/// The process' start time (field 22 of `/proc/PID/stat`) while it runs; `None` once it is
/// gone or a zombie.
fn alive_since(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    (fields.first() != Some(&"Z")).then(|| fields.get(19).map(|s| (*s).to_owned())).flatten()
}

/// A test that panics still kills every process it started, and what those started: the
/// guards kill whole process groups when they drop. (A zai-dash left over from a failed test
/// once scraped loopback ports that a later run's fake targets reused.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_panics_kills_every_process_it_started() {
    let target = FakeTarget::start(Sim::new("production", 5.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let (dash, base) = serve(&target.url, &dir.path().join("z.db"));
    let mut shell =
        process::spawn(Command::new("sh").args(["-c", "sleep 600 & echo $!; wait"]).stdout(Stdio::piped())).unwrap();
    let mut line = String::new();
    BufReader::new(shell.take_stdout()).read_line(&mut line).unwrap();
    let grandchild: u32 = line.trim().parse().expect("the background sleep's pid");
    let pids = [("zai-dash", dash.id()), ("sh", shell.id()), ("sh's own child", grandchild)];
    let started: Vec<Option<String>> = pids.iter().map(|(_, pid)| alive_since(*pid)).collect();
    assert!(started.iter().all(Option::is_some), "all three run: {pids:?}");
    assert_eq!(get_status(&format!("{base}/healthz")).await, 200);

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _running = (dash, shell);
        panic!("deliberate panic: the guards must clean up after it");
    }));
    assert!(outcome.is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    for ((name, pid), since) in pids.iter().zip(&started) {
        while alive_since(*pid).is_some_and(|s| Some(&s) == since.as_ref()) {
            assert!(Instant::now() < deadline, "{name} (pid {pid}) outlived the test that started it");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(get_status(&format!("{base}/healthz")).await, 0, "nothing listens any more");
}
