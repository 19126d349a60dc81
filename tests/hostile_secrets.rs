//! Secrets and browser-facing hardening, on the real binary: credentials in scrape URLs are
//! used by the scrape but never shown, logged or labelled; `--help` prints no URL or secret;
//! a DNS-rebinding page cannot sign in, sign out or spend the proxy's key; `COOKIE_SECURE`
//! forces the cookie's `Secure` flag; `SESSION_EPOCH` signs every session out on every replica
//! that changes it.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use common::process::{self, ChildGuard};
use common::{Sim, dead_url, get_json, wait_for};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PASSWORD: &str = "pw-Secret-7d41";
const TOKEN: &str = "tk-Secret-9c02";
const API_KEY: &str = "ak-Secret-3e55";
const SIG: &str = "sig-Secret-51aa";
const SECRETS: [&str; 4] = [PASSWORD, TOKEN, API_KEY, SIG];
/// How long a command that should refuse to start (or print and exit) may take.
const EXIT_LIMIT: Duration = Duration::from_secs(30);
const DASHBOARD_TOKEN: &str = "correct-horse-battery-staple";

/// The binary with a clean environment: only what each test sets reaches it.
fn zai_dash(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zai-dash"));
    c.env_clear().args(args).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    c
}

/// A running zai-dash whose stderr is collected as it is written (a full pipe would block it).
struct Running {
    base: String,
    child: ChildGuard,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut child = process::spawn(zai_dash(args, env).stdout(Stdio::piped()).stderr(Stdio::piped())).unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.take_stderr();
        let sink = stderr.clone();
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

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `127.0.0.1:PORT`.
    fn authority(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    fn port(&self) -> &str {
        self.authority().rsplit(':').next().unwrap()
    }

    /// SIGTERM, wait for the exit, and everything it wrote to stderr.
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

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A zai-proxy `/metrics` that answers only with basic auth `scraper:PASSWORD` and the query's
/// `token` and `api_key`, so a scrape that drops the URL's credentials fails.
#[derive(Clone)]
struct Guarded {
    sim: Arc<Mutex<Sim>>,
    served: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

async fn guarded_metrics(
    State(g): State<Guarded>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> axum::response::Response {
    let expected = format!("Basic {}", base64(format!("scraper:{PASSWORD}").as_bytes()));
    let auth_ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    let query_ok =
        q.get("token").map(String::as_str) == Some(TOKEN) && q.get("api_key").map(String::as_str) == Some(API_KEY);
    if !(auth_ok && query_ok) {
        g.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    g.served.fetch_add(1, Ordering::SeqCst);
    let body = g.sim.lock().unwrap().render();
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

async fn guarded_target(variant: &str) -> (u16, Guarded) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let g =
        Guarded { sim: Arc::new(Mutex::new(Sim::new(variant, 20.0))), served: Arc::default(), refused: Arc::default() };
    let app = Router::new().route("/metrics", get(guarded_metrics)).with_state(g.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, g)
}

/// Every `data:` line of the live stream, read in the background.
fn collect_events(url: String) -> Arc<Mutex<String>> {
    let seen = Arc::new(Mutex::new(String::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        let resp = reqwest::get(url).await.unwrap();
        let mut body = resp.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    seen
}

async fn text(url: &str) -> String {
    let resp = reqwest::get(url).await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.text().await.unwrap()
}

fn encode(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_credentials_are_used_by_the_scrape_but_never_shown_logged_or_labelled() {
    let (port_a, a) = guarded_target("production").await;
    let (port_b, b) = guarded_target("canary").await;
    let dead = dead_url().await.replace("http://", &format!("http://down:{PASSWORD}@"));
    let plain = format!("http://scraper:{PASSWORD}@127.0.0.1:{port_a}/metrics?token={TOKEN}&api_key={API_KEY}&x=1");
    let targets = [
        plain.clone(),
        format!("{dead}?X-Auth={SIG}&sig={SIG}"),
        format!("canary=dns+http://scraper:{PASSWORD}@localhost:{port_b}/metrics?token={TOKEN}&api_key={API_KEY}"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let app = Running::start(
        &["serve"],
        &[
            ("LISTEN_ADDR", "127.0.0.1:0".into()),
            ("SCRAPE_TARGETS", targets.join(",")),
            ("SCRAPE_INTERVAL", "1s".into()),
            ("SCRAPE_TIMEOUT", "500ms".into()),
            ("DB_PATH", dir.path().join("z.db").display().to_string()),
            ("ALERTMANAGER_URL", format!("http://alerts:{PASSWORD}@127.0.0.1:9/?token={TOKEN}")),
            ("RUST_LOG", "zai_dash=debug".into()),
        ],
    );
    let events = collect_events(app.url("/api/events"));

    // The scrape still sends the credentials: both guarded targets are up, none refused.
    let shown_a = format!("http://***@127.0.0.1:{port_a}/metrics?token=***&api_key=***&x=1");
    wait_for("both guarded targets up", Duration::from_secs(30), || async {
        let t = get_json(&app.url("/api/targets")).await;
        let up = |needle: &str| {
            t.as_array().unwrap().iter().any(|t| t["up"] == true && t["url"].as_str().unwrap().contains(needle))
        };
        up(&format!("127.0.0.1:{port_a}/")) && up(&format!("127.0.0.1:{port_b}/"))
    })
    .await;
    assert_eq!(a.refused.load(Ordering::SeqCst) + b.refused.load(Ordering::SeqCst), 0, "credentials were sent");
    let listed = get_json(&app.url("/api/targets")).await;
    assert!(listed.as_array().unwrap().iter().any(|t| t["url"] == shown_a.as_str()), "{listed}");

    // A version change is an event on the live stream and a mark on the charts, naming the target.
    a.sim.lock().unwrap().version = "1.12.0".into();
    wait_for("the version event", Duration::from_secs(30), || async {
        events.lock().unwrap().contains("\"type\":\"version\"")
    })
    .await;
    wait_for("rows of target a", Duration::from_secs(30), || async {
        get_json(&app.url(&format!("/api/metrics?range=5m&target={}", encode(&shown_a))))
            .await
            .as_array()
            .is_some_and(|p| !p.is_empty())
    })
    .await;

    // `target=` takes the form shown (what the pages link to) and the configured URL alike.
    let by_shown = get_json(&app.url(&format!("/api/metrics?range=5m&target={}", encode(&shown_a)))).await;
    let by_real = get_json(&app.url(&format!("/api/metrics?range=5m&target={}", encode(&plain)))).await;
    let first = |v: &serde_json::Value| v.as_array().unwrap().first().map(|p| p["timestamp"].clone());
    assert_eq!(first(&by_shown), first(&by_real));
    let shown_q = encode(&shown_a);
    let mut everything = String::new();
    for path in [
        "/api/config".to_owned(),
        "/api/status".to_owned(),
        "/api/targets".to_owned(),
        "/api/metrics?range=5m".to_owned(),
        "/api/alerts".to_owned(),
        "/api/compare".to_owned(),
        "/api/models?range=5m".to_owned(),
        "/api/export?range=5m".to_owned(),
        "/api/export?range=5m&format=json".to_owned(),
        format!("/api/export?range=5m&target={shown_q}"),
        "/".to_owned(),
        "/?range=5m".to_owned(),
        format!("/?range=5m&target={shown_q}"),
        format!("/?range=5m&target={}", encode(&plain)),
        "/targets".to_owned(),
        "/compare".to_owned(),
        "/alerts".to_owned(),
        "/metrics".to_owned(),
    ] {
        let body = text(&app.url(&path)).await;
        assert_no_secret(&path, &body);
        everything += &body;
    }
    assert!(everything.contains("http://***@127.0.0.1"), "URLs are shown, with *** for the credentials");
    assert!(everything.contains("zai_dash_target_up{target=\"http://***@"), "self-metric labels are redacted");
    let mark = format!("version 1.11.1 -&#62; 1.12.0 (production, http://***@127.0.0.1:{port_a}/metrics?token=***");
    assert!(everything.contains(&mark), "the version mark on the overview names the target");
    let live = events.lock().unwrap().clone();
    assert!(live.contains("\"target\":\"http://***@127.0.0.1"), "{live}");
    assert_no_secret("the live stream", &live);

    let log = app.stop();
    assert!(log.contains("Target is down.") && log.contains("***"), "the log names targets: {log}");
    assert_no_secret("the log", &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_refusals_print_no_url_or_secret() {
    let secret_env = [
        ("SCRAPE_TARGETS", format!("http://u:{PASSWORD}@a:1/metrics?token={TOKEN}")),
        ("ALERTMANAGER_URL", format!("http://am:{PASSWORD}@am:9093/?api_key={API_KEY}")),
        ("ALERT_WEBHOOK_URL", format!("https://hooks.example/{SIG}")),
        ("REMOTE_WRITE_URL", format!("http://vm:8428/api/v1/write?token={TOKEN}")),
        ("REMOTE_WRITE_PASSWORD", PASSWORD.to_owned()),
        ("ZAI_TARGET_URL", format!("https://up:{PASSWORD}@api.example/anthropic?key={API_KEY}")),
        ("ZAI_API_KEY", API_KEY.to_owned()),
        ("PROMETHEUS_URL", format!("http://p:{PASSWORD}@prom:9090")),
        ("DASHBOARD_TOKEN", TOKEN.to_owned()),
    ];
    for cmd in ["serve", "proxy"] {
        let out = process::output(&mut zai_dash(&[cmd, "--help"], &secret_env), EXIT_LIMIT);
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("SCRAPE_TARGETS") || cmd == "proxy", "{help}");
        assert_no_secret(&format!("{cmd} --help"), &help);
    }

    let dir = tempfile::tempdir().unwrap();
    let db = ("DB_PATH", dir.path().join("x.db").display().to_string());
    for (targets, expected) in [
        (format!("Bad Name=http://u:{PASSWORD}@a:1/metrics?token={TOKEN}"), "invalid variant name"),
        (
            format!("http://u:{PASSWORD}@a:1/metrics?token={TOKEN},http://u:{PASSWORD}@a:1/metrics?token={TOKEN}"),
            "twice",
        ),
        (format!("ftp://u:{PASSWORD}@a:1/metrics?token={TOKEN}"), "must be an http://"),
    ] {
        let out = process::output(&mut zai_dash(&["serve"], &[("SCRAPE_TARGETS", targets), db.clone()]), EXIT_LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("SCRAPE_TARGETS") && stderr.contains(expected), "{stderr}");
        assert_no_secret("a refused SCRAPE_TARGETS", &stderr);
    }
    let out = process::output(
        &mut zai_dash(
            &["proxy"],
            &[
                ("ZAI_API_KEY", "k".into()),
                ("ZAI_TARGET_URL", format!("ftp://u:{PASSWORD}@api.example/?key={API_KEY}")),
            ],
        ),
        EXIT_LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ZAI_TARGET_URL"), "{stderr}");
    assert_no_secret("a refused ZAI_TARGET_URL", &stderr);

    let proxy = Running::start(
        &["proxy"],
        &[
            ("LISTEN_ADDR", "127.0.0.1:0".into()),
            ("ZAI_API_KEY", "upstream-key".into()),
            ("ZAI_TARGET_URL", format!("http://up:{PASSWORD}@127.0.0.1:9/anthropic?key={API_KEY}")),
            ("RATE_LIMIT_STATE_FILE", String::new()),
        ],
    );
    let log = proxy.stop();
    assert!(log.contains("Proxy started.") && log.contains("***"), "{log}");
    assert_no_secret("the proxy's log", &log);
}

/// One raw HTTP/1.1 request, so `Host` is exactly what a rebinding browser sends; returns
/// the status and the head of the answer.
async fn raw(authority: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(authority).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, answer)
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_host_cannot_sign_in_sign_out_or_spend_the_proxy_key() {
    let dir = tempfile::tempdir().unwrap();
    let dash = Running::start(
        &["serve"],
        &[
            ("LISTEN_ADDR", "127.0.0.1:0".into()),
            ("SCRAPE_TARGETS", dead_url().await),
            ("DB_PATH", dir.path().join("z.db").display().to_string()),
            ("DASHBOARD_TOKEN", DASHBOARD_TOKEN.into()),
            ("ALLOWED_HOSTS", "dash.example, Other.Example".into()),
        ],
    );
    let port = dash.port().to_owned();
    let login = format!("token={DASHBOARD_TOKEN}");
    let as_host = |name: &str| (format!("{name}:{port}"), format!("http://{name}:{port}"));
    // The rebinding page: its own name in Host and Origin, which agree with each other.
    let (host, origin) = as_host("evil.example");
    for path in ["/login", "/logout"] {
        let (status, answer) =
            raw(dash.authority(), "POST", path, &[("Host", &host), ("Origin", &origin), FORM], &login).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(answer.contains("ALLOWED_HOSTS"), "the refusal says what to do: {answer}");
        assert!(!answer.to_ascii_lowercase().contains("set-cookie"), "{answer}");
    }
    let (status, _) = raw(dash.authority(), "POST", "/login", &[("Host", &host), FORM], &login).await;
    assert_eq!(status, 403, "every state-changing request is checked, with or without Origin");
    let (status, _) = raw(dash.authority(), "GET", "/login", &[("Host", &host)], "").await;
    assert_eq!(status, 200, "reading the form is not a change");
    // IP literals, localhost and the listed names sign in.
    for name in ["127.0.0.1", "localhost", "dash.example", "other.example"] {
        let (host, origin) = as_host(name);
        let (status, answer) =
            raw(dash.authority(), "POST", "/login", &[("Host", &host), ("Origin", &origin), FORM], &login).await;
        assert_eq!(status, 303, "{name}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("set-cookie: zai_dash_session=v"), "{answer}");
    }
    dash.stop();

    // The proxy: a browser (it sends Origin) must use an allowed name; SDKs send no Origin.
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let upstream = Router::new().route(
        "/v1/messages",
        post(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                (
                    [("content-type", "application/json")],
                    r#"{"id":"m","type":"message","role":"assistant","model":"glm-4.7","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":3,"output_tokens":1}}"#,
                )
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, upstream).await.unwrap() });
    let proxy = Running::start(
        &["proxy"],
        &[
            ("LISTEN_ADDR", "127.0.0.1:0".into()),
            ("ZAI_API_KEY", "upstream-key".into()),
            ("ZAI_TARGET_URL", format!("http://{up}")),
            ("RATE_LIMIT_STATE_FILE", String::new()),
        ],
    );
    let port = proxy.port().to_owned();
    let json = ("Content-Type", "application/json");
    let body = r#"{"model":"glm-4.7","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    let (host, origin) = (format!("evil.example:{port}"), format!("http://evil.example:{port}"));
    let (status, answer) =
        raw(proxy.authority(), "POST", "/v1/messages", &[("Host", &host), ("Origin", &origin), json], body).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("ALLOWED_HOSTS"), "{answer}");
    let (status, _) =
        raw(proxy.authority(), "POST", "/admin/reset-rate-limit", &[("Host", &host), ("Origin", &origin)], "").await;
    assert_eq!(status, 403);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing reached the upstream");
    let (status, answer) = raw(proxy.authority(), "POST", "/v1/messages", &[("Host", &host), json], body).await;
    assert_eq!(status, 200, "an SDK (no Origin) works by any name: {answer}");
    // A page on any other site sending a simple (no preflight) POST to the proxy's IP address:
    // the Host is an allowed IP literal, but the Origin is not the proxy's own.
    let host = format!("127.0.0.1:{port}");
    for origin in ["http://evil.example", "http://127.0.0.1:1", "null"] {
        let plain = ("Content-Type", "text/plain");
        let (status, answer) =
            raw(proxy.authority(), "POST", "/v1/messages", &[("Host", &host), ("Origin", origin), plain], body).await;
        assert_eq!(status, 403, "Origin {origin}: {answer}");
        assert!(answer.contains("cross-origin"), "{answer}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no cross-origin page reached the upstream");
    let origin = format!("http://127.0.0.1:{port}");
    let (status, answer) =
        raw(proxy.authority(), "POST", "/v1/messages", &[("Host", &host), ("Origin", &origin), json], body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    proxy.stop();
}

/// The `Set-Cookie` of a successful sign-in.
async fn sign_in(app: &Running, forwarded_https: bool) -> String {
    let mut headers = vec![("Host", app.authority()), FORM];
    if forwarded_https {
        headers.push(("X-Forwarded-Proto", "https"));
    }
    let (status, answer) = raw(app.authority(), "POST", "/login", &headers, &format!("token={DASHBOARD_TOKEN}")).await;
    assert_eq!(status, 303, "{answer}");
    let line = answer.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
    line.split_once(':').unwrap().1.trim().to_owned()
}

fn with_token(
    dir: &tempfile::TempDir,
    db: &str,
    target: &str,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("SCRAPE_TARGETS", target.to_owned()),
        ("DB_PATH", dir.path().join(db).display().to_string()),
        ("DASHBOARD_TOKEN", DASHBOARD_TOKEN.to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_secure_is_auto_always_or_never() {
    let dir = tempfile::tempdir().unwrap();
    let target = dead_url().await;
    let secure = |cookie: &str| cookie.split(';').any(|a| a.trim().eq_ignore_ascii_case("secure"));
    for (value, plain, behind_https) in [("auto", false, true), ("always", true, true), ("never", false, false)] {
        let app =
            Running::start(&["serve"], &with_token(&dir, &format!("{value}.db"), &target, &[("COOKIE_SECURE", value)]));
        assert_eq!(secure(&sign_in(&app, false).await), plain, "COOKIE_SECURE={value} over http");
        assert_eq!(secure(&sign_in(&app, true).await), behind_https, "COOKIE_SECURE={value} behind https");
        app.stop();
    }
    let out = process::output(
        &mut zai_dash(&["serve"], &with_token(&dir, "bad.db", &target, &[("COOKIE_SECURE", "sometimes")])),
        EXIT_LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("COOKIE_SECURE \"sometimes\""), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_session_epoch_signs_every_session_out_on_the_replicas_that_change_it() {
    let dir = tempfile::tempdir().unwrap();
    let target = dead_url().await;
    let client = reqwest::Client::new();
    let status = |app: &Running, cookie: &str| {
        let req = client.get(app.url("/api/config")).header("cookie", cookie.split(';').next().unwrap().to_owned());
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // Two replicas sharing the token and the epoch (nothing else: each has its own file).
    let a = Running::start(&["serve"], &with_token(&dir, "a.db", &target, &[("SESSION_EPOCH", "1")]));
    let b = Running::start(&["serve"], &with_token(&dir, "b.db", &target, &[("SESSION_EPOCH", "1")]));
    let cookie = sign_in(&a, false).await;
    assert_eq!(status(&a, &cookie).await, 200);
    assert_eq!(status(&b, &cookie).await, 200, "any replica with the same token and epoch accepts it");
    b.stop();
    // The operator bumps the epoch: a replica restarted with it refuses every older session.
    let b = Running::start(&["serve"], &with_token(&dir, "b.db", &target, &[("SESSION_EPOCH", "2")]));
    assert_eq!(status(&b, &cookie).await, 401, "signed out by the new epoch");
    let fresh = sign_in(&b, false).await;
    assert_eq!(status(&b, &fresh).await, 200);
    assert_eq!(status(&a, &fresh).await, 401, "a replica still on the old epoch does not know the new sessions");
    assert_eq!(status(&a, &cookie).await, 200, "nor has it signed the old ones out yet");
    a.stop();
    b.stop();
}
