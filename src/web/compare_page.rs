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
use crate::clock::rfc3339_ms;
use crate::store::canary_log::VerdictEntry;

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
    /// The score, or empty before any metric decided.
    pub score: String,
    /// The verdict over time.
    pub band: Band,
}

/// Longest span the band draws: the last day of the interval.
const BAND_MAX_MS: i64 = 86_400_000;
/// Width of the band's drawing, in its own units.
const BAND_WIDTH: f64 = 1000.0;

/// The stored verdict of each minute of the interval as a strip of colours, with the
/// candidate's version changes marked: server-drawn SVG, so it needs no script.
#[derive(Debug, Default)]
pub struct Band {
    /// One segment per stored minute.
    pub segments: Vec<Segment>,
    /// Version marks.
    pub marks: Vec<BandMark>,
    /// Start and end of the band, RFC 3339.
    pub from: String,
    /// End of the band.
    pub to: String,
    /// Why it is empty, when it is.
    pub note: Option<&'static str>,
}

/// A minute's verdict on the band.
#[derive(Debug)]
pub struct Segment {
    /// Left edge, in band units.
    pub x: String,
    /// Width.
    pub w: String,
    /// The verdict (CSS class).
    pub verdict: String,
    /// Tooltip: time, verdict, score.
    pub title: String,
}

/// A version mark on the band.
#[derive(Debug)]
pub struct BandMark {
    /// Position, in band units.
    pub x: String,
    /// What happened.
    pub label: String,
}

impl Band {
    /// The band of `entries` over `(from_ms, to_ms]`; each entry covers the time since the one
    /// before (or one `step_ms` for the first).
    pub fn new(entries: &[VerdictEntry], (from_ms, to_ms): (i64, i64), step_ms: i64) -> Band {
        let span = (to_ms - from_ms).max(1) as f64;
        let x = |ms: i64| BAND_WIDTH * ((ms - from_ms) as f64 / span).clamp(0.0, 1.0);
        let mut band = Band { from: rfc3339_ms(from_ms), to: rfc3339_ms(to_ms), ..Band::default() };
        let mut previous: Option<&VerdictEntry> = None;
        for e in entries {
            let start = previous.map_or(e.ts_ms - step_ms, |p| p.ts_ms).max(from_ms);
            let (x0, x1) = (x(start), x(e.ts_ms));
            let score = e.score.map_or_else(String::new, |s| format!(", score {s:.0}"));
            band.segments.push(Segment {
                x: format!("{x0:.2}"),
                w: format!("{:.2}", (x1 - x0).max(0.5)),
                verdict: e.verdict.clone(),
                title: format!("{}: {}{score}", rfc3339_ms(e.ts_ms), e.verdict),
            });
            let changed = previous.is_some_and(|p| p.version != e.version || p.since_ms != e.since_ms);
            if changed || previous.is_none() && e.since_ms >= from_ms {
                let what = e.version.as_deref().map_or_else(|| "first scrape".to_owned(), |v| format!("version {v}"));
                band.marks.push(BandMark {
                    x: format!("{:.2}", x(e.since_ms)),
                    label: format!("{}: rollout began ({what})", rfc3339_ms(e.since_ms)),
                });
            }
            previous = Some(e);
        }
        band
    }
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

/// The stored verdicts of the pair over the judged interval (its last day at most).
async fn band(state: &AppState, c: &Comparison) -> Result<Band, PageError> {
    let range = (c.since_ms.max(c.until_ms - BAND_MAX_MS), c.until_ms);
    let Some(store) = &state.store else {
        return Ok(Band { note: Some("source mode keeps no verdict history"), ..Band::new(&[], range, 1) });
    };
    let entries = store
        .verdict_history(&c.baseline, &c.candidate, range)
        .await
        .map_err(|e| PageError::from(crate::ports::read::SourceError::from(e)))?;
    let mut band = Band::new(&entries, range, state.settings.rollup_ms());
    if entries.is_empty() {
        band.note = Some("no verdict stored for this interval yet (one is stored each minute)");
    }
    Ok(band)
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
        Ok(c) => {
            let band = band(&state, &c).await?;
            let score = c.score.map_or_else(String::new, |s| format!("{s:.0}"));
            Ok(CompareView {
                rows: c.metrics.iter().map(fmt_row).collect(),
                interval: interval_text(&c),
                score,
                band,
                c,
            })
        }
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
