//! Deterministic zai-proxy pods on loopback.
//!
//! Every counter of a pod grows linearly with wall time: `rate × (t − birth)`, where `birth` is
//! a virtual process start (an hour ago for pods that were "already running", the moment a
//! replacement pod starts, the moment of a counter reset). The expected increase of any series
//! between any two instants is therefore known exactly, whatever the scrape phases are.
//!
//! The exposition is client_golang's text format (families in a fixed order, `# HELP`/`# TYPE`,
//! `le` bounds in `%g` form, histogram `_bucket`/`_sum`/`_count`), with one deliberate addition:
//! counter and histogram samples carry an explicit timestamp, the millisecond at which the body
//! was rendered, and every value is computed at exactly that millisecond. Prometheus honours it
//! (`honor_timestamps` is on by default), so its samples pair each value with the instant it
//! describes instead of the scrape's start; zai-dash ignores sample timestamps and uses its own
//! clock. Gauges carry no timestamp, so Prometheus still writes staleness markers for them when
//! a pod dies.
//!
//! A pod's life is a schedule in wall-clock milliseconds ([`Life`]): before `up_from_ms` it
//! answers 503 (a pod whose replacement moment has not come yet; scrapes fail, nothing is
//! exported), from `down_from_ms` its listener is closed (a pod that died), and from `reset_ms`
//! its counters restart from 0 on the same URL (a process restart). Each scrape by zai-dash is
//! logged with its render time, so the suite can compute exactly which increases zai-dash saw
//! in each bucket.
//!
//! A pod answers only its two scrapers, each on a path of its own that is random per run
//! ([`Paths`]: `/metrics/<run id>/zai-dash` with a `zai-dash/` `User-Agent`,
//! `/metrics/<run id>/prometheus` with a `Prometheus/` one). Anything else (another path, the
//! right path with another client: a scraper left over from an earlier run on a reused port, a
//! stray probe) gets 404 and is kept as an *intruder*, which the suite reports as a harness
//! failure with what came in: its scrapes would otherwise be counted as one of the scrapers'.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zai_dash::clock::{Clock, SystemClock};

/// Request duration bounds of zai-proxy (seconds).
pub const LATENCY_BOUNDS: [f64; 15] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Time-to-first-token bounds (docs/decisions.md, zai-proxy's exposition).
pub const TTFT_BOUNDS: [f64; 14] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0];
/// Time-per-output-token bounds (docs/decisions.md, zai-proxy's exposition).
pub const TPOT_BOUNDS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Token directions in zai-dash's order.
pub const DIRECTIONS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];
/// USD per 1,000 tokens per direction, off-peak (zai-proxy's defaults); peak is double.
pub const PRICES_PER_1K: [f64; 4] = [0.0006, 0.0022, 0.00011, 0.0];

/// Share of observations per bucket: `(upper bound, share)`, shares summing to 1.
pub type Mix = Vec<(f64, f64)>;

/// One model served by a pod.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: &'static str,
    /// Share of the pod's 2xx requests.
    pub share: f64,
    /// Tokens per request, per direction.
    pub tokens: [f64; 4],
    /// Share of the tokens billed at the peak tier.
    pub peak_share: f64,
    /// Time to first token (streaming requests: half of the model's 2xx requests).
    pub ttft: Mix,
    /// Time per output token.
    pub tpot: Mix,
}

/// What a pod serves, per second.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: &'static str,
    pub variant: &'static str,
    pub version: &'static str,
    /// Requests per second, all statuses.
    pub rps: f64,
    /// `(status code, share of requests)`.
    pub statuses: Vec<(&'static str, f64)>,
    /// Latency of 2xx requests.
    pub latency_ok: Mix,
    /// Latency of every other status.
    pub latency_err: Mix,
    pub models: Vec<ModelSpec>,
    /// Capacity rejections per second.
    pub rejections: f64,
    /// Retries per second by reason; zai-proxy also counts each under `reason="retry"`.
    pub retries: Vec<(&'static str, f64)>,
    /// Upstream errors per second by type.
    pub upstream_errors: Vec<(&'static str, f64)>,
    /// Rate limit adjustments per second: increase, decrease, probe.
    pub adjustments: [f64; 3],
    /// Mean request and response sizes (bytes).
    pub request_bytes: f64,
    pub response_bytes: f64,
    /// In-flight requests: `base + PATTERN[(slot + phase) % 5]`, changing 250 ms into each raw
    /// bucket (see [`concurrent_at`]).
    pub concurrent_base: f64,
    pub concurrent_phase: i64,
    pub max_workers: f64,
    pub rate_limit_rps: f64,
}

/// Added to `concurrent_base`, one value per raw bucket.
pub const PATTERN: [f64; 5] = [0.0, 2.0, 1.0, 3.0, 1.0];
/// The concurrency gauge changes this long after each raw bucket starts, so that every scrape
/// that is the last of its bucket reads the bucket's value.
pub const GAUGE_CHANGE_OFFSET_MS: i64 = 250;

/// A pod's schedule, in Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Life {
    /// Counters are `rate × (t − born_ms)` until a reset.
    pub born_ms: i64,
    /// Before this, scrapes get 503.
    pub up_from_ms: i64,
    /// From this on, the pod is dead.
    pub down_from_ms: Option<i64>,
    /// From this on, counters are `rate × (t − reset_ms)`.
    pub reset_ms: Option<i64>,
}

impl Life {
    /// The virtual process start that counters at `t_ms` count from.
    pub fn birth_at(&self, t_ms: i64) -> i64 {
        match self.reset_ms {
            Some(r) if t_ms >= r => r,
            _ => self.born_ms,
        }
    }

    /// Seconds a unit-rate counter shows at `t_ms`.
    pub fn unit_value(&self, t_ms: i64) -> f64 {
        (t_ms - self.birth_at(t_ms)) as f64 / 1000.0
    }

    /// Whether the pod answers at `t_ms`.
    pub fn serving(&self, t_ms: i64) -> bool {
        t_ms >= self.up_from_ms && self.down_from_ms.is_none_or(|d| t_ms < d)
    }
}

/// One exported series of a counter-like sample (a counter, or a histogram's bucket, sum or
/// count), growing at `rate` per second.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub rate: f64,
}

impl Series {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A family as exposed: name, type and help, then its series.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
    pub series: Vec<Series>,
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
}

/// Go's `%g` for the bounds we use (`0.005`, `1`, `120`).
pub fn go_bound(le: f64) -> String {
    if le.is_infinite() { "+Inf".to_owned() } else { format!("{le}") }
}

/// Histogram series: cumulative buckets (finite bounds and `+Inf`), sum and count.
fn histogram(name: &str, base: &[(&str, &str)], bounds: &[f64], mix: &Mix, rate: f64) -> Vec<Series> {
    let mut out = Vec::new();
    let mut mean = 0.0;
    let mut lower = 0.0;
    for &(le, share) in mix {
        mean += share * (lower + le) / 2.0;
        lower = le;
    }
    for &le in bounds.iter().chain([f64::INFINITY].iter()) {
        let cum: f64 = mix.iter().filter(|(b, _)| *b <= le).map(|(_, s)| s).sum();
        let mut l = labels(base);
        l.push(("le".into(), go_bound(le)));
        out.push(Series { name: format!("{name}_bucket"), labels: l, rate: rate * cum.min(1.0) });
    }
    out.push(Series { name: format!("{name}_sum"), labels: labels(base), rate: rate * mean });
    out.push(Series { name: format!("{name}_count"), labels: labels(base), rate });
    out
}

impl PodSpec {
    /// 2xx requests per second.
    pub fn ok_rate(&self) -> f64 {
        self.rps * self.statuses.iter().filter(|(c, _)| c.starts_with('2')).map(|(_, s)| s).sum::<f64>()
    }

    /// Every counter-like family, in client_golang's (alphabetical) order.
    pub fn families(&self) -> Vec<Family> {
        let v = self.variant;
        let path = [("method", "POST"), ("path", "/v1/messages")];
        let mut cost = Vec::new();
        let mut tokens = Vec::new();
        let mut ttft = Vec::new();
        let mut tpot = Vec::new();
        for m in &self.models {
            let requests = self.ok_rate() * m.share;
            for (d, dir) in DIRECTIONS.iter().enumerate() {
                for (tier, share) in [("off_peak", 1.0 - m.peak_share), ("peak", m.peak_share)] {
                    if share <= 0.0 {
                        continue;
                    }
                    let l = labels(&[("direction", dir), ("model", m.name), ("pricing_tier", tier), ("variant", v)]);
                    let t = requests * m.tokens[d] * share;
                    let price = PRICES_PER_1K[d] / 1000.0 * if tier == "peak" { 2.0 } else { 1.0 };
                    tokens.push(Series { name: "zai_proxy_tokens_total".into(), labels: l.clone(), rate: t });
                    cost.push(Series { name: "zai_proxy_estimated_cost_usd_total".into(), labels: l, rate: t * price });
                }
            }
            let ml = [("model", m.name), ("variant", v)];
            ttft.extend(histogram("zai_proxy_time_to_first_token_seconds", &ml, &TTFT_BOUNDS, &m.ttft, requests / 2.0));
            tpot.extend(histogram(
                "zai_proxy_time_per_output_token_seconds",
                &ml,
                &TPOT_BOUNDS,
                &m.tpot,
                requests / 2.0,
            ));
        }
        let mut duration = Vec::new();
        let mut requests = Vec::new();
        for &(code, share) in &self.statuses {
            let l = [path[0], path[1], ("status_code", code), ("variant", v)];
            let mix = if code.starts_with('2') { &self.latency_ok } else { &self.latency_err };
            duration.extend(histogram(
                "zai_proxy_request_duration_seconds",
                &l,
                &LATENCY_BOUNDS,
                mix,
                self.rps * share,
            ));
            requests.push(Series {
                name: "zai_proxy_requests_total".into(),
                labels: labels(&l),
                rate: self.rps * share,
            });
        }
        let only_total = |name: &str, base: &[(&str, &str)], rate: f64, mean: f64| {
            let mut s = histogram(name, base, &[], &vec![(f64::INFINITY, 1.0)], rate);
            s.iter_mut().filter(|s| s.name.ends_with("_sum")).for_each(|s| s.rate = rate * mean);
            s
        };
        let retry_total: f64 = self.retries.iter().map(|(_, r)| r).sum();
        let mut retries: Vec<Series> = self
            .retries
            .iter()
            .chain([("retry", retry_total)].iter())
            .map(|(reason, r)| Series {
                name: "zai_proxy_retry_attempts_total".into(),
                labels: labels(&[("reason", reason), ("variant", v)]),
                rate: *r,
            })
            .collect();
        retries.sort_by(|a, b| a.labels.cmp(&b.labels));
        let counter = |name: &str, pairs: Vec<(Vec<(String, String)>, f64)>| -> Vec<Series> {
            pairs.into_iter().map(|(labels, rate)| Series { name: name.into(), labels, rate }).collect()
        };
        vec![
            Family {
                name: "zai_proxy_estimated_cost_usd_total",
                kind: "counter",
                help: "Estimated Z.AI API cost in USD by token direction, model, deployment variant, and pricing tier",
                series: cost,
            },
            Family {
                name: "zai_proxy_rate_limit_adjustments_total",
                kind: "counter",
                help: "Total number of rate limit adjustments",
                series: counter(
                    "zai_proxy_rate_limit_adjustments_total",
                    ["decrease", "increase", "probe"]
                        .iter()
                        .map(|d| {
                            let idx = ["increase", "decrease", "probe"].iter().position(|x| x == d).unwrap();
                            (labels(&[("direction", d), ("variant", v)]), self.adjustments[idx])
                        })
                        .collect(),
                ),
            },
            Family {
                name: "zai_proxy_rate_limit_rejections_total",
                kind: "counter",
                help: "Total number of requests rejected due to proxy capacity, by bounded source bucket",
                series: counter(
                    "zai_proxy_rate_limit_rejections_total",
                    vec![(labels(&[("client", "source-7"), ("variant", v)]), self.rejections)],
                ),
            },
            Family {
                name: "zai_proxy_request_duration_seconds",
                kind: "histogram",
                help: "Request duration in seconds",
                series: duration,
            },
            Family {
                name: "zai_proxy_request_size_bytes",
                kind: "histogram",
                help: "Request size in bytes",
                series: only_total(
                    "zai_proxy_request_size_bytes",
                    &[path[0], path[1], ("variant", v)],
                    self.rps,
                    self.request_bytes,
                ),
            },
            Family {
                name: "zai_proxy_requests_total",
                kind: "counter",
                help: "Total number of requests by method, path, status code, and variant",
                series: requests,
            },
            Family {
                name: "zai_proxy_response_size_bytes",
                kind: "histogram",
                help: "Response size in bytes",
                series: only_total(
                    "zai_proxy_response_size_bytes",
                    &[path[0], path[1], ("status_code", "200"), ("variant", v)],
                    self.ok_rate(),
                    self.response_bytes,
                ),
            },
            Family {
                name: "zai_proxy_retry_attempts_total",
                kind: "counter",
                help: "Total number of retry attempts",
                series: retries,
            },
            Family {
                name: "zai_proxy_time_per_output_token_seconds",
                kind: "histogram",
                help: "Time per output token",
                series: tpot,
            },
            Family {
                name: "zai_proxy_time_to_first_token_seconds",
                kind: "histogram",
                help: "Time to first token",
                series: ttft,
            },
            Family {
                name: "zai_proxy_tokens_total",
                kind: "counter",
                help: "Total number of tokens processed by direction (input/output), model, deployment variant, and pricing tier",
                series: tokens,
            },
            Family {
                name: "zai_proxy_upstream_errors_total",
                kind: "counter",
                help: "Total number of upstream errors by type",
                series: counter(
                    "zai_proxy_upstream_errors_total",
                    self.upstream_errors
                        .iter()
                        .map(|(t, r)| (labels(&[("error_type", t), ("variant", v)]), *r))
                        .collect(),
                ),
            },
        ]
    }

    /// In-flight requests at `t_ms`, for raw buckets of `slot_ms`.
    pub fn concurrent_at(&self, t_ms: i64, slot_ms: i64) -> f64 {
        let slot = (t_ms - GAUGE_CHANGE_OFFSET_MS).div_euclid(slot_ms);
        self.concurrent_base + PATTERN[(slot + self.concurrent_phase).rem_euclid(5) as usize]
    }

    /// The gauge `family` at `t_ms` (`None` for families the pod does not export as gauges).
    pub fn gauge_at(&self, family: &str, t_ms: i64, slot_ms: i64) -> Option<f64> {
        match family {
            "zai_proxy_concurrent_requests" => Some(self.concurrent_at(t_ms, slot_ms)),
            "zai_proxy_max_workers" => Some(self.max_workers),
            "zai_proxy_rate_limit_requests_per_second" => Some(self.rate_limit_rps),
            _ => None,
        }
    }
}

/// Quota gauges every pod exports alike (the quota is account-wide).
pub const QUOTA: [(&str, &str, &str, f64); 6] = [
    ("zai_proxy_quota_remaining_ratio", "credit_limit", "weekly", 0.5785),
    ("zai_proxy_quota_remaining_ratio", "tokens_limit", "five_hour", 0.87),
    ("zai_proxy_quota_reset_time_seconds", "credit_limit", "weekly", 1.7889264e9),
    ("zai_proxy_quota_reset_time_seconds", "tokens_limit", "five_hour", 1.788738692e9),
    ("zai_proxy_quota_usage_ratio", "credit_limit", "weekly", 0.4215),
    ("zai_proxy_quota_usage_ratio", "tokens_limit", "five_hour", 0.13),
];

/// `zai_proxy_quota_sample_age_seconds` of every pod.
pub const QUOTA_SAMPLE_AGE_S: f64 = 60.004;

fn label_text(labels: &[(String, String)]) -> String {
    let inner: Vec<String> = labels.iter().map(|(n, v)| format!("{n}=\"{v}\"")).collect();
    inner.join(",")
}

/// The whole exposition at `t_ms`.
pub fn render(spec: &PodSpec, families: &[Family], life: &Life, t_ms: i64, slot_ms: i64) -> String {
    let unit = life.unit_value(t_ms);
    let v = spec.variant;
    let mut s = String::with_capacity(32 * 1024);
    s += "# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines 23\n";
    s += "# HELP zai_proxy_build_info Build information including version, variant, commit, and build time\n# TYPE zai_proxy_build_info gauge\n";
    s += &format!(
        "zai_proxy_build_info{{build_time=\"2026-09-04T18:22:10Z\",commit=\"4f0c2a9\",variant=\"{v}\",version=\"{}\"}} 1\n",
        spec.version
    );
    s += "# HELP zai_proxy_concurrent_requests Number of requests currently being processed\n# TYPE zai_proxy_concurrent_requests gauge\n";
    s += &format!("zai_proxy_concurrent_requests{{variant=\"{v}\"}} {}\n", spec.concurrent_at(t_ms, slot_ms));
    for f in families {
        s += &format!("# HELP {} {}\n# TYPE {} {}\n", f.name, f.help, f.name, f.kind);
        for series in &f.series {
            s += &format!("{}{{{}}} {} {t_ms}\n", series.name, label_text(&series.labels), series.rate * unit);
        }
        if f.name == "zai_proxy_estimated_cost_usd_total" {
            s += "# HELP zai_proxy_max_workers Maximum number of concurrent workers allowed\n# TYPE zai_proxy_max_workers gauge\n";
            s += &format!("zai_proxy_max_workers{{variant=\"{v}\"}} {}\n", spec.max_workers);
            let mut last = "";
            for (name, limit, window, value) in QUOTA {
                if name != last {
                    s += &format!("# HELP {name} Quota as reported by the provider\n# TYPE {name} gauge\n");
                    last = name;
                }
                s += &format!("{name}{{limit_type=\"{limit}\",variant=\"{v}\",window=\"{window}\"}} {value}\n");
            }
            s += "# HELP zai_proxy_quota_sample_age_seconds Age of the last valid account quota sample\n# TYPE zai_proxy_quota_sample_age_seconds gauge\n";
            s += &format!("zai_proxy_quota_sample_age_seconds{{variant=\"{v}\"}} {QUOTA_SAMPLE_AGE_S}\n");
        }
        if f.name == "zai_proxy_rate_limit_rejections_total" {
            s += "# HELP zai_proxy_rate_limit_requests_per_second Current rate limit in requests per second\n# TYPE zai_proxy_rate_limit_requests_per_second gauge\n";
            s += &format!("zai_proxy_rate_limit_requests_per_second{{variant=\"{v}\"}} {}\n", spec.rate_limit_rps);
        }
    }
    s
}

/// The two paths a pod answers on, random per run.
#[derive(Debug, Clone)]
pub struct Paths {
    /// zai-dash's: `{prefix}/<run id>/zai-dash`.
    pub dash: String,
    /// Prometheus': `{prefix}/<run id>/prometheus`.
    pub prom: String,
}

impl Paths {
    /// Fresh paths under `prefix` (`/metrics`), with a run id of 16 random hex digits (hex, so
    /// that it never spells `canary` or `test`, which zai-dash's URL rule reads).
    pub fn new(prefix: &str) -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        h.write_u32(std::process::id());
        let run = format!("{:016x}", h.finish());
        Self { dash: format!("{prefix}/{run}/zai-dash"), prom: format!("{prefix}/{run}/prometheus") }
    }
}

/// Which scraper a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scraper {
    Dash,
    Prom,
}

/// One scrape: by which scraper, and whether it was answered with an exposition.
#[derive(Debug, Clone, Copy)]
pub struct Scrape {
    pub by: Scraper,
    pub served: bool,
}

/// A running fake pod.
pub struct Pod {
    pub spec: Arc<PodSpec>,
    /// zai-dash's URL of the pod.
    pub url: String,
    /// `host:port`, as Prometheus' `instance` label.
    pub instance: String,
    pub life: Arc<Mutex<Life>>,
    /// Render times (Unix ms) of zai-dash's scrapes that were answered with an exposition.
    pub dash_renders: Arc<Mutex<Vec<i64>>>,
    /// Every scrape by either scraper.
    pub scrapes: Arc<Mutex<Vec<Scrape>>>,
    /// Requests from anything but the two scrapers on their paths.
    pub intruders: Arc<Mutex<Vec<String>>>,
    cancel: CancellationToken,
}

#[derive(Clone)]
struct PodState {
    spec: Arc<PodSpec>,
    families: Arc<Vec<Family>>,
    life: Arc<Mutex<Life>>,
    paths: Paths,
    dash_renders: Arc<Mutex<Vec<i64>>>,
    scrapes: Arc<Mutex<Vec<Scrape>>>,
    intruders: Arc<Mutex<Vec<String>>>,
    slot_ms: i64,
}

/// Which scraper this request is, if it is one of the two on its own path.
fn scraper(paths: &Paths, uri: &Uri, method: &Method, user_agent: &str) -> Option<Scraper> {
    if method != Method::GET || uri.query().is_some() {
        return None;
    }
    match uri.path() {
        p if p == paths.dash && user_agent.starts_with("zai-dash/") => Some(Scraper::Dash),
        p if p == paths.prom && user_agent.starts_with("Prometheus/") => Some(Scraper::Prom),
        _ => None,
    }
}

async fn serve_metrics(
    State(s): State<PodState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let t = SystemClock.now_ms();
    let user_agent = headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(by) = scraper(&s.paths, &uri, &method, user_agent) else {
        s.intruders.lock().unwrap().push(format!("{method} {uri} from {peer} (User-Agent {user_agent:?}) at {t}"));
        return (StatusCode::NOT_FOUND, "unknown scraper\n").into_response();
    };
    let life = *s.life.lock().unwrap();
    let serving = life.serving(t);
    s.scrapes.lock().unwrap().push(Scrape { by, served: serving });
    if !serving {
        return (StatusCode::SERVICE_UNAVAILABLE, "not serving\n").into_response();
    }
    let body = render(&s.spec, &s.families, &life, t, s.slot_ms);
    if by == Scraper::Dash {
        s.dash_renders.lock().unwrap().push(t);
    }
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

impl Pod {
    /// Starts a pod on `127.0.0.1:0`, answering its scrapers on `paths` from now on according
    /// to `life`; `slot_ms` is the raw bucket width the concurrency gauge follows.
    pub async fn start(spec: PodSpec, life: Life, slot_ms: i64, paths: &Paths) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, spec, life, slot_ms, paths).await
    }

    /// Starts a pod on a given listener.
    pub async fn start_on(listener: TcpListener, spec: PodSpec, life: Life, slot_ms: i64, paths: &Paths) -> Self {
        let instance = listener.local_addr().unwrap().to_string();
        let spec = Arc::new(spec);
        let state = PodState {
            families: Arc::new(spec.families()),
            spec: spec.clone(),
            life: Arc::new(Mutex::new(life)),
            paths: paths.clone(),
            dash_renders: Arc::default(),
            scrapes: Arc::default(),
            intruders: Arc::default(),
            slot_ms,
        };
        let cancel = CancellationToken::new();
        let app = Router::new().fallback(serve_metrics).with_state(state.clone());
        let c = cancel.clone();
        tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, app).with_graceful_shutdown(c.cancelled_owned()).await;
        });
        Self {
            spec,
            url: format!("http://{instance}{}", paths.dash),
            instance,
            life: state.life,
            dash_renders: state.dash_renders,
            scrapes: state.scrapes,
            intruders: state.intruders,
            cancel,
        }
    }

    /// Closes the listener when the schedule says the pod died.
    pub fn schedule_death(&self) {
        let Some(down) = self.life.lock().unwrap().down_from_ms else { return };
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            let wait = (down - SystemClock.now_ms()).max(0) as u64;
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            cancel.cancel();
        });
    }

    pub fn life(&self) -> Life {
        *self.life.lock().unwrap()
    }

    pub fn set_life(&self, f: impl FnOnce(&mut Life)) {
        f(&mut self.life.lock().unwrap());
    }

    /// Scrapes answered with an exposition: `(zai-dash, Prometheus)`.
    pub fn served_scrapes(&self) -> (usize, usize) {
        let all = self.scrapes.lock().unwrap();
        let n = |by: Scraper| all.iter().filter(|s| s.by == by && s.served).count();
        (n(Scraper::Dash), n(Scraper::Prom))
    }

    pub fn dash_renders(&self) -> Vec<i64> {
        self.dash_renders.lock().unwrap().clone()
    }

    /// What came in from anything but the two scrapers (see the module).
    pub fn intruders(&self) -> Vec<String> {
        self.intruders.lock().unwrap().clone()
    }

    /// Forgets zai-dash's scrapes so far (those of a probe instance).
    pub fn forget_dash_scrapes(&self) {
        self.dash_renders.lock().unwrap().clear();
        self.scrapes.lock().unwrap().retain(|s| s.by != Scraper::Dash);
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two scrapers get their expositions; anything else gets 404 and is kept as an intruder.
    #[tokio::test]
    async fn only_each_scraper_on_its_own_path_is_answered() {
        let life = Life { born_ms: 0, up_from_ms: 0, down_from_ms: None, reset_ms: None };
        let paths = Paths::new("/metrics");
        let pod = Pod::start(super::super::pods::prod_a(), life, 2_000, &paths).await;
        let get = |path: &str, agent: &str| {
            let url = format!("http://{}{path}", pod.instance);
            let client = reqwest::Client::builder().user_agent(agent).build().unwrap();
            async move { client.get(url).send().await.unwrap().status().as_u16() }
        };
        assert_eq!(get(&paths.dash, "zai-dash/1.0").await, 200);
        assert_eq!(get(&paths.prom, "Prometheus/2.42.0").await, 200);
        assert_eq!(pod.served_scrapes(), (1, 1));
        assert!(pod.intruders().is_empty());
        for (path, agent) in [
            (paths.dash.as_str(), "Prometheus/2.42.0"),
            (paths.prom.as_str(), "zai-dash/1.0"),
            ("/metrics", "zai-dash/1.0"),
            (&format!("{}?x=1", paths.dash), "zai-dash/1.0"),
        ] {
            assert_eq!(get(path, agent).await, 404, "{path} by {agent}");
        }
        let intruders = pod.intruders();
        assert_eq!(intruders.len(), 4, "{intruders:?}");
        assert!(intruders[2].contains("GET /metrics from 127.0.0.1:"), "{intruders:?}");
        assert_eq!(pod.served_scrapes(), (1, 1), "an intruder is no scrape");
        assert_ne!(Paths::new("/metrics").dash, paths.dash, "a new run id every time");
    }
}
