//! The dashboard's listener has header-read and idle timeouts (issue 11) and still keeps a
//! live-event stream open however long it is quiet.

mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zai_dash::net::ListenerLimits;

/// Reads until the server closes the connection; how long that took (at most 30 s).
///
/// The timeouts are the behaviour under test, so their checks are on time: never before the
/// setting (load can only make a close later), and well before 30 s (a connection that is
/// never cut reaches that), which leaves a loaded machine plenty of room.
async fn closed_after(tcp: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = vec![0u8; 8192];
    let _ =
        tokio::time::timeout(Duration::from_secs(30), async { while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {} })
            .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_connections_time_out_but_live_streams_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&dir, vec![]);
    settings.listener = ListenerLimits { header_read: Duration::from_millis(400), idle: Duration::from_millis(600) };
    let app = common::TestApp::start(settings).await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    let events = reqwest::get(app.url("/api/events")).await.unwrap();
    assert_eq!(events.status(), 200);
    let mut events = events.bytes_stream();
    events.next().await.unwrap().unwrap();

    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let took = closed_after(&mut slow).await;
    assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(20), "unfinished head cut after {took:?}");

    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let took = closed_after(&mut idle).await;
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(20), "idle close after {took:?}");

    // A connection that sends nothing is idle, not a slow head: HTTP clients keep connections
    // they opened ahead of need, and must not have them dropped under a request (a reset).
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let took = closed_after(&mut silent).await;
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(20), "silent close after {took:?}");

    // Each close is counted where an operator (or a client that saw a reset) can read it.
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    for (reason, closes) in [("header_timeout", 1), ("idle_timeout", 2)] {
        let line = format!("zai_dash_http_connections_closed_total{{reason=\"{reason}\"}} {closes}\n");
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }

    // Well past both timeouts, the event stream is still open.
    let next = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
    assert!(!matches!(next, Ok(None) | Ok(Some(Err(_)))), "the live-event stream was cut");
    drop(events);
    app.stop().await;
}
