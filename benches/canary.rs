//! Canary verdicts compared on the same simulated rollouts (issue 20).
//!
//! `cargo bench --bench canary` prints the tables BENCHMARKS.md quotes. Every rollout is drawn
//! once by the model of `tests/canary_sim` (two variants on the same 5 s ticks, Poisson
//! arrivals, 2 % 5xx, log-normal latency in zai-proxy's buckets) and judged by three methods:
//!
//! - **sequential**: `canary::judge` (always-valid confidence sequences), every 5 s, with the
//!   baseline's hour before the rollout as the reference for latency tail bounds.
//! - **today**: the old `/api/compare` verdict (`support/ztest.rs`: z-test on the 5xx share, p95 ratio 1.5x warn / 2x fail)
//!   over the compare page's default 15-minute sliding window, every 5 s.
//! - **kayenta**: Kayenta's judge as configured by default: per-minute points of each side
//!   since the start (5xx share and p95), a Mann-Whitney U test at 98 % confidence whose
//!   Hodges-Lehmann interval must clear a tolerance of 0.25 |estimate| and whose mean ratio
//!   must reach `allowedIncrease` 1.0 for a metric to be High; any High of the two metrics
//!   makes the score 50, below the marginal 75: fail. Looked at once per complete minute,
//!   which is when its points change.
//!
//! Knobs: `CANARY_BENCH_AA` (A/A rollouts per rate, default 500), `CANARY_BENCH_POWER`
//! (rollouts per regression and rate, default 100).

#[path = "../tests/canary_sim/model.rs"]
mod model;
#[path = "support/ztest.rs"]
mod ztest;

use std::collections::VecDeque;

use model::{Behaviour, Generator, Scenario, TICK_S};
use zai_dash::canary::{CanaryConfig, Evidence, SideTick, Verdict, judge};
use zai_dash::point::Histogram;

const METHODS: [&str; 3] = ["sequential", "today (15 min)", "kayenta (1 min)"];
const RATES: [f64; 3] = [1.0, 3.0, 10.0];

/// First alarm (`warn` or `fail`) and first `fail`, seconds, per method.
#[derive(Debug, Clone, Copy, Default)]
struct Times {
    alarm: [Option<f64>; 3],
    fail: [Option<f64>; 3],
}

impl Times {
    fn note(&mut self, m: usize, t: f64, v: Verdict) {
        if matches!(v, Verdict::Warn | Verdict::Fail) && self.alarm[m].is_none() {
            self.alarm[m] = Some(t);
        }
        if v == Verdict::Fail && self.fail[m].is_none() {
            self.fail[m] = Some(t);
        }
    }
}

/// One side's requests, 5xx and cumulative latency buckets over a tick or a minute.
type Slice = (f64, f64, Vec<(f64, f64)>);

/// Today's verdict over a sliding window of ticks.
struct Sliding {
    ticks: VecDeque<[Slice; 2]>,
    len: usize,
}

impl Sliding {
    fn push(&mut self, b: &SideTick, c: &SideTick) -> Verdict {
        let keep = |t: &SideTick| (t.requests, t.errors_5xx, t.latency.clone());
        self.ticks.push_back([keep(b), keep(c)]);
        if self.ticks.len() > self.len {
            self.ticks.pop_front();
        }
        let side = |s: usize| {
            let (mut req, mut err) = (0.0, 0.0);
            let mut h = Histogram::default();
            for t in &self.ticks {
                req += t[s].0;
                err += t[s].1;
                h.add(&Histogram { buckets: t[s].2.clone(), sum: 0.0, count: t[s].0 });
            }
            ztest::Window { requests: req, errors_5xx: err, p95_ms: h.quantile(0.95).map(|s| s * 1000.0) }
        };
        ztest::verdict(&side(0), &side(1))
    }
}

/// Kayenta's judge over per-minute points.
#[derive(Default)]
struct Kayenta {
    minute: [Slice; 2],
    errors: [Vec<f64>; 2],
    p95: [Vec<f64>; 2],
    ticks: usize,
}

impl Kayenta {
    /// Adds a tick; at each complete minute returns the verdict.
    fn push(&mut self, b: &SideTick, c: &SideTick) -> Option<Verdict> {
        for (s, t) in [b, c].into_iter().enumerate() {
            let m = &mut self.minute[s];
            m.0 += t.requests;
            m.1 += t.errors_5xx;
            if m.2.is_empty() {
                m.2 = t.latency.clone();
            } else {
                for (a, x) in m.2.iter_mut().zip(&t.latency) {
                    a.1 += x.1;
                }
            }
        }
        self.ticks += 1;
        if !self.ticks.is_multiple_of(12) {
            return None;
        }
        for s in 0..2 {
            let (req, err, buckets) = std::mem::take(&mut self.minute[s]);
            if req > 0.0 {
                self.errors[s].push(err / req);
            }
            let h = Histogram { buckets, sum: 0.0, count: req };
            if let Some(p) = h.quantile(0.95) {
                self.p95[s].push(p);
            }
        }
        if self.errors.iter().chain(&self.p95).any(|v| v.len() < 2) {
            return None;
        }
        let high = high(&self.errors[0], &self.errors[1]) || high(&self.p95[0], &self.p95[1]);
        Some(if high { Verdict::Fail } else { Verdict::Pass })
    }
}

/// Kayenta's Mann-Whitney classification of an increase: the 98 % interval of the
/// Hodges-Lehmann shift (candidate minus baseline) lies above 0.25 |estimate|, and the mean
/// ratio is at least 1.
fn high(base: &[f64], cand: &[f64]) -> bool {
    let mut diffs: Vec<f64> = cand.iter().flat_map(|c| base.iter().map(move |b| c - b)).collect();
    let n = diffs.len();
    let (n1, n2) = (cand.len() as f64, base.len() as f64);
    let z = 2.326_348; // two-sided 98 %
    let k = (n1 * n2 / 2.0 - z * (n1 * n2 * (n1 + n2 + 1.0) / 12.0).sqrt()).floor();
    if k < 0.0 {
        return false;
    }
    let k = k as usize;
    let estimate = *diffs.select_nth_unstable_by(n / 2, f64::total_cmp).1;
    let lower = *diffs.select_nth_unstable_by(k, f64::total_cmp).1;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ratio = mean(cand) / mean(base);
    lower > 0.25 * estimate.abs() && ratio >= 1.0
}

/// One rollout judged by every method; stops once every method failed.
fn rollout(scenario: Scenario, seed: u64, cfg: &CanaryConfig) -> Times {
    let mut g = Generator::new(scenario, seed);
    let mut e = Evidence::new();
    if scenario.reference {
        e.set_reference(&g.reference(), &[]);
    }
    let mut today = Sliding { ticks: VecDeque::new(), len: 180 };
    let mut kayenta = Kayenta::default();
    let mut times = Times::default();
    while g.next() {
        let t = g.tick as f64 * TICK_S;
        e.fold(&g.baseline, &g.candidate);
        times.note(0, t, judge(&e, cfg).verdict);
        times.note(1, t, today.push(&g.baseline, &g.candidate));
        if let Some(v) = kayenta.push(&g.baseline, &g.candidate) {
            times.note(2, t, v);
        }
        if times.fail.iter().all(Option::is_some) {
            break;
        }
    }
    times
}

fn many(scenario: Scenario, runs: u64, base: u64) -> Vec<Times> {
    let cfg = CanaryConfig::default();
    let half = runs / 2;
    std::thread::scope(|s| {
        let first = s.spawn(|| (base..base + half).map(|seed| rollout(scenario, seed, &cfg)).collect::<Vec<_>>());
        let mut rest: Vec<Times> = (base + half..base + runs).map(|seed| rollout(scenario, seed, &cfg)).collect();
        let mut all = first.join().unwrap_or_default();
        all.append(&mut rest);
        all
    })
}

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pct(part: usize, all: usize) -> String {
    format!("{:.1}%", 100.0 * part as f64 / all.max(1) as f64)
}

/// Median over all rollouts (a rollout that never detected counts as later than any), as
/// minutes; `>2 h` when fewer than half detected.
fn median(times: impl Iterator<Item = Option<f64>>) -> String {
    let mut all: Vec<f64> = times.map(|t| t.unwrap_or(f64::INFINITY)).collect();
    all.sort_by(f64::total_cmp);
    match all.get(all.len() / 2) {
        Some(t) if t.is_finite() => format!("{:.1} min", t / 60.0),
        _ => ">2 h".to_owned(),
    }
}

fn main() {
    let aa_runs = knob("CANARY_BENCH_AA", 500);
    let power_runs = knob("CANARY_BENCH_POWER", 100);
    println!("## A/A: share of healthy rollouts ever called warn or fail ({aa_runs} per rate)\n");
    println!("| method | req/s per side | by 8 min | by 1 h | by 2 h |");
    println!("|---|---:|---:|---:|---:|");
    for (i, &rate) in RATES.iter().enumerate() {
        let out = many(Scenario::aa(rate), aa_runs, 100_000_000 + 1_000_000 * i as u64);
        for (m, name) in METHODS.iter().enumerate() {
            let by = |s: f64| pct(out.iter().filter(|t| t.alarm[m].is_some_and(|a| a <= s)).count(), out.len());
            println!("| {name} | {rate} | {} | {} | {} |", by(480.0), by(3600.0), by(7200.0));
        }
    }
    let regressions = [
        ("5xx 2 % -> 3 %", Behaviour { errors: 0.03, slowdown: 1.0 }),
        ("5xx 2 % -> 5 %", Behaviour { errors: 0.05, slowdown: 1.0 }),
        ("5xx 2 % -> 6 %", Behaviour { errors: 0.06, slowdown: 1.0 }),
        ("latency x1.5", Behaviour { errors: 0.02, slowdown: 1.5 }),
        ("latency x2", Behaviour { errors: 0.02, slowdown: 2.0 }),
        ("latency x2.2", Behaviour { errors: 0.02, slowdown: 2.2 }),
    ];
    println!("\n## Regressions: median time to the first warn/fail and to fail ({power_runs} per row)\n");
    println!("| regression | req/s per side | method | warn/fail within 2 h | median to warn/fail | median to fail |");
    println!("|---|---:|---|---:|---:|---:|");
    for (r, (name, candidate)) in regressions.into_iter().enumerate() {
        for (i, &rate) in RATES.iter().enumerate() {
            let scenario = Scenario { candidate, ..Scenario::aa(rate) };
            let out = many(scenario, power_runs, 200_000_000 + 1_000_000 * (3 * r + i) as u64);
            for (m, method) in METHODS.iter().enumerate() {
                let detected = out.iter().filter(|t| t.alarm[m].is_some()).count();
                println!(
                    "| {name} | {rate} | {method} | {} | {} | {} |",
                    pct(detected, out.len()),
                    median(out.iter().map(|t| t.alarm[m])),
                    median(out.iter().map(|t| t.fail[m]))
                );
            }
        }
    }
}
