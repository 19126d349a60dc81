//! The proxy bench driven by wrk instead of the in-process reqwest clients
//! (`PROXY_BENCH_DRIVER=wrk`): a second, independent load generator, so the proxy's numbers do
//! not depend on how our own client reads answers.
//!
//! wrk runs as a child of the bench (so it inherits the load generator's CPU pinning), one
//! thread, [`CONCURRENCY`] connections, a small Lua script that sets the POST body and headers.
//! Per mode, a warm-up per path, then `rounds` rounds of direct, zai-dash, nginx (order rotated
//! every round), each a 1 s discarded run and a measured run; the table gives medians across
//! rounds. wrk's latency is to the end of the response (streams included). The proxy's CPU time
//! comes from `/proc/PID/stat` around the measured run, divided by the requests wrk completed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::{CONCURRENCY, Mode, Target, cpu_seconds, median};

/// What one measured wrk run gave.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
    errors: u64,
    /// Proxy CPU per completed request, µs (0 for the direct path).
    proxy_us: f64,
}

/// The Lua script for `mode`'s request.
fn script(dir: &Path, mode: Mode) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("wrk-{mode:?}.lua"));
    let lua = format!(
        "wrk.method = \"POST\"\nwrk.body = [[{}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"anthropic-version\"] = \"2023-06-01\"\nwrk.headers[\"x-api-key\"] = \"bench-client\"\n",
        mode.body()
    );
    std::fs::write(&path, lua)?;
    Ok(path)
}

/// Runs wrk for `secs` seconds against `url`; returns its output.
fn wrk(url: &str, script: &Path, secs: u64) -> anyhow::Result<String> {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{CONCURRENCY}"), &format!("-d{secs}s"), "--latency", "--timeout", "10s", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("cannot run wrk (apt-get install -y wrk)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `6.80ms`, `950.00us`, `1.20s` in milliseconds.
fn duration_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        _ => return None,
    })
}

/// Percentiles, completed requests and errors from wrk's `--latency` output.
fn parse(out: &str) -> anyhow::Result<(f64, f64, u64, u64)> {
    let pct = |p: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(p).and_then(|rest| duration_ms(rest.trim())))
            .with_context(|| format!("no {p} line in wrk's output:\n{out}"))
    };
    let requests = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").and_then(|(n, _)| n.trim().parse::<u64>().ok()))
        .with_context(|| format!("no request count in wrk's output:\n{out}"))?;
    let mut errors = 0;
    for l in out.lines().map(str::trim) {
        if let Some(n) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            errors += rest.split(',').filter_map(|f| f.split_whitespace().last()?.parse::<u64>().ok()).sum::<u64>();
        }
    }
    Ok((pct("50%")?, pct("99%")?, requests, errors))
}

fn measure(t: &Target, script: &Path, secs: u64) -> anyhow::Result<Run> {
    wrk(&t.url, script, 1)?; // refills the pools after the other paths ran
    let cpu0 = cpu_seconds(&t.proxy_pids);
    let out = wrk(&t.url, script, secs)?;
    let cpu = cpu_seconds(&t.proxy_pids) - cpu0;
    let (p50_ms, p99_ms, requests, errors) = parse(&out)?;
    Ok(Run {
        p50_ms,
        p99_ms,
        rps: requests as f64 / secs as f64,
        errors,
        proxy_us: if t.proxy_pids.is_empty() { 0.0 } else { cpu * 1e6 / requests.max(1) as f64 },
    })
}

/// Every round of one mode.
pub fn run_mode(
    targets: &[Target; 3],
    mode: Mode,
    rounds: u64,
    secs: u64,
    dir: &Path,
) -> anyhow::Result<Vec<[Run; 3]>> {
    let script = script(dir, mode)?;
    for t in targets {
        wrk(&t.url, &script, 2)?;
    }
    let mut out = Vec::new();
    for round in 0..rounds as usize {
        let mut runs = [None; 3];
        for k in 0..3 {
            let i = (round + k) % 3;
            runs[i] = Some(measure(&targets[i], &script, secs)?);
        }
        out.push(runs.map(|r| r.expect("every path ran")));
    }
    Ok(out)
}

/// The table of one mode: medians across rounds; added = path minus direct in the same round.
pub fn report(mode: Mode, targets: &[Target; 3], rounds: &[[Run; 3]]) -> String {
    let col = |i: usize, f: fn(&Run) -> f64| median(rounds.iter().map(|r| f(&r[i])).collect());
    let added = |i: usize, f: fn(&Run) -> f64| median(rounds.iter().map(|r| f(&r[i]) - f(&r[0])).collect());
    let mut out = String::new();
    let what = if mode == Mode::Json { "Non-streaming (JSON)" } else { "Streaming (SSE)" };
    let _ = writeln!(out, "## wrk: {what} `POST /v1/messages`\n");
    let _ = writeln!(out, "Medians of {} rounds; latencies to the end of the response, ms.\n", rounds.len());
    let _ = writeln!(out, "| path | p50 | p99 | added p50 | added p99 | req/s | proxy CPU µs/req | errors |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, t) in targets.iter().enumerate() {
        let (a50, a99, cpu) = if i == 0 {
            ("-".to_owned(), "-".to_owned(), "-".to_owned())
        } else {
            (
                format!("{:.3}", added(i, |r| r.p50_ms)),
                format!("{:.3}", added(i, |r| r.p99_ms)),
                format!("{:.0}", col(i, |r| r.proxy_us)),
            )
        };
        let errors: u64 = rounds.iter().map(|r| r[i].errors).sum();
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.3} | {a50} | {a99} | {:.0} | {cpu} | {errors} |",
            t.name,
            col(i, |r| r.p50_ms),
            col(i, |r| r.p99_ms),
            col(i, |r| r.rps)
        );
    }
    let _ = writeln!(
        out,
        "\nzai-dash / nginx: added p50 {:.2}x, added p99 {:.2}x, CPU per request {:.2}x (goal: at most 1.5x).\n",
        added(1, |r| r.p50_ms) / added(2, |r| r.p50_ms),
        added(1, |r| r.p99_ms) / added(2, |r| r.p99_ms),
        col(1, |r| r.proxy_us) / col(2, |r| r.proxy_us),
    );
    let list = |i: usize, f: fn(&Run) -> f64| {
        rounds.iter().map(|r| format!("{:.3}", f(&r[i]) - f(&r[0]))).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(
        out,
        "Per round, added p50 (ms): zai-dash {}; nginx {}.\n",
        list(1, |r| r.p50_ms),
        list(2, |r| r.p50_ms)
    );
    out
}
