//! Objectives: `GET /api/slos` and the `/slos` page (budget left, burn rates, the state of the
//! page and ticket alerts, and charts of both since zai-dash started), from the alert engine's
//! last evaluation, so the page, the API and the alerts of one tick agree.

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;

use super::AppState;
use super::charts::{ChartSpec, ChartView, Series, Unit, build};
use super::chrome::Chrome;
use crate::alerts::objectives::{SloSample, burn_window_labels};
use crate::budget::slo::SloStatus;
use crate::clock::rfc3339_ms;

/// `GET /api/slos`: one object per objective and variant (README, "Objectives on the pages").
pub async fn api(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.alerts.snapshot().slos)
}

/// A chart of the page (`chart.html` reads `p.title` and `c`).
#[derive(Debug, Clone)]
pub struct SloChart {
    /// Title, also the chart's label.
    pub title: String,
    /// Geometry.
    pub chart: ChartView,
}

/// One objective for one variant, ready to show.
#[derive(Debug, Clone)]
pub struct SloCard {
    /// `Available · production`.
    pub title: String,
    /// The objective in words.
    pub describe: String,
    /// SLI over the period (`99.62 %`, or `–`).
    pub sli: String,
    /// Error budget left (`76 %`, `-12 %`, or `–`).
    pub budget_left: String,
    /// `ok`, `warn` (under a quarter left) or `bad` (spent).
    pub budget_class: &'static str,
    /// Burn rate per window, in [`burn_window_labels`] order (`0.4x`, or `–`).
    pub burn: Vec<String>,
    /// `(alert, severity, state)`.
    pub alerts: Vec<(String, &'static str, &'static str)>,
    /// Budget left and burn-rate charts.
    pub charts: Vec<SloChart>,
}

/// `GET /slos`.
#[derive(Template, WebTemplate)]
#[template(path = "slos.html")]
pub struct SlosPage {
    /// Chrome.
    pub chrome: Chrome,
    /// Burn window labels, the table's header.
    pub windows: Vec<&'static str>,
    /// Objectives.
    pub cards: Vec<SloCard>,
    /// Time of the last evaluation, or `not yet`.
    pub evaluated: String,
    /// Whether the rules file has objectives at all.
    pub configured: bool,
}

/// `GET /slos`.
pub async fn page(State(state): State<AppState>) -> SlosPage {
    let snapshot = state.alerts.snapshot();
    let now = state.clock.now_ms();
    let cards = snapshot
        .slos
        .iter()
        .map(|s| {
            let history = snapshot.slo_history.get(&(s.name.clone(), s.variant.clone()));
            card(s, history.map(Vec::as_slice).unwrap_or_default(), now)
        })
        .collect();
    SlosPage {
        chrome: Chrome::new(&state, "slos"),
        windows: burn_window_labels(),
        cards,
        evaluated: snapshot.evaluated_ms.map_or_else(|| "not yet".to_owned(), rfc3339_ms),
        configured: state.alerts.rules().iter().any(|r| r.expr.metric == crate::alerts::metric::Metric::SloBurnRate),
    }
}

fn percent(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{:.*} %", decimals, v * 100.0))
}

/// The card of one status with its chart samples.
pub fn card(s: &SloStatus, history: &[SloSample], now_ms: i64) -> SloCard {
    let budget_class = match s.error_budget_remaining {
        Some(b) if b <= 0.0 => "bad",
        Some(b) if b < 0.25 => "warn",
        _ => "ok",
    };
    SloCard {
        title: format!("{} · {}", s.name, s.variant),
        describe: format!(
            "{} % of {} over {}",
            crate::expo::go_float(s.objective),
            match s.threshold {
                None => "requests without a 5xx".to_owned(),
                Some(t) if s.indicator == "ttft" => format!("first tokens within {} s", crate::expo::go_float(t)),
                Some(t) => format!("requests within {} s", crate::expo::go_float(t)),
            },
            s.period
        ),
        sli: percent(s.sli, 2),
        budget_left: percent(s.error_budget_remaining, 0),
        budget_class,
        burn: s.burn_rates.0.iter().map(|b| b.map_or_else(|| "–".to_owned(), |b| format!("{b:.2}x"))).collect(),
        alerts: s.alerts.iter().map(|a| (a.alert.clone(), a.severity, a.state.as_str())).collect(),
        charts: charts(history, now_ms),
    }
}

/// Budget left (%) and the 5m, 1h and 6h burn rates over the samples kept.
fn charts(history: &[SloSample], now_ms: i64) -> Vec<SloChart> {
    let start_ms = history.first().map_or(now_ms - 3_600_000, |s| s.at_ms.min(now_ms - 3_600_000));
    let budget = Series {
        label: "budget left".into(),
        color: 0,
        style: 0,
        values: history.iter().map(|s| (s.at_ms, s.budget_remaining.map(|b| b * 100.0))).collect(),
    };
    let burn = |label: &'static str, color: usize, style: usize| Series {
        label: format!("burn {label}"),
        color,
        style,
        values: history.iter().map(|s| (s.at_ms, s.burn_rates.get(label))).collect(),
    };
    let spec = |unit, series| ChartSpec { start_ms, end_ms: now_ms, unit, series, marks: Vec::new() };
    vec![
        SloChart { title: "Error budget left".into(), chart: build(&spec(Unit::Percent, vec![budget])) },
        SloChart {
            title: "Burn rate".into(),
            chart: build(&spec(Unit::Count, vec![burn("5m", 1, 0), burn("1h", 3, 1), burn("6h", 4, 2)])),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::slo::BurnRates;

    fn status(budget: Option<f64>) -> SloStatus {
        SloStatus {
            name: "Avail".into(),
            variant: "production".into(),
            indicator: "availability",
            threshold: None,
            objective: 99.5,
            period: "28d".into(),
            sli: budget.map(|b| 1.0 - 0.005 * (1.0 - b)),
            error_budget_remaining: budget,
            burn_rates: BurnRates([Some(20.0), None, Some(16.0), None, None, None, None]),
            alerts: Vec::new(),
        }
    }

    #[test]
    fn a_card_says_what_is_left_and_never_makes_up_a_number() {
        let c = card(&status(Some(-0.12)), &[], 10_000_000);
        assert_eq!((c.budget_left.as_str(), c.budget_class), ("-12 %", "bad"));
        assert_eq!(c.burn[0], "20.00x");
        assert_eq!(c.burn[1], "–");
        assert_eq!(c.describe, "99.5 % of requests without a 5xx over 28d");
        let none = card(&status(None), &[], 10_000_000);
        assert_eq!((none.sli.as_str(), none.budget_left.as_str()), ("–", "–"));
        assert!(none.charts.iter().all(|c| c.chart.empty), "no samples: no line");
    }
}
