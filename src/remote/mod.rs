//! Remote write out: every scraped `zai_proxy_*` series, as scraped, shipped to a Prometheus
//! remote-write 1.0 receiver (Prometheus, VictoriaMetrics, Mimir, Thanos receive, ...).
//!
//! Two tasks, so neither the scraper nor each other wait:
//! - the **appender** takes each scrape's samples from the [`SampleSink`] hand-off (a bounded
//!   channel: a scrape never waits, a full hand-off drops and counts), gathers what arrives
//!   within a short window and encodes it ([`wire`]);
//! - the **shipper** sends the oldest samples, one request at a time so each series stays in
//!   time order. A 5xx, a 429 or a network error is retried with exponential backoff (or after
//!   `Retry-After`); any other refusal is permanent for that request, whose samples are dropped
//!   and counted, so a bad sample never blocks the queue.
//!
//! Samples that have to wait, wait in the durable [`SampleQueue`] the store implements: from the
//! first failed request until one succeeds, and at shutdown. While the receiver keeps up they go
//! from memory straight to it, because writing every scrape to SQLite and deleting it a second
//! later cost 13.9 KB of writes per scrape (BENCHMARKS.md) for nothing. Samples older than the
//! backlog's age limit, and the oldest beyond its byte limit, are dropped and counted, which
//! bounds the queue during a long outage in time and in disk. So an outage of the receiver or a
//! restart of zai-dash loses nothing within the backlog; a crash loses what was in memory (see
//! `status::Pending`).
//!
//! A receiver's answer is never read whole: its first 64 KiB at most, for the excerpt quoted
//! in the last error, then the connection is dropped. Warnings that repeat with every request
//! (refusals, drops) are written once, then at most once a minute with the count left out.

pub(crate) mod append;
pub(crate) mod attempt;
pub(crate) mod ship;
pub(crate) mod status;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::clock::SharedClock;
use crate::ports::samples::{SampleQueue, SampleSink, ScrapeSamples};
use crate::setting::{ConfigError, Secret, bad, parse_bytes, parse_duration};
pub use status::{RemoteStatus, StatusSnapshot};

/// Flags of remote write (part of `serve`).
#[derive(Debug, Clone, Default, Args)]
pub struct RemoteArgs {
    /// Ship every scraped `zai_proxy_*` series to this Prometheus remote-write endpoint
    /// (Prometheus `/api/v1/write`, VictoriaMetrics `/api/v1/write`, Mimir `/api/v1/push`).
    #[arg(long, env = "REMOTE_WRITE_URL", hide_env_values = true)]
    pub remote_write_url: Option<String>,
    /// Bearer token sent to the receiver.
    #[arg(long, env = "REMOTE_WRITE_BEARER_TOKEN", hide_env_values = true)]
    pub remote_write_bearer_token: Option<Secret>,
    /// Basic auth user name for the receiver (with `REMOTE_WRITE_PASSWORD`).
    #[arg(long, env = "REMOTE_WRITE_USERNAME", hide_env_values = true)]
    pub remote_write_username: Option<String>,
    /// Basic auth password for the receiver.
    #[arg(long, env = "REMOTE_WRITE_PASSWORD", hide_env_values = true)]
    pub remote_write_password: Option<Secret>,
    /// Extra request headers, comma-separated `Name=value` pairs (e.g. `X-Scope-OrgID=team-a`).
    #[arg(long, env = "REMOTE_WRITE_HEADERS", hide_env_values = true)]
    pub remote_write_headers: Option<Secret>,
    /// Samples older than this (receiver down) are dropped from the queue and counted.
    #[arg(long, env = "REMOTE_WRITE_MAX_BACKLOG", default_value = "2h")]
    pub remote_write_max_backlog: String,
    /// The queue holds at most this many bytes of encoded samples (`512MiB`, `1GB`); beyond
    /// it the oldest are dropped and counted.
    #[arg(long, env = "REMOTE_WRITE_MAX_BACKLOG_BYTES", default_value = "256MiB")]
    pub remote_write_max_backlog_bytes: String,
    /// Give up on one request after this long (it is retried).
    #[arg(long, env = "REMOTE_WRITE_TIMEOUT", default_value = "30s")]
    pub remote_write_timeout: String,
}

/// How the receiver is authenticated.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer`.
    Bearer(Secret),
    /// `Authorization: Basic`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
}

/// The remote writer's settings, composed into the whole by `config`. `Debug` shows the
/// receiver without credentials or query string.
#[derive(Clone)]
pub struct RemoteSettings {
    /// The receiver's endpoint.
    pub url: Url,
    /// Credentials.
    pub auth: Auth,
    /// Extra headers (values may be secrets: never logged).
    pub headers: Vec<(String, Secret)>,
    /// Queued samples older than this are dropped.
    pub max_backlog: Duration,
    /// Bytes of encoded samples the queue holds at most; the oldest beyond it are dropped.
    pub max_backlog_bytes: u64,
    /// Timeout of one request.
    pub timeout: Duration,
    /// First retry delay; doubles on each failure in a row.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Samples per request (a request holds whole scrapes, at least one).
    pub max_samples_per_send: u64,
    /// How long the appender gathers scrapes into one transaction.
    pub append_window: Duration,
}

impl std::fmt::Debug for RemoteSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSettings")
            .field("receiver", &receiver(&self.url))
            .field("auth", &self.auth)
            .field("headers", &self.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            .field("max_backlog", &self.max_backlog)
            .field("max_backlog_bytes", &self.max_backlog_bytes)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Default `REMOTE_WRITE_MAX_BACKLOG`.
pub(crate) const MAX_BACKLOG: Duration = Duration::from_secs(2 * 3600);
/// Default `REMOTE_WRITE_MAX_BACKLOG_BYTES`. The age limit alone let a target at the
/// 20,000-series cap queue 0.4 GB over the default two hours (about 80 minutes fill this), and
/// a fleet of them the disk; ordinary targets never reach it before the age limit.
pub(crate) const MAX_BACKLOG_BYTES: u64 = 256 << 20;
/// Headers remote write itself sets; configuring them would break the protocol.
const PROTOCOL_HEADERS: [&str; 4] =
    ["content-type", "content-encoding", "x-prometheus-remote-write-version", "content-length"];

impl RemoteSettings {
    /// Defaults for `url`: no credentials, 2 h and 256 MiB backlog, 30 s timeout, backoff 500 ms
    /// to 30 s.
    pub fn new(url: Url) -> Self {
        Self {
            url,
            auth: Auth::None,
            headers: Vec::new(),
            max_backlog: MAX_BACKLOG,
            max_backlog_bytes: MAX_BACKLOG_BYTES,
            timeout: Duration::from_secs(30),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_samples_per_send: 5_000,
            append_window: Duration::from_millis(500),
        }
    }

    /// The receiver as shown on pages and in logs.
    pub(crate) fn receiver(&self) -> String {
        receiver(&self.url)
    }
}

/// Scheme, host, port and path: never the user info or the query string (either may hold a
/// credential).
fn receiver(url: &Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}{}", url.scheme(), url.host_str().unwrap_or(""), url.path())
}

impl RemoteArgs {
    /// The validated settings, `None` when `REMOTE_WRITE_URL` is unset or empty.
    pub(crate) fn validate(&self) -> Result<Option<RemoteSettings>, ConfigError> {
        let Some(url) = self.remote_write_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let mut s = RemoteSettings::new(parse_url(url)?);
        s.auth = self.auth()?;
        s.headers = parse_headers(self.remote_write_headers.as_ref().map_or("", Secret::expose), &s.auth)?;
        s.max_backlog = parse_duration("REMOTE_WRITE_MAX_BACKLOG", &self.remote_write_max_backlog)?;
        if !self.remote_write_max_backlog_bytes.trim().is_empty() {
            s.max_backlog_bytes = parse_bytes("REMOTE_WRITE_MAX_BACKLOG_BYTES", &self.remote_write_max_backlog_bytes)?;
        }
        s.timeout = parse_duration("REMOTE_WRITE_TIMEOUT", &self.remote_write_timeout)?;
        Ok(Some(s))
    }

    /// Bearer token or basic auth, not both; a user name needs its password.
    fn auth(&self) -> Result<Auth, ConfigError> {
        let token = self.remote_write_bearer_token.as_ref().map(|t| t.expose().trim()).filter(|t| !t.is_empty());
        let user = self.remote_write_username.as_deref().map(str::trim).filter(|u| !u.is_empty());
        let password = self.remote_write_password.as_ref().filter(|p| !p.expose().is_empty());
        match (token, user, password) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(bad(
                "REMOTE_WRITE_BEARER_TOKEN and REMOTE_WRITE_USERNAME/REMOTE_WRITE_PASSWORD are both set; the receiver takes one kind of credentials.",
            )),
            (Some(t), None, None) => Ok(Auth::Bearer(Secret::new(t))),
            (None, Some(u), Some(p)) => Ok(Auth::Basic { username: u.to_owned(), password: p.clone() }),
            (None, Some(_), None) => Err(bad("REMOTE_WRITE_USERNAME is set without REMOTE_WRITE_PASSWORD.")),
            (None, None, Some(_)) => Err(bad("REMOTE_WRITE_PASSWORD is set without REMOTE_WRITE_USERNAME.")),
            (None, None, None) => Ok(Auth::None),
        }
    }
}

/// An `http(s)://` URL with a host and no user info (credentials have their own settings,
/// which are never shown).
fn parse_url(value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| {
        bad(format!("REMOTE_WRITE_URL is not a URL ({e}); use e.g. http://prometheus:9090/api/v1/write."))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad("REMOTE_WRITE_URL must be an http:// or https:// URL with a host."));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "REMOTE_WRITE_URL must not hold credentials; use REMOTE_WRITE_USERNAME and REMOTE_WRITE_PASSWORD.",
        ));
    }
    Ok(url)
}

/// `REMOTE_WRITE_HEADERS`: `Name=value` pairs separated by commas. The protocol's own headers
/// are refused, and so is `Authorization` when the credentials settings already set it.
fn parse_headers(value: &str, auth: &Auth) -> Result<Vec<(String, Secret)>, ConfigError> {
    let mut out: Vec<(String, Secret)> = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, v)) = pair.split_once('=') else {
            return Err(bad(
                "REMOTE_WRITE_HEADERS must be comma-separated Name=value pairs (e.g. X-Scope-OrgID=team-a).",
            ));
        };
        let (name, v) = (name.trim(), v.trim());
        let lower = name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(v).is_err()
        {
            return Err(bad(format!("REMOTE_WRITE_HEADERS has an invalid header name or value for {name:?}.")));
        }
        if PROTOCOL_HEADERS.contains(&lower.as_str()) {
            return Err(bad(format!("REMOTE_WRITE_HEADERS may not set {name}: remote write sets it.")));
        }
        if lower == "authorization" && !matches!(auth, Auth::None) {
            return Err(bad(
                "REMOTE_WRITE_HEADERS sets Authorization while REMOTE_WRITE_BEARER_TOKEN or basic auth is set.",
            ));
        }
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(bad(format!("REMOTE_WRITE_HEADERS sets {name} twice.")));
        }
        out.push((name.to_owned(), Secret::new(v)));
    }
    Ok(out)
}

/// Why the remote writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The HTTP client could not be built (TLS set-up, a header).
    #[error("cannot build the remote write client: {0}")]
    Client(String),
    /// The queue could not be read.
    #[error("cannot read the remote write queue: {0}")]
    Queue(crate::ports::samples::QueueError),
}

/// Scrapes the hand-off holds before a new one is dropped (the appender fell behind a slow
/// disk for this long).
const HANDOFF_SCRAPES: usize = 1024;

/// A running remote writer: the sink the scraper offers samples to, and the status pages read.
#[derive(Debug)]
pub struct Remote {
    /// Where the scraper hands each scrape's samples.
    pub sink: Arc<dyn SampleSink>,
    /// Counters and the queue's shape.
    pub status: Arc<RemoteStatus>,
}

/// The scraper's side of the hand-off.
#[derive(Debug)]
struct Handoff {
    tx: mpsc::Sender<ScrapeSamples>,
    status: Arc<RemoteStatus>,
}

impl SampleSink for Handoff {
    fn offer(&self, samples: ScrapeSamples) {
        let left_out = samples.left_out as u64;
        let n = samples.series.len() as u64;
        self.status.dropped_before_queue(left_out);
        if let Err(e) = self.tx.try_send(samples) {
            let reason = if matches!(e, mpsc::error::TrySendError::Full(_)) { "full" } else { "closed" };
            tracing::debug!(reason, samples = n, "Remote write hand-off refused a scrape; its samples are dropped.");
            self.status.dropped_before_queue(n);
        }
    }
}

/// Starts the appender and the shipper on `tracker`. The appender ends when every holder of the
/// sink is gone (the scrapers stopped), after queueing what they offered; the shipper ends on
/// `cancel`, leaving whatever is queued for the next start.
pub async fn spawn(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    settings: RemoteSettings,
    queue: Arc<dyn SampleQueue>,
    clock: SharedClock,
) -> Result<Remote, RemoteError> {
    let summary = queue.summary().await.map_err(RemoteError::Queue)?;
    let queued = summary.samples;
    let status = Arc::new(RemoteStatus::new(settings.receiver(), summary));
    let client = attempt::client(&settings).map_err(|e| RemoteError::Client(e.without_url().to_string()))?;
    if queued > 0 {
        tracing::info!(samples = queued, receiver = %settings.receiver(), "Remote write resumes with queued samples.");
    }
    let (tx, rx) = mpsc::channel(HANDOFF_SCRAPES);
    let wake = Arc::new(Notify::new());
    let settings = Arc::new(settings);
    let shipper = ship::Shipper {
        settings: settings.clone(),
        queue: queue.clone(),
        status: status.clone(),
        client,
        clock: clock.clone(),
        wake: wake.clone(),
    };
    let appender = append::Appender {
        queue,
        status: status.clone(),
        clock,
        wake,
        window: settings.append_window,
        max_bytes: settings.max_backlog_bytes,
    };
    tracker.spawn(appender.run(rx));
    tracker.spawn(shipper.run(cancel.clone()));
    Ok(Remote { sink: Arc::new(Handoff { tx, status: status.clone() }), status })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> RemoteArgs {
        RemoteArgs {
            remote_write_url: Some(url.into()),
            remote_write_max_backlog: "2h".into(),
            remote_write_max_backlog_bytes: "256MiB".into(),
            remote_write_timeout: "30s".into(),
            ..RemoteArgs::default()
        }
    }

    #[test]
    fn unset_or_empty_means_off() {
        assert!(RemoteArgs { remote_write_url: Some(" ".into()), ..args("") }.validate().unwrap().is_none());
        assert!(RemoteArgs { remote_write_url: None, ..args("") }.validate().unwrap().is_none());
    }

    #[test]
    fn settings_parse_and_hide_secrets() {
        let mut a = args("https://mimir.example:8443/api/v1/push?tenant=x");
        a.remote_write_username = Some("zai".into());
        a.remote_write_password = Some(Secret::new("hunter2-password"));
        a.remote_write_headers = Some(Secret::new("X-Scope-OrgID=team-a, X-Api-Key=sekrit-value"));
        let s = a.validate().unwrap().unwrap();
        assert_eq!(s.headers.len(), 2);
        assert_eq!(s.max_backlog_bytes, 256 << 20);
        assert_eq!(s.receiver(), "https://mimir.example:8443/api/v1/push");
        let shown = format!("{s:?}");
        for secret in ["hunter2", "sekrit", "tenant=x"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("X-Scope-OrgID"));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases: Vec<(RemoteArgs, &str)> = vec![
            (args("prometheus:9090"), "REMOTE_WRITE_URL"),
            (args("http://user:pw@prom/api/v1/write"), "REMOTE_WRITE_USERNAME"),
            (
                RemoteArgs { remote_write_headers: Some(Secret::new("Content-Type=text/plain")), ..args("http://p/w") },
                "Content-Type",
            ),
            (RemoteArgs { remote_write_headers: Some(Secret::new("novalue")), ..args("http://p/w") }, "Name=value"),
            (RemoteArgs { remote_write_username: Some("u".into()), ..args("http://p/w") }, "REMOTE_WRITE_PASSWORD"),
            (
                RemoteArgs {
                    remote_write_bearer_token: Some(Secret::new("t")),
                    remote_write_username: Some("u".into()),
                    ..args("http://p/w")
                },
                "both set",
            ),
            (RemoteArgs { remote_write_max_backlog: "soon".into(), ..args("http://p/w") }, "REMOTE_WRITE_MAX_BACKLOG"),
            (
                RemoteArgs { remote_write_max_backlog_bytes: "lots".into(), ..args("http://p/w") },
                "REMOTE_WRITE_MAX_BACKLOG_BYTES has an invalid size",
            ),
        ];
        for (a, needle) in cases {
            let e = a.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e} should name {needle}");
        }
    }
}
