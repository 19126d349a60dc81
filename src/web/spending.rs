//! `GET /api/spend`: today's and this month's spend per variant and model, projected to the
//! end of the day and month, and the budgets' shares, from the alert engine's last evaluation
//! (the budgets' alerts read the same report), and the overview's spend card from the same.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::charts::fmt_usd;
use crate::budget::spend::{BudgetStatus, SpendReport};

/// `GET /api/spend` (README, "Spend"). 503 until the first evaluation has read the costs.
pub async fn api(State(state): State<AppState>) -> Response {
    match state.alerts.snapshot().spend {
        Some(report) => Json(report).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "Spend has not been read yet; it is read at every live tick." })),
        )
            .into_response(),
    }
}

/// The overview's spend card: the selected variant's (or every variant's) spend today and this
/// month with their projections, the budgets against the overall spend, and the variants'
/// lines when every variant is shown.
pub struct SpendCard {
    /// `all variants` or the selected variant.
    pub scope: String,
    /// Today, this month and their projections, as `(label, value)`.
    pub figures: Vec<(&'static str, String)>,
    /// One line per budget set (a budget is the account's, whatever the variant shown).
    pub budgets: Vec<BudgetLine>,
    /// Per variant (only when every variant is shown and there are two or more).
    pub variants: Vec<(String, usize, String)>,
    /// Said instead of figures: no cost seen yet.
    pub empty: Option<&'static str>,
}

/// One budget on the spend card.
pub struct BudgetLine {
    /// `Daily budget $50.00`.
    pub label: String,
    /// `82 % spent, 128 % projected`.
    pub text: String,
    /// Spent share for the bar, 0..=100.
    pub pct: f64,
    /// `danger` at or over 100 % (spent or projected), `warn` at or over 80 %, else empty.
    pub class: &'static str,
}

/// The card for `variant` (`all` or one); `None` before the first evaluation, or when no cost
/// was ever seen and no budget is set (a proxy without a price list).
pub fn card(
    report: Option<&SpendReport>,
    colors: &std::collections::HashMap<String, usize>,
    variant: &str,
) -> Option<SpendCard> {
    let report = report?;
    let budgets: Vec<BudgetLine> = [("Daily", report.budgets.daily), ("Monthly", report.budgets.monthly)]
        .into_iter()
        .filter_map(|(name, status)| status.map(|s| budget_line(name, &s)))
        .collect();
    if report.variants.is_empty() && budgets.is_empty() {
        return None;
    }
    let line = if variant == "all" { Some(&report.total) } else { report.variants.get(variant).map(|v| &v.total) };
    let scope = if variant == "all" { "all variants".to_owned() } else { variant.to_owned() };
    let Some(line) = line else {
        return Some(SpendCard {
            scope,
            figures: Vec::new(),
            budgets,
            variants: Vec::new(),
            empty: Some("No cost reported this month."),
        });
    };
    let projected = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), fmt_usd);
    let figures = vec![
        ("Today", fmt_usd(line.today_usd)),
        ("Day at this pace", projected(line.projected_day_usd)),
        ("This month", fmt_usd(line.month_usd)),
        ("Month at this pace", projected(line.projected_month_usd)),
    ];
    let variants = if variant == "all" && report.variants.len() > 1 {
        report
            .variants
            .iter()
            .map(|(name, v)| {
                let text = format!(
                    "{} today, {} this month, {} at this pace",
                    fmt_usd(v.total.today_usd),
                    fmt_usd(v.total.month_usd),
                    projected(v.total.projected_month_usd)
                );
                (name.clone(), colors.get(name).copied().unwrap_or(0), text)
            })
            .collect()
    } else {
        Vec::new()
    };
    Some(SpendCard { scope, figures, budgets, variants, empty: None })
}

fn budget_line(period: &str, s: &BudgetStatus) -> BudgetLine {
    let pct = |share: f64| format!("{:.0} %", share * 100.0);
    let projected = s.projected_share.map_or_else(|| "no pace yet".to_owned(), |p| format!("{} at this pace", pct(p)));
    let worst = s.projected_share.unwrap_or(0.0).max(s.actual_share);
    BudgetLine {
        label: format!("{period} budget {}", fmt_usd(s.budget_usd)),
        text: format!("{} spent, {projected}", pct(s.actual_share)),
        pct: (s.actual_share * 100.0).clamp(0.0, 100.0),
        class: if worst >= 1.0 {
            "danger"
        } else if worst >= 0.8 {
            "warn"
        } else {
            ""
        },
    }
}
