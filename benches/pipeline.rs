//! Benchmarks of the core pipeline. `cargo bench --bench pipeline` prints the tables that
//! BENCHMARKS.md quotes. Comparisons run interleaved in one process (A, B, A, B, ...) and
//! report medians of rounds, because a 2-core machine is noisy.

#[path = "support/fake_targets.rs"]
#[allow(dead_code)] // the side-by-side bench uses the rest
mod fake_targets;
#[path = "support/fill.rs"]
mod fill;
#[path = "support/scrape_path.rs"]
mod scrape_path;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use fill::{DAY_MS, FIXTURE, percentile, prefill, scaled_reading};
use tokio_util::sync::CancellationToken;
use zai_dash::clock::{Clock, SystemClock, bucket_end};
use zai_dash::config::{Settings, TargetSpec};
use zai_dash::health::HealthBoard;
use zai_dash::hub::Hub;
use zai_dash::point::TargetRow;
use zai_dash::ports::read::PointQuery;
use zai_dash::scrape::increase::TargetState;
use zai_dash::scrape::persist::Persister;
use zai_dash::scrape::{parse, reading};
use zai_dash::store::query::{self, Table};
use zai_dash::store::range::{self, RangeRead};
use zai_dash::store::source::StoreSource;
use zai_dash::store::write::{self, StateUpdate, WriteBatch, WriterStats};
use zai_dash::store::{Store, codec};
use zai_dash::web::{self, AppState};

#[global_allocator]
static ALLOCATOR: scrape_path::Counting = scrape_path::Counting;

fn main() {
    // The process's allocator policy (one arena, mmap threshold fixed at 128 KiB), as `main`
    // sets it: with glibc's default a freed 2 MB body raises the threshold and later requests
    // reuse heap pages, which the service never does (BENCHMARKS.md, "First request, eighth
    // stop"). `BENCH_HEAP=glibc` keeps glibc's default, as the bench ran before.
    let heap = std::env::var("BENCH_HEAP").unwrap_or_default();
    if heap != "glibc" {
        zai_dash::heap::limit_arenas();
    }
    println!("# zai-dash core pipeline benchmarks\n");
    println!(
        "Allocator: {}.\n",
        if heap == "glibc" { "glibc's default" } else { "the service's (`heap::limit_arenas`)" }
    );
    // `BENCH_ONLY=query cargo bench --bench pipeline` runs one section while iterating.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "parse" {
        parse_throughput();
    }
    if only == "scrape" {
        // Not in the default run: it starts fake targets and runs the real scraper.
        scrape_path::run();
        return;
    }
    if only.is_empty() || only == "ingest" {
        ingest_cost();
    }
    if only.is_empty() || only == "disk" {
        disk_per_target_day();
    }
    if only.is_empty() || only == "volume" {
        write_volume();
    }
    if !(only.is_empty() || only == "query") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(query_latency());
}

/// The fixture with every counter and histogram series scaled by `frac` (as if `frac` x 12 h
/// of the fixture's traffic had happened), gauges unchanged.
fn scaled_fixture(frac: f64) -> String {
    let mut out = String::with_capacity(FIXTURE.len());
    for line in FIXTURE.lines() {
        let cumulative = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .any(|s| line.split(['{', ' ']).next().unwrap_or("").ends_with(s));
        match line.rsplit_once(' ') {
            Some((series, value)) if cumulative && !line.starts_with('#') => {
                let v: f64 = value.parse().unwrap();
                let scaled = if v.fract() == 0.0 { (v * frac).floor() } else { v * frac };
                out.push_str(&format!("{series} {scaled}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `f` repeatedly for about `dur`; returns seconds per call.
fn time_per_call(dur: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        f();
        n += 1;
    }
    start.elapsed().as_secs_f64() / n as f64
}

fn parse_throughput() {
    let big: String = (0..20)
        .map(|i| {
            FIXTURE
                .replace("zai_proxy_", &format!("zai_proxy{i}_"))
                .replace("go_goroutines", &format!("go{i}_goroutines"))
                .replace("promhttp_", &format!("promhttp{i}_"))
        })
        .collect();
    println!("## Parse throughput (release, median of 5 interleaved rounds of 0.4 s)\n");
    println!("| input | zai-dash parser | prometheus-parse 0.2.5 | ratio |");
    println!("|---|---|---|---|");
    for (name, text) in
        [("fixture (32 KB, 249 samples)", FIXTURE), ("20x fixture (656 KB, 4,980 samples)", big.as_str())]
    {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            ours.push(time_per_call(Duration::from_millis(400), || {
                std::hint::black_box(parse::parse(std::hint::black_box(text)).unwrap());
            }));
            theirs.push(time_per_call(Duration::from_millis(400), || {
                let lines = text.lines().map(|l| Ok(l.to_owned()));
                std::hint::black_box(prometheus_parse::Scrape::parse(lines).unwrap());
            }));
        }
        let mb = text.len() as f64 / 1e6;
        let (a, b) = (mb / median(ours), mb / median(theirs));
        println!("| {name} | {a:.0} MB/s | {b:.0} MB/s | {:.1}x |", a / b);
    }
    println!();
}

fn ingest_cost() {
    let texts: Vec<String> = (1..=50).map(|i| scaled_fixture(1.0 + i as f64 * 0.001)).collect();
    let mut i = 0usize;
    let mut state = Tracked::default();
    let per_scrape = time_per_call(Duration::from_secs(2), || {
        if i.is_multiple_of(texts.len()) {
            state = Tracked::default();
        }
        let expo = parse::parse(&texts[i % texts.len()]).unwrap();
        let r = reading::read(&expo);
        let at = i as i64 * 5_000;
        let row = state.state.advance(&r, at, 1, "production");
        std::hint::black_box(state.persister.after_scrape(&state.state, at, "production"));
        std::hint::black_box(codec::encode(&row.counts, &row.totals, &row.gauges));
        i += 1;
    });
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ingest.db")).unwrap();
    let (ids, mut states) = register(&store, 6);
    let mut tick = 0i64;
    let per_tick = time_per_call(Duration::from_secs(2), || {
        let text = &texts[(tick as usize) % texts.len()];
        let batch = tick_batch(&ids, &mut states, text, 1_800_000_000_000 + tick * 5_000);
        write::write_batch(&mut store.conn().unwrap(), &batch, 60_000).unwrap();
        tick += 1;
    });
    println!("## Ingest cost (release)\n");
    println!("| step | time |");
    println!("|---|---|");
    println!(
        "| one scrape of the fixture: parse, select series, increases, state journal entry, row encoding | {:.0} µs |",
        per_scrape * 1e6
    );
    println!(
        "| one tick written: 6 targets' rows and states in one SQLite transaction (WAL, synchronous=NORMAL) | {:.0} µs |",
        per_tick * 1e6
    );
    println!();
}

/// A target's scrape state and what was persisted of it, as a scrape task keeps them.
#[derive(Default)]
struct Tracked {
    state: TargetState,
    persister: Persister,
}

impl Tracked {
    /// Advances the state and builds the write the scraper would hand over.
    fn scrape(&mut self, r: &reading::Reading, at: i64, id: i64, variant: &str) -> (TargetRow, StateUpdate) {
        let mut row = self.state.advance(r, at, id, variant);
        row.ts_ms = bucket_end(at, 5_000);
        let (scraped_ms, write) = self.persister.after_scrape(&self.state, at, variant);
        let update = StateUpdate { target_id: id, scraped_ms, write, totals: row.totals, variant: variant.to_owned() };
        (row, update)
    }
}

fn register(store: &Store, n: usize) -> (Vec<(i64, String)>, Vec<Tracked>) {
    let pairs: Vec<(String, String)> = (0..n)
        .map(|i| {
            (format!("http://pod-{i}:8080/metrics"), if i < n.div_ceil(2) { "production" } else { "canary" }.to_owned())
        })
        .collect();
    let ids = query::register_targets(&store.conn().unwrap(), &pairs, 0).unwrap();
    (ids.into_iter().zip(pairs).map(|(t, (_, v))| (t.id, v)).collect(), (0..n).map(|_| Tracked::default()).collect())
}

fn tick_batch(ids: &[(i64, String)], states: &mut [Tracked], text: &str, at: i64) -> WriteBatch {
    let r = reading::read(&parse::parse(text).unwrap());
    let mut rows = Vec::new();
    let mut updates = Vec::new();
    for ((id, variant), st) in ids.iter().zip(states.iter_mut()) {
        let (row, update) = st.scrape(&r, at, *id, variant);
        updates.push(update);
        rows.push(row);
    }
    WriteBatch {
        bucket_end_ms: bucket_end(at, 5_000),
        rows,
        states: updates,
        points: vec![],
        events: vec![],
        late: false,
    }
}

fn disk_per_target_day() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("day.db")).unwrap();
    let (ids, mut states) = register(&store, 1);
    let empty = live_bytes(&store);
    let start = 1_800_000_000_000;
    let ticks = DAY_MS / 5_000;
    let base = reading::read(&parse::parse(FIXTURE).unwrap());
    // Requests arrive as a Poisson process at the fixture's rate (1,530 per 12 h); each one moves
    // every counter by its share of the fixture's totals, so counters change in steps, as they do.
    let per_tick: f64 = 1530.0 / (12.0 * 3600.0) * 5.0;
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let plan = zai_dash::store::downsample::Plan {
        point_ms: 5_000,
        rollup_ms: 60_000,
        settle_ms: 11_000,
        retention_raw_ms: 10 * DAY_MS,
        retention_rollup_ms: 10 * DAY_MS,
        retention_coarse_ms: 10 * DAY_MS,
    };
    let mut requests = 1530.0;
    for t in 0..ticks {
        let mut u = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        // Knuth's Poisson sampling.
        let (limit, mut p, mut k) = ((-per_tick).exp(), 1.0, 0.0);
        loop {
            p *= u();
            if p <= limit {
                break;
            }
            k += 1.0;
        }
        requests += k;
        let at = start + t * 5_000 + 1_000;
        let (row, update) = states[0].scrape(&scaled_reading(&base, requests / 1530.0), at, ids[0].0, &ids[0].1);
        let batch = WriteBatch {
            bucket_end_ms: row.ts_ms,
            rows: vec![row],
            states: vec![update],
            points: vec![],
            events: vec![],
            late: false,
        };
        write::write_batch(&mut store.conn().unwrap(), &batch, 60_000).unwrap();
        if t % 12 == 11 {
            // The downsampler every minute, as the server runs it: rollups, then chunks.
            zai_dash::store::downsample::run_once(&mut store.conn().unwrap(), at, plan).unwrap();
        }
    }
    zai_dash::store::downsample::run_once(&mut store.conn().unwrap(), start + DAY_MS + 60_000, plan).unwrap();
    let live = live_bytes(&store) - empty;
    let tables = table_bytes(&store);
    let c = store.conn().unwrap();
    let (open_rows, chunk_rows): (i64, i64) = c
        .query_row(
            "SELECT (SELECT COUNT(*) FROM metrics_5s), (SELECT COALESCE(SUM(rows), 0) FROM metrics_5s_chunks)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    drop(c);
    println!("## Disk per target-day\n");
    println!("Traffic: the fixture's mix (2 models, 5 status codes, quota gauges) at its rate of 1,530 requests per");
    println!(
        "12 h, as a Poisson process; {:.0} requests in the day. The downsampler runs every simulated",
        requests - 1530.0
    );
    println!("minute (rollups, then sealing rolled 10-minute windows into chunks), as the server runs it.\n");
    println!("| what | bytes |");
    println!("|---|---|");
    println!(
        "| raw rows, 24 h at 5 s ({chunk_rows} sealed in chunks, {open_rows} open): payload bytes | {:.2} MB |",
        tables.raw as f64 / 1e6
    );
    println!("| metrics_1m rows (chunks and open rows): payload bytes | {:.2} MB |", tables.minutes as f64 / 1e6);
    println!("| metrics_10m rows (chunks and open rows): payload bytes | {:.2} MB |", tables.tens as f64 / 1e6);
    println!(
        "| the database's pages in use (everything: tables, indexes, targets, journal) | {:.2} MB |",
        live as f64 / 1e6
    );
    println!();
}

/// Bytes of the database's pages in use (the file less its free pages), WAL checkpointed.
fn live_bytes(store: &Store) -> u64 {
    let c = store.conn().unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    let pragma = |name: &str| c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0)).unwrap();
    ((pragma("page_count") - pragma("freelist_count")) * pragma("page_size")) as u64
}

/// Payload bytes of each points table: raw, 1 min and 10 min rows, chunks and open rows.
struct TableBytes {
    raw: u64,
    minutes: u64,
    tens: u64,
}

fn table_bytes(store: &Store) -> TableBytes {
    let c = store.conn().unwrap();
    // A table's payload bytes, open rows and chunks (a build without a chunk table: none).
    let sum = |table: &str| {
        [table.to_owned(), format!("{table}_chunks")]
            .iter()
            .filter(|t| {
                c.query_row("SELECT count(*) FROM sqlite_master WHERE name = ?1", [t.as_str()], |r| r.get::<_, i64>(0))
                    .unwrap()
                    > 0
            })
            .map(|t| {
                let sql = format!("SELECT SUM(length(data)) FROM {t}");
                c.query_row(&sql, [], |r| r.get::<_, Option<i64>>(0)).unwrap().unwrap_or(0) as u64
            })
            .sum()
    };
    TableBytes { raw: sum("metrics_5s"), minutes: sum("metrics_1m"), tens: sum("metrics_10m") }
}

/// Bytes this process has dirtied in the page cache so far (`/proc/self/io` `write_bytes`: what
/// reaches the disk, counted when a page is first dirtied).
fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Disk write volume of the storage path, in process: `n` targets scraped every 5 s for a
/// simulated `hours`, each tick one transaction (rows and state writes), the downsampler every
/// minute, on a file on the real disk (not tmpfs, where nothing is written). Traffic: 2 requests
/// per target per 5 s on average (Poisson) on the fixture's series, each moving the series one
/// request moves in a zai-proxy ([`serve_request`]).
fn write_volume() {
    println!("## Disk write volume per target-day (in process, storage path only)\n");
    println!(
        "| targets | page size | simulated | write_bytes per target-day | of which writer / downsampler | per target-scrape | stored per target-day (pages in use) | of which payloads: raw / 1 min / 10 min |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let hours: i64 = std::env::var("BENCH_HOURS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    // `BENCH_PAGES=4096` runs one page size only.
    let pages: Vec<u32> = std::env::var("BENCH_PAGES")
        .ok()
        .map(|v| v.split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![4096, 1024]);
    // `BENCH_TARGETS=100` runs one fleet size only.
    let sizes: Vec<usize> = std::env::var("BENCH_TARGETS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100]);
    for &n in &sizes {
        for &page in &pages {
            let r = volume_run(n, page, hours);
            let day = |b: u64| b as f64 / n as f64 * 24.0 / hours as f64 / 1e6;
            println!(
                "| {n} | {page} B | {hours} h | {:.1} MB | {:.0} % / {:.0} % | {:.0} B | {:.2} MB | {:.2} / {:.2} / {:.2} MB |",
                r.written_per_day / 1e6,
                r.shares.0 * 100.0,
                r.shares.1 * 100.0,
                r.written_per_day / (DAY_MS / 5_000) as f64,
                day(r.stored),
                day(r.tables.raw),
                day(r.tables.minutes),
                day(r.tables.tens),
            );
        }
    }
    println!();
}

/// What one volume run wrote and kept.
struct VolumeRun {
    written_per_day: f64,
    /// Shares of the bytes written during the writer's transactions (rows and states, with the
    /// WAL checkpoints their commits trigger) and during the downsampler's runs.
    shares: (f64, f64),
    /// Pages in use at the end (the state journal pruned, the WAL checkpointed).
    stored: u64,
    tables: TableBytes,
}

fn volume_run(n: usize, page: u32, hours: i64) -> VolumeRun {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("volume.db");
    rusqlite::Connection::open(&path).unwrap().execute_batch(&format!("PRAGMA page_size = {page}; VACUUM;")).unwrap();
    let store = Store::open(&path).unwrap();
    let empty = live_bytes(&store);
    let (ids, mut states) = register(&store, n);
    let base = reading::read(&parse::parse(FIXTURE).unwrap());
    let start = 1_800_000_000_000;
    let mut pods: Vec<reading::Reading> = vec![base; n];
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let plan = zai_dash::store::downsample::Plan {
        point_ms: 5_000,
        rollup_ms: 60_000,
        settle_ms: 11_000,
        retention_raw_ms: DAY_MS,
        retention_rollup_ms: 7 * DAY_MS,
        retention_coarse_ms: 30 * DAY_MS,
    };
    let ticks = hours * 720;
    let mut conn = store.conn().unwrap();
    // `BENCH_WAL_CHECKPOINT=20000` checkpoints the run's WAL at another interval than the
    // service's (an experiment's knob: the interval decides how often a page changed again and
    // again, such as the raw rows' pages the seal frees and the next window reuses, is copied).
    if let Ok(pages) = std::env::var("BENCH_WAL_CHECKPOINT") {
        conn.execute_batch(&format!("PRAGMA wal_autocheckpoint = {pages}")).unwrap();
    }
    let mut tally = std::env::var_os("BENCH_FRAMES").map(|_| WalTally::new(&path, page));
    // `BENCH_FRAMES_FROM_HOUR=24` attributes only the frames of the run's last hours: looking
    // every page up after each commit is too slow for a whole 26 h run, and retention's deletes
    // start after the first day.
    let from_hour: i64 = std::env::var("BENCH_FRAMES_FROM_HOUR").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let before = write_bytes();
    let (mut by_writer, mut by_downsampler) = (0u64, 0u64);
    for t in 0..ticks {
        let at = start + t * 5_000 + 1_000;
        let mut rows = Vec::with_capacity(n);
        let mut updates = Vec::with_capacity(n);
        for (k, ((id, variant), st)) in ids.iter().zip(states.iter_mut()).enumerate() {
            for _ in 0..poisson(2.0, &mut rng) as usize {
                serve_request(&mut pods[k], &mut rng);
            }
            let (row, update) = st.scrape(&pods[k], at, *id, variant);
            rows.push(row);
            updates.push(update);
        }
        let batch = WriteBatch {
            bucket_end_ms: bucket_end(at, 5_000),
            rows,
            states: updates,
            points: vec![],
            events: vec![],
            late: false,
        };
        let mark = write_bytes();
        write::write_batch(&mut conn, &batch, 60_000).unwrap();
        let ticked = write_bytes();
        by_writer += ticked - mark;
        let attribute = t >= from_hour * 720;
        if let Some(t) = tally.as_mut() {
            t.count("writer", &conn, attribute);
        }
        let ticked = write_bytes();
        if t % 12 == 11 {
            zai_dash::store::downsample::run_once(&mut conn, at, plan).unwrap();
            by_downsampler += write_bytes() - ticked;
            if let Some(t) = tally.as_mut() {
                t.count("downsampler", &conn, attribute);
            }
        }
    }
    let written = write_bytes() - before;
    if let Some(t) = &tally {
        t.print(24.0 / (hours - from_hour.clamp(0, hours - 1)) as f64 / n as f64);
    }
    drop(conn);
    VolumeRun {
        written_per_day: written as f64 / n as f64 * 24.0 / hours as f64,
        shares: (by_writer as f64 / written.max(1) as f64, by_downsampler as f64 / written.max(1) as f64),
        stored: live_bytes(&store) - empty,
        tables: table_bytes(&store),
    }
}

/// Pages written to the WAL, by who wrote them (the writer's transactions, the downsampler's
/// runs) and by what they belong to: read from the WAL's frame headers after each commit and
/// looked up in `dbstat` (the b-tree and page kind owning each page at that moment; a page in
/// neither is a pointer-map page, computed, or on the free list). `BENCH_FRAMES=1` prints it
/// with the volume run; every commit then scans the database's pages, so the run is slower.
/// It also counts the pages each checkpoint copied into the file: the distinct pages of a WAL
/// generation (a restarted WAL, new salts, follows a complete checkpoint), by the owner of
/// each page's last frame.
struct WalTally {
    wal: std::path::PathBuf,
    page: u64,
    salt: [u8; 8],
    next: u64,
    frames: std::collections::BTreeMap<(&'static str, String), u64>,
    /// The pages of the current WAL generation, by the owner of their last frame.
    generation: std::collections::HashMap<u32, String>,
    /// Pages copied by the checkpoints so far, by owner.
    copied: std::collections::BTreeMap<String, u64>,
}

impl WalTally {
    fn new(db: &std::path::Path, page: u32) -> Self {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Self {
            wal: wal.into(),
            page: u64::from(page),
            salt: [0; 8],
            next: 32,
            frames: Default::default(),
            generation: Default::default(),
            copied: Default::default(),
        }
    }

    /// Counts the frames appended since the last call (a restarted WAL has new salts); when not
    /// `attribute`, only follows the WAL (the checkpoint copies of the generation under way
    /// when attributing starts are then counted from that moment only).
    fn count(&mut self, who: &'static str, conn: &rusqlite::Connection, attribute: bool) {
        use std::os::unix::fs::FileExt;
        let Ok(file) = std::fs::File::open(&self.wal) else { return };
        let mut header = [0u8; 32];
        if file.read_exact_at(&mut header, 0).is_err() {
            return;
        }
        if header[16..24] != self.salt {
            for (_, owner) in self.generation.drain() {
                *self.copied.entry(owner).or_default() += 1;
            }
            self.salt.copy_from_slice(&header[16..24]);
            self.next = 32;
        }
        let mut pages = Vec::new();
        let mut frame = [0u8; 24];
        while file.read_exact_at(&mut frame, self.next).is_ok() && frame[8..16] == self.salt {
            pages.push(u32::from_be_bytes(frame[0..4].try_into().unwrap()));
            self.next += 24 + self.page;
        }
        if pages.is_empty() || !attribute {
            return;
        }
        let mut owner: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
        let mut stmt = conn.prepare("SELECT pageno, name, pagetype FROM dbstat").unwrap();
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))).unwrap();
        for r in rows {
            let (p, name, kind) = r.unwrap();
            owner.insert(p, format!("{name} ({kind})"));
        }
        let per_map = self.page as u32 / 5 + 1;
        for p in pages {
            let what = match owner.remove(&p) {
                Some(o) => {
                    owner.insert(p, o.clone());
                    o
                }
                None if p >= 2 && (p - 2) % per_map == 0 => "pointer map".to_owned(),
                None => "free list".to_owned(),
            };
            *self.frames.entry((who, what.clone())).or_default() += 1;
            self.generation.insert(p, what);
        }
    }

    fn print(&self, per_day: f64) {
        println!("\nWAL frames per target-day by writer and page owner:\n");
        println!("| who | page owner (b-tree, page kind) | frames per target-day |");
        println!("|---|---|---:|");
        let mut rows: Vec<_> = self.frames.iter().collect();
        rows.sort_by(|a, b| a.0.0.cmp(b.0.0).then(b.1.cmp(a.1)));
        for ((who, what), n) in rows {
            println!("| {who} | {what} | {:.0} |", *n as f64 * per_day);
        }
        for who in ["writer", "downsampler"] {
            let sum: u64 = self.frames.iter().filter(|((w, _), _)| *w == who).map(|(_, n)| n).sum();
            println!("| {who} | all | {:.0} |", sum as f64 * per_day);
        }
        println!("\nPages copied into the file by checkpoints per target-day, by owner of the page's last frame:\n");
        println!("| page owner (b-tree, page kind) | pages per target-day |");
        println!("|---|---:|");
        let mut copied: Vec<_> = self.copied.iter().collect();
        copied.sort_by(|a, b| b.1.cmp(a.1));
        for (what, n) in &copied {
            println!("| {what} | {:.0} |", **n as f64 * per_day);
        }
        let all: u64 = self.copied.values().sum();
        println!("| all | {:.0} |", all as f64 * per_day);
        println!();
    }
}

/// One request as a zai-proxy counts it: one `requests_total` series (mostly 200), input and
/// output tokens and their cost for one model, one duration histogram observation.
fn serve_request(r: &mut reading::Reading, rng: &mut u64) {
    use zai_dash::scrape::reading::{HistSlot, Slot};
    let pick = |rng: &mut u64, n: usize| (uniform(rng) * n as f64) as usize % n.max(1);
    let requests: Vec<usize> =
        r.counters.iter().enumerate().filter(|(_, c)| matches!(c.slot, Slot::Requests(_))).map(|(i, _)| i).collect();
    let is_ok = |slot: Slot| matches!(slot, Slot::Requests(code) if r.text(code) == "200");
    let ok = requests.iter().copied().find(|&i| is_ok(r.counters[i].slot));
    if let Some(i) = if uniform(rng) < 0.9 { ok } else { requests.get(pick(rng, requests.len())).copied() } {
        r.counters[i].value += 1.0;
    }
    let tokens: Vec<usize> = r
        .counters
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.slot, Slot::Tokens(_, 0 | 1)))
        .map(|(i, _)| i)
        .collect();
    for &i in tokens.iter().skip(pick(rng, tokens.len())).take(2) {
        let Slot::Tokens(model, d) = r.counters[i].slot else { continue };
        let n = (200.0 + uniform(rng) * 2_000.0).round();
        r.counters[i].value += n;
        let cost_of = |slot: Slot| matches!(slot, Slot::Cost(m, e) if e == d && r.text(m) == r.text(model));
        if let Some(j) = r.counters.iter().position(|c| cost_of(c.slot)) {
            r.counters[j].value += n * 0.000_002;
        }
    }
    let durations: Vec<usize> =
        r.hists.iter().enumerate().filter(|(_, h)| h.slot == HistSlot::Duration).map(|(i, _)| i).collect();
    if let Some(&i) = durations.get(pick(rng, durations.len())) {
        let h = &mut r.hists[i];
        let seconds = -uniform(rng).max(1e-9).ln() * 2.0;
        for b in h.buckets.iter_mut().filter(|b| b.0 >= seconds) {
            b.1 += 1.0;
        }
        h.sum += seconds;
        h.count += 1.0;
    }
}

fn uniform(rng: &mut u64) -> f64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    (*rng >> 11) as f64 / (1u64 << 53) as f64
}

/// Knuth's Poisson sampling with an xorshift generator.
fn poisson(mean: f64, rng: &mut u64) -> f64 {
    let (limit, mut p, mut k) = ((-mean).exp(), 1.0, 0.0);
    loop {
        p *= uniform(rng);
        if p <= limit {
            return k;
        }
        k += 1.0;
    }
}

/// Where the time of a 1 h query goes, in-process: reading and decoding rows, building points,
/// serializing JSON.
fn breakdown(store: &Store, now: i64) {
    let conn = store.conn().unwrap();
    let window = |start_ms, step_ms| PointQuery { start_ms, end_ms: now, step_ms, variant: None, target_url: None };
    let q = RangeRead { q: window(now - 3_600_000, 5_000), raw: true, point_ms: 5_000, rollup_ms: 60_000 };
    let (mut build, mut json, mut written) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..50 {
        let t = Instant::now();
        let points = range::points(&conn, &q).unwrap();
        build.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        std::hint::black_box(serde_json::to_vec(&points).unwrap());
        json.push(t.elapsed().as_secs_f64() * 1000.0);
        // As the point cache writes them (`Point::write_json`), each point into a reused buffer.
        let t = Instant::now();
        let mut out = Vec::with_capacity(4096);
        for p in &points {
            out.clear();
            p.write_json(&mut out);
            std::hint::black_box(&out);
        }
        written.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "In-process, `range=1h`: rows read, decoded and aggregated in {:.1} ms (median), JSON serialized in {:.1} ms by `serde_json`, {:.1} ms by `Point::write_json`.\n",
        median(build),
        median(json),
        median(written)
    );
    let names = query::variant_names(&conn).unwrap();
    let shared: std::collections::HashMap<i64, Arc<str>> =
        names.iter().map(|(k, v)| (*k, Arc::from(v.as_str()))).collect();
    let week = RangeRead { q: window(now - 7 * DAY_MS, 600_000), raw: false, point_ms: 5_000, rollup_ms: 60_000 };
    let (mut sql, mut decode, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..10 {
        let t = Instant::now();
        let mut bytes = 0usize;
        for id in 1..=6i64 {
            for sql in [
                "SELECT data FROM metrics_10m WHERE target_id = ?1 AND ts > ?2",
                "SELECT data FROM metrics_10m_chunks WHERE target_id = ?1 AND end_ts > ?2",
            ] {
                let Ok(mut st) = conn.prepare_cached(sql) else { continue }; // a build without chunks
                let mut rows = st.query(rusqlite::params![id, now - 8 * DAY_MS]).unwrap();
                while let Some(r) = rows.next().unwrap() {
                    bytes += r.get_ref(0).unwrap().as_blob().unwrap().len();
                }
            }
        }
        std::hint::black_box(bytes);
        sql.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let mut n = 0;
        for id in 1..=6 {
            n += range::target_summaries(
                &conn,
                Table::Coarse,
                id,
                (now - 8 * DAY_MS, now),
                (&shared, (5_000, 60_000)),
                &mut |_, _, _| {},
            )
            .unwrap()
            .len();
        }
        std::hint::black_box(n);
        decode.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        std::hint::black_box(range::points(&conn, &week).unwrap());
        whole.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "In-process, 7 d of 10 min rows (6 pods, rolled from the 1 min rows): SQLite reads the blobs in {:.1} ms; reading and summarising them takes {:.1} ms; the whole query (points built) {:.1} ms.\n",
        median(sql),
        median(decode),
        median(whole)
    );
}

/// Drops the kernel's clean page cache (needs root; `/proc/sys/vm/drop_caches`), so a cold read
/// goes to the disk as the first request after a reboot would. Dirty pages are synced first.
fn drop_os_page_cache() -> bool {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

fn os_cache_note() -> &'static str {
    if drop_os_page_cache() { "as root" } else { "not possible without root: the OS cache stayed warm" }
}

async fn query_latency() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("query.db");
    let store = Store::open(&path).unwrap();
    let now = SystemClock.now_ms();
    let started = Instant::now();
    prefill(&store, now);
    let fill_s = started.elapsed().as_secs_f64();
    let targets: Vec<TargetSpec> = vec![];
    let settings = Settings {
        point_width: Duration::from_secs(5),
        rollup_width: Duration::from_secs(60),
        ..Settings::for_tests(targets, path)
    };
    let state_store = store.clone();
    let state = AppState {
        source: Arc::new(StoreSource::new(store.clone(), settings.store(), Arc::new(SystemClock))),
        settings: Arc::new(settings.web()),
        store: Some(store),
        hub: Hub::new(1, 16, 16),
        health: HealthBoard::default(),
        clock: Arc::new(SystemClock),
        ready: Arc::new(AtomicBool::new(true)),
        stopping: CancellationToken::new(),
        writer: Arc::new(WriterStats::default()),
        metrics: Arc::default(),
        charts: Arc::default(),
        sessions: None,
        alerts: zai_dash::alerts::Alerts::new(&zai_dash::alerts::AlertSettings::default()),
        remote: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // TCP_NODELAY, as the service's `net::serve` sets it: an answer written as many frames is
    // many writes, and Nagle's algorithm held some for the client's delayed ACK (40 ms).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, web::router(state)).await.unwrap() });
    breakdown(&state_store, now);
    let client = reqwest::Client::new();
    println!(
        "## /api/metrics latency (2 variants x 3 pods: 24 h of 5 s rows, 7 d of 1 min rows and their 10 min rollups; prefill took {fill_s:.0} s)\n"
    );
    println!("Cold: before the request the cache of sealed buckets is emptied, SQLite's page cache released on");
    println!(
        "every pooled connection and the OS page cache dropped ({}) (20 requests). Warm: a dashboard",
        os_cache_note()
    );
    println!("asking again (200 requests); only the buckets after the last sealed one are read. Each request is");
    println!("timed from sending it to the body's last byte, which the client reads chunk by chunk and drops (a");
    println!("browser is another process: a client here joining 2 MB into one buffer put its own allocation and");
    println!("page faults into the measured process).\n");
    println!("| query | points | body | cold p50 / p99 | warm p50 / p99 | goal |");
    println!("|---|---|---|---|---|---|");
    let (mut firsts, mut cpus) = (Vec::new(), Vec::new());
    // `BENCH_QUERY=range=7d` measures one query alone (a profile of one shape).
    let pick = std::env::var("BENCH_QUERY").unwrap_or_default();
    // `BENCH_COLD_ONLY=1` makes only the cold requests (a profile of the cold read alone).
    let cold_only = std::env::var("BENCH_COLD_ONLY").is_ok_and(|v| v == "1");
    for (query, goal) in [("range=1h", "p99 <= 10 ms"), ("range=24h", "-"), ("range=7d", "p99 <= 50 ms")] {
        if !pick.is_empty() && pick != query {
            continue;
        }
        let url = format!("{base}/api/metrics?{query}");
        let (mut cold, mut warm, mut warm_faults) = (Vec::new(), Vec::new(), Vec::new());
        let mut cold_cpu = Vec::new();
        let mut last = Vec::new();
        let mut first = None;
        for i in 0..250 {
            // Every tenth request of the first 200 starts from an empty cache of sealed buckets.
            let is_cold = i < 200 && i % 10 == 0;
            if cold_only && !is_cold {
                continue;
            }
            if is_cold {
                state_store.cache().invalidate();
                state_store.release_page_caches().unwrap();
                drop_os_page_cache();
            }
            let faults = minor_faults();
            let cpu = process_cpu_ms();
            let t = Instant::now();
            let mut resp = client.get(&url).send().await.unwrap();
            let keep = i == 249 || (cold_only && i == 190);
            while let Some(chunk) = resp.chunk().await.unwrap() {
                if keep {
                    last.extend_from_slice(&chunk);
                }
                std::hint::black_box(chunk);
            }
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let cpu = process_cpu_ms() - cpu;
            let faults = minor_faults() - faults;
            if i == 0 {
                first = Some((ms, faults));
            }
            match (is_cold, i >= 10) {
                (true, _) => {
                    cold.push(ms);
                    cold_cpu.push(cpu);
                }
                (false, true) => {
                    warm.push(ms);
                    warm_faults.push(faults as f64);
                }
                _ => {}
            }
        }
        let points = serde_json::from_slice::<serde_json::Value>(&last).unwrap().as_array().map_or(0, Vec::len);
        let kb = last.len() as f64 / 1024.0;
        let (c50, c99) = (percentile(&mut cold, 0.5), percentile(&mut cold, 0.99));
        cpus.push(format!(
            "`{query}` {:.1} / {:.1} ms",
            percentile(&mut cold_cpu, 0.5),
            percentile(&mut cold_cpu, 0.99)
        ));
        if let Some((ms, faults)) = first {
            firsts.push(format!(
                "`{query}` {ms:.1} ms, {faults} faults (warm median {:.0})",
                percentile(&mut warm_faults, 0.5)
            ));
        }
        let (w50, w99) = (percentile(&mut warm, 0.5), percentile(&mut warm, 0.99));
        println!(
            "| `{query}` (all variants) | {points} | {kb:.0} KB | {c50:.1} / {c99:.1} ms | {w50:.1} / {w99:.1} ms | {goal} |"
        );
    }
    println!(
        "\nThe process's first request of each query (cold), with the minor page faults of the whole process while it ran: {}.\n",
        firsts.join(", ")
    );
    // On a loaded machine a cold request's wall time is mostly waiting for a core; the CPU it
    // took is what a change to the code moves.
    println!(
        "CPU time of the whole process (user + system, every thread: server, SQLite, client) per cold request, p50 / p99: {}.\n",
        cpus.join(", ")
    );
}

/// User and system CPU time of the whole process so far, every thread, in ms.
fn process_cpu_ms() -> f64 {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(u.ru_utime) + ms(u.ru_stime)
}

/// Minor page faults of the process so far: pages it touched for the first time.
fn minor_faults() -> i64 {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_minflt
}
