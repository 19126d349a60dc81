//! A canary judgement that keeps its settled evidence (`ports::judge_cache`) answers exactly
//! what judging the whole rollout afresh answers, minute after minute as rows are written and
//! rolled, after a late row lands in a rolled minute, and after a restart of the cache; and it
//! reads only the strata after what it kept.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use zai_dash::clock::{ManualClock, bucket_end};
use zai_dash::point::Point;
use zai_dash::ports::BoxFuture;
use zai_dash::ports::judge_cache::JudgeCache;
use zai_dash::ports::read::{
    ChartData, DataSource, PointQuery, RolloutStart, SettledStrata, SourceError, StrataQuery, Stratum, WindowQuery,
    WindowSums,
};
use zai_dash::ports::rollout::{self, Chosen, Interval};
use zai_dash::scrape::increase::TargetState;
use zai_dash::scrape::{parse::parse, reading::read};
use zai_dash::store::Store;
use zai_dash::store::downsample::{self, Plan};
use zai_dash::store::query::{self, Table};
use zai_dash::store::source::StoreSource;
use zai_dash::store::write::{self, WriteBatch};

const MIN: i64 = 60_000;
const T0: i64 = 1_800_000_000_000; // a whole minute

/// A pod's exposition after `i` ticks: `fast_share` of its requests under 0.5 s, 1 in 40 a 503.
fn expo(i: i64, fast_share: f64) -> String {
    let total = 500 + 9 * i;
    let err = total / 40;
    let fast = (total as f64 * fast_share).round() as i64;
    format!(
        "# TYPE zai_proxy_requests_total counter\n\
         zai_proxy_requests_total{{status_code=\"200\"}} {}\n\
         zai_proxy_requests_total{{status_code=\"503\"}} {err}\n\
         # TYPE zai_proxy_request_duration_seconds histogram\n\
         zai_proxy_request_duration_seconds_bucket{{le=\"0.5\"}} {fast}\n\
         zai_proxy_request_duration_seconds_bucket{{le=\"5\"}} {total}\n\
         zai_proxy_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n\
         zai_proxy_request_duration_seconds_sum {}\n\
         zai_proxy_request_duration_seconds_count {total}\n",
        total - err,
        total / 2,
    )
}

struct Pods {
    _dir: tempfile::TempDir,
    store: Store,
    ids: Vec<i64>,
    states: Vec<TargetState>,
}

/// Production, the canary judged against it, and a baseline without traffic until
/// [`QUIET_UNTIL`] (nothing to take a latency reference from before).
const VARIANTS: [&str; 3] = ["production", "canary", "quiet"];
/// Tick at which the quiet baseline starts serving: 74.5 minutes in.
const QUIET_UNTIL: i64 = 74 * 12 + 6;

impl Pods {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("j.db")).unwrap();
        let pairs: Vec<(String, String)> =
            VARIANTS.iter().enumerate().map(|(k, v)| (format!("http://pod{k}/metrics"), (*v).to_owned())).collect();
        let ids = query::register_targets(&store.conn().unwrap(), &pairs, T0).unwrap().iter().map(|t| t.id).collect();
        Self { _dir: dir, store, ids, states: vec![TargetState::default(); VARIANTS.len()] }
    }

    /// Both pods scraped every 5 s over `(from, to]`, one batch per bucket; the canary slightly
    /// slower than production.
    fn write_range(&mut self, from: i64, to: i64) {
        let mut t = from + 5_000;
        while t <= to {
            let i = (t - T0) / 5_000;
            let mut rows = Vec::new();
            for (k, variant) in VARIANTS.iter().enumerate() {
                let (served, fast) = match k {
                    0 => (i, 0.95),
                    1 => (i, 0.93),
                    _ => ((i - QUIET_UNTIL).max(0), 0.95),
                };
                let row =
                    self.states[k].advance(&read(&parse(&expo(served, fast)).unwrap()), t - 300, self.ids[k], variant);
                rows.push(row);
            }
            let batch =
                WriteBatch { bucket_end_ms: t, rows, states: vec![], points: vec![], events: vec![], late: false };
            self.write(&batch);
            t += 5_000;
        }
    }

    /// Writes as the writer task does: a batch that changed served data (a late one, or a merge)
    /// invalidates the caches; the bucket is then noted committed.
    fn write(&self, batch: &WriteBatch) {
        if write::write_batch(&mut self.store.conn().unwrap(), batch, MIN).unwrap() || batch.late {
            self.store.cache().invalidate();
        }
        self.store.note_committed(batch.bucket_end_ms);
    }

    /// A copy of production's row of the bucket ending at `now`, with 400 more 503s, written
    /// late into the bucket ending at `ts_ms`; the caches are invalidated as the writer does
    /// after the commit, or (`invalidate` false) not yet.
    fn write_late(&self, now: i64, ts_ms: i64, invalidate: bool) {
        let c = self.store.conn().unwrap();
        let names = query::variant_names(&c).unwrap();
        let mut late = query::target_rows(&c, Table::Raw, self.ids[0], now - 5_000, now, &names).unwrap().remove(0);
        late.ts_ms = ts_ms;
        late.counts.requests.insert("503".into(), 400.0);
        late.elapsed_ms = 0;
        let batch = WriteBatch {
            bucket_end_ms: bucket_end(ts_ms, 5_000),
            rows: vec![late],
            states: vec![],
            points: vec![],
            events: vec![],
            late: true,
        };
        if invalidate {
            self.write(&batch);
        } else {
            assert!(write::write_batch(&mut self.store.conn().unwrap(), &batch, MIN).unwrap());
        }
    }

    /// The store read as the server reads it (5 s points, 1 min rollups), on a clock of its own.
    fn source(&self) -> (Arc<ManualClock>, StoreSource) {
        let clock = Arc::new(ManualClock::new(T0));
        let mut settings = zai_dash::config::Settings::for_tests(vec![], "unused.db".into()).store();
        settings.point_width = std::time::Duration::from_secs(5);
        settings.rollup_width = std::time::Duration::from_secs(MIN as u64 / 1000);
        (clock.clone(), StoreSource::new(self.store.clone(), settings, clock))
    }

    fn downsample(&self, now: i64) {
        let plan = Plan {
            point_ms: 5_000,
            rollup_ms: MIN,
            settle_ms: 11_000,
            retention_raw_ms: 24 * 3_600_000,
            retention_rollup_ms: 7 * 24 * 3_600_000,
            retention_coarse_ms: 30 * 24 * 3_600_000,
        };
        downsample::run_once(&mut self.store.conn().unwrap(), now, plan).unwrap();
    }
}

/// A source that counts the strata it hands out, and may hide its judge cache (so the judge
/// reads every stratum afresh).
#[derive(Debug)]
struct Watched<'a> {
    inner: &'a StoreSource,
    keeps: bool,
    strata_read: AtomicUsize,
}

impl<'a> Watched<'a> {
    fn new(inner: &'a StoreSource, keeps: bool) -> Self {
        Self { inner, keeps, strata_read: AtomicUsize::new(0) }
    }

    fn take_read(&self) -> usize {
        self.strata_read.swap(0, Ordering::SeqCst)
    }
}

impl DataSource for Watched<'_> {
    fn variants(&self) -> BoxFuture<'_, Result<BTreeSet<String>, SourceError>> {
        self.inner.variants()
    }
    fn grid_ms(&self, window: (i64, i64), min_step_ms: i64, now_ms: i64) -> i64 {
        self.inner.grid_ms(window, min_step_ms, now_ms)
    }
    fn points(&self, q: PointQuery) -> BoxFuture<'_, Result<Vec<Point>, SourceError>> {
        self.inner.points(q)
    }
    fn window(&self, q: WindowQuery) -> BoxFuture<'_, Result<BTreeMap<String, WindowSums>, SourceError>> {
        self.inner.window(q)
    }
    fn chart(&self, q: PointQuery) -> BoxFuture<'_, Result<ChartData, SourceError>> {
        self.inner.chart(q)
    }
    fn strata(&self, q: StrataQuery) -> BoxFuture<'_, Result<Option<Vec<Stratum>>, SourceError>> {
        Box::pin(async move {
            let strata = self.inner.strata(q).await?;
            self.strata_read.fetch_add(strata.as_ref().map_or(0, Vec::len), Ordering::SeqCst);
            Ok(strata)
        })
    }
    fn strata_generation(&self) -> Option<u64> {
        self.keeps.then(|| self.inner.strata_generation()).flatten()
    }
    fn settled_strata(
        &self,
        q: StrataQuery,
        after_ms: i64,
    ) -> BoxFuture<'_, Result<Option<SettledStrata>, SourceError>> {
        Box::pin(async move {
            let read = self.inner.settled_strata(q, after_ms).await?;
            self.strata_read.fetch_add(read.as_ref().map_or(0, |r| r.strata.len()), Ordering::SeqCst);
            Ok(read)
        })
    }
    fn judge_cache(&self) -> Option<&JudgeCache> {
        if self.keeps { self.inner.judge_cache() } else { None }
    }
    fn rollout_start(&self, variant: &str, end_ms: i64) -> BoxFuture<'_, Result<Option<RolloutStart>, SourceError>> {
        self.inner.rollout_start(variant, end_ms)
    }
    fn series(&self, end_ms: i64, range_ms: i64, step_ms: i64) -> BoxFuture<'_, Result<Vec<Point>, SourceError>> {
        self.inner.series(end_ms, range_ms, step_ms)
    }
}

#[tokio::test]
async fn kept_evidence_judges_exactly_as_afresh_reads_only_new_strata_and_survives_late_rows() {
    let mut pods = Pods::new();
    let (clock, source) = pods.source();
    let (kept, afresh) = (Watched::new(&source, true), Watched::new(&source, false));
    let cfg = zai_dash::canary::CanaryConfig::default();
    let mut judged_kept = 0;

    for minute in 1..=150 {
        let now = T0 + minute * MIN;
        pods.write_range(now - MIN, now);
        clock.advance_ms(MIN);
        // A late scrape of production lands in minute 80, long rolled: served data changes.
        // At minute 100 it is rolled again before the next judgement (only the generation
        // tells); at minute 110 the judgement comes between the commit and the writer's
        // invalidation (only the lowered watermark tells).
        if minute == 100 {
            pods.write_late(now, T0 + 80 * MIN - 20_000, true);
        }
        pods.downsample(now); // the last minute is not settled yet: its ticks are read raw
        if minute == 110 {
            pods.write_late(now, T0 + 80 * MIN - 15_000, false);
        }
        if minute == 120 {
            // The keeper forgets (as retention would): the next judgement starts over.
            pods.store.judge_cache().forget_before(i64::MAX);
        }
        if minute == 30 {
            // Intervals of an hour and less are read from raw ticks, kept too (the first hour
            // tick by tick: `a_rollouts_first_hour_is_kept_tick_by_tick`).
            for since in [T0, T0 + 10 * MIN] {
                let interval = Interval { since_ms: since, until_ms: now, chosen: Chosen::Since, started: None };
                rollout::judge(&kept, ("production", "canary"), interval, &cfg).await.unwrap();
            }
            assert_eq!(pods.store.judge_cache().len(), 2);
            kept.take_read();
        }
        if minute == 90 {
            // A fixed-length look back starts later at every call: not kept.
            let interval = Interval { since_ms: now - 70 * MIN, until_ms: now, chosen: Chosen::Window, started: None };
            rollout::judge(&kept, ("production", "canary"), interval, &cfg).await.unwrap();
            assert_eq!(pods.store.judge_cache().len(), 3);
            kept.take_read();
        }
        if minute < 75 {
            continue;
        }
        // Since minute 10 (the baseline's minutes before are the latency reference), since the
        // first scrape (nothing before: the first strata are the reference), and against the
        // quiet baseline (its reference comes from its first strata with traffic, at first
        // from ticks not rolled yet).
        let pairs = [("production", T0 + 10 * MIN), ("production", T0), ("quiet", T0)];
        for (baseline, since) in pairs {
            let interval = Interval { since_ms: since, until_ms: now, chosen: Chosen::Since, started: None };
            let a = rollout::judge(&kept, (baseline, "canary"), interval.clone(), &cfg).await.unwrap();
            let b = rollout::judge(&afresh, (baseline, "canary"), interval, &cfg).await.unwrap();
            assert_eq!(a.judgement, b.judgement, "minute {minute}, since {since}");
            assert_eq!(a.strata, b.strata, "minute {minute}, since {since}");
            let (read_kept, read_afresh) = (kept.take_read(), afresh.take_read());
            assert!(read_afresh > 60, "minute {minute}: the whole rollout is read afresh ({read_afresh})");
            let settling = baseline == "quiet" && minute < 79;
            if !settling && ![75, 100, 110, 111, 120].contains(&minute) {
                // Only the ticks after the watermark and the newly rolled minute.
                assert!(read_kept < 30, "minute {minute}: {read_kept} strata read with evidence kept");
                judged_kept += 1;
            }
        }
        if minute == 110 {
            pods.store.cache().invalidate(); // the writer's invalidation, after the commit
        }
    }
    assert!(judged_kept > 180);
    assert_eq!(pods.store.judge_cache().len(), 3);
}

/// A rollout's first hour is read from raw ticks: they are kept as they settle (a few seconds
/// after they close), so a judgement every 15 s reads only the newest ticks; a late tick moves
/// the generation; once the interval is longer than an hour it is read in minutes, and the
/// evidence kept over ticks is dropped, not mixed with minutes.
#[tokio::test]
async fn a_rollouts_first_hour_is_kept_tick_by_tick() {
    let mut pods = Pods::new();
    let (clock, source) = pods.source();
    let (kept, afresh) = (Watched::new(&source, true), Watched::new(&source, false));
    let cfg = zai_dash::canary::CanaryConfig::default();
    let (mut judged_kept, mut afresh_read) = (0, 0);
    for tick in 1..=(80 * 12) {
        let now = T0 + tick * 5_000;
        pods.write_range(now - 5_000, now);
        clock.advance_ms(5_000);
        if tick % 12 == 0 {
            pods.downsample(now);
        }
        // Minute 20: a late scrape of production lands in a tick of minute 10, long settled.
        let late = tick == 20 * 12 + 1;
        if late {
            pods.write_late(now, T0 + 10 * MIN - 5_000, true);
        }
        if tick % 3 != 0 && !late {
            continue;
        }
        // Against production since the start (its first requests are the reference) and since
        // minute 5 (the minutes before are); against a baseline without traffic until minute
        // 74.5 (judged without a reference until then), and one that does not exist.
        let pairs = [("production", T0), ("production", T0 + 5 * MIN), ("quiet", T0), ("absent", T0)];
        for (baseline, since) in pairs.into_iter().filter(|(_, since)| now > *since) {
            let interval = Interval { since_ms: since, until_ms: now, chosen: Chosen::Since, started: None };
            let a = rollout::judge(&kept, (baseline, "canary"), interval.clone(), &cfg).await.unwrap();
            let b = rollout::judge(&afresh, (baseline, "canary"), interval, &cfg).await.unwrap();
            assert_eq!(a.judgement, b.judgement, "tick {tick}, {baseline} since {since}");
            assert_eq!(a.strata, b.strata, "tick {tick}, {baseline} since {since}");
            let (read_kept, read_afresh) = (kept.take_read(), afresh.take_read());
            afresh_read += read_afresh;
            // The whole interval is read until the latency reference is fixed (since T0: the
            // baseline's first 200 requests, settled; later: the hour before, at once), after
            // the late tick, and at the first read in minutes (the interval just passed an hour).
            let reference_settling = match baseline {
                "production" if since == T0 => tick <= 30,
                "quiet" => (QUIET_UNTIL..QUIET_UNTIL + 5 * 12).contains(&tick),
                _ => now - since <= 15_000,
            };
            let whole = reference_settling || late || (now - since > 3_600_000 && now - since <= 3_600_000 + 15_000);
            if !whole {
                // Raw: the ticks since the last judgement and the few not settled yet; in
                // minutes: the ticks after the rollup watermark and the newly rolled minute.
                let limit = if now - since > 3_600_000 { 30 } else { 8 };
                assert!(read_kept <= limit, "tick {tick}, {baseline} since {since}: {read_kept} strata read, kept");
                judged_kept += 1;
            }
        }
    }
    assert!(judged_kept > 1_000, "{judged_kept}");
    assert!(afresh_read > 100_000, "the whole rollout was read afresh: {afresh_read}");
}
