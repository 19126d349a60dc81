//! Budgets and objectives (issue 21): how long the provider quota lasts at the current pace,
//! what today and this month will cost, and service level objectives with their error budgets
//! and burn-rate alerts.
//!
//! Pure code over owned inputs, so the store (SQLite mode) and PromQL (source mode) can both
//! feed it and tests can drive it with hand-made series:
//! - [`quota`]: per variant, the quota windows' used ratio, burn per hour, projected exhaustion
//!   and runway from a time series of the proxy's quota gauges ([`quota::runway`]).
//! - [`spend`]: spend today and this month per variant and model, their projections and the
//!   budgets' shares and alert levels ([`spend::forecast`]).
//! - [`slo`]: objectives from the rules file's `slos:` list ([`slo::parse_slos`]), their
//!   evaluation from good/total counts ([`slo::evaluate`]), the start-up retention check, and
//!   the same objectives as Prometheus recording and alerting rules ([`slo::rule_groups`]).
//!
//! Every value a reader could take for data is an `Option`: no sample, no request or no pace
//! gives JSON `null`, never a `0`.

pub mod quota;
pub mod slo;
pub mod spend;
