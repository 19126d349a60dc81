//! JSON behind the dashboard: `GET /api/compare` (baseline versus candidate judged by the
//! sequential canary analysis, with a top-level `verdict` an Argo Rollouts web metric can
//! test), `GET /api/compare/history` (the verdict stored each minute) and `GET /api/models`
//! (tokens and cost by model over a range).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::Serialize;

use super::AppState;
use super::api::{known_variants, metrics_query, parse_time_ms};
use super::error::ApiError;
use super::models::{ModelUsage, model_usage_covered};
use crate::canary::{METHOD, Row, Verdict};
use crate::clock::rfc3339_ms;
use crate::ports::read::{SideStats, StartedBy, WindowQuery};
use crate::ports::rollout::{self, Chosen, Interval, Judged};
use crate::setting::duration_ms;
use crate::variant::is_valid_variant;

/// Longest `window`: the 1 min table's default retention.
const MAX_WINDOW_MS: i64 = 7 * 86_400_000;
/// Longest interval `since` or `start`/`end` may ask for.
const MAX_INTERVAL_MS: i64 = 400 * 86_400_000;

/// Query of `/api/compare` and `/compare`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(crate) struct CompareParams {
    /// Reference variant (default `production`).
    pub baseline: Option<String>,
    /// Variant under test (default: the one other variant, if exactly one).
    pub candidate: Option<String>,
    /// The last N (old clients); default: since the rollout began.
    pub window: Option<String>,
    /// From this time to now (RFC 3339 or Unix seconds).
    pub since: Option<String>,
    /// Start of an explicit interval.
    pub start: Option<String>,
    /// End of an explicit interval (default now).
    pub end: Option<String>,
}

/// The answer of `/api/compare`: the judgement, the interval judged, and the fields clients of
/// the fixed-window comparison read (`window_seconds`, the sample sizes, both sides' numbers).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// `pass`, `warn`, `fail` or `insufficient_data`: what Argo Rollouts reads.
    pub verdict: Verdict,
    /// Baseline variant.
    pub baseline: String,
    /// Candidate variant.
    pub candidate: String,
    /// Weighted share of passing metrics among decided ones, 0-100.
    pub score: Option<f64>,
    /// One line per metric that warns or fails or holds the verdict.
    pub reasons: Vec<String>,
    /// The statistical method.
    pub method: &'static str,
    /// Chance of ever calling a healthy canary `warn` or `fail`, over all metrics and looks.
    pub alpha: f64,
    /// Level of a weight-1 hypothesis after the split of `alpha`.
    pub level: f64,
    /// Hypotheses tested.
    pub hypotheses: usize,
    /// Requests a side needs before anything is judged.
    pub min_requests: f64,
    /// Start of the interval judged (exclusive), RFC 3339.
    pub since: String,
    /// End of the interval judged, RFC 3339.
    pub until: String,
    /// How the interval was chosen: `rollout`, `since`, `range` or `window`.
    pub interval: Chosen,
    /// What marks the rollout's start (`version`, `first_scrape`), for `interval: rollout`.
    pub started_by: Option<StartedBy>,
    /// The candidate's version since `since`, when a version change marks it.
    pub version: Option<String>,
    /// Strata folded (scrape ticks, or minutes for intervals answered from 1 min rows).
    pub strata: usize,
    /// Length of the interval, seconds.
    pub window_seconds: f64,
    /// Seconds of the interval both sides have data for (the shorter side's coverage).
    pub covered_seconds: f64,
    /// Requests on the baseline side.
    pub baseline_requests: f64,
    /// Requests on the candidate side.
    pub candidate_requests: f64,
    /// One row per metric judged.
    pub metrics: Vec<Row>,
    /// The baseline's numbers over the interval (rates over the time its data covers).
    pub baseline_stats: SideStats,
    /// The candidate's numbers over the interval.
    pub candidate_stats: SideStats,
    /// Start of the interval, Unix ms (the page's band).
    #[serde(skip)]
    pub since_ms: i64,
    /// End of the interval, Unix ms.
    #[serde(skip)]
    pub until_ms: i64,
}

fn variant_param(name: &str, v: &str) -> Result<String, ApiError> {
    if is_valid_variant(v) {
        Ok(v.to_owned())
    } else {
        Err(ApiError::BadRequest(format!("invalid {name} parameter {v:?}: use a name of a-z 0-9 _ . - (at most 64)")))
    }
}

fn nonempty(o: &Option<String>) -> Option<String> {
    o.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The default candidate: the one variant other than `baseline`, if there is exactly one.
pub fn default_candidate<'a>(variants: impl IntoIterator<Item = &'a str>, baseline: &str) -> Option<&'a str> {
    let mut others = variants.into_iter().filter(|v| *v != baseline);
    let first = others.next()?;
    others.next().is_none().then_some(first)
}

/// The pair named by the parameters (the candidate defaults to the only other variant).
async fn pair(state: &AppState, p: &CompareParams) -> Result<(String, String), ApiError> {
    let baseline = variant_param("baseline", &nonempty(&p.baseline).unwrap_or_else(|| "production".into()))?;
    let candidate = match nonempty(&p.candidate) {
        Some(c) => variant_param("candidate", &c)?,
        None => {
            let known = known_variants(state).await?;
            default_candidate(known.iter().map(String::as_str), &baseline).map(str::to_owned).ok_or_else(|| {
                let list: Vec<&str> = known.iter().map(String::as_str).collect();
                ApiError::BadRequest(format!(
                    "missing candidate parameter: there is not exactly one variant besides {baseline:?} (known: {})",
                    list.join(", ")
                ))
            })?
        }
    };
    Ok((baseline, candidate))
}

fn time_param(name: &str, v: &str) -> Result<i64, ApiError> {
    parse_time_ms(v)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid {name} parameter {v:?}: use RFC 3339 or Unix seconds")))
}

/// An explicit interval asked for (`window`, `since`, `start`/`end`), `None` for the default
/// (since the rollout began). At most one form may be given.
pub fn explicit_interval(p: &CompareParams, now_ms: i64) -> Result<Option<Interval>, ApiError> {
    let (window, since, start, end) = (nonempty(&p.window), nonempty(&p.since), nonempty(&p.start), nonempty(&p.end));
    let forms = [window.is_some(), since.is_some(), start.is_some() || end.is_some()];
    if forms.iter().filter(|&&f| f).count() > 1 {
        return Err(ApiError::BadRequest(
            "invalid window parameter: give one of window, since, or start/end, not several".into(),
        ));
    }
    let interval =
        |since_ms: i64, until_ms: i64, chosen: Chosen| Interval { since_ms, until_ms, chosen, started: None };
    if let Some(w) = window {
        let ms = humantime::parse_duration(&w)
            .ok()
            .map(duration_ms)
            .filter(|ms| (60_000..=MAX_WINDOW_MS).contains(ms))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("invalid window parameter {w:?}: use a duration from 1m to 7d"))
            })?;
        return Ok(Some(interval(now_ms - ms, now_ms, Chosen::Window)));
    }
    let (since_ms, until_ms, chosen) = match (since, start, end) {
        (Some(s), _, _) => (time_param("since", &s)?, now_ms, Chosen::Since),
        (None, Some(s), e) => {
            let until = e.map_or(Ok(now_ms), |e| time_param("end", &e))?.min(now_ms);
            (time_param("start", &s)?, until, Chosen::Range)
        }
        (None, None, Some(_)) => {
            return Err(ApiError::BadRequest("missing start parameter: end needs a start".into()));
        }
        (None, None, None) => return Ok(None),
    };
    let name = if chosen == Chosen::Since { "since" } else { "start" };
    if since_ms >= until_ms {
        return Err(ApiError::BadRequest(format!("invalid {name} parameter: it must be before the end and now")));
    }
    if until_ms - since_ms > MAX_INTERVAL_MS {
        return Err(ApiError::BadRequest(format!("invalid {name} parameter: the interval is longer than 400d")));
    }
    Ok(Some(interval(since_ms, until_ms, chosen)))
}

/// Validates the parameters, judges the pair over the interval asked for (by default since the
/// candidate's rollout began) and reads both sides' numbers over it.
pub async fn comparison(state: &AppState, p: &CompareParams) -> Result<Comparison, ApiError> {
    let now_ms = state.clock.now_ms();
    let explicit = explicit_interval(p, now_ms)?;
    let (baseline, candidate) = pair(state, p).await?;
    let source = state.source.as_ref();
    let interval = match explicit {
        Some(i) => i,
        None => Interval::rollout(source, &candidate, now_ms).await?,
    };
    let judged = rollout::judge(source, (&baseline, &candidate), interval, &state.settings.canary).await?;
    let (since, until) = (judged.interval.since_ms, judged.interval.until_ms);
    let sums = source.window(WindowQuery { start_ms: since, end_ms: until, target_url: None }).await?;
    // Rates divide by the time each side's data covers, not by the interval.
    let side =
        |v: &str| sums.get(v).map(|s| SideStats::from_counts(&s.counts, s.covered_seconds(until))).unwrap_or_default();
    Ok(answer(judged, baseline.clone(), candidate.clone(), side(&baseline), side(&candidate)))
}

fn answer(judged: Judged, baseline: String, candidate: String, b: SideStats, c: SideStats) -> Comparison {
    let reasons = judged.reasons();
    let Judged { interval, judgement: j, strata, .. } = judged;
    let window_seconds = interval.seconds();
    Comparison {
        verdict: j.verdict,
        baseline,
        candidate,
        score: j.score,
        reasons,
        method: METHOD,
        alpha: j.alpha,
        level: j.level,
        hypotheses: j.hypotheses,
        min_requests: j.min_requests,
        since: rfc3339_ms(interval.since_ms),
        until: rfc3339_ms(interval.until_ms),
        interval: interval.chosen,
        started_by: interval.started.as_ref().map(|s| s.by),
        version: interval.started.and_then(|s| s.version),
        strata,
        window_seconds,
        covered_seconds: b.covered_seconds.min(c.covered_seconds),
        baseline_requests: b.requests,
        candidate_requests: c.requests,
        metrics: j.rows,
        baseline_stats: b,
        candidate_stats: c,
        since_ms: interval.since_ms,
        until_ms: interval.until_ms,
    }
}

/// `GET /api/compare?baseline=&candidate=&since=&start=&end=&window=`.
pub async fn compare(
    State(state): State<AppState>,
    Query(p): Query<CompareParams>,
) -> Result<Json<Comparison>, ApiError> {
    Ok(Json(comparison(&state, &p).await?))
}

/// `GET /api/models?range=&variant=&target=` (also `start`/`end` as in `/api/metrics`).
pub(crate) async fn models(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Vec<ModelUsage>>, ApiError> {
    let q = metrics_query(&state, &params, state.clock.now_ms())?;
    let (variant, end_ms) = (q.variant.clone(), q.end_ms);
    let mut sums = state.source.window(WindowQuery { start_ms: q.start_ms, end_ms, target_url: q.target_url }).await?;
    if let Some(v) = variant {
        sums.retain(|k, _| *k == v);
    }
    let covered = sums.iter().map(|(v, s)| (v.clone(), s.covered_seconds(end_ms))).collect();
    let counts = sums.into_iter().map(|(v, s)| (v, s.counts)).collect();
    Ok(Json(model_usage_covered(&counts, &covered)))
}

/// The answer of `/api/compare/history`.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    /// Baseline variant.
    pub baseline: String,
    /// Candidate variant.
    pub candidate: String,
    /// Start of the range (exclusive), RFC 3339.
    pub start: String,
    /// End of the range, RFC 3339.
    pub end: String,
    /// One entry a minute, ascending.
    pub entries: Vec<crate::store::canary_log::VerdictEntry>,
    /// Why there are none, when none can exist (source mode keeps no history).
    pub note: Option<&'static str>,
}

/// What the history says in source mode.
const NO_HISTORY: &str = "source mode keeps no history: zai-dash stores no verdicts without its database";

/// One pair's verdicts over a range (`range`, or `start`/`end` as in `/api/metrics`; default
/// the last 6 h).
pub async fn verdict_history(state: &AppState, params: &HashMap<String, String>) -> Result<History, ApiError> {
    let get = |k: &str| params.get(k).map(String::as_str).map(str::trim).filter(|s| !s.is_empty());
    let p = CompareParams {
        baseline: get("baseline").map(str::to_owned),
        candidate: get("candidate").map(str::to_owned),
        ..CompareParams::default()
    };
    let now_ms = state.clock.now_ms();
    let range = get("range").or(if get("start").is_some() { None } else { Some("6h") });
    let (start_ms, end_ms) = super::api::parse_window(range, get("start"), get("end"), now_ms)?;
    let (baseline, candidate) = pair(state, &p).await?;
    let (entries, note) = match &state.store {
        Some(store) => {
            let entries = store.verdict_history(&baseline, &candidate, (start_ms, end_ms)).await;
            (entries.map_err(crate::ports::read::SourceError::from)?, None)
        }
        None => (Vec::new(), Some(NO_HISTORY)),
    };
    Ok(History { baseline, candidate, start: rfc3339_ms(start_ms), end: rfc3339_ms(end_ms), entries, note })
}

/// `GET /api/compare/history?baseline=&candidate=&start=&end=` (or `range=`).
pub async fn history(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<History>, ApiError> {
    Ok(Json(verdict_history(&state, &params).await?))
}
