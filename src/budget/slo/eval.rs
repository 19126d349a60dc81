//! An objective's status from good/total counts: the SLI over its period, the error budget
//! left, burn rates over the workbook's windows and the state of its two alerts.
//!
//! Counts come through [`CountsSource`] so the store (window sums) and an engine (PromQL
//! `increase`) can both answer; the evaluation itself reads nothing else, so the page, the API
//! and the alerts of one tick agree.

use serde::Serialize;
use serde::ser::SerializeMap;

use super::{BURN_ALERTS, BURN_WINDOWS, BurnAlert, BurnWindow, Indicator, SloSpec, SloVariant};
use crate::phase::AlertPhase;

/// Good and total requests over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SloCounts {
    /// Requests that met the indicator.
    pub good: f64,
    /// All requests the indicator counts.
    pub total: f64,
}

impl SloCounts {
    /// The share of requests that were not good; `None` without requests. Counts that do not
    /// add up (more good than total, from a counter reset mid-window) are clamped into 0..=1.
    pub fn error_ratio(&self) -> Option<f64> {
        if !(self.total.is_finite() && self.good.is_finite() && self.total > 0.0) {
            return None;
        }
        Some(((self.total - self.good) / self.total).clamp(0.0, 1.0))
    }
}

/// What an evaluation reads: a variant's good and total requests of an indicator over
/// `(end_ms - window_ms, end_ms]`; `None` when unknown (not the same as no requests).
pub trait CountsSource {
    /// The counts, or `None`.
    fn good_total(&self, indicator: &Indicator, variant: &str, window_ms: i64, end_ms: i64) -> Option<SloCounts>;
}

impl<F> CountsSource for F
where
    F: Fn(&Indicator, &str, i64, i64) -> Option<SloCounts>,
{
    fn good_total(&self, indicator: &Indicator, variant: &str, window_ms: i64, end_ms: i64) -> Option<SloCounts> {
        self(indicator, variant, window_ms, end_ms)
    }
}

/// Burn rates per window of [`BURN_WINDOWS`], serialized as `{"5m": .., ..., "3d": ..}` in
/// that order; `null` for a window without requests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BurnRates(pub [Option<f64>; 7]);

impl BurnRates {
    /// The burn over the window labelled `label` (`"1h"`), if measured.
    pub fn get(&self, label: &str) -> Option<f64> {
        BURN_WINDOWS.iter().position(|w| w.label == label).and_then(|i| self.0[i])
    }
}

impl Serialize for BurnRates {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(BURN_WINDOWS.len()))?;
        for (w, v) in BURN_WINDOWS.iter().zip(self.0) {
            map.serialize_entry(w.label, &v)?;
        }
        map.end()
    }
}

/// The state of one generated alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloAlertState {
    /// `<name>BurnRatePage` or `<name>BurnRateTicket`.
    pub alert: String,
    /// `critical` (page) or `warning` (ticket).
    pub severity: &'static str,
    /// `firing` while a condition holds, else `inactive` (the workbook's alerts have no `for`).
    pub state: AlertPhase,
}

/// One objective for one variant, as `GET /api/slos` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloStatus {
    /// The objective's name.
    pub name: String,
    /// The variant.
    pub variant: String,
    /// `availability`, `latency` or `ttft`.
    pub indicator: &'static str,
    /// The bound of latency and TTFT, seconds; `null` for availability.
    pub threshold: Option<f64>,
    /// Percent of good requests aimed at (`99.5`).
    pub objective: f64,
    /// The period (`28d`).
    pub period: String,
    /// Share of good requests over the period; `null` without requests.
    pub sli: Option<f64>,
    /// Fraction of the period's error budget left: 1 untouched, 0 spent, negative overspent;
    /// `null` without requests.
    pub error_budget_remaining: Option<f64>,
    /// Error ratio over each window divided by the error budget.
    pub burn_rates: BurnRates,
    /// The page and ticket alerts.
    pub alerts: Vec<SloAlertState>,
}

/// `spec` for `variant` at `now_ms`.
pub fn evaluate(spec: &SloSpec, variant: &str, source: &impl CountsSource, now_ms: i64) -> SloStatus {
    let budget = spec.error_budget();
    let ratio = |window_ms: i64| source.good_total(&spec.indicator, variant, window_ms, now_ms)?.error_ratio();
    let period_ratio = ratio(spec.period_ms);
    let ratios = BURN_WINDOWS.map(|w| ratio(w.ms));
    let burn_rates = BurnRates(ratios.map(|r| r.map(|r| r / budget)));
    SloStatus {
        name: spec.name.clone(),
        variant: variant.to_owned(),
        indicator: spec.indicator.name(),
        threshold: spec.indicator.threshold_s(),
        objective: spec.objective_pct,
        period: spec.period_label(),
        sli: period_ratio.map(|r| 1.0 - r),
        error_budget_remaining: period_ratio.map(|r| 1.0 - r / budget),
        alerts: BURN_ALERTS
            .iter()
            .map(|a| SloAlertState {
                alert: spec.alert_name(a),
                severity: a.severity,
                state: phase(a, &ratios, budget),
            })
            .collect(),
        burn_rates,
    }
}

/// Every objective for each variant it covers (`*`: every one of `variants`; a named variant
/// even when not among them, so a configured objective never disappears from the list).
pub fn evaluate_all(specs: &[SloSpec], variants: &[String], source: &impl CountsSource, now_ms: i64) -> Vec<SloStatus> {
    let mut out = Vec::new();
    for spec in specs {
        match &spec.variant {
            SloVariant::One(v) => out.push(evaluate(spec, v, source, now_ms)),
            SloVariant::Each => out.extend(variants.iter().map(|v| evaluate(spec, v, source, now_ms))),
        }
    }
    out
}

/// `firing` when either condition holds: burn above the factor over both its windows. A
/// window without requests holds no condition. Compared as `ratio > factor * budget`, the
/// form the exported rules use, so both agree at the edge.
fn phase(alert: &BurnAlert, ratios: &[Option<f64>; 7], budget: f64) -> AlertPhase {
    let above = |window: BurnWindow, factor: f64| {
        let i = BURN_WINDOWS.iter().position(|w| *w == window);
        i.and_then(|i| ratios[i]).is_some_and(|r| r > factor * budget)
    };
    let firing = alert.conditions.iter().any(|c| above(c.long, c.factor) && above(c.short, c.factor));
    if firing { AlertPhase::Firing } else { AlertPhase::Inactive }
}
