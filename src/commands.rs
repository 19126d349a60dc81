//! One function per subcommand: validate, bind, print `listening on http://ADDR` as the first
//! stdout line, run until a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{
    CanaryArgs, Cli, Command, ProxyCommandArgs, RulesArgs, Settings, TargetSpec, parse_duration, parse_listen_addr,
};
use crate::console::{self, PrintError, print, print_line};
use crate::proxy::{self, Proxy};
use crate::variant::is_valid_variant;
use crate::{app, demo, shutdown};

/// Runs the parsed command line to completion. A reader of stdout that goes away before the
/// output ends (`zai-dash rules | head`) ends the command quietly, with success: it took what
/// it wanted.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match run_command(cli) {
        Err(e) if matches!(e.downcast_ref::<PrintError>(), Some(PrintError::Closed)) => Ok(()),
        result => result,
    }
}

fn run_command(cli: Cli) -> anyhow::Result<()> {
    if let Command::Rules(args) = &cli.command {
        return rules(args);
    }
    if let Command::Canary(args) = &cli.command {
        return canary(args);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let token = CancellationToken::new();
        tokio::spawn(shutdown::watch_signals(token.clone()));
        let clock: SharedClock = Arc::new(SystemClock);
        match cli.command {
            Command::Serve(args) => serve(args.validate()?, clock, token).await,
            Command::Proxy(args) => proxy_only(&args, clock, token).await,
            Command::Healthcheck(args) => crate::healthcheck::run(&args).await.map_err(Into::into),
            Command::Rules(args) => rules(&args),
            Command::Canary(args) => canary(&args),
            Command::Grafana => Ok(print(&crate::web::grafana::dashboard_json()?)?),
            Command::Demo(args) => {
                let plan = demo::DemoPlan::from_args(&args)?;
                let listener = bind("LISTEN_ADDR", plan.listen_addr).await?;
                announce(&listener)?;
                demo::run(plan, listener, clock, token).await
            }
        }
    })
}

/// `zai-dash canary [--print-config]`: the built-in canary settings, or the validated
/// `CANARY_CONFIG` as the analysis would use it.
fn canary(args: &CanaryArgs) -> anyhow::Result<()> {
    if args.print_config || args.canary_config.trim().is_empty() {
        return Ok(print(&crate::canary::render_defaults())?);
    }
    let config = crate::canary::CanaryConfig::load(std::path::Path::new(args.canary_config.trim()))?;
    Ok(print(&config.render())?)
}

/// `zai-dash rules [--prometheus]`: validates the rules and prints them, as a summary or as a
/// Prometheus rule file (a rule PromQL cannot express is left out, with a line on stderr).
fn rules(args: &RulesArgs) -> anyhow::Result<()> {
    let settings = args.alerts.validate()?;
    if args.prometheus {
        let (yaml, skipped) = crate::alerts::export::prometheus_rules(&settings.rules, &settings.slos);
        for e in skipped {
            eprintln!("zai-dash: {e}");
        }
        return Ok(print(&yaml)?);
    }
    for r in &settings.rules {
        let variant = match &r.scope {
            crate::alerts::Scope::One(v) => v.as_str(),
            crate::alerts::Scope::Each => "*",
        };
        let span = |ms: i64| if ms > 0 { crate::promql::duration(ms) } else { "0s".to_owned() };
        print_line(&format!(
            "{}  variant={variant}  {}  window={}  for={}  min_requests={}  severity={}",
            r.name,
            r.condition(),
            span(r.window_ms),
            span(r.for_ms),
            r.min_requests,
            r.severity
        ))?;
    }
    for s in &settings.slos {
        let variant = match &s.variant {
            crate::budget::slo::SloVariant::One(v) => v.as_str(),
            crate::budget::slo::SloVariant::Each => "*",
        };
        print_line(&format!("{}  variant={variant}  slo: {}", s.name, s.describe()))?;
    }
    Ok(())
}

/// Binds and announces the address (the first line on stdout).
async fn bind(setting: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {setting} {addr}"))?;
    Ok(listener)
}

fn announce(listener: &TcpListener) -> anyhow::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    console::announce(&format!("listening on http://{addr}"));
    Ok(addr)
}

async fn serve(mut settings: Settings, clock: SharedClock, token: CancellationToken) -> anyhow::Result<()> {
    let listener = bind("LISTEN_ADDR", settings.listen_addr).await?;
    announce(&listener)?;
    let mut proxy_task = None;
    if let Some(plan) = settings.proxy.clone() {
        let proxy_listener = bind("PROXY_LISTEN_ADDR", plan.listen_addr).await?;
        let addr = proxy_listener.local_addr()?;
        console::announce(&format!("proxy listening on http://{addr}"));
        let variant = plan.settings.variant.to_ascii_lowercase();
        settings.targets.push(TargetSpec {
            url: crate::net::local_metrics_url(addr)?,
            variant: is_valid_variant(&variant).then_some(variant),
        });
        let proxy = Proxy::new(plan.settings, clock.clone()).context("cannot build the proxy's HTTP client")?;
        proxy_task = Some(tokio::spawn(proxy::serve(proxy_listener, proxy, token.clone())));
    }
    let grace = settings.shutdown_grace;
    let result = app::run(settings, clock, listener, token).await;
    if let Some(task) = proxy_task {
        finish_proxy(task, grace).await?;
    }
    result
}

async fn proxy_only(args: &ProxyCommandArgs, clock: SharedClock, token: CancellationToken) -> anyhow::Result<()> {
    let mut settings = args.proxy.validate()?;
    settings.allowed_hosts = args.hosts.validate()?;
    let addr = parse_listen_addr("LISTEN_ADDR", &args.listen_addr)?;
    let grace = parse_duration("SHUTDOWN_GRACE", &args.shutdown_grace)?;
    let listener = bind("LISTEN_ADDR", addr).await?;
    announce(&listener)?;
    let upstream = crate::redact::RedactedUrl(&settings.target_url);
    tracing::info!(upstream = %upstream, variant = %settings.variant, max_workers = settings.max_workers, "Proxy started.");
    let proxy = Proxy::new(settings, clock).context("cannot build the proxy's HTTP client")?;
    let task = tokio::spawn(proxy::serve(listener, proxy, token.clone()));
    token.cancelled().await;
    finish_proxy(task, grace).await
}

/// Waits for in-flight proxied requests after shutdown began, at most `grace`.
async fn finish_proxy(task: tokio::task::JoinHandle<std::io::Result<()>>, grace: Duration) -> anyhow::Result<()> {
    match tokio::time::timeout(grace, task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e).context("the proxy server failed"),
        Ok(Err(e)) => Err(e).context("the proxy task failed"),
        Err(_) => anyhow::bail!("proxied requests still running after SHUTDOWN_GRACE ({grace:?}); cut"),
    }
}
