//! Benchmarks of the dashboard pages. `cargo bench --bench pages` prints the table that
//! BENCHMARKS.md quotes: server time of `/` at 1 h and 7 d (goal <= 5 ms) and the bytes a
//! browser transfers for the page and its assets (goal <= 150 KB).
//!
//! Same data as the pipeline benchmark: 2 variants x 3 pods, 24 h of 5 s rows and 7 d of
//! 1 min rows built from the fixture exposition, served by the real router over loopback.

#[path = "support/fill.rs"]
mod fill;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use fill::{percentile, prefill};
use tokio_util::sync::CancellationToken;
use zai_dash::clock::{Clock, SystemClock};
use zai_dash::config::Settings;
use zai_dash::health::HealthBoard;
use zai_dash::hub::Hub;
use zai_dash::store::Store;
use zai_dash::store::source::StoreSource;
use zai_dash::store::write::WriterStats;
use zai_dash::web::{self, AppState};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pages.db");
    let store = Store::open(&path).unwrap();
    let now = SystemClock.now_ms();
    let started = Instant::now();
    prefill(&store, now);
    let fill_s = started.elapsed().as_secs_f64();
    let settings = Settings {
        point_width: Duration::from_secs(5),
        rollup_width: Duration::from_secs(60),
        scrape_interval: Duration::from_secs(5),
        ..Settings::for_tests(vec![], path)
    };
    let charts: Arc<zai_dash::web::pages::ChartCache> = Default::default();
    let state = AppState {
        source: Arc::new(StoreSource::new(store.clone(), settings.store(), Arc::new(zai_dash::clock::SystemClock))),
        settings: Arc::new(settings.web()),
        store: Some(store),
        hub: Hub::new(1, 16, 16),
        health: HealthBoard::default(),
        clock: Arc::new(SystemClock),
        ready: Arc::new(AtomicBool::new(true)),
        stopping: CancellationToken::new(),
        writer: Arc::new(WriterStats::default()),
        metrics: Arc::new(zai_dash::web::selfmetrics::SelfMetrics::default()),
        charts: charts.clone(),
        sessions: None,
        alerts: zai_dash::alerts::Alerts::new(&zai_dash::alerts::AlertSettings::default()),
        remote: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, web::router(state)).await.unwrap() });
    // Counts bytes as sent: no transparent decompression.
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client.get(url).header("accept-encoding", "gzip").send().await.unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap().len()
        }
    };
    println!("# zai-dash dashboard benchmarks\n");
    println!(
        "## `/` server time (release; 2 variants x 3 pods: 24 h of 5 s rows, 7 d of 1 min rows; prefill took \
         {fill_s:.0} s; 100 requests over loopback after 30 warm-up)\n"
    );
    println!("| page | HTML (gzip) | reads | p50 | p99 | goal |");
    println!("|---|---|---|---|---|---|");
    for range in ["1h", "7d"] {
        let path = format!("/?range={range}&variant=all");
        for cold in [true, false] {
            let mut times = Vec::new();
            let mut size = 0;
            for i in 0..130 {
                if cold {
                    charts.clear();
                }
                let t = Instant::now();
                size = get(path.clone()).await;
                if i >= 30 {
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            let (p50, p99) = (percentile(&mut times, 0.5), percentile(&mut times, 0.99));
            let reads = if cold {
                "read and built (first viewer of a tick)"
            } else {
                "panels cached (other viewers, same tick)"
            };
            println!("| `{path}` | {:.1} KB | {reads} | {p50:.2} ms | {p99:.2} ms | <= 5 ms |", size as f64 / 1024.0);
        }
    }
    // For scale: the store read alone, as the JSON API answers it.
    for range in ["1h", "7d"] {
        let path = format!("/api/metrics?range={range}&max_points=240");
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            get(path.clone()).await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (p50, p99) = (percentile(&mut times, 0.5), percentile(&mut times, 0.99));
        println!("| `{path}` (for scale: the chart points alone, JSON) | - | read | {p50:.2} ms | {p99:.2} ms | - |");
    }
    println!();
    let page = client.get(format!("{base}/?range=1h")).send().await.unwrap().text().await.unwrap();
    let asset = |marker: &str| {
        let start = page.find(marker).unwrap() + marker.len();
        page[start..].split('"').next().unwrap().to_owned()
    };
    let (css, js) = (asset("rel=\"stylesheet\" href=\""), asset("<script src=\""));
    let mut total = 0;
    println!("## Bytes transferred for a first visit (gzip, as a browser asks)\n");
    println!("| resource | bytes |");
    println!("|---|---|");
    for (name, path) in
        [("`/?range=1h` (HTML with inline SVG)", "/?range=1h".to_owned()), ("app.css", css), ("app.js", js)]
    {
        let n = get(path).await;
        total += n;
        println!("| {name} | {n} |");
    }
    println!("| **total** (goal <= 150 KB) | **{total} ({:.1} KB)** |", total as f64 / 1024.0);
    println!();
}
