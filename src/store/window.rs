//! Sums of increases over a whole window, per variant: the per-model table (tokens and cost by
//! model) and the compare page's sample sizes, error counts and latency histograms.
//!
//! Unlike [`super::query::points`], nothing is re-bucketed: the window's rows are added up once,
//! so a quantile over the window comes from the window's summed bucket increases.

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::StoreError;
use super::query::{Table, raw_rows_by_target, target_rows, targets, variant_names, watermark};
use crate::point::{Counts, TargetRow};

/// What to sum.
#[derive(Debug, Clone)]
pub struct WindowQuery {
    /// Window start (exclusive), Unix ms.
    pub start_ms: i64,
    /// Window end (inclusive), Unix ms.
    pub end_ms: i64,
    /// Read `metrics_5s` only (else `metrics_1m` up to the rollup watermark, then `metrics_5s`).
    pub raw: bool,
    /// Width of a raw point and of a rollup: a row covers its width before its timestamp.
    pub widths: (i64, i64),
    /// Only this target URL.
    pub target_url: Option<String>,
}

impl WindowQuery {
    /// The window of `window_ms` ending at `end_ms` over every target, read as `/api/compare`
    /// reads it: raw rows when the window is at most an hour and raw rows still cover it
    /// (`raw_since_ms`), else rollups up to the watermark and raw rows after it.
    pub fn ending(end_ms: i64, window_ms: i64, widths: (i64, i64), raw_since_ms: i64) -> Self {
        let start_ms = end_ms - window_ms;
        let raw = window_ms <= super::query::RAW_RANGE_LIMIT_MS && start_ms >= raw_since_ms;
        Self { start_ms, end_ms, raw, widths, target_url: None }
    }
}

/// One variant's sums over a window.
#[derive(Debug, Clone, Default)]
pub struct WindowSums {
    /// Increases, summed over the variant's pods.
    pub counts: Counts,
    /// Start of the first bucket with data in the window: rates over the window divide by the
    /// time from here to the window's end (what the data covers), not by the window's length.
    pub data_from_ms: i64,
}

impl WindowSums {
    /// Seconds the data covers inside a window ending at `end_ms`.
    pub fn covered_seconds(&self, end_ms: i64) -> f64 {
        (end_ms - self.data_from_ms).max(0) as f64 / 1000.0
    }
}

/// Increases of every variant over the window, summed over its pods, with where its data starts.
pub fn window_sums(conn: &Connection, q: &WindowQuery) -> Result<BTreeMap<String, WindowSums>, StoreError> {
    let names = variant_names(conn)?;
    let wm = if q.raw { i64::MIN } else { watermark(conn)?.unwrap_or(i64::MIN) };
    let (point_ms, rollup_ms) = q.widths;
    let targets: Vec<_> =
        targets(conn)?.into_iter().filter(|t| q.target_url.as_ref().is_none_or(|u| u == &t.url)).collect();
    let only = q.target_url.as_ref().and(targets.first()).map(|t| t.id);
    let mut out: BTreeMap<String, WindowSums> = BTreeMap::new();
    let mut add = |r: &TargetRow, width: i64| {
        let from = (r.ts_ms - width).max(q.start_ms);
        let sums =
            out.entry(r.variant.clone()).or_insert_with(|| WindowSums { data_from_ms: from, ..Default::default() });
        sums.counts.add(&r.counts);
        sums.data_from_ms = sums.data_from_ms.min(from);
    };
    if !q.raw && wm > q.start_ms {
        for t in &targets {
            for r in target_rows(conn, Table::Rollup, t.id, q.start_ms, q.end_ms.min(wm), &names)? {
                add(&r, rollup_ms);
            }
        }
    }
    if targets.is_empty() {
        return Ok(out);
    }
    let raw = raw_rows_by_target(conn, (q.start_ms.max(wm), q.end_ms), only, &names, q.widths)?;
    for r in raw.values().flatten() {
        add(r, point_ms);
    }
    Ok(out)
}

/// Increases of every variant over the window, summed over its pods.
pub fn window_counts(conn: &Connection, q: &WindowQuery) -> Result<BTreeMap<String, Counts>, StoreError> {
    Ok(window_sums(conn, q)?.into_iter().map(|(v, s)| (v, s.counts)).collect())
}

/// Chart points and the window's sums per variant from one read of the rows (the overview
/// needs both; decoding the rows dominates the cost of long ranges). Only rows inside
/// `(start_ms, end_ms]` are summed, although the points' first bucket may start earlier.
pub fn points_and_counts(
    conn: &Connection,
    q: &super::query::PointQuery,
    rollup_ms: i64,
) -> Result<(Vec<crate::point::Point>, BTreeMap<String, Counts>), StoreError> {
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let (start, end) = (q.start_ms, q.end_ms);
    let points = super::query::points_with(conn, q, rollup_ms, &mut |variant, ts, row| {
        if ts > start && ts <= end {
            match counts.get_mut(variant) {
                Some(c) => row.add_to(c),
                None => row.add_to(counts.entry(variant.to_owned()).or_default()),
            }
        }
    })?;
    Ok((points, counts))
}

/// Tokens and cost of one model over a window.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ModelUsage {
    /// Variant.
    pub variant: String,
    /// Model name as the proxy labelled it (untrusted text: escape it when rendering).
    pub model: String,
    /// Input tokens.
    pub tokens_input: f64,
    /// Output tokens.
    pub tokens_output: f64,
    /// Cache-read tokens.
    pub tokens_cache_read: f64,
    /// Cache-write tokens.
    pub tokens_cache_write: f64,
    /// Estimated cost, all directions (USD).
    pub cost_usd: f64,
    /// Seconds of the window the variant's data covers (the window, or less when data starts
    /// later).
    pub covered_seconds: f64,
}

/// One line per variant and model, largest cost first (then most tokens, then name).
pub fn model_usage(counts: &BTreeMap<String, Counts>) -> Vec<ModelUsage> {
    model_usage_covered(counts, &BTreeMap::new())
}

/// [`model_usage`] with each variant's covered seconds.
pub fn model_usage_covered(counts: &BTreeMap<String, Counts>, covered: &BTreeMap<String, f64>) -> Vec<ModelUsage> {
    let mut out = Vec::new();
    for (variant, c) in counts {
        let models: std::collections::BTreeSet<&String> = c.tokens.keys().chain(c.cost.keys()).collect();
        for model in models {
            let t = c.tokens.get(model).copied().unwrap_or_default();
            let cost = c.cost.get(model).copied().unwrap_or_default();
            out.push(ModelUsage {
                variant: variant.clone(),
                model: model.clone(),
                tokens_input: t[0],
                tokens_output: t[1],
                tokens_cache_read: t[2],
                tokens_cache_write: t[3],
                cost_usd: cost.iter().fold(0.0, |a, b| a + b),
                covered_seconds: covered.get(variant).copied().unwrap_or(0.0),
            });
        }
    }
    let tokens = |m: &ModelUsage| m.tokens_input + m.tokens_output + m.tokens_cache_read + m.tokens_cache_write;
    out.sort_by(|a, b| {
        b.cost_usd.total_cmp(&a.cost_usd).then(tokens(b).total_cmp(&tokens(a))).then(a.model.cmp(&b.model))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_listed_per_variant_costliest_first() {
        let mut a = Counts::default();
        a.tokens.insert("glm-4.7".into(), [100.0, 50.0, 10.0, 0.0]);
        a.cost.insert("glm-4.7".into(), [0.1, 0.2, 0.0, 0.0]);
        a.tokens.insert("glm-4.5-air".into(), [1000.0, 0.0, 0.0, 0.0]);
        a.cost.insert("glm-4.5-air".into(), [0.5, 0.0, 0.0, 0.0]);
        let mut b = Counts::default();
        b.cost.insert("only-cost".into(), [0.0, 0.01, 0.0, 0.0]);
        let m = model_usage(&BTreeMap::from([("production".to_owned(), a), ("canary".to_owned(), b)]));
        let names: Vec<&str> = m.iter().map(|u| u.model.as_str()).collect();
        assert_eq!(names, ["glm-4.5-air", "glm-4.7", "only-cost"]);
        assert!((m[1].cost_usd - 0.3).abs() < 1e-12);
        assert_eq!(m[1].tokens_output, 50.0);
        assert_eq!(m[2].variant, "canary");
        assert_eq!(m[2].tokens_input, 0.0);
    }
}
