//! The numbers a rule can watch, where each comes from, and how it reads in PromQL.
//!
//! Window metrics come from the window sums `/api/compare` uses (requests, error share,
//! quantiles and rates over the rule's `window`); `worker_utilization` is the latest live point's
//! gauge, `target_down` the health board's count, `canary_verdict` the compare verdict, and
//! `storage_healthy` whether zai-dash's own database takes writes (one alert for the process,
//! not one per variant: [`PROCESS_VARIANT`]).

use crate::canary::Verdict;
use crate::point::Point;
use crate::ports::read::WindowStats;
use crate::promql::{self, Selector, family};

/// The `variant` label of an alert on zai-dash itself rather than on a variant of the proxies.
pub(crate) const PROCESS_VARIANT: &str = "zai-dash";

/// The self-metric `storage_healthy` reads in PromQL.
pub(crate) const STORAGE_HEALTHY_SERIES: &str = "zai_dash_storage_healthy";

/// A number a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// 5xx share of the window's requests, in percent.
    ErrorRatePct,
    /// Request latency p95 over the window, ms.
    LatencyP95Ms,
    /// Time to first token p95 over the window, ms.
    TtftP95Ms,
    /// Requests per second over the window.
    ReqRate,
    /// Capacity rejections per second over the window.
    RejectionRate,
    /// In-flight requests over all workers, from the latest point.
    WorkerUtilization,
    /// Targets of the variant whose last scrape failed.
    TargetDown,
    /// The compare verdict of the variant against the baseline (pass 0, insufficient_data 1,
    /// warn 2, fail 3).
    CanaryVerdict,
    /// Whether the database takes writes: 1, or 0 while it refuses them (disk full, read-only,
    /// I/O error, locked). Always 1 in source mode, which keeps no database.
    StorageHealthy,
    /// Seconds of provider quota left at the current pace minus seconds to the window's reset,
    /// the smallest over the variant's windows: negative when the quota runs out first
    /// (`budget::quota`). No value while the ratio is not rising or the quota is stale.
    QuotaRunwaySeconds,
    /// An objective's burn-rate alert (generated from `slos:`, never written in a rule): the
    /// burn rate both windows of its worst condition exceed.
    SloBurnRate,
    /// A budget's share spent (`BUDGET_DAILY_USD`, `BUDGET_MONTHLY_USD`; generated, never
    /// written in a rule): of the actual spend so far or of its projection to the period's end.
    SpendShare {
        /// The monthly budget (else the daily one).
        monthly: bool,
        /// The projection (else the spend so far).
        projected: bool,
    },
}

/// Every metric, for parsing and listing.
pub const METRICS: [Metric; 10] = [
    Metric::ErrorRatePct,
    Metric::LatencyP95Ms,
    Metric::TtftP95Ms,
    Metric::ReqRate,
    Metric::RejectionRate,
    Metric::WorkerUtilization,
    Metric::TargetDown,
    Metric::CanaryVerdict,
    Metric::StorageHealthy,
    Metric::QuotaRunwaySeconds,
];

/// Verdicts in rank order: a verdict's value is its index.
pub(crate) const VERDICTS: [Verdict; 4] = [Verdict::Pass, Verdict::InsufficientData, Verdict::Warn, Verdict::Fail];

impl Metric {
    /// The name rules use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Metric::ErrorRatePct => "error_rate_pct",
            Metric::LatencyP95Ms => "latency_p95_ms",
            Metric::TtftP95Ms => "ttft_p95_ms",
            Metric::ReqRate => "req_rate",
            Metric::RejectionRate => "rejection_rate",
            Metric::WorkerUtilization => "worker_utilization",
            Metric::TargetDown => "target_down",
            Metric::CanaryVerdict => "canary_verdict",
            Metric::StorageHealthy => "storage_healthy",
            Metric::QuotaRunwaySeconds => "quota_runway_seconds",
            Metric::SloBurnRate => "slo_burn_rate",
            Metric::SpendShare { .. } => "spend_share",
        }
    }

    /// The metric with this name.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        METRICS.into_iter().find(|m| m.name() == name)
    }

    /// Read over a window of summed increases (else an instant value).
    pub fn windowed(self) -> bool {
        !matches!(
            self,
            Metric::WorkerUtilization
                | Metric::TargetDown
                | Metric::StorageHealthy
                | Metric::QuotaRunwaySeconds
                | Metric::SloBurnRate
                | Metric::SpendShare { .. }
        )
    }

    /// About zai-dash itself: one alert labelled [`PROCESS_VARIANT`], whatever the variants.
    pub(crate) fn of_process(self) -> bool {
        self == Metric::StorageHealthy
    }

    /// Can be compared with its own median over a longer range.
    pub(crate) fn has_median(self) -> bool {
        self.windowed() && self != Metric::CanaryVerdict
    }

    /// Unit shown after values.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::ErrorRatePct => "%",
            Metric::LatencyP95Ms | Metric::TtftP95Ms => "ms",
            Metric::ReqRate | Metric::RejectionRate => "/s",
            Metric::QuotaRunwaySeconds => "s",
            Metric::SloBurnRate => "x",
            _ => "",
        }
    }

    /// The value over a window (`None`: no data, e.g. no request).
    pub(crate) fn of_window(self, w: &WindowStats) -> Option<f64> {
        match self {
            Metric::ErrorRatePct => w.side.error_rate_pct,
            Metric::LatencyP95Ms => w.side.latency_p95_ms,
            Metric::TtftP95Ms => w.side.ttft_p95_ms,
            Metric::ReqRate => Some(w.side.req_rate),
            Metric::RejectionRate => Some(w.rejection_rate),
            _ => None,
        }
    }

    /// The value of one point (a step of a history, or the latest live point).
    pub(crate) fn of_point(self, p: &Point) -> Option<f64> {
        match self {
            Metric::ErrorRatePct => p.error_rate_pct,
            Metric::LatencyP95Ms => p.latency_p95,
            Metric::TtftP95Ms => p.ttft_p95,
            Metric::ReqRate => Some(p.req_rate),
            Metric::RejectionRate => Some(p.rejection_rate),
            Metric::WorkerUtilization => Some(p.worker_utilization),
            _ => None,
        }
    }

    /// The PromQL of a windowed or instant metric (not `canary_verdict`, which is a
    /// condition rather than a number there: see [`promql::canary_verdict`]). `storage_healthy`
    /// is zai-dash's own gauge, so that rule needs Prometheus to scrape zai-dash's `/metrics`.
    pub(crate) fn promql(self, sel: &Selector, window_ms: i64) -> Option<String> {
        Some(match self {
            Metric::ErrorRatePct => promql::error_rate_pct(sel, window_ms),
            Metric::LatencyP95Ms => promql::quantile_ms(0.95, family::DURATION, sel, window_ms),
            Metric::TtftP95Ms => promql::quantile_ms(0.95, family::TTFT, sel, window_ms),
            Metric::ReqRate => promql::req_rate(sel, window_ms),
            Metric::RejectionRate => promql::rejection_rate(sel, window_ms),
            Metric::WorkerUtilization => promql::worker_utilization_now(sel),
            Metric::TargetDown => promql::targets_down(sel),
            Metric::StorageHealthy => STORAGE_HEALTHY_SERIES.to_owned(),
            Metric::QuotaRunwaySeconds => quota_runway_promql(sel),
            Metric::CanaryVerdict | Metric::SloBurnRate | Metric::SpendShare { .. } => return None,
        })
    }
}

/// `quota_runway_seconds` in PromQL: per window, the time the ratio reaches 1 at its `deriv`
/// over 15 min (only where it rises) minus the time to the reset, the smallest per variant.
/// Unlike zai-dash's own value it does not restart the slope at a reset nor drop stale samples
/// (README: "Quota runway").
fn quota_runway_promql(sel: &Selector) -> String {
    let by = "max by (variant, window, limit_type)";
    let usage = format!("zai_proxy_quota_usage_ratio{}", sel_text(sel));
    let reset = format!("zai_proxy_quota_reset_time_seconds{}", sel_text(sel));
    format!("min by (variant) ((1 - {by} ({usage})) / ({by} (deriv({usage}[15m])) > 0) + time() - {by} ({reset}))")
}

/// The `{variant="..."}` of a rule's selector (rules select by variant only).
fn sel_text(sel: &Selector) -> String {
    match &sel.variant {
        Some(v) => format!("{{variant=\"{}\"}}", v.replace('\\', "\\\\").replace('"', "\\\"")),
        None => String::new(),
    }
}

/// A verdict's rank, the value `canary_verdict` compares.
pub(crate) fn verdict_rank(v: Verdict) -> f64 {
    VERDICTS.iter().position(|x| *x == v).unwrap_or(0) as f64
}

/// The verdict of a rank (rounded), for display.
pub(crate) fn verdict_name(rank: f64) -> &'static str {
    let i = rank.round().clamp(0.0, 3.0) as usize;
    VERDICTS[i].as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_verdicts_rank_worst_last() {
        for m in METRICS {
            assert_eq!(Metric::parse(m.name()), Some(m));
        }
        assert_eq!(verdict_rank(Verdict::Fail), 3.0);
        assert_eq!(verdict_name(2.0), "warn");
        assert!(verdict_rank(Verdict::InsufficientData) < verdict_rank(Verdict::Warn));
    }
}
