//! The process's allocator policy: one glibc arena, a fixed mmap threshold, and freed pages
//! handed back to the OS once a minute after work that freed them.
//!
//! Why it matters: with one arena, memory a read frees stays inside the heap for reuse and
//! only the heap's top is ever returned, so RSS follows the heap's peak. A 500-target soak
//! showed it: each `range=15m` read over sealed windows (every target's chunk of a window
//! decoded side by side) left about 3 MiB more in the heap, and RSS climbed from 29 to 42 MiB
//! of anonymous memory in four reads, while a `malloc_trim` called from a debugger at that
//! point gave 13 MiB back (BENCHMARKS.md, "Memory, seventh stop"). Trimming within a second of
//! every store job kept that soak at 40 MiB between refreshes, against 53, but the accuracy
//! suite, which runs zai-dash in its own process beside a harness holding hundreds of MB,
//! then failed 5 of 11 runs on missing buckets (none of 9 without it). The suspicion, not
//! proven: each trim hands the harness's freed memory back too, and faulting it in again
//! disturbs a test that times reads to bucket closes. So the store marks the heap after each
//! job ([`note_work_done`]) and the trim stays at once a minute, skipped when idle, until a
//! trim that does not churn is shown harmless there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Set after work that allocated and freed (a store job); cleared by the next trim.
static WORK_DONE: AtomicBool = AtomicBool::new(false);

/// How often freed pages go back to the OS, if any store job ran since the last time.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Records that work which may have freed heap memory just finished (cheap: one store).
pub fn note_work_done() {
    WORK_DONE.store(true, Ordering::Relaxed);
}

/// Trims the heap every [`TRIM_EVERY`] in which a store job ran ([`note_work_done`]), until
/// `stop`.
///
/// A trim costs one pass over the allocator's free lists under its lock and an `madvise` per
/// free run of whole pages; pages handed back are faulted in again by the next allocation that
/// reuses them. An idle process never trims.
pub async fn return_freed_memory(stop: CancellationToken) {
    trim_marked_every(TRIM_EVERY, stop).await;
}

/// [`return_freed_memory`] with its period.
async fn trim_marked_every(period: Duration, stop: CancellationToken) {
    let mut poll = tokio::time::interval(period);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = poll.tick() => {
                if WORK_DONE.swap(false, Ordering::Relaxed) {
                    trim();
                }
            }
        }
    }
}

/// Hands every whole free page of the heap, in its middle too, back to the OS.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim only returns free pages of the allocator's heaps to the OS; it takes
    // the allocator's own locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

/// One glibc malloc arena for the whole process, and a fixed mmap threshold; call first thing
/// in `main`, before any thread exists.
///
/// By default glibc gives threads up to 8 arenas per core, and each keeps the memory a big
/// scrape once needed (a 20,000-series exposition parses into tens of MB): measured with
/// hostile targets (tests/hostile.rs), RSS climbed past 160 MiB with the default and cycled
/// between 52 and 84 MiB with one arena. Small allocations still go through glibc's
/// per-thread caches, so the lock is rarely taken.
///
/// The mmap threshold stays at 128 KiB: glibc otherwise raises it to the size of every large
/// block freed (up to 32 MiB), after which a chart's JSON answer or a long read's vectors come
/// from the heap and leave it fragmented. Fixed, they are mapped and unmapped on their own
/// (BENCHMARKS.md, issue 22, "Memory: SQLite's share and the allocator": 38.7 against 44.1 MiB
/// after 30 minutes of the soak, side by side).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_arenas() {
    // SAFETY: mallopt only sets tunables of the allocator; it is called before any other
    // thread exists, as glibc requires for M_ARENA_MAX to take effect predictably.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// 64 MiB in 8 KiB blocks, every eighth kept: 56 MiB free in holes the heap's top trim
    /// cannot reach, as a read's freed blocks sit between longer-lived ones.
    fn fragment_heap() -> Vec<Vec<u8>> {
        let blocks: Vec<Vec<u8>> = (0..8192).map(|i| vec![(i % 251) as u8 + 1; 8 << 10]).collect();
        blocks.into_iter().enumerate().filter(|(i, _)| i % 8 == 0).map(|(_, b)| b).collect()
    }

    #[tokio::test]
    async fn marked_work_has_its_freed_pages_returned_within_seconds() {
        let kept = fragment_heap();
        let before = anon_kib();
        let stop = CancellationToken::new();
        let task = tokio::spawn(trim_marked_every(Duration::from_millis(200), stop.clone()));
        note_work_done();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut now = anon_kib();
        while before.saturating_sub(now) < 32 << 10 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            now = anon_kib();
        }
        stop.cancel();
        task.await.unwrap();
        let returned = before.saturating_sub(now);
        assert!(returned >= 32 << 10, "anon {before} KiB -> {now} KiB: the freed holes were not returned");
        std::hint::black_box(&kept); // the kept blocks stay allocated until here
    }
}
