//! The built-in LLM proxy: an Anthropic Messages / OpenAI Chat Completions reverse proxy that
//! exports zai-proxy's `zai_proxy_*` metrics, so zai-dash can be the proxy its dashboard watches.
//!
//! Configured with zai-proxy's own environment variables, so an existing deployment can swap
//! the binary. One router serves the proxied APIs (every path not listed below is forwarded),
//! `/metrics`, `/health` and `/admin/reset-rate-limit`. The proxy is a runtime mode, not a cargo
//! feature: `zai-dash proxy` runs it alone, `zai-dash serve --proxy` next to the dashboard on
//! its own listener, and `zai-dash demo` twice against a simulated upstream.

pub(crate) mod forward;
pub(crate) mod limiter;
pub mod metrics;
pub mod pricing;
pub mod quota;
pub(crate) mod scan;
pub(crate) mod upstream;
pub mod usage;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::Args;
use hyper::body::Incoming;

use crate::clock::SharedClock;
use crate::host::AllowedHosts;
use crate::net::{ListenerLimits, Listening};
use crate::redact::RedactedUrl;
use crate::setting::{ConfigError, parse_duration};
use limiter::{Limiter, LimiterSettings};
use metrics::{Limit, ProxyMetrics};
use pricing::Pricing;
use quota::{QuotaArgs, QuotaHealth, QuotaPoller, QuotaSettings};

/// zai-proxy's settings, as flags with its environment variables as fallbacks. Unlike
/// zai-proxy, a value that does not parse or is out of range refuses to start.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Built-in proxy")]
pub struct ProxyArgs {
    /// Upstream API key; sent as `x-api-key` (Anthropic paths) or a bearer token (OpenAI paths).
    #[arg(long, env = "ZAI_API_KEY", hide_env_values = true, default_value = "")]
    pub zai_api_key: String,
    /// Upstream base URL; the client's path and query are appended unchanged.
    #[arg(long, env = "ZAI_TARGET_URL", default_value = "https://api.z.ai/api/anthropic", hide_env_values = true)]
    pub zai_target_url: String,
    /// The `variant` label of every metric.
    #[arg(long, env = "DEPLOYMENT_VARIANT", default_value = "production")]
    pub deployment_variant: String,
    /// Requests in flight at most; more get an immediate 503.
    #[arg(long, env = "MAX_WORKERS", default_value = "10")]
    pub max_workers: String,
    /// Retries of a failed upstream attempt (backoff 1 s, 2 s, 4 s, ...).
    #[arg(long, env = "MAX_RETRIES", default_value = "3")]
    pub max_retries: String,
    /// Record token usage and cost.
    #[arg(long, env = "TOKEN_COUNTING_ENABLED", default_value = "true")]
    pub token_counting_enabled: String,
    /// Model label when a request names none.
    #[arg(long, env = "TOKENIZER_MODEL", default_value = "glm-4")]
    pub tokenizer_model: String,
    /// Starting rate limit (requests per second).
    #[arg(long, env = "RATE_LIMIT_INITIAL", default_value = "10")]
    pub rate_limit_initial: String,
    /// Lowest rate limit.
    #[arg(long, env = "RATE_LIMIT_MIN", default_value = "1")]
    pub rate_limit_min: String,
    /// Highest rate limit.
    #[arg(long, env = "RATE_LIMIT_MAX", default_value = "50")]
    pub rate_limit_max: String,
    /// EWMA weight of the current rate in the ceiling estimate, (0, 1].
    #[arg(long, env = "RATE_LIMIT_CEILING_ALPHA", default_value = "0.3")]
    pub rate_limit_ceiling_alpha: String,
    /// Margin kept below (hold) or gone above (probe) the ceiling, (0, 1).
    #[arg(long, env = "RATE_LIMIT_HOLD_MARGIN", default_value = "0.02")]
    pub rate_limit_hold_margin: String,
    /// Clean 30 s windows between probes above the ceiling.
    #[arg(long, env = "RATE_LIMIT_PROBE_INTERVAL", default_value = "10")]
    pub rate_limit_probe_interval: String,
    /// File keeping the learned ceiling across restarts (empty: not kept).
    #[arg(long, env = "RATE_LIMIT_STATE_FILE", default_value = "/var/lib/zai-proxy/ceiling.json")]
    pub rate_limit_state_file: String,
    /// A state file older than this is ignored.
    #[arg(long, env = "RATE_LIMIT_STATE_MAX_AGE", default_value = "6h")]
    pub rate_limit_state_max_age: String,
    /// Largest accepted request body; larger gets 413.
    #[arg(long, env = "MAX_REQUEST_BODY_BYTES", default_value = "33554432")]
    pub max_request_body_bytes: String,
    /// Time a client has to send its whole request body; then 408. The body is read before a
    /// worker slot is taken, so slow clients cannot starve `MAX_WORKERS`.
    #[arg(long, env = "REQUEST_BODY_TIMEOUT", default_value = "30s")]
    pub request_body_timeout: String,
    /// Time a client has to send a complete request head to the proxy, from its first byte;
    /// then the connection is dropped.
    #[arg(long, env = "PROXY_HEADER_READ_TIMEOUT", default_value = "30s")]
    pub proxy_header_read_timeout: String,
    /// How long a connection to the proxy may sit without a request (between two, or since
    /// connect; an answer being streamed is not idle).
    #[arg(long, env = "PROXY_IDLE_TIMEOUT", default_value = "120s")]
    pub proxy_idle_timeout: String,
    /// Time allowed to connect to the upstream.
    #[arg(long, env = "UPSTREAM_CONNECT_TIMEOUT", default_value = "10s")]
    pub upstream_connect_timeout: String,
    /// Longest silence from the upstream (waiting for headers or between body chunks).
    #[arg(long, env = "UPSTREAM_IDLE_TIMEOUT", default_value = "5m")]
    pub upstream_idle_timeout: String,
    /// First retry delay; doubles per retry.
    #[arg(long, env = "RETRY_BASE_DELAY", default_value = "1s")]
    pub retry_base_delay: String,
    /// USD per 1,000 tokens: input, output, cache read, cache write (off-peak).
    #[arg(long, env = "TOKEN_PRICES_PER_1K", default_value = "0.0006,0.0022,0.00011,0")]
    pub token_prices_per_1k: String,
    /// `zai_proxy_build_info` version (default: zai-dash's own).
    #[arg(long, env = "ZAI_PROXY_VERSION", default_value = "")]
    pub zai_proxy_version: String,
    /// The quota poller's settings (`QUOTA_*`).
    #[command(flatten)]
    pub quota: QuotaArgs,
}

/// Build information labels.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    /// `version`.
    pub version: String,
    /// `commit`.
    pub commit: String,
    /// `build_time`.
    pub build_time: String,
}

/// Validated proxy settings.
#[derive(Clone)]
pub struct ProxySettings {
    /// Upstream key (never logged).
    pub api_key: String,
    /// Upstream base, without a trailing slash.
    pub target_url: String,
    /// The same, parsed once (requests only set path and query on a copy).
    pub target: url::Url,
    /// `variant` label.
    pub variant: String,
    /// In-flight cap.
    pub max_workers: usize,
    /// Retries per request.
    pub max_retries: u32,
    /// Record tokens and cost.
    pub token_counting: bool,
    /// Default model label.
    pub tokenizer_model: String,
    /// Limiter parameters.
    pub limiter: LimiterSettings,
    /// Request body cap.
    pub max_request_bytes: usize,
    /// Deadline for reading a whole request body.
    pub body_timeout: Duration,
    /// Header-read and idle deadlines of the proxy's client connections.
    pub listener: ListenerLimits,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// First retry delay.
    pub retry_base: Duration,
    /// Token prices.
    pub pricing: Pricing,
    /// Build labels.
    pub build: BuildInfo,
    /// DNS names a browser may reach the proxy by (`ALLOWED_HOSTS`; IP addresses and
    /// `localhost` always): a request with an `Origin` naming another host is refused.
    pub allowed_hosts: AllowedHosts,
    /// The quota poller, when `QUOTA_POLL_ENABLED` is on.
    pub quota: Option<QuotaSettings>,
}

impl std::fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySettings")
            .field("api_key", &"<redacted>")
            .field("target_url", &RedactedUrl(&self.target_url))
            .field("variant", &self.variant)
            .field("max_workers", &self.max_workers)
            .field("max_retries", &self.max_retries)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

fn bad(msg: String) -> ConfigError {
    ConfigError(msg)
}

fn number<T: std::str::FromStr>(name: &str, v: &str, ok: impl Fn(&T) -> bool, rule: &str) -> Result<T, ConfigError> {
    v.trim().parse::<T>().ok().filter(|x| ok(x)).ok_or_else(|| bad(format!("{name} {v:?} is invalid: {rule}.")))
}

/// zai-proxy's booleans: `false`, `0`, `no`, `n` (any case) are false; any other value is true.
fn boolean(v: &str) -> bool {
    !matches!(v.trim().to_ascii_lowercase().as_str(), "false" | "0" | "no" | "n")
}

impl ProxyArgs {
    /// Checks every value.
    pub fn validate(&self) -> Result<ProxySettings, ConfigError> {
        if self.zai_api_key.trim().is_empty() {
            return Err(bad("ZAI_API_KEY is empty: the proxy needs the upstream API key.".into()));
        }
        let target = url::Url::parse(self.zai_target_url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                bad(format!(
                    "ZAI_TARGET_URL {:?} is not an http(s) URL.",
                    RedactedUrl(&self.zai_target_url).to_string()
                ))
            })?;
        let variant = self.deployment_variant.trim().to_owned();
        if variant.is_empty() {
            return Err(bad("DEPLOYMENT_VARIANT is empty.".into()));
        }
        Ok(ProxySettings {
            api_key: self.zai_api_key.trim().to_owned(),
            target_url: target.as_str().trim_end_matches('/').to_owned(),
            target: target.clone(),
            max_workers: number("MAX_WORKERS", &self.max_workers, |n: &usize| *n > 0, "use a whole number above 0")?,
            max_retries: number("MAX_RETRIES", &self.max_retries, |_: &u32| true, "use a whole number, 0 or more")?,
            token_counting: boolean(&self.token_counting_enabled),
            tokenizer_model: self.tokenizer_model.trim().to_owned(),
            limiter: self.limiter()?,
            max_request_bytes: number(
                "MAX_REQUEST_BODY_BYTES",
                &self.max_request_body_bytes,
                |n: &usize| *n > 0,
                "use a byte count above 0",
            )?,
            body_timeout: parse_duration("REQUEST_BODY_TIMEOUT", &self.request_body_timeout)?,
            listener: ListenerLimits {
                header_read: parse_duration("PROXY_HEADER_READ_TIMEOUT", &self.proxy_header_read_timeout)?,
                idle: parse_duration("PROXY_IDLE_TIMEOUT", &self.proxy_idle_timeout)?,
            },
            connect_timeout: parse_duration("UPSTREAM_CONNECT_TIMEOUT", &self.upstream_connect_timeout)?,
            idle_timeout: parse_duration("UPSTREAM_IDLE_TIMEOUT", &self.upstream_idle_timeout)?,
            retry_base: parse_duration("RETRY_BASE_DELAY", &self.retry_base_delay)?,
            pricing: parse_prices(&self.token_prices_per_1k)?,
            build: BuildInfo {
                version: Some(self.zai_proxy_version.trim())
                    .filter(|v| !v.is_empty())
                    .unwrap_or(crate::VERSION)
                    .to_owned(),
                commit: "unknown".into(),
                build_time: "unknown".into(),
            },
            variant,
            allowed_hosts: AllowedHosts::default(),
            quota: self.quota.validate()?,
        })
    }
}

impl ProxyArgs {
    /// The limiter's part of [`Self::validate`].
    fn limiter(&self) -> Result<LimiterSettings, ConfigError> {
        let rate = |name: &str, v: &str| number::<f64>(name, v, |x| x.is_finite() && *x > 0.0, "use a number above 0");
        let (min, max) = (rate("RATE_LIMIT_MIN", &self.rate_limit_min)?, rate("RATE_LIMIT_MAX", &self.rate_limit_max)?);
        if min > max {
            return Err(bad(format!("RATE_LIMIT_MIN ({min}) is above RATE_LIMIT_MAX ({max}).")));
        }
        let state_file = self.rate_limit_state_file.trim();
        Ok(LimiterSettings {
            initial: rate("RATE_LIMIT_INITIAL", &self.rate_limit_initial)?,
            min,
            max,
            alpha: number(
                "RATE_LIMIT_CEILING_ALPHA",
                &self.rate_limit_ceiling_alpha,
                |a: &f64| *a > 0.0 && *a <= 1.0,
                "use a number in (0, 1]",
            )?,
            hold_margin: number(
                "RATE_LIMIT_HOLD_MARGIN",
                &self.rate_limit_hold_margin,
                |m: &f64| *m > 0.0 && *m < 1.0,
                "use a number in (0, 1)",
            )?,
            probe_interval: number(
                "RATE_LIMIT_PROBE_INTERVAL",
                &self.rate_limit_probe_interval,
                |p: &u32| *p > 0,
                "use a whole number above 0",
            )?,
            window: Duration::from_secs(30),
            state_file: (!state_file.is_empty()).then(|| PathBuf::from(state_file)),
            state_max_age: parse_duration("RATE_LIMIT_STATE_MAX_AGE", &self.rate_limit_state_max_age)?,
        })
    }

    /// Defaults (as clap would give them) with a key and an upstream, for tests and the demo.
    pub fn for_tests(target_url: &str) -> Self {
        Self {
            zai_api_key: "test-key".into(),
            zai_target_url: target_url.into(),
            deployment_variant: "production".into(),
            max_workers: "10".into(),
            max_retries: "3".into(),
            token_counting_enabled: "true".into(),
            tokenizer_model: "glm-4".into(),
            rate_limit_initial: "10".into(),
            rate_limit_min: "1".into(),
            rate_limit_max: "50".into(),
            rate_limit_ceiling_alpha: "0.3".into(),
            rate_limit_hold_margin: "0.02".into(),
            rate_limit_probe_interval: "10".into(),
            rate_limit_state_file: String::new(),
            rate_limit_state_max_age: "6h".into(),
            max_request_body_bytes: "33554432".into(),
            request_body_timeout: "30s".into(),
            proxy_header_read_timeout: "30s".into(),
            proxy_idle_timeout: "120s".into(),
            upstream_connect_timeout: "10s".into(),
            upstream_idle_timeout: "5m".into(),
            retry_base_delay: "1s".into(),
            token_prices_per_1k: "0.0006,0.0022,0.00011,0".into(),
            zai_proxy_version: String::new(),
            quota: QuotaArgs::default(),
        }
    }
}

fn parse_prices(v: &str) -> Result<Pricing, ConfigError> {
    let parts: Vec<f64> = v.split(',').map(|p| p.trim().parse::<f64>()).collect::<Result<_, _>>().unwrap_or_default();
    match parts.as_slice() {
        [i, o, r, w] if parts.iter().all(|x| x.is_finite() && *x >= 0.0) => {
            Ok(Pricing { input: *i, output: *o, cache_read: *r, cache_write: *w, ..Pricing::default() })
        }
        _ => Err(bad(format!(
            "TOKEN_PRICES_PER_1K {v:?} is invalid: give four non-negative numbers (input,output,cache_read,cache_write)."
        ))),
    }
}

/// One running proxy: settings, metrics, limiter, upstream client and the in-flight count.
#[derive(Debug)]
pub struct Proxy {
    /// Settings.
    pub settings: ProxySettings,
    /// Exported families.
    pub metrics: ProxyMetrics,
    /// Adaptive limiter.
    pub limiter: Limiter,
    /// The quota poller, when enabled; [`serve`] runs it as a task of its own.
    pub quota: Option<Arc<QuotaPoller>>,
    client: upstream::Client,
    /// `ZAI_API_KEY` as the upstream's auth headers.
    keys: forward::UpstreamKeys,
    inflight: AtomicUsize,
    clock: SharedClock,
    /// The model label of requests that name none (`TOKENIZER_MODEL`).
    default_model: Arc<str>,
}

/// Holds one in-flight slot; frees it (and updates the gauges) when dropped, on every path.
pub(crate) struct WorkerSlot {
    proxy: Arc<Proxy>,
}

impl Drop for WorkerSlot {
    fn drop(&mut self) {
        self.proxy.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a proxy could not be built: one of its HTTP clients.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The upstream client (TLS set-up, host name).
    #[error(transparent)]
    Upstream(#[from] upstream::ClientError),
    /// The quota poller's client.
    #[error("cannot build the quota poller's HTTP client")]
    Quota(#[from] reqwest::Error),
}

impl Proxy {
    /// Builds a proxy and publishes its start-up gauges.
    pub fn new(settings: ProxySettings, clock: SharedClock) -> Result<Arc<Self>, BuildError> {
        let client = upstream::Client::new(&settings.target, settings.connect_timeout, settings.idle_timeout)?;
        let limiter = Limiter::new(settings.limiter.clone(), clock.clone());
        let metrics = ProxyMetrics::new();
        let default_model = metrics.model_label(&settings.tokenizer_model);
        let quota = match settings.quota.clone() {
            Some(q) => Some(Arc::new(QuotaPoller::new(q, &settings.api_key, &settings.variant, clock.clone())?)),
            None => None,
        };
        let inflight = AtomicUsize::new(0);
        let keys = forward::UpstreamKeys::new(&settings.api_key);
        let proxy = Arc::new(Self { metrics, default_model, limiter, quota, client, keys, inflight, clock, settings });
        let v = proxy.settings.variant.as_str();
        let b = &proxy.settings.build;
        proxy.metrics.build_info.set(&[&b.build_time, &b.commit, v, &b.version], 1.0);
        proxy.metrics.max_workers.set(&[v], proxy.settings.max_workers as f64);
        proxy.set_concurrency_gauges(0);
        proxy.metrics.rate_limit_rps.set(&[v], proxy.limiter.current());
        Ok(proxy)
    }

    /// Takes an in-flight slot, or `None` when `MAX_WORKERS` are busy.
    pub(crate) fn try_take_slot(self: &Arc<Self>) -> Option<WorkerSlot> {
        let now = self.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        let slot = WorkerSlot { proxy: self.clone() };
        (now <= self.settings.max_workers).then_some(slot)
    }

    /// Requests holding a worker right now (a streamed answer until its stream ends).
    pub fn in_flight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// The concurrency gauges are read from the in-flight count when scraped, not written on
    /// every request: a gauge only needs to be right when someone looks.
    fn set_concurrency_gauges(&self, inflight: usize) {
        let v = self.settings.variant.as_str();
        self.metrics.concurrent_requests.set(&[v], inflight as f64);
        self.metrics.worker_utilization.set(&[v], inflight as f64 / self.settings.max_workers as f64);
    }
}

/// The proxy's service for one client connection: three fixed paths and everything else
/// forwarded, behind the check of browsers' `Origin` and `Host`. The path is matched once, by
/// hand: a general router (route table, boxed middleware and handler services, extractors)
/// cost as much per request as the forwarding itself.
#[derive(Clone)]
pub(crate) struct Dispatch {
    proxy: Arc<Proxy>,
    /// The peer's `client` label value, hashed from its address once per connection.
    client: &'static str,
}

impl tower_service::Service<Request<Incoming>> for Dispatch {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let (p, client) = (self.proxy.clone(), self.client);
        Box::pin(async move { Ok(dispatch(p, client, req).await) })
    }
}

async fn dispatch(p: Arc<Proxy>, client: &'static str, req: Request<Incoming>) -> Response {
    if let Some(refused) = browsers_by_allowed_names(&p, &req) {
        return refused;
    }
    let (method, path) = (req.method(), req.uri().path());
    let read = method == Method::GET || method == Method::HEAD;
    match path {
        "/metrics" if read => metrics_handler(&p),
        "/health" if read => health_handler(&p),
        "/metrics" | "/health" => method_not_allowed(),
        "/admin/reset-rate-limit" => reset_handler(&p, req),
        _ => forward::handle(p, client, req).await,
    }
}

/// `/metrics` and `/health` answer `GET` and `HEAD` only.
fn method_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET,HEAD")]).into_response()
}

/// Serves `proxy` on `listener` until `shutdown`, then lets in-flight requests finish (the caller
/// bounds that wait with its grace period). Peer addresses feed the `client` label. The quota
/// poller, when enabled, runs beside it as its own task: no request ever waits on a poll.
pub async fn serve(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let (background, stop_poller) = (tokio_util::task::TaskTracker::new(), shutdown.child_token());
    if let Some(poller) = proxy.quota.clone() {
        let (proxy, stop) = (proxy.clone(), stop_poller.clone());
        background.spawn(async move { poller.run(&proxy.metrics, stop).await });
    }
    background.close();
    let listening =
        Listening { limits: proxy.settings.listener, trips: proxy.metrics.listener.clone(), stalled_client: None };
    let service_for = |peer: std::net::SocketAddr| Dispatch {
        proxy: proxy.clone(),
        client: metrics::client_bucket_of(Some(peer.ip())),
    };
    let served = crate::net::serve_with(listener, service_for, listening, shutdown).await;
    stop_poller.cancel(); // the poller ends with the server, however the server ended
    background.wait().await;
    served
}

fn metrics_handler(p: &Proxy) -> Response {
    p.set_concurrency_gauges(p.inflight.load(Ordering::SeqCst));
    ([(header::CONTENT_TYPE, ProxyMetrics::content_type())], p.metrics.render()).into_response()
}

/// zai-proxy's `/health`: top-level keys sorted, nested objects in their own field order.
#[derive(serde::Serialize)]
struct HealthBody {
    quota: QuotaHealth,
    rate_limit: limiter::LimiterView,
    status: &'static str,
}

fn health_handler(p: &Proxy) -> Response {
    let quota = p.quota.as_ref().map_or_else(QuotaHealth::disabled, |q| q.health());
    axum::Json(HealthBody { quota, rate_limit: p.limiter.view(), status: "ok" }).into_response()
}

fn reset_handler(p: &Proxy, req: Request<Incoming>) -> Response {
    if req.method() != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response();
    }
    if !same_origin(req.headers(), req.uri()) {
        p.metrics.trips.add(Limit::CrossSite);
        return (StatusCode::FORBIDDEN, "cross-site request refused: Origin is not this proxy").into_response();
    }
    let rate = p.limiter.reset();
    p.metrics.rate_limit_rps.set(&[p.settings.variant.as_str()], rate);
    tracing::info!(rate, "Rate limit reset to RATE_LIMIT_INITIAL.");
    axum::Json(serde_json::json!({ "current_rate": rate, "status": "reset" })).into_response()
}

/// Checked before any path: a request with an `Origin` (a browser's) must come from the proxy's own origin
/// and name an allowed host. Requests without `Origin` (SDKs, curl) pass by any name.
///
/// Two attacks are refused here. A page on any site can send a "simple" cross-origin POST
/// (`Content-Type: text/plain`, no preflight) to `http://127.0.0.1:8081/v1/messages`: the
/// browser delivers it and only hides the answer, which is enough to spend the upstream key,
/// so an `Origin` that is not the proxy's own is refused (the proxy sends no CORS headers, so no
/// legitimate page on another origin could use it anyway). A page that rebinds its own DNS
/// name to the proxy passes that check (its origin and `Host` agree), so the name must also be
/// allowed (see [`crate::host`]).
fn browsers_by_allowed_names(p: &Proxy, req: &Request<Incoming>) -> Option<Response> {
    if !req.headers().contains_key(header::ORIGIN) {
        return None;
    }
    let refusal = if same_origin(req.headers(), req.uri()) {
        p.settings.allowed_hosts.refusal(req.headers(), req.uri())
    } else {
        Some("cross-origin request refused: this proxy serves API clients, and a page on another origin may not use its key.".to_owned())
    };
    let refusal = refusal?;
    p.metrics.trips.add(Limit::CrossSite);
    Some(forward::error(
        usage::ApiKind::from_path(req.uri().path()),
        StatusCode::FORBIDDEN,
        "permission_error",
        &refusal,
    ))
}

/// Whether a state-changing request may come from where it says. Browsers send `Origin` on
/// every cross-site POST (a form on any web page can target a loopback port); curl and scripts
/// send none and stay allowed. With an `Origin`, its host and port must be the ones the request
/// was sent to (`Host`, or the HTTP/2 authority); `Origin: null` never matches.
pub(crate) fn same_origin(headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| uri.authority().map(|a| a.as_str()));
    let (Ok(origin), Some(host)) = (origin.to_str(), host) else { return false };
    if host.contains(['/', '@', '?', '#', '\\']) {
        return false;
    }
    let Ok(origin) = url::Url::parse(origin) else { return false };
    let Ok(target) = url::Url::parse(&format!("{}://{host}/", origin.scheme())) else { return false };
    origin.host_str().is_some()
        && origin.host_str() == target.host_str()
        && origin.port_or_known_default() == target.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, Uri};

    fn check(origin: Option<&'static str>, host: &'static str) -> bool {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(o));
        }
        same_origin(&h, &Uri::from_static("/admin/reset-rate-limit"))
    }

    #[test]
    fn only_this_hosts_origin_may_post() {
        assert!(check(None, "127.0.0.1:8081"), "no Origin: curl, scripts");
        assert!(check(Some("http://127.0.0.1:8081"), "127.0.0.1:8081"));
        assert!(check(Some("http://proxy.local"), "proxy.local:80"), "default port");
        assert!(!check(Some("http://127.0.0.1:8080"), "127.0.0.1:8081"), "another port is another site");
        assert!(!check(Some("http://evil.example"), "127.0.0.1:8081"));
        assert!(!check(Some("null"), "127.0.0.1:8081"));
        assert!(!check(Some("http://a"), "a@b"));
    }

    /// The fixed paths answer as the router they replaced did: `GET`/`HEAD` only on `/metrics`
    /// and `/health` (405 with `Allow` otherwise), the reset's own 405, and any other path,
    /// `/metrics/` included, forwarded (here to a dead upstream: 502).
    #[tokio::test]
    async fn fixed_paths_are_matched_exactly_and_everything_else_is_forwarded() {
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut args = ProxyArgs::for_tests(&format!("http://{}", dead.local_addr().unwrap()));
        drop(dead);
        args.max_retries = "0".into();
        let proxy = Proxy::new(args.validate().unwrap(), Arc::new(crate::clock::SystemClock)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        let served = tokio::spawn(serve(listener, proxy, stop.clone()));
        let http = reqwest::Client::new();
        let send = |method: reqwest::Method, path: &str| http.request(method, format!("{base}{path}")).send();
        for (method, path) in [(reqwest::Method::POST, "/metrics"), (reqwest::Method::DELETE, "/health")] {
            let r = send(method, path).await.unwrap();
            assert_eq!((r.status().as_u16(), r.headers()["allow"].to_str().unwrap()), (405, "GET,HEAD"), "{path}");
        }
        assert_eq!(send(reqwest::Method::GET, "/metrics").await.unwrap().status(), 200);
        assert_eq!(send(reqwest::Method::HEAD, "/health").await.unwrap().status(), 200);
        let r = send(reqwest::Method::GET, "/admin/reset-rate-limit").await.unwrap();
        assert_eq!((r.status().as_u16(), r.text().await.unwrap().as_str()), (405, "method not allowed"));
        for path in ["/metrics/", "/healthz", "/v1/messages"] {
            let r = send(reqwest::Method::POST, path).await.unwrap();
            assert_eq!(r.status(), 502, "{path} is forwarded");
        }
        stop.cancel();
        served.await.unwrap().unwrap();
    }
}
