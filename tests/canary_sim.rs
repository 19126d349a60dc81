//! The canary verdict's guarantee, measured: simulated rollouts judged at every 5 s look for
//! two hours (ARCHITECTURE.md, "Canary analysis").
//!
//! - A/A rollouts (both variants identical) at 1, 3 and 10 req/s per side: the share ever
//!   called `warn` or `fail` must stay within `alpha` plus three standard errors. Also an A/A
//!   with a 10 % canary, one whose traffic split moves (10 % then 50 %) with an upstream error
//!   burst on both sides after the move, and one without a reference hour.
//! - Power: time to `fail` for +1 and +3 points of 5xx share, to `warn`/`fail` for 1.5x and 2x
//!   latency, at the same rates.
//!
//! As in service, the baseline ran alone for an hour before the rollout and its latency buckets
//! from then are the reference the tail bounds come from (`Scenario::reference`); one A/A
//! scenario has none, so the bounds come from both sides pooled at each look.
//!
//! Seeded, so every run draws the same rollouts; spread over two threads.

#[path = "canary_sim/model.rs"]
mod model;

use model::{Behaviour, Burst, Generator, Scenario, TICK_S};
use zai_dash::canary::Verdict;
use zai_dash::canary::{CanaryConfig, Evidence, judge};

/// What one rollout showed.
#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    /// Seconds to the first `warn` or `fail`.
    alarm_s: Option<f64>,
    /// Seconds to the first `fail`.
    fail_s: Option<f64>,
}

/// Runs one rollout, judging after every tick; stops at the first `fail`.
fn rollout(scenario: Scenario, seed: u64, cfg: &CanaryConfig) -> Outcome {
    let mut g = Generator::new(scenario, seed);
    let mut e = Evidence::new();
    if scenario.reference {
        e.set_reference(&g.reference(), &[]);
    }
    let mut out = Outcome::default();
    while g.next() {
        e.fold(&g.baseline, &g.candidate);
        let v = judge(&e, cfg).verdict;
        let t = g.tick as f64 * TICK_S;
        if matches!(v, Verdict::Warn | Verdict::Fail) && out.alarm_s.is_none() {
            out.alarm_s = Some(t);
        }
        if v == Verdict::Fail {
            out.fail_s = Some(t);
            break;
        }
    }
    out
}

/// `runs` rollouts of `scenario` over two threads, seeds `base..base+runs`.
fn many(scenario: Scenario, runs: u64, base: u64) -> Vec<Outcome> {
    let cfg = CanaryConfig::default();
    let half = runs / 2;
    std::thread::scope(|s| {
        let first = s.spawn(|| (base..base + half).map(|seed| rollout(scenario, seed, &cfg)).collect::<Vec<_>>());
        let mut rest: Vec<Outcome> = (base + half..base + runs).map(|seed| rollout(scenario, seed, &cfg)).collect();
        let mut all = first.join().unwrap();
        all.append(&mut rest);
        all
    })
}

/// Share of rollouts with an alarm by `seconds`, and its standard error.
fn alarm_rate(outcomes: &[Outcome], seconds: f64) -> (f64, f64) {
    let n = outcomes.len() as f64;
    let p = outcomes.iter().filter(|o| o.alarm_s.is_some_and(|t| t <= seconds)).count() as f64 / n;
    (p, (p * (1.0 - p) / n).sqrt())
}

/// The bound a false-alarm rate must stay within: alpha plus three standard errors of a
/// rate equal to alpha over `n` rollouts.
fn bound(alpha: f64, n: usize) -> f64 {
    alpha + 3.0 * (alpha * (1.0 - alpha) / n as f64).sqrt()
}

const RATES: [f64; 3] = [1.0, 3.0, 10.0];

#[test]
fn healthy_canaries_are_rarely_ever_called_warn_or_fail() {
    const RUNS: u64 = 670;
    let alpha = CanaryConfig::default().alpha();
    let mut pooled = Vec::new();
    println!("A/A, looked at every 5 s: share of rollouts ever warn/fail");
    println!("{:>8} {:>6} {:>8} {:>8} {:>8}", "req/s", "runs", "8 min", "1 h", "2 h");
    for (i, &rate) in RATES.iter().enumerate() {
        let out = many(Scenario::aa(rate), RUNS, 1_000_000 * (i as u64 + 1));
        let [m8, h1, h2] = [480.0, 3600.0, 7200.0].map(|t| alarm_rate(&out, t).0);
        println!("{rate:>8} {RUNS:>6} {:>7.2}% {:>7.2}% {:>7.2}%", 100.0 * m8, 100.0 * h1, 100.0 * h2);
        assert!(h2 <= bound(alpha, out.len()), "{rate} req/s: {h2} of A/A rollouts alarmed");
        pooled.extend(out);
    }
    let (p, se) = alarm_rate(&pooled, 7200.0);
    println!("pooled: {:.2}% ± {:.2}% over {} rollouts", 100.0 * p, 100.0 * se, pooled.len());
    assert!(p <= bound(alpha, pooled.len()), "{p} of all A/A rollouts alarmed");
}

#[test]
fn uneven_splits_and_shared_incidents_are_not_regressions() {
    const RUNS: u64 = 200;
    let alpha = CanaryConfig::default().alpha();
    let small = Scenario { canary_share: 0.1, split_until_tick: usize::MAX, ..Scenario::aa(3.0) };
    // Argo-like: 10 % canary for 30 minutes, then 50 %; at minute 45 an upstream incident
    // fails 30 % of both sides' requests and triples latency for 5 minutes. The canary's
    // requests fall in the incident more often than the baseline's, which an unstratified
    // comparison takes for a regression.
    let incident = Scenario {
        canary_share: 0.1,
        split_until_tick: 360,
        burst: Some(Burst { from_tick: 540, ticks: 60, errors: 0.3, slowdown: 3.0 }),
        ..Scenario::aa(3.0)
    };
    println!("A/A at 3 req/s per side: share of rollouts ever warn/fail within 2 h");
    // No reference hour (the baseline has no history before the rollout): the tail bounds
    // come from both sides pooled at each look, the fallback.
    let pooled_bound = Scenario { reference: false, ..Scenario::aa(3.0) };
    for (name, scenario, seed) in [
        ("10 % canary", small, 7_000_000),
        ("split step + shared burst", incident, 8_000_000),
        ("no reference (pooled bound)", pooled_bound, 9_000_000),
    ] {
        let out = many(scenario, RUNS, seed);
        let (p, se) = alarm_rate(&out, 7200.0);
        println!("{name:>28}: {:.2}% ± {:.2}% over {RUNS}", 100.0 * p, 100.0 * se);
        assert!(p <= bound(alpha, out.len()), "{name}: {p}");
    }
}

/// Median of the times that happened, and the share that did.
fn detection(times: impl Iterator<Item = Option<f64>>) -> (f64, Option<f64>) {
    let all: Vec<Option<f64>> = times.collect();
    let mut seen: Vec<f64> = all.iter().flatten().copied().collect();
    seen.sort_by(f64::total_cmp);
    let share = seen.len() as f64 / all.len() as f64;
    // The median over all rollouts: undefined when fewer than half detected.
    let median = (2 * seen.len() > all.len()).then(|| seen[all.len() / 2]);
    (share, median)
}

fn minutes(t: Option<f64>) -> String {
    t.map_or_else(|| "-".to_owned(), |s| format!("{:.1} min", s / 60.0))
}

#[test]
fn real_regressions_are_found() {
    const RUNS: u64 = 100;
    let regressions = [
        ("5xx +1 point", Behaviour { errors: 0.03, slowdown: 1.0 }),
        ("5xx +3 points", Behaviour { errors: 0.05, slowdown: 1.0 }),
        ("latency x1.5", Behaviour { errors: 0.02, slowdown: 1.5 }),
        ("latency x2", Behaviour { errors: 0.02, slowdown: 2.0 }),
    ];
    println!("Regressions, {RUNS} rollouts each, 2 h, looked at every 5 s");
    println!(
        "{:>14} {:>6} {:>10} {:>14} {:>10} {:>14}",
        "regression", "req/s", "fail", "median fail", "warn/fail", "median alarm"
    );
    for (r, (name, candidate)) in regressions.into_iter().enumerate() {
        for (i, &rate) in RATES.iter().enumerate() {
            let scenario = Scenario { candidate, ..Scenario::aa(rate) };
            let out = many(scenario, RUNS, 20_000_000 + 1_000_000 * (3 * r + i) as u64);
            let (fail, fail_median) = detection(out.iter().map(|o| o.fail_s));
            let (alarm, alarm_median) = detection(out.iter().map(|o| o.alarm_s));
            println!(
                "{name:>14} {rate:>6} {:>9.0}% {:>14} {:>9.0}% {:>14}",
                100.0 * fail,
                minutes(fail_median),
                100.0 * alarm,
                minutes(alarm_median)
            );
            // Loose sanity bounds: large regressions are found within the two hours.
            if name == "5xx +3 points" {
                assert!(fail >= 0.9, "{name} at {rate} req/s failed in only {fail}");
            }
            if name == "latency x2" || (name == "latency x1.5" && rate >= 3.0) {
                assert!(alarm >= 0.9, "{name} at {rate} req/s alarmed in only {alarm}");
            }
            if name == "5xx +1 point" && rate >= 10.0 {
                assert!(alarm >= 0.5, "{name} at {rate} req/s alarmed in only {alarm}");
            }
        }
    }
}
