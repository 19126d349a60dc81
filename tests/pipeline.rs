//! End-to-end: real zai-dash on port 0, real SQLite file, real HTTP targets on loopback.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::Value;

fn f(p: &Value, k: &str) -> f64 {
    p[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {p}"))
}

/// Points of `variant` that carry traffic from `pods` pods (skips baselines).
async fn traffic_points(app: &TestApp, variant: &str, pods: u64) -> Vec<Value> {
    points(app, &format!("range=5m&variant={variant}"))
        .await
        .into_iter()
        .filter(|p| p["pods"].as_u64() == Some(pods) && f(p, "requests") > 0.0)
        .collect()
}

fn mean(vs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = vs.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_p95_differs_from_lifetime_p95() {
    let mut sim = Sim::new("production", 20.0);
    sim.history_ok = 100_000.0; // a long, fast history...
    sim.history_latency_s = 0.02;
    sim.latency_s = 4.0; // ...and now every request is slow
    let target = FakeTarget::start(sim, Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&target.url]))).await;
    wait_for("a point with latency", Duration::from_secs(30), || async {
        traffic_points(&app, "production", 1).await.len() >= 2
    })
    .await;
    let pts = traffic_points(&app, "production", 1).await;
    let windowed = f(pts.last().unwrap(), "latency_p95");
    let lifetime_ms = target.sim.lock().unwrap().lifetime_p95() * 1000.0;
    assert!(windowed > 2500.0 && windowed <= 5000.0, "windowed p95 {windowed} ms should sit in the slow bucket");
    assert!(lifetime_ms < 100.0, "lifetime p95 {lifetime_ms} ms is dominated by history");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_one_variant_add_up_and_variants_stay_apart() {
    let a = FakeTarget::start(Sim::new("production", 40.0), Behaviour::Healthy).await;
    let b = FakeTarget::start(Sim::new("production", 60.0), Behaviour::Healthy).await;
    let c = FakeTarget::start(Sim::new("canary", 10.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&a.url, &b.url, &c.url]))).await;
    wait_for("points with both production pods", Duration::from_secs(30), || async {
        traffic_points(&app, "production", 2).await.len() >= 6 && traffic_points(&app, "canary", 1).await.len() >= 6
    })
    .await;
    let prod = traffic_points(&app, "production", 2).await;
    let rate = mean(prod.iter().rev().take(6).map(|p| f(p, "req_rate")));
    assert!((80.0..120.0).contains(&rate), "production rate {rate}, expected about 40 + 60");
    let canary = traffic_points(&app, "canary", 1).await;
    let crate_ = mean(canary.iter().rev().take(6).map(|p| f(p, "req_rate")));
    assert!((6.0..14.0).contains(&crate_), "canary rate {crate_}, expected about 10");
    let last = prod.last().unwrap();
    assert_eq!(f(last, "max_workers"), 20.0, "gauges add up over pods");
    assert_eq!(f(last, "worker_utilization"), 0.3);
    assert!((f(last, "token_rate_in") / f(last, "req_rate") - 100.0).abs() < 1e-6);
    let status = app.json("/api/status").await;
    assert_eq!(status["production"]["healthy"], true);
    assert_eq!(status["production"]["targets"].as_array().unwrap().len(), 2);
    assert_eq!(status["canary"]["version"], "1.11.1");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_reset_gives_no_negative_or_spiking_rate() {
    let mut sim = Sim::new("production", 50.0);
    sim.history_ok = 1_000_000.0;
    let target = FakeTarget::start(sim, Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&target.url]))).await;
    wait_for("traffic", Duration::from_secs(30), || async { traffic_points(&app, "production", 1).await.len() >= 3 })
        .await;
    let before = traffic_points(&app, "production", 1).await.len();
    target.sim.lock().unwrap().restart();
    wait_for("traffic after the restart", Duration::from_secs(30), || async {
        traffic_points(&app, "production", 1).await.len() >= before + 4
    })
    .await;
    let all = points(&app, "range=5m&variant=production").await;
    let mut last_total = 0.0;
    for p in &all {
        let rate = f(p, "req_rate");
        assert!((0.0..=80.0).contains(&rate), "rate {rate} after a reset (true rate 50/s): {p}");
        let total = f(p, "requests_2xx");
        assert!(total >= last_total, "cumulative requests went down: {last_total} -> {total}");
        last_total = total;
    }
    assert!(last_total < 100_000.0, "the 1,000,000 history is a baseline, never an increase");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_slow_and_garbage_targets_are_unhealthy_while_others_flow() {
    let good = FakeTarget::start(Sim::new("production", 10.0), Behaviour::Healthy).await;
    let slow = FakeTarget::start(Sim::new("slow", 10.0), Behaviour::Slow(Duration::from_secs(2))).await;
    let garbage = FakeTarget::start(Sim::new("garbage", 10.0), Behaviour::Garbage).await;
    let dead = dead_url().await;
    let entries = [
        format!("production={}", good.url),
        format!("slow={}", slow.url),
        format!("garbage={}", garbage.url),
        format!("dead={dead}"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&entries))).await;
    wait_for("every bad target failing twice", Duration::from_secs(30), || async {
        let t = app.json("/api/targets").await;
        t.as_array().unwrap().iter().filter(|t| t["consecutive_failures"].as_u64().unwrap_or(0) >= 2).count() == 3
    })
    .await;
    let list = app.json("/api/targets").await;
    let by_variant = |v: &str| list.as_array().unwrap().iter().find(|t| t["variant"] == v).unwrap().clone();
    assert_eq!(by_variant("production")["up"], true);
    assert!(by_variant("slow")["last_error"].as_str().unwrap().contains("timed out"));
    assert!(by_variant("garbage")["last_error"].as_str().unwrap().contains("malformed exposition: line 1"));
    assert!(by_variant("dead")["last_error"].as_str().unwrap().contains("cannot connect"));
    // The good target goes on being scraped while the others fail (a scraper stuck behind a
    // slow target would stop); how fast is the scheduler's business, not this test's.
    let before = good.scrapes();
    wait_for("ten more scrapes of the good target", Duration::from_secs(30), || async {
        good.scrapes() >= before + 10
    })
    .await;
    let status = app.json("/api/status").await;
    assert_eq!(status["production"]["healthy"], true);
    for v in ["slow", "garbage", "dead"] {
        assert_eq!(status[v]["healthy"], false, "{v}");
    }
    assert!(!traffic_points(&app, "production", 1).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_without_a_spike() {
    let target = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&target.url]))).await;
    wait_for("traffic", Duration::from_secs(30), || async { traffic_points(&app, "production", 1).await.len() >= 3 })
        .await;
    let before = points(&app, "range=5m").await;
    app.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // traffic continues while zai-dash is down
    let app = TestApp::start(settings(&dir, targets(&[&target.url]))).await;
    let first_ts = before.first().unwrap()["timestamp"].as_i64().unwrap();
    let last_ts = before.last().unwrap()["timestamp"].as_i64().unwrap();
    wait_for("traffic after restart", Duration::from_secs(30), || async {
        traffic_points(&app, "production", 1).await.iter().any(|p| p["timestamp"].as_i64().unwrap() > last_ts + 1000)
    })
    .await;
    let after = points(&app, "range=5m").await;
    assert_eq!(after.first().unwrap()["timestamp"].as_i64().unwrap(), first_ts, "history kept");
    for p in after.iter().filter(|p| p["timestamp"].as_i64().unwrap() > last_ts) {
        let rate = f(p, "req_rate");
        assert!(rate <= 32.0, "no spike after the restart (true rate 20/s), got {rate}: {p}");
    }
    let total_before = f(before.last().unwrap(), "requests_2xx");
    let total_after = f(after.last().unwrap(), "requests_2xx");
    assert!(total_after >= total_before + 20.0, "requests made while zai-dash was down are counted");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_400_naming_the_parameter() {
    let target = FakeTarget::start(Sim::new("production", 1.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&target.url]))).await;
    for (query, name) in [
        ("range=yesterday", "range"),
        ("range=-5m", "range"),
        ("variant=Not%20Valid", "variant"),
        ("step=1s", "step"),
        ("max_points=0", "max_points"),
        ("start=tomorrow", "start"),
        ("end=x", "end"),
    ] {
        let resp = reqwest::get(app.url(&format!("/api/metrics?{query}"))).await.unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(name), "{query}: {body}");
    }
    let unknown = app.json("/api/metrics?variant=nosuchvariant").await;
    assert_eq!(unknown, serde_json::json!([]));
    assert_eq!(app.json("/healthz").await, serde_json::json!({"status": "ok"}));
    assert_eq!(get_status(&app.url("/readyz")).await, 200);
    let config = app.json("/api/config").await;
    assert_eq!(config["scrape_interval"], 0.2);
    assert_eq!(config["targets"][0], target.url.as_str());
    assert_eq!(config["retention_1m"], "7days");
    app.stop().await;
}

/// An SSE response being read event by event.
struct Events {
    stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Events {
    fn new(resp: reqwest::Response) -> Self {
        Self { stream: Box::pin(resp.bytes_stream()), buf: String::new() }
    }

    /// Reads `data:` events (with their ids) until `n` more have arrived.
    async fn read(&mut self, n: usize) -> Vec<(Option<u64>, Value)> {
        let mut out = Vec::new();
        while out.len() < n {
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.stream.next()).await.expect("event in time");
            self.buf.push_str(std::str::from_utf8(&chunk.unwrap().unwrap()).unwrap());
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
                    }
                }
                if let Some(d) = data {
                    out.push((id, d));
                }
            }
        }
        out
    }
}

/// Reads SSE `data:` events (with their ids) until `n` have arrived.
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<(Option<u64>, Value)> {
    Events::new(resp).read(n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_connected_then_metrics_that_match_rest() {
    // Several models (tokens and cost per model and direction), two variants, and a production
    // pod replaced mid-stream by one configured from the start but failing until then.
    let models = || vec![("glm-4.7".to_owned(), 0.6), ("glm-4.5-air".to_owned(), 0.3), ("glm-5".to_owned(), 0.1)];
    let sim = |variant: &str, rate: f64, errors: f64| {
        let mut s = Sim::new(variant, rate);
        s.models = models();
        s.err_rate = errors;
        s
    };
    let old = FakeTarget::start(sim("production", 30.0, 2.0), Behaviour::Healthy).await;
    let new = FakeTarget::start(sim("production", 45.0, 1.0), Behaviour::Down).await;
    let canary = FakeTarget::start(sim("canary", 10.0, 1.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&old.url, &new.url, &canary.url]))).await;
    wait_for("the canary pod's label read", Duration::from_secs(30), || async {
        app.json("/api/status").await["canary"]["healthy"] == true
    })
    .await;
    let resp = reqwest::get(app.url("/api/events")).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    let mut stream = Events::new(resp);
    let mut events = stream.read(7).await;
    assert_eq!(events[0].1["type"], "connected");
    assert_eq!(events[0].1["data"]["scrape_interval"], 0.2);
    assert_eq!(events[0].1["data"]["variants"], serde_json::json!(["canary", "production"]));
    // The replacement: the old pod stops answering, the new one starts.
    *old.behaviour.lock().unwrap() = Behaviour::Down;
    *new.behaviour.lock().unwrap() = Behaviour::Healthy;
    events.extend(stream.read(16).await);
    assert!(events.iter().all(|(id, _)| id.is_some()), "every event has an id");
    let metrics: Vec<_> = events[1..].iter().filter(|(_, e)| e["type"] == "metrics").collect();
    assert_eq!(metrics.len(), 22);
    let scraped = |t: &FakeTarget| t.scrapes();
    assert!(scraped(&new) > 0, "the replacement pod was scraped");
    let last_prod = metrics.iter().rev().find(|(_, e)| e["data"]["variant"] == "production").unwrap();
    assert!(f(&last_prod.1["data"], "token_rate_in") > 0.0, "the replacement pod's tokens flow: {}", last_prod.1);
    // REST serves the very same points, field for field: every live point of both variants,
    // before, across and after the replacement.
    let rest = points(&app, "range=5m").await;
    let mut differences = Vec::new();
    for (_, live) in &metrics {
        let live = &live["data"];
        let (ts, variant) = (live["timestamp"].as_i64(), &live["variant"]);
        let stored = rest
            .iter()
            .find(|p| p["timestamp"].as_i64() == ts && &p["variant"] == variant)
            .unwrap_or_else(|| panic!("point stored: {live}"));
        let fields: std::collections::BTreeSet<&String> =
            stored.as_object().unwrap().keys().chain(live.as_object().unwrap().keys()).collect();
        for k in fields.into_iter().filter(|k| stored.get(*k) != live.get(*k)) {
            differences.push(format!("{variant} @ {ts:?} {k}: stored {} vs live {}", stored[k], live[k]));
        }
    }
    assert!(differences.is_empty(), "live points differ from stored ones:\n{}", differences.join("\n"));
    // Resuming with Last-Event-ID replays what came after it.
    let id = metrics[2].0;
    let resumed = reqwest::Client::new()
        .get(app.url("/api/events"))
        .header("Last-Event-ID", id.unwrap().to_string())
        .send()
        .await
        .unwrap();
    let again = read_events(resumed, 2).await;
    assert_eq!(again[1].0, Some(id.unwrap() + 1));
    app.stop().await;
}

/// zai-dash's own count of live clients.
async fn sse_clients(app: &TestApp) -> Option<u64> {
    let text = reqwest::get(app.url("/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("zai_dash_sse_clients ")?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_client_that_stops_reading_is_cut_and_one_that_reads_is_not() {
    use tokio::io::AsyncWriteExt;
    let target = FakeTarget::start(Sim::new("production", 10.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = zai_dash::config::Settings {
        stalled_client_timeout: Duration::from_secs(1),
        ..settings(&dir, targets(&[&target.url]))
    };
    let app = TestApp::start(settings).await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    // Sends the request, then never reads: its small receive buffer fills within a few ticks.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    stalled.write_all(b"GET /api/events HTTP/1.1\r\nHost: zai-dash\r\n\r\n").await.unwrap();
    let mut reader = Events::new(reqwest::get(app.url("/api/events")).await.unwrap());
    let before = reader.read(2).await;
    assert_eq!(sse_clients(&app).await, Some(2));
    // Without a limit the kernel would keep buffering for it (up to megabytes) and it would
    // stay connected for good.
    wait_for("the stalled client to be cut", Duration::from_secs(30), || async { sse_clients(&app).await == Some(1) })
        .await;
    // The reader kept its stream: it gets the ticks after the cut, without a gap.
    let after = reader.read(3).await;
    let ids: Vec<u64> = before.iter().chain(&after).filter_map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    drop(stalled);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_page_shows_status_without_javascript() {
    let target = FakeTarget::start(Sim::new("canary", 5.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&target.url]))).await;
    wait_for("a healthy variant", Duration::from_secs(30), || async {
        app.json("/api/status").await["canary"]["healthy"] == true
    })
    .await;
    let resp = reqwest::get(app.url("/")).await.unwrap();
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("data-variant=\"canary\""));
    assert!(html.contains("healthy"));
    assert!(html.contains(&target.url));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_rule_guess_gives_way_to_the_targets_own_variant_label() {
    // The URL says canary (the Go rule), the target itself says test: only `test` exists.
    let target = FakeTarget::start(Sim::new("test", 30.0), Behaviour::Healthy).await;
    let prod = FakeTarget::start(Sim::new("production", 30.0), Behaviour::Healthy).await;
    let url = format!("{}?from=zai-proxy-canary", target.url);
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&url, &prod.url]))).await;
    wait_for("the target's first scrape", Duration::from_secs(30), || async {
        app.json("/api/targets").await.as_array().unwrap().iter().all(|t| t["up"] == true)
    })
    .await;
    let status = app.json("/api/status").await;
    let names: Vec<&String> = status.as_object().unwrap().keys().collect();
    assert_eq!(names, ["production", "test"], "no phantom canary");
    let config = app.json("/api/config").await;
    assert_eq!(config["variants"], serde_json::json!(["production", "test"]));
    let compare = app.json("/api/compare?window=5m").await;
    assert_eq!(compare["candidate"], "test", "the default candidate is the real one");
    let resp = reqwest::get(app.url("/api/events")).await.unwrap();
    let (_, connected) = read_events(resp, 1).await.remove(0);
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["variants"], serde_json::json!(["production", "test"]), "Go reads them at the top level");
    assert_eq!(connected["scrape_interval"], 1, "whole seconds for Go's client");
    assert_eq!(connected["data"]["scrape_interval"], 0.2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_change_is_an_event_on_the_stream_and_a_marker_on_the_charts() {
    let target = FakeTarget::start(Sim::new("production", 10.0), Behaviour::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&target.url]))).await;
    wait_for("a first scrape", Duration::from_secs(30), || async {
        app.json("/api/targets").await[0]["version"] == "1.11.1"
    })
    .await;
    let resp = reqwest::get(app.url("/api/events")).await.unwrap();
    target.sim.lock().unwrap().version = "1.12.0".into();
    let mut stream = read_events_until(resp, |e| e["type"] == "version").await;
    let event = stream.pop().unwrap();
    assert_eq!(event["data"]["kind"], "version");
    assert_eq!(event["data"]["detail"], "version 1.11.1 -> 1.12.0");
    assert_eq!(event["data"]["target"], target.url.as_str());
    assert_eq!(event["data"]["variant"], "production");
    wait_for("the marker on the overview", Duration::from_secs(30), || async {
        let page = reqwest::get(app.url("/?range=5m")).await.unwrap().text().await.unwrap();
        page.contains("class=\"mark version\"")
            && (page.contains("version 1.11.1 -&gt; 1.12.0") || page.contains("version 1.11.1 -&#62; 1.12.0"))
    })
    .await;
    app.stop().await;
}

/// Reads SSE events until one satisfies `done`; returns them all.
async fn read_events_until(resp: reqwest::Response, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next()).await.expect("event in time");
        buf.push_str(std::str::from_utf8(&chunk.unwrap().unwrap()).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("data:") {
                    let e: Value = serde_json::from_str(v.trim()).unwrap();
                    let finished = done(&e);
                    out.push(e);
                    if finished {
                        return out;
                    }
                }
            }
        }
    }
}
