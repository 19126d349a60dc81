//! Command line and environment configuration, validated into [`Settings`].
//!
//! Every setting is a clap flag with the environment variable of the same name as fallback, so
//! the Go dashboard's variables (`LISTEN_ADDR`, `SCRAPE_TARGETS`, ...) work unchanged. Values are
//! taken as strings and checked here rather than by clap, so that every bad value gets one
//! sentence naming the setting. Unlike the Go dashboard, a value that does not parse refuses to
//! start instead of silently falling back to a default. Nothing downstream sees raw [`ServeArgs`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::alerts::{AlertArgs, AlertSettings};
use crate::canary::CanaryConfig;
use crate::host::{AllowedHosts, HostArgs};
use crate::net::ListenerLimits;
use crate::promsource::{EngineArgs, EngineSettings};
use crate::proxy::{ProxyArgs, ProxySettings};
use crate::remote::{RemoteArgs, RemoteSettings};
use crate::scrape::ScrapeSettings;
pub use crate::scrape::{DNS_SCHEME_PREFIX, TargetSpec, parse_targets};
use crate::setting::bad;
pub use crate::setting::{ConfigError, Secret, duration_ms, parse_duration, parse_listen_addr, prepare_db_path};
pub(crate) use crate::telemetry::LogFormat;
use crate::web::session::{SessionArgs, SessionPolicy};
use crate::web::{ConfiguredTarget, WebSettings};

/// `zai-dash`: observability for LLM API proxies.
#[derive(Debug, Parser)]
#[command(name = "zai-dash", version = crate::VERSION, about, long_about = None)]
pub struct Cli {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up; boxing buys nothing
pub enum Command {
    /// Scrape the targets, store the series and serve the API, live events and pages.
    Serve(ServeArgs),
    /// Run only the built-in LLM proxy (zai-proxy compatible), with `/metrics` on the same port.
    Proxy(ProxyCommandArgs),
    /// Run the whole loop with no setup: simulated upstream, two proxies, traffic, dashboard.
    Demo(DemoArgs),
    /// Ask a running zai-dash on this machine whether it is alive (`/healthz`); exit 0 or 1.
    /// For container `HEALTHCHECK`s, so the image needs no curl.
    Healthcheck(HealthcheckArgs),
    /// Print the Grafana dashboard (the overview's panels over the same PromQL, for an engine
    /// holding the `zai_proxy_*` series) as JSON; `k8s/grafana/zai-dash.json` is its output.
    Grafana,
    /// Check the alerting rules (`ALERT_RULES`, else the built-in ones) and print them; with
    /// `--prometheus`, as a Prometheus rule file over the `zai_proxy_*` series.
    Rules(RulesArgs),
    /// Check the canary analysis configuration (`CANARY_CONFIG`, else the built-in one) and
    /// print it as YAML; with `--print-config`, print the built-in defaults.
    Canary(CanaryArgs),
}

/// Flags of `zai-dash canary`.
#[derive(Debug, Clone, Args)]
pub struct CanaryArgs {
    /// Print the built-in configuration (a starting point for `CANARY_CONFIG`) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// YAML file of canary analysis settings; empty means the built-in ones.
    #[arg(long, env = "CANARY_CONFIG", default_value = "")]
    pub canary_config: String,
}

/// Flags of `zai-dash rules`.
#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    /// Print a Prometheus rule file (for `rule_files:`) instead of a summary.
    #[arg(long)]
    pub prometheus: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub alerts: AlertFlags,
}

/// Alert flags shared by `serve` and `rules`.
#[derive(Debug, Clone, Default, Args)]
pub struct AlertFlags {
    /// YAML file of alerting rules (a top-level `rules:` list); empty means the built-in rules.
    #[arg(long, env = "ALERT_RULES", default_value = "")]
    pub alert_rules: String,
    /// Alertmanager base URL (`http://alertmanager:9093`); alerts go to its `/api/v2/alerts`.
    #[arg(long, env = "ALERTMANAGER_URL", default_value = "", hide_env_values = true)]
    pub alertmanager_url: String,
    /// A webhook that receives each alert as it fires and resolves.
    #[arg(long, env = "ALERT_WEBHOOK_URL", default_value = "", hide_env_values = true)]
    pub alert_webhook_url: String,
    /// Body of webhook messages: `alertmanager` (Alertmanager's webhook JSON) or `slack`.
    #[arg(long, env = "ALERT_WEBHOOK_FORMAT", default_value = "alertmanager")]
    pub alert_webhook_format: String,
    /// Daily spend budget in USD (UTC days); alerts at 80, 95 and 100 % of the spend and of its
    /// projection. Empty: none.
    #[arg(long, env = "BUDGET_DAILY_USD", default_value = "")]
    pub budget_daily_usd: String,
    /// Monthly spend budget in USD (UTC months), alerted like the daily one. Empty: none.
    #[arg(long, env = "BUDGET_MONTHLY_USD", default_value = "")]
    pub budget_monthly_usd: String,
}

impl AlertFlags {
    /// Reads the rules and checks the receivers.
    pub(crate) fn validate(&self) -> Result<AlertSettings, ConfigError> {
        AlertSettings::validate(&AlertArgs {
            rules_path: Some(std::path::Path::new(self.alert_rules.trim())),
            alertmanager_url: Some(&self.alertmanager_url),
            webhook_url: Some(&self.alert_webhook_url),
            webhook_format: Some(&self.alert_webhook_format),
            budget_daily_usd: Some(&self.budget_daily_usd),
            budget_monthly_usd: Some(&self.budget_monthly_usd),
        })
    }
}

/// Source mode flags (`--source prometheus`): the engine every number is read from.
#[derive(Debug, Clone, Default, Args)]
pub struct EngineFlags {
    /// Source mode: the engine's base URL (Prometheus, VictoriaMetrics, Thanos; Mimir's ends in
    /// `/prometheus`). Credentials in it are sent as basic auth and never shown.
    #[arg(long, env = "PROMETHEUS_URL", default_value = "", hide_env_values = true)]
    pub prometheus_url: String,
    /// Source mode: a token sent as `Authorization: Bearer`.
    #[arg(long, env = "PROMETHEUS_BEARER_TOKEN", hide_env_values = true)]
    pub prometheus_bearer_token: Option<Secret>,
    /// Source mode: extra headers, `Name: value` entries separated by commas (`X-Scope-OrgID:
    /// tenant` for Mimir). Values are treated as secrets.
    #[arg(long, env = "PROMETHEUS_HEADERS", hide_env_values = true)]
    pub prometheus_headers: Option<Secret>,
    /// Source mode: limit on every query to the engine.
    #[arg(long, env = "PROMETHEUS_TIMEOUT", default_value = crate::promsource::settings::DEFAULT_TIMEOUT)]
    pub prometheus_timeout: String,
    /// Source mode: how long the engine may take to answer with a scrape's samples (12s for
    /// VictoriaMetrics, which makes new series searchable up to 10 s later).
    #[arg(long, env = "PROMETHEUS_DELAY", default_value = crate::promsource::settings::DEFAULT_DELAY)]
    pub prometheus_delay: String,
}

impl EngineFlags {
    fn args(&self) -> EngineArgs<'_> {
        EngineArgs {
            url: Some(&self.prometheus_url),
            bearer_token: self.prometheus_bearer_token.as_ref(),
            headers: self.prometheus_headers.as_ref(),
            timeout: Some(&self.prometheus_timeout),
            delay: Some(&self.prometheus_delay),
        }
    }
}

/// Flags of `zai-dash proxy`.
#[derive(Debug, Clone, Args)]
pub struct ProxyCommandArgs {
    /// Address to listen on; Go's `:8080` form means all interfaces.
    #[arg(long, env = "LISTEN_ADDR", default_value = ":8080")]
    pub listen_addr: String,
    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s")]
    pub shutdown_grace: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub proxy: ProxyArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub hosts: HostArgs,
}

/// Flags of `zai-dash demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Address of the dashboard.
    #[arg(long, env = "LISTEN_ADDR", default_value = ":8080")]
    pub listen_addr: String,
    /// SQLite file of the demo; the proxies' rate limit state files go next to it.
    #[arg(long, env = "DB_PATH", default_value = "./data/zai-dash-demo.db")]
    pub db_path: PathBuf,
    /// Requests per second the traffic generator sends (split 75/25 between production and canary).
    #[arg(long, env = "DEMO_RATE", default_value = "6")]
    pub rate: String,
}

/// Flags of `zai-dash healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The server's listen address; its port is probed on loopback when it listens on all interfaces.
    #[arg(long, env = "LISTEN_ADDR", default_value = ":8080")]
    pub listen_addr: String,
    /// Give up after this long.
    #[arg(long, default_value = "2s")]
    pub timeout: String,
}

/// Flags of `zai-dash serve`. Durations are humantime strings (`500ms`, `5s`, `24h`, `7d`).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; Go's `:8080` form means all interfaces.
    #[arg(long, env = "LISTEN_ADDR", default_value = ":8080")]
    pub listen_addr: String,
    /// Where the numbers come from: `sqlite` (scrape the targets into DB_PATH) or `prometheus`
    /// (read them with PromQL from an engine that already scrapes the proxies; no file, no
    /// scraping, any number of replicas).
    #[arg(long, env = "SOURCE", default_value = "sqlite")]
    pub source: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub engine: EngineFlags,
    /// Comma-separated `/metrics` URLs, each optionally prefixed with `VARIANT=`.
    #[arg(long, env = "SCRAPE_TARGETS", default_value = "", hide_env_values = true)]
    pub scrape_targets: String,
    /// Time between two scrapes of one target (source mode: how often the engine scrapes the
    /// proxies).
    #[arg(long, env = "SCRAPE_INTERVAL", default_value = "5s")]
    pub scrape_interval: String,
    /// Give up on a scrape after this long; must be shorter than the interval.
    #[arg(long, env = "SCRAPE_TIMEOUT", default_value = DEFAULT_SCRAPE_TIMEOUT)]
    pub scrape_timeout: String,
    /// SQLite database file; its directory is created when missing.
    #[arg(long, env = "DB_PATH", default_value = "./data/zai-dash.db")]
    pub db_path: PathBuf,
    /// How long 5-second rows are kept.
    #[arg(long, env = "RETENTION_5S", default_value = DEFAULT_RETENTION_5S)]
    pub retention_5s: String,
    /// How long 1-minute rows are kept.
    #[arg(long, env = "RETENTION_1M", default_value = DEFAULT_RETENTION_1M)]
    pub retention_1m: String,
    /// How long 10-minute rows (ranges over a day) are kept.
    #[arg(long, env = "RETENTION_10M", default_value = DEFAULT_RETENTION_10M)]
    pub retention_10m: String,
    /// How often complete minutes are rolled up and retention is enforced.
    #[arg(long, env = "DOWNSAMPLE_INTERVAL", default_value = DEFAULT_DOWNSAMPLE_INTERVAL)]
    pub downsample_interval: String,
    /// How long shutdown may take before the process gives up and exits non-zero.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s")]
    pub shutdown_grace: String,
    /// Also run the built-in proxy on its own listener and scrape it.
    #[arg(long)]
    pub proxy: bool,
    /// Address of the built-in proxy (with `--proxy`).
    #[arg(long, env = "PROXY_LISTEN_ADDR", default_value = ":8081")]
    pub proxy_listen_addr: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub proxy_args: ProxyArgs,
    /// Time a client has to send a complete request head to the dashboard, from its first
    /// byte; then the connection is dropped.
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT", default_value = "30s")]
    pub http_header_read_timeout: String,
    /// How long a connection to the dashboard may sit without a request (between two, or since
    /// connect) before it is closed. Open live-event streams are not idle and are never cut by it.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", default_value = "120s")]
    pub http_idle_timeout: String,
    /// When set, pages, API and `/metrics` require this token (bearer header or login cookie);
    /// `/healthz` and `/readyz` stay open. Empty means no authentication.
    #[arg(long, env = "DASHBOARD_TOKEN", hide_env_values = true)]
    pub dashboard_token: Option<Secret>,
    /// How long a dashboard session lasts after signing in with the token.
    #[arg(long, env = "SESSION_TTL", default_value = "12h")]
    pub session_ttl: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub sessions: SessionArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub hosts: HostArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub alerts: AlertFlags,
    /// YAML file of canary analysis settings (metrics, allowed degradations, `alpha`); empty
    /// means the built-in ones (`zai-dash canary --print-config`).
    #[arg(long, env = "CANARY_CONFIG", default_value = "")]
    pub canary_config: String,
}

/// The built-in proxy of `serve --proxy`.
#[derive(Debug, Clone)]
pub struct ProxyPlan {
    /// Its own listener.
    pub listen_addr: SocketAddr,
    /// Its settings.
    pub settings: ProxySettings,
}

/// Validated settings; the only configuration the rest of the program sees.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the HTTP server listens.
    pub listen_addr: SocketAddr,
    /// What to scrape.
    pub targets: Vec<TargetSpec>,
    /// Time between two scrapes of a target.
    pub scrape_interval: Duration,
    /// Per-scrape timeout, always below the interval.
    pub scrape_timeout: Duration,
    /// SQLite file.
    pub db_path: PathBuf,
    /// Retention of `metrics_5s`.
    pub retention_5s: Duration,
    /// Retention of `metrics_1m`.
    pub retention_1m: Duration,
    /// Retention of `metrics_10m`.
    pub retention_10m: Duration,
    /// Period of the rollup and retention job.
    pub downsample_interval: Duration,
    /// Upper bound on a graceful shutdown.
    pub shutdown_grace: Duration,
    /// Width of a raw point (5 s in production; tests shrink it so they need not wait).
    pub point_width: Duration,
    /// Width of a rolled-up point (1 min in production).
    pub rollup_width: Duration,
    /// Largest accepted `/metrics` body; a larger one is a failed scrape.
    pub max_body_bytes: usize,
    /// The built-in proxy to run alongside (`serve --proxy`).
    pub proxy: Option<ProxyPlan>,
    /// Token protecting pages, API and `/metrics`; `None` leaves them open.
    pub dashboard_token: Option<Secret>,
    /// A line every page shows (the demo says which data is simulated).
    pub notice: Option<String>,
    /// How long a dashboard client may take no byte while data waits for it before its
    /// connection is closed by the kernel (`TCP_USER_TIMEOUT`, see `net::Listening`).
    pub stalled_client_timeout: Duration,
    /// How long a dashboard session lasts.
    pub session_ttl: Duration,
    /// `COOKIE_SECURE` and `SESSION_EPOCH`.
    pub sessions: SessionPolicy,
    /// DNS names browsers may change state by, on the dashboard and the built-in proxy.
    pub allowed_hosts: AllowedHosts,
    /// Header-read and idle deadlines of the dashboard's connections.
    pub listener: ListenerLimits,
    /// Remote write out, when `REMOTE_WRITE_URL` is set.
    pub remote: Option<RemoteSettings>,
    /// Alerting rules and receivers.
    pub alerts: AlertSettings,
    /// Source mode: the engine every number is read from; `None` scrapes into SQLite.
    pub engine: Option<EngineSettings>,
    /// Canary analysis settings (`CANARY_CONFIG`, else the built-in ones).
    pub canary: CanaryConfig,
}

/// Default width of a raw point.
pub(crate) const POINT_WIDTH: Duration = Duration::from_secs(5);
/// Default width of a rolled-up point.
pub(crate) const ROLLUP_WIDTH: Duration = Duration::from_secs(60);
/// How long a dashboard client may accept no data before it is cut: well beyond any transient
/// stall of a working connection (7 lost retransmissions in a row take 25 s), short enough that
/// a frozen client holds at most its receive buffer plus 30 s of events.
pub(crate) const STALLED_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on a scraped body (16 MiB).
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Defaults of the settings only SQLite mode uses (source mode refuses them when changed).
const DEFAULT_SCRAPE_TIMEOUT: &str = "3s";
const DEFAULT_RETENTION_5S: &str = "24h";
const DEFAULT_RETENTION_1M: &str = "168h";
const DEFAULT_RETENTION_10M: &str = "30d";
const DEFAULT_DOWNSAMPLE_INTERVAL: &str = "1m";

impl ServeArgs {
    /// Checks every value and turns the strings into typed [`Settings`].
    pub(crate) fn validate(&self) -> Result<Settings, ConfigError> {
        let engine = self.engine_plan()?;
        let (scrape_interval, scrape_timeout) = self.scrape_timing(engine.is_some())?;
        let (retention_5s, retention_1m, retention_10m, downsample_interval) = self.retentions()?;
        let allowed_hosts = self.hosts.validate()?;
        let proxy = self.proxy_plan(&allowed_hosts)?;
        let alerts = self.alerts.validate()?;
        if engine.is_none() {
            // An objective's SLI must cover its whole period: refused when no table keeps it.
            let kept = crate::budget::slo::Retention { retention_5s, retention_1m, retention_10m };
            crate::budget::slo::check_retention(&alerts.slos, &kept)?;
        }
        let targets = match parse_targets(&self.scrape_targets) {
            _ if engine.is_some() => Vec::new(),
            Err(_) if proxy.is_some() && self.scrape_targets.split(',').all(|t| t.trim().is_empty()) => Vec::new(),
            other => other?,
        };
        Ok(Settings {
            listen_addr: parse_listen_addr("LISTEN_ADDR", &self.listen_addr)?,
            targets,
            proxy,
            scrape_interval,
            scrape_timeout,
            // Source mode keeps no file: DB_PATH is not even created (the image sets it anyway).
            db_path: if engine.is_some() { self.db_path.clone() } else { prepare_db_path(&self.db_path)? },
            retention_5s,
            retention_1m,
            retention_10m,
            downsample_interval,
            shutdown_grace: parse_duration("SHUTDOWN_GRACE", &self.shutdown_grace)?,
            point_width: POINT_WIDTH,
            rollup_width: ROLLUP_WIDTH,
            max_body_bytes: MAX_BODY_BYTES,
            dashboard_token: dashboard_token(self.dashboard_token.as_ref())?,
            notice: None,
            stalled_client_timeout: STALLED_CLIENT_TIMEOUT,
            session_ttl: parse_duration("SESSION_TTL", &self.session_ttl)?,
            sessions: self.sessions.validate()?,
            allowed_hosts,
            listener: ListenerLimits {
                header_read: parse_duration("HTTP_HEADER_READ_TIMEOUT", &self.http_header_read_timeout)?,
                idle: parse_duration("HTTP_IDLE_TIMEOUT", &self.http_idle_timeout)?,
            },
            remote: self.remote.validate()?,
            alerts,
            engine,
            canary: canary_config(&self.canary_config)?,
        })
    }

    /// Source mode's engine when `SOURCE=prometheus`, refusing settings that only SQLite mode
    /// uses; in SQLite mode, refusing the engine's settings (they would be silently ignored).
    fn engine_plan(&self) -> Result<Option<EngineSettings>, ConfigError> {
        let args = self.engine.args();
        match self.source.trim() {
            "" | "sqlite" => match args.given().first() {
                Some(name) => Err(bad(format!(
                    "{name} is set but SOURCE is sqlite; add --source prometheus (SOURCE=prometheus) to read from the engine, or remove {name}."
                ))),
                None => Ok(None),
            },
            "prometheus" => {
                self.refuse_sqlite_only()?;
                Ok(Some(EngineSettings::validate(&args)?))
            }
            other => Err(bad(format!("SOURCE {other:?} is not one of sqlite, prometheus."))),
        }
    }

    /// Settings that make no sense when the engine scrapes and keeps the data. `DB_PATH` is
    /// left out: the image sets it, and source mode simply never opens it.
    fn refuse_sqlite_only(&self) -> Result<(), ConfigError> {
        let changed = |v: &str, default: &str| {
            humantime::parse_duration(v.trim()).ok() != humantime::parse_duration(default).ok()
        };
        let set = [
            ("SCRAPE_TARGETS", !self.scrape_targets.split(',').all(|t| t.trim().is_empty())),
            ("--proxy", self.proxy),
            ("SCRAPE_TIMEOUT", changed(&self.scrape_timeout, DEFAULT_SCRAPE_TIMEOUT)),
            ("RETENTION_5S", changed(&self.retention_5s, DEFAULT_RETENTION_5S)),
            ("RETENTION_1M", changed(&self.retention_1m, DEFAULT_RETENTION_1M)),
            ("RETENTION_10M", changed(&self.retention_10m, DEFAULT_RETENTION_10M)),
            ("DOWNSAMPLE_INTERVAL", changed(&self.downsample_interval, DEFAULT_DOWNSAMPLE_INTERVAL)),
            // Nothing is scraped, so there is nothing to ship.
            ("REMOTE_WRITE_URL", self.remote.remote_write_url.as_deref().is_some_and(|u| !u.trim().is_empty())),
        ];
        match set.iter().find(|(_, given)| *given) {
            Some((name, _)) => Err(bad(format!(
                "{name} has no effect with SOURCE=prometheus (the engine scrapes the proxies and keeps the data, zai-dash keeps no SQLite file); remove it, or use SOURCE=sqlite."
            ))),
            None => Ok(()),
        }
    }

    /// Interval and timeout, the timeout shorter (or scrapes of one target would overlap). In
    /// source mode the interval is the engine's and zai-dash times no scrape of its own.
    fn scrape_timing(&self, source_mode: bool) -> Result<(Duration, Duration), ConfigError> {
        let interval = parse_duration("SCRAPE_INTERVAL", &self.scrape_interval)?;
        let timeout = parse_duration("SCRAPE_TIMEOUT", &self.scrape_timeout)?;
        if timeout >= interval && !source_mode {
            return Err(bad(format!(
                "SCRAPE_TIMEOUT ({}) must be shorter than SCRAPE_INTERVAL ({}), or scrapes of one target would overlap.",
                self.scrape_timeout, self.scrape_interval
            )));
        }
        Ok((interval, timeout))
    }

    /// Retention of each table and the downsample interval: every table keeps its rows at least
    /// until they are rolled into the next.
    fn retentions(&self) -> Result<(Duration, Duration, Duration, Duration), ConfigError> {
        let retention_5s = parse_duration("RETENTION_5S", &self.retention_5s)?;
        let retention_1m = parse_duration("RETENTION_1M", &self.retention_1m)?;
        let retention_10m = parse_duration("RETENTION_10M", &self.retention_10m)?;
        let downsample_interval = parse_duration("DOWNSAMPLE_INTERVAL", &self.downsample_interval)?;
        if retention_5s < 2 * ROLLUP_WIDTH + downsample_interval {
            return Err(bad(format!(
                "RETENTION_5S ({}) must be at least 2m plus DOWNSAMPLE_INTERVAL ({}), so raw rows live until they are rolled up.",
                self.retention_5s, self.downsample_interval
            )));
        }
        if retention_1m < ROLLUP_WIDTH {
            return Err(bad(format!("RETENTION_1M ({}) must be at least 1m.", self.retention_1m)));
        }
        if retention_10m < retention_1m {
            return Err(bad(format!(
                "RETENTION_10M ({}) must be at least RETENTION_1M ({}): ranges over a day read 10-minute rows.",
                self.retention_10m, self.retention_1m
            )));
        }
        Ok((retention_5s, retention_1m, retention_10m, downsample_interval))
    }

    /// The built-in proxy of `serve --proxy`, when asked for; browsers reach it by the same
    /// names as the dashboard.
    fn proxy_plan(&self, allowed_hosts: &AllowedHosts) -> Result<Option<ProxyPlan>, ConfigError> {
        if !self.proxy {
            return Ok(None);
        }
        let mut settings = self.proxy_args.validate()?;
        settings.allowed_hosts = allowed_hosts.clone();
        Ok(Some(ProxyPlan { listen_addr: parse_listen_addr("PROXY_LISTEN_ADDR", &self.proxy_listen_addr)?, settings }))
    }
}

/// Shortest accepted `DASHBOARD_TOKEN`: a token is the only secret between the network and the
/// dashboard, and guessing is limited per address, not globally.
pub(crate) const MIN_TOKEN_CHARS: usize = 16;

/// `DASHBOARD_TOKEN` without surrounding whitespace (a trailing newline from a secret file
/// would otherwise never match); empty means no authentication; a short one refuses to start.
fn dashboard_token(token: Option<&Secret>) -> Result<Option<Secret>, ConfigError> {
    let Some(t) = token.map(|t| t.expose().trim()).filter(|t| !t.is_empty()) else { return Ok(None) };
    if t.chars().count() < MIN_TOKEN_CHARS {
        return Err(bad(format!(
            "DASHBOARD_TOKEN is shorter than {MIN_TOKEN_CHARS} characters; use a long random token (e.g. openssl rand -hex 24)."
        )));
    }
    Ok(Some(Secret::new(t)))
}

/// The canary settings `CANARY_CONFIG` names, or the built-in ones when it is empty.
fn canary_config(path: &str) -> Result<CanaryConfig, ConfigError> {
    match path.trim() {
        "" => Ok(CanaryConfig::default()),
        p => CanaryConfig::load(std::path::Path::new(p)),
    }
}

impl Settings {
    /// Settings for tests: the given targets and database, loopback port 0, short timings, no
    /// alert rules.
    pub fn for_tests(targets: Vec<TargetSpec>, db_path: PathBuf) -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            targets,
            scrape_interval: Duration::from_millis(200),
            scrape_timeout: Duration::from_millis(150),
            db_path,
            retention_5s: Duration::from_secs(24 * 3600),
            retention_1m: Duration::from_secs(7 * 24 * 3600),
            retention_10m: Duration::from_secs(30 * 24 * 3600),
            downsample_interval: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            point_width: Duration::from_millis(500),
            rollup_width: Duration::from_secs(6),
            max_body_bytes: MAX_BODY_BYTES,
            proxy: None,
            dashboard_token: None,
            notice: None,
            stalled_client_timeout: STALLED_CLIENT_TIMEOUT,
            session_ttl: Duration::from_secs(12 * 3600),
            sessions: SessionPolicy::default(),
            allowed_hosts: AllowedHosts::default(),
            listener: ListenerLimits::default(),
            remote: None,
            // No rules: alert events would interleave with the points other suites count on
            // the live stream; tests of alerts set their own rules.
            alerts: AlertSettings { rules: Vec::new(), ..AlertSettings::default() },
            engine: None,
            canary: CanaryConfig::default(),
        }
    }

    /// Width of a raw point in milliseconds.
    pub fn point_ms(&self) -> i64 {
        duration_ms(self.point_width)
    }

    /// Width of a rolled-up point in milliseconds.
    pub fn rollup_ms(&self) -> i64 {
        duration_ms(self.rollup_width)
    }

    /// The collector's part.
    pub(crate) fn scrape(&self) -> ScrapeSettings {
        ScrapeSettings {
            interval: self.scrape_interval,
            timeout: self.scrape_timeout,
            point_width: self.point_width,
            max_body_bytes: self.max_body_bytes,
        }
    }

    /// The store's part.
    pub fn store(&self) -> crate::store::StoreSettings {
        crate::store::StoreSettings {
            point_width: self.point_width,
            rollup_width: self.rollup_width,
            retention_5s: self.retention_5s,
            retention_1m: self.retention_1m,
            retention_10m: self.retention_10m,
            downsample_interval: self.downsample_interval,
        }
    }

    /// The web layer's part.
    pub fn web(&self) -> WebSettings {
        WebSettings {
            scrape_interval: self.scrape_interval,
            scrape_timeout: self.scrape_timeout,
            targets: self
                .targets
                .iter()
                .map(|t| ConfiguredTarget {
                    url: crate::redact::RedactedUrl::from(&t.url).to_string(),
                    initial_variant: t.initial_variant(),
                })
                .collect(),
            retention_5s: self.retention_5s,
            retention_1m: self.retention_1m,
            retention_10m: self.retention_10m,
            downsample_interval: self.downsample_interval,
            point_width: self.point_width,
            rollup_width: self.rollup_width,
            dashboard_token: self.dashboard_token.clone(),
            notice: self.notice.clone(),
            session_ttl: self.session_ttl,
            sessions: self.sessions.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            engine: self.engine.as_ref().map(EngineSettings::display_url),
            canary: self.canary.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            listen_addr: ":8080".into(),
            scrape_targets: "http://a:8080/metrics".into(),
            scrape_interval: "5s".into(),
            scrape_timeout: "3s".into(),
            db_path: std::env::temp_dir().join("zai-dash-config-test/x.db"),
            retention_5s: "24h".into(),
            retention_1m: "7d".into(),
            retention_10m: "30d".into(),
            downsample_interval: "1m".into(),
            shutdown_grace: "10s".into(),
            proxy: false,
            proxy_listen_addr: ":8081".into(),
            proxy_args: crate::proxy::ProxyArgs::for_tests("http://127.0.0.1:1"),
            dashboard_token: None,
            session_ttl: "12h".into(),
            sessions: SessionArgs::default(),
            hosts: HostArgs::default(),
            http_header_read_timeout: "30s".into(),
            http_idle_timeout: "120s".into(),
            remote: crate::remote::RemoteArgs::default(),
            alerts: AlertFlags::default(),
            canary_config: String::new(),
            source: "sqlite".into(),
            engine: EngineFlags {
                prometheus_timeout: "10s".into(),
                prometheus_delay: "1500ms".into(),
                ..EngineFlags::default()
            },
        }
    }

    fn err(a: ServeArgs) -> String {
        a.validate().err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn defaults_validate() {
        let s = args().validate().unwrap();
        assert_eq!(s.listen_addr.port(), 8080);
        assert_eq!(s.retention_1m, Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn timeout_not_below_interval_is_refused() {
        let mut a = args();
        a.scrape_timeout = "5s".into();
        assert!(err(a).starts_with("SCRAPE_TIMEOUT"));
    }

    #[test]
    fn bad_duration_names_the_setting() {
        let mut a = args();
        a.scrape_interval = "5 parsecs".into();
        assert!(err(a).starts_with("SCRAPE_INTERVAL has an invalid duration"));
        let mut a = args();
        a.retention_5s = "0s".into();
        assert!(err(a).starts_with("RETENTION_5S"));
    }

    #[test]
    fn empty_or_bad_targets_are_refused() {
        let mut a = args();
        a.scrape_targets = " , ".into();
        assert!(err(a).starts_with("SCRAPE_TARGETS is empty"));
        let mut a = args();
        a.scrape_targets = "not a url".into();
        assert!(err(a).contains("is not a valid URL"));
        let mut a = args();
        a.scrape_targets = "ftp://x/metrics".into();
        assert!(err(a).contains("http://, https:// or dns+http://"));
        let mut a = args();
        a.scrape_targets = "Bad Name=http://x/metrics".into();
        assert!(err(a).contains("invalid variant name"));
    }

    #[test]
    fn targets_with_explicit_variants_and_query_strings() {
        let t = parse_targets("canary=http://c:1/metrics, http://p:2/metrics?x=1").unwrap();
        assert_eq!(t[0].variant.as_deref(), Some("canary"));
        assert_eq!(t[1].variant, None);
        assert_eq!(t[1].url.as_str(), "http://p:2/metrics?x=1");
        assert_eq!(t[1].initial_variant(), "production");
    }

    #[test]
    fn serve_with_the_proxy_needs_no_targets_but_a_key() {
        let mut a = args();
        a.scrape_targets = String::new();
        a.proxy = true;
        let s = a.validate().unwrap();
        assert!(s.targets.is_empty());
        assert_eq!(s.proxy.unwrap().listen_addr.port(), 8081);
        let mut a = args();
        a.proxy = true;
        a.proxy_args.zai_api_key = String::new();
        assert!(err(a).starts_with("ZAI_API_KEY"));
    }

    #[test]
    fn dns_entries_are_accepted_with_a_port() {
        let t = parse_targets("canary=dns+http://zai-proxy-canary:8080/metrics,http://p:2/metrics").unwrap();
        assert!(t[0].is_dns());
        assert_eq!(t[0].variant.as_deref(), Some("canary"));
        assert!(!t[1].is_dns());
        assert!(parse_targets("dns+ftp://x:1/metrics").is_err());
    }

    #[test]
    fn empty_dashboard_token_means_no_auth_and_debug_hides_it() {
        let mut a = args();
        a.dashboard_token = Some(Secret::new(""));
        assert!(a.validate().unwrap().dashboard_token.is_none());
        a.dashboard_token = Some(Secret::new("hunter2-hunter2-hunter2\n"));
        let s = a.validate().unwrap();
        assert_eq!(s.dashboard_token.as_ref().map(Secret::expose), Some("hunter2-hunter2-hunter2"), "trimmed");
        assert!(!format!("{s:?}").contains("hunter2"));
        a.dashboard_token = Some(Secret::new("hunter2"));
        assert!(err(a).starts_with("DASHBOARD_TOKEN is shorter than 16"));
    }

    #[test]
    fn alert_settings_are_checked_at_start() {
        let mut a = args();
        a.alerts.alertmanager_url = "not a url".into();
        assert_eq!(err(a), "ALERTMANAGER_URL is not an http:// or https:// URL.");
        let mut a = args();
        a.alerts.alert_webhook_format = "teams".into();
        assert!(err(a).starts_with("ALERT_WEBHOOK_FORMAT \"teams\""));
        let mut a = args();
        a.alerts.alert_rules = "/nonexistent/rules.yaml".into();
        assert!(err(a).starts_with("ALERT_RULES /nonexistent/rules.yaml: cannot read the file"));
        let s = args().validate().unwrap();
        assert_eq!(s.alerts.rules.len(), 5, "the built-in rules");
        let mut a = args();
        a.alerts.alert_webhook_url = "https://hooks.slack.com/services/T0/B0/secret".into();
        a.alerts.alert_webhook_format = "slack".into();
        assert!(!format!("{:?}", a.validate().unwrap()).contains("secret"));
    }

    #[test]
    fn a_bad_canary_config_refuses_to_start_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canary.yaml");
        std::fs::write(&path, "metrics:\n  error_rate:\n    worse_when: up\n").unwrap();
        let mut a = args();
        a.canary_config = path.display().to_string();
        let e = err(a);
        assert!(e.starts_with("CANARY_CONFIG ") && e.contains("field `worse_when` is up"), "{e}");
        std::fs::write(&path, "alpha: 0.01\n").unwrap();
        let mut a = args();
        a.canary_config = path.display().to_string();
        assert_eq!(a.validate().unwrap().canary.alpha(), 0.01);
        assert_eq!(args().validate().unwrap().canary, crate::canary::CanaryConfig::default());
    }

    #[test]
    fn source_mode_needs_an_engine_and_refuses_sqlite_settings() {
        let source = |a: &mut ServeArgs| {
            a.source = "prometheus".into();
            a.scrape_targets = String::new();
        };
        let mut a = args();
        source(&mut a);
        assert_eq!(
            err(a),
            "SOURCE=prometheus needs PROMETHEUS_URL, the engine's base URL (e.g. http://prometheus:9090)."
        );
        let mut a = args();
        source(&mut a);
        a.engine.prometheus_url = "http://prometheus:9090".into();
        a.engine.prometheus_delay = "12s".into();
        a.db_path = PathBuf::from("/proc/zai-dash/never-created.db");
        let s = a.validate().unwrap();
        assert_eq!(s.engine.as_ref().map(EngineSettings::display_url).as_deref(), Some("http://prometheus:9090"));
        assert_eq!(s.engine.as_ref().map(|e| e.delay), Some(Duration::from_secs(12)), "PROMETHEUS_DELAY");
        assert!(s.targets.is_empty(), "nothing to scrape; DB_PATH is not created either");
        for (name, set) in [
            (
                "SCRAPE_TARGETS",
                (|a: &mut ServeArgs| a.scrape_targets = "http://a:1/metrics".into()) as fn(&mut ServeArgs),
            ),
            ("RETENTION_5S", |a| a.retention_5s = "48h".into()),
            ("--proxy", |a| a.proxy = true),
            ("DOWNSAMPLE_INTERVAL", |a| a.downsample_interval = "5m".into()),
            ("REMOTE_WRITE_URL", |a| a.remote.remote_write_url = Some("http://vm:8428/api/v1/write".into())),
        ] {
            let mut a = args();
            source(&mut a);
            a.engine.prometheus_url = "http://prometheus:9090".into();
            set(&mut a);
            assert!(err(a).starts_with(&format!("{name} has no effect with SOURCE=prometheus")), "{name}");
        }
        let mut a = args();
        a.source = "influx".into();
        assert_eq!(err(a), "SOURCE \"influx\" is not one of sqlite, prometheus.");
    }

    #[test]
    fn engine_settings_without_source_mode_are_refused() {
        let mut a = args();
        a.engine.prometheus_url = "http://prometheus:9090".into();
        assert!(err(a).starts_with("PROMETHEUS_URL is set but SOURCE is sqlite"));
        let mut a = args();
        a.engine.prometheus_bearer_token = Some(Secret::new("t"));
        assert!(err(a).starts_with("PROMETHEUS_BEARER_TOKEN is set but SOURCE is sqlite"));
    }

    #[test]
    fn browser_settings_are_checked_and_reach_the_dashboard_and_the_proxy() {
        let mut a = args();
        a.hosts.allowed_hosts = "http://dash.example".into();
        assert!(err(a).starts_with("ALLOWED_HOSTS entry \"http://dash.example\""));
        let mut a = args();
        a.sessions.cookie_secure = "maybe".into();
        assert!(err(a).starts_with("COOKIE_SECURE \"maybe\""));
        let mut a = args();
        a.hosts.allowed_hosts = "dash.example".into();
        a.sessions.session_epoch = "7".into();
        a.proxy = true;
        let s = a.validate().unwrap();
        assert!(s.web().allowed_hosts.allows("dash.example:8080"));
        assert_eq!(s.web().sessions.epoch, "7");
        assert!(s.proxy.unwrap().settings.allowed_hosts.allows("dash.example"), "serve --proxy: the same names");
    }

    #[test]
    fn targets_are_shown_and_refused_without_their_credentials() {
        let mut a = args();
        a.scrape_targets = "http://u:hunter2@a:8080/metrics?token=tok-1&x=1".into();
        let s = a.validate().unwrap();
        assert_eq!(s.targets[0].url.password(), Some("hunter2"), "the scrape keeps them");
        assert_eq!(s.web().targets[0].url, "http://***@a:8080/metrics?token=***&x=1");
        assert!(!format!("{s:?}").contains("hunter2") && !format!("{s:?}").contains("tok-1"));
        for bad in [
            "Bad Name=http://u:hunter2@a/m?token=tok-1",
            "http://u:hunter2@a/m?token=tok-1,http://u:hunter2@a/m?token=tok-1",
        ] {
            let mut a = args();
            a.scrape_targets = bad.into();
            let e = err(a);
            assert!(e.starts_with("SCRAPE_TARGETS") && !e.contains("hunter2") && !e.contains("tok-1"), "{e}");
        }
    }

    #[test]
    fn duplicate_targets_are_refused() {
        assert!(parse_targets("http://a/metrics,http://a/metrics").is_err());
    }

    #[test]
    fn listen_addr_forms() {
        assert_eq!(parse_listen_addr("L", ":9").unwrap().port(), 9);
        assert!(parse_listen_addr("L", "127.0.0.1:0").unwrap().ip().is_loopback());
        assert!(parse_listen_addr("L", "nonsense").is_err());
    }

    #[test]
    fn unwritable_db_path_is_refused() {
        let mut a = args();
        a.db_path = PathBuf::from("/proc/zai-dash/x.db");
        assert!(err(a).starts_with("DB_PATH"));
    }
}
