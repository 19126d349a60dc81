//! `zai-dash demo`: the whole loop on one machine with no configuration and no network.
//!
//! A simulated LLM upstream (two profiles, one simulated account quota that their answers
//! fill), two built-in proxies in front of it (`production` and a slightly slower, less
//! reliable `canary`, both polling that quota), a traffic generator, and the dashboard
//! scraping both proxies into an SQLite file. Everything listens on loopback ports chosen by
//! the OS except the dashboard, which honours `LISTEN_ADDR` and `DB_PATH` like `serve`.

pub(crate) mod account;
pub(crate) mod history;
pub(crate) mod traffic;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::{
    DemoArgs, MAX_BODY_BYTES, POINT_WIDTH, ROLLUP_WIDTH, STALLED_CLIENT_TIMEOUT, Settings, TargetSpec,
    parse_listen_addr,
};
use crate::console::announce;
use crate::proxy::{self, Proxy, ProxyArgs};
use upstream::Profile;

/// Validated demo settings.
#[derive(Debug, Clone)]
pub struct DemoPlan {
    /// Dashboard address.
    pub listen_addr: SocketAddr,
    /// Database file.
    pub db_path: PathBuf,
    /// Requests per second of generated traffic.
    pub rate: f64,
    /// Scrape interval of the dashboard (5 s; tests may not shorten it, the point is realism).
    pub scrape_interval: Duration,
}

impl DemoPlan {
    /// Checks the demo's flags.
    pub fn from_args(a: &DemoArgs) -> Result<Self, crate::config::ConfigError> {
        let rate = a.rate.trim().parse::<f64>().ok().filter(|r| r.is_finite() && *r > 0.0 && *r <= 1000.0).ok_or_else(
            || {
                crate::config::ConfigError(format!(
                    "DEMO_RATE {:?} is invalid: use requests per second above 0, at most 1000.",
                    a.rate
                ))
            },
        )?;
        let db_path = crate::config::prepare_db_path(&a.db_path)?;
        Ok(Self {
            listen_addr: parse_listen_addr("LISTEN_ADDR", &a.listen_addr)?,
            db_path,
            rate,
            scrape_interval: Duration::from_secs(5),
        })
    }
}

/// A small deterministic generator (xorshift64*): the demo needs variety, not cryptography.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is replaced).
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [lo, hi].
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + (self.unit() * (hi - lo + 1) as f64) as u64
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Starts a server for `router` on an OS-chosen loopback port.
async fn start(
    router: axum::Router,
    token: &CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot bind a loopback port")?;
    let addr = listener.local_addr()?;
    let token = token.clone();
    let task = tokio::spawn(async move {
        let _ = crate::net::serve(listener, router, crate::net::Listening::default(), token).await;
    });
    Ok((addr, task))
}

async fn start_proxy(
    variant: &str,
    upstream: SocketAddr,
    plan: &DemoPlan,
    clock: &SharedClock,
    token: &CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let dir = plan.db_path.parent().map(PathBuf::from).unwrap_or_default();
    let mut args = ProxyArgs::for_tests(&format!("http://{upstream}"));
    args.zai_api_key = "demo-upstream-key".into();
    args.deployment_variant = variant.into();
    args.max_workers = if variant == "production" { "16" } else { "6" }.into();
    args.max_retries = "2".into();
    args.retry_base_delay = "500ms".into();
    args.rate_limit_initial = "20".into();
    args.rate_limit_state_file = dir.join(format!("zai-dash-demo-{variant}-ceiling.json")).display().to_string();
    // The simulated upstream answers the quota endpoint too; poll it often so the first view
    // shows quota and its movement.
    args.quota.quota_poll_enabled = "true".into();
    args.quota.quota_poll_interval = "10s".into();
    args.quota.quota_poll_timeout = "2s".into();
    args.quota.zai_quota_base_url = format!("http://{upstream}");
    let proxy = Proxy::new(args.validate()?, clock.clone())?;
    let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot bind a loopback port")?;
    let addr = listener.local_addr()?;
    Ok((addr, tokio::spawn(proxy::serve(listener, proxy, token.clone()))))
}

/// Runs the demo until `shutdown`; `listener` is the dashboard's, already announced.
pub async fn run(
    plan: DemoPlan,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let inner = CancellationToken::new();
    let seed = u64::try_from(clock.now_ms()).unwrap_or(1);
    let account = Arc::new(account::Account::new(clock.clone(), plan.rate));
    let (prod_up, _) = start(upstream::router(Profile::production(), seed, account.clone()), &inner).await?;
    let (canary_up, _) = start(upstream::router(Profile::canary(), seed ^ 0x9e37_79b9, account), &inner).await?;
    let (prod, prod_task) = start_proxy("production", prod_up, &plan, &clock, &inner).await?;
    let (canary, canary_task) = start_proxy("canary", canary_up, &plan, &clock, &inner).await?;
    let dashboard = listener.local_addr()?;
    announce(&format!(
        "demo: simulated upstream (production profile) on http://{prod_up}, (canary profile) on http://{canary_up}"
    ));
    announce(&format!(
        "demo: built-in proxies: production on http://{prod}, canary on http://{canary} (their /metrics are scraped; both poll the simulated account quota every 10 s)"
    ));
    announce(&format!("demo: traffic generator sending about {} requests/s (75% production, 25% canary)", plan.rate));
    announce(&format!(
        "demo: database {}; open http://{}/ (Ctrl-C stops)",
        plan.db_path.display(),
        browse_addr(dashboard)
    ));
    let targets = vec![
        TargetSpec { url: crate::net::local_metrics_url(prod)?, variant: Some("production".into()) },
        TargetSpec { url: crate::net::local_metrics_url(canary)?, variant: Some("canary".into()) },
    ];
    let history = simulate_history(&plan, &targets, &clock, seed).await;
    let mut settings = settings(&plan, targets);
    settings.notice = history.map(history_notice);
    let traffic = tokio::spawn(traffic::run(
        vec![(format!("http://{prod}"), 0.75), (format!("http://{canary}"), 0.25)],
        plan.rate,
        seed,
        inner.clone(),
    ));
    let result = crate::app::run(settings, clock, listener, shutdown).await;
    inner.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = traffic.await;
        let _ = prod_task.await;
        let _ = canary_task.await;
    })
    .await;
    result
}

/// Writes the simulated hour before now (see [`history`]); a failure only costs the history.
async fn simulate_history(plan: &DemoPlan, targets: &[TargetSpec], clock: &SharedClock, seed: u64) -> Option<i64> {
    let shares = [("production", Profile::production(), 0.75, 16.0), ("canary", Profile::canary(), 0.25, 6.0)];
    let simulated: Vec<history::SimulatedTarget> = targets
        .iter()
        .zip(shares)
        .map(|(t, (variant, profile, share, max_workers))| history::SimulatedTarget {
            url: t.url.to_string(),
            variant: variant.to_owned(),
            profile,
            rate: plan.rate * share,
            max_workers,
        })
        .collect();
    let (path, now) = (plan.db_path.clone(), clock.now_ms());
    let written = tokio::task::spawn_blocking(move || {
        let store = crate::store::Store::open(&path)?;
        history::backfill(&store, &simulated, now, seed)
    })
    .await;
    match written {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Cannot write the simulated history; the charts start empty.");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot write the simulated history; the charts start empty.");
            None
        }
    }
}

/// The banner every page shows while the demo runs with simulated history.
fn history_notice(end_ms: i64) -> String {
    let end = chrono::DateTime::from_timestamp_millis(end_ms).unwrap_or_default().format("%H:%M UTC");
    format!(
        "Demo: the hour before {end} is simulated history, written at start so the charts are full; \
         since {end} the numbers are live traffic through the two built-in proxies."
    )
}

fn browse_addr(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() { format!("localhost:{}", addr.port()) } else { addr.to_string() }
}

fn settings(plan: &DemoPlan, targets: Vec<TargetSpec>) -> Settings {
    Settings {
        listen_addr: plan.listen_addr,
        targets,
        scrape_interval: plan.scrape_interval,
        scrape_timeout: Duration::from_secs(3),
        db_path: plan.db_path.clone(),
        retention_5s: Duration::from_secs(24 * 3600),
        retention_1m: Duration::from_secs(7 * 24 * 3600),
        retention_10m: Duration::from_secs(30 * 24 * 3600),
        downsample_interval: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(10),
        point_width: POINT_WIDTH,
        rollup_width: ROLLUP_WIDTH,
        max_body_bytes: MAX_BODY_BYTES,
        proxy: None,
        dashboard_token: None,
        notice: None,
        stalled_client_timeout: STALLED_CLIENT_TIMEOUT,
        session_ttl: Duration::from_secs(12 * 3600),
        sessions: Default::default(),
        allowed_hosts: Default::default(),
        listener: crate::net::ListenerLimits::default(),
        alerts: crate::alerts::AlertSettings::default(),
        engine: None,
        remote: None,
        canary: Default::default(),
    }
}
