//! The built-in proxy over real loopback HTTP against a mock upstream.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zai_dash::clock::SystemClock;
use zai_dash::proxy::{self, Proxy, ProxyArgs};
use zai_dash::scrape::parse::{MetricType, parse};

/// What the mock upstream answers next.
#[derive(Clone)]
enum Reply {
    Json(u16, String),
    /// SSE chunks, each after its delay.
    Sse(Vec<(u64, &'static str)>),
    /// An event every 50 ms forever; sets the flag when the proxy drops the stream.
    Endless(Arc<AtomicBool>),
    /// SSE: the first chunks at once, the rest once the test opens the gate.
    Gated(Vec<&'static str>, Arc<tokio::sync::Notify>, Vec<&'static str>),
    /// A 200 answered once the test opens the gate.
    Held(Arc<tokio::sync::Notify>),
}

#[derive(Default)]
struct Mock {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<(String, HeaderMap, Bytes)>>,
}

struct Flag(Arc<AtomicBool>);
impl Drop for Flag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn mock_answer(State(m): State<Arc<Mock>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap();
    m.seen.lock().unwrap().push((path, headers, body));
    let reply = m.replies.lock().unwrap().pop_front().unwrap_or(Reply::Json(200, r#"{"ok":true}"#.into()));
    match reply {
        Reply::Json(status, body) => {
            (StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], body).into_response()
        }
        Reply::Held(gate) => {
            gate.notified().await;
            ([("content-type", "application/json")], r#"{"ok":true}"#).into_response()
        }
        Reply::Gated(first, gate, rest) => {
            let head =
                futures_util::stream::iter(first).map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes())));
            let tail = futures_util::stream::once(async move {
                gate.notified().await;
                futures_util::stream::iter(rest).map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes())))
            })
            .flatten();
            ([("content-type", "text/event-stream")], Body::from_stream(head.chain(tail))).into_response()
        }
        Reply::Sse(chunks) => {
            let s = futures_util::stream::iter(chunks).then(|(delay, c)| async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes()))
            });
            ([("content-type", "text/event-stream")], Body::from_stream(s)).into_response()
        }
        Reply::Endless(flag) => {
            let guard = Flag(flag);
            let s = futures_util::stream::unfold(guard, |g| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"data: {\"type\":\"ping\"}\n\n")), g))
            });
            ([("content-type", "text/event-stream")], Body::from_stream(s)).into_response()
        }
    }
}

async fn serve(router: Router) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        async move { axum::serve(l, router.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap() },
    );
    addr
}

struct Setup {
    mock: Arc<Mock>,
    proxy: Arc<Proxy>,
    base: String,
    _stop: CancellationToken,
}

async fn setup(tune: impl FnOnce(&mut ProxyArgs)) -> Setup {
    let mock = Arc::new(Mock::default());
    let up = serve(Router::new().fallback(mock_answer).with_state(mock.clone())).await;
    let mut args = ProxyArgs::for_tests(&format!("http://{up}"));
    args.zai_api_key = "server-key".into();
    args.retry_base_delay = "100ms".into();
    args.rate_limit_initial = "1000".into();
    args.rate_limit_max = "1000".into();
    tune(&mut args);
    let proxy = Proxy::new(args.validate().unwrap(), Arc::new(SystemClock)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(proxy::serve(listener, proxy.clone(), stop.clone()));
    Setup { mock, proxy, base, _stop: stop }
}

impl Setup {
    fn push(&self, r: Reply) {
        self.mock.replies.lock().unwrap().push_back(r);
    }

    async fn post(&self, path: &str, body: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("authorization", "Bearer client-secret")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    fn upstream_calls(&self) -> usize {
        self.mock.seen.lock().unwrap().len()
    }

    fn metric(&self, v: &zai_dash::proxy::metrics::Vector, labels: &[&str]) -> f64 {
        v.get(labels)
    }
}

const STREAM_REQ: &str = r#"{"model":"glm-4.7","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const EVENT_1: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1,\"cache_read_input_tokens\":300,\"cache_creation_input_tokens\":40}}}\n\n";
const EVENT_2: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n";
const EVENT_3: &str = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pass_through_byte_exact_and_unbuffered() {
    let s = setup(|_| {}).await;
    // The upstream holds its last event back until the client has the first: a proxy that
    // buffered the answer would never pass the first one on (the timeout below).
    let gate = Arc::new(tokio::sync::Notify::new());
    s.push(Reply::Gated(vec![EVENT_1, EVENT_2], gate.clone(), vec![EVENT_3]));
    let resp = s.post("/api/anthropic/v1/messages", STREAM_REQ).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(30), body.next())
        .await
        .expect("the first event never came while the upstream held the rest back: buffered")
        .unwrap()
        .unwrap();
    assert!(std::str::from_utf8(&first).unwrap().starts_with("event: message_start"));
    gate.notify_one();
    let mut all = first.to_vec();
    while let Some(chunk) = body.next().await {
        all.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(all).unwrap(), format!("{EVENT_1}{EVENT_2}{EVENT_3}"), "byte-exact");
    let m = &s.proxy.metrics;
    let tier = zai_dash::proxy::pricing::tier(chrono::Utc::now().timestamp_millis());
    assert_eq!(s.metric(&m.tokens, &["input", "glm-4.7", tier, "production"]), 12.0);
    assert_eq!(s.metric(&m.tokens, &["output", "glm-4.7", tier, "production"]), 9.0);
    assert_eq!(s.metric(&m.tokens, &["cache_read", "glm-4.7", tier, "production"]), 300.0);
    assert_eq!(s.metric(&m.tokens, &["cache_write", "glm-4.7", tier, "production"]), 40.0);
    assert_eq!(m.time_to_first_token.count(&["glm-4.7", "production"]), 1);
    assert_eq!(m.time_per_output_token.count(&["glm-4.7", "production"]), 1);
    assert_eq!(s.metric(&m.requests, &["POST", "/api/anthropic/v1/messages", "200", "production"]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_of_both_apis_is_recorded_with_cache_tokens_and_cost() {
    let s = setup(|_| {}).await;
    s.push(Reply::Json(200, r#"{"type":"message","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":100,"output_tokens":50,"cache_read_input_tokens":1000,"cache_creation_input_tokens":10}}"#.into()));
    s.push(Reply::Sse(vec![
        (0, "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"),
        (0, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":70,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":20}}}\n\ndata: [DONE]\n\n"),
    ]));
    let a = s.post("/v1/messages", r#"{"model":"glm-4.5-air","messages":[]}"#).await;
    assert_eq!(a.status(), 200);
    assert!(a.text().await.unwrap().contains("\"usage\""), "the body is forwarded unchanged");
    let o = s
        .post(
            "/v1/chat/completions",
            r#"{"model":"glm-4.7","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
        )
        .await;
    o.bytes().await.unwrap();
    let m = &s.proxy.metrics;
    let tier = zai_dash::proxy::pricing::tier(chrono::Utc::now().timestamp_millis());
    // The stream's usage is recorded when the proxy sees it end, just after the client did.
    common::wait_for("the stream's usage recorded", Duration::from_secs(30), || async {
        s.metric(&m.tokens, &["output", "glm-4.7", tier, "production"]) > 0.0
    })
    .await;
    let tok = |d: &str, model: &str| s.metric(&m.tokens, &[d, model, tier, "production"]);
    assert_eq!((tok("input", "glm-4.5-air"), tok("output", "glm-4.5-air")), (100.0, 50.0));
    assert_eq!((tok("cache_read", "glm-4.5-air"), tok("cache_write", "glm-4.5-air")), (1000.0, 10.0));
    assert_eq!((tok("input", "glm-4.7"), tok("output", "glm-4.7"), tok("cache_read", "glm-4.7")), (50.0, 5.0, 20.0));
    let factor = if tier == "peak" { 2.0 } else { 1.0 };
    let cost = s.metric(&m.estimated_cost_usd, &["output", "glm-4.5-air", tier, "production"]);
    assert!((cost - 50.0 / 1000.0 * 0.0022 * factor).abs() < 1e-12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_are_retried_with_backoff_and_quota_is_not() {
    let s = setup(|_| {}).await;
    let throttle = r#"{"error":{"code":"1305","message":"slow down"}}"#;
    s.push(Reply::Json(429, throttle.into()));
    s.push(Reply::Json(429, throttle.into()));
    s.push(Reply::Json(200, r#"{"usage":{"input_tokens":1,"output_tokens":1}}"#.into()));
    let started = Instant::now();
    let r = s.post("/v1/messages", "{}").await;
    assert_eq!(r.status(), 200);
    // A lower bound only (the backoff is a wait of at least 300 ms); load can only lengthen it.
    assert!(started.elapsed() >= Duration::from_millis(300), "backoff 100 ms then 200 ms");
    assert_eq!(s.upstream_calls(), 3);
    let m = &s.proxy.metrics;
    assert_eq!(s.metric(&m.retry_attempts, &["429", "production"]), 2.0);
    assert_eq!(s.metric(&m.retry_attempts, &["retry", "production"]), 2.0);
    assert_eq!(s.metric(&m.upstream_errors, &["429", "production"]), 2.0);
    // A quota 429 is returned at once, classified.
    s.push(Reply::Json(429, r#"{"error":{"code":"1308","message":"quota exhausted"}}"#.into()));
    let r = s.post("/v1/messages", "{}").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-zai-error-class"], "quota");
    assert_eq!(r.headers()["x-zai-error-code"], "1308");
    assert_eq!(s.upstream_calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_empty_answers_are_retried_then_reported_as_502() {
    let s = setup(|a| a.max_retries = "1".into()).await;
    s.push(Reply::Json(200, String::new()));
    s.push(Reply::Json(200, r#"{"usage":{"input_tokens":3,"output_tokens":4}}"#.into()));
    assert_eq!(s.post("/v1/messages", "{}").await.status(), 200);
    assert_eq!(s.metric(&s.proxy.metrics.retry_attempts, &["truncated_response", "production"]), 1.0);
    s.push(Reply::Sse(vec![]));
    s.push(Reply::Sse(vec![]));
    let r = s.post("/v1/messages", STREAM_REQ).await;
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert!(body["error"]["message"].as_str().unwrap().contains("empty stream"));
    assert_eq!(s.metric(&s.proxy.metrics.upstream_errors, &["empty_streaming", "production"]), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_gives_a_clear_502_in_the_api_envelope() {
    let dead = common::dead_url().await.replace("/metrics", "");
    let s = setup(|a| {
        a.zai_target_url = dead;
        a.max_retries = "2".into();
    })
    .await;
    let r = s.post("/v1/chat/completions", "{}").await;
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().starts_with("upstream unreachable"), "{body}");
    assert_eq!(body["error"]["code"], 502);
    let m = &s.proxy.metrics;
    assert_eq!(s.metric(&m.upstream_errors, &["upstream_connection", "production"]), 3.0);
    assert_eq!(s.metric(&m.retry_attempts, &["network_error", "production"]), 2.0);
    assert_eq!(s.metric(&m.requests, &["POST", "/v1/chat/completions", "502", "production"]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_max_workers_get_an_immediate_503() {
    let s = setup(|a| a.max_workers = "1".into()).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    s.push(Reply::Held(gate.clone()));
    let base = s.base.clone();
    let first = tokio::spawn(async move {
        reqwest::Client::new().post(format!("{base}/v1/messages")).body("{}").send().await.unwrap().status()
    });
    common::wait_for("the first request holding the worker", Duration::from_secs(30), || async {
        s.proxy.in_flight() == 1
    })
    .await;
    // The first request is held upstream until the gate opens: a second one that waited for
    // the worker would wait for ever; it is answered 503 while the first still holds it.
    let r = s.post("/v1/messages", "{}").await;
    assert_eq!(r.status(), 503);
    assert!(!first.is_finished(), "rejected while the worker was busy, not after");
    gate.notify_one();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(first.await.unwrap(), 200);
    let m = &s.proxy.metrics;
    assert_eq!(s.metric(&m.rate_limit_rejections, &["source-30", "production"]), 1.0);
    assert_eq!(s.metric(&m.requests, &["POST", "/v1/messages", "503", "production"]), 1.0);
    assert_eq!(s.metric(&m.concurrent_requests, &["production"]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_holds_its_worker_until_the_stream_ends() {
    let s = setup(|a| a.max_workers = "1".into()).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    s.push(Reply::Gated(vec![EVENT_1], gate.clone(), vec![EVENT_2, EVENT_3]));
    let resp = s.post("/v1/messages", STREAM_REQ).await;
    assert_eq!(resp.status(), 200, "headers sent, the stream still running");
    assert_eq!(s.proxy.in_flight(), 1);
    assert_eq!(s.post("/v1/messages", "{}").await.status(), 503, "the one worker is busy streaming");
    gate.notify_one();
    resp.bytes().await.unwrap();
    common::wait_for("the worker freed", Duration::from_secs(30), || async { s.proxy.in_flight() == 0 }).await;
    assert_eq!(s.post("/v1/messages", "{}").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_cancels_the_upstream_request() {
    let s = setup(|_| {}).await;
    let dropped = Arc::new(AtomicBool::new(false));
    s.push(Reply::Endless(dropped.clone()));
    let resp = s.post("/v1/messages", STREAM_REQ).await;
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    common::wait_for("the upstream stream to be dropped", Duration::from_secs(30), || {
        let d = dropped.clone();
        async move { d.load(Ordering::SeqCst) }
    })
    .await;
    assert_eq!(s.metric(&s.proxy.metrics.upstream_errors, &["write_error", "production"]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_without_reaching_the_upstream() {
    let s = setup(|a| a.max_request_body_bytes = "1024".into()).await;
    let r = s.post("/v1/messages", &"x".repeat(4096)).await;
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("MAX_REQUEST_BODY_BYTES"));
    assert_eq!(s.upstream_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_never_reach_the_upstream() {
    let s = setup(|_| {}).await;
    let client = reqwest::Client::new();
    client
        .post(format!("{}/v1/messages?beta=1", s.base))
        .header("x-api-key", "client-key")
        .header("authorization", "Bearer client-secret")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("anthropic-version", "2023-06-01")
        .body("{}")
        .send()
        .await
        .unwrap();
    s.post("/v1/chat/completions", "{}").await;
    let seen = s.mock.seen.lock().unwrap();
    let (path, h, _) = &seen[0];
    assert_eq!(path, "/v1/messages");
    assert_eq!(h["x-api-key"], "server-key");
    assert!(h.get("authorization").is_none());
    assert!(h.get("x-hop").is_none(), "headers named in Connection are hop-by-hop");
    assert_eq!(h["anthropic-version"], "2023-06-01");
    let (_, h, _) = &seen[1];
    assert_eq!(h["authorization"], "Bearer server-key");
    assert!(h.get("x-api-key").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_matches_zai_proxys_and_passes_promtool() {
    let s = setup(|_| {}).await;
    s.push(Reply::Sse(vec![(0, EVENT_1), (20, EVENT_2), (20, EVENT_3)]));
    s.post("/v1/messages", STREAM_REQ).await.bytes().await.unwrap();
    s.push(Reply::Json(500, r#"{"error":"boom"}"#.into()));
    s.post("/v1/messages", "{}").await.bytes().await.unwrap();
    let resp = reqwest::get(format!("{}/metrics", s.base)).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = resp.text().await.unwrap();
    let expo = parse(&text).expect("strictly parseable");
    let expect = [
        ("zai_proxy_build_info", MetricType::Gauge, vec!["build_time", "commit", "variant", "version"]),
        ("zai_proxy_requests_total", MetricType::Counter, vec!["method", "path", "status_code", "variant"]),
        (
            "zai_proxy_request_duration_seconds",
            MetricType::Histogram,
            vec!["method", "path", "status_code", "variant", "le"],
        ),
        ("zai_proxy_tokens_total", MetricType::Counter, vec!["direction", "model", "pricing_tier", "variant"]),
        (
            "zai_proxy_estimated_cost_usd_total",
            MetricType::Counter,
            vec!["direction", "model", "pricing_tier", "variant"],
        ),
        ("zai_proxy_upstream_errors_total", MetricType::Counter, vec!["error_type", "variant"]),
        ("zai_proxy_max_workers", MetricType::Gauge, vec!["variant"]),
        ("zai_proxy_rate_limit_requests_per_second", MetricType::Gauge, vec!["variant"]),
        ("zai_proxy_rate_limit_wait_seconds", MetricType::Histogram, vec!["client", "variant", "le"]),
        ("zai_proxy_time_to_first_token_seconds", MetricType::Histogram, vec!["model", "variant", "le"]),
        ("zai_proxy_concurrent_requests", MetricType::Gauge, vec!["variant"]),
    ];
    for (name, kind, labels) in expect {
        let f = expo.family(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(f.kind, kind, "{name}");
        let first = &f.samples[0];
        let names: Vec<&str> = first.labels.iter().map(|(n, _)| n).collect();
        assert_eq!(names, labels, "{name}");
    }
    let bounds: Vec<String> = expo
        .family("zai_proxy_request_duration_seconds")
        .unwrap()
        .samples
        .iter()
        .filter_map(|s| s.label("le").map(str::to_owned))
        .take(16)
        .collect();
    assert_eq!(bounds.join(" "), "0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 60 120 300 +Inf");
    assert!(text.contains("le=\"1e+06\""), "size buckets in Go %g form");
    assert!(text.contains("zai_proxy_upstream_errors_total{error_type=\"500\",variant=\"production\"} 1"));
    let names: Vec<&str> = expo.families.iter().map(|f| f.name).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "families in name order, like client_golang");
    promtool_check(&text);
}

/// `promtool check metrics` must accept the exposition. Skipped only outside CI when the Debian
/// `prometheus` package is not installed (`scripts/test` installs it).
fn promtool_check(text: &str) {
    let mut cmd = std::process::Command::new("promtool");
    let out = match common::process::run(cmd.args(["check", "metrics"]), Some(text.as_bytes()), Duration::from_secs(60))
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(std::env::var_os("CI").is_none(), "promtool is missing in CI");
            eprintln!("SKIPPED promtool check: promtool is not installed (scripts/test installs it)");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_scrapes_this_proxy_end_to_end() {
    let s = setup(|a| a.deployment_variant = "canary".into()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = common::TestApp::start(common::settings(&dir, common::targets(&[format!("{}/metrics", s.base)]))).await;
    let done = Arc::new(AtomicBool::new(false));
    let (base, stop) = (s.base.clone(), done.clone());
    let traffic = tokio::spawn(async move {
        let c = reqwest::Client::new();
        while !stop.load(Ordering::SeqCst) {
            let body = r#"{"model":"glm-4.7","messages":[{"role":"user","content":"hello there"}]}"#;
            let _ = c.post(format!("{base}/v1/messages")).body(body).send().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    common::wait_for("canary traffic in the API", Duration::from_secs(30), || async {
        common::points(&app, "range=5m&variant=canary")
            .await
            .iter()
            .any(|p| p["req_rate"].as_f64().unwrap_or(0.0) > 0.0)
    })
    .await;
    done.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    let status = app.json("/api/status").await;
    assert_eq!(status["canary"]["healthy"], true, "variant from the proxy's own label");
    assert_eq!(status["canary"]["version"], zai_dash::VERSION);
    app.stop().await;
}
