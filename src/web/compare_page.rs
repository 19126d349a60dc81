//! `/compare`: baseline versus candidate as the canary analysis judges them, server-rendered so
//! it is useful before any script runs: the verdict, one row per metric (both values, the
//! change with its confidence sequence, the classification and the reason) and the verdict
//! over time from the minutely history, with the candidate's version changes marked.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::api::known_variants;
use super::chrome::Chrome;
use super::dash_api::{CompareParams, Comparison, comparison};
use super::error::{ApiError, PageError};
use crate::canary::Row;

/// `/compare`.
#[derive(Template, WebTemplate)]
#[template(path = "compare.html")]
pub struct ComparePage {
    /// Chrome.
    pub chrome: Chrome,
    /// Variants for the form.
    pub variants: Vec<String>,
    /// Windows for the form (empty: since the rollout began).
    pub windows: [&'static str; 7],
    /// Selected window.
    pub window: String,
    /// The comparison, or why there is none.
    pub result: Result<CompareView, String>,
}

/// A comparison, formatted.
pub struct CompareView {
    /// The numbers.
    pub c: Comparison,
    /// Rows, formatted.
    pub rows: Vec<CompareRow>,
    /// What the interval is, in words.
    pub interval: String,
}

/// One formatted metric row.
pub struct CompareRow {
    /// Machine name (the row's id).
    pub metric: &'static str,
    /// Label.
    pub label: &'static str,
    /// Baseline value with its unit.
    pub baseline: String,
    /// Candidate value with its unit.
    pub candidate: String,
    /// The change with its unit.
    pub delta: String,
    /// Its confidence sequence.
    pub interval: String,
    /// `pass`, `high`, `low`, `nodata`, `undecided`.
    pub classification: &'static str,
    /// The row's verdict (CSS class).
    pub verdict: &'static str,
    /// Whether the metric is critical.
    pub critical: bool,
    /// The one-line reason.
    pub reason: String,
    /// Candidate requests until it decides, when undecided.
    pub needed: String,
}

/// A number with about four significant digits.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.4}")
    }
}

fn signed(v: f64) -> String {
    if v >= 0.0 { format!("+{}", num(v)) } else { num(v) }
}

fn classification(r: &Row) -> &'static str {
    use crate::canary::Classification::*;
    match r.classification {
        Pass => "pass",
        High => "high",
        Low => "low",
        Nodata => "nodata",
        Undecided => "undecided",
    }
}

fn fmt_row(r: &Row) -> CompareRow {
    let unit = r.metric.unit();
    let value = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{} {unit}", num(v)));
    let du = r.delta_unit();
    CompareRow {
        metric: r.metric.name(),
        label: r.metric.label(),
        baseline: value(r.baseline),
        candidate: value(r.candidate),
        delta: r.delta.map_or_else(|| "–".to_owned(), |d| format!("{}{du}", signed(d))),
        interval: r.delta_ci.map_or_else(|| "–".to_owned(), |[lo, hi]| format!("[{}, {}]{du}", signed(lo), signed(hi))),
        classification: classification(r),
        verdict: r.verdict.as_str(),
        critical: r.critical,
        reason: r.reason(),
        needed: r.needed_requests().map_or_else(String::new, |n| format!("{n:.0}")),
    }
}

fn interval_text(c: &Comparison) -> String {
    use crate::ports::rollout::Chosen;
    let span = format!("{} to {}", c.since, c.until);
    match (c.interval, &c.version) {
        (Chosen::Rollout, Some(v)) => format!("since {} reached version {v}: {span}", c.candidate),
        (Chosen::Rollout, None) => format!("since {}'s first scrape: {span}", c.candidate),
        (Chosen::Window, _) => format!("the last {:.0} minutes: {span}", c.window_seconds / 60.0),
        _ => span,
    }
}

/// `GET /compare?baseline=&candidate=&window=` (also `since`, `start`/`end`). A bad parameter
/// still shows the form (to fix it), with the reason and status 400.
pub async fn compare(
    State(state): State<AppState>,
    Query(params): Query<CompareParams>,
) -> Result<Response, PageError> {
    let variants: Vec<String> = known_variants(&state).await?.into_iter().collect();
    let window = params.window.clone().unwrap_or_default();
    let result = match comparison(&state, &params).await {
        Ok(c) => Ok(CompareView { rows: c.metrics.iter().map(fmt_row).collect(), interval: interval_text(&c), c }),
        Err(ApiError::BadRequest(m)) => Err(m),
        Err(e) => return Err(e.into()),
    };
    let status = if result.is_ok() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    let page = ComparePage {
        chrome: Chrome::new(&state, "compare"),
        variants,
        windows: ["", "5m", "15m", "30m", "1h", "6h", "24h"],
        window,
        result,
    };
    Ok((status, page).into_response())
}
