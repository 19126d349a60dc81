//! Objectives: the `slos:` list and its refusals, the retention check, SLI, error budget and
//! burn rates computed by hand, the workbook's alert conditions at their thresholds, the JSON
//! shape and the exported rules' text (`tests/slo_rules.rs` runs promtool on them).

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::phase::AlertPhase;
use crate::point::{Counts, Histogram};

fn parse(yaml: &str) -> Result<Vec<SloSpec>, String> {
    let v: serde_norway::Value = serde_norway::from_str(yaml).unwrap();
    parse_slos(&v, "t.yaml").map_err(|e| e.to_string())
}

fn one(fields: &str) -> Result<SloSpec, String> {
    parse(&format!("- {}\n", fields.replace('\n', "\n  "))).map(|mut s| s.remove(0))
}

#[test]
fn objectives_read_with_their_defaults() {
    let slos = parse(
        "- {name: Available, indicator: availability, objective: 99.5}\n\
         - {name: Fast, variant: canary, indicator: latency, threshold: 2.5, objective: 99, period: 7d}\n\
         - {name: FirstToken, variant: '*', indicator: ttft, threshold: 1, objective: 95}\n",
    )
    .unwrap();
    assert_eq!(
        slos[0],
        SloSpec {
            name: "Available".into(),
            variant: SloVariant::Each,
            indicator: Indicator::Availability,
            objective_pct: 99.5,
            period_ms: 28 * 86_400_000
        }
    );
    assert_eq!(slos[1].variant, SloVariant::One("canary".into()));
    assert_eq!((slos[1].indicator, slos[1].period_ms), (Indicator::Latency { threshold_s: 2.5 }, 7 * 86_400_000));
    assert_eq!((slos[2].indicator, slos[2].variant.clone()), (Indicator::Ttft { threshold_s: 1.0 }, SloVariant::Each));
    assert_eq!(slos[0].error_budget(), 0.005);
    assert_eq!(one("name: N\nindicator: availability\nobjective: 99.9").unwrap().error_budget(), 0.001);
    assert_eq!(slos[1].describe(), "99 % of requests within 2.5 s over 7d");
}

#[test]
fn a_bad_field_names_the_objective_and_the_field() {
    let cases = [
        ("indicator: availability\nobjective: 99", "slo #1: field `name` is missing"),
        ("name: A-B\nindicator: availability\nobjective: 99", "slo \"A-B\": field `name` is \"A-B\""),
        (
            "name: A\nvariant: Bad Name\nindicator: availability\nobjective: 99",
            "slo \"A\": field `variant` is \"Bad Name\"",
        ),
        ("name: A\nobjective: 99", "slo \"A\": field `indicator` is missing"),
        (
            "name: A\nindicator: errors\nobjective: 99",
            "slo \"A\": field `indicator` is \"errors\"; use availability, latency or ttft",
        ),
        (
            "name: A\nindicator: latency\nobjective: 99",
            "slo \"A\": field `threshold` is missing; use one of 0.005, 0.01,",
        ),
        (
            "name: A\nindicator: availability\nthreshold: 1\nobjective: 99",
            "slo \"A\": field `threshold` does not apply",
        ),
        (
            "name: A\nindicator: ttft\nthreshold: 2.5\nobjective: 99",
            "slo \"A\": field `threshold` is 2.5, not a bucket bound of zai_proxy_time_to_first_token_seconds",
        ),
        (
            "name: A\nindicator: latency\nthreshold: fast\nobjective: 99",
            "slo \"A\": field `threshold` must be a number",
        ),
        ("name: A\nindicator: availability", "slo \"A\": field `objective` is missing"),
        (
            "name: A\nindicator: availability\nobjective: 100",
            "slo \"A\": field `objective` is 100; use a percent above 0 and below 100",
        ),
        ("name: A\nindicator: availability\nobjective: 0", "slo \"A\": field `objective` is 0;"),
        ("name: A\nindicator: availability\nobjective: -5", "slo \"A\": field `objective` is -5;"),
        ("name: A\nindicator: availability\nobjective: 99.99999999999999", "field `objective` is 99.99999999999999;"),
        (
            "name: A\nindicator: availability\nobjective: 99.5%",
            "slo \"A\": field `objective` must be a number, not 99.5%",
        ),
        (
            "name: A\nindicator: availability\nobjective: 99\nperiod: 2d",
            "slo \"A\": field `period` is \"2d\", shorter than 3d",
        ),
        (
            "name: A\nindicator: availability\nobjective: 99\nperiod: 31d",
            "slo \"A\": field `period` is \"31d\", longer than 30d",
        ),
        (
            "name: A\nindicator: availability\nobjective: 99\nperiod: 5 parsecs",
            "slo \"A\" field `period` has an invalid duration",
        ),
        (
            "name: A\nindicator: availability\nobjective: 99\ntarget: 99",
            "slo \"A\": field target is unknown; use name, variant,",
        ),
    ];
    for (fields, want) in cases {
        let got = one(fields).unwrap_err();
        assert!(got.starts_with("ALERT_RULES slo "), "{got}");
        assert!(got.contains(want), "{fields:?}: {got}");
        let sentences = got.split(". ").skip(1).filter(|rest| rest.starts_with(char::is_uppercase)).count();
        assert!(got.ends_with('.') && sentences == 0, "one sentence: {got}");
    }
    assert_eq!(
        one("name: Fast\nindicator: latency\nthreshold: 0.3\nobjective: 99").unwrap_err(),
        "ALERT_RULES slo \"Fast\": field `threshold` is 0.3, not a bucket bound of zai_proxy_request_duration_seconds; \
         use one of 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 (seconds)."
    );
    let dup =
        "- {name: A, indicator: availability, objective: 99}\n- {name: A, indicator: availability, objective: 98}\n";
    assert_eq!(parse(dup).unwrap_err(), "ALERT_RULES slo \"A\": field `name` is used by an earlier slo.");
    assert_eq!(parse("- just text\n").unwrap_err(), "ALERT_RULES slo #1 must be a mapping of fields.");
    assert_eq!(parse("name: A\n").unwrap_err(), "ALERT_RULES t.yaml has a `slos:` that is not a list of objectives.");
}

#[test]
fn retention_must_keep_a_whole_period() {
    let slos = parse("- {name: Month, indicator: availability, objective: 99, period: 28d}\n").unwrap();
    let days = |d: u64| Duration::from_secs(d * 86_400);
    let defaults = Retention { retention_5s: days(1), retention_1m: days(7), retention_10m: days(30) };
    assert!(check_retention(&slos, &defaults).is_ok());
    let short = Retention { retention_10m: days(7), ..defaults };
    assert_eq!(
        check_retention(&slos, &short).unwrap_err().to_string(),
        "ALERT_RULES slo \"Month\": field `period` is 28d, longer than the 7d RETENTION_10M keeps; \
         shorten `period` or raise RETENTION_10M."
    );
    let raw_longest = Retention { retention_5s: days(10), retention_1m: days(1), retention_10m: days(2) };
    assert!(check_retention(&slos, &raw_longest).unwrap_err().to_string().contains("the 10d RETENTION_5S keeps"));
}

const NOW: i64 = 1_790_000_000_000;

/// A source answering from `(window_ms -> (good, total))`; other windows have no requests.
fn table(rows: &[(i64, f64, f64)]) -> impl Fn(&Indicator, &str, i64, i64) -> Option<SloCounts> + use<> {
    let map: BTreeMap<i64, SloCounts> = rows.iter().map(|&(w, good, total)| (w, SloCounts { good, total })).collect();
    move |_: &Indicator, _: &str, window_ms: i64, end_ms: i64| {
        assert_eq!(end_ms, NOW);
        Some(map.get(&window_ms).copied().unwrap_or_default())
    }
}

fn spec(objective: f64) -> SloSpec {
    SloSpec {
        name: "Avail".into(),
        variant: SloVariant::Each,
        indicator: Indicator::Availability,
        objective_pct: objective,
        period_ms: 28 * 86_400_000,
    }
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9 * b.abs().max(1.0))
}

#[test]
fn sli_error_budget_and_burn_rates_by_hand() {
    let (min, hour, day) = (60_000, 3_600_000, 86_400_000);
    // (objective, period good/total, expected sli, expected budget left)
    let cases = [
        (99.5, 99_800.0, 100_000.0, 0.998, 0.6),
        (99.5, 99_500.0, 100_000.0, 0.995, 0.0),
        (99.5, 99_000.0, 100_000.0, 0.99, -1.0),
        (99.9, 1_000_000.0, 1_000_000.0, 1.0, 1.0),
        (90.0, 85.0, 100.0, 0.85, -0.5),
    ];
    for (objective, good, total, sli, left) in cases {
        let s = evaluate(&spec(objective), "production", &table(&[(28 * day, good, total)]), NOW);
        assert!(close(s.sli, sli) && close(s.error_budget_remaining, left), "{objective} {good}: {s:?}");
    }
    // Burn = error ratio / 0.005: 1 % errors over 5 m burns 2x, 8 % over 1 h 16x, none over 3 d 0.
    let source = table(&[(5 * min, 990.0, 1000.0), (hour, 920.0, 1000.0), (3 * day, 500.0, 500.0)]);
    let s = evaluate(&spec(99.5), "production", &source, NOW);
    assert!(close(s.burn_rates.get("5m"), 2.0) && close(s.burn_rates.get("1h"), 16.0), "{s:?}");
    assert_eq!(s.burn_rates.get("3d"), Some(0.0));
    assert_eq!((s.burn_rates.get("30m"), s.sli, s.error_budget_remaining), (None, None, None), "no requests: null");
    let unknown = evaluate(&spec(99.5), "production", &|_: &Indicator, _: &str, _: i64, _: i64| None, NOW);
    assert_eq!(unknown.burn_rates, BurnRates::default());
    assert!(unknown.alerts.iter().all(|a| a.state == AlertPhase::Inactive));
}

/// The page and ticket states for burn rates per window label (absent: no requests).
fn alert_states(objective: f64, burns: &[(&str, f64)]) -> (AlertPhase, AlertPhase) {
    let budget = spec(objective).error_budget();
    let rows: Vec<(i64, f64, f64)> = burns
        .iter()
        .map(|(label, burn)| {
            let w = BURN_WINDOWS.iter().find(|w| w.label == *label).unwrap();
            let total = 1_000_000.0;
            (w.ms, total - burn * budget * total, total)
        })
        .collect();
    let s = evaluate(&spec(objective), "canary", &table(&rows), NOW);
    assert_eq!((s.alerts[0].alert.as_str(), s.alerts[1].alert.as_str()), ("AvailBurnRatePage", "AvailBurnRateTicket"));
    (s.alerts[0].state, s.alerts[1].state)
}

#[test]
fn the_workbook_alerts_fire_at_their_thresholds() {
    use AlertPhase::{Firing as F, Inactive as I};
    let all = |b: f64| ["5m", "30m", "1h", "2h", "6h", "1d", "3d"].map(|w| (w, b)).to_vec();
    // (burn per window, page, ticket)
    type Case<'a> = (Vec<(&'a str, f64)>, AlertPhase, AlertPhase);
    let cases: Vec<Case> = vec![
        (vec![("1h", 14.5), ("5m", 14.5)], F, I),
        (vec![("1h", 14.41), ("5m", 20.0)], F, I),
        (vec![("1h", 14.39), ("5m", 20.0)], I, I),
        (vec![("1h", 100.0), ("5m", 14.0)], I, I),
        (vec![("1h", 100.0)], I, I),
        (vec![("6h", 6.1), ("30m", 6.1)], F, I),
        (vec![("6h", 6.1), ("30m", 5.9)], I, I),
        (vec![("1d", 3.1), ("2h", 3.1)], I, F),
        (vec![("1d", 3.1), ("2h", 2.9)], I, I),
        (vec![("3d", 1.1), ("6h", 1.1)], I, F),
        (vec![("3d", 0.9), ("6h", 1.1)], I, I),
        (all(0.5), I, I),
        (all(0.99), I, I),
        (all(14.5), F, F),
    ];
    for (burns, page, ticket) in cases {
        for objective in [99.0, 99.5, 99.9, 99.99] {
            assert_eq!(alert_states(objective, &burns), (page, ticket), "{objective}: {burns:?}");
        }
    }
}

#[test]
fn the_status_json_shape() {
    let s =
        evaluate(&spec(99.5), "production", &table(&[(300_000, 990.0, 1000.0), (28 * 86_400_000, 995.0, 1000.0)]), NOW);
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        serde_json::json!({
            "name": "Avail", "variant": "production", "indicator": "availability", "threshold": null,
            "objective": 99.5, "period": "28d", "sli": 1.0 - 0.005, "error_budget_remaining": 0.0,
            "burn_rates": {"5m": 0.01 / 0.005, "30m": null, "1h": null, "2h": null, "6h": null, "1d": null, "3d": null},
            "alerts": [
                {"alert": "AvailBurnRatePage", "severity": "critical", "state": "inactive"},
                {"alert": "AvailBurnRateTicket", "severity": "warning", "state": "inactive"}
            ]
        })
    );
    let keys: Vec<String> =
        serde_json::to_value(s.burn_rates).unwrap().as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys.len(), 7);
}

#[test]
fn every_variant_gets_a_star_objective_and_a_named_one_is_always_listed() {
    let mut named = spec(99.0);
    named.name = "Canary".into();
    named.variant = SloVariant::One("canary".into());
    let list = evaluate_all(&[spec(99.5), named], &["production".into(), "test".into()], &table(&[]), NOW);
    let got: Vec<(&str, &str)> = list.iter().map(|s| (s.name.as_str(), s.variant.as_str())).collect();
    assert_eq!(got, [("Avail", "production"), ("Avail", "test"), ("Canary", "canary")]);
}

#[test]
fn good_and_total_come_from_window_sums() {
    let c = Counts {
        requests: [("200", 90.0), ("429", 5.0), ("503", 5.0)].map(|(k, v)| (k.into(), v)).into(),
        duration: Histogram { buckets: vec![(1.0, 60.0), (2.5, 80.0), (f64::INFINITY, 95.0)], sum: 0.0, count: 95.0 },
        ..Counts::default()
    };
    assert_eq!(Indicator::Availability.good_total(&c), Some(SloCounts { good: 95.0, total: 100.0 }));
    assert_eq!(Indicator::Latency { threshold_s: 2.5 }.good_total(&c), Some(SloCounts { good: 80.0, total: 95.0 }));
    assert_eq!(Indicator::Latency { threshold_s: 5.0 }.good_total(&c), None, "no such bucket: unknown");
    assert_eq!(Indicator::Ttft { threshold_s: 1.0 }.good_total(&c), Some(SloCounts::default()), "no streams");
    assert_eq!(SloCounts { good: 12.0, total: 10.0 }.error_ratio(), Some(0.0));
    assert_eq!(SloCounts { good: 0.0, total: 0.0 }.error_ratio(), None);
}

#[test]
fn exported_rules_record_each_window_and_alert_on_the_workbook_pairs() {
    let slos = parse(
        "- {name: Avail, indicator: availability, objective: 99.5}\n\
         - {name: Fast, variant: canary, indicator: latency, threshold: 1, objective: 99, period: 3d}\n",
    )
    .unwrap();
    let groups = rule_groups(&slos);
    assert_eq!(groups[0].name, "zai-dash-slo-Avail");
    let names = |g: &RuleGroup| -> Vec<String> {
        g.rules
            .iter()
            .map(|r| match r {
                PromRule::Record { record, .. } => record.clone(),
                PromRule::Alert { alert, .. } => alert.clone(),
            })
            .collect()
    };
    let windows = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"].map(|w| format!("slo:sli_error:ratio_rate{w}"));
    let mut want: Vec<String> = windows.to_vec();
    want.extend(
        ["slo:sli_error:ratio_rate28d", "slo:objective:ratio", "slo:error_budget_remaining:ratio"].map(String::from),
    );
    want.extend(["AvailBurnRatePage", "AvailBurnRateTicket"].map(String::from));
    assert_eq!(names(&groups[0]), want);
    assert_eq!(names(&groups[1]).len(), 7 + 2 + 2, "a 3d period is recorded once");
    let PromRule::Record { expr, labels, .. } = &groups[0].rules[0] else { panic!() };
    assert_eq!(
        expr,
        "(sum by (variant) (rate(zai_proxy_requests_total{status_code=~\"5..\"}[5m])) or 0 * sum by (variant) \
         (rate(zai_proxy_requests_total[5m]))) / sum by (variant) (rate(zai_proxy_requests_total[5m]))"
    );
    assert_eq!(labels["slo"], "Avail");
    let PromRule::Record { expr, .. } = &groups[1].rules[2] else { panic!() };
    assert_eq!(
        expr,
        "1 - sum by (variant) (rate(zai_proxy_request_duration_seconds_bucket{le=~\"1|1\\\\.0\",variant=\"canary\"}[1h])) \
         / sum by (variant) (rate(zai_proxy_request_duration_seconds_count{variant=\"canary\"}[1h]))"
    );
    let PromRule::Alert { expr, labels, .. } = &groups[0].rules[10] else { panic!() };
    assert_eq!(
        expr,
        "(slo:sli_error:ratio_rate1h{slo=\"Avail\"} > (14.4 * 0.005) and slo:sli_error:ratio_rate5m{slo=\"Avail\"} > (14.4 * 0.005)) \
         or (slo:sli_error:ratio_rate6h{slo=\"Avail\"} > (6 * 0.005) and slo:sli_error:ratio_rate30m{slo=\"Avail\"} > (6 * 0.005))"
    );
    assert_eq!((labels["severity"].as_str(), labels["slo"].as_str()), ("critical", "Avail"));
    let PromRule::Record { expr, .. } = &groups[0].rules[9] else { panic!() };
    assert_eq!(expr, "1 - slo:sli_error:ratio_rate28d{slo=\"Avail\"} / 0.005");
}
