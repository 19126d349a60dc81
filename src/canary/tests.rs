//! Judging end to end over hand-made evidence: the classification table, the overall verdict
//! and the JSON shape.

use super::judge::{classify_for_tests as classify, overall};
use super::verdict::Verdict;
use super::*;

/// A tick with `r` requests, `e` 5xx, latency split 90/8/2 over 0.5 s, 1 s, above.
fn tick(r: f64, e: f64, slow: f64) -> SideTick {
    let fast = r * (0.9 - slow);
    SideTick {
        requests: r,
        errors_5xx: e,
        ok_2xx: r - e,
        latency: vec![(0.5, fast), (1.0, r * 0.98 - slow * r), (f64::INFINITY, r)],
        output_tokens: 300.0 * (r - e),
        cost_usd: 0.002 * (r - e),
        input_tokens: 1000.0 * r,
        cache_read_tokens: 500.0 * r,
        ..SideTick::default()
    }
}

fn run(ticks: usize, b: impl Fn(usize) -> SideTick, c: impl Fn(usize) -> SideTick) -> Judgement {
    let mut e = Evidence::new();
    for k in 0..ticks {
        e.fold(&b(k), &c(k));
    }
    judge(&e, &CanaryConfig::default())
}

fn row(j: &Judgement, id: MetricId) -> &Row {
    j.rows.iter().find(|r| r.metric == id).unwrap()
}

#[test]
fn classification_table() {
    use Classification::*;
    let t = |up: Option<f64>, down: Option<f64>| super::judge::tuning_for_tests(up, down);
    let higher = t(Some(1.0), None);
    let lower = t(None, Some(1.0));
    let either = t(Some(1.0), Some(1.0));
    // (tuning, delta, lo, hi, significant) -> (classification, verdict)
    let cases = [
        (higher, 0.2, -0.5, 0.9, false, Pass, Verdict::Pass),
        (higher, 0.2, -0.5, 0.9, true, Pass, Verdict::Pass), // within the margin beats significance
        (higher, 1.6, 1.1, 2.1, true, High, Verdict::Fail),
        (higher, 1.6, 1.1, 2.1, false, Undecided, Verdict::InsufficientData), // no fail without Holm
        (higher, 0.8, 0.2, 1.4, true, High, Verdict::Warn),
        (higher, 0.4, -0.2, 1.0001, false, Undecided, Verdict::InsufficientData),
        (higher, -3.0, -4.0, -2.0, true, Pass, Verdict::Pass), // better is never worse
        (lower, -1.6, -2.1, -1.1, true, Low, Verdict::Fail),
        (lower, -0.8, -1.4, -0.2, true, Low, Verdict::Warn),
        (lower, 0.8, 0.2, 1.4, true, Pass, Verdict::Pass),
        (either, 0.8, 0.2, 1.4, true, High, Verdict::Warn),
        (either, -0.8, -1.4, -0.2, true, Low, Verdict::Warn),
        (either, -1.6, -2.1, -1.1, true, Low, Verdict::Fail),
        (either, 0.0, -0.9, 0.9, false, Pass, Verdict::Pass),
        (either, 0.0, -1.2, 1.2, false, Undecided, Verdict::InsufficientData),
    ];
    for (i, (tun, d, lo, hi, sig, class, verdict)) in cases.into_iter().enumerate() {
        let got = classify(&tun, d, lo, hi, sig);
        assert_eq!((got.0, got.1), (class, verdict), "case {i}");
    }
}

#[test]
fn a_healthy_canary_passes_once_every_critical_metric_is_decided() {
    // Identical sides, 50 requests a tick, 2 % errors: deterministic, so nothing differs.
    let j = run(2000, |_| tick(50.0, 1.0, 0.0), |_| tick(50.0, 1.0, 0.0));
    assert_eq!(row(&j, MetricId::ErrorRate).classification, Classification::Pass, "{:?}", j.reasons());
    assert_eq!(row(&j, MetricId::LatencyP95Tail).classification, Classification::Pass, "{:?}", j.reasons());
    assert_eq!(row(&j, MetricId::TtftP95Tail).classification, Classification::Nodata);
    assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons());
    assert_eq!(j.score, Some(100.0));
    assert_eq!(row(&j, MetricId::ErrorRate).needed_requests(), None);
}

#[test]
fn a_family_nobody_exports_takes_no_share_of_alpha() {
    // No TTFT histogram on either side: nine metrics and the ceiling are tested, not ten.
    let j = run(200, |_| tick(50.0, 1.0, 0.0), |_| tick(50.0, 1.0, 0.0));
    let ttft = row(&j, MetricId::TtftP95Tail);
    assert_eq!((ttft.classification, ttft.why), (Classification::Nodata, Why::Untested));
    assert!(ttft.reason().contains("no share of alpha"), "{}", ttft.reason());
    assert_eq!(j.hypotheses, 10);
    // Two critical metrics weigh 3 each, seven others and the ceiling 1: 14 in all.
    assert!((j.level - 0.05 / 14.0).abs() < 1e-15, "{}", j.level);
    assert!((row(&j, MetricId::ErrorRate).level - 0.15 / 14.0).abs() < 1e-15);
    // With TTFT on both sides from the start it is tested and costs its share.
    let streamed = |_| SideTick { ttft: vec![(0.5, 45.0), (1.0, 48.0), (f64::INFINITY, 50.0)], ..tick(50.0, 1.0, 0.0) };
    let j = run(200, streamed, streamed);
    assert_eq!(j.hypotheses, 11);
    assert_ne!(row(&j, MetricId::TtftP95Tail).why, Why::Untested);
}

#[test]
fn a_family_that_appears_after_testing_began_stays_untested() {
    // Both sides pass 100 requests at tick 2; TTFT shows up at tick 10. The number of
    // hypotheses was fixed when testing could begin, so it stays out (and costs nothing).
    let side = |k: usize| {
        let ttft = if k >= 10 { vec![(0.5, 45.0), (1.0, 48.0), (f64::INFINITY, 50.0)] } else { Vec::new() };
        SideTick { ttft, ..tick(50.0, 1.0, 0.0) }
    };
    let j = run(300, side, side);
    assert_eq!(j.hypotheses, 10);
    let ttft = row(&j, MetricId::TtftP95Tail);
    assert_eq!((ttft.classification, ttft.why), (Classification::Nodata, Why::Untested), "{}", ttft.reason());
    // The same evidence in two parts, merged in order, decides the same.
    let (mut first, mut second) = (Evidence::new(), Evidence::new());
    for k in 0..300 {
        let part = if k < 150 { &mut first } else { &mut second };
        part.fold(&side(k), &side(k));
    }
    first.merge(&second);
    assert_eq!(judge(&first, &CanaryConfig::default()).hypotheses, 10);
}

#[test]
fn a_shared_incident_after_the_split_moved_is_not_above_the_ceiling() {
    // A 5 % canary for 100 minutes, then 50 %: 5 minutes of a shared incident failing 40 % of
    // both sides, then 10 calm minutes. The candidate's plain share is 9.6 % (its requests came
    // mostly late), but weighted by each tick's traffic it is 3.7 %, the service's own: the
    // ceiling does not fail it, and nothing else differs.
    let side = |k: usize, canary: bool| {
        let requests = match (k < 1200, canary) {
            (true, true) => 1.5,
            (true, false) => 28.5,
            (false, _) => 15.0,
        };
        let share = if (1200..1260).contains(&k) { 0.4 } else { 0.02 };
        tick(requests, requests * share, 0.0)
    };
    let j = run(1380, |k| side(k, false), |k| side(k, true));
    let errors = row(&j, MetricId::ErrorRate);
    assert!((errors.candidate.unwrap() - 9.6).abs() < 0.01, "{}", errors.reason());
    assert_ne!(errors.why, Why::AboveCeiling, "{}", errors.reason());
    assert!(errors.ceiling_ci.unwrap()[0] < 5.0, "{:?}", errors.ceiling_ci);
    assert!(!matches!(j.verdict, Verdict::Fail | Verdict::Warn), "{:?}", j.reasons());
}

#[test]
fn too_few_requests_is_insufficient_data_with_the_requests_still_needed() {
    let j = run(3, |_| tick(20.0, 1.0, 0.0), |_| tick(20.0, 1.0, 0.0));
    assert_eq!(j.verdict, Verdict::InsufficientData);
    let r = row(&j, MetricId::ErrorRate);
    assert_eq!((r.classification, r.why), (Classification::Undecided, Why::TooFewRequests));
    assert_eq!(r.needed_requests(), Some(40.0));
    assert!(j.reasons()[0].contains("fewer than the minimum requests"), "{:?}", j.reasons());
}

#[test]
fn a_clear_regression_fails_and_says_why() {
    // 2 % vs 8 % errors over 200 ticks of 50 requests.
    let j = run(200, |_| tick(50.0, 1.0, 0.0), |_| tick(50.0, 4.0, 0.0));
    let r = row(&j, MetricId::ErrorRate);
    assert_eq!((r.classification, r.verdict), (Classification::High, Verdict::Fail), "{}", r.reason());
    assert_eq!(j.verdict, Verdict::Fail);
    let reason = r.reason();
    assert!(reason.contains("candidate 8.00 % (800 of 10000) vs baseline 2.00 % (200 of 10000)"), "{reason}");
    assert!(reason.contains("beyond the allowed +1 point"), "{reason}");
}

#[test]
fn slower_candidates_fail_the_latency_tail() {
    // Candidate puts 10 % of its requests above 1 s instead of 2 %.
    let j = run(200, |_| tick(50.0, 1.0, 0.0), |_| tick(50.0, 1.0, 0.08));
    let r = row(&j, MetricId::LatencyP95Tail);
    assert_eq!(r.bound_ms, Some(1000.0));
    assert_eq!((r.classification, r.verdict), (Classification::High, Verdict::Fail), "{}", r.reason());
    assert!(r.reason().contains("(above 1000 ms)"), "{}", r.reason());
}

#[test]
fn the_ceiling_fails_a_candidate_that_is_as_bad_as_its_baseline() {
    // Both at 8 %: no difference, but above zai-proxy's 5 % gate.
    let j = run(400, |_| tick(50.0, 4.0, 0.0), |_| tick(50.0, 4.0, 0.0));
    let r = row(&j, MetricId::ErrorRate);
    assert_eq!((r.why, r.verdict), (Why::AboveCeiling, Verdict::Fail), "{}", r.reason());
    assert!(r.reason().contains("above the 5 % ceiling"), "{}", r.reason());
}

#[test]
fn overall_rules() {
    let j = run(2000, |_| tick(50.0, 1.0, 0.0), |_| tick(50.0, 1.0, 0.0));
    let base: Vec<Row> = j.rows.clone();
    let set = |id: MetricId, c: Classification, v: Verdict| {
        let mut rows = base.clone();
        let r = rows.iter_mut().find(|r| r.metric == id).unwrap();
        r.classification = c;
        r.verdict = v;
        overall(&rows).0
    };
    use Classification::*;
    assert_eq!(set(MetricId::ErrorRate, High, Verdict::Fail), Verdict::Fail);
    assert_eq!(set(MetricId::ErrorRate, High, Verdict::Warn), Verdict::Warn);
    assert_eq!(set(MetricId::Retries, High, Verdict::Fail), Verdict::Warn);
    assert_eq!(set(MetricId::ErrorRate, Undecided, Verdict::InsufficientData), Verdict::InsufficientData);
    assert_eq!(set(MetricId::Retries, Undecided, Verdict::InsufficientData), Verdict::Pass);
    // A lone decided metric that fails drags the score below 75.
    let mut rows = base.clone();
    for r in rows.iter_mut() {
        r.classification = Undecided;
        r.verdict = Verdict::InsufficientData;
        r.critical = false;
    }
    rows[2].classification = High;
    rows[2].verdict = Verdict::Warn;
    assert_eq!(overall(&rows), (Verdict::Fail, Some(0.0)));
}

#[test]
fn json_shape_names_every_field() {
    let j = run(30, |_| tick(50.0, 1.0, 0.0), |_| tick(50.0, 2.0, 0.0));
    let v = serde_json::to_value(&j).unwrap();
    for k in ["verdict", "score", "reasons", "method", "alpha", "level", "hypotheses", "metrics"] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    assert_eq!(v["method"], METHOD);
    let row = &v["metrics"][0];
    for k in [
        "metric",
        "label",
        "unit",
        "baseline",
        "candidate",
        "delta",
        "delta_ci",
        "classification",
        "verdict",
        "reason",
        "needed_requests",
    ] {
        assert!(row.get(k).is_some(), "{k} missing: {row}");
    }
    assert_eq!(row["metric"], "error_rate");
    // Undecided: how many more candidate requests would decide it.
    assert_eq!(row["classification"], "undecided", "{row}");
    assert!(row["needed_requests"].as_f64().unwrap() > 0.0, "{row}");
    // No NaN anywhere: serde_json would have written null for them, so check every number.
    let text = serde_json::to_string(&j).unwrap();
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
}
