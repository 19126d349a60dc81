//! Side by side with Prometheus and VictoriaMetrics (issue 14): zai-dash, Debian's `prometheus`
//! and `victoria-metrics` scrape the same N fake zai-proxy targets every 5 s, all three at once
//! in one run per N, so they share the machine's noise.
//!
//! ```sh
//! apt-get install -y prometheus victoria-metrics   # once
//! cargo build --release                            # the bench runs target/release/zai-dash
//! cargo bench --bench sidebyside                   # N = 10, 100, 500: about 12 minutes
//! ```
//!
//! Not part of scripts/test. Per N: the fake targets (this process: N HTTP listeners on
//! loopback, 128 samples each, see `support/fake_targets.rs`) start, then the three engines,
//! each with its own temporary data directory and a free loopback port; after a warm-up the
//! bench checks that every engine scrapes every target (the engine's own view and the targets'
//! count of scrapes per `User-Agent`) and fails loudly if not, then measures a window and
//! checks again. Per engine, from /proc: CPU (utime + stime) over the window divided by the
//! scrapes the targets answered it; RSS at the end (VmRSS) and peak (VmHWM); growth of its data
//! directory and its `write_bytes` over the window, extrapolated to a day and divided by N.
//!
//! Knobs: `SIDE_N` (comma list, default `10,100,500`), `SIDE_SECS` (measured window, default
//! 180), `SIDE_WARMUP_SECS` (default 30), `ZAI_DASH_BIN`, `PROMETHEUS_BIN`, `VICTORIA_BIN`, and
//! `ZAI_DASH_BASELINE=path`: a second zai-dash binary run beside the others on the same targets
//! (it scrapes `/baseline/metrics`, counted apart), to compare two builds in one run.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

#[path = "support/binary.rs"]
mod binary;
#[path = "support/fake_targets.rs"]
mod fake_targets;

use fake_targets::{FakeTargets, Scraper};

/// Scrape interval of every engine, and the fake targets' traffic step.
const INTERVAL: Duration = Duration::from_secs(5);
/// Scrape timeout of every engine (zai-dash's default).
const TIMEOUT: Duration = Duration::from_secs(3);
/// Linux USER_HZ: the unit of utime and stime in /proc/PID/stat.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;
const DAY_SECS: f64 = 86_400.0;

fn main() -> anyhow::Result<()> {
    fake_targets::check();
    let ns = match std::env::var("SIDE_N") {
        Ok(v) => v
            .split(',')
            .map(|s| s.trim().parse::<usize>().ok().filter(|n| *n > 0))
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("SIDE_N {v:?}: use a comma list of target counts, e.g. 10,100,500"))?,
        Err(_) => vec![10, 100, 500],
    };
    let secs = env_number("SIDE_SECS", 180)?;
    let warmup = env_number("SIDE_WARMUP_SECS", 30)?;
    let bins = Binaries {
        zai: binary::zai_dash_binary()?,
        prometheus: engine_binary("PROMETHEUS_BIN", "prometheus")?,
        victoria: engine_binary("VICTORIA_BIN", "victoria-metrics")?,
        baseline: std::env::var_os("ZAI_DASH_BASELINE").map(PathBuf::from),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // The runtime's main future runs on this thread: the engines are spawned from it, so their
    // parent-death signal (set below) fires only when this process ends.
    rt.block_on(async {
        println!("# zai-dash side by side with Prometheus and VictoriaMetrics (issue 14)\n");
        println!("Command: `cargo build --release && cargo bench --bench sidebyside`\n");
        println!("- machine: {} CPUs, load average at start {}", num_cpus(), loadavg());
        println!("- zai-dash: {} (`zai-dash serve`, defaults but for the addresses)", bins.zai.display());
        println!("- Prometheus: {} ({})", version(&bins.prometheus, "--version"), bins.prometheus.display());
        println!("- VictoriaMetrics: {} ({})", version(&bins.victoria, "-version"), bins.victoria.display());
        if let Some(b) = &bins.baseline {
            println!("- zai-dash baseline: {} (same settings, scraping `/baseline/metrics`)", b.display());
        }
        println!(
            "- targets: N fake zai-proxy targets in the bench process, {} samples each, a few requests per 5 s; \
             every engine scrapes every {} s (timeout {} s), all three at once; {warmup} s warm-up, {secs} s measured\n",
            fake_targets::SAMPLES,
            INTERVAL.as_secs(),
            TIMEOUT.as_secs()
        );
        let mut runs = Vec::new();
        for &n in &ns {
            let run = tokio::select! {
                r = run_one(&bins, n, Duration::from_secs(warmup), Duration::from_secs(secs)) => r?,
                _ = tokio::signal::ctrl_c() => bail!("interrupted; the engines were stopped"),
            };
            print!("{}", run.report());
            runs.push(run);
        }
        if runs.len() > 1 {
            print!("{}", summary(&runs));
        }
        Ok(())
    })
}

fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{name} {v:?}: use a whole number above 0")),
        Err(_) => Ok(default),
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn loadavg_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Binaries

struct Binaries {
    zai: PathBuf,
    prometheus: PathBuf,
    victoria: PathBuf,
    baseline: Option<PathBuf>,
}

/// `$var`, else `name` on PATH.
fn engine_binary(var: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os(var) {
        return Ok(PathBuf::from(bin));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("no `{name}` on PATH: `sudo apt-get install -y prometheus victoria-metrics`, or set {var}")
        })
}

fn version(bin: &Path, flag: &str) -> String {
    let out = Command::new(bin).arg(flag).output();
    let text = out.map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)));
    match text {
        Ok(t) if !t.trim().is_empty() => t.lines().next().unwrap_or("").trim().to_owned(),
        _ => dpkg_version(bin).unwrap_or_else(|| "version unknown".into()),
    }
}

/// The Debian package version of `bin`, for binaries that print no version.
fn dpkg_version(bin: &Path) -> Option<String> {
    let owner = Command::new("dpkg").arg("-S").arg(bin).output().ok()?;
    let pkg = String::from_utf8_lossy(&owner.stdout).split(':').next()?.trim().to_owned();
    let v = Command::new("dpkg-query").args(["-W", "-f=${Version}", &pkg]).output().ok()?;
    Some(format!("{pkg} {} (Debian package)", String::from_utf8_lossy(&v.stdout).trim()))
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process, stopped (SIGTERM, then SIGKILL after 5 s) when dropped, so the engines
/// also stop when the bench fails or panics; they get SIGKILL if the bench itself is killed.
struct Proc {
    name: &'static str,
    child: Child,
    _stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf, piped_stdout: bool) -> anyhow::Result<Self> {
        let err = std::fs::File::create(&log)?;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let stdout = if piped_stdout { Stdio::piped() } else { Stdio::null() };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdin = child.stdin.take();
        Ok(Self { name, child, _stdin: stdin, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if !matches!(self.child.try_wait(), Ok(None)) {
            bail!("{} exited during the run; its log:\n{}", self.name, tail(&self.log));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `program` with a clean environment.
fn command(program: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c
}

/// A port free right now (the Go engines cannot report one they chose themselves).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------------
// Engines

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ZaiDash,
    Prometheus,
    Victoria,
    Baseline,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ZaiDash => "zai-dash",
            Kind::Prometheus => "Prometheus",
            Kind::Victoria => "VictoriaMetrics",
            Kind::Baseline => "zai-dash baseline",
        }
    }

    fn scraper(self) -> Scraper {
        match self {
            Kind::ZaiDash => Scraper::ZaiDash,
            Kind::Prometheus => Scraper::Prometheus,
            Kind::Victoria => Scraper::Victoria,
            Kind::Baseline => Scraper::Baseline,
        }
    }

    fn is_zai_dash(self) -> bool {
        matches!(self, Kind::ZaiDash | Kind::Baseline)
    }
}

struct Engine {
    kind: Kind,
    proc: Proc,
    base: String,
    data: PathBuf,
}

/// A Prometheus-format scrape config for `addrs`. `prometheus_only` adds what VictoriaMetrics'
/// strict config parser refuses.
fn scrape_config(addrs: &[SocketAddr], prometheus_only: bool) -> String {
    let mut s =
        format!("global:\n  scrape_interval: {}s\n  scrape_timeout: {}s\n", INTERVAL.as_secs(), TIMEOUT.as_secs());
    if prometheus_only {
        let _ = writeln!(s, "  evaluation_interval: {}s", INTERVAL.as_secs());
    }
    s += "scrape_configs:\n  - job_name: zai\n    static_configs:\n      - targets:\n";
    for a in addrs {
        let _ = writeln!(s, "          - '{a}'");
    }
    s
}

async fn start_engine(kind: Kind, bins: &Binaries, addrs: &[SocketAddr], root: &Path) -> anyhow::Result<Engine> {
    let dir = root.join(kind.name().replace(' ', "-"));
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("data");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    if kind.is_zai_dash() {
        let (bin, path) = match (kind, &bins.baseline) {
            (Kind::Baseline, Some(b)) => (b, "baseline/metrics"),
            _ => (&bins.zai, "metrics"),
        };
        let targets: Vec<String> = addrs.iter().map(|a| format!("http://{a}/{path}")).collect();
        let mut cmd = command(bin);
        cmd.arg("serve").envs([
            ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("SCRAPE_TARGETS", targets.join(",")),
            ("SCRAPE_INTERVAL", format!("{}s", INTERVAL.as_secs())),
            ("SCRAPE_TIMEOUT", format!("{}s", TIMEOUT.as_secs())),
            ("DB_PATH", data.join("zai-dash.db").display().to_string()),
        ]);
        let mut proc = Proc::spawn(kind.name(), cmd, dir.join("zai-dash.log"), true)?;
        let mut out = BufReader::new(proc.child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let addr = line.trim().strip_prefix("listening on http://").and_then(|a| a.parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            bail!("{} did not announce its address (got {line:?}); its log:\n{}", kind.name(), tail(&proc.log));
        };
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let base = format!("http://{addr}");
        ensure!(wait_ready(&http, &format!("{base}/readyz"), &mut proc).await, "{} never became ready", kind.name());
        return Ok(Engine { kind, proc, base, data });
    }
    let config = dir.join("scrape.yml");
    std::fs::write(&config, scrape_config(addrs, kind == Kind::Prometheus))?;
    for attempt in 0..3 {
        let port = free_port()?;
        let log = dir.join(format!("{}-{attempt}.log", kind.name()));
        let (mut cmd, ready) = match kind {
            Kind::Prometheus => {
                let mut c = command(&bins.prometheus);
                c.arg(format!("--config.file={}", config.display()))
                    .arg(format!("--storage.tsdb.path={}", data.display()))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .arg("--log.level=warn");
                (c, "/-/ready")
            }
            _ => {
                let mut c = command(&bins.victoria);
                c.arg(format!("-promscrape.config={}", config.display()))
                    .arg(format!("-storageDataPath={}", data.display()))
                    .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                    .arg("-loggerLevel=WARN");
                (c, "/health")
            }
        };
        cmd.current_dir(&dir);
        let mut proc = Proc::spawn(kind.name(), cmd, log, false)?;
        let base = format!("http://127.0.0.1:{port}");
        if wait_ready(&http, &format!("{base}{ready}"), &mut proc).await {
            return Ok(Engine { kind, proc, base, data });
        }
        // Most likely the port was taken in between: try another.
        eprintln!("{} attempt {attempt} did not become ready:\n{}", kind.name(), tail(&proc.log));
    }
    bail!("{} did not start (see the logs above)", kind.name())
}

async fn wait_ready(http: &reqwest::Client, url: &str, proc: &mut Proc) -> bool {
    for _ in 0..300 {
        if !matches!(proc.child.try_wait(), Ok(None)) {
            return false;
        }
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Targets the engine itself reports up.
async fn targets_up(engine: &Engine) -> anyhow::Result<usize> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    let path = if engine.kind.is_zai_dash() { "/api/targets" } else { "/api/v1/targets" };
    let body: Value = http.get(format!("{}{path}", engine.base)).send().await?.error_for_status()?.json().await?;
    Ok(match engine.kind {
        Kind::ZaiDash | Kind::Baseline => {
            body.as_array().context("/api/targets: not an array")?.iter().filter(|t| t["up"] == true).count()
        }
        _ => body["data"]["activeTargets"]
            .as_array()
            .with_context(|| format!("{}/api/v1/targets: no activeTargets", engine.kind.name()))?
            .iter()
            .filter(|t| t["health"] == "up")
            .count(),
    })
}

// ---------------------------------------------------------------------------------------------
// Measures from /proc and the file system

#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    cpu_ticks: u64,
    write_bytes: u64,
    rss_kib: u64,
    hwm_kib: u64,
    /// Allocated bytes of the data directory (what `du` counts).
    dir_bytes: u64,
}

/// Allocated bytes of each top-level entry of `dir`, largest first.
fn dir_breakdown(dir: &Path) -> Vec<(String, u64)> {
    let mut parts: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), dir_bytes(&e.path())))
        .filter(|(_, b)| *b > 0)
        .collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.1));
    parts
}

fn snapshot(pid: u32, dir: &Path) -> Snapshot {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // After the command: state is field 3 of stat(5), utime 14 and stime 15.
    let cpu_ticks = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    Snapshot {
        cpu_ticks,
        write_bytes: field(&io, "write_bytes:"),
        rss_kib: field(&status, "VmRSS:"),
        hwm_kib: field(&status, "VmHWM:"),
        dir_bytes: dir_bytes(dir),
    }
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    meta.blocks() * 512
        + std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| dir_bytes(&e.path())).sum::<u64>()
}

// ---------------------------------------------------------------------------------------------
// One run

struct EngineResult {
    kind: Kind,
    pid: u32,
    start: Snapshot,
    end: Snapshot,
    /// Scrapes the targets answered this engine in the window (all targets).
    scrapes: u64,
    /// Fewest scrapes of one target by this engine in the window.
    min_scrapes: u64,
    up: usize,
    /// The data directory's top-level entries at the end.
    breakdown: Vec<(String, u64)>,
}

impl EngineResult {
    fn cpu_ms_per_scrape(&self) -> f64 {
        (self.end.cpu_ticks - self.start.cpu_ticks) as f64 / CLOCK_TICKS_PER_SEC * 1000.0 / self.scrapes.max(1) as f64
    }

    fn per_target_day(&self, delta: f64, n: usize, secs: f64) -> f64 {
        delta * DAY_SECS / secs / n as f64
    }
}

struct Run {
    n: usize,
    secs: f64,
    engines: Vec<EngineResult>,
    bench_cpu_s: f64,
    load: (String, f64, f64, String),
}

async fn run_one(bins: &Binaries, n: usize, warmup: Duration, window: Duration) -> anyhow::Result<Run> {
    let root = tempfile::Builder::new().prefix("sidebyside-").tempdir()?;
    let fake = FakeTargets::start(n, INTERVAL).await?;
    let mut engines = Vec::new();
    let mut kinds = vec![Kind::ZaiDash, Kind::Prometheus, Kind::Victoria];
    if bins.baseline.is_some() {
        kinds.push(Kind::Baseline);
    }
    for kind in kinds {
        engines.push(start_engine(kind, bins, &fake.addrs, root.path()).await?);
    }
    eprintln!(
        "N={n}: engines started ({}); warm-up {} s",
        engines.iter().map(|e| format!("{} pid {}", e.kind.name(), e.proc.pid())).collect::<Vec<_>>().join(", "),
        warmup.as_secs()
    );
    sleep_checking(&mut engines, warmup).await?;
    check_scraped(&engines, &fake, n, None).await?;

    let load_start = loadavg();
    let counts_start = fake.counts();
    let bench_start = snapshot(std::process::id(), Path::new("/nonexistent"));
    let started = Instant::now();
    let starts: Vec<Snapshot> = engines.iter().map(|e| snapshot(e.proc.pid(), &e.data)).collect();
    eprintln!("N={n}: measuring {} s", window.as_secs());
    let mut loads = Vec::new();
    let deadline = started + window;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        sleep_checking(&mut engines, left.min(Duration::from_secs(5))).await?;
        loads.push(loadavg_1m());
    }
    let ends: Vec<Snapshot> = engines.iter().map(|e| snapshot(e.proc.pid(), &e.data)).collect();
    let secs = started.elapsed().as_secs_f64();
    let counts_end = fake.counts();
    let bench_end = snapshot(std::process::id(), Path::new("/nonexistent"));
    let load_end = loadavg();

    let expected = secs / INTERVAL.as_secs_f64();
    let ups = check_scraped(&engines, &fake, n, Some((&counts_start, expected))).await?;
    let mut results = Vec::new();
    for (i, e) in engines.iter().enumerate() {
        let k = e.kind.scraper() as usize;
        let per_target: Vec<u64> = counts_end.iter().zip(&counts_start).map(|(b, a)| b[k] - a[k]).collect();
        results.push(EngineResult {
            kind: e.kind,
            pid: e.proc.pid(),
            start: starts[i],
            end: ends[i],
            scrapes: per_target.iter().sum(),
            min_scrapes: per_target.iter().copied().min().unwrap_or(0),
            up: ups[i],
            breakdown: dir_breakdown(&e.data),
        });
    }
    drop(engines);
    let (lo, hi) = loads.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), &l| (lo.min(l), hi.max(l)));
    Ok(Run {
        n,
        secs,
        engines: results,
        bench_cpu_s: (bench_end.cpu_ticks - bench_start.cpu_ticks) as f64 / CLOCK_TICKS_PER_SEC,
        load: (load_start, lo, hi, load_end),
    })
}

async fn sleep_checking(engines: &mut [Engine], d: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + d;
    loop {
        for e in engines.iter_mut() {
            e.proc.check_alive()?;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
}

/// Every engine reports all `n` targets up and, in the window (when given), scraped each
/// target at least half the expected times; else an error naming what is missing.
async fn check_scraped(
    engines: &[Engine],
    fake: &FakeTargets,
    n: usize,
    window: Option<(&[fake_targets::Counts], f64)>,
) -> anyhow::Result<Vec<usize>> {
    let counts = fake.counts();
    let mut ups = Vec::new();
    for e in engines {
        let up = targets_up(e).await.with_context(|| format!("asking {} for its targets", e.kind.name()))?;
        ensure!(up == n, "{} reports {up} of {n} targets up; its log:\n{}", e.kind.name(), tail(&e.proc.log));
        let k = e.kind.scraper() as usize;
        let (floor, since): (u64, Vec<u64>) = match window {
            None => (1, vec![0; n]),
            Some((start, expected)) => ((expected / 2.0).floor() as u64, start.iter().map(|c| c[k]).collect()),
        };
        let short = counts.iter().zip(&since).filter(|(c, s)| c[k] - **s < floor).count();
        ensure!(
            short == 0,
            "{}: {short} of {n} targets were scraped fewer than {floor} times{}",
            e.kind.name(),
            if window.is_some() { " in the window" } else { " since the start" }
        );
        ups.push(up);
    }
    Ok(ups)
}

// ---------------------------------------------------------------------------------------------
// Report

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn mb(bytes: f64) -> String {
    format!("{:.2} MB", bytes / 1e6)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.2}x", a / b) } else { "n/a".into() }
}

impl Run {
    fn zai(&self) -> &EngineResult {
        &self.engines[0]
    }

    fn stored(&self, e: &EngineResult) -> f64 {
        e.per_target_day(e.end.dir_bytes as f64 - e.start.dir_bytes as f64, self.n, self.secs)
    }

    fn written(&self, e: &EngineResult) -> f64 {
        e.per_target_day(e.end.write_bytes as f64 - e.start.write_bytes as f64, self.n, self.secs)
    }

    fn report(&self) -> String {
        let mut s = String::new();
        let (l0, lo, hi, l1) = &self.load;
        let _ = writeln!(s, "## N = {} targets, {:.0} s measured\n", self.n, self.secs);
        let _ = writeln!(
            s,
            "Load average (1/5/15 min) {l0} at the start, {l1} at the end; 1-min figure {lo:.2}-{hi:.2} during the window. \
             The fake targets (this process) used {:.1} s of CPU in the window.\n",
            self.bench_cpu_s
        );
        let expected = self.secs / INTERVAL.as_secs_f64();
        s += "| engine | pid | targets up | scrapes per target (fewest) | CPU per target-scrape | RSS end | RSS peak | data dir start -> end | stored per target-day | written per target-day |\n";
        s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for e in &self.engines {
            let _ = writeln!(
                s,
                "| {} | {} | {}/{} | {:.1} ({}) | {:.3} ms | {:.1} MiB | {:.1} MiB | {} -> {} | {} | {} |",
                e.kind.name(),
                e.pid,
                e.up,
                self.n,
                e.scrapes as f64 / self.n as f64,
                e.min_scrapes,
                e.cpu_ms_per_scrape(),
                mib(e.end.rss_kib),
                mib(e.end.hwm_kib),
                mb(e.start.dir_bytes as f64),
                mb(e.end.dir_bytes as f64),
                mb(self.stored(e)),
                mb(self.written(e)),
            );
        }
        let _ = writeln!(s, "\n(expected {expected:.1} scrapes per target in the window)\n");
        s += "Data directories at the end:\n\n";
        for e in &self.engines {
            let parts: Vec<String> =
                e.breakdown.iter().map(|(name, b)| format!("`{name}` {}", mb(*b as f64))).collect();
            let _ = writeln!(s, "- {}: {}", e.kind.name(), parts.join(", "));
        }
        s.push('\n');
        s += "Ratios to zai-dash (engine / zai-dash; above 1 means the engine uses more):\n\n";
        s += "| engine | CPU per scrape | RSS end | RSS peak | stored per target-day | written per target-day |\n";
        s += "|---|---:|---:|---:|---:|---:|\n";
        let z = self.zai();
        for e in &self.engines[1..] {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                e.kind.name(),
                ratio(e.cpu_ms_per_scrape(), z.cpu_ms_per_scrape()),
                ratio(e.end.rss_kib as f64, z.end.rss_kib as f64),
                ratio(e.end.hwm_kib as f64, z.end.hwm_kib as f64),
                ratio(self.stored(e), self.stored(z)),
                ratio(self.written(e), self.written(z)),
            );
        }
        s += "\nStored and written bytes are the window's growth of the data directory (allocated blocks) and of \
              /proc/PID/io write_bytes, times a day over the window, over N. A short window misleads for the Go \
              engines: Prometheus keeps the last 2 h in memory (head block) and on disk only in its write-ahead \
              log and head chunks (a chunk is cut every 120 samples, 10 min at 5 s), so its growth here is mostly \
              WAL, which compaction later replaces by a block; VictoriaMetrics flushes small parts every few \
              seconds and merges them later (rewrites not yet seen, space not yet reclaimed). zai-dash's SQLite \
              write-ahead log grows to about 80 MB (20,000 pages between checkpoints) and is then reused.\n\n";
        s
    }
}

fn summary(runs: &[Run]) -> String {
    let mut s = String::from("## Summary\n\n");
    s += "| N | engine | CPU per target-scrape | RSS end | RSS peak | stored per target-day | written per target-day |\n";
    s += "|---:|---|---:|---:|---:|---:|---:|\n";
    for r in runs {
        for e in &r.engines {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} ms | {:.1} MiB | {:.1} MiB | {} | {} |",
                r.n,
                e.kind.name(),
                e.cpu_ms_per_scrape(),
                mib(e.end.rss_kib),
                mib(e.end.hwm_kib),
                mb(r.stored(e)),
                mb(r.written(e)),
            );
        }
    }
    s.push('\n');
    s
}
