//! The built-in proxy under hostile clients (issue 11): label floods, huge bodies, slow
//! clients, dot segments, credentials, cross-site posts, cut 429 bodies, absurd usage numbers.
//!
//! Tests that need settings talk to the real binary (`zai-dash proxy` as a child process, set
//! up through its environment), the others to an in-process proxy; all over loopback against a
//! small axum upstream that records what reached it.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::process::{self, ChildGuard};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use zai_dash::clock::SystemClock;
use zai_dash::proxy::{self, Proxy, ProxyArgs};

/// What the upstream answers next; by default `{"ok":true}`.
#[derive(Clone)]
enum Reply {
    Json(u16, String),
    /// SSE chunks, each after its delay (ms).
    Sse(Vec<(u64, &'static str)>),
}

#[derive(Default)]
struct Upstream {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<(String, HeaderMap, usize)>>,
}

async fn answer(State(u): State<Arc<Upstream>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap();
    u.seen.lock().unwrap().push((path, headers, body.len()));
    match u.replies.lock().unwrap().pop_front().unwrap_or(Reply::Json(200, r#"{"ok":true}"#.into())) {
        Reply::Json(status, body) => {
            (StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], body).into_response()
        }
        Reply::Sse(chunks) => {
            let s = futures_util::stream::iter(chunks).then(|(delay, c)| async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes()))
            });
            ([("content-type", "text/event-stream")], Body::from_stream(s)).into_response()
        }
    }
}

async fn upstream() -> (Arc<Upstream>, String) {
    let up = Arc::new(Upstream::default());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let router = Router::new().fallback(answer).with_state(up.clone());
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    (up, url)
}

impl Upstream {
    fn push(&self, r: Reply) {
        self.replies.lock().unwrap().push_back(r);
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// An in-process proxy in front of a fresh upstream.
struct InProcess {
    up: Arc<Upstream>,
    base: String,
    addr: SocketAddr,
    _stop: CancellationToken,
}

async fn in_process(target_suffix: &str, tune: impl FnOnce(&mut ProxyArgs)) -> InProcess {
    let (up, url) = upstream().await;
    let mut args = ProxyArgs::for_tests(&format!("{url}{target_suffix}"));
    args.zai_api_key = "server-key".into();
    args.retry_base_delay = "50ms".into();
    args.rate_limit_initial = "1000".into();
    args.rate_limit_max = "1000".into();
    tune(&mut args);
    let proxy = Proxy::new(args.validate().unwrap(), Arc::new(SystemClock)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(proxy::serve(listener, proxy, stop.clone()));
    InProcess { up, base: format!("http://{addr}"), addr, _stop: stop }
}

/// The real binary as `zai-dash proxy`, killed (with its process group) when dropped.
struct Binary {
    child: ChildGuard,
    base: String,
    addr: SocketAddr,
}

impl Binary {
    fn start(upstream: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zai-dash"));
        cmd.arg("proxy").env("RUST_LOG", "warn");
        for (k, v) in [
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("ZAI_API_KEY", "server-key"),
            ("ZAI_TARGET_URL", upstream),
            ("MAX_RETRIES", "0"),
            ("RATE_LIMIT_INITIAL", "1000"),
            ("RATE_LIMIT_MAX", "1000"),
            ("RATE_LIMIT_STATE_FILE", ""),
        ]
        .iter()
        .chain(env)
        {
            cmd.env(k, v);
        }
        let mut child = process::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::inherit())).unwrap();
        let mut out = BufReader::new(child.take_stdout());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr: SocketAddr = line.trim().strip_prefix("listening on http://").unwrap().parse().unwrap();
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Self { child, base: format!("http://{addr}"), addr }
    }

    /// Peak resident memory so far (kB).
    fn vm_hwm_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap()
}

/// The value of `zai_dash_proxy_limit_trips_total{limit}` (0 when absent).
fn trips(text: &str, limit: &str) -> f64 {
    let prefix = format!("zai_dash_proxy_limit_trips_total{{limit=\"{limit}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0.0, |v| v.parse().unwrap())
}

/// Sends raw bytes on a new connection and reads until the server closes it (or 30 s pass).
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_floods_keep_the_exposition_small_and_bounded() {
    let s = in_process("", |_| {}).await;
    let c = reqwest::Client::new();
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("M{i:03}X").as_bytes()).unwrap();
        c.request(method, format!("{}/v1/messages", s.base)).body("{}").send().await.unwrap();
    }
    let long_path = format!("/v1/{}", "p".repeat(60_000));
    c.post(format!("{}{long_path}", s.base)).body("{}").send().await.unwrap();
    for i in 0..300 {
        let body = format!(r#"{{"model":"model-{i}-{}","messages":[]}}"#, "m".repeat(200));
        c.post(format!("{}/v1/messages", s.base)).body(body).send().await.unwrap();
    }
    let text = metrics(&s.base).await;
    assert!(text.len() < 200_000, "exposition of {} bytes", text.len());
    let expo = zai_dash::scrape::parse::parse(&text).unwrap();
    for family in &expo.families {
        for sample in &family.samples {
            for (name, value) in &sample.labels {
                assert!(value.len() <= 128, "{name} of {} bytes in {}", value.len(), family.name);
                if name == "method" {
                    assert!(["POST", "other"].contains(&value), "method {value}");
                }
            }
        }
    }
    assert_eq!(trips(&text, "method_other"), 300.0);
    assert!(trips(&text, "label_truncated") >= 301.0, "the long path and every long model");
    assert!(trips(&text, "label_capped") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_mb_body_costs_less_than_twice_its_size_in_peak_memory() {
    let (up, url) = upstream().await;
    let bin = Binary::start(&url, &[]);
    let c = reqwest::Client::new();
    let warm = c.post(format!("{}/v1/messages", bin.base)).body(r#"{"messages":[0]}"#).send().await.unwrap();
    assert_eq!(warm.status(), 200);
    let before = bin.vm_hwm_kb();
    let mut body = String::with_capacity(30 << 20);
    body.push_str(r#"{"model":"glm-4.7","messages":["#);
    while body.len() < (30 << 20) - 2 {
        body.push_str("0,");
    }
    body.push_str("0]}");
    let (len, size_kb) = (body.len(), body.len() as u64 / 1024);
    let r = c.post(format!("{}/v1/messages", bin.base)).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let growth = bin.vm_hwm_kb().saturating_sub(before);
    eprintln!("peak RSS growth for a {size_kb} kB body: {growth} kB");
    assert!(growth < 2 * size_kb, "peak RSS grew {growth} kB for a {size_kb} kB body");
    assert_eq!(up.seen.lock().unwrap().last().unwrap().2, len, "forwarded whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_bodies_get_408_and_never_starve_the_workers() {
    let (_up, url) = upstream().await;
    // 5 s: long enough that the legitimate requests below happen while both bodies still
    // trickle, even on a loaded machine (checked: the tricklers have not been answered yet).
    let bin = Binary::start(&url, &[("MAX_WORKERS", "2"), ("REQUEST_BODY_TIMEOUT", "5s")]);
    let started_trickling = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tricklers = Vec::new();
    for _ in 0..2 {
        let addr = bin.addr;
        let started_trickling = started_trickling.clone();
        tricklers.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let head = "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{";
            tcp.write_all(head.as_bytes()).await.unwrap();
            started_trickling.add_permits(1);
            let started = Instant::now();
            let mut reply = vec![0u8; 4096];
            loop {
                tokio::select! {
                    n = tcp.read(&mut reply) => {
                        let n = n.unwrap();
                        return (String::from_utf8_lossy(&reply[..n]).into_owned(), started.elapsed());
                    }
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        let _ = tcp.write_all(b" ").await;
                    }
                }
            }
        }));
    }
    let _both = started_trickling.acquire_many(2).await.unwrap();
    let c = reqwest::Client::new();
    for _ in 0..3 {
        let r = c.post(format!("{}/v1/messages", bin.base)).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 200, "a legitimate request while two bodies trickle");
    }
    assert!(tricklers.iter().all(|t| !t.is_finished()), "the bodies were still trickling");
    for t in tricklers {
        let (reply, after) = tokio::time::timeout(Duration::from_secs(60), t).await.expect("never cut").unwrap();
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains("REQUEST_BODY_TIMEOUT"), "the API's error envelope: {reply}");
        // The deadline is the behaviour: not before it (load can only make it later), and
        // well before the 60 s the test waits (a body never cut would reach that).
        assert!(after >= Duration::from_millis(4900) && after < Duration::from_secs(30), "{after:?}");
    }
    assert_eq!(trips(&metrics(&bin.base).await, "body_timeout"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_headers_are_cut_and_idle_connections_closed() {
    let (up, url) = upstream().await;
    let bin = Binary::start(&url, &[("PROXY_HEADER_READ_TIMEOUT", "500ms"), ("PROXY_IDLE_TIMEOUT", "800ms")]);
    let started = Instant::now();
    let reply = raw(bin.addr, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    let took = started.elapsed();
    assert!(reply.is_empty(), "no answer to an unfinished head: {reply}");
    // Timeouts are the behaviour here: never before the setting (load can only make them later),
    // and well before the 30 s the test waits for a connection that is never cut.
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(20), "closed after {took:?}");
    // A keep-alive connection is closed once idle, not before.
    let mut tcp = TcpStream::connect(bin.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "closed");
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(700) && idle < Duration::from_secs(20), "idle close after {idle:?}");
    // An answer streamed with pauses longer than both timeouts is not cut.
    let chunks = vec![(0, "data: {\"a\":1}\n\n"), (1200, "data: {\"b\":2}\n\n")];
    up.push(Reply::Sse(chunks));
    let body = r#"{"stream":true,"messages":[]}"#;
    let r = reqwest::Client::new().post(format!("{}/v1/messages", bin.base)).body(body).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "data: {\"a\":1}\n\ndata: {\"b\":2}\n\n");
    let text = metrics(&bin.base).await;
    assert_eq!(trips(&text, "header_timeout"), 1.0);
    assert!(trips(&text, "idle_timeout") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_refused_raw_or_encoded() {
    let s = in_process("/api/anthropic", |_| {}).await;
    for path in ["/v1/../../../admin/keys", "/v1/%2e%2e/%2e%2e/admin", "/v1/%2E%2E/x", "/v1/.%2E/x", "/v1/./messages"] {
        let reply = raw(
            s.addr,
            &format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{path}: {reply}");
        assert!(reply.contains(r#""type":"error""#), "{path}: the Anthropic envelope: {reply}");
    }
    assert_eq!(s.up.calls(), 0, "nothing reached the upstream");
    let reply =
        raw(s.addr, "POST /v1/a..b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "dots inside a segment are fine: {reply}");
    assert_eq!(s.up.seen.lock().unwrap()[0].0, "/api/anthropic/v1/a..b");
    assert_eq!(trips(&metrics(&s.base).await, "dot_segment"), 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_credential_reaches_the_upstream() {
    let s = in_process("", |_| {}).await;
    let c = reqwest::Client::new();
    for path in ["/v1/messages", "/v1/chat/completions"] {
        c.post(format!("{}{path}", s.base))
            .header("cookie", "zai_dash_session=browser-session")
            .header("authorization", "Bearer client-secret")
            .header("x-api-key", "client-key")
            .header("api-key", "azure-style-key")
            .header("proxy-authorization", "Basic Y2xpZW50")
            .body("{}")
            .send()
            .await
            .unwrap();
    }
    let seen = s.up.seen.lock().unwrap();
    for (path, h, _) in seen.iter() {
        let values: Vec<&str> = h.values().filter_map(|v| v.to_str().ok()).collect();
        for secret in ["browser-session", "client-secret", "client-key", "azure-style-key", "Y2xpZW50"] {
            assert!(!values.iter().any(|v| v.contains(secret)), "{secret} reached the upstream on {path}");
        }
        assert!(h.get("cookie").is_none() && h.get("api-key").is_none() && h.get("proxy-authorization").is_none());
    }
    assert_eq!(seen[0].1["x-api-key"], "server-key");
    assert_eq!(seen[1].1["authorization"], "Bearer server-key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_cannot_reset_the_rate_limit() {
    let s = in_process("", |_| {}).await;
    let c = reqwest::Client::new();
    let url = format!("{}/admin/reset-rate-limit", s.base);
    let evil = c.post(&url).header("origin", "http://evil.example").send().await.unwrap();
    assert_eq!(evil.status(), 403);
    let null = c.post(&url).header("origin", "null").send().await.unwrap();
    assert_eq!(null.status(), 403);
    let same = c.post(&url).header("origin", s.base.clone()).send().await.unwrap();
    assert_eq!(same.status(), 200);
    assert_eq!(c.post(&url).send().await.unwrap().status(), 200, "scripts send no Origin");
    assert_eq!(trips(&metrics(&s.base).await, "cross_site"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_429_body_is_sent_with_its_own_length() {
    let s = in_process("", |a| a.max_retries = "0".into()).await;
    let body = format!(r#"{{"error":{{"code":"1308","message":"quota"}},"pad":"{}"}}"#, "x".repeat(40_000));
    s.up.push(Reply::Json(429, body));
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let r = reqwest::Client::new().post(format!("{}/v1/messages", s.base)).body("{}").send().await.unwrap();
        let length = r.headers().get("content-length").map(|v| v.to_str().unwrap().to_owned());
        (r.status(), length, r.bytes().await)
    })
    .await
    .expect("answered in time");
    assert_eq!(r.0, 429);
    let bytes = r.2.expect("a body that matches its Content-Length");
    assert_eq!(bytes.len(), 32 * 1024);
    assert_eq!(r.1.as_deref(), Some("32768"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_usage_numbers_do_not_panic() {
    let s = in_process("", |_| {}).await;
    let max = u64::MAX;
    s.up.push(Reply::Json(200, format!(r#"{{"usage":{{"input_tokens":{max},"output_tokens":{max}}}}}"#)));
    let r = reqwest::Client::new().post(format!("{}/v1/messages", s.base)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let events = format!(
        "data: {{\"type\":\"message_start\",\"message\":{{\"usage\":{{\"input_tokens\":{max},\"output_tokens\":{max}}}}}}}\n\n\
         data: {{\"type\":\"content_block_delta\",\"delta\":{{\"text\":\"hi\"}}}}\n\n"
    );
    s.up.push(Reply::Sse(vec![(0, Box::leak(events.into_boxed_str()))]));
    let r = reqwest::Client::new()
        .post(format!("{}/v1/messages", s.base))
        .body(r#"{"stream":true,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    assert!(metrics(&s.base).await.contains("zai_proxy_tokens_total"));
}
