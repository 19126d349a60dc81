//! The collector: one task per target scrapes on its own schedule, and one ticker closes each
//! 5 s bucket into a write batch with the points of every variant.
//!
//! Targets are independent: a dead, slow or garbage target only marks itself down, because its
//! fetch runs in its own task with its own timeout. Start offsets are spread over the interval
//! so targets do not all hit the network at once, in slots shared by several targets so that
//! one timer wakes them together (`first_scrape_at`). A scrape belongs to the bucket in which it
//! completed; the ticker waits a small slack after each bucket edge, then hands the bucket's
//! rows and points to the store's writer, which commits and then publishes the points live.

pub mod client;
pub mod discovery;
pub mod increase;
pub mod labels;
mod lex;
pub mod outbound;
pub mod parse;
pub mod persist;
pub mod reading;
pub mod target;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::{SharedClock, bucket_end};
use crate::health::{HealthBoard, Success};
use crate::point::{Bucket, PointBuilder, Summary, TargetRow};
use crate::ports::ingest::{BatchSink, Event, EventKind, KnownTotals, StateUpdate, WriteBatch};
use crate::ports::samples::SampleSink;
use crate::redact::RedactedUrl;
use increase::TargetState;
use persist::Persister;
pub use target::{DNS_SCHEME_PREFIX, TargetSpec, parse_targets};

/// How the collector runs: the scraper's own settings, composed into the whole by `config`.
#[derive(Debug, Clone)]
pub struct ScrapeSettings {
    /// Time between two scrapes of a target.
    pub interval: Duration,
    /// Per-scrape timeout, always below the interval.
    pub timeout: Duration,
    /// Width of a raw point, the bucket the ticker closes (5 s in production).
    pub point_width: Duration,
    /// Largest accepted `/metrics` body; a larger one is a failed scrape.
    pub max_body_bytes: usize,
}

impl ScrapeSettings {
    /// Width of a raw point in milliseconds.
    pub fn point_ms(&self) -> i64 {
        crate::setting::duration_ms(self.point_width)
    }
}

/// A configured target with its database id and persisted state.
#[derive(Debug, Clone)]
pub struct Target {
    /// Database id.
    pub id: i64,
    /// Configuration.
    pub spec: TargetSpec,
    /// State of the last successful scrape (loaded from the database).
    pub state: TargetState,
    /// Variant used when neither `NAME=` nor a `variant` label gives one; `None` applies the
    /// URL rule to `spec.url`. A discovered address takes its `dns+` entry's rule instead,
    /// since an IP address says nothing about the variant.
    pub fallback_variant: Option<String>,
    /// The variant of its last successful scrape, as stored (`None` if never scraped).
    pub last_variant: Option<String>,
    /// When this process last scraped it successfully, on the monotonic clock: the time
    /// between scrapes, whatever the wall clock does.
    pub last_success: Option<Instant>,
}

impl Target {
    /// The variant to show before this process scrapes the target: an explicit name, else
    /// what its last scrape resolved, else the URL rule (a guess a label may correct later).
    pub fn current_variant(&self) -> String {
        self.spec
            .variant
            .clone()
            .or_else(|| self.last_variant.clone())
            .or_else(|| self.fallback_variant.clone())
            .unwrap_or_else(|| self.spec.initial_variant())
    }
}

/// One successful scrape on its way to the ticker, or a target's state to keep when it went
/// down or stopped (no row).
#[derive(Debug)]
struct Scraped {
    row: Option<TargetRow>,
    state: StateUpdate,
    /// The target's version changed since its previous scrape.
    event: Option<Event>,
}

/// Shared, read-only context of the scrape tasks.
struct Ctx {
    settings: ScrapeSettings,
    clock: SharedClock,
    /// The shared client of `https://` targets.
    client: reqwest::Client,
    /// Body buffers, reused from scrape to scrape.
    buffers: client::Buffers,
    health: HealthBoard,
    /// Where each scrape's raw samples go when remote write is on.
    samples: Option<Arc<dyn SampleSink>>,
    /// Origin of the grid of start slots every target's schedule is aligned to
    /// ([`first_scrape_at`]).
    origin: tokio::time::Instant,
}

/// Where the collector's output goes.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Closed buckets (the store's writer).
    pub batches: Arc<dyn BatchSink>,
    /// Each scrape's `zai_proxy_*` samples as scraped (remote write), when configured: they
    /// are only collected then.
    pub samples: Option<Arc<dyn SampleSink>>,
}

/// Room in the scrape channel for targets found by DNS discovery.
const DISCOVERED_ROOM: usize = 64;

/// Starts the scrapers, one discovery supervisor per `dns+` entry, and the ticker on
/// `tracker`. `seed` holds the latest stored totals of every target ever seen, so the first
/// live points carry the right cumulative fields (vanished pods included).
#[allow(clippy::too_many_arguments)] // the wiring point: each argument is a distinct dependency
pub fn spawn(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    settings: ScrapeSettings,
    clock: SharedClock,
    targets: Vec<Target>,
    discovery: Option<discovery::Discovery>,
    health: HealthBoard,
    outputs: Outputs,
    seed: &[KnownTotals],
) {
    let room = if discovery.is_some() { DISCOVERED_ROOM } else { 0 };
    let (tx, rx) = mpsc::channel(targets.len() * 4 + 16 + room);
    let Outputs { batches: sink, samples } = outputs;
    let ctx = Arc::new(Ctx {
        settings: settings.clone(),
        clock: clock.clone(),
        client: client::build_client(),
        buffers: client::Buffers::default(),
        health,
        samples,
        origin: tokio::time::Instant::now(),
    });
    let n = targets.len().max(1) as u32;
    for (idx, target) in targets.into_iter().enumerate() {
        let offset = settings.interval * idx as u32 / n;
        let span = tracing::info_span!("scrape", target_url = %RedactedUrl::from(&target.spec.url));
        tracker.spawn(scrape_loop(ctx.clone(), idx, target, offset, tx.clone(), cancel.clone()).instrument(span));
    }
    for d in discovery.iter() {
        for entry in &d.entries {
            let supervisor = discovery::Supervisor {
                ctx: ctx.clone(),
                entry: entry.clone(),
                resolver: d.resolver.clone(),
                registry: d.registry.clone(),
                tx: tx.clone(),
                tracker: tracker.clone(),
                cancel: cancel.clone(),
            };
            let span = tracing::info_span!("discover", entry = %RedactedUrl::from(&entry.url));
            tracker.spawn(supervisor.run().instrument(span));
        }
    }
    drop(tx);
    let mut builder = PointBuilder::new();
    for k in seed {
        builder.seed(k.target_id, Arc::from(k.variant.as_str()), k.totals);
    }
    tracker.spawn(tick_loop(ctx, rx, sink, builder));
}

async fn scrape_loop(
    ctx: Arc<Ctx>,
    idx: usize,
    mut target: Target,
    offset: Duration,
    tx: mpsc::Sender<Scraped>,
    cancel: CancellationToken,
) {
    let interval = ctx.settings.interval;
    let mut next = first_scrape_at(ctx.origin, tokio::time::Instant::now() + offset, interval);
    let mut persister = Persister::resumed(&target.state, target.last_variant.clone());
    let mut fetcher = client::Fetcher::default();
    // Waited on across every pass: a `cancelled()` future made anew each pass registered with
    // and left the token's waiter list, each under the lock every target's task shares.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled => break,
            () = tokio::time::sleep_until(next) => {}
        }
        let scraped = match scrape_once(&ctx, idx, (&mut target, &mut persister), &mut fetcher).await {
            Some(scraped) => Some(scraped),
            None => settled(&ctx, &target, &mut persister), // went down: keep its final state whole
        };
        if let Some(scraped) = scraped
            && tx.send(scraped).await.is_err()
        {
            break;
        }
        next += interval;
        let now = tokio::time::Instant::now();
        while next <= now {
            next += interval; // a scrape overran: skip the missed slots instead of bursting
        }
    }
    // Stopping (shutdown, or a discovered address retired): its final state is kept whole.
    if let Some(scraped) = settled(&ctx, &target, &mut persister) {
        let _ = tx.send(scraped).await; // the ticker is gone only when everything stopped
    }
}

/// Start slots per interval at least: targets that share a slot scrape together.
const SLOTS_PER_INTERVAL: u32 = 20;
/// Widest start slot, so long intervals keep many slots (and small groups).
const SLOT_MAX: Duration = Duration::from_millis(250);

/// The first scrape's time: `wanted` moved back to the start of its slot on a grid shared by
/// every target (slots of a twentieth of the interval, at most 250 ms, from `origin`).
///
/// Why: targets spread evenly over the interval each woke the runtime on their own (at 100
/// targets every 50 ms a timer, then a socket), and parking and waking the workers was about a
/// fifth of the process (BENCHMARKS.md, "Scrape CPU, ninth stop"). Targets of one slot have the
/// same deadline, so one pass of the timer wheel starts them all and their answers arrive while
/// the worker is still awake. The load stays spread: at most a twentieth of the targets start
/// at once, and sparse targets keep their own slots. Since every later scrape is a whole number
/// of intervals after the first, targets of one slot stay together.
fn first_scrape_at(
    origin: tokio::time::Instant,
    wanted: tokio::time::Instant,
    interval: Duration,
) -> tokio::time::Instant {
    let slot = (interval / SLOTS_PER_INTERVAL).min(SLOT_MAX);
    let since = wanted.saturating_duration_since(origin);
    let Ok(slot_ns) = u64::try_from(slot.as_nanos()) else { return wanted };
    let Ok(since_ns) = u64::try_from(since.as_nanos()) else { return wanted };
    if slot_ns == 0 {
        return wanted;
    }
    origin + Duration::from_nanos(since_ns - since_ns % slot_ns)
}

/// A checkpoint of the target's state when journal entries were written since the last one.
fn settled(ctx: &Ctx, target: &Target, persister: &mut Persister) -> Option<Scraped> {
    let (ms, write, variant) = persister.settle(&target.state, ctx.clock.now_ms())?;
    let totals = target.state.totals.into();
    Some(Scraped {
        row: None,
        state: StateUpdate { target_id: target.id, scraped_ms: ms, write, totals, variant },
        event: None,
    })
}

/// Scrapes once and records health; returns the row on success.
async fn scrape_once(
    ctx: &Ctx,
    idx: usize,
    (target, persister): (&mut Target, &mut Persister),
    fetcher: &mut client::Fetcher,
) -> Option<Scraped> {
    let started = Instant::now();
    let s = &ctx.settings;
    let mut body = ctx.buffers.take();
    let fetched = fetcher.fetch(&ctx.client, &target.spec.url, (s.timeout, s.max_body_bytes), &mut body).await;
    let at_ms = ctx.clock.now_ms();
    let finished = Instant::now();
    let elapsed_ms =
        target.last_success.map(|t| i64::try_from(finished.duration_since(t).as_millis()).unwrap_or(i64::MAX));
    let result = match fetched {
        Ok(()) => {
            let at = (at_ms, elapsed_ms);
            let (result, back) = if body.len() <= INLINE_MAX_BYTES {
                (ingest_here(target, persister, &body, at, ctx.samples.as_ref()), body)
            } else {
                ingest_off_runtime(target, persister, body, at, ctx.samples.clone()).await
            };
            ctx.buffers.give(back);
            result
        }
        Err(e) => {
            ctx.buffers.give(body);
            Err(e)
        }
    };
    if result.is_ok() {
        target.last_success = Some(finished);
    }
    let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1000.0; // whole microseconds
    match result {
        Err(e) => {
            tracing::debug!(kind = e.kind(), error = %e, "Scrape failed.");
            ctx.health.record_failure((idx, target.id), at_ms, duration_ms, e.kind(), e.to_string());
            None
        }
        Ok(done) => {
            let Ingested { scraped, samples, dropped, cut, version } = done;
            let variant = scraped.state.variant.clone();
            let target_id = target.id;
            let success = Success { target_id, at_ms, duration_ms, samples, dropped, cut, variant, version };
            ctx.health.record_success(idx, success);
            Some(scraped)
        }
    }
}

/// What one body became.
struct Ingested {
    scraped: Scraped,
    samples: usize,
    dropped: usize,
    cut: usize,
    version: Option<String>,
}

/// Bodies up to this size are processed on the async worker that fetched them: a typical
/// zai-proxy body (tens of KiB) takes well under a millisecond to parse and select, less than
/// what handing it to the blocking pool and back costs in thread wake-ups (the whole-process
/// profile of issue 22 put that hop, with the parking it causes, near the parse itself).
const INLINE_MAX_BYTES: usize = 64 << 10;

/// [`ingest`] on the current thread, for a body small enough not to stall the worker.
fn ingest_here(
    target: &mut Target,
    persister: &mut Persister,
    body: &[u8],
    at: (i64, Option<i64>),
    samples: Option<&Arc<dyn SampleSink>>,
) -> Result<Ingested, client::ScrapeError> {
    let Ok(text) = std::str::from_utf8(body) else { return Err(client::ScrapeError::NotUtf8) };
    let who = (target.id, target.spec.url.clone(), target.spec.variant.clone(), target.fallback_variant.clone());
    let initial = target.spec.initial_variant();
    let out = samples.map(|sink| Outbound { sink: sink.clone(), instance: outbound::instance(&target.spec.url) });
    let state = &mut target.state;
    let run =
        std::panic::AssertUnwindSafe(|| ingest((&mut *state, &mut *persister), text, at, who, initial, out.as_ref()));
    std::panic::catch_unwind(run).unwrap_or_else(|_| {
        // As when the blocking pool's task panics: the state it was changing is dropped, so the
        // next scrape is a new baseline (no spike), and this one fails visibly.
        *state = TargetState::default();
        *persister = Persister::default();
        Err(client::ScrapeError::Body("processing the exposition failed: it panicked".into()))
    })
}

/// Parses the body, selects the series and computes increases on the blocking pool: the work
/// grows with the body (up to 16 MiB and 20,000 kept series), and must never stall the async
/// workers that run every other target's scrape and the pages.
async fn ingest_off_runtime(
    target: &mut Target,
    persister: &mut Persister,
    body: Vec<u8>,
    at: (i64, Option<i64>),
    samples: Option<Arc<dyn SampleSink>>,
) -> (Result<Ingested, client::ScrapeError>, Vec<u8>) {
    let mut state = std::mem::take(&mut target.state);
    let mut kept = std::mem::take(persister);
    let who = (target.id, target.spec.url.clone(), target.spec.variant.clone(), target.fallback_variant.clone());
    let initial = target.spec.initial_variant();
    let out = samples.map(|sink| Outbound { sink, instance: outbound::instance(&target.spec.url) });
    let joined = tokio::task::spawn_blocking(move || {
        let result = match std::str::from_utf8(&body) {
            Ok(text) => ingest((&mut state, &mut kept), text, at, who, initial, out.as_ref()),
            Err(_) => Err(client::ScrapeError::NotUtf8),
        };
        (state, kept, result, body)
    })
    .await;
    match joined {
        Ok((state, kept, result, body)) => {
            target.state = state;
            *persister = kept;
            (result, body)
        }
        // The blocking task panicked: the state it held is lost, so the next scrape is a new
        // baseline (no spike, the gap is not counted) and this one fails visibly.
        Err(e) => (Err(client::ScrapeError::Body(format!("processing the exposition failed: {e}"))), Vec::new()),
    }
}

/// Target id, URL as shown (credentials hidden: it names the target in logs and events),
/// explicit variant, fallback variant.
/// Whose scrape: id, URL (shown redacted only when a log line or an event needs it: formatting
/// it at every scrape was 1.5 % of a 100-target process), explicit and fallback variants.
type Who = (i64, url::Url, Option<String>, Option<String>);

/// Where a target's raw samples go (remote write on), and its `instance` label.
struct Outbound {
    sink: Arc<dyn SampleSink>,
    instance: String,
}

fn ingest(
    (state, persister): (&mut TargetState, &mut Persister),
    body: &str,
    (wall_ms, elapsed_ms): (i64, Option<i64>),
    (id, url, explicit, fallback): Who,
    initial: String,
    out: Option<&Outbound>,
) -> Result<Ingested, client::ScrapeError> {
    let expo = parse::parse(body)?;
    let reading = reading::read(&expo);
    let variant = explicit.or_else(|| reading.variant_label.clone()).or(fallback).unwrap_or(initial);
    let at_ms = not_before_previous(state, wall_ms, &url);
    match out {
        Some(out) => out.sink.offer(outbound::collect(expo, at_ms, &variant, &out.instance)),
        None => drop(expo),
    }
    let event = version_change(state, reading.version.as_deref(), at_ms, &variant, &url);
    let row = state.advance_with(&reading, at_ms, elapsed_ms, id, &variant);
    let (scraped_ms, write) = persister.after_scrape(state, at_ms, &variant);
    let update = StateUpdate { target_id: id, scraped_ms, write, totals: row.totals, variant };
    Ok(Ingested {
        scraped: Scraped { row: Some(row), state: update, event },
        samples: reading.samples,
        dropped: reading.dropped,
        cut: reading.cut,
        version: reading.version,
    })
}

/// A scrape's time for its row: the wall clock, but never before the target's previous scrape.
/// When the clock steps back (an NTP correction), the target's next rows go to its latest
/// bucket until the clock has caught up, instead of into buckets already written and served.
fn not_before_previous(state: &TargetState, wall_ms: i64, url: &url::Url) -> i64 {
    match state.last_scrape_ms {
        Some(last) if wall_ms < last => {
            // Every scrape of every target until the clock catches up: at most one line a minute.
            static STEPPED_BACK: crate::telemetry::LogThrottle = crate::telemetry::LogThrottle::new();
            if last - wall_ms > 1_000
                && let Some(suppressed) = STEPPED_BACK.admit()
            {
                tracing::warn!(target_url = %RedactedUrl::from(url), behind_ms = last - wall_ms, suppressed, "The wall clock stepped back; rows wait in the latest bucket until it catches up.");
            }
            last
        }
        _ => wall_ms,
    }
}

/// An event when the target reports another `zai_proxy_build_info` version than the one last
/// announced, at most one a minute ([`TargetState::version_change`]); logged once per event.
fn version_change(
    state: &mut TargetState,
    version: Option<&str>,
    at_ms: i64,
    variant: &str,
    url: &url::Url,
) -> Option<Event> {
    let (from, to) = state.version_change(version, at_ms)?;
    let shown = RedactedUrl::from(url).to_string();
    tracing::info!(target_url = %shown, from = %from, to = %to, "Target version changed.");
    Some(Event {
        ts_ms: at_ms,
        kind: EventKind::Version,
        variant: variant.to_owned(),
        target: shown,
        detail: format!("version {from} -> {to}"),
    })
}

/// Whether the ticker's one timer must be set again: a new edge, or the same edge now due
/// earlier on the runtime's clock than the timer says (by more than the millisecond that
/// separates the two clocks' readings; see [`tick_loop`]).
fn timer_needs_reset(armed: Option<(i64, tokio::time::Instant)>, wake: i64, deadline: tokio::time::Instant) -> bool {
    match armed {
        Some((edge, at)) => edge != wake || deadline + Duration::from_millis(1) < at,
        None => true,
    }
}

/// Closes buckets: after each edge (plus a small slack for scrapes that completed just before
/// it), the bucket's rows go to the writer as one batch with the variants' points.
async fn tick_loop(
    ctx: Arc<Ctx>,
    mut rx: mpsc::Receiver<Scraped>,
    queue: Arc<dyn BatchSink>,
    mut builder: PointBuilder,
) {
    let width = ctx.settings.point_ms();
    let slack = (width / 10).clamp(10, 500);
    let mut pending: BTreeMap<i64, Vec<Scraped>> = BTreeMap::new();
    let mut closed_until = i64::MIN;
    // One timer, set again only when the edge to wake at changes or the edge comes closer on
    // the runtime's clock than the timer: a new timer on every pass registered and dropped a
    // timer in the runtime's wheel for every scrape received. The edge is on the application's
    // clock, which need not run at the runtime's pace (a wall-clock step, a test's fast clock),
    // so each pass still checks how far away the edge is now; a timer armed for the edge's
    // first distance would otherwise close a bucket late by however far that clock ran ahead.
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    let mut armed: Option<(i64, tokio::time::Instant)> = None;
    loop {
        let now = ctx.clock.now_ms();
        let mut wake = bucket_end(now - slack, width) + slack;
        if wake <= now {
            wake += width;
        }
        let wait = Duration::from_millis(u64::try_from(wake - now).unwrap_or(0));
        let deadline = tokio::time::Instant::now() + wait;
        if timer_needs_reset(armed, wake, deadline) {
            armed = Some((wake, deadline));
            sleep.as_mut().reset(deadline);
        }
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(s) => {
                    let bucket = bucket_end(s.row.as_ref().map_or(s.state.scraped_ms, |r| r.ts_ms), width);
                    if bucket <= closed_until {
                        // Arrived after its bucket was closed: stored (merged), not re-published.
                        flush((bucket, width), vec![s], &mut builder, queue.as_ref(), false);
                    } else {
                        pending.entry(bucket).or_default().push(s);
                    }
                }
                None => break, // every scraper stopped: shutdown
            },
            () = &mut sleep => {
                armed = None;
                let due = ctx.clock.now_ms() - slack;
                while let Some(entry) = pending.first_entry() {
                    if *entry.key() > due {
                        break;
                    }
                    let (bucket, items) = entry.remove_entry();
                    closed_until = closed_until.max(bucket);
                    flush((bucket, width), items, &mut builder, queue.as_ref(), true);
                }
            }
        }
    }
    for (bucket, items) in std::mem::take(&mut pending) {
        flush((bucket, width), items, &mut builder, queue.as_ref(), true);
    }
    queue.flush().await;
    tracing::debug!("Ticker stopped; final buckets handed to the writer.");
}

/// Merges a bucket's scrapes per target and submits them as one batch.
fn flush(bucket: (i64, i64), items: Vec<Scraped>, builder: &mut PointBuilder, queue: &dyn BatchSink, publish: bool) {
    let (bucket, width) = bucket;
    let mut rows: BTreeMap<i64, TargetRow> = BTreeMap::new();
    let mut states = Vec::with_capacity(items.len());
    let mut events = Vec::new();
    for Scraped { row, state, event } in items {
        events.extend(event);
        states.push(state);
        let Some(mut row) = row else { continue };
        row.ts_ms = bucket;
        row.present_ms = width;
        match rows.get_mut(&row.target_id) {
            Some(existing) => existing.absorb_later(&row),
            None => {
                rows.insert(row.target_id, row);
            }
        }
    }
    let rows: Vec<TargetRow> = rows.into_values().collect();
    let points = if publish {
        let summaries: Vec<Summary> = rows.iter().map(Summary::from).collect();
        builder.build(Bucket::narrow(bucket, width), &summaries.iter().collect::<Vec<_>>())
    } else {
        Vec::new()
    };
    let late = !publish && !rows.is_empty();
    queue.submit(WriteBatch { bucket_end_ms: bucket, rows, states, points, events, late });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_start_in_shared_slots_never_later_than_their_offset_and_sparse_ones_apart() {
        let origin = tokio::time::Instant::now();
        let starts = |n: u32, interval: Duration| {
            let firsts: Vec<_> = (0..n)
                .map(|i| {
                    let wanted = origin + interval * i / n;
                    let at = first_scrape_at(origin, wanted, interval);
                    let slot = (interval / SLOTS_PER_INTERVAL).min(SLOT_MAX);
                    assert!(at <= wanted && wanted - at < slot, "target {i} of {n}: {:?} early", wanted - at);
                    at
                })
                .collect();
            firsts.iter().collect::<std::collections::BTreeSet<_>>().len()
        };
        let five = Duration::from_secs(5);
        assert_eq!(starts(100, five), 20, "100 targets in 20 slots of 250 ms");
        assert_eq!(starts(500, five), 20);
        assert_eq!(starts(3, five), 3, "sparse targets keep their own slots");
        assert_eq!(starts(100, Duration::from_secs(60)), 100, "a long interval keeps slots of 250 ms");
        assert_eq!(starts(500, Duration::from_secs(60)), 240);
        // An interval too short to slice is left as it is.
        assert_eq!(
            first_scrape_at(origin, origin + Duration::from_nanos(7), Duration::from_nanos(10)),
            origin + Duration::from_nanos(7)
        );
    }

    #[test]
    fn the_ticker_timer_moves_only_for_a_new_edge_or_an_edge_come_closer() {
        let at = tokio::time::Instant::now() + Duration::from_secs(5);
        assert!(timer_needs_reset(None, 10_000, at));
        // Same edge, read again a moment later on a clock at the runtime's pace: kept.
        assert!(!timer_needs_reset(Some((10_000, at)), 10_000, at));
        assert!(!timer_needs_reset(Some((10_000, at)), 10_000, at - Duration::from_micros(900)));
        // Same edge, but the application's clock ran ahead: the edge is due sooner.
        assert!(timer_needs_reset(Some((10_000, at)), 10_000, at - Duration::from_secs(3)));
        // The next edge.
        assert!(timer_needs_reset(Some((10_000, at)), 15_000, at));
    }
}
