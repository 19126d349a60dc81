//! The verdict `/api/compare` gave before the sequential analysis, kept only as the "today"
//! comparator of `benches/canary.rs`: a pooled two-proportion z-test on the 5xx share (alpha
//! 0.05; `fail` when significantly worse by more than 1 point, `warn` when significantly worse)
//! and a bare p95 ratio (`warn` above 1.5x, `fail` above 2x), with fewer than 100 requests on a
//! side giving `insufficient_data`. Fixed-horizon: valid for one look at one window only.

use zai_dash::canary::{Verdict, normal_sf};

/// One side of the window: requests, 5xx responses, p95 in ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub requests: f64,
    pub errors_5xx: f64,
    pub p95_ms: Option<f64>,
}

/// Two-sided p-value of the pooled z-test of `c` against `b`, with the sign of the change.
fn z_test(b: &Window, c: &Window) -> (f64, f64) {
    let (p1, p2) = (b.errors_5xx / b.requests, c.errors_5xx / c.requests);
    let pooled = (b.errors_5xx + c.errors_5xx) / (b.requests + c.requests);
    let se = (pooled * (1.0 - pooled) * (1.0 / b.requests + 1.0 / c.requests)).sqrt();
    if se.is_nan() || se <= 0.0 {
        return (0.0, 1.0);
    }
    let z = (p2 - p1) / se;
    (z, (2.0 * normal_sf(z.abs())).min(1.0))
}

/// The old verdict of one window.
pub fn verdict(b: &Window, c: &Window) -> Verdict {
    if b.requests < 100.0 || c.requests < 100.0 {
        return Verdict::InsufficientData;
    }
    let (z, p) = z_test(b, c);
    let diff = 100.0 * (c.errors_5xx / c.requests - b.errors_5xx / b.requests);
    let errors = match (z > 0.0 && p < 0.05, diff > 1.0) {
        (true, true) => Verdict::Fail,
        (true, false) => Verdict::Warn,
        _ => Verdict::Pass,
    };
    let latency = match (b.p95_ms, c.p95_ms) {
        (Some(pb), Some(pc)) if pb > 0.0 && pc / pb > 2.0 => Verdict::Fail,
        (Some(pb), Some(pc)) if pb > 0.0 && pc / pb > 1.5 => Verdict::Warn,
        (Some(_), Some(_)) => Verdict::Pass,
        _ => Verdict::InsufficientData,
    };
    errors.max(latency)
}
