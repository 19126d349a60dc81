//! zai-proxy pods on loopback whose traffic and gauges never stand still.
//!
//! Every counter is the integral of a rate that swings like a sine wave around its mean, each
//! with its own period (none a multiple of the 2 s point width) and a phase per pod, so two
//! neighbouring buckets never hold the same numbers and a bucket read one scrape early, late or
//! short gives other numbers. 2xx requests are a fast and a slow population, each with its own
//! latency, token and size profile, whose mix changes over time: percentiles, token rates and
//! size averages move too. Gauges step on their own clocks (every 330 ms, 1.3 s, ...) and
//! drift, and so do the quota ratios. The values need not be realistic, only exactly what an
//! engine scraped: the test compares zai-dash with the engine, never with this model.
//!
//! A pod answers 503 before `up_from_ms` and from `down_from_ms` on ([`Life`]), so pods join
//! and leave in the middle of the compared window (a variant's pod count and summed gauges
//! change there, a status code appears).

use std::f64::consts::TAU;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zai_dash::clock::{Clock, SystemClock};

/// Request duration bounds of zai-proxy (seconds).
const LATENCY_BOUNDS: [f64; 15] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Time-to-first-token bounds.
const TTFT_BOUNDS: [f64; 14] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0];
/// Time-per-output-token bounds.
const TPOT_BOUNDS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
const DIRECTIONS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];
/// USD per token per direction, off-peak; peak is double.
const PRICES: [f64; 4] = [0.6e-6, 2.2e-6, 0.11e-6, 0.0];

/// A rate swinging around `mean` by `amp` (< `mean`, so counters only grow) every `period_s`.
#[derive(Debug, Clone, Copy)]
struct Wave {
    mean: f64,
    amp: f64,
    period_s: f64,
}

impl Wave {
    const fn new(mean: f64, amp: f64, period_s: f64) -> Self {
        Self { mean, amp, period_s }
    }

    /// Events from 0 to `t` seconds (the rate's integral), for a pod shifted by `phase`.
    fn count(self, t: f64, phase: f64) -> f64 {
        let w = TAU / self.period_s;
        self.mean * t + self.amp / w * (phase.cos() - (w * t + phase).cos())
    }
}

/// Share of observations at or below each bound: `(bound, share)`, shares summing to 1.
type Mix = &'static [(f64, f64)];

const FAST: Mix = &[(0.1, 0.2), (0.25, 0.5), (0.5, 0.3)];
const SLOW: Mix = &[(1.0, 0.2), (2.5, 0.5), (5.0, 0.2), (10.0, 0.1)];
const FAILED: Mix = &[(0.05, 0.6), (0.1, 0.4)];
const TTFT_FAST: Mix = &[(0.25, 0.4), (0.5, 0.4), (1.0, 0.2)];
const TTFT_SLOW: Mix = &[(1.0, 0.3), (2.0, 0.4), (5.0, 0.3)];
const TPOT_FAST: Mix = &[(0.005, 0.5), (0.01, 0.5)];
const TPOT_SLOW: Mix = &[(0.025, 0.6), (0.05, 0.4)];

/// Seconds since the pods' common birth, an hour before the first exposition (counters hold a
/// history; the quota drift is the same for every pod).
fn seconds(t_ms: i64) -> f64 {
    static BORN_MS: OnceLock<i64> = OnceLock::new();
    (t_ms - *BORN_MS.get_or_init(|| SystemClock.now_ms() - 3_600_000)) as f64 / 1000.0
}

fn cumulative(mix: Mix, le: f64) -> f64 {
    mix.iter().filter(|(b, _)| *b <= le).map(|(_, s)| s).sum::<f64>().min(1.0)
}

/// What one pod serves.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub variant: &'static str,
    pub version: &'static str,
    /// Multiplies every rate.
    pub scale: f64,
    /// Shifts every wave, so the pods of a variant do not swing in step.
    pub phase: f64,
    /// Multiplies the 5xx rates.
    pub errors: f64,
    /// Models and their share of the 2xx requests.
    pub models: [(&'static str, f64); 2],
    /// A status code only this pod answers (a code that appears when the pod joins).
    pub extra_code: Option<&'static str>,
    pub concurrent_base: f64,
    pub max_workers: f64,
}

/// In-flight requests above `concurrent_base`, one value per 330 ms.
const CONCURRENT_STEPS: [f64; 7] = [0.0, 3.0, 1.0, 4.0, 2.0, 5.0, 1.0];
/// Max workers above the pod's own, one value per 1.3 s.
const WORKER_STEPS: [f64; 5] = [0.0, 2.0, -1.0, 3.0, 1.0];

/// One family as exposed: name, type, and `(labels, value)` samples.
struct Family {
    name: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str) -> Self {
        Self { name, kind, samples: Vec::new() }
    }

    fn add(&mut self, labels: String, value: f64) {
        self.samples.push((labels, value));
    }

    /// A histogram of populations `(count, mix)` with cumulative buckets, sum and count.
    fn histogram(&mut self, labels: &str, bounds: &[f64], parts: &[(f64, Mix)]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for le in bounds.iter().copied().chain([f64::INFINITY]) {
            let c: f64 = parts.iter().map(|(n, mix)| n * cumulative(mix, le)).sum();
            let le = if le.is_infinite() { "+Inf".to_owned() } else { le.to_string() };
            self.samples.push((format!("{labels}{sep}le=\"{le}\""), c));
        }
        let sum = parts.iter().map(|(n, mix)| n * mean(mix)).sum();
        self.samples.push((format!("@sum{labels}"), sum));
        self.samples.push((format!("@count{labels}"), parts.iter().map(|(n, _)| n).sum()));
    }
}

fn mean(mix: Mix) -> f64 {
    let mut lower = 0.0;
    mix.iter()
        .map(|&(le, share)| {
            let m = share * (lower + le) / 2.0;
            lower = le;
            m
        })
        .sum()
}

/// Requests so far (since the pods' birth) of one pod, by population.
struct Traffic {
    /// Fast and slow 2xx requests.
    fast: f64,
    slow: f64,
    /// Other status codes and their requests.
    codes: Vec<(&'static str, f64)>,
}

impl Traffic {
    fn failed(&self) -> f64 {
        self.codes.iter().map(|c| c.1).sum()
    }
}

const PATH: &str = "method=\"POST\",path=\"/v1/messages\"";

impl PodSpec {
    /// The whole exposition at wall time `t_ms`.
    pub fn render(&self, t_ms: i64) -> String {
        let traffic = self.traffic(t_ms);
        let mut families = Vec::new();
        families.extend(self.requests(&traffic));
        families.extend(self.models(&traffic));
        families.extend(self.sizes(&traffic));
        families.extend(self.other_counters(t_ms));
        families.extend(self.gauges(t_ms));
        expose(&families)
    }

    /// Events of `wave` so far at `t_ms`, for this pod.
    fn count(&self, wave: Wave, t_ms: i64) -> f64 {
        self.scale * wave.count(seconds(t_ms), self.phase)
    }

    fn traffic(&self, t_ms: i64) -> Traffic {
        let n = |w| self.count(w, t_ms);
        let mut codes = vec![
            ("429", n(Wave::new(1.0, 0.8, 5.1))),
            ("500", self.errors * n(Wave::new(0.6, 0.5, 9.7))),
            ("503", self.errors * n(Wave::new(0.3, 0.25, 4.3))),
        ];
        if let Some(code) = self.extra_code {
            codes.push((code, n(Wave::new(0.4, 0.3, 6.1))));
        }
        Traffic { fast: n(Wave::new(14.0, 9.0, 7.3)), slow: n(Wave::new(5.0, 4.0, 11.9)), codes }
    }

    /// Requests by status code and their duration histogram.
    fn requests(&self, tr: &Traffic) -> [Family; 2] {
        let v = self.variant;
        let mut requests = Family::new("zai_proxy_requests_total", "counter");
        let mut duration = Family::new("zai_proxy_request_duration_seconds", "histogram");
        let ok = format!("{PATH},status_code=\"200\",variant=\"{v}\"");
        requests.add(ok.clone(), tr.fast + tr.slow);
        duration.histogram(&ok, &LATENCY_BOUNDS, &[(tr.fast, FAST), (tr.slow, SLOW)]);
        for (code, count) in &tr.codes {
            let labels = format!("{PATH},status_code=\"{code}\",variant=\"{v}\"");
            requests.add(labels.clone(), *count);
            duration.histogram(&labels, &LATENCY_BOUNDS, &[(*count, FAILED)]);
        }
        [requests, duration]
    }

    /// Tokens and cost by model, direction and pricing tier; TTFT and TPOT by model (half the
    /// requests stream).
    fn models(&self, tr: &Traffic) -> [Family; 4] {
        let v = self.variant;
        let mut tokens = Family::new("zai_proxy_tokens_total", "counter");
        let mut cost = Family::new("zai_proxy_estimated_cost_usd_total", "counter");
        let mut ttft = Family::new("zai_proxy_time_to_first_token_seconds", "histogram");
        let mut tpot = Family::new("zai_proxy_time_per_output_token_seconds", "histogram");
        for (i, (model, share)) in self.models.iter().enumerate() {
            let (fast, slow) = (tr.fast * share, tr.slow * share);
            let per_fast = [900.0, 250.0, 600.0, 30.0].map(|x| x / (1.0 + i as f64));
            let per_slow = [4000.0, 1200.0, 2500.0, 200.0].map(|x| x / (1.0 + i as f64));
            let peak_share = if i == 0 { 0.3 } else { 0.0 };
            for (d, dir) in DIRECTIONS.iter().enumerate() {
                for (tier, tier_share, price) in [("off_peak", 1.0 - peak_share, 1.0), ("peak", peak_share, 2.0)] {
                    if tier_share > 0.0 {
                        let labels =
                            format!("direction=\"{dir}\",model=\"{model}\",pricing_tier=\"{tier}\",variant=\"{v}\"");
                        let count = (fast * per_fast[d] + slow * per_slow[d]) * tier_share;
                        tokens.add(labels.clone(), count);
                        cost.add(labels, count * PRICES[d] * price);
                    }
                }
            }
            let labels = format!("model=\"{model}\",variant=\"{v}\"");
            ttft.histogram(&labels, &TTFT_BOUNDS, &[(fast / 2.0, TTFT_FAST), (slow / 2.0, TTFT_SLOW)]);
            tpot.histogram(&labels, &TPOT_BOUNDS, &[(fast / 2.0, TPOT_FAST), (slow / 2.0, TPOT_SLOW)]);
        }
        [tokens, cost, ttft, tpot]
    }

    /// Request sizes (all requests) and response sizes (2xx), each with its `+Inf` bucket only.
    fn sizes(&self, tr: &Traffic) -> [Family; 2] {
        let v = self.variant;
        let all = tr.fast + tr.slow + tr.failed();
        let mut sizes = Family::new("zai_proxy_request_size_bytes", "histogram");
        sizes.add(format!("{PATH},variant=\"{v}\",le=\"+Inf\""), all);
        sizes
            .add(format!("@sum{PATH},variant=\"{v}\""), tr.fast * 8_000.0 + tr.slow * 30_000.0 + tr.failed() * 2_000.0);
        sizes.add(format!("@count{PATH},variant=\"{v}\""), all);
        let mut responses = Family::new("zai_proxy_response_size_bytes", "histogram");
        let labels = format!("{PATH},status_code=\"200\",variant=\"{v}\"");
        responses.add(format!("{labels},le=\"+Inf\""), tr.fast + tr.slow);
        responses.add(format!("@sum{labels}"), tr.fast * 1_500.0 + tr.slow * 6_000.0);
        responses.add(format!("@count{labels}"), tr.fast + tr.slow);
        [sizes, responses]
    }

    /// Rejections, retries (also under the generic `reason="retry"`, as zai-proxy counts
    /// them), upstream errors and rate limit adjustments.
    fn other_counters(&self, t_ms: i64) -> [Family; 4] {
        let v = self.variant;
        let counter = |name, pairs: &[(&str, Wave)]| {
            let mut f = Family::new(name, "counter");
            for (labels, w) in pairs {
                f.add(format!("{labels},variant=\"{v}\""), self.count(*w, t_ms));
            }
            f
        };
        let (retry_429, retry_net) = (Wave::new(0.6, 0.5, 8.9), Wave::new(0.2, 0.15, 3.7));
        let mut retries = counter(
            "zai_proxy_retry_attempts_total",
            &[("reason=\"429\"", retry_429), ("reason=\"network_error\"", retry_net)],
        );
        let generic = self.count(retry_429, t_ms) + self.count(retry_net, t_ms);
        retries.add(format!("reason=\"retry\",variant=\"{v}\""), generic);
        [
            counter("zai_proxy_rate_limit_rejections_total", &[("client=\"source-7\"", Wave::new(0.4, 0.3, 6.7))]),
            retries,
            counter(
                "zai_proxy_upstream_errors_total",
                &[
                    ("error_type=\"429\"", Wave::new(0.5, 0.4, 7.9)),
                    ("error_type=\"timeout\"", Wave::new(0.15, 0.1, 2.9)),
                ],
            ),
            counter(
                "zai_proxy_rate_limit_adjustments_total",
                &[
                    ("direction=\"increase\"", Wave::new(0.1, 0.08, 12.7)),
                    ("direction=\"decrease\"", Wave::new(0.05, 0.04, 10.1)),
                    ("direction=\"probe\"", Wave::new(0.02, 0.01, 5.9)),
                ],
            ),
        ]
    }

    /// Build info, in-flight requests, workers, the rate limit and the quota block at `t_ms`.
    fn gauges(&self, t_ms: i64) -> Vec<Family> {
        let v = self.variant;
        let t = seconds(t_ms);
        let one = |name, labels: String, value| {
            let mut f = Family::new(name, "gauge");
            f.add(labels, value);
            f
        };
        // Each pod steps through the table from its own place.
        let offset = (self.phase * 10.0) as i64;
        let step =
            |every_ms: i64, steps: &[f64]| steps[(t_ms / every_ms + offset).rem_euclid(steps.len() as i64) as usize];
        // Steps plus a slow drift that is not a whole number, so that no two buckets' averages
        // coincide (a whole-number gauge averaged over five instants often would).
        let drift = |period_s: f64| (TAU * t / period_s + self.phase).sin();
        let concurrent = self.concurrent_base + step(330, &CONCURRENT_STEPS) + 0.7 * drift(13.7);
        let labels = format!("variant=\"{v}\"");
        let mut families = vec![
            one(
                "zai_proxy_build_info",
                format!("build_time=\"x\",commit=\"y\",variant=\"{v}\",version=\"{}\"", self.version),
                1.0,
            ),
            one("zai_proxy_concurrent_requests", labels.clone(), concurrent),
            one(
                "zai_proxy_max_workers",
                labels.clone(),
                self.max_workers + step(1_300, &WORKER_STEPS) + 0.3 * drift(17.3),
            ),
            one(
                "zai_proxy_rate_limit_requests_per_second",
                labels.clone(),
                self.scale * (20.0 + 6.0 * (TAU * t / 9.1 + self.phase).sin()),
            ),
        ];
        // The quota is the account's: every pod of a variant reports the same drift.
        let five_hour = 0.3 + 0.2 * (TAU * t / 13.3).sin();
        let weekly = 0.42 + 0.1 * (TAU * t / 17.9).sin();
        let quota = |name, rows: [(&str, &str, f64); 3]| {
            let mut f = Family::new(name, "gauge");
            for (limit, window, value) in rows {
                f.add(format!("limit_type=\"{limit}\",variant=\"{v}\",window=\"{window}\""), value);
            }
            f
        };
        families.extend([
            quota(
                "zai_proxy_quota_usage_ratio",
                [
                    ("tokens_limit", "five_hour", five_hour),
                    ("credit_limit", "weekly", weekly),
                    ("tokens_limit", "weekly", 0.9),
                ],
            ),
            quota(
                "zai_proxy_quota_remaining_ratio",
                [
                    ("tokens_limit", "five_hour", 1.0 - five_hour),
                    ("credit_limit", "weekly", 1.0 - weekly),
                    ("tokens_limit", "weekly", 0.1),
                ],
            ),
            quota(
                "zai_proxy_quota_reset_time_seconds",
                [
                    ("tokens_limit", "five_hour", 1.788_7e9 + 3_600.0 * (t / 9.0).floor()),
                    ("credit_limit", "weekly", 1.788_9e9),
                    ("tokens_limit", "weekly", 1.788_9e9),
                ],
            ),
            one("zai_proxy_quota_sample_age_seconds", labels.clone(), 5.0 + (t * 0.5 + self.phase).rem_euclid(20.0)),
            one("zai_proxy_quota_gate_open", labels, if (t / 3.1).floor().rem_euclid(4.0) == 0.0 { 0.0 } else { 1.0 }),
        ]);
        families
    }
}

/// The text format: `# TYPE` then samples; a histogram's `@sum`/`@count` rows become
/// `_sum`/`_count`, its other rows `_bucket`.
fn expose(families: &[Family]) -> String {
    let mut out = String::with_capacity(64 * 1024);
    for f in families {
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (labels, value) in &f.samples {
            let (suffix, labels) = match (f.kind, labels.strip_prefix("@sum"), labels.strip_prefix("@count")) {
                ("histogram", Some(l), _) => ("_sum", l),
                ("histogram", _, Some(l)) => ("_count", l),
                ("histogram", _, _) => ("_bucket", labels.as_str()),
                _ => ("", labels.as_str()),
            };
            let _ = writeln!(out, "{}{suffix}{{{labels}}} {value}", f.name);
        }
    }
    out
}

/// When a pod answers: 503 before `up_from_ms` and from `down_from_ms` on.
#[derive(Debug, Clone, Copy)]
pub struct Life {
    pub up_from_ms: i64,
    pub down_from_ms: i64,
}

impl Life {
    pub const ALWAYS: Life = Life { up_from_ms: i64::MIN, down_from_ms: i64::MAX };
    pub const NOT_YET: Life = Life { up_from_ms: i64::MAX, down_from_ms: i64::MAX };
}

/// A running fake pod.
pub struct Pod {
    /// `host:port`, the engines' `instance`.
    pub instance: String,
    pub url: String,
    pub life: Arc<Mutex<Life>>,
    cancel: CancellationToken,
}

#[derive(Clone)]
struct PodState {
    spec: Arc<PodSpec>,
    life: Arc<Mutex<Life>>,
}

async fn serve(State(s): State<PodState>) -> Response {
    let t = SystemClock.now_ms();
    let life = *s.life.lock().unwrap();
    if t < life.up_from_ms || t >= life.down_from_ms {
        return (StatusCode::SERVICE_UNAVAILABLE, "not serving\n").into_response();
    }
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], s.spec.render(t)).into_response()
}

impl Pod {
    pub async fn start(spec: PodSpec, life: Life) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let instance = listener.local_addr().unwrap().to_string();
        let state = PodState { spec: Arc::new(spec), life: Arc::new(Mutex::new(life)) };
        let cancel = CancellationToken::new();
        let app = Router::new().fallback(serve).with_state(state.clone());
        let c = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(c.cancelled_owned()).await;
        });
        Self { url: format!("http://{instance}/metrics"), instance, life: state.life, cancel }
    }

    pub fn set_life(&self, life: Life) {
        *self.life.lock().unwrap() = life;
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
