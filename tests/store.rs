//! Storage on a real SQLite file: writes, rollups, retention, failures. Time is passed in
//! explicitly (the injected clock's job in the app), so nothing here sleeps; the lock test
//! polls the writer's failure count while another connection holds the lock.

use std::sync::Arc;

use rusqlite::params;
use zai_dash::clock::bucket_end;
use zai_dash::hub::Hub;
use zai_dash::point::TargetRow;
use zai_dash::ports::read::PointQuery;
use zai_dash::scrape::increase::TargetState;
use zai_dash::scrape::{parse::parse, reading::read};
use zai_dash::store::Store;
use zai_dash::store::cache::to_json;
use zai_dash::store::downsample::{self, Plan};
use zai_dash::store::query::{self, Table};
use zai_dash::store::range::{self, RangeRead};
use zai_dash::store::write::{self, StateUpdate, StateWrite, WriteBatch, WriterStats};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const T0: i64 = 1_800_000_000_000; // a whole minute

fn plan() -> Plan {
    Plan {
        point_ms: 5_000,
        rollup_ms: MIN,
        settle_ms: 11_000,
        retention_raw_ms: 24 * HOUR,
        retention_rollup_ms: 7 * 24 * HOUR,
        retention_coarse_ms: 30 * 24 * HOUR,
    }
}

/// An exposition whose counters grow with `i` (and a gauge that moves), as a zai-proxy's would.
fn expo(i: i64) -> String {
    let ok = 1000 + 7 * i;
    let err = i / 3;
    let fast = 900 + 5 * i;
    format!(
        "# TYPE zai_proxy_requests_total counter\n\
         zai_proxy_requests_total{{status_code=\"200\"}} {ok}\n\
         zai_proxy_requests_total{{status_code=\"503\"}} {err}\n\
         # TYPE zai_proxy_tokens_total counter\n\
         zai_proxy_tokens_total{{direction=\"output\",model=\"glm-4.7\"}} {}\n\
         # TYPE zai_proxy_concurrent_requests gauge\n\
         zai_proxy_concurrent_requests {}\n\
         # TYPE zai_proxy_request_duration_seconds histogram\n\
         zai_proxy_request_duration_seconds_bucket{{le=\"0.5\"}} {fast}\n\
         zai_proxy_request_duration_seconds_bucket{{le=\"5\"}} {}\n\
         zai_proxy_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
         zai_proxy_request_duration_seconds_sum 10\n\
         zai_proxy_request_duration_seconds_count {}\n",
        ok * 40,
        i % 5,
        ok + err,
        ok + err,
        ok + err
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    ids: Vec<i64>,
    states: Vec<TargetState>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let pairs = vec![
            ("http://a/metrics".to_owned(), "production".to_owned()),
            ("http://b/metrics".to_owned(), "canary".to_owned()),
        ];
        let ids = query::register_targets(&store.conn().unwrap(), &pairs, T0).unwrap().iter().map(|t| t.id).collect();
        Self { _dir: dir, store, ids, states: vec![TargetState::default(), TargetState::default()] }
    }

    /// Scrapes both targets every 5 s for `(from, to]` and writes one batch per bucket.
    fn write_range(&mut self, from: i64, to: i64) {
        let mut t = from + 5_000;
        while t <= to {
            let i = (t - T0) / 5_000;
            let mut rows = Vec::new();
            let mut states = Vec::new();
            for (k, variant) in ["production", "canary"].iter().enumerate() {
                let mut row = self.states[k].advance(
                    &read(&parse(&expo(i * (k as i64 + 1))).unwrap()),
                    t - 300,
                    self.ids[k],
                    variant,
                );
                row.ts_ms = bucket_end(t - 300, 5_000);
                states.push(StateUpdate {
                    target_id: self.ids[k],
                    scraped_ms: t - 300,
                    write: StateWrite::Checkpoint(serde_json::to_string(&self.states[k]).unwrap().into()),
                    totals: row.totals,
                    variant: (*variant).into(),
                });
                rows.push(row);
            }
            let batch = WriteBatch { bucket_end_ms: t, rows, states, points: vec![], events: vec![], late: false };
            write::write_batch(&mut self.store.conn().unwrap(), &batch, MIN).unwrap();
            t += 5_000;
        }
    }

    fn rows(&self, table: Table, k: usize) -> Vec<TargetRow> {
        let c = self.store.conn().unwrap();
        let names = query::variant_names(&c).unwrap();
        query::target_rows(&c, table, self.ids[k], i64::MIN, i64::MAX, &names).unwrap()
    }

    fn blobs(&self, table: &str) -> Vec<(i64, i64, Vec<u8>)> {
        let c = self.store.conn().unwrap();
        let mut s = c.prepare(&format!("SELECT target_id, ts, data FROM {table} ORDER BY target_id, ts")).unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
    }

    fn downsample(&self, now: i64) -> downsample::Report {
        downsample::run_once(&mut self.store.conn().unwrap(), now, plan()).unwrap()
    }
}

#[test]
fn one_minute_rows_equal_the_sum_of_their_five_second_rows() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + 5 * MIN);
    let report = fx.downsample(T0 + 5 * MIN + 20_000);
    assert_eq!(report.watermark_ms, Some(T0 + 5 * MIN));
    for k in 0..2 {
        let raw = fx.rows(Table::Raw, k);
        let rolled = fx.rows(Table::Rollup, k);
        assert_eq!(rolled.len(), 5);
        for m in &rolled {
            let members: Vec<&TargetRow> =
                raw.iter().filter(|r| r.ts_ms > m.ts_ms - MIN && r.ts_ms <= m.ts_ms).collect();
            assert_eq!(members.len(), 12);
            let sum =
                |code: &str| members.iter().map(|r| r.counts.requests.get(code).copied().unwrap_or(0.0)).sum::<f64>();
            assert_eq!(m.counts.requests.get("200").copied().unwrap_or(0.0), sum("200"));
            assert_eq!(m.counts.requests.get("503").copied().unwrap_or(0.0), sum("503"));
            let buckets: f64 = members.iter().map(|r| r.counts.duration.buckets.first().map_or(0.0, |b| b.1)).sum();
            assert_eq!(m.counts.duration.buckets.first().map_or(0.0, |b| b.1), buckets);
            assert_eq!(m.elapsed_ms, members.iter().map(|r| r.elapsed_ms).sum::<i64>());
            assert_eq!(m.totals, members.last().unwrap().totals, "totals are the last value, never an average");
            let g = m.gauges.concurrent.unwrap();
            let values: Vec<f64> = members.iter().map(|r| r.gauges.concurrent.unwrap().last).collect();
            assert!((g.avg - values.iter().sum::<f64>() / 12.0).abs() < 1e-9);
            assert_eq!(g.min, values.iter().cloned().fold(f64::INFINITY, f64::min));
            assert_eq!(g.max, values.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
            assert_eq!(g.last, *values.last().unwrap());
        }
    }
}

#[test]
fn downsampling_is_idempotent_and_resumes_after_reopening() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + 3 * MIN);
    fx.downsample(T0 + 3 * MIN + 20_000);
    let first = fx.blobs("metrics_1m");
    fx.downsample(T0 + 3 * MIN + 20_000);
    assert_eq!(fx.blobs("metrics_1m"), first, "a second run over the same minutes changes nothing");
    // Rolling the same minutes again from scratch gives identical rows.
    query::set_watermark(&fx.store.conn().unwrap(), T0).unwrap();
    fx.downsample(T0 + 3 * MIN + 20_000);
    assert_eq!(fx.blobs("metrics_1m"), first);
    // A new process on the same file resumes at the watermark.
    let path = fx.store.path().to_path_buf();
    fx.store = Store::open(&path).unwrap();
    fx.write_range(T0 + 3 * MIN, T0 + 5 * MIN);
    let r = fx.downsample(T0 + 5 * MIN + 20_000);
    assert_eq!(r.rolled_rows, 4, "only the two new minutes, for two targets");
    assert_eq!(fx.blobs("metrics_1m")[..3], first[..3]);
}

#[test]
fn an_incomplete_minute_waits_and_a_late_row_is_rolled_again() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + 2 * MIN);
    let r = fx.downsample(T0 + 2 * MIN + 5_000); // the second minute has not settled yet
    assert_eq!(r.watermark_ms, Some(T0 + MIN));
    let r = fx.downsample(T0 + 2 * MIN + 20_000);
    assert_eq!(r.watermark_ms, Some(T0 + 2 * MIN));
    // A late row (a retried batch) for the first minute lowers the watermark...
    let mut late = fx.rows(Table::Raw, 0)[3].clone();
    late.counts.requests.insert("200".into(), 1000.0);
    late.elapsed_ms = 0;
    let batch = WriteBatch {
        bucket_end_ms: late.ts_ms,
        rows: vec![late],
        states: vec![],
        points: vec![],
        events: vec![],
        late: false,
    };
    write::write_batch(&mut fx.store.conn().unwrap(), &batch, MIN).unwrap();
    assert_eq!(query::watermark(&fx.store.conn().unwrap()).unwrap(), Some(T0));
    // ...and the minute is rolled again with the merged row.
    fx.downsample(T0 + 2 * MIN + 20_000);
    let rolled = fx.rows(Table::Rollup, 0);
    let raw_sum: f64 = fx
        .rows(Table::Raw, 0)
        .iter()
        .filter(|r| r.ts_ms <= T0 + MIN)
        .map(|r| r.counts.requests.get("200").copied().unwrap_or(0.0))
        .sum();
    assert_eq!(rolled[0].counts.requests["200"], raw_sum);
    assert!(raw_sum > 1000.0);
}

#[test]
fn retention_trims_each_table_by_its_own_setting() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + 30 * MIN);
    let short = Plan { retention_raw_ms: 4 * MIN, retention_rollup_ms: 8 * MIN, ..plan() };
    let now = T0 + 30 * MIN + 20_000;
    let r = downsample::run_once(&mut fx.store.conn().unwrap(), now, short).unwrap();
    assert!(r.deleted_raw > 0 && r.deleted_rollup > 0);
    assert!(r.sealed_rows > 0, "complete windows were sealed into chunks");
    let raw = fx.rows(Table::Raw, 0);
    let rolled = fx.rows(Table::Rollup, 0);
    // Sealed raw rows go a whole 10-minute chunk at a time: nothing older than the retention
    // plus one window stays, and everything inside the retention does (rows are written every
    // 5 s; the cutoff, now - 4 min, falls 5 s before one).
    assert!(raw.iter().all(|r| r.ts_ms > now - 4 * MIN - 10 * MIN));
    assert!(raw.iter().any(|r| r.ts_ms <= now - 4 * MIN), "the chunk holding the cutoff stays whole");
    let inside: Vec<i64> = raw.iter().map(|r| r.ts_ms).filter(|&ts| ts > now - 4 * MIN).collect();
    assert_eq!(inside.len(), 44, "every raw row inside retention stays (3 min 40 s of them)");
    assert_eq!(inside.first(), Some(&(now - 4 * MIN + 5_000)));
    assert!(rolled.iter().all(|r| r.ts_ms > now - 8 * MIN));
    assert!(rolled.iter().any(|r| r.ts_ms <= now - 4 * MIN), "1 m rows outlive the 5 s rows");
    // Raw rows not rolled up yet are never deleted, whatever the retention says.
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + 3 * MIN);
    query::set_watermark(&fx.store.conn().unwrap(), T0).unwrap();
    let tiny = Plan { retention_raw_ms: 1, settle_ms: 10 * MIN, ..plan() };
    downsample::run_once(&mut fx.store.conn().unwrap(), T0 + 3 * MIN, tiny).unwrap();
    assert_eq!(fx.rows(Table::Raw, 0).len(), 36);
}

#[test]
fn long_ranges_read_rollups_plus_the_raw_tail() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + 6 * MIN);
    fx.downsample(T0 + 4 * MIN + 20_000); // minutes 1-4 rolled, 5-6 only raw
    let q = RangeRead {
        q: PointQuery {
            start_ms: T0,
            end_ms: T0 + 6 * MIN,
            step_ms: MIN,
            variant: Some("production".into()),
            target_url: None,
        },
        raw: false,
        point_ms: 5_000,
        rollup_ms: MIN,
    };
    let pts = range::points(&fx.store.conn().unwrap(), &q).unwrap();
    let stamps: Vec<i64> = pts.iter().map(|p| (p.timestamp - T0) / MIN).collect();
    assert_eq!(stamps, [1, 2, 3, 4, 5, 6], "no gap at the recent end");
    let raw = RangeRead { raw: true, ..q.clone() };
    let from_raw = range::points(&fx.store.conn().unwrap(), &raw).unwrap();
    for (a, b) in pts.iter().zip(&from_raw) {
        assert_eq!(a.requests, b.requests);
        assert_eq!(a.latency_p95, b.latency_p95, "quantiles come from summed buckets, not averaged");
        assert_eq!(a.requests_2xx, b.requests_2xx);
    }
}

/// The newest wide bucket is still filling: its rates divide by the span its data covers (30 s
/// of a 1 min step here), not by the whole step, or a half-full minute reads as half the traffic.
#[test]
fn a_filling_wide_bucket_divides_by_the_span_its_data_covers() {
    let mut fx = Fixture::new();
    let end = T0 + 6 * MIN + 30_000;
    fx.write_range(T0, end);
    let q = RangeRead {
        q: PointQuery { start_ms: T0, end_ms: end, step_ms: MIN, variant: Some("production".into()), target_url: None },
        raw: true,
        point_ms: 5_000,
        rollup_ms: MIN,
    };
    let pts = range::points(&fx.store.conn().unwrap(), &q).unwrap();
    let (full, filling) = (&pts[pts.len() - 2], &pts[pts.len() - 1]);
    assert_eq!((filling.timestamp - T0, full.timestamp - T0), (7 * MIN, 6 * MIN), "{pts:?}");
    assert!(filling.requests > 0.0 && full.requests > 0.0);
    assert!((full.req_rate - full.requests / 60.0).abs() < 1e-9, "{full:?}");
    assert!((filling.req_rate - filling.requests / 30.0).abs() < 1e-9, "30 s covered: {filling:?}");
}

#[test]
fn a_transaction_that_hits_a_full_disk_writes_nothing() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + MIN);
    let before = fx.blobs("metrics_5s").len();
    let mut conn = fx.store.conn().unwrap();
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    conn.execute_batch(&format!("PRAGMA max_page_count = {pages}")).unwrap();
    let mut big = fx.rows(Table::Raw, 0).last().unwrap().clone();
    let mut rows = Vec::new();
    for i in 1..=400 {
        big.ts_ms = T0 + HOUR + i * 5_000;
        for m in 0..40 {
            big.counts.tokens.insert(format!("model-{m}-{i}").into(), [1.5, 2.5, 3.5, 4.5]);
        }
        rows.push(big.clone());
    }
    let batch =
        WriteBatch { bucket_end_ms: T0 + HOUR, rows, states: vec![], points: vec![], events: vec![], late: false };
    let err = write::write_batch(&mut conn, &batch, MIN).unwrap_err();
    assert!(err.to_string().contains("full"), "{err}");
    conn.execute_batch("PRAGMA max_page_count = 1073741823").unwrap();
    drop(conn);
    assert_eq!(fx.blobs("metrics_5s").len(), before, "the failed transaction left nothing behind");
}

/// The writer stores a batch's rows in key order (time, then target: appended at the end of
/// the raw table), whatever order they came in; two rows of one target and bucket (two scrapes
/// completed in it) still merge in the order they came, the later one's variant winning.
#[test]
fn a_batch_sorted_for_the_raw_key_still_merges_a_targets_two_rows_of_a_bucket_in_arrival_order() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + 10_000);
    let (a, b) = (fx.rows(Table::Raw, 0).last().unwrap().clone(), fx.rows(Table::Raw, 1).last().unwrap().clone());
    let at = T0 + 15_000;
    let with = |template: &TargetRow, variant: &str| {
        let mut row = template.clone();
        row.ts_ms = at;
        row.variant = variant.to_owned();
        row
    };
    let rows = vec![with(&b, "blue"), with(&a, "first"), with(&a, "second")];
    let batch = WriteBatch { bucket_end_ms: at, rows, states: vec![], points: vec![], events: vec![], late: false };
    assert!(write::write_batch(&mut fx.store.conn().unwrap(), &batch, MIN).unwrap(), "the two rows merged");
    let stored: Vec<(i64, i64)> = fx.blobs("metrics_5s").iter().filter(|r| r.1 == at).map(|r| (r.0, r.1)).collect();
    assert_eq!(stored, vec![(fx.ids[0], at), (fx.ids[1], at)], "one row per target, under its own key");
    let merged = fx.rows(Table::Raw, 0).into_iter().find(|r| r.ts_ms == at).unwrap();
    assert_eq!(merged.variant, "second", "the later row's variant");
    assert_eq!(merged.elapsed_ms, 2 * a.elapsed_ms, "both rows' time");
    let other = fx.rows(Table::Raw, 1).into_iter().find(|r| r.ts_ms == at).unwrap();
    assert_eq!(other.variant, "blue");
}

/// A writer's health reporting to a board nobody reads.
fn reporting() -> write::Reporting {
    write::Reporting { health: Default::default(), clock: Arc::new(zai_dash::clock::SystemClock) }
}

/// A batch of one bucket: `template` (a stored row) moved to the bucket ending at `ts_ms`.
fn one_row_batch(template: &TargetRow, ts_ms: i64) -> WriteBatch {
    let mut row = template.clone();
    row.ts_ms = ts_ms;
    WriteBatch { bucket_end_ms: ts_ms, rows: vec![row], states: vec![], points: vec![], events: vec![], late: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_delays_writes_but_loses_no_batch() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + 10_000);
    let template = fx.rows(Table::Raw, 0).last().unwrap().clone();
    let batch = |i: i64| one_row_batch(&template, T0 + HOUR + i * 5_000);
    let stats = Arc::new(WriterStats::default());
    let (queue, rx) = write::channel(16, stats.clone(), &fx.store);
    let writer =
        tokio::spawn(write::run_writer(fx.store.clone(), rx, Hub::new(1, 8, 8), stats.clone(), reporting(), MIN));
    // Another process holds the write lock for longer than the busy timeout.
    let locker = rusqlite::Connection::open(fx.store.path()).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    queue.submit(batch(1));
    queue.submit(batch(2));
    // The lock is held until the writer has given up on it once (after its busy timeout).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while stats.failed.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "the first attempt did not fail on the lock in 60 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    locker.execute_batch("COMMIT").unwrap();
    queue.submit(batch(3));
    drop(queue);
    writer.await.unwrap();
    let c = fx.store.conn().unwrap();
    let n: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM metrics_5s WHERE target_id = ?1 AND ts > ?2",
            params![fx.ids[0], T0 + HOUR],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 3, "all three batches were written once the lock was released");
    assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Production's bucket ends in a `/api/metrics`-shaped raw read of the 5 minutes before `now`.
async fn read_buckets(store: &Store, now: i64) -> Vec<i64> {
    use zai_dash::ports::read::DataSource;
    let mut settings = zai_dash::config::Settings::for_tests(vec![], "unused.db".into()).store();
    settings.point_width = std::time::Duration::from_secs(5);
    let clock = Arc::new(zai_dash::clock::ManualClock::new(now));
    let source = zai_dash::store::source::StoreSource::new(store.clone(), settings, clock);
    let q = PointQuery {
        start_ms: now - 5 * MIN,
        end_ms: now,
        step_ms: 5_000,
        variant: Some("production".into()),
        target_url: None,
    };
    let json = source.points_json(q, now).await.unwrap().joined();
    let points: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    points.iter().map(|p| p["timestamp"].as_i64().unwrap()).collect()
}

/// A closed bucket is in every read from the moment the ticker hands it over, however far
/// behind the writer is: here the writer is stuck on a lock another process holds, and later
/// batches find its queue full. (A batch used to wait in the queue unseen by reads until the
/// writer took it, so a read on a busy machine could lack a bucket seconds old.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_read_from_the_moment_it_is_handed_over_however_busy_the_writer() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + MIN);
    let template = fx.rows(Table::Raw, 0).last().unwrap().clone();
    let batch = |i: i64| one_row_batch(&template, T0 + MIN + i * 5_000);
    let stats = Arc::new(WriterStats::default());
    let (queue, rx) = write::channel(1, stats.clone(), &fx.store);
    let locker = rusqlite::Connection::open(fx.store.path()).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let writer =
        tokio::spawn(write::run_writer(fx.store.clone(), rx, Hub::new(1, 8, 8), stats.clone(), reporting(), MIN));
    for i in 1..=4 {
        queue.submit(batch(i));
    }
    let now = T0 + MIN + 20_000;
    let expected: Vec<i64> = (1..=12).map(|i| T0 + i * 5_000).chain((1..=4).map(|i| T0 + MIN + i * 5_000)).collect();
    let read = read_buckets(&fx.store, now).await;
    assert_eq!(read, expected, "every bucket handed over is read, the writer stuck or not");
    assert_eq!(stats.committed.load(std::sync::atomic::Ordering::Relaxed), 0, "the writer was still stuck");
    locker.execute_batch("COMMIT").unwrap();
    drop(queue);
    writer.await.unwrap();
    assert_eq!(read_buckets(&fx.store, now).await, expected, "and once written");
    assert_eq!(stats.committed.load(std::sync::atomic::Ordering::Relaxed), 4);
}

#[test]
fn the_sealed_bucket_cache_answers_exactly_like_a_fresh_query() {
    let mut fx = Fixture::new();
    let cache = zai_dash::store::cache::PointCache::default();
    let mut end = T0 + 4 * MIN;
    fx.write_range(T0, end);
    for round in 0..6 {
        let now = end + 2_000;
        for (raw, step, variant) in [(true, 5_000, None), (true, 30_000, Some("canary")), (false, MIN, None)] {
            if !raw {
                fx.downsample(now);
            }
            let q = RangeRead {
                q: PointQuery {
                    start_ms: now - 3 * MIN - 1_234,
                    end_ms: now,
                    step_ms: step,
                    variant: variant.map(str::to_owned),
                    target_url: None,
                },
                raw,
                point_ms: 5_000,
                rollup_ms: MIN,
            };
            let fresh = to_json(&range::points(&fx_conn(&fx), &q).unwrap());
            let cached = cache.points_json(&fx_conn(&fx), &q, now - 11_000).unwrap();
            assert_eq!(cached, fresh, "round {round}, raw {raw}, step {step}");
            assert!(fresh.len() > 2);
        }
        let next = end + 25_000;
        fx.write_range(end, next);
        end = next;
    }
    // A row merged into an already served bucket invalidates the cache.
    let q = RangeRead {
        q: PointQuery { start_ms: end - MIN, end_ms: end, step_ms: 5_000, variant: None, target_url: None },
        raw: true,
        point_ms: 5_000,
        rollup_ms: MIN,
    };
    cache.points_json(&fx_conn(&fx), &q, end - 11_000).unwrap();
    let mut late = fx.rows(Table::Raw, 0)[fx.rows(Table::Raw, 0).len() - 5].clone();
    late.counts.requests.insert("500".into(), 77.0);
    let batch = WriteBatch {
        bucket_end_ms: late.ts_ms,
        rows: vec![late],
        states: vec![],
        points: vec![],
        events: vec![],
        late: true,
    };
    assert!(write::write_batch(&mut fx.store.conn().unwrap(), &batch, MIN).unwrap(), "the write reports a merge");
    let stale = cache.points_json(&fx_conn(&fx), &q, end - 11_000).unwrap();
    assert_ne!(stale, to_json(&range::points(&fx_conn(&fx), &q).unwrap()), "served from the cache until invalidated");
    cache.invalidate(); // what the writer does when it reports a merge
    assert_eq!(
        cache.points_json(&fx_conn(&fx), &q, end - 11_000).unwrap(),
        to_json(&range::points(&fx_conn(&fx), &q).unwrap())
    );
}

/// A raw read of hundreds of buckets is serialized on a thread of its own while its rows are
/// read (`cache::read_serialized`), in batches: every point arrives, in order, the last
/// partial batch included.
#[test]
fn a_long_raw_read_serialized_while_it_is_read_answers_exactly_like_a_fresh_query() {
    let mut fx = Fixture::new();
    let end = T0 + 45 * MIN;
    fx.write_range(T0, end);
    let cache = zai_dash::store::cache::PointCache::default();
    for variant in [None, Some("canary")] {
        // 481 buckets of two variants: 962 points, not a whole number of batches.
        let q = RangeRead {
            q: PointQuery {
                start_ms: end - 40 * MIN - 5_000,
                end_ms: end,
                step_ms: 5_000,
                variant: variant.map(str::to_owned),
                target_url: None,
            },
            raw: true,
            point_ms: 5_000,
            rollup_ms: MIN,
        };
        cache.invalidate();
        let fresh = to_json(&range::points(&fx_conn(&fx), &q).unwrap());
        let points = if variant.is_some() { 481 } else { 962 };
        assert_eq!(fresh.matches("\"timestamp\"").count(), points, "{variant:?}");
        let cached = cache.points_json(&fx_conn(&fx), &q, end - 11_000).unwrap();
        // Compared without printing two megabytes when they differ.
        let same = cached == fresh;
        assert!(same, "{variant:?}: {} bytes cached, {} read fresh", cached.len(), fresh.len());
    }
}

/// A long read split into parts read side by side, each on a connection of its own
/// (`cache::read_fresh`), answers byte for byte what the read unsplit does: raw points and wide raw buckets, minutes,
/// a filter by variant or by target, a pod that vanished, the data stopping in the middle of a
/// wide bucket before the split and resuming after it, and data that ends in the older part.
#[test]
fn a_long_read_split_into_parts_answers_exactly_like_one_read() {
    let mut fx = Fixture::new();
    let pairs = vec![("http://c/metrics".to_owned(), "production".to_owned())];
    let gone = query::register_targets(&fx.store.conn().unwrap(), &pairs, T0).unwrap()[0].id;
    write_pod(&fx, gone, &mut TargetState::default(), (T0, T0 + 8 * MIN)); // then the pod vanishes
    // zai-dash down from 38:25 to 43:00 (the first scrape after covers the gap): the reads
    // below that split at 40:00 (in two or four parts) split inside it.
    fx.write_range(T0, T0 + 38 * MIN + 25_000);
    fx.write_range(T0 + 43 * MIN, T0 + 60 * MIN);
    let end = T0 + 60 * MIN;
    fx.downsample(end + 20_000);
    // One scrape more, into the bucket of 60:15 (not rolled yet): the data ends mid-bucket.
    fx.write_range(end, end + 5_000);
    // Into the file, so the reads below read it through their mappings, not the WAL.
    fx_conn(&fx).execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    let reads = [
        // (raw, step, window start, window end, variant, target)
        (true, 5_000, end - 50 * MIN, end, None, None),
        (true, 15_000, end - 40 * MIN, end, None, None),
        (true, 15_000, end - 40 * MIN, end, Some("canary"), None),
        (true, 10_000, end - 50 * MIN, end, None, Some("http://a/metrics")),
        // The parts after 62:30 find no row: the data ends in an older one, at 60:05.
        (true, 15_000, end - 20 * MIN, end + 25 * MIN, None, None),
        (false, MIN, end - 55 * MIN, end, None, None),
        (false, 2 * MIN, end - 40 * MIN, end, None, None),
        (false, 2 * MIN, end - 40 * MIN, end, Some("production"), None),
    ];
    for (raw, step_ms, start_ms, end_ms, variant, target) in reads {
        let q = RangeRead {
            q: PointQuery {
                start_ms,
                end_ms,
                step_ms,
                variant: variant.map(str::to_owned),
                target_url: target.map(str::to_owned),
            },
            raw,
            point_ms: 5_000,
            rollup_ms: MIN,
        };
        let whole = to_json(&range::points(&fx_conn(&fx), &q).unwrap());
        assert!(whole.matches("\"timestamp\"").count() > 10, "{q:?}");
        // Four parts (three more connections), and two when only one more is idle.
        for idle in [3, 1] {
            let given = std::sync::atomic::AtomicUsize::new(0);
            let more = |_| {
                let n = given.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (n < idle).then(|| fx.store.conn().unwrap())
            };
            let cache = zai_dash::store::cache::PointCache::default();
            let split = cache.points_json_split(&fx_conn(&fx), &more, &q, i64::MIN).unwrap();
            assert!(given.into_inner() >= idle, "{q:?}: split");
            assert!(!maps_file(fx.store.path()), "{q:?}: the read's mappings of the file are gone");
            // Compared without printing a megabyte when they differ.
            let same = split == whole;
            let diff = || first_difference(&split, &whole);
            assert!(same, "{q:?}, {idle} more: {} bytes split, {} whole\n{}", split.len(), whole.len(), diff());
        }
    }
}

/// A wide bucket of raw rows the data stopped in, before a gap, is covered whole: the pod was
/// present for one 5 s scrape of its 15 s, so it adds a third of its gauge (a bucket counts
/// only the time the data reached when it is the window's newest, still filling up).
#[test]
fn a_wide_raw_bucket_before_a_gap_in_the_data_is_covered_whole() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + 10 * MIN + 5_000);
    fx.write_range(T0 + 14 * MIN, T0 + 20 * MIN);
    let read = |step_ms| {
        let q = PointQuery {
            start_ms: T0,
            end_ms: T0 + 20 * MIN,
            step_ms,
            variant: Some("canary".into()),
            target_url: None,
        };
        let r = RangeRead { q, raw: true, point_ms: 5_000, rollup_ms: MIN };
        range::points(&fx_conn(&fx), &r).unwrap()
    };
    let at = |points: &[zai_dash::point::Point], ms: i64| {
        points.iter().find(|p| p.timestamp == ms).map(|p| p.concurrent_requests).unwrap()
    };
    let scraped = at(&read(5_000), T0 + 10 * MIN + 5_000);
    assert!(scraped > 0.0);
    assert_eq!(at(&read(15_000), T0 + 10 * MIN + 15_000), scraped / 3.0);
}

/// Whether the process maps `path` now (`/proc/self/maps`): a long read maps the database
/// file while it runs (`cache::read_fresh`) and not after.
fn maps_file(path: &std::path::Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|l| l.ends_with(path.to_str().unwrap()))
}

/// Where two JSON texts first differ, with some context.
fn first_difference(a: &str, b: &str) -> String {
    let at = a.bytes().zip(b.bytes()).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let from = at.saturating_sub(200);
    let show = |s: &str| s.get(from..(at + 200).min(s.len())).unwrap_or("").to_owned();
    format!("split: ...{}\nwhole: ...{}", show(a), show(b))
}

fn fx_conn(fx: &Fixture) -> r2d2::PooledConnection<r2d2_sqlite::SqliteConnectionManager> {
    fx.store.conn().unwrap()
}

#[test]
fn nothing_sealed_yet_is_not_an_overflow() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + 2 * MIN);
    let cache = zai_dash::store::cache::PointCache::default();
    for raw in [true, false] {
        // No rollup watermark and nothing committed: every bucket is still open.
        let q = RangeRead {
            q: PointQuery { start_ms: T0, end_ms: T0 + 2 * MIN, step_ms: MIN, variant: None, target_url: None },
            raw,
            point_ms: 5_000,
            rollup_ms: MIN,
        };
        let fresh = to_json(&range::points(&fx_conn(&fx), &q).unwrap());
        assert_eq!(cache.points_json(&fx_conn(&fx), &q, i64::MIN).unwrap(), fresh);
    }
}

/// Scrapes one more target every 5 s for `(from, to]` (counters as `expo(i * 3)`), one batch per
/// bucket with its state and totals, as the writer gets them.
fn write_pod(fx: &Fixture, id: i64, state: &mut TargetState, (from, to): (i64, i64)) {
    let mut t = from + 5_000;
    while t <= to {
        let mut row = state.advance(&read(&parse(&expo((t - T0) / 5_000 * 3)).unwrap()), t - 300, id, "production");
        row.ts_ms = bucket_end(t - 300, 5_000);
        let update = StateUpdate {
            target_id: id,
            scraped_ms: t - 300,
            write: StateWrite::Checkpoint(serde_json::to_string(state).unwrap().into()),
            totals: row.totals,
            variant: "production".into(),
        };
        let batch = WriteBatch {
            bucket_end_ms: t,
            rows: vec![row],
            states: vec![update],
            points: vec![],
            events: vec![],
            late: false,
        };
        write::write_batch(&mut fx.store.conn().unwrap(), &batch, MIN).unwrap();
        t += 5_000;
    }
}

#[test]
fn cumulative_fields_agree_across_tables_caches_and_retention_after_a_pod_vanished() {
    let mut fx = Fixture::new();
    let pairs = vec![("http://c/metrics".to_owned(), "production".to_owned())];
    let gone = query::register_targets(&fx.store.conn().unwrap(), &pairs, T0).unwrap()[0].id;
    let mut gone_state = TargetState::default();
    write_pod(&fx, gone, &mut gone_state, (T0, T0 + 3 * MIN)); // then the pod vanishes
    // Long enough that raw retention (6 min) takes a whole sealed 10-minute chunk.
    fx.write_range(T0, T0 + 25 * MIN);
    let now = T0 + 25 * MIN;
    let expected = fx.rows(Table::Raw, 0).last().unwrap().totals.requests_2xx
        + zai_dash::point::Totals::from(gone_state.totals).requests_2xx;
    let last_2xx = |raw: bool, start: i64, step: i64| {
        let q = RangeRead {
            q: PointQuery {
                start_ms: start,
                end_ms: now,
                step_ms: step,
                variant: Some("production".into()),
                target_url: None,
            },
            raw,
            point_ms: 5_000,
            rollup_ms: MIN,
        };
        let pts = range::points(&fx_conn(&fx), &q).unwrap();
        (pts.last().unwrap().requests_2xx.unwrap(), pts.iter().map(|p| p.requests_2xx.unwrap()).collect::<Vec<_>>())
    };
    fx.downsample(now + 20_000);
    // Every table and range agrees, and no series steps down.
    for (raw, start, step) in [(true, now - 5 * MIN, 5_000), (true, now - 5 * MIN, 30_000), (false, now - 8 * MIN, MIN)]
    {
        let (last, all) = last_2xx(raw, start, step);
        assert_eq!(last, expected, "raw {raw}, step {step}");
        assert!(all.windows(2).all(|w| w[1] >= w[0]), "raw {raw}, step {step}: {all:?}");
    }
    let cache = zai_dash::store::cache::PointCache::default();
    let cached_q = RangeRead {
        q: PointQuery { start_ms: now - 5 * MIN, end_ms: now, step_ms: 5_000, variant: None, target_url: None },
        raw: true,
        point_ms: 5_000,
        rollup_ms: MIN,
    };
    cache.points_json(&fx_conn(&fx), &cached_q, now).unwrap();
    // Retention takes the vanished pod's raw rows, then its rollups: its totals still count.
    let short = Plan { retention_raw_ms: 6 * MIN, ..plan() };
    let r = downsample::run_once(&mut fx.store.conn().unwrap(), now + 20_000, short).unwrap();
    assert!(r.deleted_raw > 0);
    cache.forget_through(true, r.raw_cutoff_ms);
    assert_eq!(last_2xx(true, now - 5 * MIN, 5_000).0, expected, "after raw retention");
    assert_eq!(
        cache.points_json(&fx_conn(&fx), &cached_q, now).unwrap(),
        to_json(&range::points(&fx_conn(&fx), &cached_q).unwrap())
    );
    let shorter = Plan { retention_raw_ms: 6 * MIN, retention_rollup_ms: 6 * MIN, ..plan() };
    let r = downsample::run_once(&mut fx.store.conn().unwrap(), now + 20_000, shorter).unwrap();
    assert!(r.deleted_rollup > 0);
    assert!(fx.blobs("metrics_1m").iter().chain(&fx.blobs("metrics_5s")).all(|(id, _, _)| *id != gone));
    assert_eq!(last_2xx(true, now - 5 * MIN, 5_000).0, expected, "after every row of the pod aged out");
    assert_eq!(last_2xx(false, now - 5 * MIN, MIN).0, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_finds_the_queue_full_is_merged_into_the_next_never_dropped() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + MIN);
    let template = fx.rows(Table::Raw, 0)[0].clone();
    let batch = |i: i64| one_row_batch(&template, T0 + HOUR + i * 5_000);
    let stats = Arc::new(WriterStats::default());
    let (queue, rx) = write::channel(1, stats.clone(), &fx.store);
    // The writer is not running yet: the first batch fills the queue, the rest are held.
    for i in 1..=4 {
        zai_dash::ports::ingest::BatchSink::submit(&queue, batch(i));
    }
    assert_eq!(stats.merged.load(std::sync::atomic::Ordering::Relaxed), 3);
    let writer =
        tokio::spawn(write::run_writer(fx.store.clone(), rx, Hub::new(1, 8, 8), stats.clone(), reporting(), MIN));
    zai_dash::ports::ingest::BatchSink::flush(&queue).await;
    drop(queue);
    writer.await.unwrap();
    let n: i64 = fx
        .store
        .conn()
        .unwrap()
        .query_row("SELECT COUNT(*) FROM metrics_5s WHERE ts > ?1", params![T0 + HOUR], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4, "every batch written");
    assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn ten_minute_rows_sum_their_minutes_and_long_ranges_read_them_with_the_finer_tail() {
    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + 35 * MIN);
    let r = fx.downsample(T0 + 35 * MIN + 20_000);
    assert_eq!(r.coarse_rows, 6, "three complete 10-minute buckets for two targets");
    let coarse = fx.rows(Table::Coarse, 0);
    let minutes = fx.rows(Table::Rollup, 0);
    for c in &coarse {
        let members: Vec<&TargetRow> =
            minutes.iter().filter(|m| m.ts_ms > c.ts_ms - 10 * MIN && m.ts_ms <= c.ts_ms).collect();
        assert_eq!(members.len(), 10);
        let sum = members.iter().map(|m| m.counts.total_requests()).sum::<f64>();
        assert_eq!(c.counts.total_requests(), sum);
        assert_eq!(c.totals, members.last().unwrap().totals);
        assert_eq!(c.present_ms, 10 * MIN, "present all along");
    }
    // A 10-minute step reads 10 min rows, then 1 min rows, then the raw tail: the same numbers as
    // summing raw rows into the same buckets.
    let q = |raw: bool| RangeRead {
        q: PointQuery {
            start_ms: T0,
            end_ms: T0 + 35 * MIN,
            step_ms: 10 * MIN,
            variant: Some("production".into()),
            target_url: None,
        },
        raw,
        point_ms: 5_000,
        rollup_ms: MIN,
    };
    let tiered = range::points(&fx_conn(&fx), &q(false)).unwrap();
    let from_raw = range::points(&fx_conn(&fx), &q(true)).unwrap();
    assert_eq!(tiered.len(), 4);
    for (a, b) in tiered.iter().zip(&from_raw) {
        assert_eq!(a.timestamp, b.timestamp);
        assert_eq!(a.requests, b.requests);
        assert_eq!(a.requests_2xx, b.requests_2xx);
        assert_eq!(a.latency_p95, b.latency_p95);
    }
    // A late row in a rolled 10 minutes reopens both the minute and the 10 minutes.
    let mut late = fx.rows(Table::Raw, 0)[30].clone();
    late.elapsed_ms = 0;
    let batch = WriteBatch {
        bucket_end_ms: late.ts_ms,
        rows: vec![late],
        states: vec![],
        points: vec![],
        events: vec![],
        late: true,
    };
    write::write_batch(&mut fx.store.conn().unwrap(), &batch, MIN).unwrap();
    let c = fx.store.conn().unwrap();
    assert_eq!(query::watermark_of(&c, Table::Coarse).unwrap(), Some(T0));
    assert_eq!(query::watermark(&c).unwrap(), Some(T0 + 2 * MIN));
}

/// The state journal as the scraper writes it: a checkpoint at a target's first scrape of each
/// 10-minute window, then changes only, each carried by the tick's raw row. Start-up replays
/// the entries after the newest checkpoint into exactly the live state; sealing a window drops
/// the entries its checkpoint covers with their rows and moves those it does not (a target
/// gone quiet before its next checkpoint) to the journal tables.
#[test]
fn the_state_journal_replays_to_the_live_state_and_is_pruned_behind_checkpoints() {
    use zai_dash::scrape::persist::{self, CHECKPOINT_EVERY_MS, Persister};
    let fx = Fixture::new();
    let id = fx.ids[0];
    let mut state = TargetState::default();
    let mut persister = Persister::resumed(&state, None);
    let per_checkpoint = CHECKPOINT_EVERY_MS / 5_000;
    let mut conn = fx.store.conn().unwrap();
    let mut tick = |conn: &mut rusqlite::Connection, i: i64| {
        let at = T0 + i * 5_000 - 300;
        let mut row = state.advance(&read(&parse(&expo(i)).unwrap()), at, id, "production");
        row.ts_ms = bucket_end(at, 5_000);
        let (scraped_ms, write) = persister.after_scrape(&state, at, "production");
        let update = StateUpdate { target_id: id, scraped_ms, write, totals: row.totals, variant: "production".into() };
        let batch = WriteBatch {
            bucket_end_ms: row.ts_ms,
            rows: vec![row],
            states: vec![update],
            points: vec![],
            events: vec![],
            late: false,
        };
        write::write_batch(conn, &batch, MIN).unwrap();
        state.clone()
    };
    let journal_rows =
        |c: &rusqlite::Connection| c.query_row("SELECT count(*) FROM state_log", [], |r| r.get::<_, i64>(0)).unwrap();
    let carried = |c: &rusqlite::Connection| {
        c.query_row(
            "SELECT (SELECT count(*) FROM metrics_5s_0 WHERE state_entry IS NOT NULL)
                  + (SELECT count(*) FROM metrics_5s_1 WHERE state_entry IS NOT NULL)",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    let replays_to = |c: &rusqlite::Connection, live: &TargetState| {
        let pending = query::pending_journals(c).unwrap();
        let stored = query::targets(c).unwrap().into_iter().find(|t| t.id == id).unwrap();
        let entries = &pending[&id];
        assert!(entries.iter().all(|(ms, _)| Some(*ms) > stored.state_ms), "only entries after the checkpoint");
        let checkpoint = stored.state.as_ref().map(|s| s.decode().unwrap());
        let replayed = persist::consolidate(checkpoint.as_deref(), entries).unwrap();
        assert_eq!(TargetState { layout: 0, ..replayed }, TargetState { layout: 0, ..live.clone() });
        pending
    };
    let first = per_checkpoint + 30; // past the checkpoint at the second window's first scrape
    let mut live = TargetState::default();
    for i in 1..=first {
        live = tick(&mut conn, i);
    }
    assert_eq!(journal_rows(&conn), 0, "every entry rides in its raw row");
    assert!(carried(&conn) > 100, "one entry per scrape between checkpoints: {}", carried(&conn));
    let pending = replays_to(&conn, &live);
    assert!(pending[&id].len() < 40, "the second window's entries only");

    let report = downsample::run_once(&mut conn, T0 + first * 5_000 + MIN, plan()).unwrap();
    assert!(report.sealed_rows > 100, "the first window sealed");
    assert_eq!(journal_rows(&conn), 0, "the checkpoint covers the sealed window: its entries went with it");
    assert_eq!(query::pending_journals(&conn).unwrap(), pending, "nothing a replay needs is gone");

    // The target goes quiet at the second window's end, before its next checkpoint.
    let last = 2 * per_checkpoint;
    for i in first + 1..=last {
        live = tick(&mut conn, i);
    }
    let pending = replays_to(&conn, &live);
    downsample::run_once(&mut conn, T0 + last * 5_000 + MIN, plan()).unwrap();
    assert_eq!(carried(&conn), 0, "the second window sealed");
    assert_eq!(journal_rows(&conn) as usize, pending[&id].len(), "its pending entries kept in the journal tables");
    assert_eq!(query::pending_journals(&conn).unwrap(), pending);
    replays_to(&conn, &live);
}

/// A window reaching past what the 1 min rows keep (a month's spend, a 28-day objective) reads
/// the 10 min rows there: the same sums as while every table still held everything.
#[tokio::test]
async fn window_sums_read_ten_minute_rows_where_retention_deleted_the_minutes() {
    use std::time::Duration;
    use zai_dash::ports::read::{DataSource, WindowQuery};
    use zai_dash::store::source::StoreSource;

    let mut fx = Fixture::new();
    fx.write_range(T0, T0 + 60 * MIN);
    let now = T0 + 60 * MIN + 20_000;
    fx.downsample(now);
    let source = |retention_5s: u64, retention_1m: u64| {
        let mut settings = zai_dash::config::Settings::for_tests(vec![], "unused.db".into()).store();
        settings.point_width = Duration::from_secs(5);
        settings.rollup_width = Duration::from_secs(60);
        settings.retention_5s = Duration::from_secs(retention_5s);
        settings.retention_1m = Duration::from_secs(retention_1m);
        StoreSource::new(fx.store.clone(), settings, Arc::new(zai_dash::clock::ManualClock::new(now)))
    };
    let requests = |sums: &std::collections::BTreeMap<String, zai_dash::ports::read::WindowSums>| {
        sums.iter().map(|(v, s)| (v.clone(), s.counts.total_requests())).collect::<Vec<_>>()
    };
    let q = WindowQuery { start_ms: T0, end_ms: T0 + 60 * MIN, target_url: None };
    let everything = requests(&source(86_400, 7 * 86_400).window(q.clone()).await.unwrap());
    assert!(everything.iter().all(|(_, r)| *r > 0.0), "{everything:?}");
    // Retention as if 5 s rows were kept 10 minutes and 1 min rows 25: what each deleted.
    let c = fx.store.conn().unwrap();
    for generation in ["metrics_5s_0", "metrics_5s_1"] {
        c.execute(&format!("DELETE FROM {generation} WHERE ts <= ?1"), params![now - 10 * MIN]).unwrap();
    }
    // The hour of minutes is sealed in one chunk, which retention deletes whole; taking only
    // the minutes up to the cutoff means rewriting the rest as open rows.
    let kept: Vec<TargetRow> =
        (0..2).flat_map(|k| fx.rows(Table::Rollup, k)).filter(|r| r.ts_ms > now - 25 * MIN).collect();
    c.execute_batch("DELETE FROM metrics_1m; DELETE FROM metrics_1m_chunks;").unwrap();
    for r in &kept {
        query::replace_row(&c, Table::Rollup, r).unwrap();
    }
    assert_eq!(kept.len(), 2 * 25);
    let after = requests(&source(600, 25 * 60).window(q).await.unwrap());
    assert_eq!(after, everything);
}

/// Every read of raw rows, as JSON: points over windows that start and end inside chunk
/// windows and across their edges, at several steps, for every target and for one, and each
/// target's rows.
fn raw_reads(fx: &Fixture, end: i64) -> Vec<String> {
    let mut out = Vec::new();
    let windows = [
        (T0 - 5 * MIN, end, 5_000, None),
        (T0 + 7 * MIN + 2_500, T0 + 33 * MIN, 5_000, None),
        (T0 + 9 * MIN, T0 + 21 * MIN, 15_000, Some("http://b/metrics")),
        (T0 + 3 * MIN, end - 1, 30_000, None),
        (end - 20 * MIN, end, 5_000, Some("http://a/metrics")),
    ];
    for (start_ms, end_ms, step_ms, target) in windows {
        let q = RangeRead {
            q: PointQuery { start_ms, end_ms, step_ms, variant: None, target_url: target.map(str::to_owned) },
            raw: true,
            point_ms: 5_000,
            rollup_ms: MIN,
        };
        out.push(to_json(&range::points(&fx_conn(fx), &q).unwrap()));
    }
    for k in 0..2 {
        out.push(format!("{:?}", fx.rows(Table::Raw, k)));
    }
    out
}

fn chunk_figures(fx: &Fixture) -> (i64, i64, i64) {
    fx_conn(fx)
        .query_row(
            "SELECT count(*), COALESCE(SUM(rows), 0), (SELECT count(*) FROM metrics_5s) FROM metrics_5s_chunks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

#[test]
fn sealed_raw_rows_read_exactly_as_open_ones_and_take_late_rows() {
    let mut fx = Fixture::new();
    let end = T0 + 130 * MIN;
    fx.write_range(T0, end);
    let open = raw_reads(&fx, end);
    let first = fx.downsample(end + 20_000);
    // A database of open rows (one written before chunks existed) is sealed 12 windows per
    // run: the first run leaves the newest 10 minutes open.
    assert_eq!(first.sealed_rows, 2 * 12 * 120, "two hours of two targets sealed");
    assert_eq!(chunk_figures(&fx), (24, 2 * 12 * 120, 2 * 120));
    let sealed_once = raw_reads(&fx, end);
    assert_eq!(sealed_once, open, "the same answers from chunks as from open rows");
    let second = fx.downsample(end + 20_000);
    assert_eq!(second.sealed_rows, 2 * 120);
    assert_eq!(second.cleared_raw_generations, 1, "the last window's generation held only it: emptied whole");
    assert_eq!(chunk_figures(&fx), (26, 2 * 13 * 120, 0), "every row in exactly one place");
    assert_eq!(raw_reads(&fx, end), open);

    // A second scrape of a bucket in a sealed window (a late batch) reopens the target's chunk
    // and merges into the row it meets.
    let at = T0 + 12 * MIN + 5_000;
    let before = fx.rows(Table::Raw, 0).into_iter().find(|r| r.ts_ms == at).unwrap();
    let mut late = before.clone();
    late.counts.requests = [("500".into(), 77.0)].into();
    late.totals.requests_5xx += 77.0;
    let batch =
        WriteBatch { bucket_end_ms: at, rows: vec![late], states: vec![], points: vec![], events: vec![], late: true };
    assert!(write::write_batch(&mut fx.store.conn().unwrap(), &batch, MIN).unwrap(), "the write reports a merge");
    assert_eq!(chunk_figures(&fx), (25, 2 * 13 * 120 - 120, 120), "one chunk reopened");
    let merged = |fx: &Fixture| fx.rows(Table::Raw, 0).into_iter().find(|r| r.ts_ms == at).unwrap();
    assert_eq!(merged(&fx).counts.requests.get("500"), Some(&77.0));
    assert_eq!(merged(&fx).counts.requests.get("200"), before.counts.requests.get("200"), "merged, not replaced");
    let reopened = raw_reads(&fx, end);
    assert_ne!(reopened, sealed_once);
    // Sealed again on the next run, the merged row included.
    let third = fx.downsample(end + 40_000);
    assert_eq!(third.sealed_rows, 120);
    assert_eq!(third.cleared_raw_generations, 1, "the reopened rows were all their generation held");
    assert_eq!(chunk_figures(&fx), (26, 2 * 13 * 120, 0));
    assert_eq!(raw_reads(&fx, end), reopened);
    // And it survives a restart: the chunks are what is on disk.
    let path = fx._dir.path().join("t.db");
    let reopened_store = Store::open(&path).unwrap();
    let c = reopened_store.conn().unwrap();
    let names = query::variant_names(&c).unwrap();
    let rows = query::target_rows(&c, Table::Raw, fx.ids[0], i64::MIN, i64::MAX, &names).unwrap();
    assert_eq!(rows.len(), 13 * 120);
    assert_eq!(rows.iter().find(|r| r.ts_ms == at).unwrap().counts.requests.get("500"), Some(&77.0));
}

/// Writes 1 min rows of both targets for every minute of `(from, to]` (the second target's
/// pod gone for 40 minutes of the fourth hour, and present only part of some minutes), their
/// 10 min rows rolled as the downsampler rolls them, and both watermarks at `to`: rolled rows
/// as a day of running leaves them, none sealed yet.
fn write_rolled(fx: &mut Fixture, (from, to): (i64, i64)) {
    let c = fx.store.conn().unwrap();
    let mut minutes: [Vec<TargetRow>; 2] = Default::default();
    for (n, t) in (from + MIN..=to).step_by(MIN as usize).enumerate() {
        let i = n as i64;
        for (k, variant) in ["production", "canary"].iter().enumerate() {
            if k == 1 && (3 * 60 + 10..3 * 60 + 50).contains(&i) {
                continue;
            }
            let mut row = fx.states[k].advance(
                &read(&parse(&expo(i * 12 * (k as i64 + 1))).unwrap()),
                t - 300,
                fx.ids[k],
                variant,
            );
            row.ts_ms = t;
            row.present_ms = if k == 1 && i % 7 == 0 { 15_000 + i } else { MIN };
            query::replace_row(&c, Table::Rollup, &row).unwrap();
            minutes[k].push(row);
        }
    }
    for rows in &minutes {
        for r in query::roll_minutes(rows, 10 * MIN) {
            query::replace_row(&c, Table::Coarse, &r).unwrap();
        }
    }
    query::set_watermark(&c, to).unwrap();
    c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('coarse_watermark_ms', ?1)", [to]).unwrap();
}

/// Every read of rolled rows, as a fresh process on the file answers it: `/api/metrics`
/// (points JSON) over an hour, hours, a day (10 min rows) and more, with edges inside chunks,
/// for every target and for one; window sums (10 min rows where the 1 min rows are taken as
/// gone, then 1 min rows), chart data, strata, and each target's rows of both tables.
async fn rolled_reads(path: &std::path::Path, now: i64) -> Vec<String> {
    use std::time::Duration;
    use zai_dash::ports::read::{DataSource, StrataQuery, WindowQuery};
    use zai_dash::store::source::StoreSource;

    let store = Store::open(path).unwrap();
    let mut settings = zai_dash::config::Settings::for_tests(vec![], "unused.db".into()).store();
    settings.point_width = Duration::from_secs(5);
    settings.rollup_width = Duration::from_secs(60);
    settings.retention_5s = Duration::from_secs(600);
    settings.retention_1m = Duration::from_secs(6 * 3600);
    let source = StoreSource::new(store.clone(), settings, Arc::new(zai_dash::clock::ManualClock::new(now)));
    let mut out = Vec::new();
    let windows = [
        (now - HOUR, now, MIN, None),
        (now - 24 * HOUR, now, 10 * MIN, None),
        (now - 26 * HOUR, now, 30 * MIN, Some("http://b/metrics")),
        (now - 23 * HOUR - 7 * MIN, now - 20 * HOUR + 30_000, 5 * MIN, None),
        (now - 25 * HOUR + 30 * MIN, now - 2 * HOUR, 60 * MIN, Some("http://a/metrics")),
    ];
    for (start_ms, end_ms, step_ms, target) in windows {
        let q = PointQuery { start_ms, end_ms, step_ms, variant: None, target_url: target.map(str::to_owned) };
        out.push(source.points_json(q.clone(), now).await.unwrap().joined());
        let chart = source.chart(q).await.unwrap();
        out.push(format!("{:?}", (chart.points, chart.counts)));
    }
    for (start_ms, end_ms) in [(now - 26 * HOUR, now), (now - 20 * HOUR - 5 * MIN, now - 3 * HOUR), (now - HOUR, now)] {
        out.push(format!("{:?}", source.window(WindowQuery { start_ms, end_ms, target_url: None }).await.unwrap()));
        let variants = ["production".to_owned(), "canary".to_owned()];
        out.push(format!("{:?}", source.strata(StrataQuery { start_ms, end_ms, variants }).await.unwrap()));
    }
    let c = store.conn().unwrap();
    let names = query::variant_names(&c).unwrap();
    for table in [Table::Rollup, Table::Coarse] {
        for id in query::targets(&c).unwrap().iter().map(|t| t.id) {
            out.push(format!("{:?}", query::target_rows(&c, table, id, i64::MIN, i64::MAX, &names).unwrap()));
        }
    }
    out
}

/// Chunks and open rows of both rolled tables: `(1m chunks, 1m rows in them, 1m open rows,
/// 10m chunks, 10m rows in them, 10m open rows)`.
fn rolled_figures(fx: &Fixture) -> [i64; 6] {
    let c = fx_conn(fx);
    let mut out = [0; 6];
    for (i, table) in ["metrics_1m", "metrics_10m"].iter().enumerate() {
        let sql =
            format!("SELECT count(*), COALESCE(SUM(rows), 0), (SELECT count(*) FROM {table}) FROM {table}_chunks");
        let (a, b, o) = c.query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        out[3 * i..3 * i + 3].copy_from_slice(&[a, b, o]);
    }
    out
}

#[tokio::test]
async fn sealed_rolled_rows_read_exactly_as_open_ones_and_take_late_rows() {
    const DAY: i64 = 24 * HOUR;
    let d0 = T0 - T0.rem_euclid(DAY);
    let end = d0 + 26 * HOUR + 30 * MIN;
    let now = end + 20_000;
    // `fx` is sealed; `open` gets the same rows and is never downsampled: the answer key.
    let (mut fx, mut open) = (Fixture::new(), Fixture::new());
    write_rolled(&mut fx, (d0, end));
    write_rolled(&mut open, (d0, end));
    let expected = rolled_reads(open.store.path(), now).await;
    assert_eq!(rolled_reads(fx.store.path(), now).await, expected, "two fixtures, one answer");

    // An existing database's rolled rows are sealed a few windows per run: 12 hours of minutes.
    let mut runs = Vec::new();
    loop {
        let r = fx.downsample(now);
        if r.sealed_rolled_rows == 0 {
            break;
        }
        runs.push(r.sealed_rolled_rows);
    }
    let per_hour: usize = 60 + 60;
    // The second pod's 40 minutes away leave 4 of its 10 minute buckets empty.
    assert_eq!(runs, [12 * per_hour - 40 + 144 + 140, 12 * per_hour, 2 * per_hour]);
    // 26 whole hours of minutes and one whole day of 10 minutes, per target; the rest open.
    let sealed = [52, 26 * per_hour as i64 - 40, 60, 2, 144 + 140, 2 * 15];
    assert_eq!(rolled_figures(&fx), sealed, "every row in exactly one place");
    assert_eq!(rolled_reads(fx.store.path(), now).await, expected, "the same answers from chunks");

    // A late raw row in a sealed hour of a sealed day: the minute is rolled again (reopening
    // its hour), and so are the 10 minutes from its own on (reopening the day).
    let at = d0 + 3 * HOUR + 5 * MIN + 5_000;
    let minute = bucket_end(at, MIN);
    let before = fx.rows(Table::Rollup, 0).into_iter().find(|r| r.ts_ms == minute).unwrap();
    let mut late = before.clone();
    (late.ts_ms, late.elapsed_ms, late.present_ms) = (at, 5_000, 5_000);
    late.counts.requests = [("500".into(), 77.0)].into();
    let batch = WriteBatch {
        bucket_end_ms: at,
        rows: vec![late.clone()],
        states: vec![],
        points: vec![],
        events: vec![],
        late: true,
    };
    write::write_batch(&mut fx.store.conn().unwrap(), &batch, MIN).unwrap();
    let r = fx.downsample(now);
    assert_eq!(r.rolled_rows, 1, "only the late row's minute has raw rows");
    let rerolled = fx.rows(Table::Rollup, 0).into_iter().find(|r| r.ts_ms == minute).unwrap();
    assert_eq!(rerolled.counts.requests.get("500"), Some(&77.0));
    assert_ne!(rerolled, before);
    // Every target's 10 minutes are rolled again from there, reopening both days.
    assert_eq!(r.sealed_rolled_rows, 60 + 144 + 140, "reopened and sealed again in the same run");
    assert_eq!(rolled_figures(&fx), sealed);
    // The answer key gets the same rows in place: the raw row, the minute, its 10 minutes.
    let c = open.store.conn().unwrap();
    query::replace_row(&c, Table::Raw, &late).unwrap();
    query::replace_row(&c, Table::Rollup, &rerolled).unwrap();
    let ten = bucket_end(at, 10 * MIN);
    let coarse = fx.rows(Table::Coarse, 0).into_iter().find(|r| r.ts_ms == ten).unwrap();
    query::replace_row(&c, Table::Coarse, &coarse).unwrap();
    drop(c);
    let expected_late = rolled_reads(open.store.path(), now).await;
    assert_ne!(expected_late, expected);
    assert_eq!(rolled_reads(fx.store.path(), now).await, expected_late);

    // A rolled row replaced while its window is reopened and not yet sealed again reads the
    // same too (a write straight into a sealed window, as rolling again makes).
    let mut changed = coarse.clone();
    changed.counts.requests.insert("200".into(), 5.0);
    for f in [&fx, &open] {
        query::replace_row(&f.store.conn().unwrap(), Table::Coarse, &changed).unwrap();
    }
    assert_eq!(rolled_figures(&fx)[3..], [1, 140, 144 + 2 * 15], "the target's day reopened");
    let expected_changed = rolled_reads(open.store.path(), now).await;
    assert_ne!(expected_changed, expected_late);
    assert_eq!(rolled_reads(fx.store.path(), now).await, expected_changed, "reopened");
    assert_eq!(fx.downsample(now).sealed_rolled_rows, 144);
    assert_eq!(rolled_figures(&fx), sealed);
    // And after a restart: the chunks are what is on disk (every read opens the file anew).
    fx.store = Store::open(fx.store.path()).unwrap();
    assert_eq!(rolled_reads(fx.store.path(), now).await, expected_changed, "sealed again, restarted");
}
