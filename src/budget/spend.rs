//! Spend forecast: what each variant and model cost today and this month (UTC days and
//! months), where that ends at the current pace, and how it stands against the budgets
//! (`BUDGET_DAILY_USD`, `BUDGET_MONTHLY_USD`).
//!
//! **Projection**: spend so far plus the *rate* times the time left in the period, where the
//! rate is the spend over the trailing [`DEFAULT_RATE_WINDOW_MS`] (24 h) divided by the time the
//! variant's data covers inside it (from the start of its first bucket in the window, so a
//! variant first seen an hour ago is not diluted over a day it did not exist). 24 h is the
//! shortest window without a time-of-day bias: a projection made at night from the last few
//! hours would miss the day's traffic. The price is a slower reaction to a sudden change of
//! pace; the actual-spend levels catch a real overrun either way. Nothing smarter (same hour of
//! the week, seasonality) is attempted: the number says "at the last day's pace".
//!
//! **Budget levels**: the spend and the projection are each compared with the budget; the
//! highest of 80 %, 95 % and 100 % reached (at or above) is the level, `null` below 80 %.
//! A budget applies to everything zai-dash sees (the account's spend), so levels are on the
//! overall total; every line shows its own share of the budgets.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

/// The trailing window the rate of a projection is measured over.
pub const DEFAULT_RATE_WINDOW_MS: i64 = 24 * 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// The cost of one bucket: `(end_ms - width_ms, end_ms]`, as stored rows are (`timestamp` is
/// the bucket's end). Rows of different widths (10 min rollups, then 1 min and 5 s rows not
/// rolled yet) may be mixed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostBucket {
    /// Bucket end, Unix ms.
    pub end_ms: i64,
    /// Bucket width, ms.
    pub width_ms: i64,
    /// Estimated cost in the bucket, USD (every direction).
    pub usd: f64,
}

/// The buckets of one variant and model, from the start of the month (or the rate window, if
/// it starts earlier) to now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostSeries {
    /// Variant.
    pub variant: String,
    /// Model.
    pub model: String,
    /// Buckets in any order.
    pub buckets: Vec<CostBucket>,
}

/// The configured budgets; a missing, zero, negative or non-finite budget is none.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budgets {
    /// `BUDGET_DAILY_USD`.
    pub daily_usd: Option<f64>,
    /// `BUDGET_MONTHLY_USD`.
    pub monthly_usd: Option<f64>,
}

/// How far spend has come toward a budget: the highest mark reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum BudgetLevel {
    /// At or above 80 %.
    #[serde(rename = "over_80")]
    Over80,
    /// At or above 95 %.
    #[serde(rename = "over_95")]
    Over95,
    /// At or above 100 %.
    #[serde(rename = "over_100")]
    Over100,
}

impl BudgetLevel {
    /// The level of a share of a budget (`1.0` = all of it), `None` below 80 %.
    pub fn of_share(share: f64) -> Option<Self> {
        [(1.0, Self::Over100), (0.95, Self::Over95), (0.8, Self::Over80)]
            .into_iter()
            .find(|(mark, _)| share >= *mark)
            .map(|(_, level)| level)
    }
}

/// Spend of one line (a model, a variant, everything).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SpendLine {
    /// Spend so far today (UTC), USD.
    pub today_usd: f64,
    /// Spend so far this month (UTC), USD.
    pub month_usd: f64,
    /// Today's spend at the end of the day at the current rate; `null` without a rate.
    pub projected_day_usd: Option<f64>,
    /// This month's at the end of the month at the current rate; `null` without a rate.
    pub projected_month_usd: Option<f64>,
    /// `today_usd` over the daily budget; `null` without one.
    pub day_budget_share: Option<f64>,
    /// `month_usd` over the monthly budget; `null` without one.
    pub month_budget_share: Option<f64>,
}

/// One budget against the overall spend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BudgetStatus {
    /// The budget, USD.
    pub budget_usd: f64,
    /// Spend so far in the period.
    pub actual_usd: f64,
    /// Projected spend at the period's end; `null` without a rate.
    pub projected_usd: Option<f64>,
    /// `actual_usd / budget_usd`.
    pub actual_share: f64,
    /// `projected_usd / budget_usd`.
    pub projected_share: Option<f64>,
    /// Highest mark the actual spend reached (`over_80`, `over_95`, `over_100`), or `null`.
    pub actual_level: Option<BudgetLevel>,
    /// Highest mark the projection reached, or `null`.
    pub projected_level: Option<BudgetLevel>,
}

/// Both budgets' status; `null` for a budget not configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct BudgetReport {
    /// Against `BUDGET_DAILY_USD`, for today.
    pub daily: Option<BudgetStatus>,
    /// Against `BUDGET_MONTHLY_USD`, for this month.
    pub monthly: Option<BudgetStatus>,
}

/// A variant's spend: its total and each model's.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VariantSpend {
    /// Sum over the variant's models.
    pub total: SpendLine,
    /// Per model.
    pub models: BTreeMap<String, SpendLine>,
}

/// `GET /api/spend`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpendReport {
    /// Start of today (UTC), Unix ms.
    pub day_start: i64,
    /// Start of this month (UTC), Unix ms.
    pub month_start: i64,
    /// The trailing window rates are measured over, seconds.
    pub rate_window_seconds: f64,
    /// Sum over every variant.
    pub total: SpendLine,
    /// The budgets against `total`.
    pub budgets: BudgetReport,
    /// Per variant and model.
    pub variants: BTreeMap<String, VariantSpend>,
}

/// The UTC day and month holding `now_ms`: `[start, end)` each, Unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    /// Today's midnight.
    pub day_start: i64,
    /// Tomorrow's midnight.
    pub day_end: i64,
    /// Midnight of the month's first day.
    pub month_start: i64,
    /// Midnight of the next month's first day.
    pub month_end: i64,
}

impl Periods {
    /// The day and month of `now_ms`. Unix time has no leap seconds, so days are whole
    /// multiples of 86,400,000 ms; months come from the calendar.
    pub fn at(now_ms: i64) -> Self {
        let day_start = now_ms.div_euclid(DAY_MS) * DAY_MS;
        let day = day_start / DAY_MS;
        let (month_start, month_end) = month_of(day).unwrap_or((day_start, day_start + DAY_MS));
        Self { day_start, day_end: day_start + DAY_MS, month_start, month_end }
    }
}

/// The month holding the `day`-th day since 1970-01-01: its first day's and the next month's
/// first day's midnight, Unix ms. `None` only outside chrono's range of years (±262,000).
fn month_of(day: i64) -> Option<(i64, i64)> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    let date = epoch.checked_add_signed(chrono::TimeDelta::try_days(day)?)?;
    let first = date.with_day(1)?;
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)?
    };
    let ms = |d: NaiveDate| d.signed_duration_since(epoch).num_days() * DAY_MS;
    Some((ms(first), ms(next)))
}

/// The spend report at `now_ms`; rates over the trailing `rate_window_ms`.
pub fn forecast(series: &[CostSeries], now_ms: i64, budgets: &Budgets, rate_window_ms: i64) -> SpendReport {
    let periods = Periods::at(now_ms);
    let budgets = Budgets { daily_usd: positive(budgets.daily_usd), monthly_usd: positive(budgets.monthly_usd) };
    let mut variants: BTreeMap<String, VariantSpend> = BTreeMap::new();
    let mut by_variant: BTreeMap<&str, Vec<&CostSeries>> = BTreeMap::new();
    for s in series {
        by_variant.entry(&s.variant).or_default().push(s);
    }
    for (variant, list) in by_variant {
        let rate_from = now_ms.saturating_sub(rate_window_ms);
        let covered_ms = covered_ms(&list, rate_from, now_ms);
        let entry = variants.entry(variant.to_owned()).or_default();
        for s in list {
            let line = line_of(&s.buckets, &periods, now_ms, rate_from, covered_ms, &budgets);
            let model = entry.models.entry(s.model.clone()).or_default();
            *model = add(model, &line, &budgets);
        }
        entry.total = entry.models.values().fold(SpendLine::default(), |a, l| add(&a, l, &budgets));
    }
    let total = variants.values().fold(SpendLine::default(), |a, v| add(&a, &v.total, &budgets));
    SpendReport {
        day_start: periods.day_start,
        month_start: periods.month_start,
        rate_window_seconds: rate_window_ms as f64 / 1000.0,
        budgets: BudgetReport {
            daily: budgets.daily_usd.map(|b| status(b, total.today_usd, total.projected_day_usd)),
            monthly: budgets.monthly_usd.map(|b| status(b, total.month_usd, total.projected_month_usd)),
        },
        total,
        variants,
    }
}

fn positive(v: Option<f64>) -> Option<f64> {
    v.filter(|b| b.is_finite() && *b > 0.0)
}

/// Milliseconds a variant's data covers in `(from, now]`: from the start of its first bucket
/// there (not before `from`) to now; 0 without a bucket.
fn covered_ms(series: &[&CostSeries], from: i64, now_ms: i64) -> i64 {
    let first = series
        .iter()
        .flat_map(|s| &s.buckets)
        .filter(|b| b.end_ms > from && b.end_ms <= now_ms)
        .map(|b| b.end_ms.saturating_sub(b.width_ms.max(0)))
        .min();
    first.map_or(0, |start| now_ms - start.max(from))
}

/// One series' line; `covered_ms` is its variant's.
fn line_of(
    buckets: &[CostBucket],
    p: &Periods,
    now_ms: i64,
    rate_from: i64,
    covered_ms: i64,
    b: &Budgets,
) -> SpendLine {
    let sum_after = |from: i64| {
        buckets
            .iter()
            .filter(|k| k.end_ms > from && k.end_ms <= now_ms && k.usd.is_finite())
            .fold(0.0, |a, k| a + k.usd)
    };
    let (today, month) = (sum_after(p.day_start), sum_after(p.month_start));
    let rate_per_ms = (covered_ms > 0).then(|| sum_after(rate_from) / covered_ms as f64);
    let line = SpendLine {
        today_usd: today,
        month_usd: month,
        projected_day_usd: rate_per_ms.map(|r| today + r * (p.day_end - now_ms) as f64),
        projected_month_usd: rate_per_ms.map(|r| month + r * (p.month_end - now_ms) as f64),
        ..SpendLine::default()
    };
    with_shares(line, b)
}

/// The sum of two lines. A projection is known when either side's is; a side without one
/// (no data in the rate window) adds what it spent so far, the least it will have spent.
fn add(a: &SpendLine, b: &SpendLine, budgets: &Budgets) -> SpendLine {
    let sum = |x: (Option<f64>, f64), y: (Option<f64>, f64)| match (x.0, y.0) {
        (None, None) => None,
        (p, q) => Some(p.unwrap_or(x.1) + q.unwrap_or(y.1)),
    };
    let line = SpendLine {
        today_usd: a.today_usd + b.today_usd,
        month_usd: a.month_usd + b.month_usd,
        projected_day_usd: sum((a.projected_day_usd, a.today_usd), (b.projected_day_usd, b.today_usd)),
        projected_month_usd: sum((a.projected_month_usd, a.month_usd), (b.projected_month_usd, b.month_usd)),
        ..SpendLine::default()
    };
    with_shares(line, budgets)
}

fn with_shares(line: SpendLine, b: &Budgets) -> SpendLine {
    SpendLine {
        day_budget_share: b.daily_usd.map(|d| line.today_usd / d),
        month_budget_share: b.monthly_usd.map(|m| line.month_usd / m),
        ..line
    }
}

fn status(budget: f64, actual: f64, projected: Option<f64>) -> BudgetStatus {
    let projected_share = projected.map(|p| p / budget);
    BudgetStatus {
        budget_usd: budget,
        actual_usd: actual,
        projected_usd: projected,
        actual_share: actual / budget,
        projected_share,
        actual_level: BudgetLevel::of_share(actual / budget),
        projected_level: projected_share.and_then(BudgetLevel::of_share),
    }
}

#[cfg(test)]
mod tests;
