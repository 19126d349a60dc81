//! Remote write cost: `cargo bench --bench remote` prints the tables BENCHMARKS.md quotes.
//!
//! 1. In process, per scrape of the fixture: what remote write adds to the scrape path
//!    (collecting the samples, in `ingest`), to the appender (encoding a chunk) and to the
//!    shipper (joining chunks into a request body).
//! 2. Into real receivers (Debian's `victoria-metrics` and `prometheus`, when installed), two
//!    paths: **live**, scrapes offered to the hand-off at a steady pace the receiver keeps up
//!    with (collect, encode, ship from memory); **backlog**, a queue of the same size already in
//!    the database (what an outage leaves), shipped as fast as the receiver takes it. For each:
//!    samples per wall second, samples per CPU-second of zai-dash (this process, `getrusage`),
//!    the receiver's CPU (`/proc/PID/stat`) and the bytes written to disk per scrape
//!    (`write_bytes` of `/proc/self/io`: SQLite's writes, WAL and checkpoints included).

#[path = "../tests/engines/mod.rs"]
mod engines;
#[path = "support/fill.rs"]
#[allow(dead_code)]
mod fill;

use std::sync::Arc;
use std::time::{Duration, Instant};

use engines::{Engine, Kind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zai_dash::clock::{Clock, SystemClock};
use zai_dash::ports::samples::{Chunk, SampleQueue, ScrapeSamples};
use zai_dash::remote::{self, RemoteSettings, wire};
use zai_dash::scrape::{outbound, parse};
use zai_dash::store::Store;

/// Pods and scrapes of each in the shipped queue: 40 pods x 100 scrapes of the fixture.
const PODS: usize = 40;
const SCRAPES: usize = 100;

fn main() {
    println!("# zai-dash remote write benchmarks\n");
    per_scrape_cost();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!("## {PODS} pods x {SCRAPES} scrapes of the fixture into a receiver (release)\n");
    println!(
        "| receiver | path | samples | wall | samples/s | zai-dash CPU | samples per zai-dash CPU-second | receiver CPU | disk bytes written per scrape |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for kind in [Kind::Victoria, Kind::Prometheus] {
        runtime.block_on(ship_into(kind));
    }
    println!();
}

/// The median of `values`.
fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Per scrape, medians of 9 rounds of 200 scrapes, the steps interleaved in each round. Without
/// remote write the scrape drops its parsed exposition; with it, `collect` moves the exposition's
/// labels into the samples instead: the scrape path pays the difference.
fn per_scrape_cost() {
    let expo = parse::parse(fill::FIXTURE).unwrap();
    let (n, rounds) = (200u32, 9);
    let (mut dropped, mut collected, mut encoded, mut joined) = (vec![], vec![], vec![], vec![]);
    let mut size = 0;
    for _ in 0..rounds {
        let copies: Vec<_> = (0..n).map(|_| expo.clone()).collect();
        let t = Instant::now();
        for c in copies {
            drop(std::hint::black_box(c));
        }
        dropped.push(t.elapsed() / n);
        let copies: Vec<_> = (0..n).map(|_| expo.clone()).collect();
        let t = Instant::now();
        let samples: Vec<_> =
            copies.into_iter().map(|c| outbound::collect(c, 0, "production", "10.0.0.1:8080")).collect();
        collected.push(t.elapsed() / n);
        let t = Instant::now();
        let chunks: Vec<Chunk> = samples.into_iter().map(wire::encode_chunk).collect();
        encoded.push(t.elapsed() / n);
        size = chunks[0].payload.len();
        let t = Instant::now();
        for request in chunks.chunks(20) {
            let payloads: Vec<&[u8]> = request.iter().map(|c| c.payload.as_slice()).collect();
            std::hint::black_box(wire::request_body(&payloads).unwrap());
        }
        joined.push(t.elapsed() / n);
    }
    let per = outbound::collect(expo.clone(), 0, "production", "x:1").series.len();
    let (dropped, collected) = (median(dropped), median(collected));
    println!("## Per scrape of the fixture ({per} zai_proxy_* samples, release; medians of {rounds} rounds of {n})\n");
    println!("| step | where | time |");
    println!("|---|---|---|");
    println!(
        "| drop the parsed exposition (what a scrape does without remote write) | scrape path | {:.0} µs |",
        us(dropped)
    );
    println!(
        "| collect the samples with variant and instance (moves the labels) | scrape path | {:.0} µs |",
        us(collected)
    );
    println!("| **added to the scrape path** | | **{:.0} µs** |", us(collected.saturating_sub(dropped)));
    println!(
        "| encode protobuf + snappy (chunk of {size} bytes), drop the samples | appender | {:.0} µs |",
        us(median(encoded))
    );
    println!("| join into a request body (20 chunks per request) | shipper | {:.0} µs |", us(median(joined)));
    println!();
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Scrape `k` of pod `pod` (instances `10.<set>.x.y:8080`), 5 s apart per pod, the last one
/// at `end_ms`: each series in time order when taken in `(k, pod)` order.
fn scrape(expo: &parse::Exposition, set: usize, pod: usize, k: usize, end_ms: i64) -> ScrapeSamples {
    let ts = end_ms - (SCRAPES - k) as i64 * 5_000 + pod as i64;
    let instance = format!("10.{set}.{}.{}:8080", pod / 200, pod % 200);
    outbound::collect(expo.clone(), ts, "production", &instance)
}

/// Everything measured over one run.
struct Run {
    samples: u64,
    wall: f64,
    cpu: f64,
    receiver_cpu: f64,
    written: u64,
}

impl Run {
    fn print(&self, kind: Kind, path: &str) {
        println!(
            "| {kind:?} | {path} | {} | {:.2} s | {:.0} | {:.2} s | {:.0} | {:.2} s | {:.0} B |",
            self.samples,
            self.wall,
            self.samples as f64 / self.wall,
            self.cpu,
            self.samples as f64 / self.cpu,
            self.receiver_cpu,
            self.written as f64 / (PODS * SCRAPES) as f64
        );
    }
}

/// Measures `work` (which ships `samples`), CPU and bytes included.
async fn measure(engine: &Engine, samples: u64, work: impl std::future::Future<Output = ()>) -> Run {
    let (receiver_cpu, written) = (process_cpu(engine.pid()), written_bytes());
    let (started, cpu) = (Instant::now(), own_cpu());
    work.await;
    Run {
        samples,
        wall: started.elapsed().as_secs_f64(),
        cpu: own_cpu() - cpu,
        receiver_cpu: process_cpu(engine.pid()) - receiver_cpu,
        written: written_bytes() - written,
    }
}

async fn wait_shipped(status: &remote::RemoteStatus, samples: u64) {
    loop {
        let s = status.snapshot(0);
        assert_eq!((s.failed, s.dropped), (0, 0), "nothing refused or dropped: {s:?}");
        if s.sent >= samples && s.queued == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Bytes of files this process has dirtied (`write_bytes` of `/proc/self/io`, counted when a
/// page is dirtied, so before writeback; sockets are not counted): SQLite's writes, WAL and
/// checkpoints included. The measure decisions.md uses for disk write volume.
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// CPU seconds (user + system) this process has used.
fn own_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and has no other effect.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds a process has used, from `/proc/PID/stat` (fields 14 and 15, in clock ticks).
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

async fn ship_into(kind: Kind) {
    if std::process::Command::new(kind.binary()).arg("--version").output().is_err() {
        println!("| {kind:?} | not installed | | | | | | | |");
        return;
    }
    let engine = match kind {
        Kind::Victoria => Engine::victoria().await,
        Kind::Prometheus => Engine::prometheus(&[], 60_000).await,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("remote.db")).unwrap();
    let expo = parse::parse(fill::FIXTURE).unwrap();
    let per_scrape = outbound::collect(expo.clone(), 0, "production", "x:1").series.len() as u64;
    let samples = per_scrape * (PODS * SCRAPES) as u64;
    let end = SystemClock.now_ms();
    let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
    let settings = RemoteSettings::new(engine.write_url().parse().unwrap());
    let running =
        remote::spawn(&tracker, &cancel, settings, Arc::new(store.clone()), Arc::new(SystemClock)).await.unwrap();
    // Live: one scrape of every pod every 100 ms, what a receiver keeps up with.
    let live = measure(&engine, samples, async {
        for k in 0..SCRAPES {
            for pod in 0..PODS {
                running.sink.offer(scrape(&expo, 1, pod, k, end));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_shipped(&running.status, samples).await;
    })
    .await;
    live.print(kind, "live");
    // Backlog: the same amount already in the database, shipped by a fresh writer.
    let chunks: Vec<Chunk> = (0..SCRAPES)
        .flat_map(|k| (0..PODS).map(move |pod| (k, pod)))
        .map(|(k, pod)| wire::encode_chunk(scrape(&expo, 2, pod, k, end)))
        .collect();
    let (tracker2, cancel2) = (TaskTracker::new(), CancellationToken::new());
    let backlog = measure(&engine, samples, async {
        for tick in chunks.chunks(PODS) {
            store.append(tick.to_vec()).await.unwrap();
        }
        let settings = RemoteSettings::new(engine.write_url().parse().unwrap());
        let r =
            remote::spawn(&tracker2, &cancel2, settings, Arc::new(store.clone()), Arc::new(SystemClock)).await.unwrap();
        wait_shipped(&r.status, samples).await;
    })
    .await;
    backlog.print(kind, "backlog (queued in the database)");
    for (t, c) in [(tracker, cancel), (tracker2, cancel2)] {
        c.cancel();
        t.close();
    }
    drop(running);
}
