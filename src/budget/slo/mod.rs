//! Service level objectives: the rules file's `slos:` list, their error budgets, burn rates
//! and the multi-window, multi-burn-rate alerts of the Google SRE workbook (chapter 5,
//! "Alerting on SLOs").
//!
//! An objective says which share of a variant's requests must be *good*: not a 5xx
//! (`availability`), done within a duration bound (`latency`), or with a first token within
//! one (`ttft`). The bound must be a bucket bound of zai-proxy's histogram, so good requests
//! are counted exactly, never interpolated. Over a window, the *error ratio* is the share of
//! requests that were not good and the *burn rate* is that ratio over the error budget
//! (`1 - objective`): at burn 1 the budget lasts exactly the period.
//!
//! - `spec`: reading and checking the `slos:` list ([`parse_slos`]), and the start-up check that
//!   retention keeps a whole period ([`check_retention`]).
//! - `eval`: an objective's status from good/total counts over windows ([`evaluate`]), which
//!   the store or PromQL answer through [`CountsSource`].
//! - `prometheus`: the same objectives as Prometheus recording and alerting rules
//!   ([`rule_groups`]).

mod eval;
mod prometheus;
mod spec;

pub use eval::{BurnRates, CountsSource, SloAlertState, SloCounts, SloStatus, evaluate, evaluate_all};
pub use prometheus::{PromRule, RuleGroup, rule_groups};
pub use spec::{DEFAULT_PERIOD_MS, DURATION_BOUNDS, Retention, TTFT_BOUNDS, check_retention, parse_slos};

use crate::point::Counts;

/// Which variants an objective covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SloVariant {
    /// This variant.
    One(String),
    /// Every variant, each on its own (`*`).
    Each,
}

/// What makes a request good.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Indicator {
    /// Not answered with a 5xx (503 capacity rejections are bad, 429 is not), as the error
    /// share everywhere else.
    Availability,
    /// Request duration at or under `threshold_s` (a bucket bound of
    /// `zai_proxy_request_duration_seconds`, which does not observe capacity rejections).
    Latency {
        /// Seconds.
        threshold_s: f64,
    },
    /// Time to first token at or under `threshold_s` (streamed answers only).
    Ttft {
        /// Seconds.
        threshold_s: f64,
    },
}

impl Indicator {
    /// The name the rules file and the API use.
    pub fn name(&self) -> &'static str {
        match self {
            Indicator::Availability => "availability",
            Indicator::Latency { .. } => "latency",
            Indicator::Ttft { .. } => "ttft",
        }
    }

    /// The bound, seconds (`None` for availability).
    pub fn threshold_s(&self) -> Option<f64> {
        match self {
            Indicator::Availability => None,
            Indicator::Latency { threshold_s } | Indicator::Ttft { threshold_s } => Some(*threshold_s),
        }
    }

    /// Good and total requests in a window's increases (a variant's window sums, as the store
    /// and the engine give them to `/api/compare`). `None` when the histogram holds requests but
    /// no bucket at the bound (an exporter with other buckets): an unknown, not a zero.
    pub fn good_total(&self, counts: &Counts) -> Option<SloCounts> {
        match self {
            Indicator::Availability => {
                let total = counts.total_requests();
                Some(SloCounts { good: total - counts.requests_in_class('5'), total })
            }
            Indicator::Latency { threshold_s } => below(&counts.duration, *threshold_s),
            Indicator::Ttft { threshold_s } => below(&counts.ttft, *threshold_s),
        }
    }
}

/// Observations of `h` at or under the bucket bound `bound`, out of all.
fn below(h: &crate::point::Histogram, bound: f64) -> Option<SloCounts> {
    if h.count <= 0.0 {
        return Some(SloCounts { good: 0.0, total: 0.0 });
    }
    let good = h.buckets.iter().find(|(le, _)| *le == bound)?.1;
    Some(SloCounts { good, total: h.count })
}

/// One validated objective.
#[derive(Debug, Clone, PartialEq)]
pub struct SloSpec {
    /// Name; the generated alerts are `<name>BurnRatePage` and `<name>BurnRateTicket`.
    pub name: String,
    /// Which variants.
    pub variant: SloVariant,
    /// What makes a request good.
    pub indicator: Indicator,
    /// Percent of requests that must be good, strictly between 0 and 100 (`99.5`).
    pub objective_pct: f64,
    /// The period the objective and its error budget are about, ms.
    pub period_ms: i64,
}

impl SloSpec {
    /// The error budget as a fraction of requests (`0.005` for 99.5 %). Rounded to 12 decimals
    /// so `99.9` gives `0.001`, not `0.0009999999999999432`: the exported rules print it, and
    /// the evaluation here uses the same number.
    pub fn error_budget(&self) -> f64 {
        error_budget_of(self.objective_pct)
    }

    /// `<name><suffix>` of one of [`BURN_ALERTS`].
    pub fn alert_name(&self, alert: &BurnAlert) -> String {
        format!("{}{}", self.name, alert.suffix)
    }

    /// The period as written in names and JSON (`28d`).
    pub fn period_label(&self) -> String {
        span_label(self.period_ms)
    }

    /// The objective in words: `99.5 % of requests without a 5xx over 28d`.
    pub fn describe(&self) -> String {
        let what = match self.indicator {
            Indicator::Availability => "of requests without a 5xx".to_owned(),
            Indicator::Latency { threshold_s } => {
                format!("of requests within {} s", crate::expo::go_float(threshold_s))
            }
            Indicator::Ttft { threshold_s } => {
                format!("of first tokens within {} s", crate::expo::go_float(threshold_s))
            }
        };
        format!("{} % {what} over {}", crate::expo::go_float(self.objective_pct), self.period_label())
    }

    /// Every window an evaluation reads (the burn windows, then the period): what a source
    /// that fetches ahead must have.
    pub fn windows_ms(&self) -> Vec<i64> {
        BURN_WINDOWS.iter().map(|w| w.ms).chain([self.period_ms]).collect()
    }
}

/// `1 - objective` as a fraction, to 12 decimals (see [`SloSpec::error_budget`]).
fn error_budget_of(objective_pct: f64) -> f64 {
    (((100.0 - objective_pct) / 100.0) * 1e12).round() / 1e12
}

/// A window burn rates are measured over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurnWindow {
    /// As written in JSON keys and rule names (`5m`, `1d`).
    pub label: &'static str,
    /// Length, ms.
    pub ms: i64,
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const W5M: BurnWindow = BurnWindow { label: "5m", ms: 5 * MINUTE };
const W30M: BurnWindow = BurnWindow { label: "30m", ms: 30 * MINUTE };
const W1H: BurnWindow = BurnWindow { label: "1h", ms: HOUR };
const W2H: BurnWindow = BurnWindow { label: "2h", ms: 2 * HOUR };
const W6H: BurnWindow = BurnWindow { label: "6h", ms: 6 * HOUR };
const W1D: BurnWindow = BurnWindow { label: "1d", ms: DAY };
const W3D: BurnWindow = BurnWindow { label: "3d", ms: 3 * DAY };

/// The windows of `burn_rates`, shortest first.
pub const BURN_WINDOWS: [BurnWindow; 7] = [W5M, W30M, W1H, W2H, W6H, W1D, W3D];

/// One condition of a burn-rate alert: burn above `factor` over both windows (the long one
/// says enough budget went, the short one that it is still going, so the alert resets soon
/// after the problem stops).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnCondition {
    /// The long window.
    pub long: BurnWindow,
    /// The short window (a twelfth of the long one).
    pub short: BurnWindow,
    /// Burn rate to exceed over both.
    pub factor: f64,
}

/// A generated alert: either condition fires it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnAlert {
    /// Appended to the objective's name.
    pub suffix: &'static str,
    /// The `severity` label (`critical` pages, `warning` makes a ticket).
    pub severity: &'static str,
    /// Either holds: the alert fires.
    pub conditions: [BurnCondition; 2],
}

/// The workbook's four alerts in two: page on 2 % of a 30-day budget in 1 h or 5 % in 6 h;
/// ticket on 10 % in 3 d (burn 1 over 3 d) or in 1 d (burn 3).
pub const BURN_ALERTS: [BurnAlert; 2] = [
    BurnAlert {
        suffix: "BurnRatePage",
        severity: "critical",
        conditions: [
            BurnCondition { long: W1H, short: W5M, factor: 14.4 },
            BurnCondition { long: W6H, short: W30M, factor: 6.0 },
        ],
    },
    BurnAlert {
        suffix: "BurnRateTicket",
        severity: "warning",
        conditions: [
            BurnCondition { long: W1D, short: W2H, factor: 3.0 },
            BurnCondition { long: W3D, short: W6H, factor: 1.0 },
        ],
    },
];

/// A span as `28d`, `6h`, `30m` (days when whole, else PromQL's form).
pub(crate) fn span_label(ms: i64) -> String {
    if ms > 0 && ms % DAY == 0 { format!("{}d", ms / DAY) } else { crate::promql::duration(ms) }
}

#[cfg(test)]
mod tests;
