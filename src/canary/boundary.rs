//! Robbins' normal-mixture boundary: the confidence sequence and always-valid p-value every
//! metric's decision rests on (ARCHITECTURE.md, "Canary analysis").
//!
//! For an estimate `d` of a difference `δ` with variance `v`, write the information `I = 1/v`
//! and `S = I·(d − δ)`. Under the normal approximation `S` is a Brownian motion in `I`, so
//! `exp(λS − λ²I/2)` is a martingale for every `λ`; mixing `λ ~ N(0, 1/ρ)` gives
//! `M = sqrt(ρ/(I+ρ))·exp(S²/(2(I+ρ)))`, still a martingale with `M₀ = 1`. Ville's inequality
//! bounds `P(sup M ≥ 1/a) ≤ a` over *all* times at once, and `M ≥ 1/a` is
//! `|S| ≥ sqrt((I+ρ)·ln((I+ρ)/(ρa²)))`. So `d ± sqrt((I+ρ)·ln((I+ρ)/(ρa²)))/I` covers `δ` at
//! every look with probability `1 − a`, and `p = min(1, 1/M)` at `δ = 0` is an always-valid
//! p-value: a person refreshing every 5 s gets no extra chance of a false alarm.
//!
//! `ρ` only moves where the boundary is tightest; it must be fixed before the data.
//! [`Mixture::tuned`] picks it from the metric's allowed degradation.

/// One metric's mixture: the prior precision `ρ` of the mixing distribution, fixed by the
/// configuration (never by the data, or the martingale argument fails).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mixture {
    rho: f64,
}

impl Mixture {
    /// The mixture whose boundary at `level` is tightest exactly where its half-width equals
    /// `margin`: the information at which a metric sitting at the baseline can first be passed.
    ///
    /// At fixed `I` the half-width is smallest for `x = I/ρ` solving `ln((1+x)/a²) = x`; its
    /// half-width there is `sqrt((1+x)/I)`, which equals `margin` at `I* = (1+x)/margin²`.
    pub fn tuned(margin: f64, level: f64) -> Self {
        let margin = if margin.is_finite() && margin > 0.0 { margin } else { 1.0 };
        let x = optimal_ratio(level);
        let info = (1.0 + x) / (margin * margin);
        Self { rho: info / x }
    }

    /// A mixture with a given `ρ` (tests and hand-computed checks).
    pub fn with_rho(rho: f64) -> Self {
        Self { rho }
    }

    /// The prior precision `ρ`.
    pub fn rho(self) -> f64 {
        self.rho
    }

    /// Half-width of the level-`level` confidence sequence at information `info`
    /// (infinite without information).
    pub fn half_width(self, info: f64, level: f64) -> f64 {
        if !info.is_finite() || info <= 0.0 {
            return f64::INFINITY;
        }
        let s = info + self.rho;
        (s * (s / (self.rho * level * level)).ln()).sqrt() / info
    }

    /// Always-valid p-value of `δ = δ0` given the distance `d − δ0` and the information:
    /// `min(1, 1/M)`.
    pub fn p_value(self, distance: f64, info: f64) -> f64 {
        if !info.is_finite() || info <= 0.0 || !distance.is_finite() {
            return 1.0;
        }
        let s = info + self.rho;
        let z = info * distance;
        let log_m = 0.5 * (self.rho / s).ln() + z * z / (2.0 * s);
        (-log_m).exp().min(1.0)
    }

    /// The information at which the half-width falls to `target` (bisection on a log scale;
    /// the half-width decreases with information once past a tiny start). `None` when even
    /// `1e30` is not enough.
    pub fn info_for_half_width(self, target: f64, level: f64) -> Option<f64> {
        if target.is_nan() || target <= 0.0 {
            return None;
        }
        let (mut lo, mut hi) = (1e-12_f64.ln(), 1e30_f64.ln());
        if self.half_width(hi.exp(), level) > target {
            return None;
        }
        for _ in 0..80 {
            let mid = 0.5 * (lo + hi);
            if self.half_width(mid.exp(), level) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(hi.exp())
    }
}

/// The `x = I/ρ` that minimises the level-`a` half-width at a given information: the root of
/// `x = ln(1+x) − 2 ln a`, by fixed-point iteration (a contraction: its slope is `1/(1+x)`).
fn optimal_ratio(level: f64) -> f64 {
    let level = level.clamp(1e-300, 0.5);
    let l = -2.0 * level.ln();
    let mut x = l;
    for _ in 0..100 {
        x = l + x.ln_1p();
    }
    x
}

/// Holm's step-down procedure: which of `p_values` are rejected at family level `alpha`.
///
/// With always-valid p-values this stays valid at every look together: a false rejection at any
/// time means some true null's p-value once fell below `alpha / (number of true nulls)`, and
/// Ville bounds the chance of that by `alpha` summed over the true nulls.
pub fn holm(p_values: &[f64], alpha: f64, rejected: &mut [bool]) {
    let m = p_values.len();
    let mut order: [usize; MAX_HYPOTHESES] = [0; MAX_HYPOTHESES];
    let order = &mut order[..m.min(MAX_HYPOTHESES)];
    for (i, o) in order.iter_mut().enumerate() {
        *o = i;
    }
    order.sort_unstable_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    for r in rejected.iter_mut() {
        *r = false;
    }
    for (rank, &i) in order.iter().enumerate() {
        if p_values[i] > alpha / (m - rank) as f64 {
            break;
        }
        rejected[i] = true;
    }
}

/// Most hypotheses one judgement tests (every metric of the catalog plus its ceiling).
pub const MAX_HYPOTHESES: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_matches_hand_computed_values() {
        // I = 100, ρ = 1, a = 0.05: sqrt(101 · ln(101 / 0.0025)) / 100 = 0.327302.
        let m = Mixture::with_rho(1.0);
        assert!((m.half_width(100.0, 0.05) - 0.327_301_86).abs() < 1e-7);
        // S = I·d = 40: sqrt(101) · exp(−1600 / 202) = 0.0036493.
        assert!((m.p_value(0.4, 100.0) - 0.003_649_26).abs() < 1e-8);
        // Nothing seen: nothing known.
        assert_eq!(m.half_width(0.0, 0.05), f64::INFINITY);
        assert_eq!(m.p_value(0.4, 0.0), 1.0);
    }

    #[test]
    fn p_value_and_sequence_agree() {
        // The sequence excludes 0 exactly when the p-value is below its level.
        let m = Mixture::with_rho(3.0);
        for &(d, info) in &[(0.1_f64, 500.0), (0.5, 80.0), (0.02, 1e4), (1.0, 3.0)] {
            let excluded = d.abs() > m.half_width(info, 0.01);
            assert_eq!(excluded, m.p_value(d, info) < 0.01, "d={d} I={info}");
        }
    }

    #[test]
    fn tuning_makes_the_half_width_equal_the_margin_at_its_optimum() {
        let level = 0.005;
        let x = optimal_ratio(level);
        assert!(((1.0 + x) / (level * level)).ln() - x < 1e-9);
        let m = Mixture::tuned(0.01, level);
        let info = (1.0 + x) / 1e-4;
        assert!((m.half_width(info, level) - 0.01).abs() < 1e-9);
        // And it is the tightest mixture there.
        for f in [0.5, 0.8, 1.25, 2.0] {
            assert!(Mixture::with_rho(m.rho() * f).half_width(info, level) > 0.01);
        }
    }

    #[test]
    fn information_for_a_half_width_inverts_it() {
        let m = Mixture::tuned(0.3, 0.01);
        let info = m.info_for_half_width(0.05, 0.01).unwrap();
        assert!((m.half_width(info, 0.01) - 0.05).abs() < 1e-6);
        assert_eq!(m.info_for_half_width(0.0, 0.01), None);
    }

    #[test]
    fn holm_steps_down_and_stops() {
        let mut r = [false; 4];
        // Sorted 0.001 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2: stop.
        holm(&[0.03, 0.001, 0.01, 0.04], 0.05, &mut r);
        assert_eq!(r, [false, true, true, false]);
        holm(&[0.001, 0.002, 0.02, 0.04], 0.05, &mut r);
        assert_eq!(r, [true, true, true, true]);
        holm(&[0.02, 0.5, 0.5, 0.5], 0.05, &mut r);
        assert_eq!(r, [false; 4]);
    }
}
