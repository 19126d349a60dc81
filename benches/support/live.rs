//! Shared by the bench binaries that run the real `zai-dash serve` (sse_fanout, soak): fake
//! zai-proxy targets on loopback, the release binary as a child process, and what /proc says
//! about it.
#![allow(dead_code)] // each bench binary uses a different part

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The realistic zai-proxy exposition (2 models, 5 status codes, 6 histograms, quota gauges).
pub const FIXTURE: &str = include_str!("../../tests/fixtures/zai-proxy-sample.prom");

// ---------------------------------------------------------------------------------------------
// Fake targets

/// One line of the fixture, split so it can be rendered with grown counters.
enum Line {
    /// Comments and gauges: as they are.
    Fixed(String),
    /// A counter, histogram bucket, sum or count: `series value`, scaled by the growth factor.
    Cumulative { series: String, value: f64 },
}

/// The fixture as a template whose cumulative values grow with time, like a busy zai-proxy.
pub struct Exposition {
    lines: Vec<Line>,
}

impl Exposition {
    /// The fixture with its `variant` label set to `variant`.
    pub fn new(variant: &str) -> Self {
        let text = FIXTURE.replace("variant=\"production\"", &format!("variant=\"{variant}\""));
        let lines = text
            .lines()
            .map(|line| {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                let cumulative =
                    !line.starts_with('#') && ["_total", "_bucket", "_sum", "_count"].iter().any(|s| name.ends_with(s));
                match line.rsplit_once(' ') {
                    Some((series, value)) if cumulative => {
                        Line::Cumulative { series: series.to_owned(), value: value.parse().unwrap() }
                    }
                    _ => Line::Fixed(line.to_owned()),
                }
            })
            .collect();
        Self { lines }
    }

    /// The exposition with every cumulative value multiplied by `factor` (at least 1; whole
    /// values stay whole, so counters only grow and histogram buckets stay ordered).
    pub fn render(&self, factor: f64) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(FIXTURE.len() + 1024);
        for line in &self.lines {
            match line {
                Line::Fixed(l) => out.push_str(l),
                Line::Cumulative { series, value } => {
                    let v = if value.fract() == 0.0 { (value * factor).floor() } else { value * factor };
                    let _ = write!(out, "{series} {v}");
                }
            }
            out.push('\n');
        }
        out
    }
}

/// Fake zai-proxy targets, each on its own loopback port, served by the calling tokio runtime.
/// Target `i` exports the fixture with its counters grown by `1 + (t + 7 i) / growth_secs`
/// after `t` seconds: the fixture's traffic (1,530 requests in its 12 h) repeated every
/// `growth_secs`, offset per target.
pub struct FakeTargets {
    /// `VARIANT=URL` entries for `SCRAPE_TARGETS`.
    pub entries: Vec<String>,
    /// Scrapes answered so far, all targets.
    pub scrapes: Arc<std::sync::atomic::AtomicU64>,
}

impl FakeTargets {
    /// Starts one target per variant in `variants` (the list may repeat a variant: pods).
    pub async fn start(variants: &[String], growth_secs: f64) -> Self {
        let started = Instant::now();
        let scrapes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut entries = Vec::new();
        for (i, variant) in variants.iter().enumerate() {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            entries.push(format!("{variant}=http://{}/metrics", listener.local_addr().unwrap()));
            let expo = Arc::new(Exposition::new(variant));
            let scrapes = scrapes.clone();
            let offset = 7.0 * i as f64;
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let expo = expo.clone();
                    scrapes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    async move {
                        let factor = 1.0 + (started.elapsed().as_secs_f64() + offset) / growth_secs;
                        ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], expo.render(factor))
                    }
                }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
        Self { entries, scrapes }
    }

    /// Scrapes answered so far.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// The zai-dash under test

#[path = "binary.rs"]
mod binary;
pub use binary::zai_dash_binary;

/// A running `zai-dash serve`, stopped (SIGTERM, then SIGKILL after `SHUTDOWN_GRACE` + 5 s)
/// when dropped.
pub struct Server {
    child: Child,
    /// Its stderr.
    pub log: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database file.
    pub db: PathBuf,
}

impl Server {
    /// Starts `bin serve` on 127.0.0.1:0 with `targets` and a database in `dir`, plus `env`.
    pub fn start(bin: &Path, dir: &Path, targets: &[String], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let log = dir.join("zai-dash.log");
        let db = dir.join("zai-dash.db");
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("SCRAPE_TARGETS", targets.join(","))
            .env("DB_PATH", &db)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        let mut child = cmd.spawn().with_context(|| format!("cannot start {}", bin.display()))?;
        let mut out = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening on http://").and_then(|a| a.parse().ok()) else {
            let _ = child.kill();
            bail!("zai-dash did not announce its address (got {line:?}); its log:\n{}", tail(&log));
        };
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Ok(Self { child, log, addr, db })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if !matches!(self.child.try_wait(), Ok(None)) {
            bail!("zai-dash exited during the run; its log:\n{}", tail(&self.log));
        }
        Ok(())
    }

    /// Stops it with SIGTERM and returns whether it exited by itself within `limit`.
    pub fn stop(&mut self, limit: Duration) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop(Duration::from_secs(15));
        }
    }
}

pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// /proc

/// Memory of a process, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Its anonymous part (heap, stacks), KiB; the rest is mostly the mapped binary.
    pub anon_kib: u64,
    /// Peak resident set, KiB.
    pub hwm_kib: u64,
    pub threads: u64,
}

pub fn mem(pid: u32) -> Mem {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Mem { rss_kib: field("VmRSS:"), anon_kib: field("RssAnon:"), hwm_kib: field("VmHWM:"), threads: field("Threads:") }
}

/// utime + stime of a process, seconds (Linux USER_HZ is 100).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (which may hold spaces and parentheses) come the state and then
    // the other fields; utime and stime are the 14th and 15th fields overall.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Open file descriptors of a process.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (children inherit it); returns
/// the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// `Mem:` and CPU count, for the report's header.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cpus} CPUs, {mem_gib:.0} GiB")
}

/// The `p` quantile (0..=1) of `v`, nearest rank; `NaN` when empty.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// MiB from KiB, for tables.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// A whole number from the environment, or `default`.
pub fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse::<u64>().with_context(|| format!("{name} {v:?}: use a whole number")),
        Err(_) => Ok(default),
    }
}

/// One HTTP client for the whole bench: `reqwest::get` would build a client (and its TLS
/// configuration) per call, which costs more CPU than the sampling itself.
pub fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

/// zai-dash's own `/metrics` text (empty when it does not answer).
pub async fn self_metrics(addr: SocketAddr) -> String {
    match http().get(format!("http://{addr}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A value of zai-dash's own `/metrics` (first sample of `name` without labels).
pub async fn self_metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let text = self_metrics(addr).await;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
