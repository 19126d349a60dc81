//! The real scrape path, driven for measurement (`BENCH_ONLY=scrape cargo bench --bench
//! pipeline`): N fake zai-proxy targets in this process ([`super::fake_targets`], 128 samples
//! each, as in the side-by-side bench) scraped by `scrape::spawn` (fetch, parse, selection,
//! increases, state journal, the ticker's batches) for a number of rounds, with the heap
//! allocations of the window counted by [`Counting`].
//!
//! For deterministic instruction counts run the bench binary under callgrind with
//! `SCRAPE_ROUNDS` twice (e.g. 5 and 25) and divide the difference of the totals by the
//! difference of the scrapes (the fake targets' own serving is in both: it does not change
//! between builds of zai-dash):
//! `BENCH_ONLY=scrape SCRAPE_ROUNDS=25 valgrind --tool=callgrind target/release/deps/pipeline-<hash>`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zai_dash::clock::SystemClock;
use zai_dash::health::{HealthBoard, TargetHealth};
use zai_dash::ports::ingest::{BatchSink, WriteBatch};
use zai_dash::scrape::{Outputs, ScrapeSettings, Target, TargetSpec};

/// Counts allocations (and bytes) while [`COUNTING`] is on; otherwise the system allocator
/// with one relaxed load added.
pub struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Counts the rows of the batches it is handed (one per successful scrape and bucket).
#[derive(Debug, Default)]
struct Rows(AtomicU64);

impl BatchSink for Rows {
    fn submit(&self, batch: WriteBatch) {
        self.0.fetch_add(batch.rows.len() as u64, Ordering::Relaxed);
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Scrapes `SCRAPE_TARGETS_N` (default 20) targets for `SCRAPE_ROUNDS` (default 20) intervals
/// of `SCRAPE_INTERVAL_MS` (default 200) after two rounds of warm-up, and prints the scrapes and
/// allocations of the measured rounds.
pub fn run() {
    let n = env("SCRAPE_TARGETS_N", 20) as usize;
    let rounds = env("SCRAPE_ROUNDS", 20);
    let interval = Duration::from_millis(env("SCRAPE_INTERVAL_MS", 200));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let fakes = super::fake_targets::FakeTargets::start(n, interval).await.unwrap();
        let health = HealthBoard::new(
            (0..n).map(|i| TargetHealth::new(i as i64 + 1, format!("t{i}"), "production".into())).collect(),
        );
        let targets: Vec<Target> = fakes
            .addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| Target {
                id: i as i64 + 1,
                spec: TargetSpec { url: format!("http://{addr}/metrics").parse().unwrap(), variant: None },
                state: Default::default(),
                fallback_variant: None,
                last_variant: None,
                last_success: None,
            })
            .collect();
        let settings =
            ScrapeSettings { interval, timeout: interval * 3 / 4, point_width: interval, max_body_bytes: 16 << 20 };
        let rows = Arc::new(Rows::default());
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let outputs = Outputs { batches: rows.clone(), samples: None };
        zai_dash::scrape::spawn(
            &tracker,
            &cancel,
            settings,
            Arc::new(SystemClock),
            targets,
            None,
            health.clone(),
            outputs,
            &[],
        );
        let scrapes = || health.snapshot().iter().map(|h| h.scrapes_ok).sum::<u64>();
        tokio::time::sleep(interval * 2).await;
        let before = scrapes();
        COUNTING.store(true, Ordering::Relaxed);
        tokio::time::sleep(interval * rounds as u32).await;
        COUNTING.store(false, Ordering::Relaxed);
        let done = scrapes() - before;
        let (allocs, bytes) = (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        let failed: u64 = health.snapshot().iter().map(|h| h.scrape_failures.values().sum::<u64>()).sum();
        println!("## Scrape path ({n} fake targets of 128 samples, every {interval:?}, {rounds} rounds)\n");
        println!("| scrapes | failed | rows | allocations per scrape | bytes allocated per scrape |");
        println!("|---:|---:|---:|---:|---:|");
        let per = |x: u64| x as f64 / done.max(1) as f64;
        println!(
            "| {done} | {failed} | {} | {:.0} | {:.0} |\n",
            rows.0.load(Ordering::Relaxed),
            per(allocs),
            per(bytes)
        );
    });
}
