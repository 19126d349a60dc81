//! Decoding and summing rows allocates per row, not per label, and adding a stored row into
//! sums that already have its labels and bucket bounds allocates nothing: the window sums and
//! the rollups add every row of a window this way (BENCHMARKS.md, "Allocations, tenth stop").
//! A test binary of its own, counting the allocations of the calling thread only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use zai_dash::point::{ClientCounts, Counts, Gauges, Histogram, Label, Totals};
use zai_dash::store::codec;

/// The system allocator, counting the calls made on each thread.
struct Counting;

thread_local! {
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

fn counted() {
    // `try_with`: the slot is gone while a thread exits, and counting does not matter then.
    let _ = CALLS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is passed on to `System` unchanged; only a thread-local counter is updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations `f` made on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = CALLS.with(Cell::get);
    f();
    CALLS.with(Cell::get) - before
}

fn hist(n: f64) -> Histogram {
    Histogram { buckets: vec![(0.1, n), (1.0, 2.0 * n), (f64::INFINITY, 3.0 * n)], sum: 0.5 * n, count: 3.0 * n }
}

/// A row as a busy proxy's: `statuses` status codes, two models, an error type, two retry
/// reasons, the three histograms, two caller buckets sharing their bounds.
fn row(statuses: usize, i: f64) -> Vec<u8> {
    let mut c = Counts::default();
    for s in 0..statuses {
        c.requests.insert(Label::from(format!("{}", 200 + s)), i + s as f64);
    }
    for model in ["glm-4.7", "glm-4.5-air"] {
        c.tokens.insert(model.into(), [10.0 * i, 2.0 * i, 0.0, 1.0]);
        c.cost.insert(model.into(), [0.001 * i, 0.25, 0.0, 0.0]);
    }
    c.upstream_errors.insert("timeout".into(), 1.0);
    c.retries.insert("retry".into(), 2.0);
    c.retries.insert("429".into(), 2.0);
    (c.duration, c.ttft, c.tpot) = (hist(i), hist(i + 1.0), hist(0.5));
    for client in ["source-07", "source-43"] {
        c.clients.insert(client.into(), ClientCounts { rejections: 1.0, wait: hist(i) });
    }
    let totals = Totals::default();
    codec::encode(&c, &totals, &Gauges::default())
}

#[test]
fn rows_decode_and_add_without_allocating_per_label() {
    // Adding rows into sums that hold their labels and bounds: nothing allocated.
    let rows: Vec<Vec<u8>> = (1..=50).map(|i| row(4, f64::from(i))).collect();
    let mut sums = Counts::default();
    codec::view(&rows[0]).unwrap().add_to(&mut sums);
    let adding = allocations(|| {
        for r in &rows[1..] {
            codec::view(r).unwrap().add_to(&mut sums);
        }
    });
    assert_eq!(adding, 0, "allocations adding 49 rows into sums that hold their labels");
    assert_eq!(sums.requests["200"], (1..=50).map(f64::from).sum::<f64>());
    assert_eq!(sums.clients["source-43"].wait.buckets[2].1, 3.0 * (1..=50).map(f64::from).sum::<f64>());

    // Decoding: a status code more costs no allocation (a short label is held inline; the
    // map's node has room for up to 11 entries).
    let (one, ten) = (row(1, 1.0), row(10, 1.0));
    let decoding = |bytes: &[u8]| allocations(|| drop(codec::decode(bytes).unwrap()));
    assert_eq!(decoding(&ten), decoding(&one), "allocations decoding 10 statuses against 1");
}
