//! Hostile and broken targets (issue 11's reliability suite): the real binary scrapes targets
//! that export extreme values, floods of series and `le` bounds, redirect elsewhere, never end
//! their body, trickle it, or change a family's `# TYPE` between scrapes. Every page keeps
//! answering, memory stays bounded, numbers stay finite, and the limits are counted. Loopback
//! only. (How fast pages answer is measured by the benchmarks, not asserted here: a loaded
//! machine would make such a check flaky.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use common::process::{self, ChildGuard};
use common::*;

/// Serves `router` on a loopback port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// A target exporting values no real proxy would: the extremes of f64, NaN, infinities.
const EXTREME: &str = "# TYPE zai_proxy_concurrent_requests gauge\n\
zai_proxy_concurrent_requests{variant=\"extreme\"} -1.7e308\n\
# TYPE zai_proxy_max_workers gauge\n\
zai_proxy_max_workers{variant=\"extreme\"} 1.7e308\n\
# TYPE zai_proxy_rate_limit_requests_per_second gauge\n\
zai_proxy_rate_limit_requests_per_second{variant=\"extreme\"} NaN\n\
# TYPE zai_proxy_requests_total counter\n\
zai_proxy_requests_total{status_code=\"200\",variant=\"extreme\"} 1.7e308\n\
zai_proxy_requests_total{status_code=\"500\",variant=\"extreme\"} +Inf\n";

/// `n` counter series of one family (labels unique per series).
fn many_series(n: usize, variant: &str, value: u64) -> String {
    let mut s = String::from("# TYPE zai_proxy_tokens_total counter\n");
    for i in 0..n {
        s += &format!(
            "zai_proxy_tokens_total{{direction=\"input\",model=\"m{i}\",pricing_tier=\"peak\",variant=\"{variant}\"}} {value}\n"
        );
    }
    s
}

/// One histogram series with `n` distinct `le` bounds.
fn le_flood(n: usize) -> String {
    let mut s = String::from("# TYPE zai_proxy_request_duration_seconds histogram\n");
    for i in 0..n {
        s += &format!("zai_proxy_request_duration_seconds_bucket{{variant=\"buckets\",le=\"{}\"}} {i}\n", i + 1);
    }
    s += &format!("zai_proxy_request_duration_seconds_bucket{{variant=\"buckets\",le=\"+Inf\"}} {n}\n");
    s += &format!(
        "zai_proxy_request_duration_seconds_sum{{variant=\"buckets\"}} 1\nzai_proxy_request_duration_seconds_count{{variant=\"buckets\"}} {n}\n"
    );
    s
}

/// Every hostile target, and a healthy one whose traffic must keep flowing.
struct Targets {
    urls: Vec<String>,
    foreign_hits: Arc<AtomicU64>,
    healthy: FakeTarget,
}

async fn hostile_targets() -> Targets {
    let foreign_hits = Arc::new(AtomicU64::new(0));
    let hits = foreign_hits.clone();
    let foreign = serve(Router::new().route(
        "/metrics",
        get(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async { "# TYPE zai_proxy_requests_total counter\nzai_proxy_requests_total{variant=\"stolen\"} 1\n" }
        }),
    ))
    .await;
    let flips = Arc::new(AtomicU64::new(0));
    let scrapes = Arc::new(AtomicU64::new(0));
    let s2 = scrapes.clone();
    let routes = Router::new()
        .route("/extreme", get(|| async { EXTREME }))
        .route("/series", get(move || {
            let n = s2.fetch_add(1, Ordering::SeqCst);
            async move { many_series(30_000, "series", n) }
        }))
        .route("/buckets", get(|| async { le_flood(1_000) }))
        .route("/redirect", get(move || {
            let to = format!("{foreign}/metrics");
            async move { Redirect::temporary(&to) }
        }))
        .route("/endless", get(|| async {
            let chunk = "zai_proxy_requests_total{variant=\"endless\"} 1\n".repeat(1000);
            let stream = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            Body::from_stream(stream).into_response()
        }))
        .route("/slow", get(|| async {
            let stream = futures_util::stream::unfold(0u64, |i| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Some((Ok::<_, std::io::Error>(format!("# line {i}\n")), i + 1))
            });
            Body::from_stream(stream).into_response()
        }))
        .route("/flip", get(move || {
            let n = flips.fetch_add(1, Ordering::SeqCst);
            let kind = if n.is_multiple_of(2) { "counter" } else { "gauge" };
            async move {
                format!("# TYPE zai_proxy_requests_total {kind}\nzai_proxy_requests_total{{status_code=\"200\",variant=\"flip\"}} {}\n", 1000 + n)
            }
        }));
    let base = serve(routes).await;
    let healthy = FakeTarget::start(Sim::new("production", 20.0), Behaviour::Healthy).await;
    let mut urls: Vec<String> = ["extreme", "series", "buckets", "redirect", "endless", "slow", "flip"]
        .iter()
        .map(|p| format!("{base}/{p}"))
        .collect();
    urls.push(healthy.url.clone());
    Targets { urls, foreign_hits, healthy }
}

/// The real binary scraping `urls` every second (killed when the guard drops); returns the
/// guard and its base URL.
fn start_binary(urls: &[String], db: &std::path::Path) -> (ChildGuard, String) {
    let mut child = process::spawn(
        Command::new(env!("CARGO_BIN_EXE_zai-dash"))
            .arg("serve")
            .env_remove("DASHBOARD_TOKEN")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("DB_PATH", db)
            .env("SCRAPE_TARGETS", urls.join(","))
            .env("SCRAPE_INTERVAL", "1s")
            .env("SCRAPE_TIMEOUT", "800ms")
            .env("RUST_LOG", "zai_dash=error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.take_stdout()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    (child, base)
}

/// Scrapes of `target` counted in a `/metrics` text, every result together.
fn scrapes_of(text: &str, target: &str) -> f64 {
    let label = format!("target=\"{target}\"}}");
    text.lines()
        .filter(|l| l.starts_with("zai_dash_scrapes_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_targets_neither_stall_pages_nor_grow_memory_and_limits_are_counted() {
    let t = hostile_targets().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = start_binary(&t.urls, &dir.path().join("h.db"));
    let url = |p: &str| format!("{base}{p}");
    wait_for("traffic from the healthy target", Duration::from_secs(30), || async {
        let s = get_json(&url("/api/status")).await;
        s["production"]["req_rate"].as_f64().unwrap_or(0.0) > 0.0
    })
    .await;
    wait_for("three scrapes of every hostile target", Duration::from_secs(60), || async {
        let text = reqwest::get(url("/metrics")).await.unwrap().text().await.unwrap();
        t.urls.iter().all(|u| scrapes_of(&text, u) >= 3.0)
    })
    .await;
    // A page that hung behind a never-ending scrape would hit the client's timeout.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    for page in ["/", "/?range=7d", "/targets", "/compare", "/api/status", "/api/metrics?range=5m", "/metrics"] {
        let resp = client.get(url(page)).send().await.unwrap_or_else(|e| panic!("{page}: {e}"));
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(status.is_success() || page == "/compare", "{page}: {status}");
        assert!(!body.contains("NaN") && !body.contains("inf,"), "{page} holds a non-finite number");
    }
    let points = get_json(&url("/api/metrics?range=5m&variant=extreme")).await;
    for p in points.as_array().unwrap() {
        for field in ["concurrent_requests", "max_workers", "rate_limit_rps", "req_rate", "worker_utilization"] {
            assert!(p[field].as_f64().is_some_and(f64::is_finite), "{field} in {p}");
        }
    }
    let targets = get_json(&url("/api/targets")).await;
    let by_path = |p: &str| {
        targets.as_array().unwrap().iter().find(|x| x["url"].as_str().unwrap().ends_with(p)).cloned().unwrap()
    };
    let redirect = by_path("/redirect");
    assert_eq!(redirect["up"], false);
    assert!(redirect["last_error"].as_str().unwrap().contains("redirect to another origin not followed"), "{redirect}");
    assert_eq!(t.foreign_hits.load(Ordering::SeqCst), 0, "the other origin was never asked");
    assert!(
        by_path("/endless")["last_error"].as_str().unwrap().contains("larger than")
            || by_path("/endless")["last_error"].as_str().unwrap().contains("timed out")
    );
    assert!(by_path("/slow")["last_error"].as_str().unwrap().contains("timed out"));
    assert_eq!(by_path("/series")["up"], true, "a flood of series still scrapes");
    assert_eq!(by_path("/buckets")["up"], true);
    let metrics = reqwest::get(url("/metrics")).await.unwrap().text().await.unwrap();
    let dropped = |p: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with("zai_dash_scrape_series_dropped_total") && l.contains(p))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(dropped("/series\"") >= 10_000.0, "30,000 series, 20,000 kept: {}", dropped("/series\""));
    assert!(dropped("/buckets\"") >= 900.0, "1,000 bounds, 64 kept");
    // The variant of a flipping family's target exists; its rates never go negative.
    let flip = get_json(&url("/api/metrics?range=5m&variant=flip")).await;
    assert!(flip.as_array().unwrap().iter().all(|p| p["req_rate"].as_f64().unwrap_or(0.0) >= 0.0));
    let rss = rss_mib(child.id());
    assert!(rss < 150.0, "RSS {rss:.0} MiB");
    child.kill();
    drop(t.healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_origin_redirect_is_followed() {
    let target = FakeTarget::start(Sim::new("production", 10.0), Behaviour::Healthy).await;
    let moved = serve(
        Router::new()
            .route("/old", get(|| async { Redirect::permanent("/new") }))
            .route("/new", get(|| async { Response::new(Body::from(Sim::new("moved", 1.0).render())) })),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(settings(&dir, targets(&[format!("{moved}/old"), target.url.clone()]))).await;
    wait_for("the moved target up", Duration::from_secs(30), || async {
        app.json("/api/targets").await.as_array().unwrap().iter().all(|t| t["up"] == true)
    })
    .await;
    app.stop().await;
}
