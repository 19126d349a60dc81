//! Live fan-out under load (issue 11): 1,000 concurrent `GET /api/events` clients on the real
//! release binary, 10 % of which never read.
//!
//! `cargo bench --bench sse_fanout` prints the tables that BENCHMARKS.md quotes. Not part of
//! scripts/test: it takes several minutes and wants a quiet machine.
//!
//! - **zai-dash**: the real `zai-dash serve` (the binary cargo built for this bench, or
//!   `ZAI_DASH_BIN`; a binary older than the sources is refused) with its defaults: 5 s points,
//!   5 s scrapes, a fresh database. It scrapes `SSE_BENCH_VARIANTS` fake targets (one per
//!   variant, so one `metrics` event per variant per tick) served by this process on loopback:
//!   the realistic fixture exposition with growing counters.
//! - **Readers**: raw TCP clients that send `GET /api/events`, decode the chunked body and the
//!   SSE frames, and record for every `metrics` event the moment the read that completed it
//!   returned. An event's delivery delay at a reader is that moment minus the moment the first
//!   reader completed the same event id: the fan-out spread, which is what 1,000 clients add
//!   (the absolute publish time is not observable from outside; the first reader's own latency
//!   on loopback is well under a millisecond). One reader also parses each event's bucket end,
//!   giving the lag from the bucket's end to the first delivery (the ticker's slack, the write
//!   and the publish).
//! - **Slow clients**: raw TCP clients that send the same request and never read a byte, so
//!   their receive buffer and then the server's send buffer fill. A slow client counts as cut
//!   when the server side of its connection leaves ESTABLISHED (`/proc/net/tcp`, sampled every
//!   second): zai-dash closed it.
//! - **Resources**: zai-dash's VmRSS, VmHWM and open fds (`/proc/PID/...`), its own
//!   `zai_dash_sse_clients` gauge, and the bytes the kernel holds for the slow clients (server
//!   send queues and client receive queues), every second.
//!
//! Phases: start and wait for the first tick; connect everything (one slow client in ten,
//! interleaved); measure until every slow client is cut and `SSE_BENCH_AFTER_TICKS` more ticks
//! passed, at least `SSE_BENCH_MIN_SECS`, at most `SSE_BENCH_MAX_SECS`; disconnect everyone
//! and sample again; stop zai-dash with SIGTERM and time its exit.
//!
//! Knobs: `SSE_BENCH_READERS` (900), `SSE_BENCH_SLOW` (100), `SSE_BENCH_VARIANTS` (4),
//! `SSE_BENCH_MIN_SECS` (60), `SSE_BENCH_MAX_SECS` (900), `SSE_BENCH_AFTER_TICKS` (6),
//! `ZAI_DASH_BIN`.

#[path = "support/live.rs"]
mod live;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use live::{FakeTargets, Mem, Server, cpu_seconds, env_number, fds, mem, mib, percentile, self_metric};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Clients connected per batch, and the pause between batches (no SYN storm on the backlog).
const CONNECT_BATCH: usize = 50;
const CONNECT_PAUSE: Duration = Duration::from_millis(20);
/// How often resources and the slow clients' connections are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// The point width of `zai-dash serve`.
const TICK: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let nofile = live::raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(nofile))
}

struct Knobs {
    readers: usize,
    slow: usize,
    variants: usize,
    min: Duration,
    max: Duration,
    after_ticks: u32,
}

async fn run(nofile: u64) -> anyhow::Result<()> {
    let k = Knobs {
        readers: env_number("SSE_BENCH_READERS", 900)? as usize,
        slow: env_number("SSE_BENCH_SLOW", 100)? as usize,
        variants: env_number("SSE_BENCH_VARIANTS", 4)?.max(1) as usize,
        min: Duration::from_secs(env_number("SSE_BENCH_MIN_SECS", 60)?),
        max: Duration::from_secs(env_number("SSE_BENCH_MAX_SECS", 900)?),
        after_ticks: env_number("SSE_BENCH_AFTER_TICKS", 6)? as u32,
    };
    anyhow::ensure!(k.readers >= 1, "SSE_BENCH_READERS must be at least 1");
    anyhow::ensure!(
        nofile as usize > 2 * (k.readers + k.slow) + 100,
        "RLIMIT_NOFILE is {nofile}: too low for {} clients and their server sockets",
        k.readers + k.slow
    );
    let bin = live::zai_dash_binary()?;
    let dir = tempfile::tempdir()?;
    let variants: Vec<String> = (0..k.variants).map(|i| format!("v{i}")).collect();
    let targets = FakeTargets::start(&variants, 3600.0).await;
    let mut server = Server::start(&bin, dir.path(), &targets.entries, &[])?;
    let (addr, pid) = (server.addr, server.pid());
    println!("# zai-dash live fan-out under load (issue 11)\n");
    println!("Command: `cargo bench --bench sse_fanout`\n");
    println!("- machine: {}, load average at start {}", live::machine(), live::loadavg());
    println!("- zai-dash: {} serve, defaults (5 s points and scrapes), RLIMIT_NOFILE {nofile}", bin.display());
    println!(
        "- {} fake targets (one per variant: {} `metrics` events per tick), fixture exposition with growing counters",
        k.variants, k.variants
    );
    println!(
        "- {} readers + {} slow clients that never read (one in {} connections), raw TCP on loopback; bench \
         process: tokio, 2 worker threads; nothing pinned",
        k.readers,
        k.slow,
        (k.readers + k.slow) / k.slow.max(1)
    );

    let stop = CancellationToken::new();
    // Reader 0 first: it tells when the first tick is out, and parses each event's bucket end.
    let mut readers = vec![tokio::spawn(reader(addr, true, stop.clone()))];
    let first_tick = Instant::now();
    while first_seen().is_none() {
        anyhow::ensure!(first_tick.elapsed() < Duration::from_secs(30), "no metrics event within 30 s");
        server.check_alive()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Right after a tick, so the connecting happens between ticks.
    let before = Sample::take(pid, addr, &[], server_port(addr)).await;

    let connect_start = Instant::now();
    let mut slow: Vec<SlowClient> = Vec::new();
    let total = k.readers + k.slow;
    let slow_every = total.checked_div(k.slow).unwrap_or(usize::MAX);
    let mut started = 1; // reader 0
    let mut i = 1;
    while started < k.readers || slow.len() < k.slow {
        for _ in 0..CONNECT_BATCH {
            if slow.len() < k.slow && (i % slow_every == 0 || started >= k.readers) {
                slow.push(SlowClient::connect(addr).await?);
            } else if started < k.readers {
                readers.push(tokio::spawn(reader(addr, false, stop.clone())));
                started += 1;
            }
            i += 1;
        }
        tokio::time::sleep(CONNECT_PAUSE).await;
    }
    let connected_at = loop {
        let n = self_metric(addr, "zai_dash_sse_clients").await.unwrap_or(0.0);
        if n as usize >= total {
            break Instant::now();
        }
        anyhow::ensure!(connect_start.elapsed() < Duration::from_secs(60), "only {n} of {total} clients connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let slow_ports: Vec<u16> = slow.iter().map(|s| s.port).collect();
    let connected = Sample::take(pid, addr, &slow_ports, server_port(addr)).await;
    println!(
        "- {total} clients connected in {:.1} s; measuring from {}\n",
        (connected_at - connect_start).as_secs_f64(),
        humantime::format_rfc3339_seconds(SystemTime::now())
    );

    // Measure.
    let mut timeline: Vec<(Duration, Sample)> = Vec::new();
    let mut cut_at: HashMap<u16, Duration> = HashMap::new();
    let mut stalled_at: HashMap<u16, Duration> = HashMap::new();
    let mut all_cut_at: Option<Instant> = None;
    let measure_start = Instant::now();
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        server.check_alive()?;
        let s = Sample::take(pid, addr, &slow_ports, server_port(addr)).await;
        let t = connected_at.elapsed();
        for p in &s.slow_closed {
            cut_at.entry(*p).or_insert(t);
        }
        for p in &s.slow_stalled {
            stalled_at.entry(*p).or_insert(t);
        }
        if all_cut_at.is_none() && cut_at.len() == slow_ports.len() {
            all_cut_at = Some(Instant::now());
        }
        if timeline.len().is_multiple_of(10) {
            eprintln!(
                "t={:>4.0}s rss={} MiB fds={} sse_clients={} slow open={} server queues for them={} KiB",
                t.as_secs_f64(),
                mib(s.mem.rss_kib),
                s.fds,
                s.sse_clients,
                slow_ports.len() - cut_at.len(),
                s.slow_queued / 1024
            );
        }
        timeline.push((t, s));
        let elapsed = measure_start.elapsed();
        let done = all_cut_at.is_some_and(|at| at.elapsed() >= TICK * k.after_ticks) && elapsed >= k.min;
        if done || elapsed >= k.max {
            break;
        }
    }
    let end_of_measure = Instant::now();
    let after_cut = timeline.last().map(|(_, s)| s.clone()).unwrap_or_default();

    // Everyone leaves.
    stop.cancel();
    let mut logs = Vec::new();
    for r in readers {
        logs.push(r.await?);
    }
    let slow_states: Vec<u8> = slow.iter().map(|s| s.client_state()).collect();
    drop(slow);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = Sample::take(pid, addr, &[], server_port(addr)).await;
    let stop_started = Instant::now();
    let clean = server.stop(Duration::from_secs(20));
    let stop_took = stop_started.elapsed();

    // Report.
    let mut out = String::new();
    let a = analyse(&logs, connected_at, all_cut_at.unwrap_or(end_of_measure), end_of_measure);
    writeln!(out, "## Delivery to the readers\n")?;
    writeln!(
        out,
        "Delay of each reader's receipt of a `metrics` event after the first reader's receipt of the same event id, \
         over {} events ({} ticks) and {} receipts, ms:\n",
        a.events, a.ticks, a.all.n
    )?;
    writeln!(out, "| events | receipts | p50 | p99 | p99.9 | max |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    for (name, d) in [
        ("all", &a.all),
        ("published while slow clients were connected", &a.during),
        ("published after the last slow client was cut", &a.after),
    ] {
        writeln!(out, "| {name} | {} | {:.1} | **{:.1}** | {:.1} | {:.1} |", d.n, d.p50, d.p99, d.p999, d.max)?;
    }
    writeln!(
        out,
        "\nPer tick, from the first receipt of its first event to the last receipt of its last event: p50 {:.1} ms, max {:.1} ms. Bucket end to reader 0's \
         receipt (ticker slack, write, publish, delivery): p50 {:.0} ms, max {:.0} ms. Receipts missing at readers: {}; \
         readers that lost their stream: {}.\n",
        a.spread_p50, a.spread_max, a.lag_p50, a.lag_max, a.missing, a.readers_ended
    )?;
    writeln!(out, "## Slow clients\n")?;
    let mut cut: Vec<f64> = cut_at.values().map(Duration::as_secs_f64).collect();
    cut.sort_by(f64::total_cmp);
    if cut.is_empty() {
        writeln!(out, "Cut: 0 of {}.", slow_ports.len())?;
    } else {
        writeln!(
            out,
            "Cut: **{} of {}**, after {:.0} s (first), {:.0} s (median), {:.0} s (last) from the moment all clients \
             were connected (1 s resolution).",
            cut.len(),
            slow_ports.len(),
            cut[0],
            cut[cut.len() / 2],
            cut[cut.len() - 1]
        )?;
        let mut after_stall: Vec<f64> =
            cut_at.iter().filter_map(|(p, c)| Some(c.as_secs_f64() - stalled_at.get(p)?.as_secs_f64())).collect();
        writeln!(
            out,
            "From the first sample with bytes waiting in the server's send queue (the client's receive window closed: \
             its buffer was full) to the cut: median {:.0} s, {} of them observed.",
            percentile(&mut after_stall, 0.5),
            after_stall.len()
        )?;
    }
    let peak_queued = timeline.iter().map(|(_, s)| s.slow_queued).max().unwrap_or(0);
    let peak_received = timeline.iter().map(|(_, s)| s.slow_received).max().unwrap_or(0);
    writeln!(
        out,
        "Bytes zai-dash's kernel held in send queues for them, at most: **{} KiB** ({} KiB per slow client); in \
         their own receive queues: {} KiB. Client-side TCP state when the bench dropped them: {}.\n",
        peak_queued / 1024,
        peak_queued / 1024 / slow_ports.len().max(1) as u64,
        peak_received / 1024,
        states_summary(&slow_states)
    )?;
    writeln!(out, "## zai-dash resources\n")?;
    writeln!(out, "| moment | VmRSS MiB | VmHWM MiB | open fds | SSE clients (own gauge) | threads |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    let peak = timeline.iter().map(|(_, s)| s.clone()).max_by_key(|s| s.mem.rss_kib).unwrap_or_default();
    for (name, s) in [
        ("first tick, one reader", &before),
        ("all clients connected", &connected),
        ("highest RSS while measuring", &peak),
        ("end of measurement", &after_cut),
        ("3 s after every client left", &left),
    ] {
        writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            mib(s.mem.rss_kib),
            mib(s.mem.hwm_kib),
            s.fds,
            s.sse_clients,
            s.mem.threads
        )?;
    }
    let ticks = (end_of_measure - connected_at).as_secs_f64() / TICK.as_secs_f64();
    writeln!(
        out,
        "\nCPU per tick while measuring: zai-dash {:.1} ms, this bench (readers, fake targets, sampling) {:.1} ms.",
        (after_cut.cpu_server - connected.cpu_server) * 1e3 / ticks,
        (after_cut.cpu_bench - connected.cpu_bench) * 1e3 / ticks
    )?;
    writeln!(
        out,
        "SIGTERM after the run: {} in {:.1} s. Measured for {:.0} s; load average at the end {}.",
        if clean { "exited" } else { "killed (did not exit)" },
        stop_took.as_secs_f64(),
        (end_of_measure - measure_start).as_secs_f64(),
        live::loadavg()
    )?;
    writeln!(out, "\n### Timeline (every 10 s)\n")?;
    writeln!(out, "| t (s) | VmRSS MiB | fds | SSE clients | slow clients open | server send queues for them (KiB) |")?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|")?;
    for (t, s) in timeline.iter().step_by(10) {
        let open = slow_ports.len() - cut_at.values().filter(|c| **c <= *t).count();
        writeln!(
            out,
            "| {:.0} | {} | {} | {} | {open} | {} |",
            t.as_secs_f64(),
            mib(s.mem.rss_kib),
            s.fds,
            s.sse_clients,
            s.slow_queued / 1024
        )?;
    }
    print!("{out}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Readers

/// What a reader saw.
#[derive(Default)]
struct ReaderLog {
    /// `(event id, when the read that completed it returned)`, `metrics` events only.
    receipts: Vec<(u64, Instant)>,
    /// `(event id, bucket end in Unix ms, wall-clock receipt in Unix ms)`, reader 0 only.
    buckets: Vec<(u64, i64, i64)>,
    /// Why the stream ended before the bench stopped it.
    ended: Option<String>,
}

/// The newest event id reader 0 received (to know the first tick is out).
static FIRST_SEEN: Mutex<Option<u64>> = Mutex::new(None);

fn first_seen() -> Option<u64> {
    *FIRST_SEEN.lock().unwrap()
}

async fn reader(addr: SocketAddr, reference: bool, stop: CancellationToken) -> ReaderLog {
    let mut log = ReaderLog::default();
    let result = tokio::select! {
        r = read_events(addr, reference, &mut log) => r,
        () = stop.cancelled() => return log,
    };
    log.ended = Some(match result {
        Ok(()) => "end of stream".to_owned(),
        Err(e) => e.to_string(),
    });
    log
}

async fn read_events(addr: SocketAddr, reference: bool, log: &mut ReaderLog) -> anyhow::Result<()> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(request(addr).as_bytes()).await?;
    let mut dec = Decoder::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tcp.read(&mut buf).await?;
        let now = Instant::now();
        if n == 0 {
            return Ok(());
        }
        dec.feed(&buf[..n])?;
        let mut newest = None;
        dec.events(|id, data| {
            // serde_json writes keys in order: `{"data":{...},"type":"metrics"}`.
            if !data.ends_with(b",\"type\":\"metrics\"}") {
                return;
            }
            log.receipts.push((id, now));
            if reference {
                let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                let v: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
                log.buckets.push((id, v["data"]["timestamp"].as_i64().unwrap_or(0), wall));
                newest = Some(id);
            }
        });
        if newest.is_some() {
            *FIRST_SEEN.lock().unwrap() = newest;
        }
    }
}

fn request(addr: SocketAddr) -> String {
    format!(
        "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nUser-Agent: sse-fanout-bench\r\n\r\n"
    )
}

/// An HTTP/1.1 response head, then a chunked (or plain) body of SSE frames; decoded in place,
/// without an allocation per event, so the 900 readers cost the shared CPUs as little as
/// possible.
#[derive(Default)]
struct Decoder {
    head_done: bool,
    chunked: bool,
    /// Undecoded transport bytes.
    raw: Vec<u8>,
    /// Bytes of the current chunk still to come, when inside one.
    in_chunk: usize,
    /// Decoded body bytes not yet split into events.
    body: Vec<u8>,
}

impl Decoder {
    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.raw.extend_from_slice(bytes);
        let mut pos = 0;
        if !self.head_done {
            let Some(end) = find(&self.raw, b"\r\n\r\n") else { return Ok(()) };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            anyhow::ensure!(head.starts_with("http/1.1 200"), "unexpected response: {head}");
            self.chunked = head.contains("transfer-encoding: chunked");
            self.head_done = true;
            pos = end + 4;
        }
        if !self.chunked {
            self.body.extend_from_slice(&self.raw[pos..]);
            self.raw.clear();
            return Ok(());
        }
        loop {
            if self.in_chunk > 0 {
                let take = self.in_chunk.min(self.raw.len() - pos);
                self.body.extend_from_slice(&self.raw[pos..pos + take]);
                pos += take;
                self.in_chunk -= take;
                if self.in_chunk > 0 {
                    break;
                }
                // The chunk's trailing CRLF is skipped with the next size line.
            }
            let start = pos + if self.raw[pos..].starts_with(b"\r\n") { 2 } else { 0 };
            let Some(end) = find(&self.raw[start..], b"\r\n") else { break };
            let line = std::str::from_utf8(&self.raw[start..start + end])?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)?;
            anyhow::ensure!(size > 0, "the server ended the chunked body");
            pos = start + end + 2;
            self.in_chunk = size;
        }
        self.raw.drain(..pos);
        Ok(())
    }

    /// Calls `f(id, data)` for every complete event with an id and a `data:` line.
    fn events(&mut self, mut f: impl FnMut(u64, &[u8])) {
        let mut pos = 0;
        while let Some(end) = find(&self.body[pos..], b"\n\n") {
            let block = &self.body[pos..pos + end];
            pos += end + 2;
            let (mut id, mut data) = (None, None);
            for line in block.split(|b| *b == b'\n') {
                if let Some(v) = line.strip_prefix(b"id:") {
                    id = std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<u64>().ok());
                } else if let Some(v) = line.strip_prefix(b"data:") {
                    data = Some(v.strip_prefix(b" ").unwrap_or(v));
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                f(id, data);
            }
        }
        self.body.drain(..pos);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Slow clients

/// Sends the request, then never reads.
struct SlowClient {
    tcp: TcpStream,
    port: u16,
}

impl SlowClient {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(request(addr).as_bytes()).await?;
        let port = tcp.local_addr()?.port();
        Ok(Self { tcp, port })
    }

    /// `tcpi_state` of the client's socket (1 ESTABLISHED, 7 CLOSE, 8 CLOSE_WAIT, ...).
    fn client_state(&self) -> u8 {
        use std::os::fd::AsRawFd;
        let mut info = [0u8; 232];
        let mut len = info.len() as libc::socklen_t;
        // SAFETY: TCP_INFO writes at most `len` bytes into `info` and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.tcp.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 { info[0] } else { 0 }
    }
}

fn states_summary(states: &[u8]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in states {
        let name = match s {
            1 => "ESTABLISHED",
            7 => "CLOSE (reset)",
            8 => "CLOSE_WAIT (FIN received)",
            _ => "other",
        };
        *counts.entry(name).or_default() += 1;
    }
    if counts.is_empty() {
        return "none".into();
    }
    counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------------------------
// Samples

#[derive(Clone, Default)]
struct Sample {
    mem: Mem,
    fds: usize,
    sse_clients: u64,
    /// Slow clients whose server-side socket is no longer ESTABLISHED.
    slow_closed: Vec<u16>,
    /// Slow clients with bytes waiting in the server's send queue: their window closed.
    slow_stalled: Vec<u16>,
    /// Bytes in the server's send queues of the slow clients (zai-dash's host pays for them).
    slow_queued: u64,
    /// Bytes in the slow clients' own receive queues (this process's side).
    slow_received: u64,
    /// CPU seconds so far: zai-dash, and this process.
    cpu_server: f64,
    cpu_bench: f64,
}

impl Sample {
    async fn take(pid: u32, addr: SocketAddr, slow_ports: &[u16], server_port: u16) -> Self {
        let sse_clients = self_metric(addr, "zai_dash_sse_clients").await.unwrap_or(-1.0) as u64;
        let sockets = tcp_sockets();
        let (mut slow_closed, mut slow_stalled) = (Vec::new(), Vec::new());
        let (mut slow_queued, mut slow_received) = (0, 0);
        for &p in slow_ports {
            match sockets.get(&(server_port, p)) {
                Some(s) if s.state == 1 => {
                    slow_queued += s.tx_queue;
                    if s.tx_queue > 0 {
                        slow_stalled.push(p);
                    }
                }
                _ => slow_closed.push(p),
            }
            if let Some(c) = sockets.get(&(p, server_port)) {
                slow_received += c.rx_queue;
            }
        }
        Self {
            mem: mem(pid),
            fds: fds(pid),
            sse_clients,
            slow_closed,
            slow_stalled,
            slow_queued,
            slow_received,
            cpu_server: cpu_seconds(pid),
            cpu_bench: cpu_seconds(std::process::id()),
        }
    }
}

fn server_port(addr: SocketAddr) -> u16 {
    addr.port()
}

struct TcpSocket {
    state: u8,
    tx_queue: u64,
    rx_queue: u64,
}

/// IPv4 TCP sockets by `(local port, remote port)`, from /proc/net/tcp.
fn tcp_sockets() -> HashMap<(u16, u16), TcpSocket> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |a: &str| a.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (tx, rx) = f.get(4)?.split_once(':')?;
            Some((
                (port(f.get(1)?)?, port(f.get(2)?)?),
                TcpSocket {
                    state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                    tx_queue: u64::from_str_radix(tx, 16).ok()?,
                    rx_queue: u64::from_str_radix(rx, 16).ok()?,
                },
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Analysis

#[derive(Default)]
struct Dist {
    n: usize,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Dist {
    fn of(mut v: Vec<f64>) -> Self {
        let n = v.len();
        let max = v.iter().copied().fold(f64::NAN, f64::max);
        Self { n, p50: percentile(&mut v, 0.5), p99: percentile(&mut v, 0.99), p999: percentile(&mut v, 0.999), max }
    }
}

struct Analysis {
    events: usize,
    ticks: usize,
    all: Dist,
    during: Dist,
    after: Dist,
    spread_p50: f64,
    spread_max: f64,
    lag_p50: f64,
    lag_max: f64,
    missing: usize,
    readers_ended: usize,
}

/// Delivery delays of the events first received between `from` and `to`, split at `cut`.
fn analyse(logs: &[ReaderLog], from: Instant, cut: Instant, to: Instant) -> Analysis {
    let mut first: BTreeMap<u64, Instant> = BTreeMap::new();
    for log in logs {
        for &(id, at) in &log.receipts {
            first.entry(id).and_modify(|f| *f = (*f).min(at)).or_insert(at);
        }
    }
    first.retain(|_, at| *at >= from && *at <= to);
    let (mut all, mut during, mut after) = (Vec::new(), Vec::new(), Vec::new());
    let mut last: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut missing = 0;
    for log in logs.iter().filter(|l| l.ended.is_none()) {
        let mine: HashMap<u64, Instant> = log.receipts.iter().copied().collect();
        for (id, f) in &first {
            let Some(at) = mine.get(id) else {
                missing += 1;
                continue;
            };
            let d = (*at - *f).as_secs_f64() * 1e3;
            all.push(d);
            if *f < cut {
                during.push(d)
            } else {
                after.push(d)
            }
            last.entry(*id).and_modify(|l| *l = (*l).max(*at)).or_insert(*at);
        }
    }
    // A tick's events are published together: spread of a tick = last receipt of its newest
    // event minus first receipt of its oldest, ticks told apart by the bucket end.
    let buckets: BTreeMap<u64, i64> = logs.iter().flat_map(|l| l.buckets.iter().map(|b| (b.0, b.1))).collect();
    let mut ticks: BTreeMap<i64, (Instant, Instant)> = BTreeMap::new();
    for (id, f) in &first {
        let (Some(b), Some(l)) = (buckets.get(id), last.get(id)) else { continue };
        ticks.entry(*b).and_modify(|t| *t = (t.0.min(*f), t.1.max(*l))).or_insert((*f, *l));
    }
    let mut spreads: Vec<f64> = ticks.values().map(|(f, l)| (*l - *f).as_secs_f64() * 1e3).collect();
    let spread_max = spreads.iter().copied().fold(f64::NAN, f64::max);
    let mut lags: Vec<f64> = logs
        .iter()
        .flat_map(|l| l.buckets.iter())
        .filter(|b| first.contains_key(&b.0))
        .map(|b| (b.2 - b.1) as f64)
        .collect();
    let lag_max = lags.iter().copied().fold(f64::NAN, f64::max);
    Analysis {
        events: first.len(),
        ticks: ticks.len(),
        all: Dist::of(all),
        during: Dist::of(during),
        after: Dist::of(after),
        spread_p50: percentile(&mut spreads, 0.5),
        spread_max,
        lag_p50: percentile(&mut lags, 0.5),
        lag_max,
        missing,
        readers_ended: logs.iter().filter(|l| l.ended.is_some()).count(),
    }
}
