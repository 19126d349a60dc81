//! The process's allocator policy: one glibc arena, a fixed mmap threshold, and freed pages
//! handed back to the OS: seconds after a large transient, else once a minute after work.
//!
//! Why it matters: with one arena, memory a read frees stays inside the heap for reuse and
//! only the heap's top is ever returned, so RSS follows the heap's peak. A 500-target soak
//! showed it: each `range=15m` read over sealed windows (every target's chunk of a window
//! decoded side by side) left about 3 MiB more in the heap, and RSS climbed from 29 to 42 MiB
//! of anonymous memory in four reads, while a `malloc_trim` called from a debugger at that
//! point gave 13 MiB back (BENCHMARKS.md, "Memory, seventh stop").
//!
//! Two triggers, so that a trim runs where it pays and nowhere else:
//! - A job that held a large transient (a read or a seal holding a megabyte or more of chunks
//!   at once: a hundred targets or more) reports it ([`note_transient`]); the trim follows two
//!   to three seconds later, once the request that read has answered, at most once every ten
//!   seconds.
//! - Any other store job marks the heap ([`note_work_done`]); a marked heap is trimmed once a
//!   minute, and an idle process never trims.
//!
//! Trimming within a second of *every* store job held that soak at 40 MiB too, but the accuracy
//! suite, which runs zai-dash inside its own test process beside a harness holding hundreds of
//! MB, then failed 5 of 11 runs on missing buckets (none of 9 without it): the suspicion, not
//! proven, is that each trim handed the harness's freed memory back and faulting it in again
//! disturbed a test that times reads to bucket closes. Its five targets never make a large
//! transient, so there the trim stays once a minute.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// What happened since the last trim.
#[derive(Debug, Default)]
struct Marks {
    /// Work that allocated and freed (a store job) finished.
    work: AtomicBool,
    /// A job finished that held at least [`LARGE_TRANSIENT`] at once.
    large: AtomicBool,
}

static MARKS: Marks = Marks { work: AtomicBool::new(false), large: AtomicBool::new(false) };

/// A transient this large, once freed, is worth a trim soon: a read or seal of a window over
/// about a hundred targets (their chunks are about 11 KB each), never the handful of a small
/// install or of the test suites.
pub const LARGE_TRANSIENT: usize = 1 << 20;

/// When freed pages go back to the OS.
#[derive(Debug, Clone, Copy)]
struct Policy {
    /// How often the marks are looked at.
    poll: Duration,
    /// How long after a large transient's mark the trim waits: the request that made it is
    /// still building and sending its answer when the read's mark is set, and what that frees
    /// would be left behind by an earlier trim.
    settle: Duration,
    /// The least time between two trims after large transients.
    large_gap: Duration,
    /// How often a heap marked by other work is trimmed.
    every: Duration,
}

const POLICY: Policy = Policy {
    poll: Duration::from_secs(1),
    settle: Duration::from_secs(2),
    large_gap: Duration::from_secs(10),
    every: Duration::from_secs(60),
};

/// The trim's schedule: times are since the task started.
#[derive(Debug)]
struct Schedule {
    policy: Policy,
    last_trim: Duration,
    /// When a large transient was first seen since the last trim.
    large_since: Option<Duration>,
}

impl Schedule {
    fn new(policy: Policy) -> Self {
        Self { policy, last_trim: Duration::ZERO, large_since: None }
    }

    /// Whether to trim at `now`, taking the marks; a large transient is trimmed once it has
    /// settled and the gap since the last trim has passed, other work once a minute.
    fn due(&mut self, marks: &Marks, now: Duration) -> bool {
        if marks.large.swap(false, Ordering::Relaxed) {
            self.large_since.get_or_insert(now);
        }
        let since_trim = now.saturating_sub(self.last_trim);
        let large = self.large_since.is_some_and(|t| now.saturating_sub(t) >= self.policy.settle)
            && since_trim >= self.policy.large_gap;
        let due = large || (since_trim >= self.policy.every && marks.work.load(Ordering::Relaxed));
        if due {
            marks.work.store(false, Ordering::Relaxed);
            self.large_since = None;
            self.last_trim = now;
        }
        due
    }
}

/// Records that work which may have freed heap memory just finished (cheap: one store).
pub fn note_work_done() {
    MARKS.work.store(true, Ordering::Relaxed);
}

/// Records that a job which held `bytes` at once (its largest transient) has freed them; from
/// [`LARGE_TRANSIENT`] up, the heap is trimmed a few seconds later.
pub fn note_transient(bytes: usize) {
    mark_transient(&MARKS, bytes);
}

fn mark_transient(marks: &Marks, bytes: usize) {
    if bytes >= LARGE_TRANSIENT {
        marks.large.store(true, Ordering::Relaxed);
    }
}

/// Trims the heap after large transients and once a minute after other store jobs (see the
/// module's doc), until `stop`.
///
/// A trim costs one pass over the allocator's free lists under its lock and an `madvise` per
/// free run of whole pages; pages handed back are faulted in again by the next allocation that
/// reuses them. An idle process never trims.
pub async fn return_freed_memory(stop: CancellationToken) {
    trim_by(POLICY, &MARKS, stop).await;
}

/// [`return_freed_memory`] with its policy and marks.
async fn trim_by(policy: Policy, marks: &Marks, stop: CancellationToken) {
    let mut poll = tokio::time::interval(policy.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = tokio::time::Instant::now();
    let mut schedule = Schedule::new(policy);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = poll.tick() => {
                // On the blocking pool: a trim walks the allocator's free lists and madvises
                // each free run, milliseconds on a large heap, which would stall the runtime
                // worker's other tasks (scrapes, the writer's notices, requests) meanwhile.
                if schedule.due(marks, started.elapsed()) && tokio::task::spawn_blocking(trim).await.is_err() {
                    tracing::debug!("The heap trim's blocking task failed.");
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

    const SECOND: Duration = Duration::from_secs(1);

    fn schedule() -> Schedule {
        Schedule::new(POLICY)
    }

    #[test]
    fn a_large_transient_is_trimmed_once_settled_and_past_the_gap_and_only_once() {
        let (marks, mut s) = (Marks::default(), schedule());
        note_large(&marks);
        assert!(!s.due(&marks, 20 * SECOND), "trimmed before the transient settled");
        assert!(!s.due(&marks, 21 * SECOND), "trimmed before the transient settled");
        assert!(s.due(&marks, 22 * SECOND), "not trimmed two seconds after the transient");
        note_large(&marks);
        assert!(!s.due(&marks, 25 * SECOND));
        assert!(!s.due(&marks, 27 * SECOND), "trimmed within ten seconds of the last trim");
        assert!(!s.due(&marks, 31 * SECOND), "trimmed within ten seconds of the last trim");
        assert!(s.due(&marks, 32 * SECOND), "the transient's mark did not wait out the gap");
        assert!(!s.due(&marks, 50 * SECOND), "trimmed twice for one transient");
    }

    #[test]
    fn other_work_is_trimmed_once_a_minute_and_an_idle_heap_never() {
        let (marks, mut s) = (Marks::default(), schedule());
        assert!(!s.due(&marks, 3600 * SECOND), "an idle heap was trimmed");
        marks.work.store(true, Ordering::Relaxed);
        assert!(s.due(&marks, 3601 * SECOND), "work an hour after the last trim waited");
        marks.work.store(true, Ordering::Relaxed);
        assert!(!s.due(&marks, 3631 * SECOND), "work trimmed within a minute of the last trim");
        assert!(s.due(&marks, 3661 * SECOND));
        assert!(!s.due(&marks, 3800 * SECOND), "the trim did not clear the work's mark");
    }

    #[test]
    fn only_a_transient_of_the_threshold_or_more_counts_as_large() {
        let marks = Marks::default();
        mark_transient(&marks, LARGE_TRANSIENT - 1);
        assert!(!marks.large.load(Ordering::Relaxed));
        mark_transient(&marks, LARGE_TRANSIENT);
        assert!(marks.large.load(Ordering::Relaxed));
    }

    fn note_large(marks: &Marks) {
        mark_transient(marks, LARGE_TRANSIENT);
    }

    #[tokio::test]
    async fn a_large_transient_has_its_freed_pages_returned_within_seconds() {
        let kept = fragment_heap();
        let before = anon_kib();
        let stop = CancellationToken::new();
        let policy = Policy {
            poll: Duration::from_millis(100),
            settle: Duration::ZERO,
            large_gap: Duration::ZERO,
            every: Duration::MAX,
        };
        let marks: &'static Marks = Box::leak(Box::default());
        let task = tokio::spawn(trim_by(policy, marks, stop.clone()));
        note_large(marks);
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
