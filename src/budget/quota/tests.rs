//! Runway over hand-made series: a known linear pace, resets, flat and missing data, staleness,
//! exhaustion, and the JSON shape.

use super::*;
use crate::point::QuotaWindow;

const NOW: i64 = 1_790_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const RESET: i64 = NOW + 4 * HOUR;

/// Samples every `step_ms` over `(NOW - span_ms, NOW]`, one five-hour window whose ratio is
/// `ratio(t)` and reset `reset(t)`, each with a fresh age.
fn series(
    span_ms: i64,
    step_ms: i64,
    ratio: impl Fn(i64) -> f64,
    reset: impl Fn(i64) -> Option<i64>,
) -> Vec<QuotaSample> {
    let mut t = NOW;
    let mut out = Vec::new();
    while t > NOW - span_ms {
        out.push(sample(t, 0.0, ratio(t), reset(t)));
        t -= step_ms;
    }
    out.reverse();
    out
}

fn sample(at_ms: i64, age: f64, used: f64, reset: Option<i64>) -> QuotaSample {
    QuotaSample {
        at_ms,
        sample_age_seconds: Some(age),
        windows: vec![WindowReading {
            window: "five_hour".into(),
            limit_type: Some("credit_limit".into()),
            used_ratio: Some(used),
            reset_at_ms: reset,
        }],
    }
}

fn one_window(samples: &[QuotaSample]) -> WindowRunway {
    let view = runway(samples, NOW, DEFAULT_STALE_AFTER_MS);
    assert_eq!(view.windows.len(), 1, "{view:?}");
    view.windows[0].clone()
}

/// A ratio rising at `per_hour` that reads `at_now` at NOW.
fn linear(at_now: f64, per_hour: f64) -> impl Fn(i64) -> f64 {
    move |t| at_now + per_hour * (t - NOW) as f64 / HOUR as f64
}

#[test]
fn a_linear_pace_projects_exhaustion_within_a_tenth_of_a_percent() {
    // (ratio now, per hour, sample step): exhaustion at NOW + (1 - ratio) / per_hour hours.
    let cases = [(0.30, 0.2, 5_000), (0.05, 0.01, 5_000), (0.90, 3.0, 15_000), (0.5, 0.5, 60_000)];
    for (at_now, per_hour, step) in cases {
        let w = one_window(&series(20 * MIN, step, linear(at_now, per_hour), |_| Some(NOW + 400 * HOUR)));
        let truth_ms = (1.0 - at_now) / per_hour * HOUR as f64;
        let got_ms = (w.exhausted_at.unwrap() - NOW) as f64;
        assert!((got_ms - truth_ms).abs() <= 0.001 * truth_ms, "{at_now} {per_hour}: {got_ms} vs {truth_ms}");
        assert!((w.runway_seconds.unwrap() * 1000.0 - truth_ms).abs() <= 0.001 * truth_ms);
        assert!((w.burn_per_hour.unwrap() - per_hour).abs() <= 1e-9 * per_hour.max(1.0), "{w:?}");
        assert_eq!(w.runs_out_before_reset, Some(truth_ms < 400.0 * HOUR as f64));
    }
}

#[test]
fn a_staircase_of_whole_percents_polled_each_minute_still_finds_the_pace() {
    // What the provider really reports: whole percents, polled every minute, scraped every
    // 5 s. Over every phase of polls and steps the slope stays within 5 % of the pace, where
    // the difference of the window's first and last samples is off by up to 20 %.
    for pace in [0.24, 0.1] {
        for shift in (0..HOUR).step_by(13_000) {
            let stairs = |t: i64| {
                let shifted = t - NOW + shift;
                let polled = shifted - shifted.rem_euclid(MIN);
                ((0.4 + pace * polled as f64 / HOUR as f64) * 100.0 + 1e-9).floor() / 100.0
            };
            let w = one_window(&series(30 * MIN, 5_000, stairs, |_| Some(RESET)));
            let burn = w.burn_per_hour.unwrap();
            assert!((burn - pace).abs() < pace * 0.05, "shift {shift}: burn {burn} against {pace}");
            assert_eq!(w.runs_out_before_reset, Some(pace > 0.15), "0.6 left at {pace}/h, reset in 4 h");
        }
    }
}

#[test]
fn a_reset_restarts_the_burn() {
    // Ratio drop: 0.9 rising fast, then empty 3 min ago and rising at 0.1 per hour.
    let dropped = |t: i64| {
        if t <= NOW - 3 * MIN { linear(0.9, 0.4)(t) } else { 0.1 * (t - (NOW - 3 * MIN)) as f64 / HOUR as f64 }
    };
    let moved = |t: i64| Some(if t <= NOW - 3 * MIN { NOW - 3 * MIN } else { NOW + 5 * HOUR });
    let w = one_window(&series(15 * MIN, 5_000, dropped, moved));
    assert!((w.burn_per_hour.unwrap() - 0.1).abs() < 1e-9, "{w:?}");
    // Reset time moving forward while the ratio does not drop (an empty window starting over).
    let climbing =
        |t: i64| if t <= NOW - 4 * MIN { linear(0.2, 0.6)(t) } else { 0.2 + 0.15 * (t - NOW) as f64 / HOUR as f64 };
    let jumped = |t: i64| Some(if t <= NOW - 4 * MIN { NOW } else { NOW + 7 * 24 * HOUR });
    let w = one_window(&series(15 * MIN, 5_000, climbing, jumped));
    assert!((w.burn_per_hour.unwrap() - 0.15).abs() < 1e-9, "{w:?}");
    // A reset time re-rounded by a second each poll is no reset: the whole window counts.
    let jitter = |t: i64| Some(RESET + (t - NOW) / 5_000 * 1_000);
    let w = one_window(&series(15 * MIN, 5_000, linear(0.2, 0.6), jitter));
    assert!((w.burn_per_hour.unwrap() - 0.6).abs() < 1e-9, "{w:?}");
}

#[test]
fn too_little_data_gives_no_burn_rather_than_zero() {
    let cases: [(&str, Vec<QuotaSample>); 3] = [
        ("one sample", vec![sample(NOW, 0.0, 0.5, Some(RESET))]),
        (
            "two samples 30 s apart",
            vec![sample(NOW - 30_000, 0.0, 0.4, Some(RESET)), sample(NOW, 0.0, 0.5, Some(RESET))],
        ),
        ("only older than 15 min", {
            let mut s = series(40 * MIN, MIN, linear(0.3, 0.2), |_| Some(RESET));
            s.retain(|x| x.at_ms <= NOW - 16 * MIN);
            s.push(sample(NOW, 0.0, 0.4, Some(RESET)));
            s
        }),
    ];
    for (what, samples) in cases {
        let w = one_window(&samples);
        assert_eq!(
            (w.burn_per_hour, w.exhausted_at, w.runway_seconds, w.runs_out_before_reset),
            (None, None, None, None),
            "{what}"
        );
        assert!(w.used_ratio.is_some(), "{what}: the ratio itself is known");
    }
}

#[test]
fn a_ratio_that_does_not_rise_has_no_exhaustion() {
    let w = one_window(&series(15 * MIN, 5_000, |_| 0.42, |_| Some(RESET)));
    assert_eq!(w.burn_per_hour, Some(0.0));
    assert_eq!((w.exhausted_at, w.runway_seconds, w.runway_margin_seconds()), (None, None, None));
    assert_eq!(w.runs_out_before_reset, Some(false), "at no pace it never runs out");
}

#[test]
fn stale_and_unavailable_states() {
    let empty = runway(&[], NOW, DEFAULT_STALE_AFTER_MS);
    assert_eq!((empty.state, empty.sample_age_seconds, empty.windows.len()), (QuotaState::Unavailable, None, 0));
    let future_only = runway(&[sample(NOW + 1, 0.0, 0.5, None)], NOW, DEFAULT_STALE_AFTER_MS);
    assert_eq!(future_only.state, QuotaState::Unavailable);

    // (what, samples, state, age now)
    let polled_long_ago = series(15 * MIN, 5_000, linear(0.3, 0.2), |_| Some(RESET))
        .into_iter()
        .map(|mut s| {
            s.sample_age_seconds = Some(1000.0);
            s
        })
        .collect::<Vec<_>>();
    let scraped_long_ago =
        vec![sample(NOW - 20 * MIN, 0.0, 0.3, Some(RESET)), sample(NOW - 16 * MIN, 30.0, 0.31, Some(RESET))];
    let fresh = vec![sample(NOW - 5 * MIN, 0.0, 0.3, Some(RESET)), sample(NOW - 60_000, 20.0, 0.31, Some(RESET))];
    let cases = [
        ("the proxy has not polled for 1000 s", polled_long_ago, QuotaState::Stale, 1000.0),
        ("zai-dash has not scraped for 16 min", scraped_long_ago, QuotaState::Stale, 16.0 * 60.0 + 30.0),
        ("polled 20 s before a scrape a minute ago", fresh, QuotaState::Fresh, 80.0),
    ];
    for (what, samples, state, age) in cases {
        let view = runway(&samples, NOW, DEFAULT_STALE_AFTER_MS);
        assert_eq!((view.state, view.sample_age_seconds), (state, Some(age)), "{what}");
        let w = &view.windows[0];
        assert!(w.used_ratio.is_some() && w.reset_at == Some(RESET), "{what}: last known values stay");
        if state == QuotaState::Stale {
            assert_eq!((w.burn_per_hour, w.exhausted_at, w.runs_out_before_reset), (None, None, None), "{what}");
        } else {
            assert!(w.burn_per_hour.is_some(), "{what}");
        }
    }
}

#[test]
fn an_exhausted_window_ran_out_at_its_first_full_sample() {
    let full_at = NOW - 6 * MIN;
    let w = one_window(&series(
        15 * MIN,
        5_000,
        |t| if t >= full_at { 1.0 } else { linear(1.0, 0.5)(t + 6 * MIN) },
        |_| Some(RESET),
    ));
    assert_eq!((w.exhausted_at, w.runway_seconds, w.runs_out_before_reset), (Some(full_at), Some(0.0), Some(true)));
    assert_eq!(w.runway_margin_seconds(), Some((full_at - RESET) as f64 / 1000.0));
}

#[test]
fn the_alert_value_is_the_smallest_margin_over_windows() {
    // five_hour runs out 1 h before its reset; weekly 10 h after its own.
    let mk = |window: &str, used: f64, reset: i64| WindowReading {
        window: window.into(),
        limit_type: Some("credit_limit".into()),
        used_ratio: Some(used),
        reset_at_ms: Some(reset),
    };
    let samples: Vec<QuotaSample> = (0..=15)
        .map(|m| {
            let t = NOW - (15 - m) * MIN;
            let h = (t - NOW) as f64 / HOUR as f64;
            QuotaSample {
                at_ms: t,
                sample_age_seconds: Some(5.0),
                windows: vec![
                    mk("five_hour", 0.5 + 0.25 * h, NOW + 3 * HOUR),
                    mk("weekly", 0.8 + 0.01 * h, NOW + 10 * HOUR),
                ],
            }
        })
        .collect();
    let view = runway(&samples, NOW, DEFAULT_STALE_AFTER_MS);
    let margins: Vec<f64> = view.windows.iter().map(|w| w.runway_margin_seconds().unwrap()).collect();
    assert!((margins[0] + 3600.0).abs() < 1.0, "{margins:?}");
    assert!((margins[1] - 36_000.0).abs() < 1.0, "{margins:?}");
    assert_eq!(view.quota_runway_seconds(), Some(margins[0]));
    let flat = runway(&series(15 * MIN, 5_000, |_| 0.3, |_| Some(RESET)), NOW, DEFAULT_STALE_AFTER_MS);
    assert_eq!(flat.quota_runway_seconds(), None, "not rising: null, not a number that looks like data");
}

#[test]
fn the_json_shape_has_nulls_not_zeros() {
    let view = runway(&[sample(NOW - 5_000, 0.0, 0.25, None)], NOW, DEFAULT_STALE_AFTER_MS);
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "state": "fresh",
            "sample_age_seconds": 5.0,
            "windows": [{
                "window": "five_hour", "limit_type": "credit_limit", "used_ratio": 0.25, "reset_at": null,
                "burn_per_hour": null, "exhausted_at": null, "runway_seconds": null, "runs_out_before_reset": null
            }]
        })
    );
    let report: QuotaReport = [("production".to_owned(), runway(&[], NOW, DEFAULT_STALE_AFTER_MS))].into();
    assert_eq!(
        serde_json::to_value(&report).unwrap(),
        serde_json::json!({"production": {"state": "unavailable", "sample_age_seconds": null, "windows": []}})
    );
}

#[test]
fn a_stored_quota_block_becomes_a_sample() {
    let block = Quota {
        five_hour: Some(QuotaWindow {
            limit_type: Some("tokens_limit".into()),
            usage_ratio: None,
            remaining_ratio: Some(0.87),
            reset_time_unix: Some(1_788_738_692.5),
        }),
        weekly: Some(QuotaWindow {
            limit_type: Some("credit_limit".into()),
            usage_ratio: Some(0.4215),
            remaining_ratio: Some(0.5785),
            reset_time_unix: None,
        }),
        sample_age_seconds: Some(60.004),
        ..Quota::default()
    };
    let s = QuotaSample::from_block(NOW, &block);
    assert_eq!(s.sample_age_seconds, Some(60.004));
    assert_eq!(s.windows[0].window, "five_hour");
    assert!((s.windows[0].used_ratio.unwrap() - 0.13).abs() < 1e-12);
    assert_eq!(s.windows[0].reset_at_ms, Some(1_788_738_692_500));
    assert_eq!((s.windows[1].used_ratio, s.windows[1].reset_at_ms), (Some(0.4215), None));
}
