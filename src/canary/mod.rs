//! Canary analysis you can watch live: baseline versus candidate judged by always-valid
//! sequential statistics, so refreshing every 5 s for a whole rollout keeps the chance of ever
//! calling a healthy canary `warn` or `fail` below `alpha`, across all metrics together.
//!
//! - [`Evidence`] folds one [`SideTick`] per variant per scrape tick into running sums
//!   (`evidence`, stratified by tick in `stratified`).
//! - [`judge`] compares those sums with a [`CanaryConfig`] (`spec`: the YAML file and its
//!   defaults) through Robbins' normal-mixture confidence sequences (`boundary`) and Holm's
//!   procedure, giving one [`Row`] per metric and the overall [`Judgement`].
//! - `report` turns a judgement into its JSON shape, reasons included.
//!
//! Pure code, no I/O beyond [`CanaryConfig::load`]. ARCHITECTURE.md ("Canary analysis") has
//! the method, its papers, and why the guarantee holds.

mod boundary;
mod catalog;
mod evidence;
mod judge;
mod normal;
mod report;
mod spec;
mod stratified;
mod verdict;

#[cfg(test)]
pub(crate) use catalog::MetricId;
pub use evidence::{Evidence, SideTick, Tails};
#[cfg(test)]
use judge::Why;
pub use judge::{Classification, Judgement, METHOD, Row, judge};
pub use spec::{Allowed, CRITICAL_ALPHA_WEIGHT, CanaryConfig, MAX_FILE_BYTES, MetricSpec, Worse, render_defaults};
pub use verdict::Verdict;

/// Upper tail of the standard normal, `P(Z > z)`: the simulations draw latencies with it.
pub fn normal_sf(z: f64) -> f64 {
    (normal::ln_erfc(z * std::f64::consts::FRAC_1_SQRT_2) - std::f64::consts::LN_2).exp()
}

#[cfg(test)]
mod tests;
