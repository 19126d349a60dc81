//! Spend projections over UTC day and month boundaries (month lengths, leap years), the
//! covered-time rate, budget levels and the JSON shape.

use super::*;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis()
}

/// `usd` per 10-minute bucket for every bucket ending in `(from, to]` (both on the grid).
fn steady(from: i64, to: i64, usd: f64) -> Vec<CostBucket> {
    (1..=(to - from) / (10 * MIN))
        .map(|k| CostBucket { end_ms: from + k * 10 * MIN, width_ms: 10 * MIN, usd })
        .collect()
}

fn series(variant: &str, model: &str, buckets: Vec<CostBucket>) -> CostSeries {
    CostSeries { variant: variant.into(), model: model.into(), buckets }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn days_and_months_are_utc_calendar_periods() {
    // (now, day start, month start, month end)
    let cases = [
        ("2024-02-29T12:00:00Z", "2024-02-29T00:00:00Z", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"),
        ("2023-02-28T23:59:59.999Z", "2023-02-28T00:00:00Z", "2023-02-01T00:00:00Z", "2023-03-01T00:00:00Z"),
        ("2024-03-01T00:00:00Z", "2024-03-01T00:00:00Z", "2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z"),
        ("2024-04-30T18:00:00Z", "2024-04-30T00:00:00Z", "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z"),
        ("2024-12-31T23:30:00Z", "2024-12-31T00:00:00Z", "2024-12-01T00:00:00Z", "2025-01-01T00:00:00Z"),
        ("2000-02-15T08:00:00+02:00", "2000-02-15T00:00:00Z", "2000-02-01T00:00:00Z", "2000-03-01T00:00:00Z"),
        ("1969-12-31T23:00:00Z", "1969-12-31T00:00:00Z", "1969-12-01T00:00:00Z", "1970-01-01T00:00:00Z"),
    ];
    for (now, day, month, next) in cases {
        let p = Periods::at(ms(now));
        assert_eq!(
            (p.day_start, p.day_end, p.month_start, p.month_end),
            (ms(day), ms(day) + 24 * HOUR, ms(month), ms(next)),
            "{now}"
        );
    }
}

#[test]
fn a_steady_pace_projects_whole_days_and_months_of_every_length() {
    // $1 per 10 minutes = $144 a day, from three days before the month to now: the projected
    // month is the month's length in days times $144, whatever the month.
    let cases = [
        ("2023-02-15T12:00:00Z", 28.0),
        ("2024-02-15T12:00:00Z", 29.0),
        ("2100-02-15T12:00:00Z", 28.0),
        ("2024-04-15T12:00:00Z", 30.0),
        ("2024-01-15T12:00:00Z", 31.0),
        ("2024-03-01T06:00:00Z", 31.0),
    ];
    for (now, days) in cases {
        let now = ms(now);
        let p = Periods::at(now);
        let report = forecast(
            &[series("production", "glm-4.7", steady(p.month_start - 3 * 24 * HOUR, now, 1.0))],
            now,
            &Budgets::default(),
            DEFAULT_RATE_WINDOW_MS,
        );
        let line = report.variants["production"].models["glm-4.7"];
        let elapsed_days = (now - p.month_start) as f64 / (24 * HOUR) as f64;
        assert!(close(line.month_usd, 144.0 * elapsed_days), "{now}: {line:?}");
        assert!(close(line.projected_month_usd.unwrap(), 144.0 * days), "{now}: {line:?}");
        assert!(close(line.projected_day_usd.unwrap(), 144.0), "{now}: {line:?}");
        assert_eq!(report.total, line);
    }
}

#[test]
fn just_after_midnight_of_a_new_month_the_buckets_before_belong_to_the_old_one() {
    // The bucket ending at midnight covers the last ten minutes of February 29.
    let now = ms("2024-03-01T00:10:00Z");
    let buckets = steady(ms("2024-02-28T00:00:00Z"), now, 1.0);
    let report =
        forecast(&[series("canary", "glm-4.5-air", buckets)], now, &Budgets::default(), DEFAULT_RATE_WINDOW_MS);
    let line = report.variants["canary"].total;
    assert_eq!((line.today_usd, line.month_usd), (1.0, 1.0));
    assert!(close(line.projected_day_usd.unwrap(), 1.0 + 6.0 * (24.0 - 1.0 / 6.0)));
    assert!(close(line.projected_month_usd.unwrap(), 1.0 + 6.0 * (31.0 * 24.0 - 1.0 / 6.0)));
    assert_eq!((report.day_start, report.month_start), (ms("2024-03-01T00:00:00Z"), ms("2024-03-01T00:00:00Z")));
}

#[test]
fn the_rate_divides_by_the_time_the_variant_has_data() {
    // A variant first seen an hour ago at $6 an hour projects $6 an hour, not $6 a day; a
    // model it used once in that hour adds its spend over the same hour.
    let now = ms("2024-05-10T12:00:00Z");
    let report = forecast(
        &[
            series("new", "a", steady(now - HOUR, now, 1.0)),
            series("new", "b", vec![CostBucket { end_ms: now - 30 * MIN, width_ms: 10 * MIN, usd: 3.0 }]),
        ],
        now,
        &Budgets::default(),
        DEFAULT_RATE_WINDOW_MS,
    );
    let v = &report.variants["new"];
    assert!(close(v.models["a"].projected_day_usd.unwrap(), 6.0 + 6.0 * 12.0), "{v:?}");
    assert!(close(v.models["b"].projected_day_usd.unwrap(), 3.0 + 3.0 * 12.0), "{v:?}");
    assert!(close(v.total.projected_day_usd.unwrap(), 9.0 + 9.0 * 12.0));
    // A shorter rate window follows a change of pace sooner.
    let mut buckets = steady(now - 24 * HOUR, now - HOUR, 1.0);
    buckets.extend(steady(now - HOUR, now, 5.0));
    let slow = forecast(&[series("p", "m", buckets.clone())], now, &Budgets::default(), DEFAULT_RATE_WINDOW_MS);
    let fast = forecast(&[series("p", "m", buckets)], now, &Budgets::default(), HOUR);
    let today = 12.0 * 6.0 - 6.0 + 30.0;
    assert!(close(slow.total.projected_day_usd.unwrap(), today + 12.0 * (23.0 * 6.0 + 30.0) / 24.0));
    assert!(close(fast.total.projected_day_usd.unwrap(), today + 12.0 * 30.0));
}

#[test]
fn no_data_in_the_rate_window_gives_no_projection() {
    let now = ms("2024-05-10T12:00:00Z");
    let old = vec![CostBucket { end_ms: now - 10 * HOUR, width_ms: 10 * MIN, usd: 2.0 }];
    let report = forecast(&[series("p", "m", old.clone())], now, &Budgets::default(), HOUR);
    let line = report.total;
    assert_eq!((line.today_usd, line.projected_day_usd, line.projected_month_usd), (2.0, None, None));
    // Summed with a variant that has a pace, the one without adds what it spent.
    let both = forecast(
        &[series("p", "m", old), series("q", "m", steady(now - HOUR, now, 1.0))],
        now,
        &Budgets::default(),
        HOUR,
    );
    assert!(close(both.total.projected_day_usd.unwrap(), 2.0 + 6.0 + 6.0 * 12.0));
}

#[test]
fn budget_levels_mark_80_95_and_100_percent() {
    let cases = [(0.0, None), (0.79, None), (0.8, Some(BudgetLevel::Over80)), (0.95, Some(BudgetLevel::Over95))];
    for (share, level) in
        cases.into_iter().chain([(1.0, Some(BudgetLevel::Over100)), (3.0, Some(BudgetLevel::Over100))])
    {
        assert_eq!(BudgetLevel::of_share(share), level, "{share}");
    }
    // $72 spent by noon at $6 an hour: $144 by midnight; the month so far 9.5 days of $144.
    let now = ms("2024-06-10T12:00:00Z");
    let s = [series("production", "glm", steady(ms("2024-05-31T00:00:00Z"), now, 1.0))];
    // (daily budget, monthly budget, daily actual level, daily projected, monthly actual, monthly projected)
    let cases = [
        (150.0, 5000.0, None, Some(BudgetLevel::Over95), None, Some(BudgetLevel::Over80)),
        (
            80.0,
            1368.0,
            Some(BudgetLevel::Over80),
            Some(BudgetLevel::Over100),
            Some(BudgetLevel::Over100),
            Some(BudgetLevel::Over100),
        ),
        (72.0, 4300.0, Some(BudgetLevel::Over100), Some(BudgetLevel::Over100), None, Some(BudgetLevel::Over100)),
        (1000.0, 100_000.0, None, None, None, None),
    ];
    for (daily, monthly, da, dp, ma, mp) in cases {
        let r =
            forecast(&s, now, &Budgets { daily_usd: Some(daily), monthly_usd: Some(monthly) }, DEFAULT_RATE_WINDOW_MS);
        let (d, m) = (r.budgets.daily.unwrap(), r.budgets.monthly.unwrap());
        assert_eq!(
            (d.actual_level, d.projected_level, m.actual_level, m.projected_level),
            (da, dp, ma, mp),
            "{daily} {monthly}"
        );
        assert!(close(d.actual_share, 72.0 / daily) && close(d.projected_share.unwrap(), 144.0 / daily));
        assert!(close(m.actual_share, 9.5 * 144.0 / monthly));
        assert_eq!(r.total.day_budget_share, Some(d.actual_share));
    }
    let none =
        forecast(&s, now, &Budgets { daily_usd: Some(0.0), monthly_usd: Some(f64::NAN) }, DEFAULT_RATE_WINDOW_MS);
    assert_eq!((none.budgets.daily, none.budgets.monthly, none.total.day_budget_share), (None, None, None));
}

#[test]
fn the_json_shape() {
    // One bucket of 2^20 ms, so the rate and the projections are exact in binary.
    let now = ms("2024-06-10T00:20:00Z");
    let bucket = CostBucket { end_ms: now, width_ms: 1 << 20, usd: 1.0 };
    let report = forecast(
        &[series("production", "glm", vec![bucket])],
        now,
        &Budgets { daily_usd: Some(10.0), monthly_usd: None },
        DEFAULT_RATE_WINDOW_MS,
    );
    let day = 1.0 + (ms("2024-06-11T00:00:00Z") - now) as f64 / 1_048_576.0;
    let month = 1.0 + (ms("2024-07-01T00:00:00Z") - now) as f64 / 1_048_576.0;
    let line = serde_json::json!({
        "today_usd": 1.0, "month_usd": 1.0, "projected_day_usd": day, "projected_month_usd": month,
        "day_budget_share": 0.1, "month_budget_share": null
    });
    assert_eq!(
        serde_json::to_value(&report).unwrap(),
        serde_json::json!({
            "day_start": ms("2024-06-10T00:00:00Z"),
            "month_start": ms("2024-06-01T00:00:00Z"),
            "rate_window_seconds": 86400.0,
            "total": line,
            "budgets": {
                "daily": {
                    "budget_usd": 10.0, "actual_usd": 1.0, "projected_usd": day, "actual_share": 0.1,
                    "projected_share": day / 10.0, "actual_level": null, "projected_level": "over_100"
                },
                "monthly": null
            },
            "variants": {"production": {"total": line, "models": {"glm": line}}}
        })
    );
}
