//! Server-rendered pages (Askama): the overview `/`, `/targets` and `/compare`. Each is
//! complete without JavaScript (links and a GET form drive every choice, charts are inline
//! SVG); the live script only makes them update in place. Every value is escaped by the
//! template engine, so labels from targets (variant, URL, model, version) render as text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::api::{collect_status, known_variants, metrics_query};
use super::charts::{Mark, Unit, compact, fmt_value};
use super::chrome::Chrome;
use super::dashboard::{self, Card, Link, Panels, View};
use super::error::PageError;
use super::models::model_usage;
use crate::clock::rfc3339_ms;
use crate::ports::read::{ChartData, PointQuery};
use crate::redact::{RedactedUrl, same_target};

/// Everything the overview shows below the header.
pub struct Overview {
    /// Range links.
    pub ranges: Vec<Link>,
    /// Variant links.
    pub variants: Vec<Link>,
    /// Pod links (per-pod view).
    pub pods: Vec<Link>,
    /// The selected pod, if any.
    pub target: Option<String>,
    /// Selected range text.
    pub range: String,
    /// Selected variant.
    pub variant: String,
    /// Cards.
    pub cards: Vec<Card>,
    /// Quota runway per variant and window (empty: no variant reports quota).
    pub quota: Vec<super::runway::QuotaRow>,
    /// Spend today and this month (`None`: not read yet, or no cost and no budget).
    pub spend: Option<super::spending::SpendCard>,
    /// Chart panels, per-model and status code tables (shared by viewers of one tick).
    pub charts: Arc<Panels>,
    /// The selection, for download links.
    pub view: View,
}

impl Overview {
    /// Download link of one panel (or of every field, for `""`) in `format`.
    pub(crate) fn export_href(&self, panel: &str, format: &str) -> String {
        self.view.export_href(Some(panel).filter(|p| !p.is_empty()), format)
    }
}

/// `/`: cards, selectors and panels.
#[derive(Template, WebTemplate)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    /// Chrome.
    pub chrome: Chrome,
    /// Content.
    pub o: Overview,
}

/// `/?fragment=1`: the `<main>` content alone, for switching range without a reload.
#[derive(Template, WebTemplate)]
#[template(path = "overview_main.html")]
pub(crate) struct OverviewFragment {
    /// Content.
    pub o: Overview,
}

/// Gathers the overview for a selection.
pub(crate) async fn overview_data(state: &AppState, view: &View) -> Result<Overview, PageError> {
    let names: Vec<String> = known_variants(state).await?.into_iter().collect();
    let colors = dashboard::colors(&names);
    let charts = charts_for(state, view, &names).await?;
    let status = collect_status(state).await?;
    let latest = state.hub.latest();
    let cards = status
        .iter()
        .filter(|(name, _)| view.variant == "all" || **name == view.variant)
        .map(|(name, s)| {
            let color = colors.get(name).copied().unwrap_or(0);
            let version = s.version.clone().unwrap_or_else(|| "unknown".into());
            dashboard::card(name, color, s.healthy, version, latest.get(name).map(AsRef::as_ref))
        })
        .collect();
    let pods =
        std::iter::once(Link { label: "all pods".into(), href: pod_href(view, None), current: view.target.is_none() })
            .chain(state.health.snapshot().into_iter().map(|h| Link {
                href: pod_href(view, Some(&h.url)),
                current: view.target.as_deref().is_some_and(|t| same_target(t, &h.url)),
                label: format!("{} ({})", h.url, h.variant),
            }))
            .collect();
    let snapshot = state.alerts.snapshot();
    let quota = super::runway::rows(snapshot.quota.as_ref(), &colors, &view.variant);
    let spend = super::spending::card(snapshot.spend.as_ref(), &colors, &view.variant);
    Ok(Overview {
        quota,
        spend,
        ranges: dashboard::range_links(view),
        variants: dashboard::variant_links(view, &names),
        pods,
        target: view.target.clone(),
        range: view.range.clone(),
        variant: view.variant.clone(),
        cards,
        charts,
        view: view.clone(),
    })
}

type CacheKey = (String, String, Option<String>, i64, String);

struct CacheEntry {
    key: CacheKey,
    created_ms: i64,
    fresh_ms: i64,
    charts: Arc<Panels>,
}

/// Recently built panels, one cache per running app (in [`AppState`]). Every open overview
/// refetches its charts after each tick, so one build (one store read and the chart geometry)
/// serves every viewer of the same selection: ranges read from 5 s rows until the next tick is
/// published (the key holds the newest live point's time) and at most one point interval;
/// longer ranges, drawn from 1 min rows in points of many minutes, for one rollup interval, so
/// the costly first build of a 7 d view happens once a minute rather than once a tick.
#[derive(Default)]
pub struct ChartCache(Mutex<Vec<CacheEntry>>);

impl std::fmt::Debug for ChartCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChartCache")
    }
}

impl ChartCache {
    /// Forgets every cached panel build (the benchmark measures the uncached path with it).
    pub fn clear(&self) {
        if let Ok(mut c) = self.0.lock() {
            c.clear();
        }
    }
}

const CHART_CACHE_ENTRIES: usize = 32;

/// The panels of a selection: from the cache, else read and built.
async fn charts_for(state: &AppState, view: &View, names: &[String]) -> Result<Arc<Panels>, PageError> {
    let now = state.clock.now_ms();
    let q = metrics_query(state, &view.metrics_params(), now)?;
    let raw_points = state.source.grid_ms((q.start_ms, q.end_ms), 0, now) == state.settings.point_ms();
    let (newest, fresh_ms) = if raw_points {
        (state.hub.latest().values().map(|p| p.timestamp).max().unwrap_or(0), state.settings.point_ms())
    } else {
        (0, state.settings.rollup_ms())
    };
    let key: CacheKey = (view.range.clone(), view.variant.clone(), view.target.clone(), newest, names.join(","));
    if let Ok(cache) = state.charts.0.lock()
        && let Some(e) = cache.iter().find(|e| e.key == key && now - e.created_ms < e.fresh_ms)
    {
        return Ok(e.charts.clone());
    }
    let charts = Arc::new(build_charts(state, view, names, q).await?);
    if let Ok(mut cache) = state.charts.0.lock() {
        cache.retain(|e| e.key != key && now - e.created_ms < e.fresh_ms);
        if cache.len() >= CHART_CACHE_ENTRIES {
            cache.remove(0);
        }
        cache.push(CacheEntry { key, created_ms: now, fresh_ms, charts: charts.clone() });
    }
    Ok(charts)
}

/// Reads the window (chart points, summed increases, events) and builds the panels.
async fn build_charts(state: &AppState, view: &View, names: &[String], q: PointQuery) -> Result<Panels, PageError> {
    let (window, step) = ((q.start_ms, q.end_ms), q.step_ms);
    let ChartData { points, mut counts, events, periods } = state.source.chart(q).await?;
    if view.variant != "all" {
        counts.retain(|v, _| *v == view.variant);
    }
    let models = model_usage(&counts);
    let mut marks = version_marks(&events, view);
    marks.extend(super::alerts::alert_marks(&periods, view, state.clock.now_ms()));
    let mut panels = dashboard::panels_marked(&points, window, &dashboard::colors(names), (&counts, &models), &marks);
    panels.covered = covered_text(&points, window, step);
    Ok(panels)
}

/// A mark per version change of a shown target.
fn version_marks(events: &[crate::ports::ingest::Event], view: &View) -> Vec<Mark> {
    events
        .iter()
        .filter(|e| view.variant == "all" || e.variant == view.variant)
        .filter(|e| view.target.as_ref().is_none_or(|t| same_target(t, &e.target)))
        .map(|e| Mark {
            from_ms: e.ts_ms,
            to_ms: e.ts_ms,
            // Events stored by older versions hold the URL as configured.
            label: format!("{} UTC: {} ({}, {})", rfc3339_ms(e.ts_ms), e.detail, e.variant, RedactedUrl(&e.target)),
            class: "version",
            panels: &[],
        })
        .collect()
}

/// `the last 2m 10s` when the data starts inside the window (sums and rates cover only that).
fn covered_text(points: &[crate::point::Point], (start, end): (i64, i64), step: i64) -> String {
    let Some(first) = points.iter().map(|p| p.timestamp - step).min() else { return String::new() };
    let covered_ms = end - first.max(start);
    if first <= start + step {
        return String::new();
    }
    let secs = u64::try_from(covered_ms / 1000).unwrap_or(0);
    format!("the last {}", humantime::format_duration(std::time::Duration::from_secs(secs)))
}

fn pod_href(view: &View, target: Option<&str>) -> String {
    View { target: target.map(str::to_owned), ..view.clone() }.href(&view.range, &view.variant)
}

/// `GET /?range=&variant=&target=[&fragment=1]`.
pub(crate) async fn overview(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let view = View::from_params(&params);
    let o = overview_data(&state, &view).await?;
    if params.contains_key("fragment") {
        return Ok(OverviewFragment { o }.into_response());
    }
    Ok(OverviewPage { chrome: Chrome::new(&state, "overview"), o }.into_response())
}

/// One target's health, pre-formatted.
pub struct TargetLine {
    /// URL.
    pub url: String,
    /// Variant.
    pub variant: String,
    /// Up?
    pub up: bool,
    /// Last scrape attempt.
    pub last_scrape: String,
    /// Last success.
    pub last_success: String,
    /// Scrape duration.
    pub duration: String,
    /// Samples in the last exposition.
    pub samples: usize,
    /// Failures in a row.
    pub failures: u32,
    /// Last error, or empty.
    pub last_error: String,
    /// Version.
    pub version: String,
    /// Per-pod view of this target.
    pub href: String,
}

/// `/targets`.
#[derive(Template, WebTemplate)]
#[template(path = "targets.html")]
pub struct TargetsPage {
    /// Chrome.
    pub chrome: Chrome,
    /// Every target.
    pub targets: Vec<TargetLine>,
    /// Remote write, when configured.
    pub remote: Option<RemoteLine>,
}

/// The remote write block of `/targets`, formatted.
#[derive(Debug, Clone)]
pub struct RemoteLine {
    /// Receiver (no credentials, no query string).
    pub receiver: String,
    /// Samples waiting.
    pub queued: String,
    /// Age of the oldest waiting sample.
    pub age: String,
    /// Samples sent, failed for good, dropped.
    pub sent: String,
    /// Samples the receiver refused for good.
    pub failed: String,
    /// Samples dropped (backlog limit, series limit, full hand-off).
    pub dropped: String,
    /// When a request last succeeded, RFC 3339, or `never`.
    pub last_sent: String,
    /// The last error, or empty.
    pub last_error: String,
    /// When it happened, RFC 3339, or empty.
    pub last_error_at: String,
}

impl RemoteLine {
    fn new(r: &crate::remote::StatusSnapshot) -> Self {
        let (at, error) = r.last_error.clone().map_or((String::new(), String::new()), |(at, e)| (rfc3339_ms(at), e));
        Self {
            receiver: r.receiver.clone(),
            queued: compact(r.queued as f64),
            age: fmt_age(r.age_seconds),
            sent: compact(r.sent as f64),
            failed: compact(r.failed as f64),
            dropped: compact(r.dropped as f64),
            last_sent: r.last_sent_ms.map_or_else(|| "never".into(), rfc3339_ms),
            last_error: error,
            last_error_at: at,
        }
    }
}

/// `0 s`, `4.2 s`, `3m 20s`: the age of the oldest queued sample.
fn fmt_age(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        humantime::format_duration(std::time::Duration::from_secs(seconds as u64)).to_string()
    }
}

/// `GET /targets`. In source mode a failing engine is an error page, not its last health.
pub(crate) async fn targets(State(state): State<AppState>) -> Result<TargetsPage, PageError> {
    state.source.status()?;
    let view = View { range: "1h".into(), variant: "all".into(), target: None };
    let targets = state
        .health
        .snapshot()
        .into_iter()
        .map(|h| TargetLine {
            last_scrape: h.last_scrape_ms.map_or_else(|| "never".into(), rfc3339_ms),
            last_success: h.last_success().unwrap_or_else(|| "never".into()),
            duration: fmt_value(Unit::Ms, h.scrape_duration_ms),
            samples: h.samples,
            // Source mode does not know how many failed in a row: the page says only "down".
            failures: if state.settings.engine.is_none() { h.consecutive_failures } else { 0 },
            last_error: h.last_error.clone().unwrap_or_default(),
            version: h.version.clone().unwrap_or_else(|| "unknown".into()),
            href: pod_href(&view, Some(&h.url)),
            url: h.url,
            variant: h.variant,
            up: h.up,
        })
        .collect();
    let remote = state.remote.as_ref().map(|r| RemoteLine::new(&r.snapshot(state.clock.now_ms())));
    Ok(TargetsPage { chrome: Chrome::new(&state, "targets"), targets, remote })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ingest::{Event, EventKind};

    #[test]
    fn version_marks_hide_credentials_and_match_either_form_of_the_target() {
        // Stored before URLs were redacted: the event holds the URL as configured.
        let event = Event {
            ts_ms: 1_000,
            kind: EventKind::Version,
            variant: "production".into(),
            target: "http://u:pw-1@h:9/metrics?token=tk-1".into(),
            detail: "version 1 -> 2".into(),
        };
        let shown = "http://***@h:9/metrics?token=***";
        for target in [None, Some(shown), Some("http://u:pw-1@h:9/metrics?token=tk-1")] {
            let view = View { range: "1h".into(), variant: "all".into(), target: target.map(str::to_owned) };
            let marks = version_marks(std::slice::from_ref(&event), &view);
            assert_eq!(marks.len(), 1, "{target:?}");
            assert!(marks[0].label.ends_with(&format!("(production, {shown})")), "{}", marks[0].label);
        }
        let other = View { range: "1h".into(), variant: "all".into(), target: Some("http://***@h:10/metrics".into()) };
        assert!(version_marks(&[event], &other).is_empty());
    }
}
