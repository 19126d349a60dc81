//! The PromQL behind every number zai-dash shows, for engines that already scrape the proxies
//! (Prometheus, VictoriaMetrics, Thanos, Mimir).
//!
//! One catalog serves three readers: the source mode (answering the API from an engine), the
//! Grafana dashboard (the same panels over the same queries) and `zai-dash rules --prometheus`
//! (alerting rules on the same numbers). Each expression is the definition docs/decisions.md
//! (Point semantics, Windows) gives zai-dash's own points, written in PromQL over the
//! `zai_proxy_*` series:
//! - rates: `sum by (variant) (increase(x[W])) / W`, i.e. the per-second increase over the
//!   window, pods summed (`rate` extrapolates at series edges like `increase` does);
//! - quantiles: `histogram_quantile` over the window's summed bucket increases, in ms;
//! - error share: 5xx increases over all increases, in percent;
//! - gauges: time-weighted, `avg_over_time(sum by (variant) (g)[W:R])`, so a pod present for
//!   half the window counts half (a subquery at the scrape resolution `R`).
//!
//! Cumulative Go fields (`requests_2xx`, `tokens_input`, ...) are running totals since zai-dash
//! first saw a variant; an engine has no such notion, so they have no expression here and the
//! source mode answers `null` for them rather than a made-up value.

/// Which series a query reads: a variant (`None`: all, grouped by variant) and extra label
/// matchers (a pod's `instance`, a Grafana template variable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Only this variant.
    pub variant: Option<String>,
    /// Further `label="value"` matchers, in order.
    pub matchers: Vec<(String, String)>,
    /// `label=~"pattern"` matchers, in order: a dashboard's multi-value variables
    /// (`variant=~"$variant"`), which the tool fills in as alternations.
    pub patterns: Vec<(String, String)>,
}

impl Selector {
    /// Every variant.
    pub(crate) fn all() -> Self {
        Self::default()
    }

    /// One variant.
    pub(crate) fn variant(name: &str) -> Self {
        Self { variant: Some(name.to_owned()), ..Self::default() }
    }

    /// Series whose labels match these patterns (`[("variant", "$variant")]`).
    pub(crate) fn patterns(pairs: &[(&str, &str)]) -> Self {
        Self { patterns: pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), ..Self::default() }
    }

    /// The matchers inside `{...}`, with `extra` ones first (e.g. `status_code=~"5.."`).
    fn render(&self, extra: &[&str]) -> String {
        let mut parts: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        if let Some(v) = &self.variant {
            parts.push(format!("variant=\"{}\"", escape(v)));
        }
        for (k, v) in &self.matchers {
            parts.push(format!("{k}=\"{}\"", escape(v)));
        }
        for (k, v) in &self.patterns {
            parts.push(format!("{k}=~\"{}\"", escape(v)));
        }
        if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
    }
}

/// A PromQL string literal's content.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A window or resolution as PromQL writes durations (`5m`, `30s`, `1500ms`).
pub(crate) fn duration(ms: i64) -> String {
    let ms = ms.max(1);
    if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1_000 == 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// The series families the catalog reads (zai-proxy's names; docs/decisions.md, zai-proxy's exposition).
pub(crate) mod family {
    /// Requests by `status_code`.
    pub(crate) const REQUESTS: &str = "zai_proxy_requests_total";
    /// Tokens by `direction`, `model`.
    pub(crate) const TOKENS: &str = "zai_proxy_tokens_total";
    /// Estimated cost (USD) by `direction`, `model`.
    pub(crate) const COST: &str = "zai_proxy_estimated_cost_usd_total";
    /// Capacity rejections.
    pub(crate) const REJECTIONS: &str = "zai_proxy_rate_limit_rejections_total";
    /// Retries by `reason`.
    pub(crate) const RETRIES: &str = "zai_proxy_retry_attempts_total";
    /// Upstream errors by `error_type`.
    pub(crate) const UPSTREAM_ERRORS: &str = "zai_proxy_upstream_errors_total";
    /// Request duration histogram (seconds).
    pub(crate) const DURATION: &str = "zai_proxy_request_duration_seconds";
    /// Time to first token histogram (seconds).
    pub(crate) const TTFT: &str = "zai_proxy_time_to_first_token_seconds";
    /// Time per output token histogram (seconds).
    pub(crate) const TPOT: &str = "zai_proxy_time_per_output_token_seconds";
    /// In-flight requests.
    pub(crate) const CONCURRENT: &str = "zai_proxy_concurrent_requests";
    /// Worker cap.
    pub(crate) const MAX_WORKERS: &str = "zai_proxy_max_workers";
    /// Current rate limit.
    pub(crate) const RATE_LIMIT: &str = "zai_proxy_rate_limit_requests_per_second";
    /// Build information (`version`, `variant`), one series per pod.
    pub(crate) const BUILD_INFO: &str = "zai_proxy_build_info";
}

/// Per-second increase of `family` over `window`, summed by `by`.
fn per_second(family: &str, sel: &Selector, extra: &[&str], by: &str, window: &str) -> String {
    format!("sum by ({by}) (rate({family}{}[{window}]))", sel.render(extra))
}

/// Increase of `family` over `window`, summed by `by`.
fn increase(family: &str, sel: &Selector, extra: &[&str], by: &str, window: &str) -> String {
    format!("sum by ({by}) (increase({family}{}[{window}]))", sel.render(extra))
}

/// A quantile (ms) from the window's summed bucket increases of a histogram family.
pub(crate) fn quantile_ms(q: f64, hist: &str, sel: &Selector, window_ms: i64) -> String {
    over::quantile_ms(q, hist, sel, &duration(window_ms))
}

/// Requests per second.
pub fn req_rate(sel: &Selector, window_ms: i64) -> String {
    over::req_rate(sel, &duration(window_ms))
}

/// Requests per second by status code (`status_code_rates`).
pub fn status_code_rates(sel: &Selector, window_ms: i64) -> String {
    over::status_code_rates(sel, &duration(window_ms))
}

/// Requests per second of one status class (`'2'`: 2xx).
pub fn status_class_rate(class: char, sel: &Selector, window_ms: i64) -> String {
    over::status_class_rate(class, sel, &duration(window_ms))
}

/// Requests in the window (the sample size behind rates and quantiles).
pub(crate) fn requests(sel: &Selector, window_ms: i64) -> String {
    over::requests(sel, &duration(window_ms))
}

/// 5xx share in percent (503 capacity rejections count, 429 does not).
pub fn error_rate_pct(sel: &Selector, window_ms: i64) -> String {
    over::error_rate_pct(sel, &duration(window_ms))
}

/// Tokens per second in one direction (`input`, `output`, `cache_read`, `cache_write`).
pub fn token_rate(direction: &str, sel: &Selector, window_ms: i64) -> String {
    over::token_rate(direction, sel, &duration(window_ms))
}

/// Estimated cost per second, all directions (USD).
pub fn cost_rate(sel: &Selector, window_ms: i64) -> String {
    over::cost_rate(sel, &duration(window_ms))
}

/// Estimated cost per hour at the window's rate (USD), as the overview charts it.
pub fn cost_per_hour(sel: &Selector, window_ms: i64) -> String {
    over::cost_per_hour(sel, &duration(window_ms))
}

/// Capacity rejections per second.
pub fn rejection_rate(sel: &Selector, window_ms: i64) -> String {
    over::rejection_rate(sel, &duration(window_ms))
}

/// Retries per second, without the generic `reason="retry"` series zai-proxy counts alongside
/// the specific one.
pub fn retry_rate(sel: &Selector, window_ms: i64) -> String {
    over::retry_rate(sel, &duration(window_ms))
}

/// Upstream errors per second.
pub fn upstream_error_rate(sel: &Selector, window_ms: i64) -> String {
    over::upstream_error_rate(sel, &duration(window_ms))
}

/// A gauge summed over pods, time-weighted over the window at the scrape resolution: a pod
/// present for half the window counts half.
pub fn gauge(family: &str, sel: &Selector, window_ms: i64, resolution_ms: i64) -> String {
    over::gauge(family, sel, &duration(window_ms), &duration(resolution_ms))
}

/// The series of every pod (one `zai_proxy_build_info` each): what a dashboard lists variants
/// and pods from.
pub(crate) fn pods(sel: &Selector) -> String {
    format!("{}{}", family::BUILD_INFO, sel.render(&[]))
}

/// The catalog with windows written as PromQL text instead of milliseconds, so a dashboard
/// tool's own variables fit (Grafana's `$__rate_interval`, `$__interval`). The functions above
/// are these with a fixed window; the expressions exist only here.
pub(crate) mod over {
    use super::{Selector, escape, family, increase, per_second};

    /// A quantile (ms) from the window's summed bucket increases of a histogram family.
    pub(crate) fn quantile_ms(q: f64, hist: &str, sel: &Selector, window: &str) -> String {
        format!(
            "1000 * histogram_quantile({q}, sum by (variant, le) (rate({hist}_bucket{}[{window}])))",
            sel.render(&[])
        )
    }

    /// Requests per second.
    pub(crate) fn req_rate(sel: &Selector, window: &str) -> String {
        per_second(family::REQUESTS, sel, &[], "variant", window)
    }

    /// Requests per second by status code.
    pub fn status_code_rates(sel: &Selector, window: &str) -> String {
        per_second(family::REQUESTS, sel, &[], "variant, status_code", window)
    }

    /// Requests per second of one status class (`'2'`: 2xx).
    pub(crate) fn status_class_rate(class: char, sel: &Selector, window: &str) -> String {
        let codes = format!("status_code=~\"{}..\"", escape(&class.to_string()));
        per_second(family::REQUESTS, sel, &[&codes], "variant", window)
    }

    /// Requests in the window.
    pub(crate) fn requests(sel: &Selector, window: &str) -> String {
        increase(family::REQUESTS, sel, &[], "variant", window)
    }

    /// 5xx share in percent.
    pub(crate) fn error_rate_pct(sel: &Selector, window: &str) -> String {
        format!(
            "100 * {} / {}",
            increase(family::REQUESTS, sel, &["status_code=~\"5..\""], "variant", window),
            increase(family::REQUESTS, sel, &[], "variant", window)
        )
    }

    /// Tokens per second in one direction.
    pub(crate) fn token_rate(direction: &str, sel: &Selector, window: &str) -> String {
        let d = format!("direction=\"{}\"", escape(direction));
        per_second(family::TOKENS, sel, &[&d], "variant", window)
    }

    /// Estimated cost per second (USD).
    pub(crate) fn cost_rate(sel: &Selector, window: &str) -> String {
        per_second(family::COST, sel, &[], "variant", window)
    }

    /// Estimated cost per hour (USD).
    pub(crate) fn cost_per_hour(sel: &Selector, window: &str) -> String {
        format!("3600 * {}", cost_rate(sel, window))
    }

    /// Capacity rejections per second.
    pub(crate) fn rejection_rate(sel: &Selector, window: &str) -> String {
        per_second(family::REJECTIONS, sel, &[], "variant", window)
    }

    /// Retries per second without `reason="retry"`.
    pub(crate) fn retry_rate(sel: &Selector, window: &str) -> String {
        per_second(family::RETRIES, sel, &["reason!=\"retry\""], "variant", window)
    }

    /// Upstream errors per second.
    pub fn upstream_error_rate(sel: &Selector, window: &str) -> String {
        per_second(family::UPSTREAM_ERRORS, sel, &[], "variant", window)
    }

    /// A gauge summed over pods, time-weighted over the window at `resolution`.
    pub(crate) fn gauge(family: &str, sel: &Selector, window: &str, resolution: &str) -> String {
        format!("avg_over_time((sum by (variant) ({family}{}))[{window}:{resolution}])", sel.render(&[]))
    }

    /// In-flight requests over all workers (Σ concurrent / Σ max workers), time-weighted.
    pub(crate) fn worker_utilization(sel: &Selector, window: &str, resolution: &str) -> String {
        format!(
            "{} / {}",
            gauge(family::CONCURRENT, sel, window, resolution),
            gauge(family::MAX_WORKERS, sel, window, resolution)
        )
    }
}

/// In-flight requests over all workers (Σ concurrent / Σ max workers), time-weighted.
pub fn worker_utilization(sel: &Selector, window_ms: i64, resolution_ms: i64) -> String {
    format!(
        "{} / {}",
        gauge(family::CONCURRENT, sel, window_ms, resolution_ms),
        gauge(family::MAX_WORKERS, sel, window_ms, resolution_ms)
    )
}

/// In-flight requests over all workers right now (Σ concurrent / Σ max workers at the latest
/// scrape): the latest point's `worker_utilization`, which alerting rules compare.
pub(crate) fn worker_utilization_now(sel: &Selector) -> String {
    format!(
        "sum by (variant) ({}{s}) / sum by (variant) ({}{s})",
        family::CONCURRENT,
        family::MAX_WORKERS,
        s = sel.render(&[])
    )
}

/// Targets whose last scrape failed, per variant. `up` carries no `variant`, so each failing
/// instance takes the variant its `zai_proxy_build_info` reported within the last hour (an
/// instance never scraped successfully has none and is not counted).
pub(crate) fn targets_down(sel: &Selector) -> String {
    format!(
        "count by (variant) ((up == 0) * on (job, instance) group_left (variant) \
         max by (job, instance, variant) (last_over_time({}{}[1h])))",
        family::BUILD_INFO,
        sel.render(&[])
    )
}

/// The median of `expr` over `range_ms`, sampled every `step_ms` (a subquery): the "usual"
/// level a present value is compared with.
pub(crate) fn median_over_time(expr: &str, range_ms: i64, step_ms: i64) -> String {
    format!("quantile_over_time(0.5, ({expr})[{}:{}])", duration(range_ms), duration(step_ms))
}

/// How bad a canary verdict must be for [`canary_verdict`] to return a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VerdictLevel {
    /// `warn` or worse.
    Warn,
    /// `fail`.
    Fail,
}

/// zai-dash's own gauge of each pair's canary verdict on its `/metrics`: 0 pass, 1 warn, 2 fail,
/// -1 insufficient data (below every alarm level), refreshed each minute.
pub(crate) const CANARY_VERDICT_GAUGE: &str = "zai_dash_canary_verdict";

/// The gauge's value of a verdict, `None` for one it never takes.
pub(crate) fn canary_gauge_value(verdict: &str) -> Option<f64> {
    match verdict {
        "pass" => Some(0.0),
        "warn" => Some(1.0),
        "fail" => Some(2.0),
        "insufficient_data" => Some(-1.0),
        _ => None,
    }
}

/// Candidates (`candidate`: one variant, or all) whose canary verdict against `baseline`
/// reaches `level`, read from zai-dash's own [`CANARY_VERDICT_GAUGE`] (so Prometheus must
/// scrape zai-dash's `/metrics`): the verdict is computed once, by zai-dash's canary analysis,
/// and no threshold is repeated here. The candidate is relabelled `variant`, as every other
/// rule's alerts are.
pub(crate) fn canary_verdict(level: VerdictLevel, candidate: &Selector, baseline: &str) -> String {
    let mut matchers = vec![format!("baseline=\"{}\"", escape(baseline))];
    if let Some(v) = &candidate.variant {
        matchers.push(format!("candidate=\"{}\"", escape(v)));
    }
    let condition = match level {
        VerdictLevel::Warn => ">= 1",
        VerdictLevel::Fail => "== 2",
    };
    format!(
        "label_replace({CANARY_VERDICT_GAUGE}{{{}}} {condition}, \"variant\", \"$1\", \"candidate\", \"(.+)\")",
        matchers.join(", ")
    )
}

/// The source mode's building blocks (`serve --source prometheus`): the same definitions as
/// above, split by the labels zai-dash keeps, so that the engine's answers are assembled into
/// points exactly as the store assembles rows: quantiles from summed bucket rates (with
/// `point::Histogram`, Prometheus' interpolation), error share from the status codes, each
/// gauge time-weighted over the bucket with absent pods counting 0, the quota block from the
/// freshest values. Window sums are `increase` by the same labels.
pub(crate) mod parts {
    use super::{Selector, duration};

    /// Families only the source mode reads (zai-proxy's names).
    pub(crate) mod family {
        /// Request size histogram (bytes).
        pub(crate) const REQUEST_SIZE: &str = "zai_proxy_request_size_bytes";
        /// Response size histogram (bytes).
        pub(crate) const RESPONSE_SIZE: &str = "zai_proxy_response_size_bytes";
        /// Rate limit adjustments by `direction`.
        pub(crate) const ADJUSTMENTS: &str = "zai_proxy_rate_limit_adjustments_total";
        /// Rate-limiter wait histogram (seconds) by `client` (the caller bucket).
        pub(crate) const RATE_LIMIT_WAIT: &str = "zai_proxy_rate_limit_wait_seconds";
        /// Quota gauges by `window`, `limit_type`, and the block's flags: `(family, part)`, the
        /// part naming the field it fills.
        pub(crate) const QUOTA: [(&str, &str); 6] = [
            ("zai_proxy_quota_usage_ratio", "usage"),
            ("zai_proxy_quota_remaining_ratio", "remaining"),
            ("zai_proxy_quota_reset_time_seconds", "reset"),
            ("zai_proxy_quota_sample_age_seconds", "age"),
            ("zai_proxy_quota_gate_open", "gate"),
            ("zai_proxy_quota_rate_cap", "rate_cap"),
        ];
    }

    /// Per-second rate of `family` (with `extra` matchers) over `range_ms`, summed by `by`.
    pub(crate) fn rate_by(family: &str, sel: &Selector, extra: &[&str], by: &str, range_ms: i64) -> String {
        format!("sum by ({by}) (rate({family}{}[{}]))", sel.render(extra), duration(range_ms))
    }

    /// Increase of `family` over `range_ms`, summed by `by`: a window's sums.
    pub(crate) fn increase_by(family: &str, sel: &Selector, extra: &[&str], by: &str, range_ms: i64) -> String {
        format!("sum by ({by}) (increase({family}{}[{}]))", sel.render(extra), duration(range_ms))
    }

    /// A ratio of two rates (`x_sum` over `x_count`: a mean size), per variant; no
    /// observations give no value (`NaN`), never 0.
    pub(crate) fn mean_of(histogram: &str, sel: &Selector, range_ms: i64) -> String {
        format!(
            "{} / {}",
            rate_by(&format!("{histogram}_sum"), sel, &[], "variant", range_ms),
            rate_by(&format!("{histogram}_count"), sel, &[], "variant", range_ms)
        )
    }

    /// A gauge summed over pods and time-weighted over buckets of `width_ms`: the average over
    /// the bucket's instants every `res_ms` (the last one at the bucket's end) of each pod's
    /// latest value within `lookback_ms`, absent pods counting 0. `res_ms` divides `width_ms`.
    pub(crate) fn gauge_sum(family: &str, sel: &Selector, width_ms: i64, res_ms: i64, lookback_ms: i64) -> String {
        let n = (width_ms / res_ms.max(1)).max(1);
        let inner =
            format!("sum by (variant) (last_over_time({family}{}[{}]))", sel.render(&[]), duration(lookback_ms));
        if n == 1 {
            return inner;
        }
        format!("sum_over_time(({inner})[{}:{}]) / {n}", duration(width_ms - 1), duration(res_ms))
    }

    /// The quota block's gauges, the freshest value of each pod within `lookback_ms`, highest
    /// over pods, tagged with the part they fill (`part`), by `window` and `limit_type`.
    pub(crate) fn quota(sel: &Selector, lookback_ms: i64) -> String {
        let l = duration(lookback_ms);
        let each: Vec<String> = family::QUOTA
            .iter()
            .map(|(f, part)| {
                format!("label_replace(last_over_time({f}{}[{l}]), \"part\", \"{part}\", \"\", \"\")", sel.render(&[]))
            })
            .collect();
        format!("max by (variant, part, window, limit_type) ({})", each.join(" or "))
    }

    /// Pods (instances) of each variant that reported within `lookback_ms`.
    pub(crate) fn pods(sel: &Selector, lookback_ms: i64) -> String {
        format!(
            "count by (variant) (max by (variant, job, instance) (last_over_time({}{}[{}])))",
            super::family::BUILD_INFO,
            sel.render(&[]),
            duration(lookback_ms)
        )
    }

    /// When each `by` group's first sample within `range_ms` was taken (Unix seconds), looked
    /// at every `res_ms`: where a window's data starts, when a version was first seen.
    pub(crate) fn first_seen(family: &str, sel: &Selector, by: &str, range_ms: i64, res_ms: i64) -> String {
        format!(
            "min by ({by}) (min_over_time(timestamp({family}{})[{}:{}]))",
            sel.render(&[]),
            duration(range_ms),
            duration(res_ms)
        )
    }

    /// The timestamp of the newest sample of `family` within `range_ms`, by `by`, from instants
    /// every `res_ms`: which version a variant reports last.
    pub(crate) fn last_seen(family: &str, sel: &Selector, by: &str, range_ms: i64, res_ms: i64) -> String {
        format!(
            "max by ({by}) (max_over_time(timestamp({family}{})[{}:{}]))",
            sel.render(&[]),
            duration(range_ms),
            duration(res_ms)
        )
    }

    /// Every version each pod reported within `lookback_ms`: the pods zai-dash lists, their
    /// variant and version.
    pub(crate) fn pod_versions(lookback_ms: i64) -> String {
        format!(
            "max by (job, instance, variant, version) (last_over_time({}[{}]))",
            super::family::BUILD_INFO,
            duration(lookback_ms)
        )
    }

    /// Variants with a pod that reported within `lookback_ms`.
    pub(crate) fn variants(lookback_ms: i64) -> String {
        format!("count by (variant) (last_over_time({}[{}]))", super::family::BUILD_INFO, duration(lookback_ms))
    }

    /// When each target's last successful scrape was taken (Unix seconds), within
    /// `lookback_ms`, looked at every `res_ms`; only for targets whose last scrape failed.
    pub(crate) fn last_success(lookback_ms: i64, res_ms: i64) -> String {
        format!(
            "max by (job, instance) (last_over_time(timestamp(up == 1)[{}:{}])) and on (job, instance) (up == 0)",
            duration(lookback_ms),
            duration(res_ms)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_windows_render_as_promql() {
        assert_eq!(req_rate(&Selector::all(), 60_000), "sum by (variant) (rate(zai_proxy_requests_total[1m]))");
        assert_eq!(
            error_rate_pct(&Selector::variant("canary"), 300_000),
            "100 * sum by (variant) (increase(zai_proxy_requests_total{status_code=~\"5..\",variant=\"canary\"}[5m])) \
             / sum by (variant) (increase(zai_proxy_requests_total{variant=\"canary\"}[5m]))"
        );
        assert_eq!(
            quantile_ms(0.95, family::DURATION, &Selector::all(), 5_000),
            "1000 * histogram_quantile(0.95, sum by (variant, le) (rate(zai_proxy_request_duration_seconds_bucket[5s])))"
        );
        assert_eq!(
            gauge(family::MAX_WORKERS, &Selector::all(), 60_000, 5_000),
            "avg_over_time((sum by (variant) (zai_proxy_max_workers))[1m:5s])"
        );
        assert_eq!(
            retry_rate(&Selector::all(), 3_600_000),
            "sum by (variant) (rate(zai_proxy_retry_attempts_total{reason!=\"retry\"}[1h]))"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let sel = Selector {
            variant: Some("a\"b".into()),
            matchers: vec![("instance".into(), "x\\y".into())],
            ..Selector::default()
        };
        assert_eq!(sel.render(&[]), "{variant=\"a\\\"b\",instance=\"x\\\\y\"}");
    }

    #[test]
    fn dashboard_variables_fit_as_patterns_and_windows() {
        let sel = Selector::patterns(&[("variant", "$variant"), ("instance", "$pod")]);
        assert_eq!(
            over::status_class_rate('5', &sel, "$__rate_interval"),
            "sum by (variant) (rate(zai_proxy_requests_total{status_code=~\"5..\",variant=~\"$variant\",instance=~\"$pod\"}[$__rate_interval]))"
        );
        assert_eq!(
            over::gauge(family::CONCURRENT, &sel, "$__rate_interval", "$__interval"),
            "avg_over_time((sum by (variant) (zai_proxy_concurrent_requests{variant=~\"$variant\",instance=~\"$pod\"}))[$__rate_interval:$__interval])"
        );
        assert_eq!(
            cost_per_hour(&Selector::all(), 60_000),
            "3600 * sum by (variant) (rate(zai_proxy_estimated_cost_usd_total[1m]))"
        );
        assert_eq!(
            pods(&Selector::patterns(&[("variant", "$variant")])),
            "zai_proxy_build_info{variant=~\"$variant\"}"
        );
    }

    #[test]
    fn the_canary_rule_reads_zai_dashs_verdict_instead_of_repeating_thresholds() {
        let fail = canary_verdict(VerdictLevel::Fail, &Selector::variant("canary"), "production");
        assert_eq!(
            fail,
            "label_replace(zai_dash_canary_verdict{baseline=\"production\", candidate=\"canary\"} == 2, \"variant\", \"$1\", \"candidate\", \"(.+)\")"
        );
        let warn = canary_verdict(VerdictLevel::Warn, &Selector::all(), "production");
        assert!(warn.contains("zai_dash_canary_verdict{baseline=\"production\"} >= 1"), "{warn}");
        assert_eq!(canary_gauge_value("insufficient_data"), Some(-1.0), "below every alarm level");
        assert_eq!(canary_gauge_value("warn"), Some(1.0));
    }

    #[test]
    fn durations() {
        assert_eq!(duration(7_200_000), "2h");
        assert_eq!(duration(90_000), "90s");
        assert_eq!(duration(1_500), "1500ms");
    }

    #[test]
    fn source_mode_parts_render_as_promql() {
        let mut sel = Selector::all();
        sel.matchers.push(("instance".into(), "10.0.0.5:8080".into()));
        assert_eq!(
            parts::rate_by(family::REQUESTS, &sel, &[], "variant, status_code", 2_000),
            "sum by (variant, status_code) (rate(zai_proxy_requests_total{instance=\"10.0.0.5:8080\"}[2s]))"
        );
        assert_eq!(
            parts::gauge_sum(family::MAX_WORKERS, &Selector::all(), 20_000, 2_000, 1_999),
            "sum_over_time((sum by (variant) (last_over_time(zai_proxy_max_workers[1999ms])))[19999ms:2s]) / 10"
        );
        assert_eq!(
            parts::gauge_sum(family::MAX_WORKERS, &Selector::all(), 5_000, 5_000, 9_999),
            "sum by (variant) (last_over_time(zai_proxy_max_workers[9999ms]))",
            "one instant per bucket: no subquery"
        );
        assert!(parts::quota(&Selector::all(), 1_999).starts_with(
            "max by (variant, part, window, limit_type) (label_replace(last_over_time(zai_proxy_quota_usage_ratio[1999ms]), \"part\", \"usage\", \"\", \"\") or "
        ));
        assert_eq!(
            parts::first_seen(family::BUILD_INFO, &Selector::variant("canary"), "variant", 60_000, 2_000),
            "min by (variant) (min_over_time(timestamp(zai_proxy_build_info{variant=\"canary\"})[1m:2s]))"
        );
    }
}
