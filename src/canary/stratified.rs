//! Running sums of one comparison, stratified by scrape tick, and the estimates they give.
//!
//! zai-dash scrapes both variants on the same ticks, so tick `k` is a stratum with
//! denominators `n_b, n_c` (requests, answered requests, histogram observations, prompt
//! tokens) and numerators `y_b, y_c` (errors, requests above a latency bound, output tokens,
//! USD). With `w = n_b·n_c/(n_b+n_c)` and per-side rates `r = y/n`, the Mantel-Haenszel-style
//! standardized rates are `R_s = Σ w·r_s / Σ w`. Their difference (absolute margins) or the log
//! of their ratio (relative margins) compares the variants *within* each tick, so an upstream
//! incident that hits both sides, or a traffic split that moves mid-rollout, is not taken for a
//! regression. Ticks where a side saw nothing carry no weight.
//!
//! Variances are cluster-robust (ticks as clusters: the sandwich
//! `Σ (a_c/R_c − a_b/R_b … )²/W²` of the per-tick contributions), which catches bursty,
//! overdispersed counts, and never smaller than a per-request floor (binomial for shares,
//! Poisson for event counts) from the side's pooled, smoothed rate, which protects the first
//! minutes when few ticks carry the sandwich. That is the variance at the estimate, for the
//! confidence sequence; the test of "no difference" takes the variance under it
//! ([`Paired::no_difference`]). Everything is a running sum: a tick folds in O(1) and two
//! accumulators add. [`OwnShare`] is the candidate's own share, for absolute ceilings.

/// What a numerator counts, which decides the per-request variance floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A share of the denominator (each request is 0 or 1): floor `p̃(1−p̃)`.
    Share,
    /// Events per request (upstream errors, retries): Poisson floor `r̃`.
    Events,
    /// An amount per unit (tokens, USD): floor at a coefficient of variation of 1.
    Amount,
}

/// Sums of one comparison. Index 0 is the baseline, 1 the candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Paired {
    /// Denominators over every tick (shown as the sample sizes).
    pub n: [f64; 2],
    /// Numerators over every tick.
    pub y: [f64; 2],
    /// Ticks where both sides had a denominator.
    pub ticks: f64,
    w: f64,
    w2: f64,
    /// `Σ w²/n_s`: the per-request floor's weight.
    w2_n: [f64; 2],
    /// `a_s = w·r_s` per tick: `Σ a`, `Σ a²`, `Σ w·a`, and `Σ a_b·a_c`.
    a: [f64; 2],
    aa: [f64; 2],
    wa: [f64; 2],
    ab: f64,
    /// Variance of `Σ w·(r_c − r_b)` under "no difference", given each tick's totals: the
    /// hypergeometric `Σ w·p̂(1−p̂)·N/(N−1)` for shares and `Σ w·λ̂` for events, with `p̂`, `λ̂`
    /// both sides' pooled rate *in that tick* (Cochran-Mantel-Haenszel).
    hyper: f64,
    events: f64,
}

/// The candidate's own share of requests for an absolute ceiling, each tick weighted by both
/// sides' traffic `N = n_b + n_c`: `Σ N·r_c / Σ N`, what its share would be had it served all
/// the requests. With a constant split this is its plain share; when the split moves (10 % →
/// 50 %) a shared incident after the move weighs what it weighs for the whole service, not
/// more. Kept apart from [`Paired`]: only request shares with a ceiling need it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct OwnShare {
    /// The candidate's requests and numerator over every tick.
    n: f64,
    y: f64,
    /// Over ticks where the candidate had requests: `Σ N`, `Σ N·r_c`, `Σ N²·r_c²`,
    /// `Σ N²·r_c`, `Σ N²`, `Σ N²/n_c`, and their number.
    t: f64,
    tr: f64,
    ttrr: f64,
    ttr: f64,
    tt: f64,
    tt_n: f64,
    ticks: f64,
}

impl OwnShare {
    /// Folds one tick: the baseline's requests, the candidate's requests and numerator.
    pub(crate) fn fold(&mut self, nb: f64, nc: f64, yc: f64) {
        self.n += nc;
        self.y += yc;
        if nc <= 0.0 {
            return;
        }
        let (total, rc) = (nb.max(0.0) + nc, yc / nc);
        self.ticks += 1.0;
        self.t += total;
        self.tr += total * rc;
        self.ttrr += total * total * rc * rc;
        self.ttr += total * total * rc;
        self.tt += total * total;
        self.tt_n += total * total / nc;
    }

    /// Adds another accumulator's sums.
    pub fn merge(&mut self, o: &OwnShare) {
        self.n += o.n;
        self.y += o.y;
        self.t += o.t;
        self.tr += o.tr;
        self.ttrr += o.ttrr;
        self.ttr += o.ttr;
        self.tt += o.tt;
        self.tt_n += o.tt_n;
        self.ticks += o.ticks;
    }

    /// The traffic-weighted share with its variance: the one-sample cluster sandwich across
    /// ticks, never below the binomial floor at the candidate's smoothed plain share.
    pub(crate) fn estimate(&self) -> Option<Estimate> {
        if self.t <= 0.0 {
            return None;
        }
        let p = self.tr / self.t;
        let factor = if self.ticks > 1.0 { self.ticks / (self.ticks - 1.0) } else { 1.0 };
        let spread = (self.ttrr - 2.0 * p * self.ttr + p * p * self.tt).max(0.0);
        let sandwich = factor * spread / (self.t * self.t);
        let smoothed = ((self.y + 1.0) / (self.n + 2.0)).min(1.0);
        let floor = smoothed * (1.0 - smoothed) * self.tt_n / (self.t * self.t);
        Some(Estimate { delta: p, variance: sandwich.max(floor) })
    }
}

/// An estimate on the comparison's scale (difference or log ratio) with its variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    /// Candidate minus baseline (difference), or `ln(R_c/R_b)` (log ratio).
    pub delta: f64,
    /// Its variance (never zero: see [`VARIANCE_FLOOR`]).
    pub variance: f64,
}

/// Smallest variance an estimate reports relative to the squared scale of its values, so two
/// identical constant series decide instead of dividing by zero.
const VARIANCE_FLOOR: f64 = 1e-24;

impl Paired {
    /// Folds one tick: baseline `(n_b, y_b)`, candidate `(n_c, y_c)`.
    pub(crate) fn fold(&mut self, nb: f64, yb: f64, nc: f64, yc: f64) {
        // Written out side by side: this runs for every metric and bound at every tick.
        self.n[0] += nb;
        self.n[1] += nc;
        self.y[0] += yb;
        self.y[1] += yc;
        if nb <= 0.0 || nc <= 0.0 {
            return;
        }
        let total = nb + nc;
        let w = nb * nc / total;
        let (ab, ac) = (w * yb / nb, w * yc / nc);
        self.ticks += 1.0;
        self.w += w;
        self.w2 += w * w;
        self.w2_n[0] += w * w / nb;
        self.w2_n[1] += w * w / nc;
        self.a[0] += ab;
        self.a[1] += ac;
        self.aa[0] += ab * ab;
        self.aa[1] += ac * ac;
        self.wa[0] += w * ab;
        self.wa[1] += w * ac;
        self.ab += ab * ac;
        let pooled = (yb + yc) / total;
        let p = pooled.clamp(0.0, 1.0);
        self.hyper += w * p * (1.0 - p) * total / (total - 1.0).max(1.0);
        self.events += w * pooled.max(0.0);
    }

    /// Adds another accumulator's sums (two intervals, or two pods' worth of ticks).
    pub fn merge(&mut self, o: &Paired) {
        for s in 0..2 {
            self.n[s] += o.n[s];
            self.y[s] += o.y[s];
            self.w2_n[s] += o.w2_n[s];
            self.a[s] += o.a[s];
            self.aa[s] += o.aa[s];
            self.wa[s] += o.wa[s];
        }
        self.ticks += o.ticks;
        self.w += o.w;
        self.w2 += o.w2;
        self.ab += o.ab;
        self.hyper += o.hyper;
        self.events += o.events;
    }

    /// Plain rate of side `s` over every tick (`Σy/Σn`), `None` without a denominator.
    pub(crate) fn rate(&self, s: usize) -> Option<f64> {
        (self.n[s] > 0.0).then(|| self.y[s] / self.n[s])
    }

    /// Standardized rates `(R_b, R_c)`, `None` before a tick with both sides.
    fn standardized(&self) -> Option<(f64, f64)> {
        (self.w > 0.0).then(|| (self.a[0] / self.w, self.a[1] / self.w))
    }

    /// `Σ_k (α a_b + β a_c + γ w)²` from the running sums, clamped at 0 against rounding.
    fn quad(&self, alpha: f64, beta: f64, gamma: f64) -> f64 {
        let q = alpha * alpha * self.aa[0]
            + beta * beta * self.aa[1]
            + gamma * gamma * self.w2
            + 2.0 * alpha * beta * self.ab
            + 2.0 * alpha * gamma * self.wa[0]
            + 2.0 * beta * gamma * self.wa[1];
        q.max(0.0)
    }

    /// Small-sample factor `K/(K−1)` of the cluster sandwich over `K` ticks.
    fn cluster_factor(&self) -> f64 {
        if self.ticks > 1.0 { self.ticks / (self.ticks - 1.0) } else { 1.0 }
    }

    /// Per-unit variance of side `s` for the floor: binomial for shares, Poisson for events,
    /// from the smoothed pooled rate `(y+1)/(n+2)`, so a side with no events still has some;
    /// for amounts a coefficient of variation of 1 per unit (tokens and cost per LLM request
    /// vary at least that much), which keeps a handful of early ticks from looking precise.
    fn unit_variance(&self, s: usize, kind: Kind) -> f64 {
        match kind {
            Kind::Share => {
                let p = ((self.y[s] + 1.0) / (self.n[s] + 2.0)).min(1.0);
                p * (1.0 - p)
            }
            Kind::Events => (self.y[s] + 1.0) / (self.n[s] + 2.0),
            Kind::Amount => self.rate(s).map_or(0.0, |r| r * r),
        }
    }

    /// `R_c − R_b` with the larger of the sandwich and the floor.
    pub(crate) fn difference(&self, kind: Kind) -> Option<Estimate> {
        let (rb, rc) = self.standardized()?;
        let delta = rc - rb;
        let w2 = self.w * self.w;
        let sandwich = self.cluster_factor() * self.quad(-1.0, 1.0, -delta) / w2;
        let floor = (self.unit_variance(0, kind) * self.w2_n[0] + self.unit_variance(1, kind) * self.w2_n[1]) / w2;
        let scale = rb.abs().max(rc.abs()).max(f64::MIN_POSITIVE);
        Some(Estimate { delta, variance: sandwich.max(floor).max(VARIANCE_FLOOR * scale * scale) })
    }

    /// `ln(R_c/R_b)` by the delta method. Shares and events add half an event to each side
    /// (so zero events stay finite and a side with none is no proof); an amount with nothing
    /// on a side has no ratio (`None`).
    pub(crate) fn log_ratio(&self, kind: Kind) -> Option<Estimate> {
        let (rb, rc) = self.standardized()?;
        let smooth = |s: usize, r: f64| match kind {
            Kind::Amount => r,
            _ => r + 0.5 / self.n[s].max(1.0),
        };
        let (tb, tc) = (smooth(0, rb), smooth(1, rc));
        if !(tb > 0.0 && tc > 0.0) {
            return None;
        }
        let delta = (tc / tb).ln();
        let w2 = self.w * self.w;
        // Per tick: (a_c − R_c w)/R̃_c − (a_b − R_b w)/R̃_b.
        let sandwich = self.cluster_factor() * self.quad(-1.0 / tb, 1.0 / tc, rb / tb - rc / tc) / w2;
        let floor = (self.unit_variance(0, kind) * self.w2_n[0] / (tb * tb)
            + self.unit_variance(1, kind) * self.w2_n[1] / (tc * tc))
            / w2;
        Some(Estimate { delta, variance: sandwich.max(floor).max(VARIANCE_FLOOR) })
    }

    /// "No difference" as a test sees it: the difference `R_c − R_b` with its variance *under
    /// that hypothesis*, the larger of the conditional variance given each tick's totals (the
    /// Cochran-Mantel-Haenszel one, both sides at the tick's pooled rate; amounts have none),
    /// the sandwich, and the per-request floor at both sides' pooled, smoothed rate. For a
    /// relative margin, `(R_c − R_b)/R̄` with `R̄` the mean of the two (smoothed as in
    /// `log_ratio`): the linear term of `ln(R_c/R_b)` at the null, the same test on the scale
    /// the mixture was tuned for.
    ///
    /// A test of `δ = 0` wants the spread where `δ = 0`. The variance at the estimate takes
    /// each side at its own rate: with an uneven split the candidate's term dominates and, on
    /// the log scale (`≈ 1/y_c`), shrinks exactly when its count is high by chance. The
    /// conditional variance also puts a shared burst's spread in the ticks where it happened,
    /// with their weight, before the sandwich has seen enough of them.
    pub(crate) fn no_difference(&self, kind: Kind, relative: bool) -> Option<Estimate> {
        let (rb, rc) = self.standardized()?;
        let delta = rc - rb;
        let w2 = self.w * self.w;
        let conditional = match kind {
            Kind::Share => self.hyper,
            Kind::Events => self.events,
            Kind::Amount => 0.0,
        } / w2;
        let sandwich = self.cluster_factor() * self.quad(-1.0, 1.0, -delta) / w2;
        let pooled = Paired { n: [self.n[0] + self.n[1]; 2], y: [self.y[0] + self.y[1]; 2], ..Paired::default() };
        let floor = pooled.unit_variance(0, kind) * (self.w2_n[0] + self.w2_n[1]) / w2;
        let variance = conditional.max(sandwich).max(floor);
        if !relative {
            let scale = rb.abs().max(rc.abs()).max(f64::MIN_POSITIVE);
            return Some(Estimate { delta, variance: variance.max(VARIANCE_FLOOR * scale * scale) });
        }
        let smooth = |s: usize, r: f64| match kind {
            Kind::Amount => r,
            _ => r + 0.5 / self.n[s].max(1.0),
        };
        let mean = 0.5 * (smooth(0, rb) + smooth(1, rc));
        (mean > 0.0).then(|| Estimate { delta: delta / mean, variance: (variance / (mean * mean)).max(VARIANCE_FLOOR) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn stratification_undoes_simpsons_paradox() {
        // Two phases. An upstream incident fails 10 % of requests on *both* variants in phase 1;
        // phase 2 fails 1 % on both. The split moves from 50/50 during the incident to 10 %
        // canary after it, so the canary's requests come mostly from the bad phase.
        let mut p = Paired::default();
        for _ in 0..60 {
            p.fold(1000.0, 100.0, 1000.0, 100.0); // incident: 50/50 split, 10 % each
        }
        for _ in 0..60 {
            p.fold(1800.0, 18.0, 200.0, 2.0); // after: 90/10 split, 1 % each
        }
        // Unstratified: canary 6120/72000 = 8.5 %, baseline 7080/168000 = 4.2 %: "regression".
        let (b, c) = (p.rate(0).unwrap(), p.rate(1).unwrap());
        assert!(c - b > 0.04, "plain shares {b} vs {c}");
        // Stratified by tick: no difference at all.
        let d = p.difference(Kind::Share).unwrap();
        assert!(close(d.delta, 0.0, 1e-12), "{d:?}");
        let r = p.log_ratio(Kind::Share).unwrap();
        assert!(r.delta.abs() < 1e-3, "{r:?}");
    }

    #[test]
    fn stratified_difference_of_equal_ticks_is_the_plain_one() {
        let mut p = Paired::default();
        p.fold(100.0, 2.0, 100.0, 5.0);
        p.fold(100.0, 4.0, 100.0, 3.0);
        let d = p.difference(Kind::Share).unwrap();
        assert!(close(d.delta, 0.01, 1e-12));
        // Floor: w = 50 per tick, Σw²/n = 2·25 per side, W = 100; p̃_b = 7/202, p̃_c = 9/202.
        let pb: f64 = 7.0 / 202.0;
        let pc: f64 = 9.0 / 202.0;
        let floor = (pb * (1.0 - pb) * 50.0 + pc * (1.0 - pc) * 50.0) / 1e4;
        // Sandwich: d_k = 0.03, −0.01 around 0.01, each w = 50: 2·(50·0.02)²/100² · 2/1.
        let sandwich = 2.0 * 2.0 * (50.0_f64 * 0.02).powi(2) / 1e4;
        assert!(close(d.variance, floor.max(sandwich), 1e-15), "{} vs {floor} {sandwich}", d.variance);
    }

    #[test]
    fn zeros_give_defined_conservative_answers() {
        let mut p = Paired::default();
        for _ in 0..100 {
            p.fold(10.0, 0.0, 10.0, 0.0);
        }
        // No events either side: no difference, finite and positive variance, never NaN.
        for e in [p.difference(Kind::Events).unwrap(), p.log_ratio(Kind::Events).unwrap()] {
            assert_eq!(e.delta, 0.0);
            assert!(e.variance.is_finite() && e.variance > 0.0, "{e:?}");
        }
        // The ratio of nothing to nothing is wide: half an event a side is no proof of anything.
        assert!(p.log_ratio(Kind::Events).unwrap().variance > 1.0);
        // An amount nobody recorded has no ratio at all.
        assert_eq!(p.log_ratio(Kind::Amount), None);
        // An amount only the candidate recorded: still no ratio (nothing to divide by).
        let mut q = Paired::default();
        q.fold(10.0, 0.0, 10.0, 5.0);
        assert_eq!(q.log_ratio(Kind::Amount), None);
        assert!(q.difference(Kind::Amount).unwrap().delta > 0.0);
        // No tick with both sides: no estimate.
        let mut r = Paired::default();
        r.fold(0.0, 0.0, 10.0, 1.0);
        assert_eq!(r.difference(Kind::Share), None);
        assert_eq!(r.rate(1), Some(0.1));
    }

    #[test]
    fn bursts_widen_the_variance_beyond_the_binomial() {
        // Same totals, but every error of one side lands in one tick.
        let mut calm = Paired::default();
        let mut bursty = Paired::default();
        for k in 0..100 {
            calm.fold(50.0, 1.0, 50.0, 1.0);
            bursty.fold(50.0, 1.0, 50.0, if k == 0 { 50.0 } else { 0.5 });
        }
        let v_calm = calm.difference(Kind::Share).unwrap().variance;
        let v_bursty = bursty.difference(Kind::Share).unwrap().variance;
        assert!(v_bursty > 2.0 * v_calm, "{v_bursty} vs {v_calm}");
    }

    #[test]
    fn the_test_of_no_difference_takes_both_sides_at_their_pooled_rate() {
        // A 10 % canary at 8 % against a baseline at 5 %, in identical ticks (no spread).
        let mut p = Paired::default();
        for _ in 0..20 {
            p.fold(450.0, 22.5, 50.0, 4.0);
        }
        let null = p.no_difference(Kind::Share, false).unwrap();
        assert!(close(null.delta, 0.03, 1e-12));
        // Each tick at its pooled rate 26.5/500, hypergeometric: Σ w·p(1−p)·N/(N−1) / (Σ w)².
        let (p_k, w, total): (f64, f64, f64) = (26.5 / 500.0, 450.0 * 50.0 / 500.0, 500.0);
        let cmh = 20.0 * w * p_k * (1.0 - p_k) * total / (total - 1.0) / (20.0 * w).powi(2);
        assert!(close(null.variance, cmh, 1e-15), "{null:?} vs {cmh}");
        // The relative form is the same test on another scale: d/R̄ with variance v/R̄².
        let relative = p.no_difference(Kind::Share, true).unwrap();
        let z = |e: Estimate| e.delta / e.variance.sqrt();
        assert!(close(z(relative), z(null), 1e-9), "{} vs {}", z(relative), z(null));
    }

    #[test]
    fn a_shared_burst_in_heavy_ticks_raises_the_null_variance() {
        // Both sides fail 30 % for 10 ticks of a 50/50 split, 2 % for 90 ticks of a 5 % canary.
        // The burst's in-tick variance (CMH) weighs what those ticks weigh (w = 10 against 1.9),
        // which the binomial at the interval's pooled rate, spread evenly, does not.
        let mut p = Paired::default();
        for k in 0..100 {
            if k < 10 { p.fold(20.0, 6.0, 20.0, 6.0) } else { p.fold(38.0, 0.76, 2.0, 0.04) }
        }
        let null = p.no_difference(Kind::Share, false).unwrap().variance;
        let pooled: f64 = 193.0 / 4002.0;
        let binomial = pooled * (1.0 - pooled) / 271.0; // Σ w = 10·10 + 90·1.9
        assert!(null > 1.8 * binomial, "{null} vs {binomial}");
    }

    #[test]
    fn merging_equals_folding_everything() {
        let ticks = [(10.0, 1.0, 12.0, 0.0), (7.0, 0.0, 3.0, 1.0), (0.0, 0.0, 4.0, 2.0), (9.0, 3.0, 9.0, 2.0)];
        let mut all = Paired::default();
        let (mut a, mut b) = (Paired::default(), Paired::default());
        for (i, &(nb, yb, nc, yc)) in ticks.iter().enumerate() {
            all.fold(nb, yb, nc, yc);
            if i < 2 { a.fold(nb, yb, nc, yc) } else { b.fold(nb, yb, nc, yc) }
        }
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn candidate_share_for_ceilings() {
        let mut p = OwnShare::default();
        for _ in 0..10 {
            p.fold(100.0, 100.0, 6.0);
        }
        let e = p.estimate().unwrap();
        assert!(close(e.delta, 0.06, 1e-12));
        // Constant ticks: no spread, the binomial floor Σ N²/n_c / (Σ N)² = 1/Σ n_c.
        let pt: f64 = 61.0 / 1002.0;
        assert!(close(e.variance, pt * (1.0 - pt) / 1000.0, 1e-15));
    }
}
