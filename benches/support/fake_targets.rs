//! N fake zai-proxy targets in this process, for the side-by-side bench (issue 14).
//!
//! Each target is its own HTTP listener on `127.0.0.1:0` whose `GET /metrics` answers a
//! zai-proxy-like exposition (text format 0.0.4) of exactly [`SAMPLES`] samples: the real
//! `zai_proxy_*` families, HELP texts and labels of the contract (§1.2), ordered and number
//! formatted as client_golang does. Counters advance with deterministic pseudo-random traffic,
//! a few requests per 5 s step and target; every scraper that asks within one step gets the
//! same body (rendered once per step and target), so the engines store the same values.
//! Scrapes are counted per scraper, told apart by their `User-Agent`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::serve::ListenerExt;

/// Samples in every exposition.
pub const SAMPLES: usize = 128;

/// Who scraped, from the `User-Agent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scraper {
    /// `Prometheus/2.42.0`.
    Prometheus,
    /// `vm_promscrape`.
    Victoria,
    /// `zai-dash/x.y.z`.
    ZaiDash,
    /// Anything else (the bench's own checks).
    Other,
    /// Whoever asks for `/baseline/metrics` (a second zai-dash, to compare two builds).
    Baseline,
}

impl Scraper {
    fn of(ua: &str) -> Self {
        if ua.starts_with("Prometheus/") {
            Self::Prometheus
        } else if ua.starts_with("vm_promscrape") {
            Self::Victoria
        } else if ua.starts_with("zai-dash/") {
            Self::ZaiDash
        } else {
            Self::Other
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Scrapes of one target so far, per [`Scraper`].
pub type Counts = [u64; 5];

/// The running targets; they stop with the runtime that serves them.
pub struct FakeTargets {
    targets: Vec<Arc<Target>>,
    /// `host:port` of each target, in order.
    pub addrs: Vec<SocketAddr>,
}

impl FakeTargets {
    /// Binds `n` listeners on loopback and serves them on the current tokio runtime. Traffic
    /// advances every `step` from now.
    pub async fn start(n: usize, step: Duration) -> std::io::Result<Self> {
        let epoch = Instant::now();
        let mut targets = Vec::with_capacity(n);
        let mut addrs = Vec::with_capacity(n);
        for i in 0..n {
            let target = Arc::new(Target::new(i, epoch, step));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(listener.local_addr()?);
            let app = axum::Router::new()
                .route("/metrics", axum::routing::get(metrics))
                .route("/baseline/metrics", axum::routing::get(baseline_metrics))
                .with_state(target.clone());
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move { axum::serve(listener, app).await });
            targets.push(target);
        }
        Ok(Self { targets, addrs })
    }

    /// Scrapes of each target so far, per scraper.
    pub fn counts(&self) -> Vec<Counts> {
        self.targets.iter().map(|t| std::array::from_fn(|k| t.scrapes[k].load(Ordering::Relaxed))).collect()
    }
}

/// One fake target.
struct Target {
    epoch: Instant,
    step: Duration,
    scrapes: [AtomicU64; 5],
    /// The traffic up to the step of `body`, and that step's exposition.
    current: Mutex<(Traffic, u64, Bytes)>,
}

impl Target {
    fn new(index: usize, epoch: Instant, step: Duration) -> Self {
        let traffic = Traffic::new(index);
        let body = Bytes::from(traffic.render());
        Self { epoch, step, scrapes: Default::default(), current: Mutex::new((traffic, 0, body)) }
    }

    /// The exposition of the current step (advancing the traffic to it first).
    fn body(&self) -> Bytes {
        let step = (self.epoch.elapsed().as_nanos() / self.step.as_nanos().max(1)) as u64;
        let mut cur = self.current.lock().unwrap();
        let (traffic, at, body) = &mut *cur;
        if *at < step {
            while *at < step {
                traffic.step();
                *at += 1;
            }
            *body = Bytes::from(traffic.render());
        }
        body.clone()
    }
}

async fn metrics(State(target): State<Arc<Target>>, headers: HeaderMap) -> impl IntoResponse {
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    answer(&target, Scraper::of(ua))
}

async fn baseline_metrics(State(target): State<Arc<Target>>) -> impl IntoResponse {
    answer(&target, Scraper::Baseline)
}

fn answer(target: &Target, who: Scraper) -> impl IntoResponse + use<> {
    target.scrapes[who.index()].fetch_add(1, Ordering::Relaxed);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], target.body())
}

// ---------------------------------------------------------------------------------------------
// Traffic

/// splitmix64: small, fast, and the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-uniform between `lo` and `hi`.
    fn log_between(&mut self, lo: f64, hi: f64) -> f64 {
        lo * (hi / lo).powf(self.unit())
    }

    /// A whole number between `lo` and `hi`, log-uniform.
    fn count_between(&mut self, lo: f64, hi: f64) -> f64 {
        self.log_between(lo, hi).round()
    }
}

/// A histogram series: cumulative buckets, sum, count.
#[derive(Clone)]
struct Hist {
    buckets: Vec<f64>,
    sum: f64,
    count: f64,
}

impl Hist {
    fn new(bounds: &[f64]) -> Self {
        Self { buckets: vec![0.0; bounds.len()], sum: 0.0, count: 0.0 }
    }

    fn observe(&mut self, bounds: &[f64], v: f64) {
        for (b, le) in self.buckets.iter_mut().zip(bounds) {
            if v <= *le {
                *b += 1.0;
            }
        }
        self.sum += v;
        self.count += 1.0;
    }
}

const DURATION_LE: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, f64::INFINITY];
const WAIT_LE: [f64; 13] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, f64::INFINITY];
const SIZE_LE: [f64; 9] = [100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, f64::INFINITY];

const PATHS: [&str; 2] = ["/api/anthropic/v1/messages", "/v1/messages"];
/// `requests_total` series: (path index, status).
const REQUESTS: [(usize, &str); 6] = [(0, "200"), (0, "429"), (0, "502"), (0, "503"), (1, "200"), (1, "422")];
/// `request_duration_seconds` series: indices into `REQUESTS`.
const TIMED: [usize; 3] = [0, 1, 4];
const ERRORS: [&str; 4] = ["422", "429", "truncated_response", "upstream_connection"];
const RETRIES: [&str; 4] = ["429", "network_error", "retry", "truncated_response"];
const ADJUSTMENTS: [&str; 3] = ["decrease", "increase", "probe"];
const DIRECTIONS: [&str; 4] = ["cache_read", "cache_write", "input", "output"];
const MODELS: [&str; 2] = ["glm-4.5-air", "glm-4.7"];
/// USD per million tokens, per model and direction (as `DIRECTIONS`).
const PRICES: [[f64; 4]; 2] = [[0.03, 0.0, 0.2, 1.1], [0.11, 0.0, 0.6, 2.2]];
const QUOTA_WINDOWS: [(&str, &str); 2] = [("credit_limit", "weekly"), ("tokens_limit", "five_hour")];
/// Steps between two quota polls (60 s at 5 s).
const POLL_EVERY: u64 = 12;

/// One target's counters and gauges.
struct Traffic {
    rng: Rng,
    variant: &'static str,
    port_seed: u64,
    steps: u64,
    requests: [f64; 6],
    duration: [Hist; 3],
    size: Hist,
    wait: Hist,
    errors: [f64; 4],
    retries: [f64; 4],
    adjustments: [f64; 3],
    rejections: f64,
    tokens: [[f64; 4]; 2],
    cost: [[f64; 4]; 2],
    concurrent: f64,
    rate_limit: f64,
    quota_used: [f64; 2],
    quota_reset: [f64; 2],
    polls: [f64; 2],
}

impl Traffic {
    fn new(index: usize) -> Self {
        let mut rng = Rng(0x5EED_0000 + index as u64);
        // A proxy that has been up for a while: a few hundred requests behind it.
        let past = rng.count_between(200.0, 2000.0);
        let mut t = Self {
            variant: if index % 5 == 4 { "canary" } else { "production" },
            port_seed: index as u64,
            steps: 0,
            requests: [0.0; 6],
            duration: [Hist::new(&DURATION_LE), Hist::new(&DURATION_LE), Hist::new(&DURATION_LE)],
            size: Hist::new(&SIZE_LE),
            wait: Hist::new(&WAIT_LE),
            errors: [0.0; 4],
            retries: [0.0; 4],
            adjustments: [0.0; 3],
            rejections: 0.0,
            tokens: [[0.0; 4]; 2],
            cost: [[0.0; 4]; 2],
            concurrent: 0.0,
            rate_limit: 20.0,
            quota_used: [rng.unit() * 0.5, rng.unit() * 0.3],
            quota_reset: [1.7889264e9, 1.788738692e9],
            polls: [0.0, rng.count_between(10.0, 100.0)],
            rng,
        };
        for _ in 0..past as u64 {
            t.request();
        }
        t
    }

    /// One 5 s step: 0 to 4 requests, gauges moved, a quota poll every minute.
    fn step(&mut self) {
        self.steps += 1;
        let n = (self.rng.unit() * 5.0) as u64;
        for _ in 0..n {
            self.request();
        }
        self.concurrent = (self.rng.unit() * 4.0).floor();
        let r = self.rng.unit();
        if r < 0.03 {
            self.rate_limit = (self.rate_limit * 1.1).min(50.0);
            self.adjustments[1] += 1.0;
        } else if r < 0.05 {
            self.rate_limit = (self.rate_limit * 0.7).max(1.0);
            self.adjustments[0] += 1.0;
        } else if r < 0.06 {
            self.adjustments[2] += 1.0;
        }
        if self.steps.is_multiple_of(POLL_EVERY) {
            if self.rng.unit() < 0.02 {
                self.polls[0] += 1.0;
            } else {
                self.polls[1] += 1.0;
                for u in &mut self.quota_used {
                    *u = (*u + self.rng.unit() * 0.002).min(1.0);
                }
            }
        }
    }

    /// One finished request.
    fn request(&mut self) {
        let rng = &mut self.rng;
        let path = usize::from(rng.unit() < 0.15);
        let r = rng.unit();
        let series = match path {
            0 if r < 0.93 => 0,
            0 if r < 0.97 => 1,
            0 if r < 0.985 => 2,
            0 => 3,
            _ if r < 0.97 => 4,
            _ => 5,
        };
        self.requests[series] += 1.0;
        if series != 3 {
            self.wait.observe(&WAIT_LE, rng.log_between(0.0002, 3.0));
        }
        if path == 0 && series != 3 {
            self.size.observe(&SIZE_LE, rng.log_between(500.0, 2e6));
        }
        if let Some(h) = TIMED.iter().position(|&s| s == series) {
            let d = if series == 1 { rng.log_between(0.2, 8.0) } else { rng.log_between(0.3, 60.0) };
            self.duration[h].observe(&DURATION_LE, d);
        }
        match REQUESTS[series].1 {
            "200" => {
                let model = usize::from(rng.unit() < 0.8);
                let cache_read = if rng.unit() < 0.6 { rng.count_between(1000.0, 50_000.0) } else { 0.0 };
                let cache_write = if rng.unit() < 0.1 { rng.count_between(500.0, 5000.0) } else { 0.0 };
                let input = rng.count_between(300.0, 20_000.0);
                let output = rng.count_between(20.0, 2000.0);
                for (d, n) in [cache_read, cache_write, input, output].into_iter().enumerate() {
                    self.tokens[model][d] += n;
                    self.cost[model][d] += n * PRICES[model][d] / 1e6;
                }
                if rng.unit() < 0.01 {
                    self.errors[2] += 1.0;
                    self.retries[3] += 1.0;
                    self.retries[2] += 1.0;
                }
            }
            "429" => {
                self.errors[1] += 1.0;
                self.retries[0] += 1.0;
                self.retries[2] += 1.0;
            }
            "502" => {
                self.errors[3] += 1.0;
                self.retries[1] += 1.0;
                self.retries[2] += 1.0;
            }
            "503" => self.rejections += 1.0,
            _ => self.errors[0] += 1.0,
        }
    }

    /// The exposition: families sorted by name, series by label values, client_golang's
    /// number format.
    fn render(&self) -> String {
        let v = self.variant;
        let mut s = String::with_capacity(20_000);
        let family = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut s,
            "zai_proxy_build_info",
            "gauge",
            "Build information including version, variant, commit, and build time",
        );
        let commit = format!("{:016x}{:016x}{:08x}", 0x4f0c_2a9d_8e7b_6c5a_u64, self.port_seed, 0x3e2d_1c0b_u32);
        let _ = writeln!(
            s,
            "zai_proxy_build_info{{build_time=\"2026-09-04T18:22:10Z\",commit=\"{commit}\",variant=\"{v}\",version=\"1.11.1\"}} 1"
        );
        family(&mut s, "zai_proxy_concurrent_requests", "gauge", "Number of requests currently being processed");
        let _ = writeln!(s, "zai_proxy_concurrent_requests{{variant=\"{v}\"}} {}", g(self.concurrent));
        family(
            &mut s,
            "zai_proxy_estimated_cost_usd_total",
            "counter",
            "Estimated Z.AI API cost in USD by token direction, model, deployment variant, and pricing tier",
        );
        for (d, dir) in DIRECTIONS.iter().enumerate() {
            for (m, model) in MODELS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "zai_proxy_estimated_cost_usd_total{{direction=\"{dir}\",model=\"{model}\",pricing_tier=\"off_peak\",variant=\"{v}\"}} {}",
                    g(self.cost[m][d])
                );
            }
        }
        family(&mut s, "zai_proxy_max_workers", "gauge", "Maximum number of concurrent workers allowed");
        let _ = writeln!(s, "zai_proxy_max_workers{{variant=\"{v}\"}} 10");
        family(
            &mut s,
            "zai_proxy_quota_poll_total",
            "counter",
            "Quota poll outcomes by result (success, error, malformed, stale)",
        );
        let _ = writeln!(s, "zai_proxy_quota_poll_total{{result=\"error\",variant=\"{v}\"}} {}", g(self.polls[0]));
        let _ = writeln!(s, "zai_proxy_quota_poll_total{{result=\"success\",variant=\"{v}\"}} {}", g(self.polls[1]));
        let quota = |s: &mut String, name: &str, f: &dyn Fn(usize) -> f64| {
            for (k, (limit, window)) in QUOTA_WINDOWS.iter().enumerate() {
                let _ = writeln!(s, "{name}{{limit_type=\"{limit}\",variant=\"{v}\",window=\"{window}\"}} {}", g(f(k)));
            }
        };
        family(
            &mut s,
            "zai_proxy_quota_remaining_ratio",
            "gauge",
            "Remaining fraction of the provider-reported quota after no local policy adjustment",
        );
        quota(&mut s, "zai_proxy_quota_remaining_ratio", &|k| round4(1.0 - self.quota_used[k]));
        family(&mut s, "zai_proxy_quota_reset_time_seconds", "gauge", "Provider quota reset time as a Unix timestamp");
        quota(&mut s, "zai_proxy_quota_reset_time_seconds", &|k| self.quota_reset[k]);
        family(&mut s, "zai_proxy_quota_sample_age_seconds", "gauge", "Age of the last valid account quota sample");
        let age = (self.steps % POLL_EVERY) as f64 * 5.0 + 0.004;
        let _ = writeln!(s, "zai_proxy_quota_sample_age_seconds{{variant=\"{v}\"}} {}", g(age));
        family(
            &mut s,
            "zai_proxy_quota_usage_ratio",
            "gauge",
            "Normalized provider-reported quota usage ratio by window and limit type",
        );
        quota(&mut s, "zai_proxy_quota_usage_ratio", &|k| round4(self.quota_used[k]));
        family(&mut s, "zai_proxy_rate_limit_adjustments_total", "counter", "Total number of rate limit adjustments");
        for (k, dir) in ADJUSTMENTS.iter().enumerate() {
            let _ = writeln!(
                s,
                "zai_proxy_rate_limit_adjustments_total{{direction=\"{dir}\",variant=\"{v}\"}} {}",
                g(self.adjustments[k])
            );
        }
        family(
            &mut s,
            "zai_proxy_rate_limit_rejections_total",
            "counter",
            "Total number of requests rejected due to proxy capacity, by bounded source bucket",
        );
        let _ = writeln!(
            s,
            "zai_proxy_rate_limit_rejections_total{{client=\"source-43\",variant=\"{v}\"}} {}",
            g(self.rejections)
        );
        family(
            &mut s,
            "zai_proxy_rate_limit_requests_per_second",
            "gauge",
            "Current rate limit in requests per second",
        );
        let _ =
            writeln!(s, "zai_proxy_rate_limit_requests_per_second{{variant=\"{v}\"}} {}", g(round4(self.rate_limit)));
        family(
            &mut s,
            "zai_proxy_rate_limit_wait_seconds",
            "histogram",
            "Time spent waiting for the rate limiter, by bounded source bucket",
        );
        hist(
            &mut s,
            "zai_proxy_rate_limit_wait_seconds",
            &format!("client=\"source-43\",variant=\"{v}\""),
            &WAIT_LE,
            &self.wait,
        );
        family(&mut s, "zai_proxy_request_duration_seconds", "histogram", "Request duration in seconds");
        for (h, &series) in TIMED.iter().enumerate() {
            let (path, status) = REQUESTS[series];
            let labels = format!("method=\"POST\",path=\"{}\",status_code=\"{status}\",variant=\"{v}\"", PATHS[path]);
            hist(&mut s, "zai_proxy_request_duration_seconds", &labels, &DURATION_LE, &self.duration[h]);
        }
        family(&mut s, "zai_proxy_request_size_bytes", "histogram", "Request size in bytes");
        let labels = format!("method=\"POST\",path=\"{}\",variant=\"{v}\"", PATHS[0]);
        hist(&mut s, "zai_proxy_request_size_bytes", &labels, &SIZE_LE, &self.size);
        family(
            &mut s,
            "zai_proxy_requests_total",
            "counter",
            "Total number of requests by method, path, status code, and variant",
        );
        for (k, (path, status)) in REQUESTS.iter().enumerate() {
            let _ = writeln!(
                s,
                "zai_proxy_requests_total{{method=\"POST\",path=\"{}\",status_code=\"{status}\",variant=\"{v}\"}} {}",
                PATHS[*path],
                g(self.requests[k])
            );
        }
        family(&mut s, "zai_proxy_retry_attempts_total", "counter", "Total number of retry attempts");
        for (k, reason) in RETRIES.iter().enumerate() {
            let _ = writeln!(
                s,
                "zai_proxy_retry_attempts_total{{reason=\"{reason}\",variant=\"{v}\"}} {}",
                g(self.retries[k])
            );
        }
        family(
            &mut s,
            "zai_proxy_tokens_total",
            "counter",
            "Total number of tokens processed by direction (input/output), model, deployment variant, and pricing tier",
        );
        for (d, dir) in DIRECTIONS.iter().enumerate() {
            for (m, model) in MODELS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "zai_proxy_tokens_total{{direction=\"{dir}\",model=\"{model}\",pricing_tier=\"off_peak\",variant=\"{v}\"}} {}",
                    g(self.tokens[m][d])
                );
            }
        }
        family(&mut s, "zai_proxy_upstream_errors_total", "counter", "Total number of upstream errors by type");
        for (k, kind) in ERRORS.iter().enumerate() {
            let _ = writeln!(
                s,
                "zai_proxy_upstream_errors_total{{error_type=\"{kind}\",variant=\"{v}\"}} {}",
                g(self.errors[k])
            );
        }
        family(
            &mut s,
            "zai_proxy_worker_utilization_ratio",
            "gauge",
            "Current worker utilization ratio (concurrent_requests/max_workers)",
        );
        let _ = writeln!(s, "zai_proxy_worker_utilization_ratio{{variant=\"{v}\"}} {}", g(self.concurrent / 10.0));
        s
    }
}

fn hist(s: &mut String, name: &str, labels: &str, bounds: &[f64], h: &Hist) {
    for (le, n) in bounds.iter().zip(&h.buckets) {
        let _ = writeln!(s, "{name}_bucket{{{labels},le=\"{}\"}} {}", g(*le), g(*n));
    }
    let _ = writeln!(s, "{name}_sum{{{labels}}} {}", g(h.sum));
    let _ = writeln!(s, "{name}_count{{{labels}}} {}", g(h.count));
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)`, as client_golang prints values: the shortest
/// digits, in exponent form when the decimal exponent is below -4 or at least 6 (`1e+06`,
/// `2.345678e+06`, `1e-05`), `+Inf` for infinity.
fn g(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v.is_nan() {
        return "NaN".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let e = format!("{v:e}");
    let (mantissa, exp) = e.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{v}")
    }
}

/// Checks the exposition of a few targets over a few steps: exactly [`SAMPLES`] samples, and
/// zai-dash's parser reads it with every sample kept. Panics otherwise.
pub fn check() {
    assert_eq!(g(1e6), "1e+06");
    assert_eq!(g(2_345_678.0), "2.345678e+06");
    assert_eq!(g(100_000.0), "100000");
    assert_eq!(g(0.0001), "0.0001");
    assert_eq!(g(0.00001), "1e-05");
    assert_eq!(g(1_788_926_400.0), "1.7889264e+09");
    assert_eq!(g(29.4), "29.4");
    for i in [0, 4, 77] {
        let mut t = Traffic::new(i);
        for _ in 0..50 {
            t.step();
            let text = t.render();
            let samples = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
            assert_eq!(samples, SAMPLES, "target {i}: {samples} samples");
            let expo = zai_dash::scrape::parse::parse(&text).expect("the fake exposition parses");
            let reading = zai_dash::scrape::reading::read(&expo);
            assert_eq!(reading.samples, SAMPLES, "zai-dash keeps every sample of target {i}");
            assert_eq!(reading.dropped, 0);
        }
    }
}
