//! JSON behind the dashboard: `GET /api/compare` (baseline versus candidate, with a top-level
//! `verdict` an Argo Rollouts web metric can test) and `GET /api/models` (tokens and cost by
//! model over a range).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};

use super::AppState;
use super::api::{known_variants, metrics_query};
use super::error::ApiError;
use super::models::{ModelUsage, model_usage_covered};
use crate::compare::{self, Comparison, SideStats};
use crate::ports::read::WindowQuery;
use crate::setting::duration_ms;
use crate::variant::is_valid_variant;

/// Longest comparison window: the 1 min table's default retention.
const MAX_WINDOW_MS: i64 = 7 * 86_400_000;

/// Query of `/api/compare` and `/compare`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(crate) struct CompareParams {
    /// Reference variant (default `production`).
    pub baseline: Option<String>,
    /// Variant under test (default: the one other variant, if exactly one).
    pub candidate: Option<String>,
    /// Window length (default `15m`).
    pub window: Option<String>,
}

fn variant_param(name: &str, v: &str) -> Result<String, ApiError> {
    if is_valid_variant(v) {
        Ok(v.to_owned())
    } else {
        Err(ApiError::BadRequest(format!("invalid {name} parameter {v:?}: use a name of a-z 0-9 _ . - (at most 64)")))
    }
}

/// Validates the parameters and compares the two variants over the window ending now.
pub(crate) async fn comparison(state: &AppState, p: &CompareParams) -> Result<Comparison, ApiError> {
    let nonempty = |o: &Option<String>| o.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let baseline = variant_param("baseline", &nonempty(&p.baseline).unwrap_or_else(|| "production".into()))?;
    let candidate = match nonempty(&p.candidate) {
        Some(c) => variant_param("candidate", &c)?,
        None => {
            let known = known_variants(state).await?;
            compare::default_candidate(known.iter().map(String::as_str), &baseline).map(str::to_owned).ok_or_else(|| {
                let list: Vec<&str> = known.iter().map(String::as_str).collect();
                ApiError::BadRequest(format!(
                    "missing candidate parameter: there is not exactly one variant besides {baseline:?} (known: {})",
                    list.join(", ")
                ))
            })?
        }
    };
    let window_text = nonempty(&p.window).unwrap_or_else(|| "15m".into());
    let window_ms = humantime::parse_duration(&window_text)
        .ok()
        .map(duration_ms)
        .filter(|ms| (60_000..=MAX_WINDOW_MS).contains(ms))
        .ok_or_else(|| {
            ApiError::BadRequest(format!("invalid window parameter {window_text:?}: use a duration from 1m to 7d"))
        })?;
    let end_ms = state.clock.now_ms();
    let sums = state.source.window(WindowQuery::ending(end_ms, window_ms)).await?;
    // Rates divide by the time each side's data covers, not by the window (docs/decisions.md, Windows).
    let side =
        |v: &str| sums.get(v).map(|s| SideStats::from_counts(&s.counts, s.covered_seconds(end_ms))).unwrap_or_default();
    Ok(compare::compare(&baseline, side(&baseline), &candidate, side(&candidate), window_ms as f64 / 1000.0))
}

/// `GET /api/compare?baseline=&candidate=&window=`.
pub(crate) async fn compare(
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
