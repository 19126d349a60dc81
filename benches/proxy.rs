//! Proxy overhead (issue 3): latency added by zai-dash's built-in proxy next to nginx
//! `proxy_pass`, against the same mock upstream, at concurrency 64, all in one run.
//!
//! `cargo build --release && cargo bench --bench proxy` prints the tables that BENCHMARKS.md
//! quotes. It needs nginx (`apt-get install -y nginx`) and `taskset`; it is not part of
//! scripts/test. The zai-dash under test is the real release binary (`target/release/zai-dash`,
//! or `ZAI_DASH_BIN`), started as `zai-dash proxy`.
//!
//! Processes: the mock upstream is this binary re-executed (`PROXY_BENCH_ROLE=upstream`), an axum
//! server answering `POST /v1/messages` after a fixed delay, with a small Anthropic-shaped JSON
//! message or an SSE stream. On a machine with 2 or more CPUs the load generator (this process,
//! single-threaded) is pinned to CPU 0, the mock upstream (single-threaded) and the proxy under
//! test (zai-dash, or nginx's master and single worker) to CPU 1, so the direct baseline crosses
//! cores like the proxied paths, and the load generator never competes with what it measures
//! (`PROXY_BENCH_UPSTREAM_CPU=0` moves the upstream next to the load generator instead). Either
//! way a proxy's own CPU time shows as latency. The three paths (direct, zai-dash, nginx) run
//! interleaved in rounds, the order rotated every round, and the tables give medians across
//! rounds, because a 2-core machine is noisy.
//!
//! Knobs: `PROXY_BENCH_ROUNDS` (default 9), `PROXY_BENCH_SECS` (measured seconds per path and
//! round, default 2), `PROXY_BENCH_DELAY_MS` (mock upstream delay, default 5),
//! `PROXY_BENCH_UPSTREAM_CPU` (default 1), `ZAI_DASH_BIN`,
//! `NGINX_BIN` (default `/usr/sbin/nginx`), `PROXY_BENCH_DRIVER` (`reqwest`, the default, or
//! `wrk`: the same processes and rounds driven by wrk, see `support/wrk.rs`; 3 rounds by default).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;

#[path = "support/binary.rs"]
mod binary;
#[path = "support/wrk.rs"]
mod wrk;

/// Set in the mock upstream's environment when this binary re-executes itself.
const ROLE_ENV: &str = "PROXY_BENCH_ROLE";
/// Concurrent clients (closed loop: each sends its next request when the last one ended).
const CONCURRENCY: usize = 64;
/// Default think time of the mock upstream before it answers (`PROXY_BENCH_DELAY_MS`).
const DEFAULT_DELAY_MS: u64 = 5;
/// Linux USER_HZ: the unit of utime and stime in /proc/PID/stat.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;
/// Pause between SSE chunks in the streaming answer.
const EVENT_GAP: Duration = Duration::from_millis(1);
/// Per path, once before the first round.
const WARMUP: Duration = Duration::from_secs(2);
/// Per path and round, discarded: fills the pools again after the other paths ran.
const SEGMENT_WARMUP: Duration = Duration::from_millis(300);
/// CPU of the load generator.
const LOADGEN_CPU: &str = "0";
/// CPU of the proxy under test and, by default, of the mock upstream.
const PROXY_CPU: &str = "1";

const REQUEST: &str =
    r#"{"model":"glm-4.6","max_tokens":256,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}"#;
const REQUEST_STREAM: &str = r#"{"model":"glm-4.6","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}"#;

const MESSAGE: &str = r#"{"id":"msg_bench01","type":"message","role":"assistant","model":"glm-4.6","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":14,"output_tokens":10,"cache_read_input_tokens":4,"cache_creation_input_tokens":0}}"#;

/// The streaming answer, one entry per write (the first after the delay, then `EVENT_GAP` apart).
const SSE_CHUNKS: [&str; 5] = [
    concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_bench01\",\"type\":\"message\",",
        "\"role\":\"assistant\",\"model\":\"glm-4.6\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,",
        "\"usage\":{\"input_tokens\":14,\"output_tokens\":1,\"cache_read_input_tokens\":4,\"cache_creation_input_tokens\":0}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    ),
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello!\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" How can I\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" help you today?\"}}\n\n",
    concat!(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},",
        "\"usage\":{\"output_tokens\":10}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ),
];

fn main() -> anyhow::Result<()> {
    if std::env::var(ROLE_ENV).as_deref() == Ok("upstream") {
        return mock_upstream();
    }
    let use_wrk = match std::env::var("PROXY_BENCH_DRIVER").as_deref() {
        Ok("wrk") => true,
        Ok("reqwest") | Err(_) => false,
        Ok(other) => bail!("PROXY_BENCH_DRIVER {other:?}: use reqwest (default) or wrk"),
    };
    let rounds = env_number("PROXY_BENCH_ROUNDS", if use_wrk { 3 } else { 9 })?;
    let secs = env_number("PROXY_BENCH_SECS", 2)?;
    let delay_ms = env_number("PROXY_BENCH_DELAY_MS", DEFAULT_DELAY_MS)?;
    let zai_bin = binary::zai_dash_binary()?;
    let nginx_bin = PathBuf::from(std::env::var("NGINX_BIN").unwrap_or_else(|_| "/usr/sbin/nginx".into()));
    if !nginx_bin.exists() {
        bail!("{} not found: install nginx (`apt-get install -y nginx`) or set NGINX_BIN", nginx_bin.display());
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let pin = cpus >= 2 && pin_self(LOADGEN_CPU);
    let upstream_cpu = std::env::var("PROXY_BENCH_UPSTREAM_CPU").unwrap_or_else(|_| PROXY_CPU.to_owned());
    let dir = tempfile::tempdir()?;

    let (mut upstream, upstream_addr) = start_upstream(dir.path(), pin.then_some(upstream_cpu.as_str()), delay_ms)?;
    let (mut zai, zai_addr) = start_zai_dash(&zai_bin, upstream_addr, dir.path(), pin)?;
    let (mut nginx, nginx_addr) = start_nginx(&nginx_bin, upstream_addr, dir.path(), pin)?;

    println!("# zai-dash proxy overhead (issues 3 and 14)\n");
    let driver = if use_wrk { "PROXY_BENCH_DRIVER=wrk " } else { "" };
    println!("Command: `cargo build --release && {driver}cargo bench --bench proxy`\n");
    println!("- machine: {cpus} CPUs, load average at start {}", loadavg());
    println!(
        "- pinning: {}",
        if pin {
            format!(
                "load generator on CPU {LOADGEN_CPU}, mock upstream on CPU {upstream_cpu}, proxy under test on \
                 CPU {PROXY_CPU} (taskset)"
            )
        } else {
            "none (fewer than 2 CPUs or no taskset)".to_owned()
        }
    );
    println!("- zai-dash: {} (`zai-dash proxy`, one process)", zai_bin.display());
    println!("- nginx: {} (`{}`, worker_processes 1)", nginx_version(&nginx_bin), nginx_bin.display());
    println!(
        "- load: {} with {CONCURRENCY} closed-loop connections, HTTP/1.1 keep-alive; mock upstream delay {} ms, SSE chunks {} ms apart",
        if use_wrk { "wrk (1 thread, Lua POST script)" } else { "reqwest" },
        delay_ms,
        EVENT_GAP.as_millis()
    );
    println!(
        "- {rounds} rounds x 3 paths x ({} ms discarded + {secs} s measured) per mode, after a {} s warm-up per path\n",
        if use_wrk { 1000 } else { SEGMENT_WARMUP.as_millis() },
        WARMUP.as_secs()
    );

    let loadgen_pid = std::process::id();
    let targets = [
        ("direct", upstream_addr, vec![]),
        ("zai-dash proxy", zai_addr, with_children(zai.child.id())),
        ("nginx proxy_pass", nginx_addr, with_children(nginx.child.id())),
    ]
    .map(|(name, addr, proxy_pids)| Target {
        name,
        url: format!("http://{addr}/v1/messages"),
        client: http_client(),
        proxy_pids,
        loadgen_pid,
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    for mode in [Mode::Json, Mode::Stream] {
        if use_wrk {
            let per_round = wrk::run_mode(&targets, mode, rounds, secs, dir.path())?;
            print!("{}", wrk::report(mode, &targets, &per_round));
        } else {
            let per_round = rt.block_on(run_mode(&targets, mode, rounds, Duration::from_secs(secs)));
            print!("{}", report(mode, delay_ms, &targets, &per_round));
        }
        for p in [&mut upstream, &mut zai, &mut nginx] {
            p.check_alive()?;
        }
    }
    println!("Measured in {:.0} s.", started.elapsed().as_secs_f64());
    drop((nginx, zai, upstream));
    Ok(())
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

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process, stopped (SIGTERM, then SIGKILL after 3 s) when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    _stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl Proc {
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if !matches!(self.child.try_wait(), Ok(None)) {
            bail!("{} exited during the run; its log:\n{}", self.name, tail(&self.log));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
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

/// Pins this process (before any other thread exists, so every later thread inherits it).
fn pin_self(cpu: &str) -> bool {
    let pid = std::process::id().to_string();
    Command::new("taskset")
        .args(["-a", "-cp", cpu, &pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `program`, run under `taskset -c cpu` when pinning, with a clean environment.
fn command(program: &Path, cpu: Option<&str>) -> Command {
    let mut c = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).arg(program);
            c
        }
        None => Command::new(program),
    };
    c.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c
}

/// Starts `cmd`, waits for `listening on http://ADDR` as its first stdout line, then keeps
/// draining stdout so the child never blocks or hits a closed pipe.
fn start_announcing(name: &'static str, mut cmd: Command, log: PathBuf) -> anyhow::Result<(Proc, SocketAddr)> {
    let err = std::fs::File::create(&log)?;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let stdin = child.stdin.take();
    let mut out = BufReader::new(child.stdout.take().context("no stdout")?);
    let proc = Proc { name, child, _stdin: stdin, log };
    let mut line = String::new();
    out.read_line(&mut line)?;
    let addr =
        line.trim().strip_prefix("listening on http://").and_then(|a| a.parse::<SocketAddr>().ok()).with_context(
            || format!("{name} did not announce its address (got {line:?}); its log:\n{}", tail(&proc.log)),
        )?;
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Ok((proc, addr))
}

fn start_upstream(dir: &Path, cpu: Option<&str>, delay_ms: u64) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut cmd = command(&std::env::current_exe()?, cpu);
    cmd.env(ROLE_ENV, "upstream").env("PROXY_BENCH_DELAY_MS", delay_ms.to_string());
    start_announcing("mock upstream", cmd, dir.join("upstream.log"))
}

fn start_zai_dash(bin: &Path, upstream: SocketAddr, dir: &Path, pin: bool) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut cmd = command(bin, pin.then_some(PROXY_CPU));
    cmd.arg("proxy").envs([
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("ZAI_API_KEY", "bench".to_owned()),
        ("ZAI_TARGET_URL", format!("http://{upstream}")),
        ("MAX_WORKERS", "1000".to_owned()),
        ("MAX_RETRIES", "0".to_owned()),
        ("RATE_LIMIT_INITIAL", "100000".to_owned()),
        ("RATE_LIMIT_MAX", "100000".to_owned()),
        ("RATE_LIMIT_STATE_FILE", String::new()),
    ]);
    start_announcing("zai-dash proxy", cmd, dir.join("zai-dash.log"))
}

fn start_nginx(bin: &Path, upstream: SocketAddr, dir: &Path, pin: bool) -> anyhow::Result<(Proc, SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let d = dir.display();
    // keepalive_requests is raised on both sides: its default (1000) would make nginx reconnect
    // every 1000 requests, which zai-dash's pools never do.
    let conf = format!(
        "worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream mock {{
        server {upstream};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {addr};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
        }}
    }}
}}
"
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf)?;
    let log = dir.join("nginx.log");
    let mut cmd = command(bin, pin.then_some(PROXY_CPU));
    cmd.args(["-p", &d.to_string(), "-e", &log.display().to_string(), "-c", &file.display().to_string()])
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("nginx.stderr"))?);
    let child = cmd.spawn().context("cannot start nginx")?;
    let proc = Proc { name: "nginx", child, _stdin: None, log };
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("nginx did not listen on {addr} within 5 s; its log:\n{}", tail(&proc.log));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((proc, addr))
}

fn nginx_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().trim_start_matches("nginx version: ").to_owned())
        .unwrap_or_else(|_| "nginx (version unknown)".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

// ---------------------------------------------------------------------------------------------
// Mock upstream (its own process)

fn mock_upstream() -> anyhow::Result<()> {
    // The parent holds our stdin: when it goes away (even killed), so do we.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let delay = Duration::from_millis(env_number("PROXY_BENCH_DELAY_MS", DEFAULT_DELAY_MS)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        // Like a real API server: each SSE write leaves at once instead of waiting for an ACK.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = axum::Router::new().route("/v1/messages", axum::routing::post(messages)).with_state(delay);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn messages(axum::extract::State(delay): axum::extract::State<Duration>, body: Bytes) -> Response {
    const STREAM: &[u8] = b"\"stream\":true";
    tokio::time::sleep(delay).await;
    if !body.windows(STREAM.len()).any(|w| w == STREAM) {
        return ([(header::CONTENT_TYPE, "application/json")], MESSAGE).into_response();
    }
    let chunks = futures_util::stream::unfold(0usize, |i| async move {
        let chunk = SSE_CHUNKS.get(i)?;
        if i > 0 {
            tokio::time::sleep(EVENT_GAP).await;
        }
        Some((Ok::<_, std::convert::Infallible>(Bytes::from_static(chunk.as_bytes())), i + 1))
    });
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(chunks))
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Load generator

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Json,
    Stream,
}

impl Mode {
    fn body(self) -> &'static str {
        match self {
            Mode::Json => REQUEST,
            Mode::Stream => REQUEST_STREAM,
        }
    }

    fn expected_len(self) -> usize {
        match self {
            Mode::Json => MESSAGE.len(),
            Mode::Stream => SSE_CHUNKS.iter().map(|c| c.len()).sum(),
        }
    }
}

struct Target {
    name: &'static str,
    url: String,
    client: reqwest::Client,
    /// The proxy's processes (nginx: master and worker), for its CPU time.
    proxy_pids: Vec<u32>,
    /// This process.
    loadgen_pid: u32,
}

/// `pid` and its direct children (nginx's worker), found by their parent in /proc.
fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// User plus system CPU seconds of `pids` so far (0 for a process that is gone).
fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            // After the command: state is field 3 of stat(5), utime 14 and stime 15.
            rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum::<u64>()
        })
        .sum();
    ticks as f64 / CLOCK_TICKS_PER_SEC
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(CONCURRENCY * 2)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// Latencies (ns) of the requests started inside the measured window.
#[derive(Default)]
struct Sample {
    total: Vec<u64>,
    first: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    /// CPU seconds used during the measured window by the proxy and by the load generator.
    proxy_cpu: f64,
    loadgen_cpu: f64,
}

/// One path in one round.
#[derive(Debug, Clone, Copy)]
struct Stats {
    p50: f64,
    p99: f64,
    first_p50: f64,
    first_p99: f64,
    rps: f64,
    errors: u64,
    /// Proxy CPU time per request, µs.
    proxy_us: f64,
    /// Load generator, in cores (1.0: its CPU fully busy when pinned).
    loadgen_cores: f64,
}

async fn run_mode(targets: &[Target; 3], mode: Mode, rounds: u64, measure: Duration) -> Vec<[Stats; 3]> {
    for t in targets {
        segment(t, mode, WARMUP, Duration::ZERO).await;
    }
    let mut out = Vec::new();
    for round in 0..rounds as usize {
        let mut stats = [None; 3];
        for k in 0..3 {
            let i = (round + k) % 3;
            stats[i] = Some(summarize(segment(&targets[i], mode, SEGMENT_WARMUP, measure).await, measure));
        }
        out.push(stats.map(Option::unwrap));
    }
    out
}

/// `CONCURRENCY` clients for `warmup + measure`; records what started after the warm-up.
async fn segment(t: &Target, mode: Mode, warmup: Duration, measure: Duration) -> Sample {
    let from = Instant::now() + warmup;
    let until = from + measure;
    let mut tasks = tokio::task::JoinSet::new();
    let (proxy_pids, loadgen) = (t.proxy_pids.clone(), [t.loadgen_pid]);
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let (p0, l0) = (cpu_seconds(&proxy_pids), cpu_seconds(&loadgen));
        tokio::time::sleep_until(until.into()).await;
        (cpu_seconds(&proxy_pids) - p0, cpu_seconds(&loadgen) - l0)
    });
    for _ in 0..CONCURRENCY {
        let (client, url) = (t.client.clone(), t.url.clone());
        tasks.spawn(async move {
            let mut s = Sample::default();
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    return s;
                }
                let r = request(&client, &url, mode).await;
                if t0 < from {
                    continue;
                }
                match r {
                    Ok((first, total)) => {
                        s.first.push(first.as_nanos() as u64);
                        s.total.push(total.as_nanos() as u64);
                    }
                    Err(e) => {
                        s.errors += 1;
                        s.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
        });
    }
    let mut all = Sample::default();
    while let Some(s) = tasks.join_next().await {
        let s = s.expect("client task");
        all.total.extend(s.total);
        all.first.extend(s.first);
        all.errors += s.errors;
        all.first_error = all.first_error.or(s.first_error);
    }
    (all.proxy_cpu, all.loadgen_cpu) = cpu.await.expect("CPU sampler");
    if let Some(e) = &all.first_error {
        eprintln!("{}: {} errors, the first: {e}", t.name, all.errors);
    }
    all
}

/// One request read to the end: (first body chunk, complete), checking status and length.
async fn request(client: &reqwest::Client, url: &str, mode: Mode) -> anyhow::Result<(Duration, Duration)> {
    let t0 = Instant::now();
    let mut resp = client
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "bench-client")
        .body(mode.body())
        .send()
        .await?;
    if resp.status() != reqwest::StatusCode::OK {
        bail!("status {}", resp.status());
    }
    let (mut first, mut len) = (None, 0);
    while let Some(chunk) = resp.chunk().await? {
        if first.is_none() && !chunk.is_empty() {
            first = Some(t0.elapsed());
        }
        len += chunk.len();
    }
    let total = t0.elapsed();
    if len != mode.expected_len() {
        bail!("body of {len} bytes, expected {}", mode.expected_len());
    }
    Ok((first.unwrap_or(total), total))
}

fn summarize(mut s: Sample, measure: Duration) -> Stats {
    s.total.sort_unstable();
    s.first.sort_unstable();
    Stats {
        p50: percentile_ms(&s.total, 0.50),
        p99: percentile_ms(&s.total, 0.99),
        first_p50: percentile_ms(&s.first, 0.50),
        first_p99: percentile_ms(&s.first, 0.99),
        rps: s.total.len() as f64 / measure.as_secs_f64(),
        errors: s.errors,
        proxy_us: s.proxy_cpu * 1e6 / s.total.len().max(1) as f64,
        loadgen_cores: s.loadgen_cpu / measure.as_secs_f64(),
    }
}

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

// ---------------------------------------------------------------------------------------------
// Report

fn report(mode: Mode, delay_ms: u64, targets: &[Target; 3], rounds: &[[Stats; 3]]) -> String {
    let col = |i: usize, f: fn(&Stats) -> f64| median(rounds.iter().map(|r| f(&r[i])).collect());
    // Added latency per round (path minus direct in that round), then the median across rounds.
    let added = |i: usize, f: fn(&Stats) -> f64| -> Vec<f64> { rounds.iter().map(|r| f(&r[i]) - f(&r[0])).collect() };
    let stream = mode == Mode::Stream;
    let mut out = String::new();
    let gap = EVENT_GAP.as_millis();
    let title = match mode {
        Mode::Json => format!("Non-streaming `POST /v1/messages` (JSON answer after {delay_ms} ms)"),
        Mode::Stream => format!(
            "Streaming `POST /v1/messages` (SSE: first write after {delay_ms} ms, {} writes {gap} ms apart)",
            SSE_CHUNKS.len()
        ),
    };
    let _ = writeln!(out, "## {title}\n");
    let _ = writeln!(
        out,
        "Medians of {} rounds. Latencies in ms, of the complete response{}; added = path minus direct \
         in the same round. CPU: the proxy's CPU time per request, and the load generator's CPU \
         use in cores.\n",
        rounds.len(),
        if stream { " (first event: first body chunk)" } else { "" }
    );
    let first_cols = if stream { " first event p50 | added first event p50 / p99 |" } else { "" };
    let _ = writeln!(
        out,
        "| path | p50 | p99 | added p50 | added p99 |{first_cols} req/s | proxy CPU µs/req | load generator, cores | errors |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|{}---:|---:|---:|---:|", if stream { "---:|---:|" } else { "" });
    for (i, t) in targets.iter().enumerate() {
        let pair = |f: fn(&Stats) -> f64, g: fn(&Stats) -> f64, sep: &str| {
            if i == 0 {
                format!("-{sep}-")
            } else {
                format!("{:.3}{sep}{:.3}", median(added(i, f)), median(added(i, g)))
            }
        };
        let errors: u64 = rounds.iter().map(|r| r[i].errors).sum();
        let _ = write!(
            out,
            "| {} | {:.3} | {:.3} | {} | ",
            t.name,
            col(i, |s| s.p50),
            col(i, |s| s.p99),
            pair(|s| s.p50, |s| s.p99, " | ")
        );
        if stream {
            let _ =
                write!(out, "{:.3} | {} | ", col(i, |s| s.first_p50), pair(|s| s.first_p50, |s| s.first_p99, " / "));
        }
        let cpu = if i == 0 { "-".to_owned() } else { format!("{:.0}", col(i, |s| s.proxy_us)) };
        let _ = writeln!(out, "{:.0} | {cpu} | {:.2} | {errors} |", col(i, |s| s.rps), col(i, |s| s.loadgen_cores));
    }
    // A ratio of added latencies means something only when both stand out of the noise: here
    // the median absolute deviation of the direct path's percentile across rounds.
    let ratio = |f: fn(&Stats) -> f64| {
        let direct: Vec<f64> = rounds.iter().map(|r| f(&r[0])).collect();
        let mid = median(direct.clone());
        let noise = median(direct.iter().map(|x| (x - mid).abs()).collect());
        let (ours, theirs) = (median(added(1, f)), median(added(2, f)));
        if ours > noise && theirs > noise {
            format!("{:.2}x", ours / theirs)
        } else {
            format!("n/a (an added median is within the noise, {noise:.3} ms)")
        }
    };
    let _ = writeln!(
        out,
        "\nzai-dash added / nginx added: p50 {}, p99 {}{} (goal: at most 1.5x). \
         zai-dash / nginx: req/s {:.2}x, CPU per request {:.2}x. Noise: median absolute deviation \
         of the direct path across rounds.\n",
        ratio(|s| s.p50),
        ratio(|s| s.p99),
        if stream { format!(", first event p50 {}", ratio(|s| s.first_p50)) } else { String::new() },
        col(1, |s| s.rps) / col(2, |s| s.rps),
        col(1, |s| s.proxy_us) / col(2, |s| s.proxy_us),
    );
    let list = |v: Vec<f64>| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ");
    let _ = writeln!(out, "Per round (ms), to show the spread:\n");
    for (name, f) in [("p50", (|s: &Stats| s.p50) as fn(&Stats) -> f64), ("p99", |s: &Stats| s.p99)] {
        let _ = writeln!(out, "- direct {name}: {}", list(rounds.iter().map(|r| f(&r[0])).collect()));
        let _ = writeln!(out, "- zai-dash added {name}: {}", list(added(1, f)));
        let _ = writeln!(out, "- nginx added {name}: {}", list(added(2, f)));
    }
    out.push('\n');
    out
}
