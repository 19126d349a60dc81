//! The `zai-dash` binary: parse, validate, log, bind, run, exit code.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use zai_dash::config::{Cli, Command};
use zai_dash::{app, clock, shutdown, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match run_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zai-dash: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_main(cli: Cli) -> anyhow::Result<()> {
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Healthcheck(args) => return healthcheck(&args),
    };
    let settings = args.validate()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.listen_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on LISTEN_ADDR {}: {e}", settings.listen_addr))?;
        println!("listening on http://{}", listener.local_addr()?);
        let token = CancellationToken::new();
        tokio::spawn(shutdown::watch_signals(token.clone()));
        app::run(settings, std::sync::Arc::new(clock::SystemClock), listener, token).await
    })
}

/// `zai-dash healthcheck`: a small runtime of its own; failure is the exit status 1.
fn healthcheck(args: &zai_dash::config::HealthcheckArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(zai_dash::healthcheck::run(args))?;
    Ok(())
}
