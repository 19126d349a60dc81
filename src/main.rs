//! The `zai-dash` binary: parse, log, run the command, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use zai_dash::config::Cli;
use zai_dash::{commands, telemetry};

fn main() -> ExitCode {
    limit_malloc_arenas();
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

/// One glibc malloc arena for the whole process. By default glibc gives threads up to 8 arenas
/// per core, and each keeps the memory a big scrape once needed (a 20,000-series exposition
/// parses into tens of MB): measured with hostile targets (tests/hostile.rs), RSS climbed past
/// 160 MiB with the default and cycled between 52 and 84 MiB with one arena. Small
/// allocations still go through glibc's per-thread caches, so the lock is rarely taken.
///
/// And a fixed mmap threshold of 128 KiB: glibc otherwise raises it to the size of every large
/// block freed (up to 32 MiB), after which a chart's JSON answer or a long read's vectors come
/// from the heap and leave it fragmented. Fixed, they are mapped and unmapped on their own
/// (BENCHMARKS.md, issue 22, "Memory: SQLite's share and the allocator": 38.7 against 44.1 MiB
/// after 30 minutes of the soak, side by side).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets tunables of the allocator; it is called before any other
    // thread exists, as glibc requires for M_ARENA_MAX to take effect predictably.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
