//! A raw read holds one bucket's rows at a time, not the window's: the heap a read needs beyond
//! its answer grows with the points it returns, not with the rows it reads. (Holding every
//! row's summary was most of the process's peak heap at 100 targets; BENCHMARKS.md, "Memory".)
//! A test binary of its own, so that no other test allocates while the counting allocator
//! measures the peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use zai_dash::ports::read::PointQuery;
use zai_dash::scrape::increase::TargetState;
use zai_dash::scrape::{parse::parse, reading::read};
use zai_dash::store::Store;
use zai_dash::store::query;
use zai_dash::store::range::{self, RangeRead};
use zai_dash::store::write::{self, WriteBatch};

/// The system allocator, counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(live, Ordering::SeqCst);
}

// SAFETY: every call is passed on to `System` unchanged; only counters are updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;
const WINDOW: i64 = 30 * MIN;

/// An exposition whose counters grow with `i`, with a few labelled series per family.
fn expo(i: i64) -> String {
    let mut s = String::from("# TYPE zai_proxy_requests_total counter\n");
    for (code, n) in [("200", 1000 + 7 * i), ("429", i / 2), ("503", i / 3)] {
        s += &format!("zai_proxy_requests_total{{model=\"glm-4.7\",status_code=\"{code}\"}} {n}\n");
    }
    s += "# TYPE zai_proxy_tokens_total counter\n";
    for dir in ["input", "output"] {
        s += &format!("zai_proxy_tokens_total{{direction=\"{dir}\",model=\"glm-4.7\"}} {}\n", 40 * i);
    }
    s += "# TYPE zai_proxy_request_duration_seconds histogram\n";
    for (k, le) in ["0.5", "1", "5", "+Inf"].iter().enumerate() {
        s += &format!("zai_proxy_request_duration_seconds_bucket{{le=\"{le}\"}} {}\n", (900 + 5 * i) * (k as i64 + 1));
    }
    s += &format!(
        "zai_proxy_request_duration_seconds_sum {i}\nzai_proxy_request_duration_seconds_count {}\n",
        3600 + 20 * i
    );
    s
}

/// A store with `n` production targets scraped every `every_ms` over the window.
fn store_with(n: usize, every_ms: i64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).unwrap();
    let pairs: Vec<_> = (0..n).map(|k| (format!("http://t{k}/metrics"), "production".to_owned())).collect();
    let ids: Vec<i64> =
        query::register_targets(&store.conn().unwrap(), &pairs, T0).unwrap().iter().map(|t| t.id).collect();
    let mut states = vec![TargetState::default(); n];
    let mut conn = store.conn().unwrap();
    for i in 1..=WINDOW / 5_000 {
        if (i * 5_000) % every_ms != 0 {
            continue;
        }
        let reading = read(&parse(&expo(i)).unwrap());
        let ts = T0 + i * 5_000;
        let rows = ids.iter().zip(&mut states).map(|(id, st)| st.advance(&reading, ts - 300, *id, "production"));
        let rows = rows.map(|mut r| {
            r.ts_ms = ts;
            r
        });
        let batch = WriteBatch {
            bucket_end_ms: ts,
            rows: rows.collect(),
            states: vec![],
            points: vec![],
            events: vec![],
            late: false,
        };
        write::write_batch(&mut conn, &batch, MIN).unwrap();
    }
    drop(conn);
    (dir, store)
}

/// The tests measure one at a time: the allocator's counts are the whole process's.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Heap a read of the window needs beyond what was live before it, at its peak, and the points
/// it returned: a raw read at 5 s, or a rolled read at `step_ms` (with nothing rolled yet, every
/// minute is rolled from the raw rows on the fly).
fn peak_of_read(store: &Store, raw: bool, step_ms: i64) -> (usize, usize) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let conn = store.conn().unwrap();
    let q = PointQuery { start_ms: T0, end_ms: T0 + WINDOW, step_ms, variant: None, target_url: None };
    let r = RangeRead { q, raw, point_ms: 5_000, rollup_ms: MIN };
    range::points(&conn, &r).unwrap(); // warms SQLite's page cache and statement cache
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let points = range::points(&conn, &r).unwrap();
    (PEAK.load(Ordering::SeqCst) - before, points.len())
}

#[test]
fn a_raw_read_needs_memory_for_its_points_not_for_every_row_it_reads() {
    let (_a, few) = store_with(2, 5_000);
    let (_b, many) = store_with(40, 5_000);
    let (small, n_small) = peak_of_read(&few, true, 5_000);
    let (big, n_big) = peak_of_read(&many, true, 5_000);
    assert_eq!((n_small, n_big), (360, 360), "one production point per bucket either way");
    eprintln!("peak beyond the answer: {small} bytes for 2 targets, {big} for 40");
    assert!(
        big < 2 * small,
        "20 times the rows, same points: the read's peak went from {small} to {big} bytes (rows held at once?)"
    );
}

/// Rolling raw rows into minutes (the downsampler, and long reads of the minutes not rolled
/// yet) folds each row into its target's minute as it comes: the heap grows with the targets
/// and the minutes returned, not with the rows per minute. (Holding each target's minute of
/// decoded rows was 6.4 MB of the downsampler's heap at 500 targets.)
#[test]
fn rolling_needs_memory_for_its_minutes_not_for_every_row_of_them() {
    let (_a, sparse) = store_with(40, 30_000);
    let (_b, dense) = store_with(40, 5_000);
    let (small, n_small) = peak_of_read(&sparse, false, MIN);
    let (big, n_big) = peak_of_read(&dense, false, MIN);
    assert_eq!((n_small, n_big), (30, 30), "one production point per minute either way");
    eprintln!("peak beyond the answer: {small} bytes for 2 rows per minute and target, {big} for 12");
    assert!(
        big * 5 < small * 6,
        "6 times the rows per minute, same minutes: the roll's peak went from {small} to {big} bytes (rows held?)"
    );
}
