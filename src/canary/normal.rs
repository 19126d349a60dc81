//! The standard normal distribution function `Φ`, kept in logarithms so the one-sided mixture
//! (`boundary`) stays finite far into either tail.
//!
//! `erfc` follows W. J. Cody's rational Chebyshev approximations ("Rational Chebyshev
//! approximations for the error function", Math. Comp. 23, 1969), as in his `CALERF`: three
//! ranges, relative error near 1e-15 wherever the result is a normal `f64`. For `x > 0.5`
//! they have the form `erfc(x) = exp(−x²)·R(x)`, so `ln erfc(x) = ln R(x) − x²` needs no
//! exponential at all and never underflows: `ln Φ(−40)` is as accurate as `ln Φ(−1)`.

// Cody's coefficients as published (18 digits), not rounded to what an f64 keeps.
#![allow(clippy::excessive_precision)]

use std::f64::consts::{FRAC_1_SQRT_2, LN_2};

/// `erf(x) = x·P(x²)/Q(x²)` for `|x| ≤ 0.5`: numerator (highest degree first is `A[4]`).
const A: [f64; 5] = [
    3.161_123_743_870_565_6,
    1.138_641_541_510_501_6e2,
    3.774_852_376_853_020_2e2,
    3.209_377_589_138_469_5e3,
    1.857_777_061_846_031_5e-1,
];
const B: [f64; 4] =
    [2.360_129_095_234_412e1, 2.440_246_379_344_441_7e2, 1.282_616_526_077_372_3e3, 2.844_236_833_439_170_6e3];
/// `erfc(x) = exp(−x²)·P(x)/Q(x)` for `0.5 < x ≤ 4`.
const C: [f64; 9] = [
    5.641_884_969_886_701e-1,
    8.883_149_794_388_376,
    6.611_919_063_714_163e1,
    2.986_351_381_974_001_3e2,
    8.819_522_212_417_691e2,
    1.712_047_612_634_070_6e3,
    2.051_078_377_826_071_5e3,
    1.230_339_354_797_997_2e3,
    2.153_115_354_744_038_5e-8,
];
const D: [f64; 8] = [
    1.574_492_611_070_983_5e1,
    1.176_939_508_913_125e2,
    5.371_811_018_620_098_6e2,
    1.621_389_574_566_690_2e3,
    3.290_799_235_733_459_6e3,
    4.362_619_090_143_247e3,
    3.439_367_674_143_721_6e3,
    1.230_339_354_803_749_4e3,
];
/// `erfc(x) = exp(−x²)/x·(1/√π − z·P(z)/Q(z))`, `z = 1/x²`, for `x > 4`.
const P: [f64; 6] = [
    3.053_266_349_612_323_4e-1,
    3.603_448_999_498_044_4e-1,
    1.257_817_261_112_292_5e-1,
    1.608_378_514_874_227_7e-2,
    6.587_491_615_298_378e-4,
    1.631_538_713_730_209_8e-2,
];
const Q: [f64; 5] = [
    2.568_520_192_289_822,
    1.872_952_849_923_467_3,
    5.279_051_029_514_284e-1,
    6.051_834_131_244_132e-2,
    2.335_204_976_268_691_8e-3,
];
/// `1/√π`.
const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_3;

// The polynomials are written out (Horner's scheme, highest degree first, as in CALERF): the
// boundary evaluates them a few dozen times per judgement, and the test profile runs them
// millions of times unoptimized.

/// `erf(x)` for `|x| ≤ 0.5`.
fn erf_near_zero(x: f64) -> f64 {
    let y = x * x;
    let num = (((A[4] * y + A[0]) * y + A[1]) * y + A[2]) * y + A[3];
    let den = (((y + B[0]) * y + B[1]) * y + B[2]) * y + B[3];
    x * num / den
}

/// `erfc(x)·exp(x²)` for `x > 0.5`: the scaled complement, a ratio of polynomials.
fn scaled_erfc(x: f64) -> f64 {
    if x <= 4.0 {
        let num =
            (((((((C[8] * x + C[0]) * x + C[1]) * x + C[2]) * x + C[3]) * x + C[4]) * x + C[5]) * x + C[6]) * x + C[7];
        let den = (((((((x + D[0]) * x + D[1]) * x + D[2]) * x + D[3]) * x + D[4]) * x + D[5]) * x + D[6]) * x + D[7];
        num / den
    } else {
        let z = 1.0 / (x * x);
        let num = ((((P[5] * z + P[0]) * z + P[1]) * z + P[2]) * z + P[3]) * z + P[4];
        let den = ((((z + Q[0]) * z + Q[1]) * z + Q[2]) * z + Q[3]) * z + Q[4];
        (FRAC_1_SQRT_PI - z * num / den) / x
    }
}

/// `ln(erfc(x)·exp(x²))` for `x > 0.5`.
fn ln_scaled_erfc(x: f64) -> f64 {
    scaled_erfc(x).ln()
}

/// `ln erfc(x)`, finite for every finite `x`.
pub(crate) fn ln_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x.abs() <= 0.5 {
        (-erf_near_zero(x)).ln_1p()
    } else if x > 0.5 {
        ln_scaled_erfc(x) - x * x
    } else {
        // erfc(x) = 2 − erfc(−x) = 2·(1 − erfc(−x)/2), and erfc(−x) < erfc(0.5) < 0.48 here.
        LN_2 + (-0.5 * (ln_scaled_erfc(-x) - x * x).exp()).ln_1p()
    }
}

/// `erfc(x)` (underflows to 0 beyond `x ≈ 26.5`, like any `f64`); the statistics use the
/// logarithm, this checks it against tabulated values.
#[cfg(test)]
pub(crate) fn erfc(x: f64) -> f64 {
    ln_erfc(x).exp()
}

/// `ln Φ(z)`, the logarithm of the standard normal distribution function: `Φ(z) = erfc(−z/√2)/2`.
pub(crate) fn ln_cdf(z: f64) -> f64 {
    let x = -z * FRAC_1_SQRT_2;
    if x < -0.5 {
        // Φ(z) = 1 − erfc(−x)/2: keep the small part apart, or ln Φ(8) rounds to nothing.
        (-0.5 * (ln_scaled_erfc(-x) - x * x).exp()).ln_1p()
    } else {
        ln_erfc(x) - LN_2
    }
}

/// `1/sqrt(2π)`.
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// The standard normal density `φ(z)`.
pub(crate) fn pdf(z: f64) -> f64 {
    FRAC_1_SQRT_2PI * (-0.5 * z * z).exp()
}

/// For `z ≥ 0`: `ln Φ(z)` and the ratio `φ(z)/Φ(z)`, sharing one exponential (the boundary's
/// root-finding needs both at every step).
pub(crate) fn ln_cdf_and_hazard(z: f64) -> (f64, f64) {
    let e = (-0.5 * z * z).exp();
    let x = z * FRAC_1_SQRT_2;
    let upper = if x > 0.5 { 0.5 * scaled_erfc(x) * e } else { 0.5 * (1.0 - erf_near_zero(x)) };
    let ln_phi = (-upper).ln_1p();
    (ln_phi, FRAC_1_SQRT_2PI * e / (1.0 - upper))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relative(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    #[test]
    fn erfc_matches_known_values_in_every_range() {
        // Values from mpmath at 40 digits.
        let known = [
            (0.0, 1.0),
            (0.1, 0.887_537_083_981_715_1),
            (-0.3, 1.328_626_759_459_127_4),
            (0.5, 0.479_500_122_186_953_46),
            (1.0, 0.157_299_207_050_285_13),
            (-1.0, 1.842_700_792_949_714_9),
            (2.0, 0.004_677_734_981_047_266),
            (3.0, 2.209_049_699_858_544e-5),
            (4.0, 1.541_725_790_028_002e-8),
            (5.0, 1.537_459_794_428_034_9e-12),
            (10.0, 2.088_487_583_762_544_8e-45),
            (-4.5, 1.999_999_999_803_384),
        ];
        for (x, want) in known {
            assert!(relative(erfc(x), want) < 1e-13, "erfc({x}) = {} not {want}", erfc(x));
        }
    }

    #[test]
    fn log_cdf_stays_accurate_far_into_the_tails() {
        // ln Φ(z) from mpmath: where Φ itself underflows an f64, its logarithm must not.
        let known = [
            (0.0, -LN_2),
            (1.0, -0.172_753_779_023_449_9),
            (-1.0, -1.841_021_645_009_263_5),
            (-10.0, -53.231_285_150_512_47),
            (-40.0, -804.608_442_013_753_8),
            (8.0, -6.220_960_574_271_786e-16),
        ];
        for (z, want) in known {
            assert!(relative(ln_cdf(z), want) < 1e-12, "ln Φ({z}) = {} not {want}", ln_cdf(z));
        }
        assert_eq!(ln_cdf(40.0), 0.0);
        assert!((pdf(1.0) - 0.241_970_724_519_143_35).abs() < 1e-16);
        for z in [0.0, 0.3, 0.8, 2.0, 4.5, 9.0] {
            let (ln_phi, hazard) = ln_cdf_and_hazard(z);
            assert!((ln_phi - ln_cdf(z)).abs() <= 1e-13 * ln_cdf(z).abs(), "{z}");
            assert!((hazard / (pdf(z) / ln_cdf(z).exp()) - 1.0).abs() < 1e-14, "{z}");
        }
    }
}
