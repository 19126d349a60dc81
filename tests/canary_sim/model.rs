//! A seeded model of two variants scraped on the same 5 s ticks, for the canary simulation
//! (`tests/canary_sim.rs`) and the comparison bench (`benches/canary.rs`).
//!
//! Per tick and side it draws counts, not requests where it can: Poisson arrivals, a
//! multinomial split into 5xx / 429 / 2xx, Poisson upstream errors and retries, gamma sums of
//! tokens, and a log-normal latency binned into zai-proxy's duration buckets (one uniform per
//! request against the bucket CDF). A small in-file PRNG (xoshiro256**, seeded by splitmix64)
//! keeps runs reproducible without a dependency.

#![allow(dead_code)] // each includer uses its own part

use zai_dash::canary::SideTick;
use zai_dash::canary::normal_sf;
use zai_dash::proxy::metrics::DURATION_BUCKETS;

/// Seconds per tick.
pub const TICK_S: f64 = 5.0;
/// Ticks in two hours.
pub const TWO_HOURS: usize = 1440;
/// Ticks in the hour before the rollout that give the baseline's reference histogram.
pub const REFERENCE_TICKS: usize = 720;

/// xoshiro256** seeded through splitmix64.
pub struct Rng {
    s: [u64; 4],
    spare: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Self { s: [next(), next(), next(), next()], spare: None }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Marsaglia's polar method, keeping the spare).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        loop {
            let (u, v) = (2.0 * self.uniform() - 1.0, 2.0 * self.uniform() - 1.0);
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * s.ln() / s).sqrt();
                self.spare = Some(v * f);
                return u * f;
            }
        }
    }

    /// Poisson by inversion (means here stay below ~100), normal beyond.
    pub fn poisson(&mut self, mean: f64) -> f64 {
        if mean <= 0.0 {
            return 0.0;
        }
        if mean > 200.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0);
        }
        let u = self.uniform();
        let (mut k, mut p) = (0.0, (-mean).exp());
        let mut cdf = p;
        while u > cdf && k < 10.0 * mean + 50.0 {
            k += 1.0;
            p *= mean / k;
            cdf += p;
        }
        k
    }

    /// Binomial by inversion from the smaller tail.
    pub fn binomial(&mut self, n: f64, p: f64) -> f64 {
        if n <= 0.0 || p <= 0.0 {
            return 0.0;
        }
        if p >= 1.0 {
            return n;
        }
        if p > 0.5 {
            return n - self.binomial(n, 1.0 - p);
        }
        let u = self.uniform();
        let q = 1.0 - p;
        let mut prob = q.powf(n);
        let (mut k, mut cdf) = (0.0, prob);
        while u > cdf && k < n {
            prob *= (n - k) / (k + 1.0) * p / q;
            k += 1.0;
            cdf += prob;
        }
        k
    }

    /// Gamma(shape, scale) (Marsaglia and Tsang; shape below 1 boosted).
    pub fn gamma(&mut self, shape: f64, scale: f64) -> f64 {
        if shape <= 0.0 {
            return 0.0;
        }
        if shape < 1.0 {
            return self.gamma(shape + 1.0, scale) * self.uniform().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v * scale;
            }
        }
    }
}

/// How one variant behaves.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// 5xx share.
    pub errors: f64,
    /// Latency multiplier over the common log-normal.
    pub slowdown: f64,
}

impl Behaviour {
    pub const HEALTHY: Behaviour = Behaviour { errors: 0.02, slowdown: 1.0 };
}

/// A shared upstream incident: both sides fail this share and slow down for a while.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    pub from_tick: usize,
    pub ticks: usize,
    pub errors: f64,
    pub slowdown: f64,
}

/// One rollout's setting.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Requests per second per side at an even split (both sides together: twice this).
    pub rate: f64,
    /// Candidate's share of the traffic, and after `split_until_tick` ticks, 0.5.
    pub canary_share: f64,
    pub split_until_tick: usize,
    pub baseline: Behaviour,
    pub candidate: Behaviour,
    pub burst: Option<Burst>,
    pub ticks: usize,
    /// Whether the baseline ran alone for an hour before (at `rate` per tick), so its buckets
    /// from then are the reference the tail bounds come from; else they come from pooled data.
    pub reference: bool,
}

impl Scenario {
    /// A/A at `rate` req/s per side for two hours.
    pub fn aa(rate: f64) -> Self {
        Scenario {
            rate,
            canary_share: 0.5,
            split_until_tick: 0,
            baseline: Behaviour::HEALTHY,
            candidate: Behaviour::HEALTHY,
            burst: None,
            ticks: TWO_HOURS,
            reference: true,
        }
    }

    fn share_at(&self, tick: usize) -> f64 {
        if tick < self.split_until_tick { self.canary_share } else { 0.5 }
    }
}

/// Latency model: log-normal with this median (s) and log-sd, before slowdowns.
const MEDIAN_S: f64 = 1.2;
const SIGMA: f64 = 0.8;

/// Cumulative probability at each duration bucket bound (`+Inf` last) for a slowdown.
pub fn latency_cdf(slowdown: f64) -> Vec<f64> {
    let mu = (MEDIAN_S * slowdown).ln();
    let mut out: Vec<f64> = DURATION_BUCKETS.iter().map(|&le| 1.0 - normal_sf((le.ln() - mu) / SIGMA)).collect();
    out.push(1.0);
    out
}

/// Draws rollouts tick by tick into two reusable [`SideTick`]s.
pub struct Generator {
    pub scenario: Scenario,
    seed: u64,
    rng: Rng,
    cdfs: [Vec<f64>; 2],
    burst_cdf: Vec<f64>,
    pub tick: usize,
    pub baseline: SideTick,
    pub candidate: SideTick,
}

impl Generator {
    pub fn new(scenario: Scenario, seed: u64) -> Self {
        let burst_cdf = latency_cdf(scenario.burst.map_or(1.0, |b| b.slowdown));
        let cdfs = [latency_cdf(scenario.baseline.slowdown), latency_cdf(scenario.candidate.slowdown)];
        let empty = SideTick {
            latency: DURATION_BUCKETS.iter().map(|&le| (le, 0.0)).chain([(f64::INFINITY, 0.0)]).collect(),
            ..SideTick::default()
        };
        Self {
            scenario,
            seed,
            rng: Rng::new(seed),
            cdfs,
            burst_cdf,
            tick: 0,
            baseline: empty.clone(),
            candidate: empty,
        }
    }

    /// The baseline's cumulative latency buckets over [`REFERENCE_TICKS`] before the rollout,
    /// at the scenario's rate per side and the baseline's behaviour: what the service reads
    /// from its store for the hour before `since`. Drawn from a stream of its own, so a
    /// rollout's ticks are the same with or without it.
    pub fn reference(&self) -> Vec<(f64, f64)> {
        let mut rng = Rng::new(self.seed ^ 0x0DDB_A11C_AB1E_5EED);
        let cdf = &self.cdfs[0];
        let mut tick = self.baseline.latency.clone();
        let mut total: Vec<(f64, f64)> = tick.iter().map(|&(le, _)| (le, 0.0)).collect();
        for _ in 0..REFERENCE_TICKS {
            let n = rng.poisson(self.scenario.rate * TICK_S);
            draw_latency(&mut rng, n, cdf, &mut tick);
            for (t, b) in total.iter_mut().zip(&tick) {
                t.1 += b.1;
            }
        }
        total
    }

    /// Draws the next tick into `baseline` and `candidate`; false after the last.
    pub fn next(&mut self) -> bool {
        if self.tick >= self.scenario.ticks {
            return false;
        }
        let sc = self.scenario;
        let share = sc.share_at(self.tick);
        let burst = sc.burst.filter(|b| (b.from_tick..b.from_tick + b.ticks).contains(&self.tick));
        let total = 2.0 * sc.rate * TICK_S;
        for side in 0..2 {
            let (mean, behaviour) =
                if side == 0 { (total * (1.0 - share), sc.baseline) } else { (total * share, sc.candidate) };
            let errors = burst.map_or(behaviour.errors, |b| b.errors.max(behaviour.errors));
            let cdf = if burst.is_some() { &self.burst_cdf } else { &self.cdfs[side] };
            let out = if side == 0 { &mut self.baseline } else { &mut self.candidate };
            draw_side(&mut self.rng, mean, errors, burst.is_some(), cdf, out);
        }
        self.tick += 1;
        true
    }
}

/// One side's tick.
fn draw_side(rng: &mut Rng, mean: f64, errors: f64, bursting: bool, cdf: &[f64], out: &mut SideTick) {
    let n = rng.poisson(mean);
    let e5 = rng.binomial(n, errors);
    let e429 = rng.binomial(n - e5, 0.005);
    let ok = n - e5 - e429;
    out.requests = n;
    out.errors_5xx = e5;
    out.rate_limited = e429;
    out.ok_2xx = ok;
    out.upstream_errors = rng.poisson(n * if bursting { 0.3 } else { 0.005 });
    out.retries = rng.poisson(n * 0.01);
    draw_latency(rng, n, cdf, &mut out.latency);
    // Tokens of answered requests: gamma sums (per request: output mean 400, input 1500,
    // cache reads 1000); cost from the token counts at list-like prices.
    out.output_tokens = rng.gamma(2.0 * ok, 200.0);
    out.input_tokens = rng.gamma(1.5 * ok, 1000.0);
    out.cache_read_tokens = rng.gamma(1.0 * ok, 1000.0);
    out.cost_usd = 3e-6 * out.input_tokens + 15e-6 * out.output_tokens + 0.3e-6 * out.cache_read_tokens;
}

/// Cumulative bucket counts of `n` log-normal latencies. Few requests: one uniform each against
/// the bucket CDF; many: the multinomial as a chain of binomials (one draw per bucket).
fn draw_latency(rng: &mut Rng, n: f64, cdf: &[f64], buckets: &mut [(f64, f64)]) {
    if n < 12.0 {
        for b in buckets.iter_mut() {
            b.1 = 0.0;
        }
        for _ in 0..n as usize {
            let u = rng.uniform();
            let mut i = 0;
            while i + 1 < cdf.len() && u > cdf[i] {
                i += 1;
            }
            buckets[i].1 += 1.0;
        }
        let mut running = 0.0;
        for b in buckets.iter_mut() {
            running += b.1;
            b.1 = running;
        }
        return;
    }
    let (mut left, mut below, mut done) = (n, 0.0, 0.0);
    for (i, b) in buckets.iter_mut().enumerate() {
        if left > 0.0 {
            let p = if below < 1.0 { ((cdf[i] - below) / (1.0 - below)).clamp(0.0, 1.0) } else { 1.0 };
            let k = if i + 1 == cdf.len() { left } else { rng.binomial(left, p) };
            left -= k;
            done += k;
        }
        below = cdf[i];
        b.1 = done;
    }
}
