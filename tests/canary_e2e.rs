//! The canary analysis end to end: fake zai-proxies whose counters and latency histograms
//! advance with seeded random traffic (Poisson arrivals, log-normal latency, a 5xx share), a
//! real zai-dash scraping them into a real SQLite file, and `/api/compare` read every 5 s as
//! Argo Rollouts and a person at the page read it. An A/A pair (same traffic) is never called
//! `warn` or `fail`; an A/B pair (5xx 2 % -> 8 %) reaches `fail`, and the same verdict shows on
//! `/metrics` (`zai_dash_canary_verdict`) and in `/api/compare/history`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::{TestApp, get_json, settings, targets};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Histogram bounds of zai-proxy's request duration, seconds.
const BOUNDS: [f64; 15] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// How often the fake traffic advances.
const STEP: Duration = Duration::from_millis(50);

/// splitmix64: a small seeded generator, enough for arrivals and latencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Poisson by Knuth's product of uniforms (small means only).
    fn poisson(&mut self, mean: f64) -> u64 {
        let limit = (-mean).exp();
        let (mut k, mut p) = (0, self.uniform());
        while p > limit {
            k += 1;
            p *= self.uniform();
        }
        k
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }
}

/// What a fake proxy serves.
#[derive(Clone, Copy)]
struct Traffic {
    /// Requests per second.
    rate: f64,
    /// Share of 5xx responses.
    errors: f64,
    /// Median latency, seconds (log-normal, sigma 0.5).
    median_s: f64,
}

/// Per status code: requests, cumulative-by-bound bucket counts, latency sum.
#[derive(Default)]
struct Counters {
    by_status: [(u64, [u64; BOUNDS.len()], f64); 2],
}

struct FakeProxy {
    url: String,
    stop: CancellationToken,
}

impl Drop for FakeProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn render(variant: &str, c: &Counters) -> String {
    let mut s = format!(
        "# TYPE zai_proxy_build_info gauge\nzai_proxy_build_info{{build_time=\"x\",commit=\"y\",variant=\"{variant}\",version=\"1.12.0\"}} 1\n"
    );
    s += "# TYPE zai_proxy_requests_total counter\n";
    for (i, code) in ["200", "500"].iter().enumerate() {
        let n = c.by_status[i].0;
        s += &format!(
            "zai_proxy_requests_total{{method=\"POST\",path=\"/v1/messages\",status_code=\"{code}\",variant=\"{variant}\"}} {n}\n"
        );
    }
    s += "# TYPE zai_proxy_request_duration_seconds histogram\n";
    for (i, code) in ["200", "500"].iter().enumerate() {
        let (n, buckets, sum) = &c.by_status[i];
        let labels = format!("method=\"POST\",path=\"/v1/messages\",status_code=\"{code}\",variant=\"{variant}\"");
        for (le, count) in BOUNDS.iter().zip(buckets) {
            s += &format!("zai_proxy_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {count}\n");
        }
        s += &format!("zai_proxy_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {n}\n");
        s += &format!("zai_proxy_request_duration_seconds_sum{{{labels}}} {sum}\n");
        s += &format!("zai_proxy_request_duration_seconds_count{{{labels}}} {n}\n");
    }
    s
}

async fn exposition(State((variant, counters)): State<(String, Arc<Mutex<Counters>>)>) -> String {
    render(&variant, &counters.lock().unwrap())
}

impl FakeProxy {
    /// Serves `variant`'s exposition on 127.0.0.1:0 while traffic advances every [`STEP`].
    async fn start(variant: &str, traffic: Traffic, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("{variant}=http://{}/metrics", listener.local_addr().unwrap());
        let counters = Arc::new(Mutex::new(Counters::default()));
        let stop = CancellationToken::new();
        let app = Router::new().route("/metrics", get(exposition)).with_state((variant.to_owned(), counters.clone()));
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(s.cancelled_owned()).await.unwrap();
        });
        let s = stop.clone();
        tokio::spawn(async move {
            let mut rng = Rng(seed);
            let mut tick = tokio::time::interval(STEP);
            loop {
                tokio::select! {
                    () = s.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let arrivals = rng.poisson(traffic.rate * STEP.as_secs_f64());
                let mut c = counters.lock().unwrap();
                for _ in 0..arrivals {
                    let status = usize::from(rng.uniform() < traffic.errors);
                    let latency = traffic.median_s * (0.5 * rng.normal()).exp();
                    let side = &mut c.by_status[status];
                    side.0 += 1;
                    side.2 += latency;
                    for (le, count) in BOUNDS.iter().zip(side.1.iter_mut()) {
                        if latency <= *le {
                            *count += 1;
                        }
                    }
                }
            }
        });
        Self { url, stop }
    }
}

async fn get_json_at(url: String) -> Value {
    get_json(&url).await
}

const HEALTHY: Traffic = Traffic { rate: 50.0, errors: 0.02, median_s: 0.2 };

fn row<'a>(answer: &'a Value, metric: &str) -> &'a Value {
    answer["metrics"].as_array().unwrap().iter().find(|r| r["metric"] == metric).unwrap()
}

/// Every 5 s: the A/A candidate is never `warn` or `fail`; the A/B candidate reaches `fail`
/// on its 5xx share, with the interval since the rollout began, and the minutely verdict shows
/// on `/metrics` and in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_never_alarms_and_a_broken_one_fails() {
    let production = FakeProxy::start("production", HEALTHY, 1).await;
    let same = FakeProxy::start("same", HEALTHY, 2).await;
    let worse = FakeProxy::start("worse", Traffic { errors: 0.08, ..HEALTHY }, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&production.url, &same.url, &worse.url]))).await;
    let compare =
        |candidate: &str| get_json_at(app.url(&format!("/api/compare?baseline=production&candidate={candidate}")));
    let started = Instant::now();
    let (mut looks, mut failed) = (0, None);
    while started.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        looks += 1;
        let aa = compare("same").await;
        let verdict = aa["verdict"].as_str().unwrap();
        assert!(matches!(verdict, "pass" | "insufficient_data"), "look {looks}: A/A called {verdict}: {aa:#}");
        let ab = compare("worse").await;
        if ab["verdict"] == "fail" {
            failed = Some((aa, ab));
            if looks >= 6 {
                break;
            }
        }
    }
    let (aa, ab) = failed.unwrap_or_else(|| panic!("the A/B candidate never failed in {looks} looks"));
    assert_eq!(ab["interval"], "rollout");
    assert_eq!(ab["started_by"], "first_scrape", "no version change: since the candidate's first scrape");
    assert_eq!(ab["method"], "always_valid_mixture");
    assert_eq!(ab["alpha"], 0.05);
    let errors = row(&ab, "error_rate");
    assert_eq!(errors["classification"], "high", "{errors:#}");
    assert_eq!(errors["verdict"], "fail");
    assert!(errors["delta_ci"][0].as_f64().unwrap() > 1.0, "the lower end is beyond +1 point: {errors:#}");
    assert!(errors["reason"].as_str().unwrap().contains(" of "), "sample sizes in the reason: {errors:#}");
    assert!(ab["reasons"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().starts_with("Error rate (5xx)")));
    assert!(ab["candidate_requests"].as_f64().unwrap() >= 100.0, "old clients' fields stay");
    let aa_errors = row(&aa, "error_rate");
    assert!(aa_errors["delta_ci"].is_array(), "{aa_errors:#}");
    assert!(matches!(aa_errors["classification"].as_str(), Some("pass" | "undecided")), "{aa_errors:#}");
    // The minutely judge (one rollup width in tests) gives the same verdict to /metrics and
    // the history.
    let gauge = "zai_dash_canary_verdict{baseline=\"production\",candidate=\"worse\"} 2";
    common::wait_for("the fail verdict on /metrics", Duration::from_secs(60), || async {
        reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap().contains(gauge)
    })
    .await;
    let history = app.json("/api/compare/history?baseline=production&candidate=worse&range=1h").await;
    let entries = history["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["verdict"] == "fail" && e["metrics"]["error_rate"] == "high"), "{history:#}");
    let aa_history = app.json("/api/compare/history?baseline=production&candidate=same&range=1h").await;
    for e in aa_history["entries"].as_array().unwrap() {
        assert!(matches!(e["verdict"].as_str(), Some("pass" | "insufficient_data")), "{e:#}");
    }
    app.stop().await;
}

/// Every form of the interval is answered, and a bad one is a 400 naming its parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_can_be_set_and_bad_parameters_are_named() {
    let production = FakeProxy::start("production", HEALTHY, 4).await;
    let canary = FakeProxy::start("canary", HEALTHY, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[&production.url, &canary.url]))).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let window = app.json("/api/compare?window=5m").await;
    assert_eq!((window["interval"].as_str(), window["window_seconds"].as_f64()), (Some("window"), Some(300.0)));
    assert_eq!(window["candidate"], "canary", "the one other variant");
    let since = app.json(&format!("/api/compare?since={}", now - 600)).await;
    assert_eq!(since["interval"], "since");
    let range = app.json(&format!("/api/compare?start={}&end={}", now - 600, now - 60)).await;
    assert_eq!((range["interval"].as_str(), range["window_seconds"].as_f64()), (Some("range"), Some(540.0)));
    for (query, named) in [
        ("window=5m&since=1", "window"),
        ("since=yesterday", "since"),
        ("end=1", "start"),
        ("start=2000000000", "start"),
        ("window=5s", "window"),
    ] {
        let resp = reqwest::get(app.url(&format!("/api/compare?{query}"))).await.unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(named), "{query}: {body}");
    }
    app.stop().await;
}
