//! Source mode next to SQLite mode on the same data: `cargo bench --bench source` prints the
//! table BENCHMARKS.md quotes.
//!
//! 2 variants x 3 fake pods (tests/common's simulator) are scraped every second by a real
//! Debian `prometheus` and by zai-dash in SQLite mode for `BENCH_SOURCE_SECS` (default 180).
//! Then two routers answer over loopback, one reading the SQLite file, one reading Prometheus
//! with PromQL, and the same requests go to both, interleaved request by request so that load
//! from other processes on the machine hits both modes alike. Pages are timed with the panel
//! cache emptied before each request (the first viewer of a tick), so each one reads its source.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/fill.rs"]
#[allow(dead_code)]
mod fill;
#[allow(dead_code)]
#[path = "../tests/accuracy/prom.rs"]
mod prom;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{FakeTarget, Sim, TestApp};
use fill::percentile;
use tokio_util::sync::CancellationToken;
use zai_dash::clock::{Clock, SharedClock, SystemClock};
use zai_dash::config::Settings;
use zai_dash::health::HealthBoard;
use zai_dash::hub::Hub;
use zai_dash::ports::read::DataSource;
use zai_dash::promsource::{EngineSettings, MemoryAlerts, PromSource, Timing};
use zai_dash::store::Store;
use zai_dash::store::source::StoreSource;
use zai_dash::web::pages::ChartCache;
use zai_dash::web::{self, AppState};

const SCRAPE: Duration = Duration::from_secs(1);
const WARMUP: usize = 10;
const TIMED: usize = 50;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

/// The web layer over `source`, served on loopback; its panel cache is returned to empty it.
async fn serve(settings: &Settings, source: Arc<dyn DataSource>, store: Option<Store>) -> (String, Arc<ChartCache>) {
    let charts: Arc<ChartCache> = Default::default();
    let clock: SharedClock = Arc::new(SystemClock);
    let state = AppState {
        source,
        settings: Arc::new(settings.web()),
        store,
        hub: Hub::new(1, 16, 16),
        health: HealthBoard::default(),
        clock,
        ready: Arc::new(AtomicBool::new(true)),
        stopping: CancellationToken::new(),
        writer: Arc::default(),
        metrics: Arc::default(),
        charts: charts.clone(),
        sessions: None,
        remote: None,
        alerts: zai_dash::alerts::Alerts::new(&zai_dash::alerts::AlertSettings::default()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, web::router(state)).await.unwrap() });
    (base, charts)
}

async fn run() {
    let secs: u64 = std::env::var("BENCH_SOURCE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(180);
    let mut pods = Vec::new();
    for (variant, rate) in [("production", 20.0), ("canary", 5.0)] {
        for _ in 0..3 {
            let mut sim = Sim::new(variant, rate);
            sim.models = vec![("glm-4.7".into(), 0.7), ("glm-4.5-air".into(), 0.3)];
            sim.err_rate = rate / 20.0;
            pods.push(FakeTarget::start(sim, common::Behaviour::Healthy).await);
        }
    }
    let urls: Vec<String> = pods.iter().map(|p| format!("{}={}", p.sim.lock().unwrap().variant, p.url)).collect();
    let instances: Vec<String> =
        pods.iter().map(|p| p.url.trim_start_matches("http://").trim_end_matches("/metrics").to_owned()).collect();
    let prometheus = prom::Prometheus::start(&instances, SCRAPE.as_millis() as u64, 800).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&dir, common::targets(&urls));
    settings.scrape_interval = SCRAPE;
    settings.scrape_timeout = Duration::from_millis(800);
    settings.point_width = Duration::from_secs(5);
    settings.rollup_width = Duration::from_secs(60);
    let scraper = TestApp::start(settings.clone()).await;
    eprintln!("Collecting {secs} s of data in both modes ...");
    tokio::time::sleep(Duration::from_secs(secs)).await;

    let store = Store::open(&settings.db_path).unwrap();
    let sqlite_source =
        Arc::new(StoreSource::new(store.clone(), settings.store(), Arc::new(zai_dash::clock::SystemClock)));
    let (sqlite, sqlite_charts) = serve(&settings, sqlite_source, Some(store)).await;
    let mut source_settings = settings.clone();
    let engine = EngineSettings::for_tests(&prometheus.base);
    source_settings.engine = Some(engine.clone());
    let timing = Timing {
        point_ms: settings.point_ms(),
        rollup_ms: settings.rollup_ms(),
        scrape_ms: SCRAPE.as_millis() as i64,
        delay_ms: engine.delay.as_millis() as i64,
    };
    let prom_source =
        Arc::new(PromSource::new(&engine, timing, Arc::new(SystemClock), Arc::new(MemoryAlerts::default())).unwrap());
    let (source, source_charts) = serve(&source_settings, prom_source, None).await;

    let client = reqwest::Client::new();
    let paths = [
        "/?range=1h&variant=all",
        "/?range=15m&variant=canary",
        "/api/metrics?range=1h&max_points=240",
        "/api/metrics?range=15m&variant=production",
        "/api/compare?baseline=production&candidate=canary&window=15m",
        "/api/models?range=1h",
    ];
    println!("# Source mode next to SQLite mode\n");
    println!(
        "2 variants x 3 pods scraped every {} s for {secs} s by Prometheus and by zai-dash (SQLite); {TIMED} requests \
         per row and mode after {WARMUP} warm-up, interleaved; pages with the panel cache emptied before each.\n",
        SCRAPE.as_secs()
    );
    println!("| request | SQLite p50 | SQLite p99 | source p50 | source p99 |");
    println!("|---|---|---|---|---|");
    for path in paths {
        let mut times = [Vec::new(), Vec::new()];
        for i in 0..WARMUP + TIMED {
            for (side, (base, charts)) in [(&sqlite, &sqlite_charts), (&source, &source_charts)].into_iter().enumerate()
            {
                charts.clear();
                let t = Instant::now();
                let resp = client.get(format!("{base}{path}")).send().await.unwrap();
                assert!(resp.status().is_success(), "{base}{path}: {}", resp.status());
                resp.bytes().await.unwrap();
                if i >= WARMUP {
                    times[side].push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        let [mut a, mut b] = times;
        println!(
            "| `{path}` | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            percentile(&mut a, 0.5),
            percentile(&mut a, 0.99),
            percentile(&mut b, 0.5),
            percentile(&mut b, 0.99)
        );
    }
    println!("\n(now {} ms)", SystemClock.now_ms());
    scraper.stop().await;
}
