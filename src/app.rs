//! Wiring: opens the store, starts the writer, the scrapers, the downsampler and the HTTP
//! server, and stops them in dependency order. The only place that spawns long-lived tasks.
//!
//! In source mode (`Settings::engine`) none of those run: no file is opened, nothing is
//! scraped; the engine's live poller fills the health board and feeds the hub and the alerts,
//! and the web layer reads the engine through the same `DataSource` trait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::{self, Alerts};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::health::{HealthBoard, TargetHealth};
use crate::hub::Hub;
use crate::point::Point;
use crate::ports::alert_state::AlertStateStore;
use crate::ports::ingest::{Event, KnownTotals, PointSink};
use crate::ports::read::DataSource;
use crate::ports::samples::SampleSink;
use crate::promsource::{self, EngineSettings, MemoryAlerts, PromSource};
use crate::redact::RedactedUrl;
use crate::remote::{self, RemoteStatus};
use crate::scrape::discovery::{Discovery, SharedResolver, SystemResolver};
use crate::scrape::increase::TargetState;
use crate::scrape::{self, Outputs, Target, persist};
use crate::setting::duration_ms;
use crate::store::query::StoredTarget;
use crate::store::source::StoreSource;
use crate::store::{Store, WriterStats, write};
use crate::store::{canary_log, downsample};
use crate::web::selfmetrics::SelfMetrics;
use crate::web::session::Sessions;
use crate::web::{self, AppState};

/// Events kept for `Last-Event-ID` resume.
const RING_EVENTS: usize = 256;
/// Events a live client may fall behind before it is cut.
const CLIENT_BUFFER: usize = 64;
/// Ticks the writer queue holds before batches are dropped.
const WRITE_QUEUE: usize = 64;

/// Runs zai-dash on `listener` until `shutdown` is cancelled, then stops within the grace
/// period: readiness turns 503 first, then the server and scrapers stop, the ticker flushes its
/// last buckets, the writer commits them, and the store closes.
pub(crate) async fn run(
    settings: Settings,
    clock: SharedClock,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_resolver(settings, clock, listener, shutdown, Arc::new(SystemResolver)).await
}

/// [`run`] with the resolver `dns+http://` targets use (tests pass a fake one).
pub async fn run_with_resolver(
    settings: Settings,
    clock: SharedClock,
    listener: TcpListener,
    shutdown: CancellationToken,
    resolver: SharedResolver,
) -> anyhow::Result<()> {
    if let Some(engine) = settings.engine.clone() {
        return run_source(Arc::new(settings), &engine, clock, listener, shutdown).await;
    }
    let settings = Arc::new(settings);
    let store = open_store(&settings).await?;
    let (targets, seed) = load_targets(&store, &settings, clock.now_ms()).await?;
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let sessions = sessions(&settings, &store, clock.now_ms()).await?;
    let (samples, remote) = start_remote(&tracker, &stop, &settings, &store, &clock).await?;
    let loaded = Loaded { targets, seed, resolver, samples };
    let mut state = start_background(&tracker, &stop, &settings, clock, store, loaded)?;
    state.sessions = sessions;
    state.remote = remote;
    let ready = state.ready.clone();
    let listen = listening(&settings, &state.metrics);
    let server = tokio::spawn(crate::net::serve(listener, web::router(state), listen, stop.clone()));
    shutdown.cancelled().await;
    stop_in_order(settings.shutdown_grace, &ready, &stop, &tracker, server).await
}

/// Source mode: the engine's live poller, the alert engine over the engine's window statistics
/// (records in memory) and the HTTP server; no store, no scraper, no downsampler.
async fn run_source(
    settings: Arc<Settings>,
    engine: &EngineSettings,
    clock: SharedClock,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let timing = promsource::Timing {
        point_ms: settings.point_ms(),
        rollup_ms: settings.rollup_ms(),
        scrape_ms: duration_ms(settings.scrape_interval),
        delay_ms: duration_ms(engine.delay),
    };
    let memory = Arc::new(MemoryAlerts::default());
    let source = Arc::new(
        PromSource::new(engine, timing, clock.clone(), memory.clone())
            .context("cannot build the HTTP client for PROMETHEUS_URL")?,
    );
    let source_stats = source.stats();
    let health = HealthBoard::default();
    let hub = Hub::new(u64::try_from(clock.now_ms()).unwrap_or(0), RING_EVENTS, CLIENT_BUFFER);
    let alerts = Alerts::new(&settings.alerts);
    let sink = Arc::new(FanOut { hub: hub.clone(), alerts: alerts.feed() });
    tracker.spawn(promsource::live::run(source.clone(), health.clone(), sink, clock.clone(), stop.clone()));
    let parts = AlertParts {
        stats: source.clone(),
        bucket_sums: false,
        records: memory,
        health: &health,
        hub: &hub,
        clock: &clock,
    };
    start_alerts(&tracker, &stop, &settings, &alerts, parts)?;
    let ttl_ms = duration_ms(settings.session_ttl);
    let sessions =
        settings.dashboard_token.as_ref().map(|t| Arc::new(Sessions::new(t, &settings.sessions.epoch, ttl_ms)));
    let state = AppState {
        settings: Arc::new(settings.web()),
        source,
        store: None,
        hub,
        health,
        clock,
        ready: Arc::new(AtomicBool::new(true)),
        stopping: stop.clone(),
        writer: Arc::default(),
        metrics: Arc::new(SelfMetrics { engine: Some(source_stats), ..SelfMetrics::default() }),
        charts: Default::default(),
        sessions,
        remote: None,
        alerts,
    };
    let ready = state.ready.clone();
    let listen = listening(&settings, &state.metrics);
    let server = tokio::spawn(crate::net::serve(listener, web::router(state), listen, stop.clone()));
    shutdown.cancelled().await;
    stop_in_order(settings.shutdown_grace, &ready, &stop, &tracker, server).await
}

/// The dashboard listener's limits, the same in both modes; its closes are counted where
/// `/metrics` reads them.
fn listening(settings: &Settings, metrics: &SelfMetrics) -> crate::net::Listening {
    crate::net::Listening {
        limits: settings.listener,
        trips: metrics.listener.clone(),
        stalled_client: Some(settings.stalled_client_timeout),
    }
}

/// What start-up read from the database, plus how `dns+` names are resolved and where raw
/// samples go (remote write).
struct Loaded {
    targets: Vec<Target>,
    seed: Vec<KnownTotals>,
    resolver: SharedResolver,
    samples: Option<Arc<dyn SampleSink>>,
}

/// The remote writer when `REMOTE_WRITE_URL` is set: the sink the scrapers offer samples to
/// (their only holder, so the appender ends once they stop) and the status pages read.
async fn start_remote(
    tracker: &TaskTracker,
    stop: &CancellationToken,
    settings: &Settings,
    store: &Store,
    clock: &SharedClock,
) -> anyhow::Result<(Option<Arc<dyn SampleSink>>, Option<Arc<RemoteStatus>>)> {
    let Some(remote) = settings.remote.clone() else { return Ok((None, None)) };
    let receiver = remote.receiver();
    let running = remote::spawn(tracker, stop, remote, Arc::new(store.clone()), clock.clone()).await?;
    tracing::info!(receiver = %receiver, "Remote write on.");
    Ok((Some(running.sink), Some(running.status)))
}

/// The writer's points go to the live hub and to the alert engine (its ticks).
#[derive(Debug)]
struct FanOut {
    hub: Hub,
    alerts: Arc<alerts::Feed>,
}

impl PointSink for FanOut {
    fn publish(&self, points: Vec<Point>) {
        self.alerts.publish(points.clone());
        self.hub.publish(points);
    }

    fn publish_events(&self, events: Vec<Event>) {
        self.hub.publish_events(events);
    }
}

/// Starts the writer, the scrapers (with discovery), the alert engine and the downsampler on
/// `tracker`, and returns the state the web layer reads.
fn start_background(
    tracker: &TaskTracker,
    stop: &CancellationToken,
    settings: &Arc<Settings>,
    clock: SharedClock,
    store: Store,
    loaded: Loaded,
) -> anyhow::Result<AppState> {
    let Loaded { targets, seed, resolver, samples } = loaded;
    let health = HealthBoard::new(
        targets
            .iter()
            .map(|t| TargetHealth::new(t.id, RedactedUrl::from(&t.spec.url).to_string(), t.current_variant()))
            .collect(),
    );
    let hub = Hub::new(u64::try_from(clock.now_ms()).unwrap_or(0), RING_EVENTS, CLIENT_BUFFER);
    let writer_stats = Arc::new(WriterStats::default());
    let self_metrics = Arc::new(SelfMetrics::default());
    let (queue, rx) = write::channel(WRITE_QUEUE, writer_stats.clone(), &store);
    let alerts = Alerts::new(&settings.alerts);
    let sink = FanOut { hub: hub.clone(), alerts: alerts.feed() };
    let reporting = write::Reporting { health: health.clone(), clock: clock.clone() };
    tracker.spawn(write::run_writer(store.clone(), rx, sink, writer_stats.clone(), reporting, settings.rollup_ms()));
    let source = Arc::new(StoreSource::new(store.clone(), settings.store(), clock.clone()));
    let parts = AlertParts {
        stats: source.clone(),
        bucket_sums: true,
        records: Arc::new(store.clone()),
        health: &health,
        hub: &hub,
        clock: &clock,
    };
    start_alerts(tracker, stop, settings, &alerts, parts)?;
    let dns_entries: Vec<_> = settings.targets.iter().filter(|t| t.is_dns()).cloned().collect();
    let discovery = (!dns_entries.is_empty()).then(|| Discovery {
        entries: dns_entries,
        resolver,
        registry: Arc::new(store.clone()),
    });
    let scrapers = settings.scrape();
    let outputs = Outputs { batches: Arc::new(queue), samples };
    scrape::spawn(tracker, stop, scrapers, clock.clone(), targets, discovery, health.clone(), outputs, &seed);
    let durations = self_metrics.clone();
    let observe = move |secs| durations.downsample.observe(secs);
    tracker.spawn(downsample::run(store.clone(), settings.store(), clock.clone(), stop.clone(), observe));
    tracker.spawn(canary_log::run(canary_watch(settings, store.clone(), source.clone(), &clock), stop.clone()));
    tracker.spawn(crate::heap::return_freed_memory(stop.clone()));
    Ok(AppState {
        settings: Arc::new(settings.web()),
        source,
        store: Some(store),
        hub,
        health,
        clock,
        ready: Arc::new(AtomicBool::new(true)),
        stopping: stop.clone(),
        writer: writer_stats,
        metrics: self_metrics,
        charts: Default::default(),
        sessions: None,
        remote: None,
        alerts,
    })
}

/// What the alert engine reads and keeps: window statistics and records (the store's, or the
/// engine's and memory in source mode), health, the hub to announce on, the clock.
struct AlertParts<'a> {
    stats: Arc<dyn DataSource>,
    /// `stats` is the store's: a window's sums are its buckets' sums.
    bucket_sums: bool,
    records: Arc<dyn AlertStateStore>,
    health: &'a HealthBoard,
    hub: &'a Hub,
    clock: &'a SharedClock,
}

/// Starts the alert engine, evaluating on each live tick (one point interval, or the scrape
/// interval when longer).
fn start_alerts(
    tracker: &TaskTracker,
    stop: &CancellationToken,
    settings: &Settings,
    alerts: &Alerts,
    parts: AlertParts<'_>,
) -> anyhow::Result<()> {
    let deps = alerts::Deps {
        stats: parts.stats,
        health: parts.health.clone(),
        feed: alerts.feed(),
        store: parts.records,
        announcer: Arc::new(parts.hub.clone()),
        clock: parts.clock.clone(),
        canary: Arc::new(settings.canary.clone()),
        bucket_sums: parts.bucket_sums,
    };
    let interval = settings.point_width.max(settings.scrape_interval);
    alerts.spawn(tracker, stop, deps, interval).context("cannot build the alert receivers' HTTP client")
}

/// The minutely canary judge: every variant against `production` and against each baseline a
/// `canary_verdict` rule names.
fn canary_watch(
    settings: &Settings,
    store: Store,
    source: Arc<dyn crate::ports::read::DataSource>,
    clock: &SharedClock,
) -> canary_log::Watch {
    let mut baselines = vec!["production".to_owned()];
    for r in settings.alerts.rules.iter().filter(|r| r.expr.metric == alerts::metric::Metric::CanaryVerdict) {
        if !baselines.contains(&r.baseline) {
            baselines.push(r.baseline.clone());
        }
    }
    canary_log::Watch {
        store,
        source,
        config: Arc::new(settings.canary.clone()),
        baselines,
        clock: clock.clone(),
        every: settings.rollup_width,
    }
}

/// Sessions of `DASHBOARD_TOKEN`, with the revocations stored before (a signed-out session
/// stays signed out across restarts).
async fn sessions(settings: &Settings, store: &Store, now_ms: i64) -> anyhow::Result<Option<Arc<Sessions>>> {
    let Some(token) = settings.dashboard_token.as_ref() else { return Ok(None) };
    let sessions = Sessions::new(token, &settings.sessions.epoch, duration_ms(settings.session_ttl));
    let revoked = store.revoked_sessions(now_ms).await.context("cannot read revoked sessions from the database")?;
    sessions.restore_revoked(revoked);
    Ok(Some(Arc::new(sessions)))
}

/// Stops in dependency order within `grace`: readiness turns 503 for a short drain, then the
/// server and scrapers stop, the ticker flushes its last buckets, the writer commits them.
async fn stop_in_order(
    grace: Duration,
    ready: &AtomicBool,
    stop: &CancellationToken,
    tracker: &TaskTracker,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) -> anyhow::Result<()> {
    ready.store(false, Ordering::SeqCst);
    tracing::info!("Shutting down: readiness is 503, stopping scrapers and the server.");
    tokio::time::sleep(drain_delay(grace)).await;
    stop.cancel();
    tracker.close();
    let finished = tokio::time::timeout(grace, async {
        let _ = server.await;
        tracker.wait().await;
    })
    .await;
    match finished {
        Ok(()) => {
            tracing::info!("Stopped cleanly; every committed row is on disk.");
            Ok(())
        }
        Err(_) => anyhow::bail!("shutdown did not finish within SHUTDOWN_GRACE ({grace:?})"),
    }
}

/// How long readiness reports 503 before the listener closes, so load balancers stop sending
/// traffic first: a tenth of the grace period, at most one second.
fn drain_delay(grace: Duration) -> Duration {
    (grace / 10).min(Duration::from_secs(1))
}

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let path = settings.db_path.clone();
    tokio::task::spawn_blocking(move || Store::open(&path))
        .await?
        .with_context(|| format!("cannot open the database at DB_PATH {}", settings.db_path.display()))
}

/// Registers configured targets, restores their scrape state, and reads the latest running
/// totals of every target ever seen (the first live points' cumulative fields).
async fn load_targets(
    store: &Store,
    settings: &Settings,
    now_ms: i64,
) -> anyhow::Result<(Vec<Target>, Vec<KnownTotals>)> {
    // `dns+` entries are not targets themselves: each resolved address is registered when found.
    let specs: Vec<_> = settings.targets.iter().filter(|t| !t.is_dns()).cloned().collect();
    let pairs: Vec<(String, String)> = specs.iter().map(|t| (t.url.to_string(), t.initial_variant())).collect();
    store.replay_journals(persist::replay).await.context("cannot replay the scrape state journal")?;
    let (stored, seed) = store
        .register_configured(pairs, now_ms, settings.rollup_ms())
        .await
        .context("cannot read targets from the database")?;
    let targets = specs
        .into_iter()
        .zip(stored)
        .map(|(spec, st)| Target {
            id: st.id,
            state: restore_state(&st),
            spec,
            fallback_variant: None,
            last_variant: st.state.is_some().then(|| st.variant.clone()),
            last_success: None,
        })
        .collect();
    Ok((targets, seed))
}

fn restore_state(t: &StoredTarget) -> TargetState {
    match t.readable_state().map(|json| serde_json::from_str::<TargetState>(&json)) {
        None => TargetState::default(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            tracing::warn!(target_url = %RedactedUrl(&t.url), error = %e, "Stored scrape state is unreadable; the next scrape is a new baseline.");
            TargetState::default()
        }
    }
}
