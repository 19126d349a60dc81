//! Robbins' normal-mixture boundaries: the confidence sequences and always-valid p-values every
//! metric's decision rests on (ARCHITECTURE.md, "Canary analysis").
//!
//! For an estimate `d` of a difference `δ` with variance `v`, write the information `I = 1/v`
//! and `S = I·(d − δ)`. Under the normal approximation `S` is a Brownian motion in `I`, so
//! `exp(λS − λ²I/2)` is a martingale for every `λ`, and so is any mixture of them over `λ`:
//!
//! - **two-sided**, `λ ~ N(0, 1/ρ)`: `M = sqrt(ρ/(I+ρ))·exp(S²/(2(I+ρ)))`;
//! - **one-sided**, `λ` half-normal on `λ ≥ 0` (density `2·sqrt(ρ/2π)·exp(−ρλ²/2)`): completing
//!   the square, `M⁺ = 2·sqrt(ρ/(I+ρ))·exp(S²/(2(I+ρ)))·Φ(S/sqrt(I+ρ))`. It bets only on
//!   `δ` being below the estimate, so it answers "is `δ` above `δ0`?" and nothing else.
//!
//! Both start at `M₀ = 1`. Ville's inequality bounds `P(sup M ≥ 1/a) ≤ a` over *all* times at
//! once. With `z = S/sqrt(I+ρ)`, `M ≥ 1/a` is `z²/2 ≥ ln(1/a) + ½ln((I+ρ)/ρ)` (two-sided) or
//! `z²/2 + ln Φ(z) ≥ ln(1/(2a)) + ½ln((I+ρ)/ρ)` (one-sided: about `ln(1/(2a)²)` in place of
//! `ln(1/a²)`), so `d ± z_a·sqrt(I+ρ)/I` covers `δ` at every look: both ends with probability
//! `1 − a` (two-sided), or each end with probability `1 − a` (one-sided; the upper end from the
//! mirror mixture on `λ ≤ 0`). `p = min(1, 1/M)` at `δ = δ0` is an always-valid p-value: a
//! person refreshing every 5 s gets no extra chance of a false alarm.
//!
//! `ρ` only moves where the boundary is tightest; it must be fixed before the data.
//! [`Mixture::tuned`] picks it from a width the configuration gives.

use std::f64::consts::LN_2;

use super::normal::{ln_cdf, ln_cdf_and_hazard, pdf};

/// Which alternatives a mixture bets on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sides {
    /// `δ > δ0` only (the mirror, `δ < δ0`, by negating the distance): one-sided questions,
    /// such as "is the candidate's error share higher?".
    One,
    /// Either way: "is output length different?".
    Two,
}

/// One metric's mixture: the prior precision `ρ` of the mixing distribution and its sides, fixed
/// by the configuration (never by the data, or the martingale argument fails).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mixture {
    rho: f64,
    sides: Sides,
}

impl Mixture {
    /// The mixture whose boundary at `level` is tightest exactly where its half-width equals
    /// `width`.
    ///
    /// The half-width is `h(x)/sqrt(I)` with `x = I/ρ` and `h` depending on `x` and the level
    /// only, so the tightest boundary at any information has the same `x*` (`h`'s minimum), and
    /// its half-width is `width` at `I* = (h(x*)/width)²`: then `ρ = I*/x*`.
    pub(crate) fn tuned(width: f64, level: f64, sides: Sides) -> Self {
        let width = if width.is_finite() && width > 0.0 { width } else { 1.0 };
        let (x, h) = tightest(level, sides);
        let info = (h / width).powi(2);
        Self { rho: info / x, sides }
    }

    /// A mixture with a given `ρ` (tests and hand-computed checks).
    #[cfg(test)]
    pub(crate) fn with_rho(rho: f64, sides: Sides) -> Self {
        Self { rho, sides }
    }

    /// The prior precision `ρ`.
    #[cfg(test)]
    pub(crate) fn rho(self) -> f64 {
        self.rho
    }

    /// Half-width of the level-`level` confidence sequence at information `info` (infinite
    /// without information). One-sided: the distance from the estimate to each end, each end
    /// holding with probability `1 − level`.
    pub(crate) fn half_width(self, info: f64, level: f64) -> f64 {
        if !info.is_finite() || info <= 0.0 {
            return f64::INFINITY;
        }
        let s = info + self.rho;
        threshold(self.sides, level, s / self.rho) * s.sqrt() / info
    }

    /// Always-valid p-value of `δ = δ0` given the distance `d − δ0` and the information:
    /// `min(1, 1/M)`. One-sided, it is evidence that `δ > δ0` only (a negative distance gives
    /// at most `sqrt(ρ/(I+ρ))` for `M`, so `p = 1`); pass `δ0 − d` for "below".
    pub(crate) fn p_value(self, distance: f64, info: f64) -> f64 {
        if !info.is_finite() || info <= 0.0 || !distance.is_finite() {
            return 1.0;
        }
        let s = info + self.rho;
        let z = info * distance / s.sqrt();
        let two_sided = 0.5 * (self.rho / s).ln() + 0.5 * z * z;
        let log_m = match self.sides {
            Sides::Two => two_sided,
            Sides::One => LN_2 + two_sided + ln_cdf(z),
        };
        (-log_m).exp().min(1.0)
    }

    /// The information at which the half-width falls to `target` (bisection on a log scale;
    /// the half-width decreases with information once past a tiny start). `None` when even
    /// `1e30` is not enough.
    pub(crate) fn info_for_half_width(self, target: f64, level: f64) -> Option<f64> {
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

/// The `z = S/sqrt(I+ρ)` at which the mixture reaches `1/level`, given `r = (I+ρ)/ρ`.
fn threshold(sides: Sides, level: f64, r: f64) -> f64 {
    let level = level.clamp(1e-300, 0.5);
    let l = -level.ln() + 0.5 * r.ln();
    match sides {
        Sides::Two => (2.0 * l).sqrt(),
        Sides::One => one_sided_root(l - LN_2),
    }
}

/// The root of `g(z) = z²/2 + ln Φ(z) = l` (`l ≥ 0` here, so the root is positive).
///
/// `g` increases (`g' = z + φ/Φ > 0`) and is convex (`g''` is the variance of a normal
/// truncated at `z`), so Newton's method converges from anywhere: from the left its first step
/// lands right of the root, and from there it descends monotonically. Convergence is
/// quadratic: after a step `s` the error is about `s²·g''/(2g') ≤ s²/(2z)`, so stopping once a
/// step is below `1e-4·z` leaves a relative error below `1e-8`. The start is the root without
/// the `ln Φ` term, `sqrt(2l)`, corrected in the tail by `−ln Φ(z) ≈ φ(z)/z` (Mills' ratio),
/// which is within about `1e-5` of the root for the levels used here: one step does.
fn one_sided_root(l: f64) -> f64 {
    if l <= -LN_2 {
        return 0.0;
    }
    let bare = (2.0 * l.max(0.0)).sqrt();
    let mut z = if bare > 2.0 { (2.0 * (l + pdf(bare) / bare)).sqrt() } else { bare };
    for _ in 0..60 {
        let (ln_phi, hazard) = ln_cdf_and_hazard(z);
        let step = (0.5 * z * z + ln_phi - l) / (z + hazard);
        z -= step;
        if step.abs() <= 1e-4 * z.max(1.0) {
            break;
        }
    }
    z
}

/// The `x = I/ρ` minimising the half-width at any fixed information, with `h(x)`, the
/// half-width times `sqrt(I)` there: golden-section search on `ln x` (`h` is unimodal: large
/// `ρ` makes the prior too narrow, small `ρ` pays `½ln((I+ρ)/ρ)`).
fn tightest(level: f64, sides: Sides) -> (f64, f64) {
    let h = |u: f64| {
        let x = u.exp();
        threshold(sides, level, 1.0 + x) * ((1.0 + x) / x).sqrt()
    };
    let g = 0.5 * (5.0_f64.sqrt() - 1.0);
    let (mut a, mut b) = (1e-3_f64.ln(), 1e6_f64.ln());
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut hc, mut hd) = (h(c), h(d));
    for _ in 0..100 {
        if hc < hd {
            (b, d, hd) = (d, c, hc);
            c = b - g * (b - a);
            hc = h(c);
        } else {
            (a, c, hc) = (c, d, hd);
            d = a + g * (b - a);
            hd = h(d);
        }
    }
    let u = 0.5 * (a + b);
    (u.exp(), h(u))
}
/// Holm's weighted step-down procedure: which of `p_values` are rejected at family level
/// `alpha`, hypothesis `i` carrying weight `weights[i] > 0` (all 1: the plain procedure).
///
/// At each step the remaining hypothesis with the smallest `p/w` is rejected if
/// `p ≤ alpha·w / (weights still remaining)`, else the procedure stops (Holm 1979). With
/// always-valid p-values this stays valid at every look together: a false rejection at any
/// time means some true null's p-value once fell below `alpha·w / (weight of the true nulls)`,
/// and Ville bounds the chance of that by `alpha` summed over the true nulls.
pub(crate) fn holm(p_values: &[f64], weights: &[f64], alpha: f64, rejected: &mut [bool]) {
    let m = p_values.len().min(MAX_HYPOTHESES);
    let mut order: [usize; MAX_HYPOTHESES] = [0; MAX_HYPOTHESES];
    let order = &mut order[..m];
    for (i, o) in order.iter_mut().enumerate() {
        *o = i;
    }
    order.sort_unstable_by(|&a, &b| (p_values[a] / weights[a]).total_cmp(&(p_values[b] / weights[b])));
    for r in rejected.iter_mut() {
        *r = false;
    }
    let mut remaining: f64 = weights[..m].iter().sum();
    for &i in order.iter() {
        if p_values[i] > alpha * weights[i] / remaining {
            break;
        }
        rejected[i] = true;
        remaining -= weights[i];
    }
}

/// Most hypotheses one judgement tests (every metric of the catalog plus its ceiling).
pub(crate) const MAX_HYPOTHESES: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sided_boundary_matches_hand_computed_values() {
        // I = 100, ρ = 1, a = 0.05: sqrt(101 · ln(101 / 0.0025)) / 100 = 0.327302.
        let m = Mixture::with_rho(1.0, Sides::Two);
        assert!((m.half_width(100.0, 0.05) - 0.327_301_86).abs() < 1e-7);
        // S = I·d = 40: sqrt(101) · exp(−1600 / 202) = 0.0036493.
        assert!((m.p_value(0.4, 100.0) - 0.003_649_26).abs() < 1e-8);
        // Nothing seen: nothing known.
        assert_eq!(m.half_width(0.0, 0.05), f64::INFINITY);
        assert_eq!(m.p_value(0.4, 0.0), 1.0);
    }

    /// `∫₀^∞ exp(λS − λ²I/2)·2·sqrt(ρ/2π)·exp(−ρλ²/2) dλ` by Simpson's rule.
    fn half_normal_mixture_by_quadrature(s: f64, info: f64, rho: f64) -> f64 {
        let density = |l: f64| 2.0 * (rho / std::f64::consts::TAU).sqrt() * (-0.5 * rho * l * l).exp();
        let f = |l: f64| (l * s - 0.5 * l * l * info).exp() * density(l);
        let (end, n) = (s.max(0.0) / (info + rho) + 12.0 / (info + rho).sqrt(), 20_000);
        let h = end / n as f64;
        let inner: f64 = (1..n).map(|i| if i % 2 == 1 { 4.0 } else { 2.0 } * f(i as f64 * h)).sum();
        h / 3.0 * (f(0.0) + inner + f(end))
    }

    #[test]
    fn one_sided_mixture_is_the_half_normal_integral() {
        // The closed form 2·sqrt(ρ/(I+ρ))·exp(S²/(2(I+ρ)))·Φ(S/sqrt(I+ρ)) against quadrature,
        // for evidence for, against and at zero.
        for &(s, info, rho) in &[(40.0_f64, 100.0, 1.0), (-5.0, 30.0, 2.0), (0.0, 10.0, 10.0), (3.0, 0.5, 4.0)] {
            let m = Mixture::with_rho(rho, Sides::One);
            let closed = 1.0 / m.p_value(s / info, info).max(f64::MIN_POSITIVE);
            let numeric = half_normal_mixture_by_quadrature(s, info, rho);
            if numeric >= 1.0 {
                assert!((closed / numeric - 1.0).abs() < 1e-9, "S={s} I={info} ρ={rho}: {closed} vs {numeric}");
            } else {
                // Below 1 the p-value is capped at 1: nothing to compare but the cap.
                assert_eq!(m.p_value(s / info, info), 1.0);
            }
        }
    }

    #[test]
    fn one_sided_bets_only_on_its_side_and_halves_the_p_value() {
        let (one, two) = (Mixture::with_rho(3.0, Sides::One), Mixture::with_rho(3.0, Sides::Two));
        // Far in the tail Φ ≈ 1: M⁺ ≈ 2M, the p-value half the two-sided one.
        let (p1, p2) = (one.p_value(0.5, 200.0), two.p_value(0.5, 200.0));
        assert!((p1 / p2 - 0.5).abs() < 1e-6, "{p1} vs {p2}");
        // No evidence the other way.
        assert_eq!(one.p_value(-0.5, 200.0), 1.0);
        assert!(two.p_value(-0.5, 200.0) < 1e-6);
        // And so a narrower boundary at the same level.
        assert!(one.half_width(200.0, 0.005) < 0.97 * two.half_width(200.0, 0.005));
    }

    #[test]
    fn the_one_sided_root_is_accurate_near_zero_and_in_the_tail() {
        let g = |z: f64| 0.5 * z * z + ln_cdf(z);
        for l in [-0.5, 0.0, 0.1, 1.0, 3.0, 5.3, 8.0, 30.0, 400.0] {
            let z = one_sided_root(l);
            // g' ≥ z, so an error in g of e is an error in z of at most e/z.
            assert!((g(z) - l).abs() <= 1e-8 * l.abs().max(1.0) * z.max(1.0), "l={l}: g({z}) = {}", g(z));
        }
    }

    #[test]
    fn p_value_and_sequence_agree() {
        // The sequence excludes 0 exactly when the p-value is below its level, for both sides.
        for sides in [Sides::One, Sides::Two] {
            let m = Mixture::with_rho(3.0, sides);
            for &(d, info) in &[(0.1_f64, 500.0), (0.5, 80.0), (0.02, 1e4), (1.0, 3.0), (0.3, 0.2)] {
                let hw = m.half_width(info, 0.01);
                let excluded = d > hw;
                assert_eq!(excluded, m.p_value(d, info) < 0.01, "{sides:?} d={d} I={info}");
                assert!((m.p_value(hw, info) - 0.01).abs() < 1e-9, "{sides:?} I={info}");
            }
        }
    }

    #[test]
    fn tuning_makes_the_half_width_equal_the_width_at_its_optimum() {
        let level = 0.005;
        for sides in [Sides::One, Sides::Two] {
            let m = Mixture::tuned(0.01, level, sides);
            let info = m.info_for_half_width(0.01, level).unwrap();
            // It is the tightest mixture there.
            for f in [0.5, 0.8, 1.25, 2.0] {
                assert!(Mixture::with_rho(m.rho() * f, sides).half_width(info, level) > 0.01, "{sides:?} {f}");
            }
        }
        // Two-sided, the optimum has a closed condition: ln((1+x)/a²) = x, h² = 1 + x.
        let (x, h) = tightest(level, Sides::Two);
        // (A flat minimum: the search finds x to about the square root of h's precision.)
        assert!((((1.0 + x) / (level * level)).ln() - x).abs() < 1e-4 * x, "{x}");
        assert!((h * h - (1.0 + x)).abs() < 1e-4 * x, "{h} {x}");
        // One-sided pays roughly ln(1/(2a)²) for ln(1/a²): at a = 0.005, about a tenth less
        // information for the same half-width.
        let (_, h1) = tightest(level, Sides::One);
        assert!(h1 < 0.95 * h, "{h1} vs {h}");
    }

    #[test]
    fn information_for_a_half_width_inverts_it() {
        let m = Mixture::tuned(0.3, 0.01, Sides::One);
        let info = m.info_for_half_width(0.05, 0.01).unwrap();
        assert!((m.half_width(info, 0.01) - 0.05).abs() < 1e-6);
        assert_eq!(m.info_for_half_width(0.0, 0.01), None);
    }

    /// A Brownian motion in information, watched at 1,000 looks: the one-sided mixture's
    /// crossing rate stays below its level, and is not far below it once the watch is long
    /// compared with `ρ` (so a factor lost in the closed form would show).
    #[test]
    fn one_sided_crossings_stay_within_the_level() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (level, paths, looks, step) = (0.1, 4000, 1000, 1.0_f64);
        let m = Mixture::with_rho(0.5, Sides::One);
        let mut crossed = 0;
        for _ in 0..paths {
            let mut s = 0.0;
            for k in 1..=looks {
                // Box-Muller, one normal per look.
                let z = (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
                s += z * step.sqrt();
                let info = k as f64 * step;
                if m.p_value(s / info, info) <= level {
                    crossed += 1;
                    break;
                }
            }
        }
        let rate = crossed as f64 / paths as f64;
        let se = (level * (1.0 - level) / paths as f64).sqrt();
        assert!(rate <= level + 3.0 * se, "{rate}");
        assert!(rate >= 0.5 * level, "{rate}: the bound is looser than it should be");
    }

    #[test]
    fn holm_steps_down_and_stops() {
        let mut r = [false; 4];
        let ones = [1.0; 4];
        // Sorted 0.001 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2: stop.
        holm(&[0.03, 0.001, 0.01, 0.04], &ones, 0.05, &mut r);
        assert_eq!(r, [false, true, true, false]);
        holm(&[0.001, 0.002, 0.02, 0.04], &ones, 0.05, &mut r);
        assert_eq!(r, [true, true, true, true]);
        holm(&[0.02, 0.5, 0.5, 0.5], &ones, 0.05, &mut r);
        assert_eq!(r, [false; 4]);
    }

    #[test]
    fn weighted_holm_gives_heavier_hypotheses_more_of_alpha() {
        let mut r = [false; 3];
        // Weights 4, 1, 1 (total 6): 0.03 <= 0.05·4/6, then 0.03 > 0.05·1/2: stop.
        holm(&[0.03, 0.03, 0.5], &[4.0, 1.0, 1.0], 0.05, &mut r);
        assert_eq!(r, [true, false, false]);
        // Unweighted, 0.03 > 0.05/3 rejects nothing.
        holm(&[0.03, 0.03, 0.5], &[1.0; 3], 0.05, &mut r);
        assert_eq!(r, [false; 3]);
        // Light hypotheses still step down once the heavy one is rejected: 0.012 <= 0.05/2.
        holm(&[0.001, 0.012, 0.5], &[4.0, 1.0, 1.0], 0.05, &mut r);
        assert_eq!(r, [true, true, false]);
    }
}
