//! Shared test harness: fake zai-proxy targets on loopback, a real zai-dash on port 0 with a
//! real SQLite file, and small HTTP helpers.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod disk;
pub mod process;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zai_dash::clock::{SharedClock, SystemClock};
use zai_dash::config::{Settings, TargetSpec};

/// How a fake target answers `/metrics`.
#[derive(Clone)]
pub enum Behaviour {
    /// A zai-proxy exposition from the simulator.
    Healthy,
    /// Answers after `delay`.
    Slow(Duration),
    /// Answers 200 with a body that is not an exposition.
    Garbage,
    /// Answers 503: a pod that has not started yet or was stopped (every scrape fails).
    Down,
}

/// A simulated zai-proxy whose counters grow with wall time, so rates are known exactly.
#[derive(Clone)]
pub struct Sim {
    pub variant: String,
    /// Requests per second (status 200).
    pub ok_rate: f64,
    /// Requests per second (status 500).
    pub err_rate: f64,
    /// Latency of every new request, seconds.
    pub latency_s: f64,
    /// Counters start here (a long history already in the process).
    pub history_ok: f64,
    /// Latency of the history.
    pub history_latency_s: f64,
    /// Process start (counters reset when this moves).
    pub started: Instant,
    pub version: String,
    /// `(model, share of 2xx requests)`: when set, tokens (100 in and 30 out per request) and
    /// their cost are exported per model; when empty, only `glm-4.7` input tokens.
    pub models: Vec<(String, f64)>,
}

const BOUNDS: [f64; 15] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

impl Sim {
    pub fn new(variant: &str, ok_rate: f64) -> Self {
        Self {
            variant: variant.into(),
            ok_rate,
            err_rate: 0.0,
            latency_s: 0.2,
            history_ok: 0.0,
            history_latency_s: 0.2,
            started: Instant::now(),
            version: "1.11.1".into(),
            models: Vec::new(),
        }
    }

    /// Simulates a process restart: every counter starts again from zero.
    pub fn restart(&mut self) {
        self.started = Instant::now();
        self.history_ok = 0.0;
    }

    /// Renders the exposition as of now, in client_golang's form.
    pub fn render(&self) -> String {
        let t = self.started.elapsed().as_secs_f64();
        let ok = (self.history_ok + self.ok_rate * t).floor();
        let new_ok = ok - self.history_ok;
        let err = (self.err_rate * t).floor();
        let v = &self.variant;
        let mut s = String::new();
        s += "# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines 23\n";
        s += &format!(
            "# TYPE zai_proxy_build_info gauge\nzai_proxy_build_info{{build_time=\"x\",commit=\"y\",variant=\"{v}\",version=\"{}\"}} 1\n",
            self.version
        );
        s += &format!(
            "# TYPE zai_proxy_concurrent_requests gauge\nzai_proxy_concurrent_requests{{variant=\"{v}\"}} 3\n"
        );
        s += &format!("# TYPE zai_proxy_max_workers gauge\nzai_proxy_max_workers{{variant=\"{v}\"}} 10\n");
        s += "# TYPE zai_proxy_request_duration_seconds histogram\n";
        let labels = format!("method=\"POST\",path=\"/v1/messages\",status_code=\"200\",variant=\"{v}\"");
        for le in BOUNDS {
            let mut c = 0.0;
            if self.history_latency_s <= le {
                c += self.history_ok;
            }
            if self.latency_s <= le {
                c += new_ok;
            }
            s += &format!("zai_proxy_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {c}\n");
        }
        s += &format!("zai_proxy_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {ok}\n");
        s += &format!(
            "zai_proxy_request_duration_seconds_sum{{{labels}}} {}\n",
            self.history_ok * self.history_latency_s + new_ok * self.latency_s
        );
        s += &format!("zai_proxy_request_duration_seconds_count{{{labels}}} {ok}\n");
        s += "# TYPE zai_proxy_requests_total counter\n";
        s += &format!("zai_proxy_requests_total{{{labels}}} {ok}\n");
        if err > 0.0 {
            s += &format!(
                "zai_proxy_requests_total{{method=\"POST\",path=\"/v1/messages\",status_code=\"500\",variant=\"{v}\"}} {err}\n"
            );
        }
        s += "# TYPE zai_proxy_tokens_total counter\n";
        if self.models.is_empty() {
            s += &format!(
                "zai_proxy_tokens_total{{direction=\"input\",model=\"glm-4.7\",pricing_tier=\"off_peak\",variant=\"{v}\"}} {}\n",
                ok * 100.0
            );
            return s;
        }
        let mut cost = String::from("# TYPE zai_proxy_estimated_cost_usd_total counter\n");
        for (model, share) in &self.models {
            for (direction, per_request, usd_per_token) in [("input", 100.0, 0.0006e-3), ("output", 30.0, 0.0022e-3)] {
                let labels =
                    format!("direction=\"{direction}\",model=\"{model}\",pricing_tier=\"off_peak\",variant=\"{v}\"");
                let tokens = (ok * share).floor() * per_request;
                s += &format!("zai_proxy_tokens_total{{{labels}}} {tokens}\n");
                cost += &format!("zai_proxy_estimated_cost_usd_total{{{labels}}} {}\n", tokens * usd_per_token);
            }
        }
        s + &cost
    }

    /// The lifetime p95 (seconds) a dashboard reading cumulative buckets would show.
    pub fn lifetime_p95(&self) -> f64 {
        let t = self.started.elapsed().as_secs_f64();
        let new_ok = (self.history_ok + self.ok_rate * t).floor() - self.history_ok;
        let total = self.history_ok + new_ok;
        let rank = 0.95 * total;
        let mut below = 0.0;
        let mut lower = 0.0;
        for le in BOUNDS {
            let mut c = 0.0;
            if self.history_latency_s <= le {
                c += self.history_ok;
            }
            if self.latency_s <= le {
                c += new_ok;
            }
            if c >= rank {
                return lower + (le - lower) * (rank - below) / (c - below);
            }
            below = c;
            lower = le;
        }
        lower
    }
}

/// A fake target on 127.0.0.1:0.
pub struct FakeTarget {
    pub url: String,
    pub sim: Arc<Mutex<Sim>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub scrapes: Arc<Mutex<u64>>,
    cancel: CancellationToken,
}

#[derive(Clone)]
struct FakeState {
    sim: Arc<Mutex<Sim>>,
    behaviour: Arc<Mutex<Behaviour>>,
    scrapes: Arc<Mutex<u64>>,
}

async fn metrics(State(s): State<FakeState>) -> axum::response::Response {
    *s.scrapes.lock().unwrap() += 1;
    let behaviour = s.behaviour.lock().unwrap().clone();
    match behaviour {
        Behaviour::Healthy => {}
        Behaviour::Slow(d) => tokio::time::sleep(d).await,
        Behaviour::Garbage => return (StatusCode::OK, "<html>this is not an exposition{{{").into_response(),
        Behaviour::Down => return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
    }
    let body = s.sim.lock().unwrap().render();
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

impl FakeTarget {
    pub async fn start(sim: Sim, behaviour: Behaviour) -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), sim, behaviour).await
    }

    /// A fake target on a listener the test bound (another loopback address, a given port).
    pub async fn start_on(listener: TcpListener, sim: Sim, behaviour: Behaviour) -> Self {
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let state = FakeState {
            sim: Arc::new(Mutex::new(sim)),
            behaviour: Arc::new(Mutex::new(behaviour)),
            scrapes: Arc::new(Mutex::new(0)),
        };
        let cancel = CancellationToken::new();
        let app = Router::new().route("/metrics", get(metrics)).with_state(state.clone());
        let c = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(c.cancelled_owned()).await.unwrap();
        });
        Self { url, sim: state.sim, behaviour: state.behaviour, scrapes: state.scrapes, cancel }
    }

    pub fn scrapes(&self) -> u64 {
        *self.scrapes.lock().unwrap()
    }
}

impl Drop for FakeTarget {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A URL on which nothing listens, and nothing will while the test binary runs: its port is
/// bound without listening, so a connection is refused, and the socket is never closed.
///
/// A port bound and released at once (as this did before) could be taken by another test
/// running beside the one using it: once, in CI, a webhook meant to fail with "connection
/// failed" reached a live server instead.
pub async fn dead_url() -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}/metrics", socket.local_addr().unwrap());
    std::mem::forget(socket);
    url
}

/// Parses `SCRAPE_TARGETS`-style entries.
pub fn targets<S: AsRef<str>>(entries: &[S]) -> Vec<TargetSpec> {
    let joined: Vec<&str> = entries.iter().map(AsRef::as_ref).collect();
    zai_dash::config::parse_targets(&joined.join(",")).unwrap()
}

/// A running zai-dash.
pub struct TestApp {
    pub base: String,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub async fn start(settings: Settings) -> Self {
        Self::start_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(settings: Settings, clock: SharedClock) -> Self {
        Self::start_with(settings, clock, Arc::new(zai_dash::scrape::discovery::SystemResolver)).await
    }

    /// Starts with the resolver `dns+http://` targets use.
    pub async fn start_with(
        settings: Settings,
        clock: SharedClock,
        resolver: zai_dash::scrape::discovery::SharedResolver,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle =
            tokio::spawn(zai_dash::app::run_with_resolver(settings, clock, listener, shutdown.clone(), resolver));
        let app = Self { base, shutdown, handle };
        wait_for("healthz", Duration::from_secs(10), || async { get_status(&app.url("/healthz")).await == 200 }).await;
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        get_json(&self.url(path)).await
    }

    /// Stops the app and waits for a clean exit.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(15), self.handle).await.expect("app did not stop in time");
        r.unwrap().expect("app returned an error");
    }
}

pub async fn get_json(url: &str) -> serde_json::Value {
    let resp = reqwest::get(url).await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

pub async fn get_status(url: &str) -> u16 {
    match reqwest::get(url).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Polls `check` until it holds or `limit` passes (then panics naming `what`).
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Fast settings for pipeline tests: 200 ms scrapes, 500 ms points, a fresh database.
pub fn settings(dir: &tempfile::TempDir, targets: Vec<TargetSpec>) -> Settings {
    Settings::for_tests(targets, dir.path().join("zai-dash.db"))
}

/// Points of `/api/metrics` for one variant.
pub async fn points(app: &TestApp, query: &str) -> Vec<serde_json::Value> {
    app.json(&format!("/api/metrics?{query}")).await.as_array().cloned().unwrap_or_default()
}
