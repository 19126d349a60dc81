//! The built-in proxy's quota poller against a fake provider on loopback: how each answer is
//! read and exported (`zai_proxy_quota_*`, `/health`), failures, staleness on the injected
//! clock, a hung endpoint that never delays a request, and the key kept out of everything the
//! proxy shows or logs (on the real binary, at debug level).

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::process::{self, ChildGuard};
use common::wait_for;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zai_dash::clock::{ManualClock, SharedClock, SystemClock};
use zai_dash::proxy::quota::QUOTA_PATH;
use zai_dash::proxy::{self, Proxy, ProxyArgs};

const KEY: &str = "sk-quota-Secret-4b7e";
const FIVE_HOUR_RESET_MS: i64 = 1_788_541_838_272;
const WEEKLY_RESET_MS: i64 = 1_789_128_084_993;

/// What the fake provider answers to a quota poll.
#[derive(Clone)]
enum Answer {
    Json(u16, String),
    /// Never answers.
    Hang,
}

/// A fake provider: quota polls get the queued answers, then the last one again and again;
/// every other request is a model answer, so the same server is the proxy's upstream too.
#[derive(Default)]
struct Fake {
    answers: Mutex<VecDeque<Answer>>,
    repeat: Mutex<Option<Answer>>,
    polls: AtomicUsize,
    headers: Mutex<Vec<HeaderMap>>,
}

impl Fake {
    fn answer(&self, answers: Vec<Answer>) {
        *self.repeat.lock().unwrap() = answers.last().cloned();
        *self.answers.lock().unwrap() = answers.into();
    }

    fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
}

async fn fake_quota(State(f): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    f.headers.lock().unwrap().push(headers);
    f.polls.fetch_add(1, Ordering::SeqCst);
    let next = f.answers.lock().unwrap().pop_front().or_else(|| f.repeat.lock().unwrap().clone());
    match next {
        Some(Answer::Json(status, body)) => {
            (StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], body).into_response()
        }
        Some(Answer::Hang) => std::future::pending().await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn fake_model() -> Response {
    let body = r#"{"id":"m","type":"message","model":"glm-4.7","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":3,"output_tokens":1}}"#;
    ([("content-type", "application/json")], body).into_response()
}

async fn start_fake() -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake::default());
    let app =
        Router::new().route(QUOTA_PATH, axum::routing::get(fake_quota)).fallback(fake_model).with_state(fake.clone());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (fake, addr)
}

fn ok(limits: &str) -> Answer {
    Answer::Json(
        200,
        format!(
            r#"{{"code":200,"msg":"Operation successful","success":true,"data":{{"level":"max","limits":[{limits}]}}}}"#
        ),
    )
}

fn credit(unit: u8, allowance: f64, used: f64, reset_ms: i64) -> String {
    format!(
        r#"{{"type":"CREDIT_LIMIT","unit":{unit},"number":5,"usage":{allowance},"currentValue":{used},"remaining":{},"percentage":99,"nextResetTime":{reset_ms}}}"#,
        allowance - used
    )
}

fn tokens(unit: u8, percentage: f64, reset_ms: i64) -> String {
    format!(
        r#"{{"type":"TOKENS_LIMIT","unit":{unit},"number":1,"percentage":{percentage},"nextResetTime":{reset_ms}}}"#
    )
}

const TIME_LIMIT: &str = r#"{"type":"TIME_LIMIT","unit":5,"number":1,"usage":100,"currentValue":12,"remaining":88,"percentage":12,"nextResetTime":1790000000000}"#;
const FUTURE_LIMIT: &str =
    r#"{"type":"SOME_FUTURE_LIMIT","unit":3,"number":1,"usage":5,"currentValue":4,"percentage":80}"#;

/// A proxy polling `fake`, served on loopback.
struct Running {
    base: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_proxy(fake: SocketAddr, clock: SharedClock, tune: impl FnOnce(&mut ProxyArgs)) -> Running {
    let mut args = ProxyArgs::for_tests(&format!("http://{fake}"));
    args.zai_api_key = KEY.into();
    args.quota.quota_poll_enabled = "true".into();
    args.quota.quota_poll_interval = "1h".into();
    args.quota.zai_quota_base_url = format!("http://{fake}");
    tune(&mut args);
    let proxy = Proxy::new(args.validate().unwrap(), clock).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let task = tokio::spawn(proxy::serve(listener, proxy, stop.clone()));
    Running { base, stop, task }
}

impl Running {
    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base)).await.unwrap().text().await.unwrap()
    }

    async fn health_text(&self) -> String {
        reqwest::get(format!("{}/health", self.base)).await.unwrap().text().await.unwrap()
    }

    async fn health(&self) -> serde_json::Value {
        serde_json::from_str(&self.health_text().await).unwrap()
    }

    /// Waits until `series` (name and labels as printed) reads at least `n`.
    async fn wait_for_count(&self, series: &str, n: f64) {
        wait_for(&format!("{series} >= {n}"), Duration::from_secs(10), || async {
            value(&self.metrics().await, series).is_some_and(|v| v >= n)
        })
        .await;
    }

    async fn stop(self) {
        self.stop.cancel();
        let served = tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("the proxy stops");
        served.unwrap().unwrap();
    }
}

/// The value of one series in an exposition.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The `zai_proxy_quota_*` part of an exposition.
fn quota_lines(text: &str) -> String {
    text.lines().filter(|l| l.contains("zai_proxy_quota_")).map(|l| format!("{l}\n")).collect()
}

fn poll_total(result: &str) -> String {
    format!("zai_proxy_quota_poll_total{{result=\"{result}\",variant=\"production\"}}")
}

fn gauge(family: &str, limit_type: &str, window: &str) -> String {
    format!("zai_proxy_quota_{family}{{limit_type=\"{limit_type}\",variant=\"production\",window=\"{window}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_limits_win_over_tokens_limits_and_the_families_print_like_zai_proxy() {
    let (fake, addr) = start_fake().await;
    // The five-hour window comes in both schemas, tokens first; weekly only as tokens; two
    // entries of other types (one claiming the five-hour unit) must not show.
    fake.answer(vec![ok(&[
        tokens(3, 80.0, FIVE_HOUR_RESET_MS),
        FUTURE_LIMIT.into(),
        credit(3, 2000.0, 740.0, FIVE_HOUR_RESET_MS),
        tokens(6, 13.0, WEEKLY_RESET_MS),
        TIME_LIMIT.into(),
    ]
    .join(","))]);
    let clock = Arc::new(ManualClock::new(1_788_530_000_000));
    let p = start_proxy(addr, clock, |_| {}).await;
    p.wait_for_count(&poll_total("success"), 1.0).await;
    let want = "\
# HELP zai_proxy_quota_poll_total Quota poll outcomes by result (success, error, malformed, stale)
# TYPE zai_proxy_quota_poll_total counter
zai_proxy_quota_poll_total{result=\"success\",variant=\"production\"} 1
# HELP zai_proxy_quota_remaining_ratio Remaining fraction of the provider-reported quota after no local policy adjustment
# TYPE zai_proxy_quota_remaining_ratio gauge
zai_proxy_quota_remaining_ratio{limit_type=\"credit_limit\",variant=\"production\",window=\"five_hour\"} 0.63
zai_proxy_quota_remaining_ratio{limit_type=\"tokens_limit\",variant=\"production\",window=\"weekly\"} 0.87
# HELP zai_proxy_quota_reset_time_seconds Provider quota reset time as a Unix timestamp
# TYPE zai_proxy_quota_reset_time_seconds gauge
zai_proxy_quota_reset_time_seconds{limit_type=\"credit_limit\",variant=\"production\",window=\"five_hour\"} 1.788541838e+09
zai_proxy_quota_reset_time_seconds{limit_type=\"tokens_limit\",variant=\"production\",window=\"weekly\"} 1.789128084e+09
# HELP zai_proxy_quota_sample_age_seconds Age of the last valid account quota sample
# TYPE zai_proxy_quota_sample_age_seconds gauge
zai_proxy_quota_sample_age_seconds{variant=\"production\"} 0
# HELP zai_proxy_quota_usage_ratio Normalized provider-reported quota usage ratio by window and limit type
# TYPE zai_proxy_quota_usage_ratio gauge
zai_proxy_quota_usage_ratio{limit_type=\"credit_limit\",variant=\"production\",window=\"five_hour\"} 0.37
zai_proxy_quota_usage_ratio{limit_type=\"tokens_limit\",variant=\"production\",window=\"weekly\"} 0.13
";
    let text = p.metrics().await;
    assert_eq!(quota_lines(&text), want);
    // In name order among the other families, and readable by the collector's parser.
    let at = |name: &str| text.find(&format!("# HELP {name} ")).unwrap();
    assert!(at("zai_proxy_max_workers") < at("zai_proxy_quota_poll_total"));
    assert!(at("zai_proxy_quota_usage_ratio") < at("zai_proxy_rate_limit_requests_per_second"));
    zai_dash::scrape::parse::parse(&text).unwrap();
    // The key was sent raw (the provider's scheme-less form), with zai-proxy's other headers.
    let seen = fake.headers.lock().unwrap()[0].clone();
    assert_eq!(seen["authorization"], KEY);
    assert_eq!(seen["accept"], "application/json");
    assert_eq!(seen["accept-language"], "en-US,en;q=0.9");

    let health = p.health_text().await;
    let want = r#"{"quota":{"enabled":true,"fresh":true,"interval":"1h0m0s","stale_after":"15m0s","last_success_at":"2026-09-04T13:53:20Z","sample_age_seconds":0.0,"last_outcome":"success","plan_tier":"max","windows":[{"window":"five_hour","limit_type":"CREDIT_LIMIT","used_fraction":0.37,"reset_at":"2026-09-04T17:10:38Z"},{"window":"weekly","limit_type":"TOKENS_LIMIT","used_fraction":0.13,"reset_at":"2026-09-11T12:01:24Z"}]},"rate_limit":"#;
    assert!(health.starts_with(want), "{health}");
    assert!(health.ends_with(r#""status":"ok"}"#), "{health}");
    p.stop().await;

    // Off unless asked: nothing polled, nothing exported, /health says so.
    let (idle, idle_addr) = start_fake().await;
    let off = start_proxy(idle_addr, Arc::new(SystemClock), |a| a.quota.quota_poll_enabled = String::new()).await;
    assert!(!off.metrics().await.contains("zai_proxy_quota_"));
    assert_eq!(off.health().await["quota"], serde_json::json!({ "enabled": false, "fresh": false }));
    assert_eq!(idle.polls(), 0);
    off.stop().await;
}

/// `(limit_type, window, used ratio)` of one exported window.
type Expected = (&'static str, &'static str, f64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_schema_is_read_and_ratios_are_clamped() {
    let cases: [(&str, String, &[Expected]); 3] = [
        (
            "only the legacy tokens schema",
            [tokens(3, 37.0, FIVE_HOUR_RESET_MS), tokens(6, 7.0, WEEKLY_RESET_MS)].join(","),
            &[("tokens_limit", "five_hour", 0.37), ("tokens_limit", "weekly", 0.07)],
        ),
        (
            "an overdrawn credit window and a negative percentage",
            [credit(3, 2000.0, 2500.0, FIVE_HOUR_RESET_MS), tokens(6, -5.0, WEEKLY_RESET_MS)].join(","),
            &[("credit_limit", "five_hour", 1.0), ("tokens_limit", "weekly", 0.0)],
        ),
        ("unknown types only", [TIME_LIMIT, FUTURE_LIMIT].join(","), &[]),
    ];
    for (what, limits, want) in cases {
        let (fake, addr) = start_fake().await;
        fake.answer(vec![ok(&limits)]);
        let p = start_proxy(addr, Arc::new(SystemClock), |_| {}).await;
        p.wait_for_count(&poll_total("success"), 1.0).await;
        let text = p.metrics().await;
        for (limit_type, window, used) in want {
            assert_eq!(value(&text, &gauge("usage_ratio", limit_type, window)), Some(*used), "{what}");
            assert_eq!(value(&text, &gauge("remaining_ratio", limit_type, window)), Some(1.0 - used), "{what}");
        }
        let windows = text.lines().filter(|l| l.starts_with("zai_proxy_quota_usage_ratio{")).count();
        assert_eq!(windows, want.len(), "{what}: {}", quota_lines(&text));
        assert!(value(&text, "zai_proxy_quota_sample_age_seconds{variant=\"production\"}").is_some(), "{what}");
        let used: Vec<f64> = p.health().await["quota"]["windows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|w| w["used_fraction"].as_f64().unwrap())
            .collect();
        assert_eq!(used, want.iter().map(|w| w.2).collect::<Vec<_>>(), "{what}");
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_provider_errors_count_as_errors_and_keep_the_last_sample() {
    let (fake, addr) = start_fake().await;
    fake.answer(vec![
        ok(&credit(3, 2000.0, 740.0, FIVE_HOUR_RESET_MS)),
        Answer::Json(401, format!(r#"{{"error":"invalid key {KEY}"}}"#)),
        Answer::Json(200, format!(r#"{{"code":1001,"msg":"key {KEY} is not a coding plan key","success":false}}"#)),
        Answer::Json(500, "upstream trouble".into()),
    ]);
    let p = start_proxy(addr, Arc::new(SystemClock), |a| a.quota.quota_poll_interval = "100ms".into()).await;
    p.wait_for_count(&poll_total("error"), 3.0).await;
    let text = p.metrics().await;
    assert_eq!(value(&text, &poll_total("success")), Some(1.0));
    assert_eq!(value(&text, &poll_total("stale")), None, "still fresh: QUOTA_STALE_AFTER is 15 minutes");
    assert_eq!(value(&text, &poll_total("malformed")), None);
    assert_eq!(value(&text, &gauge("usage_ratio", "credit_limit", "five_hour")), Some(0.37), "last known good");
    let health = p.health().await;
    assert_eq!(
        (health["quota"]["fresh"].as_bool(), health["quota"]["last_outcome"].as_str()),
        (Some(true), Some("error"))
    );
    assert_eq!(health["quota"]["windows"][0]["used_fraction"], 0.37);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_answers_count_as_malformed_and_a_first_failure_as_stale() {
    let (fake, addr) = start_fake().await;
    fake.answer(vec![
        Answer::Json(200, r#"{"code":200,"success":true,"data":{"limits":[{"type":"CRE"#.into()),
        Answer::Json(200, r#"{"code":200,"success":true,"data":{"level":"max"}}"#.into()),
    ]);
    let p = start_proxy(addr, Arc::new(SystemClock), |a| a.quota.quota_poll_interval = "100ms".into()).await;
    p.wait_for_count(&poll_total("malformed"), 3.0).await;
    let text = p.metrics().await;
    assert_eq!(value(&text, &poll_total("stale")), Some(1.0), "never fresh: counted once, not per poll");
    assert_eq!(value(&text, &poll_total("success")), None);
    for family in ["usage_ratio", "remaining_ratio", "reset_time_seconds", "sample_age_seconds"] {
        assert!(!text.contains(&format!("zai_proxy_quota_{family}")), "no sample, no {family}");
    }
    let health = p.health().await;
    assert_eq!(
        health["quota"],
        serde_json::json!({ "enabled": true, "fresh": false, "interval": "100ms", "stale_after": "15m0s", "last_outcome": "malformed" })
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_quota_endpoint_never_delays_a_request_and_costs_only_the_poll_timeout() {
    let (fake, addr) = start_fake().await;
    fake.answer(vec![Answer::Hang]);
    // A poll that would hang for a minute: requests, /metrics and /health answer meanwhile.
    let p = start_proxy(addr, Arc::new(SystemClock), |a| a.quota.quota_poll_timeout = "60s".into()).await;
    wait_for("the first poll to reach the endpoint", Duration::from_secs(10), || async { fake.polls() == 1 }).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/messages", p.base))
        .header("content-type", "application/json")
        .body(r#"{"model":"glm-4.7","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("\"usage\""));
    assert!(p.metrics().await.contains(
        "zai_proxy_requests_total{method=\"POST\",path=\"/v1/messages\",status_code=\"200\",variant=\"production\"} 1"
    ));
    assert!(!p.metrics().await.contains("zai_proxy_quota_poll_total"), "the poll is still in flight");
    assert_eq!(p.health().await["quota"]["fresh"], false);
    p.stop().await; // shutting down does not wait for the hung poll either

    // With a short timeout the hung poll ends as an error (and, never fresh, one stale).
    let p = start_proxy(addr, Arc::new(SystemClock), |a| a.quota.quota_poll_timeout = "300ms".into()).await;
    p.wait_for_count(&poll_total("error"), 1.0).await;
    assert_eq!(value(&p.metrics().await, &poll_total("stale")), Some(1.0));
    assert_eq!(p.health().await["quota"]["last_outcome"], "error");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_goes_stale_after_quota_stale_after_and_stays_exported() {
    let (fake, addr) = start_fake().await;
    fake.answer(vec![ok(&credit(3, 2000.0, 740.0, FIVE_HOUR_RESET_MS)), Answer::Json(503, String::new())]);
    let clock = Arc::new(ManualClock::new(1_788_530_000_000));
    let p = start_proxy(addr, clock.clone(), |a| {
        a.quota.quota_poll_interval = "100ms".into();
        a.quota.quota_stale_after = "15m".into();
    })
    .await;
    p.wait_for_count(&poll_total("error"), 2.0).await;
    let text = p.metrics().await;
    assert_eq!(value(&text, &poll_total("stale")), None);
    assert_eq!(value(&text, "zai_proxy_quota_sample_age_seconds{variant=\"production\"}"), Some(0.0));
    assert_eq!(p.health().await["quota"]["fresh"], true);

    // Fifteen minutes and a millisecond without a success: the next poll finds it stale.
    clock.advance_ms(15 * 60_000 + 1);
    p.wait_for_count(&poll_total("stale"), 1.0).await;
    let errors = value(&p.metrics().await, &poll_total("error")).unwrap();
    p.wait_for_count(&poll_total("error"), errors + 3.0).await;
    let text = p.metrics().await;
    assert_eq!(value(&text, &poll_total("stale")), Some(1.0), "counted on the transition only");
    assert_eq!(value(&text, "zai_proxy_quota_sample_age_seconds{variant=\"production\"}"), Some(900.001));
    assert_eq!(value(&text, &gauge("usage_ratio", "credit_limit", "five_hour")), Some(0.37), "kept, with its age");
    let health = p.health().await;
    assert_eq!(health["quota"]["fresh"], false);
    assert_eq!(health["quota"]["sample_age_seconds"], 900.001);
    assert_eq!(health["quota"]["last_success_at"], "2026-09-04T13:53:20Z");

    // A success makes it fresh again and re-arms the stale count.
    fake.answer(vec![ok(&credit(3, 2000.0, 1000.0, FIVE_HOUR_RESET_MS))]);
    wait_for("a fresh sample", Duration::from_secs(10), || async { p.health().await["quota"]["fresh"] == true }).await;
    p.wait_for_count(&gauge("usage_ratio", "credit_limit", "five_hour"), 0.5).await;
    fake.answer(vec![Answer::Json(500, String::new())]);
    clock.advance_ms(16 * 60_000);
    p.wait_for_count(&poll_total("stale"), 2.0).await;
    p.stop().await;
}

/// `zai-dash proxy` with a clean environment, its stderr collected as it is written.
struct Binary {
    base: String,
    child: ChildGuard,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Binary {
    fn start(env: &[(&str, String)]) -> Self {
        let mut child = process::spawn(
            Command::new(env!("CARGO_BIN_EXE_zai-dash"))
                .env_clear()
                .arg("proxy")
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut pipe, sink) = (child.take_stderr(), stderr.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut line = String::new();
        BufReader::new(child.take_stdout()).read_line(&mut line).unwrap();
        let Some(base) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
            child.kill();
            panic!("no listening line; stderr: {}", stderr.lock().unwrap());
        };
        Self { base, child, stderr, reader: Some(reader) }
    }

    /// SIGTERM, a clean exit, and everything written to stderr.
    fn stop(mut self) -> String {
        self.child.signal(libc::SIGTERM);
        let status = self.child.wait();
        assert!(status.success(), "{status:?}: {}", self.stderr.lock().unwrap());
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.stderr.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_shows_in_metrics_health_logs_or_errors_even_when_the_provider_echoes_it() {
    let (fake, addr) = start_fake().await;
    fake.answer(vec![
        Answer::Json(
            200,
            format!(
                r#"{{"code":200,"msg":"hello {KEY}","success":true,"data":{{"level":"max","limits":[{}]}}}}"#,
                credit(3, 2000.0, 740.0, FIVE_HOUR_RESET_MS)
            ),
        ),
        Answer::Json(401, format!(r#"{{"error":"invalid api key {KEY}"}}"#)),
        Answer::Json(200, format!(r#"{{"code":1001,"msg":"{KEY} is not a coding plan key","success":false}}"#)),
        Answer::Json(200, format!(r#"{{"code":200,"data":{{"limits":"{KEY}""#)),
        Answer::Hang,
        Answer::Json(500, format!("trace: Authorization: {KEY}")),
        ok(&credit(3, 2000.0, 800.0, FIVE_HOUR_RESET_MS)),
    ]);
    let env = [
        ("ZAI_API_KEY", KEY.to_owned()),
        ("ZAI_TARGET_URL", format!("http://{addr}")),
        ("LISTEN_ADDR", "127.0.0.1:0".into()),
        ("RATE_LIMIT_STATE_FILE", String::new()),
        ("QUOTA_POLL_ENABLED", "true".into()),
        ("QUOTA_POLL_INTERVAL", "100ms".into()),
        ("QUOTA_POLL_TIMEOUT", "300ms".into()),
        ("QUOTA_STALE_AFTER", "1s".into()),
        ("ZAI_QUOTA_BASE_URL", format!("http://{addr}")),
        ("RUST_LOG", "debug".into()),
    ];
    let bin = Binary::start(&env);
    let metrics = || async { reqwest::get(format!("{}/metrics", bin.base)).await.unwrap().text().await.unwrap() };
    wait_for("every kind of poll outcome", Duration::from_secs(20), || async {
        let text = metrics().await;
        ["success", "error", "malformed"].iter().all(|r| value(&text, &poll_total(r)).is_some()) && fake.polls() >= 7
    })
    .await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/messages", bin.base))
        .body(r#"{"model":"glm-4.7","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let shown = [metrics().await, reqwest::get(format!("{}/health", bin.base)).await.unwrap().text().await.unwrap()];
    assert!(fake.headers.lock().unwrap().iter().all(|h| h["authorization"] == KEY), "the key was used");
    let log = bin.stop();
    assert!(log.contains("Quota polled.") && log.contains("Quota poll failed"), "debug logging was on:\n{log}");
    for (what, text) in [("/metrics", &shown[0]), ("/health", &shown[1]), ("stderr", &log)] {
        assert!(!text.contains(KEY), "{what} shows the key:\n{text}");
        assert!(!text.contains("sk-quota"), "{what} shows part of the key:\n{text}");
    }
}
