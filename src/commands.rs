//! One function per subcommand: validate, bind, print `listening on http://ADDR` as the first
//! stdout line, run until a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Cli, Command, ProxyCommandArgs, Settings, TargetSpec, parse_duration, parse_listen_addr};
use crate::proxy::{self, Proxy};
use crate::scrape::variant::is_valid_variant;
use crate::{app, demo, shutdown};

/// Runs the parsed command line to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let token = CancellationToken::new();
        tokio::spawn(shutdown::watch_signals(token.clone()));
        let clock: SharedClock = Arc::new(SystemClock);
        match cli.command {
            Command::Serve(args) => serve(args.validate()?, clock, token).await,
            Command::Proxy(args) => proxy_only(&args, clock, token).await,
            Command::Healthcheck(args) => crate::healthcheck::run(&args).await.map_err(Into::into),
            Command::Demo(args) => {
                let plan = demo::DemoPlan::from_args(&args)?;
                let listener = bind("LISTEN_ADDR", plan.listen_addr).await?;
                announce(&listener)?;
                demo::run(plan, listener, clock, token).await
            }
        }
    })
}

/// A listener whose accepted connections send small writes at once (`TCP_NODELAY`).
///
/// Streamed answers (SSE from the proxy, live events from the dashboard) are many small writes;
/// with Nagle's algorithm on, each one after the first waits for the client's ACK, which a
/// benchmark measured as +35 ms per streamed answer through the proxy.
pub fn no_delay(listener: TcpListener) -> axum::serve::TapIo<TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    listener.tap_io(set_nodelay as fn(&mut tokio::net::TcpStream))
}

fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "Cannot set TCP_NODELAY on an accepted connection.");
    }
}

/// Binds and announces the address (the first line on stdout).
async fn bind(setting: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {setting} {addr}"))?;
    Ok(listener)
}

fn announce(listener: &TcpListener) -> anyhow::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    Ok(addr)
}

/// The URL to scrape a local listener at: loopback when it listens on every interface.
pub fn local_metrics_url(addr: SocketAddr) -> anyhow::Result<url::Url> {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    Ok(url::Url::parse(&format!("http://{host}:{}/metrics", addr.port()))?)
}

async fn serve(mut settings: Settings, clock: SharedClock, token: CancellationToken) -> anyhow::Result<()> {
    let listener = bind("LISTEN_ADDR", settings.listen_addr).await?;
    announce(&listener)?;
    let mut proxy_task = None;
    if let Some(plan) = settings.proxy.clone() {
        let proxy_listener = bind("PROXY_LISTEN_ADDR", plan.listen_addr).await?;
        let addr = proxy_listener.local_addr()?;
        println!("proxy listening on http://{addr}");
        let variant = plan.settings.variant.to_ascii_lowercase();
        settings
            .targets
            .push(TargetSpec { url: local_metrics_url(addr)?, variant: is_valid_variant(&variant).then_some(variant) });
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
    let settings = args.proxy.validate()?;
    let addr = parse_listen_addr("LISTEN_ADDR", &args.listen_addr)?;
    let grace = parse_duration("SHUTDOWN_GRACE", &args.shutdown_grace)?;
    let listener = bind("LISTEN_ADDR", addr).await?;
    announce(&listener)?;
    tracing::info!(upstream = %settings.target_url, variant = %settings.variant, max_workers = settings.max_workers, "Proxy started.");
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
