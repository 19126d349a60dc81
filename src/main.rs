//! The `zai-dash` binary: parse, log, run the command, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use zai_dash::config::Cli;
use zai_dash::{commands, heap, telemetry};

fn main() -> ExitCode {
    heap::limit_arenas();
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zai-dash: {e:#}");
            ExitCode::FAILURE
        }
    }
}
