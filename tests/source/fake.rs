//! zai-proxy pods on loopback whose traffic and gauges never stand still.
//!
//! Every counter is the integral of a rate that swings like a sine wave around its mean, each
//! with its own period (none a multiple of the 2 s point width) and a phase per pod, so two
//! neighbouring buckets never hold the same numbers and a bucket read one scrape early, late or
//! short gives other numbers. 2xx requests are a fast and a slow population, each with its own
//! latency, token and size profile, whose mix changes over time: percentiles, token rates and
//! size averages move too. Gauges step on their own clocks (every 330 ms, 1.7 s, ...), quota
//! ratios drift. The values need not be realistic, only exactly what an engine scraped: the test
//! compares zai-dash with the engine, never with this model.
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

impl PodSpec {
    /// The whole exposition at wall time `t_ms`.
    pub fn render(&self, t_ms: i64) -> String {
        let t = seconds(t_ms);
        let (s, ph, v) = (self.scale, self.phase, self.variant);
        let n = |w: Wave| s * w.count(t, ph);
        let fast = n(Wave::new(14.0, 9.0, 7.3));
        let slow = n(Wave::new(5.0, 4.0, 11.9));
        let mut codes = vec![
            ("429", n(Wave::new(1.0, 0.8, 5.1))),
            ("500", self.errors * n(Wave::new(0.6, 0.5, 9.7))),
            ("503", self.errors * n(Wave::new(0.3, 0.25, 4.3))),
        ];
        if let Some(code) = self.extra_code {
            codes.push((code, n(Wave::new(0.4, 0.3, 6.1))));
        }
        let failed: f64 = codes.iter().map(|c| c.1).sum();
        let path = "method=\"POST\",path=\"/v1/messages\"";
        let mut families = Vec::new();

        let mut requests = Family::new("zai_proxy_requests_total", "counter");
        let mut duration = Family::new("zai_proxy_request_duration_seconds", "histogram");
        requests.add(format!("{path},status_code=\"200\",variant=\"{v}\""), fast + slow);
        duration.histogram(
            &format!("{path},status_code=\"200\",variant=\"{v}\""),
            &LATENCY_BOUNDS,
            &[(fast, FAST), (slow, SLOW)],
        );
        for (code, count) in &codes {
            let labels = format!("{path},status_code=\"{code}\",variant=\"{v}\"");
            requests.add(labels.clone(), *count);
            duration.histogram(&labels, &LATENCY_BOUNDS, &[(*count, FAILED)]);
        }
        families.extend([requests, duration]);

        let mut tokens = Family::new("zai_proxy_tokens_total", "counter");
        let mut cost = Family::new("zai_proxy_estimated_cost_usd_total", "counter");
        let mut ttft = Family::new("zai_proxy_time_to_first_token_seconds", "histogram");
        let mut tpot = Family::new("zai_proxy_time_per_output_token_seconds", "histogram");
        for (i, (model, share)) in self.models.iter().enumerate() {
            let (f, sl) = (fast * share, slow * share);
            let per_fast = [900.0, 250.0, 600.0, 30.0].map(|x| x / (1.0 + i as f64));
            let per_slow = [4000.0, 1200.0, 2500.0, 200.0].map(|x| x / (1.0 + i as f64));
            let peak_share = if i == 0 { 0.3 } else { 0.0 };
            for (d, dir) in DIRECTIONS.iter().enumerate() {
                for (tier, tier_share, price) in [("off_peak", 1.0 - peak_share, 1.0), ("peak", peak_share, 2.0)] {
                    if tier_share > 0.0 {
                        let labels =
                            format!("direction=\"{dir}\",model=\"{model}\",pricing_tier=\"{tier}\",variant=\"{v}\"");
                        let count = (f * per_fast[d] + sl * per_slow[d]) * tier_share;
                        tokens.add(labels.clone(), count);
                        cost.add(labels, count * PRICES[d] * price);
                    }
                }
            }
            let labels = format!("model=\"{model}\",variant=\"{v}\"");
            ttft.histogram(&labels, &TTFT_BOUNDS, &[(f / 2.0, TTFT_FAST), (sl / 2.0, TTFT_SLOW)]);
            tpot.histogram(&labels, &TPOT_BOUNDS, &[(f / 2.0, TPOT_FAST), (sl / 2.0, TPOT_SLOW)]);
        }
        families.extend([tokens, cost, ttft, tpot]);

        let mut sizes = Family::new("zai_proxy_request_size_bytes", "histogram");
        let all = [(fast, 8_000.0), (slow, 30_000.0), (failed, 2_000.0)];
        sizes.add(format!("{path},variant=\"{v}\",le=\"+Inf\""), fast + slow + failed);
        sizes.add(format!("@sum{path},variant=\"{v}\""), all.iter().map(|(c, b)| c * b).sum());
        sizes.add(format!("@count{path},variant=\"{v}\""), fast + slow + failed);
        let mut responses = Family::new("zai_proxy_response_size_bytes", "histogram");
        let labels = format!("{path},status_code=\"200\",variant=\"{v}\"");
        responses.add(format!("{labels},le=\"+Inf\""), fast + slow);
        responses.add(format!("@sum{labels}"), fast * 1_500.0 + slow * 6_000.0);
        responses.add(format!("@count{labels}"), fast + slow);
        families.extend([sizes, responses]);

        let counter = |name, pairs: Vec<(String, Wave)>| {
            let mut f = Family::new(name, "counter");
            for (labels, w) in pairs {
                f.add(labels, n(w));
            }
            f
        };
        let (retry_429, retry_net) = (Wave::new(0.6, 0.5, 8.9), Wave::new(0.2, 0.15, 3.7));
        let mut retries = counter(
            "zai_proxy_retry_attempts_total",
            vec![
                (format!("reason=\"429\",variant=\"{v}\""), retry_429),
                (format!("reason=\"network_error\",variant=\"{v}\""), retry_net),
            ],
        );
        // zai-proxy also counts every retry under the generic reason.
        retries.add(format!("reason=\"retry\",variant=\"{v}\""), n(retry_429) + n(retry_net));
        families.extend([
            counter(
                "zai_proxy_rate_limit_rejections_total",
                vec![(format!("client=\"source-7\",variant=\"{v}\""), Wave::new(0.4, 0.3, 6.7))],
            ),
            retries,
            counter(
                "zai_proxy_upstream_errors_total",
                vec![
                    (format!("error_type=\"429\",variant=\"{v}\""), Wave::new(0.5, 0.4, 7.9)),
                    (format!("error_type=\"timeout\",variant=\"{v}\""), Wave::new(0.15, 0.1, 2.9)),
                ],
            ),
            counter(
                "zai_proxy_rate_limit_adjustments_total",
                vec![
                    (format!("direction=\"increase\",variant=\"{v}\""), Wave::new(0.1, 0.08, 12.7)),
                    (format!("direction=\"decrease\",variant=\"{v}\""), Wave::new(0.05, 0.04, 10.1)),
                    (format!("direction=\"probe\",variant=\"{v}\""), Wave::new(0.02, 0.01, 5.9)),
                ],
            ),
        ]);
        families.extend(self.gauges(t_ms));
        expose(&families)
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
        let concurrent = self.concurrent_base + step(330, &CONCURRENT_STEPS);
        let labels = format!("variant=\"{v}\"");
        let mut families = vec![
            one(
                "zai_proxy_build_info",
                format!("build_time=\"x\",commit=\"y\",variant=\"{v}\",version=\"{}\"", self.version),
                1.0,
            ),
            one("zai_proxy_concurrent_requests", labels.clone(), concurrent),
            one("zai_proxy_max_workers", labels.clone(), self.max_workers + step(1_300, &WORKER_STEPS)),
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
