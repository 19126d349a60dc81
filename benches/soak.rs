//! Soak (issue 11): the real release binary scraping 100 zai-proxy-like targets at the default
//! 5 s interval for an hour, with a dashboard open, while its RSS, open file descriptors and
//! database size are sampled.
//!
//! `cargo bench --bench soak` (one hour; `SOAK_SECS=600` for ten minutes) prints a table of the
//! samples every 5 minutes and a verdict. Not part of scripts/test.
//!
//! - **Targets**: `SOAK_TARGETS` (100) fake zai-proxies served by this process, each on its own
//!   loopback port (one connection per target, as with real pods), spread over
//!   `SOAK_VARIANTS` (4) variants. Each exports the realistic fixture (2 models, 2 pricing
//!   tiers, 5 status codes, 6 histograms, quota gauges: 249 samples) with every counter,
//!   histogram bucket, sum and count growing: the fixture's 12 h of traffic again every hour,
//!   offset per target.
//! - **zai-dash**: `zai-dash serve` with defaults (5 s scrapes and points, 24 h / 7 d
//!   retention, rollups every minute), a fresh database. The binary cargo built for this bench,
//!   or `ZAI_DASH_BIN`; one older than the sources is refused.
//! - **A dashboard open**: one live client reading `GET /api/events`, and every 30 s the
//!   requests an open overview makes (`/api/status`, `/?range=R&variant=all`,
//!   `/api/metrics?range=R`), so the read paths and their caches run too. `R` is
//!   `SOAK_VIEW_RANGE` (15m): what a window holds, its cached points and its answers grow until
//!   the window is full, by design; a window that fills within the first quarter keeps that
//!   growth out of the verdict (a first run with `1h` grew through the whole hour).
//! - **Samples** every `SOAK_SAMPLE_SECS` (30): VmRSS, VmHWM, open fds and threads
//!   (`/proc/PID`), CPU time, database file plus WAL size, targets up, failed scrapes and the heap
//!   SQLite holds (its own `/metrics`). By default a sample is taken right after the overview's
//!   requests, when a read's transient memory is at its highest; `SOAK_SAMPLE_OFFSET_SECS` (0)
//!   delays every sample by that much (15: midway between two refreshes), which shows what
//!   stays resident between reads.
//!
//! Verdict, per measure: the average of the last quarter of the samples against the average of
//! the second quarter (the first quarter is warm-up: SQLite's page caches and the chart cache
//! fill, the allocator settles). RSS is flat when the last quarter is at most 5 % (and at
//! least 1 MiB) above the second; open fds when they differ by at most 2 (a scrape connection
//! being replaced can be caught in a sample). The database grows with the data by design
//! (retention is 24 h); its growth is reported per target-day, not judged.

#[path = "support/live.rs"]
mod live;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use live::{FakeTargets, Server, cpu_seconds, env_number, fds, mem, mib};
use tokio::io::AsyncReadExt;

/// RSS margin: relative, with a floor.
const RSS_MARGIN: f64 = 0.05;
const RSS_MARGIN_FLOOR_KIB: f64 = 1024.0;
/// Open-fd margin.
const FD_MARGIN: f64 = 2.0;

fn main() -> anyhow::Result<()> {
    let nofile = live::raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(run(nofile))
}

#[derive(Clone, Copy, Default)]
struct Sample {
    t: f64,
    rss_kib: u64,
    anon_kib: u64,
    hwm_kib: u64,
    /// Heap SQLite holds (its own count, `zai_dash_sqlite_heap_bytes`): page caches and statements.
    sqlite_bytes: f64,
    fds: usize,
    threads: u64,
    cpu_s: f64,
    db_bytes: u64,
    wal_bytes: u64,
    up: f64,
    failed_scrapes: f64,
}

async fn run(nofile: u64) -> anyhow::Result<()> {
    let secs = env_number("SOAK_SECS", 3600)?;
    let n = env_number("SOAK_TARGETS", 100)?.max(1) as usize;
    let variants = env_number("SOAK_VARIANTS", 4)?.max(1) as usize;
    let every = Duration::from_secs(env_number("SOAK_SAMPLE_SECS", 30)?.max(1));
    let range = std::env::var("SOAK_VIEW_RANGE").unwrap_or_else(|_| "15m".to_owned());
    let bin = live::zai_dash_binary()?;
    let dir = tempfile::tempdir()?;
    let names: Vec<String> = (0..n).map(|i| format!("v{}", i % variants)).collect();
    let targets = FakeTargets::start(&names, 3600.0).await;
    let mut server = Server::start(&bin, dir.path(), &targets.entries, &[])?;
    let (addr, pid) = (server.addr, server.pid());
    println!("# zai-dash soak (issue 11)\n");
    println!("Command: `cargo bench --bench soak` (SOAK_SECS={secs})\n");
    println!("- machine: {}, load average at start {}", live::machine(), live::loadavg());
    println!("- zai-dash: {} serve, defaults (5 s scrapes and points), RLIMIT_NOFILE {nofile}", bin.display());
    println!(
        "- {n} fake targets on their own loopback ports in {variants} variants, fixture exposition (249 samples) with \
         growing counters; one live client on /api/events and an overview's requests (range={range}) every 30 s"
    );
    println!("- {secs} s, a sample every {} s\n", every.as_secs());

    let viewer = tokio::spawn(live_client(addr));
    let client = live::http();
    let start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_view = start;
    let mut next_sample = start + every + Duration::from_secs(env_number("SOAK_SAMPLE_OFFSET_SECS", 0)?);
    loop {
        let now = Instant::now();
        if now >= next_view {
            let page = format!("/?range={range}&variant=all");
            let api = format!("/api/metrics?range={range}");
            for path in ["/api/status", page.as_str(), api.as_str()] {
                if let Err(e) = view(client, addr, path).await {
                    // Whether the process died or the request failed, and what it logged: the
                    // log lives in the temporary directory, gone once the soak returns.
                    server.check_alive()?;
                    // The listener's own closes say whether zai-dash cut a connection (a
                    // header-read or idle timeout racing the request) or something else did.
                    let text = live::self_metrics(addr).await;
                    let closes: Vec<&str> =
                        text.lines().filter(|l| l.starts_with("zai_dash_http_connections_closed_total{")).collect();
                    anyhow::bail!(
                        "{e:#}; zai-dash is still running; its closes: {closes:?}; its log:\n{}",
                        live::tail(&server.log)
                    );
                }
            }
            next_view += Duration::from_secs(30);
        }
        if now >= next_sample {
            server.check_alive()?;
            let s = sample(pid, addr, &server, start).await;
            eprintln!(
                "t={:>5.0}s rss={} MiB (anon {}, sqlite {:.1}) hwm={} MiB fds={} threads={} cpu={:.1}s db={:.2} MB wal={:.2} MB up={} failed={}",
                s.t,
                mib(s.rss_kib),
                mib(s.anon_kib),
                s.sqlite_bytes / 1_048_576.0,
                mib(s.hwm_kib),
                s.fds,
                s.threads,
                s.cpu_s,
                s.db_bytes as f64 / 1e6,
                s.wal_bytes as f64 / 1e6,
                s.up,
                s.failed_scrapes
            );
            samples.push(s);
            next_sample += every;
            if s.t >= secs as f64 {
                break;
            }
        }
        tokio::time::sleep(next_view.min(next_sample).saturating_duration_since(Instant::now())).await;
    }
    anyhow::ensure!(!viewer.is_finished(), "the live client lost its stream");
    viewer.abort();
    let stop_started = Instant::now();
    let clean = server.stop(Duration::from_secs(20));
    report(&samples, every, n, targets.scrapes(), clean, stop_started.elapsed());
    Ok(())
}

/// A browser's live stream: reads until aborted; returns early only if the stream ends.
async fn live_client(addr: SocketAddr) -> anyhow::Result<u64> {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

async fn sample(pid: u32, addr: SocketAddr, server: &Server, start: Instant) -> Sample {
    let m = mem(pid);
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let wal = server.db.with_extension("db-wal");
    let text = live::self_metrics(addr).await;
    Sample {
        t: start.elapsed().as_secs_f64(),
        rss_kib: m.rss_kib,
        anon_kib: m.anon_kib,
        hwm_kib: m.hwm_kib,
        sqlite_bytes: sum_samples(&text, "zai_dash_sqlite_heap_bytes ", |_| true),
        fds: fds(pid),
        threads: m.threads,
        cpu_s: cpu_seconds(pid),
        db_bytes: size(&server.db),
        wal_bytes: size(&wal),
        up: sum_samples(&text, "zai_dash_target_up{", |_| true),
        failed_scrapes: sum_samples(&text, "zai_dash_scrapes_total{", |l| !l.contains("result=\"success\"")),
    }
}

/// One request of the overview, read whole.
async fn view(client: &reqwest::Client, addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let r = client.get(format!("http://{addr}{path}")).send().await?;
    anyhow::ensure!(r.status().is_success(), "{path}: {}", r.status());
    r.bytes().await?;
    Ok(())
}

/// Sum of the samples of lines starting with `prefix` that `keep` accepts.
fn sum_samples(text: &str, prefix: &str, keep: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && keep(l))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .fold(0.0, |a, b| a + b)
}

fn avg(v: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    v.iter().map(f).sum::<f64>() / v.len().max(1) as f64
}

fn report(samples: &[Sample], every: Duration, targets: usize, scrapes: u64, clean: bool, stop_took: Duration) {
    let Some(last) = samples.last() else {
        println!("No samples.");
        return;
    };
    let per_row = (300 / every.as_secs().max(1)).max(1) as usize;
    println!("## Samples (every {} s shown of every {} s taken)\n", per_row as u64 * every.as_secs(), every.as_secs());
    println!(
        "| t (min) | VmRSS MiB | VmHWM MiB | open fds | threads | CPU % (since last row) | db + WAL MB | targets up |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut prev = Sample::default();
    for (i, s) in samples.iter().enumerate() {
        if (i + 1) % per_row != 0 && i != 0 && i + 1 != samples.len() {
            continue;
        }
        let cpu = if s.t > prev.t { 100.0 * (s.cpu_s - prev.cpu_s) / (s.t - prev.t) } else { 0.0 };
        println!(
            "| {:.1} | {} | {} | {} | {} | {cpu:.1} | {:.2} + {:.2} | {} |",
            s.t / 60.0,
            mib(s.rss_kib),
            mib(s.hwm_kib),
            s.fds,
            s.threads,
            s.db_bytes as f64 / 1e6,
            s.wal_bytes as f64 / 1e6,
            s.up
        );
        prev = *s;
    }
    let q = samples.len() / 4;
    if q == 0 {
        println!("\nToo few samples for a verdict (need at least 4).");
        return;
    }
    let (second, fourth) = (&samples[q..2 * q], &samples[samples.len() - q..]);
    let rss2 = avg(second, |s| s.rss_kib as f64);
    let rss4 = avg(fourth, |s| s.rss_kib as f64);
    let rss_margin = (rss2 * RSS_MARGIN).max(RSS_MARGIN_FLOOR_KIB);
    let rss_flat = rss4 - rss2 <= rss_margin;
    let fd2 = avg(second, |s| s.fds as f64);
    let fd4 = avg(fourth, |s| s.fds as f64);
    let fd_flat = (fd4 - fd2).abs() <= FD_MARGIN;
    let cpu_rate = |v: &[Sample]| {
        let (a, b) = (v[0], v[v.len() - 1]);
        if b.t > a.t { 100.0 * (b.cpu_s - a.cpu_s) / (b.t - a.t) } else { 0.0 }
    };
    let db = |s: &Sample| (s.db_bytes + s.wal_bytes) as f64;
    let growth = |v: &[Sample]| {
        let (a, b) = (v[0], v[v.len() - 1]);
        if b.t > a.t { (db(&b) - db(&a)) / (b.t - a.t) } else { 0.0 }
    };
    let (g2, g4) = (growth(second), growth(fourth));
    println!("\n## Verdict\n");
    println!("| measure | 2nd quarter avg | last quarter avg | change | margin | flat |");
    println!("|---|---:|---:|---:|---:|---|");
    println!(
        "| VmRSS | {} MiB | {} MiB | {:+.1} MiB ({:+.1} %) | {} MiB | **{}** |",
        mib(rss2 as u64),
        mib(rss4 as u64),
        (rss4 - rss2) / 1024.0,
        100.0 * (rss4 - rss2) / rss2,
        mib(rss_margin as u64),
        if rss_flat { "yes" } else { "NO" }
    );
    println!(
        "| open fds | {fd2:.1} | {fd4:.1} | {:+.1} | {FD_MARGIN:.0} | **{}** |",
        fd4 - fd2,
        if fd_flat { "yes" } else { "NO" }
    );
    println!(
        "| CPU | {:.1} % | {:.1} % | | | (reported) |\n| database growth | {:.1} MB/h | {:.1} MB/h | | | (reported) |",
        cpu_rate(second),
        cpu_rate(fourth),
        g2 * 3600.0 / 1e6,
        g4 * 3600.0 / 1e6
    );
    let per_target_day = db(last) / last.t * 86_400.0 / targets as f64;
    println!(
        "\nDatabase: {:.1} MB + {:.1} MB WAL after {:.0} min: {:.2} MB per target-day at this pace (5 s rows and \
         their 1 min rollups; nothing reaches retention in a soak this short). Peak RSS (VmHWM) {} MiB. Scrapes \
         answered by the fake targets: {scrapes} ({:.1} per target per 5 s); failed scrapes: {}. SIGTERM at the end: \
         {} in {:.1} s. Load average at the end: {}.",
        last.db_bytes as f64 / 1e6,
        last.wal_bytes as f64 / 1e6,
        last.t / 60.0,
        per_target_day / 1e6,
        mib(last.hwm_kib),
        scrapes as f64 / targets as f64 / (last.t / 5.0),
        last.failed_scrapes,
        if clean { "exited" } else { "killed (did not exit)" },
        stop_took.as_secs_f64(),
        live::loadavg()
    );
    println!(
        "\n**Verdict: {}.**",
        match (rss_flat, fd_flat) {
            (true, true) => "flat (RSS and open fds)",
            (false, true) => "RSS NOT flat",
            (true, false) => "open fds NOT flat",
            (false, false) => "RSS and open fds NOT flat",
        }
    );
}
