//! HTTP: the router, shared state, health endpoints and the mapping of errors to responses.
//! Handlers stay thin: parse, call the domain, shape the answer.

pub(crate) mod alerts;
pub(crate) mod api;
pub(crate) mod assets;
pub(crate) mod auth;
pub(crate) mod charts;
pub mod chrome;
pub(crate) mod compare_page;
pub(crate) mod dash_api;
pub mod dashboard;
pub(crate) mod error;
pub(crate) mod export;
pub mod grafana;
pub(crate) mod guard;
pub mod models;
pub mod objectives;
pub mod pages;
pub mod runway;
pub mod selfmetrics;
pub(crate) mod session;
pub mod spending;
pub(crate) mod sse;
pub mod waiting;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::health::HealthBoard;
use crate::hub::Hub;
use crate::ports::read::DataSource;
use crate::setting::{Secret, duration_ms};
use crate::store::{Store, WriterStats};
use selfmetrics::SelfMetrics;

/// A configured scrape target as the web layer shows it (`/api/config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredTarget {
    /// The `/metrics` URL (or `dns+http://` entry) as configured, credentials shown as `***`.
    pub url: String,
    /// Its variant before its first successful scrape (explicit name or the URL rule).
    pub initial_variant: String,
}

/// What the web layer needs to know of the configuration; `config` composes it.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Time between two scrapes of a target (health freshness, the live stream's hint).
    pub scrape_interval: Duration,
    /// Per-scrape timeout (shown by `/api/config`).
    pub scrape_timeout: Duration,
    /// Configured targets, their URLs redacted.
    pub targets: Vec<ConfiguredTarget>,
    /// Retention of `metrics_5s`.
    pub retention_5s: Duration,
    /// Retention of `metrics_1m`.
    pub retention_1m: Duration,
    /// Retention of `metrics_10m`.
    pub retention_10m: Duration,
    /// Period of the rollup and retention job.
    pub downsample_interval: Duration,
    /// Width of a raw point.
    pub point_width: Duration,
    /// Width of a rolled-up point.
    pub rollup_width: Duration,
    /// Token protecting pages, API and `/metrics`; `None` leaves them open.
    pub dashboard_token: Option<Secret>,
    /// A line every page shows (the demo says which data is simulated).
    pub notice: Option<String>,
    /// How long a dashboard session lasts after sign-in.
    pub session_ttl: Duration,
    /// `COOKIE_SECURE` and `SESSION_EPOCH`.
    pub sessions: session::SessionPolicy,
    /// DNS names (besides IP literals and `localhost`) a state-changing request may name.
    pub allowed_hosts: crate::host::AllowedHosts,
    /// Source mode: the engine's URL without credentials (`None`: SQLite mode).
    pub engine: Option<String>,
    /// Canary analysis settings (`CANARY_CONFIG`).
    pub canary: crate::canary::CanaryConfig,
}

impl WebSettings {
    /// Width of a raw point in milliseconds.
    pub(crate) fn point_ms(&self) -> i64 {
        duration_ms(self.point_width)
    }

    /// Width of a rolled-up point in milliseconds.
    pub(crate) fn rollup_ms(&self) -> i64 {
        duration_ms(self.rollup_width)
    }
}

/// Everything a handler may need; cloned per request (all fields are handles).
#[derive(Clone, Debug)]
pub struct AppState {
    /// What the web layer knows of the configuration.
    pub settings: Arc<WebSettings>,
    /// Where every number the pages and the API show comes from (the store, or a PromQL
    /// engine in source mode).
    pub source: Arc<dyn DataSource>,
    /// The database in SQLite mode (its size for self-metrics, revoked sessions); `None` in
    /// source mode, which keeps no file.
    pub store: Option<Store>,
    /// Live fan-out.
    pub hub: Hub,
    /// Per-target health.
    pub health: HealthBoard,
    /// Wall clock.
    pub clock: SharedClock,
    /// False once shutdown started (`/readyz` answers 503).
    pub ready: Arc<AtomicBool>,
    /// Cancelled when the server stops; ends live streams.
    pub stopping: CancellationToken,
    /// Writer counters.
    pub writer: Arc<WriterStats>,
    /// Self-metrics not kept elsewhere.
    pub metrics: Arc<SelfMetrics>,
    /// Recently built dashboard panels.
    pub charts: Arc<pages::ChartCache>,
    /// Dashboard sessions, when `DASHBOARD_TOKEN` is set.
    pub sessions: Option<Arc<session::Sessions>>,
    /// Remote write status, when `REMOTE_WRITE_URL` is set.
    pub remote: Option<Arc<crate::remote::RemoteStatus>>,
    /// Alert rules, states and receivers.
    pub alerts: crate::alerts::Alerts,
}

/// The application's routes. With `DASHBOARD_TOKEN` set, everything except `/healthz`,
/// `/readyz` and the sign-in routes requires the token (see [`auth`]); a state-changing request
/// must name an allowed host and come from the dashboard's origin first (see [`guard`]).
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(pages_router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(self_metrics))
        .route("/api/status", get(api::status))
        .route("/api/metrics", get(api::metrics))
        .route("/api/targets", get(api::targets))
        .route("/api/config", get(api::config))
        .route("/api/events", get(sse::events))
        .route("/api/export", get(export::export))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::state_changes))
        .layer(axum::middleware::from_fn(auth::security_headers))
        .with_state(state)
}

/// The dashboard's pages, their JSON and static assets, gzip-compressed when the client accepts
/// it (the chart markup shrinks about fivefold; the fastest level costs a fraction of a ms and
/// compresses nearly as well on this repetitive markup). Kept apart from the API routes so the SSE
/// stream and the Go-compatible endpoints are untouched.
fn pages_router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::overview))
        .route("/targets", get(pages::targets))
        .route("/compare", get(compare_page::compare))
        .route("/alerts", get(alerts::page))
        .route("/api/alerts", get(alerts::api))
        .route("/api/compare", get(dash_api::compare))
        .route("/api/compare/history", get(dash_api::history))
        .route("/api/models", get(dash_api::models))
        .route("/api/quota", get(runway::api))
        .route("/slos", get(objectives::page))
        .route("/api/slos", get(objectives::api))
        .route("/api/spend", get(spending::api))
        .route("/static/{name}", get(assets::serve))
        .layer(tower_http::compression::CompressionLayer::new().quality(tower_http::CompressionLevel::Fastest))
}

/// `GET /healthz`: 200 while the process serves. A database that refuses writes makes it
/// `degraded` with the reason, still 200: the process is alive and its pages and live view
/// work, and a liveness probe restarting it would lose the batches it holds in memory.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let Some(f) = state.health.storage() else { return axum::Json(serde_json::json!({ "status": "ok" })) };
    axum::Json(serde_json::json!({
        "status": "degraded",
        "storage": {
            "since": crate::clock::rfc3339_ms(f.since_ms),
            "last_error": f.last_error,
            "batches_held": f.batches_held,
            "failed_commits": f.failed_commits,
            "stored_until": f.stored_until_ms.map(crate::clock::rfc3339_ms),
        },
    }))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, axum::Json(serde_json::json!({ "status": "ready" })))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "status": "stopping" })))
    }
}

/// `GET /metrics`: zai-dash's own metrics. Database figures that cannot be read are left out
/// (and logged at DEBUG) rather than failing the whole scrape.
async fn self_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let db = match &state.store {
        Some(store) => match store.figures().await {
            Ok(db) => Some(db),
            Err(e) => {
                tracing::debug!(error = %e, "Database figures unavailable for /metrics.");
                None
            }
        },
        None => None,
    };
    let targets = state.health.snapshot();
    let remote = state.remote.as_ref().map(|r| r.snapshot(state.clock.now_ms()));
    let receivers = state.alerts.receivers();
    let snapshot = state.alerts.snapshot();
    let alerts = snapshot.alerts;
    let count = |p| alerts.iter().filter(|a| a.record.phase == p).count();
    let pending_firing = (count(crate::phase::AlertPhase::Pending), count(crate::phase::AlertPhase::Firing));
    let canary = latest_verdicts(&state).await;
    let body = selfmetrics::render(&selfmetrics::Inputs {
        targets: &targets,
        scrape_durations: state.health.durations(),
        writer: &state.writer,
        own: &state.metrics,
        sse_clients: state.hub.subscribers(),
        sqlite_heap_bytes: state.store.as_ref().map(|_| crate::store::Store::sqlite_heap_bytes()),
        sqlite_pool_waits: state.store.as_ref().map(crate::store::Store::pool_waits),
        db: db.as_ref(),
        remote: remote.as_ref(),
        receivers: &receivers,
        alerts_pending_firing: pending_firing,
        alert_evaluations: snapshot.evaluations,
        storage_healthy: state.health.storage().is_none(),
        canary: &canary,
    });
    ([(axum::http::header::CONTENT_TYPE, crate::expo::CONTENT_TYPE)], body)
}

/// Each pair's canary verdict judged within the last three minutes (a pair no longer judged
/// drops out rather than repeating a stale verdict).
async fn latest_verdicts(state: &AppState) -> Vec<crate::store::canary_log::VerdictEntry> {
    let Some(store) = &state.store else { return Vec::new() };
    let after = state.clock.now_ms() - 3 * state.settings.rollup_ms();
    store.latest_verdicts(after).await.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "Canary verdicts unavailable for /metrics.");
        Vec::new()
    })
}
