//! Spend at each evaluation: today's and this month's cost per variant and model, their
//! projections ([`spend::forecast`]) and the budgets' alerts.
//!
//! The costs come from window sums of the read contract (the store answers windows over a day
//! from its 10-minute rows): one read per stretch between the month's start, the day's start
//! and the start of the trailing 24 h the projection's rate is measured over. Each stretch of
//! each variant and model is one bucket of [`spend::forecast`], as wide as the variant's data
//! in it, so the forecast sees what the rows would have told it. Spend moves slowly: it is read
//! again once a minute (every tick while the month's data covers less than an hour).
//!
//! [`spend::forecast`]: crate::budget::spend::forecast

use std::collections::BTreeMap;

use super::metric::Metric;
use super::rules::{Expr, Op, Rule, Scope};
use crate::budget::spend::{Budgets, CostBucket, CostSeries, DEFAULT_RATE_WINDOW_MS, Periods, SpendReport, forecast};
use crate::ports::read::{DataSource, SourceError, WindowQuery};

/// The `variant` label of budget alerts: a budget is the whole account's.
pub const BUDGET_VARIANT: &str = "all";
/// Longest time a spend report is reused.
const REUSE_MS: i64 = 60_000;
/// The marks alerted on, percent of a budget.
const LEVELS: [f64; 3] = [80.0, 95.0, 100.0];

/// What the engine keeps between evaluations for spend.
#[derive(Debug, Default)]
pub struct Costs {
    budgets: Budgets,
    /// When read, how long the month's data covers, and the report.
    last: Option<(i64, i64, SpendReport)>,
}

impl Costs {
    /// Spend against `budgets`.
    pub fn new(budgets: Budgets) -> Self {
        Self { budgets, last: None }
    }

    /// The report at `now_ms` (reused while fresh); the last one, if any, when a read fails.
    pub async fn evaluate(&mut self, source: &dyn DataSource, now_ms: i64) -> Result<SpendReport, SourceError> {
        if let Some((at, covered, report)) = &self.last
            && now_ms - at < REUSE_MS.min(covered / 60)
        {
            return Ok(report.clone());
        }
        let (series, covered) = read_costs(source, now_ms).await?;
        let report = forecast(&series, now_ms, &self.budgets, DEFAULT_RATE_WINDOW_MS);
        self.last = Some((now_ms, covered, report.clone()));
        Ok(report)
    }
}

/// Each variant's and model's cost buckets, and how long the month's data covers.
async fn read_costs(source: &dyn DataSource, now_ms: i64) -> Result<(Vec<CostSeries>, i64), SourceError> {
    let p = Periods::at(now_ms);
    let mut edges = vec![p.month_start, p.day_start, now_ms - DEFAULT_RATE_WINDOW_MS, now_ms];
    edges.sort_unstable();
    edges.dedup();
    let mut series: BTreeMap<(String, String), Vec<CostBucket>> = BTreeMap::new();
    let mut covered = 0;
    for pair in edges.windows(2) {
        let (start_ms, end_ms) = (pair[0], pair[1]);
        let sums = source.window(WindowQuery { start_ms, end_ms, target_url: None }).await?;
        for (variant, s) in sums {
            let from = s.data_from_ms.max(start_ms);
            covered = covered.max(now_ms - from);
            for (model, usd) in &s.counts.cost {
                let bucket = CostBucket { end_ms, width_ms: end_ms - from, usd: usd.iter().sum() };
                series.entry((variant.clone(), model.clone())).or_default().push(bucket);
            }
        }
    }
    let series = series.into_iter().map(|((variant, model), buckets)| CostSeries { variant, model, buckets }).collect();
    Ok((series, covered))
}

/// The budgets' alerts: for each budget set, the actual spend and its projection at 80, 95
/// and 100 % (`DailySpend80`, `DailySpendProjected95`, `MonthlySpend100`, ...), labelled
/// `variant="all"`; 100 % is `critical`, the others `warning`.
pub fn budget_rules(budgets: &Budgets) -> Vec<Rule> {
    let mut out = Vec::new();
    for (monthly, budget) in [(false, budgets.daily_usd), (true, budgets.monthly_usd)] {
        let Some(budget) = budget.filter(|b| b.is_finite() && *b > 0.0) else { continue };
        let (period, setting) = if monthly { ("Monthly", "BUDGET_MONTHLY_USD") } else { ("Daily", "BUDGET_DAILY_USD") };
        for projected in [false, true] {
            for level in LEVELS {
                let what = if projected { "projected spend" } else { "spend" };
                let span = if monthly { "this month" } else { "today" };
                out.push(Rule {
                    name: format!("{period}Spend{}{level}", if projected { "Projected" } else { "" }),
                    scope: Scope::One(BUDGET_VARIANT.to_owned()),
                    expr: Expr {
                        metric: Metric::SpendShare { monthly, projected },
                        median_range_ms: None,
                        text: format!("{what} {span} / {setting}"),
                    },
                    op: Op::Ge,
                    threshold: level / 100.0,
                    window_ms: 0,
                    for_ms: 0,
                    min_requests: 0.0,
                    severity: if level >= 100.0 { "critical" } else { "warning" }.to_owned(),
                    summary: format!(
                        "The {what} {span} is {{{{ value }}}} times the {budget} USD budget ({setting}); alerting at {}",
                        crate::alerts::rules::format_number(level / 100.0)
                    ),
                    baseline: "production".to_owned(),
                });
            }
        }
    }
    out
}

/// The share a spend rule watches in a report.
pub fn share(report: &SpendReport, monthly: bool, projected: bool) -> Option<f64> {
    let status = if monthly { report.budgets.monthly } else { report.budgets.daily }?;
    if projected { status.projected_share } else { Some(status.actual_share) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_makes_six_rules_and_none_makes_none() {
        assert!(budget_rules(&Budgets::default()).is_empty());
        let rules = budget_rules(&Budgets { daily_usd: Some(50.0), monthly_usd: None });
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "DailySpend80",
                "DailySpend95",
                "DailySpend100",
                "DailySpendProjected80",
                "DailySpendProjected95",
                "DailySpendProjected100"
            ]
        );
        assert_eq!(rules[2].severity, "critical");
        assert_eq!(rules[0].threshold, 0.8);
        assert!(rules[3].summary.contains("projected spend today"), "{}", rules[3].summary);
    }
}
