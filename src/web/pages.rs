//! Server-rendered pages (Askama). Useful without JavaScript; every value is escaped by the
//! template engine, so labels from targets (variant, URL, version) render as text.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;

use super::AppState;
use super::api::{VariantStatus, collect_status};
use super::error::ApiError;
use crate::clock::rfc3339_ms;

/// `/`: current status per variant and the health of every target.
#[derive(Template, WebTemplate)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    /// zai-dash version.
    pub version: &'static str,
    /// One card per variant.
    pub variants: Vec<VariantCard>,
    /// Every target.
    pub targets: Vec<TargetLine>,
    /// Render time, RFC 3339.
    pub generated: String,
    /// Scrape interval, for the refresh hint.
    pub refresh_s: u64,
}

/// A variant's headline numbers, pre-formatted.
pub struct VariantCard {
    /// Variant name.
    pub name: String,
    /// Health badge.
    pub healthy: bool,
    /// Requests per second.
    pub req_rate: String,
    /// 5xx share.
    pub error_rate: String,
    /// Latency percentiles.
    pub p50: String,
    /// p95.
    pub p95: String,
    /// p99.
    pub p99: String,
    /// In-flight requests and worker use.
    pub concurrency: String,
    /// Token rates.
    pub tokens: String,
    /// Versions reported.
    pub version: String,
    /// Last successful scrape.
    pub last_scrape: String,
}

/// One target's health, pre-formatted.
pub struct TargetLine {
    /// URL.
    pub url: String,
    /// Variant.
    pub variant: String,
    /// Up?
    pub up: bool,
    /// Last success.
    pub last_success: String,
    /// Scrape duration.
    pub duration: String,
    /// Last error, or empty.
    pub last_error: String,
}

/// `GET /`.
pub async fn overview(State(state): State<AppState>) -> Result<OverviewPage, ApiError> {
    let status = collect_status(&state).await?;
    let variants = status.iter().map(|(name, s)| card(name, s)).collect();
    let targets = state
        .health
        .snapshot()
        .into_iter()
        .map(|h| TargetLine {
            last_success: h.last_success().unwrap_or_else(|| "never".into()),
            duration: format!("{:.0} ms", h.scrape_duration_ms),
            last_error: h.last_error.clone().unwrap_or_default(),
            url: h.url,
            variant: h.variant,
            up: h.up,
        })
        .collect();
    Ok(OverviewPage {
        version: crate::VERSION,
        variants,
        targets,
        generated: rfc3339_ms(state.clock.now_ms()),
        refresh_s: state.settings.scrape_interval.as_secs().max(5),
    })
}

fn card(name: &str, s: &VariantStatus) -> VariantCard {
    let ms = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), fmt_ms);
    VariantCard {
        name: name.to_owned(),
        healthy: s.healthy,
        req_rate: format!("{:.2}/s", s.req_rate),
        error_rate: s.error_rate_pct.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}%")),
        p50: ms(s.latency_p50_ms),
        p95: ms(s.latency_p95_ms),
        p99: ms(s.latency_p99_ms),
        concurrency: format!("{:.0} in flight, {:.0}% of workers", s.concurrent, s.worker_utilization * 100.0),
        tokens: format!("{:.0} in/s, {:.0} out/s", s.token_rate_in, s.token_rate_out),
        version: s.version.clone().unwrap_or_else(|| "unknown".into()),
        last_scrape: s.last_scrape.clone().unwrap_or_else(|| "never".into()),
    }
}

/// Milliseconds for humans: `850 ms`, `6.84 s`.
pub fn fmt_ms(v: f64) -> String {
    if v >= 1000.0 { format!("{:.2} s", v / 1000.0) } else { format!("{v:.0} ms") }
}
