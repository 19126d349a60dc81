//! The metrics a canary is judged on: names, labels, units, and where each one's numbers come
//! from. The configuration tunes these; it cannot invent new ones, so every name is `'static`.

use super::stratified::Kind;

/// One metric of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetricId {
    /// 5xx share of requests.
    ErrorRate,
    /// 429 share of requests.
    RateLimited,
    /// Upstream errors per request.
    UpstreamErrors,
    /// Retries per request (without zai-proxy's generic `retry` series).
    Retries,
    /// Share of requests slower than the baseline's p95 bucket bound.
    LatencyP95Tail,
    /// Share of requests slower than the baseline's p99 bucket bound.
    LatencyP99Tail,
    /// Share of streamed requests whose first token came after the baseline's p95 bound.
    TtftP95Tail,
    /// Output tokens per answered (2xx) request.
    OutputTokensPerRequest,
    /// Share of prompt tokens read from the cache.
    CacheReadShare,
    /// Estimated USD per answered (2xx) request.
    CostPerSuccess,
}

/// Every metric, in the order rows are shown.
pub(crate) const CATALOG: [MetricId; 10] = [
    MetricId::ErrorRate,
    MetricId::RateLimited,
    MetricId::UpstreamErrors,
    MetricId::Retries,
    MetricId::LatencyP95Tail,
    MetricId::LatencyP99Tail,
    MetricId::TtftP95Tail,
    MetricId::OutputTokensPerRequest,
    MetricId::CacheReadShare,
    MetricId::CostPerSuccess,
];

/// Where a metric's per-tick numbers live in [`super::Evidence`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Source {
    /// One of the counter comparisons, by index.
    Counter(usize),
    /// A latency tail share above the bound at this quantile.
    Latency(f64),
    /// A TTFT tail share above the bound at this quantile.
    Ttft(f64),
}

/// Counter comparisons kept by [`super::Evidence`], in this order.
pub(crate) const COUNTERS: usize = 7;
pub(crate) const C_ERRORS: usize = 0;
pub(crate) const C_RATE_LIMITED: usize = 1;
pub(crate) const C_UPSTREAM: usize = 2;
pub(crate) const C_RETRIES: usize = 3;
pub(crate) const C_OUTPUT: usize = 4;
pub(crate) const C_CACHE: usize = 5;
pub(crate) const C_COST: usize = 6;

impl MetricId {
    /// The machine name (`error_rate`, ...), as in the configuration file and the JSON rows.
    pub(crate) fn name(self) -> &'static str {
        match self {
            MetricId::ErrorRate => "error_rate",
            MetricId::RateLimited => "rate_limited",
            MetricId::UpstreamErrors => "upstream_errors",
            MetricId::Retries => "retries",
            MetricId::LatencyP95Tail => "latency_p95_tail",
            MetricId::LatencyP99Tail => "latency_p99_tail",
            MetricId::TtftP95Tail => "ttft_p95_tail",
            MetricId::OutputTokensPerRequest => "output_tokens_per_request",
            MetricId::CacheReadShare => "cache_read_share",
            MetricId::CostPerSuccess => "cost_per_success",
        }
    }

    /// The metric with this machine name.
    pub(crate) fn parse(name: &str) -> Option<MetricId> {
        CATALOG.into_iter().find(|m| m.name() == name)
    }

    /// Human label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            MetricId::ErrorRate => "Error rate (5xx)",
            MetricId::RateLimited => "Rate limited (429)",
            MetricId::UpstreamErrors => "Upstream errors per request",
            MetricId::Retries => "Retries per request",
            MetricId::LatencyP95Tail => "Latency above the baseline's p95",
            MetricId::LatencyP99Tail => "Latency above the baseline's p99",
            MetricId::TtftP95Tail => "TTFT above the baseline's p95",
            MetricId::OutputTokensPerRequest => "Output tokens per request",
            MetricId::CacheReadShare => "Prompt tokens read from cache",
            MetricId::CostPerSuccess => "Cost per successful request",
        }
    }

    /// Unit of `baseline` and `candidate` in a row.
    pub(crate) fn unit(self) -> &'static str {
        match self {
            MetricId::UpstreamErrors => "errors/request",
            MetricId::Retries => "retries/request",
            MetricId::OutputTokensPerRequest => "tokens/request",
            MetricId::CostPerSuccess => "USD/request",
            _ => "%",
        }
    }

    /// Whether values are shares shown in percent (absolute margins are then in points).
    pub(crate) fn is_share(self) -> bool {
        self.unit() == "%"
    }

    /// Factor from the internal value (a fraction for shares) to the shown one.
    pub(crate) fn display_scale(self) -> f64 {
        if self.is_share() { 100.0 } else { 1.0 }
    }

    /// What the numerator counts (decides the variance floor).
    pub(crate) fn kind(self) -> Kind {
        match self {
            MetricId::UpstreamErrors | MetricId::Retries => Kind::Events,
            MetricId::OutputTokensPerRequest | MetricId::CostPerSuccess => Kind::Amount,
            // Cache reads are tokens, clustered by request: the sandwich carries them.
            MetricId::CacheReadShare => Kind::Amount,
            _ => Kind::Share,
        }
    }

    /// Whether an absolute ceiling on the candidate's own value applies (request shares).
    pub(crate) fn allows_ceiling(self) -> bool {
        matches!(self, MetricId::ErrorRate | MetricId::RateLimited)
    }

    pub(crate) fn source(self) -> Source {
        match self {
            MetricId::ErrorRate => Source::Counter(C_ERRORS),
            MetricId::RateLimited => Source::Counter(C_RATE_LIMITED),
            MetricId::UpstreamErrors => Source::Counter(C_UPSTREAM),
            MetricId::Retries => Source::Counter(C_RETRIES),
            MetricId::LatencyP95Tail => Source::Latency(0.95),
            MetricId::LatencyP99Tail => Source::Latency(0.99),
            MetricId::TtftP95Tail => Source::Ttft(0.95),
            MetricId::OutputTokensPerRequest => Source::Counter(C_OUTPUT),
            MetricId::CacheReadShare => Source::Counter(C_CACHE),
            MetricId::CostPerSuccess => Source::Counter(C_COST),
        }
    }
}

impl serde::Serialize for MetricId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}
