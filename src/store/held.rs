//! Batches held in memory until the database takes them, and the rows of theirs that reads
//! add to the stored ones.
//!
//! Every closed bucket lands here the moment the ticker hands it over ([`super::write`]), and
//! leaves once committed: a batch is always either here or in the database, never in between,
//! however far behind the writer is. While the database refuses writes (disk full, read-only,
//! I/O error, locked), buckets wait here, oldest first, and are retried (README, "When storage
//! fails"). Reads of recent windows take a [`HeldRows`] snapshot *before* reading the database
//! and add the rows of buckets newer than the last committed one, so charts, `/api/metrics` and
//! window sums keep moving with the live stream instead of freezing at a slow or failing disk.
//! A batch committed between the snapshot and the read is in both: its rows are left out of the
//! snapshot's side when the read found the same target and bucket ([`HeldRows::rows_in`] takes
//! the keys read, or the reader skips a held row its scan found).
//! Late batches (rows that reached the ticker after their bucket closed, which happens when the
//! process is starved of CPU) are added too, wherever their bucket is: until the writer took
//! them, reads lacked those rows, so a bucket seconds old could be missing from one read and
//! present in the next. Such a row may be older than stored rows, so ordered readers merge the
//! held rows into their scan by `(ts, target_id)` ([`super::range`]); the writer drops the
//! cache once a late batch is written, as it may touch a bucket already served.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use crate::point::TargetRow;
use crate::ports::ingest::WriteBatch;

/// Failed batches kept for retry: one hour of 5 s ticks.
pub(crate) const MAX_BACKLOG: usize = 720;

/// The writer's backlog, shared with readers.
#[derive(Debug, Default)]
pub(crate) struct Held {
    batches: Mutex<VecDeque<Arc<WriteBatch>>>,
}

impl Held {
    /// Holds a batch behind the others; returns true when the oldest had to go to make room
    /// (an hour of buckets is held already).
    pub(crate) fn push(&self, batch: WriteBatch) -> bool {
        let Ok(mut batches) = self.batches.lock() else { return true };
        batches.push_back(Arc::new(batch));
        batches.len() > MAX_BACKLOG && batches.pop_front().is_some()
    }

    /// The oldest held batch: the next to write.
    pub(crate) fn front(&self) -> Option<Arc<WriteBatch>> {
        self.batches.lock().ok()?.front().cloned()
    }

    /// Forgets the oldest batch once it is committed, after `committed` recorded it, both under
    /// the lock a snapshot takes: a snapshot sees the batch held or the bucket committed.
    pub(crate) fn release_front(&self, committed: impl FnOnce()) {
        if let Ok(mut batches) = self.batches.lock() {
            committed();
            batches.pop_front();
        }
    }

    /// Batches held now.
    pub(crate) fn len(&self) -> usize {
        self.batches.lock().map(|b| b.len()).unwrap_or(0)
    }

    /// True when nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The held batches now, with `committed_until()` read under the same lock.
    pub(crate) fn snapshot(&self, committed_until: impl FnOnce() -> i64) -> HeldRows {
        let Ok(batches) = self.batches.lock() else { return HeldRows::default() };
        let after_ms = committed_until();
        HeldRows { batches: batches.iter().cloned().collect(), after_ms }
    }
}

/// Held batches as of one moment, for one read.
#[derive(Debug, Clone)]
pub(crate) struct HeldRows {
    batches: Vec<Arc<WriteBatch>>,
    /// End of the newest committed bucket when the snapshot was taken; only rows after it count,
    /// but for late batches' (their bucket may be older than committed ones).
    after_ms: i64,
}

impl Default for HeldRows {
    /// Nothing held: reads give the stored rows only.
    fn default() -> Self {
        Self { batches: Vec::new(), after_ms: i64::MAX }
    }
}

/// A stored row's identity: bucket end and target.
pub(crate) type RowKey = (i64, i64);

impl HeldRows {
    /// The oldest bucket a held late batch writes into, if any: buckets from it on may still
    /// change, however long ago they closed (their rows are already in this snapshot, but not
    /// yet in what was read and kept before it arrived).
    pub(crate) fn earliest_late_ms(&self) -> Option<i64> {
        self.batches.iter().filter(|b| b.late).flat_map(|b| b.rows.iter().map(|r| r.ts_ms)).min()
    }

    /// The oldest bucket of the rows [`Self::rows_in`] could add to a read of `(after, until]`:
    /// a read needs the keys it found from there on only (to leave out held rows it has), so
    /// one that adds thousands of stored rows every tick (the alert rules' window sums) keeps
    /// the few of the newest buckets instead of a key per row. `None` when nothing is held.
    pub(crate) fn earliest_in(&self, window: (i64, i64)) -> Option<i64> {
        self.candidates(window).map(|r| r.ts_ms).min()
    }

    /// Held rows a read of `(after, until]` may add: a late batch's whatever their bucket, the
    /// others' only after the last committed bucket.
    fn candidates(&self, (after, until): (i64, i64)) -> impl Iterator<Item = &TargetRow> {
        let committed = after.max(self.after_ms);
        self.batches
            .iter()
            .flat_map(|b| b.rows.iter().map(move |r| (b.late, r)))
            .filter(move |(late, r)| r.ts_ms > if *late { after } else { committed } && r.ts_ms <= until)
            .map(|(_, r)| r)
    }

    /// Held rows with `after < ts <= until` (only `only`'s, when given) that `stored` (the keys
    /// the read found in the database) lacks, in time then target order: a late batch's rows
    /// whatever their bucket, the others' only after the last committed bucket. Two rows of one
    /// target and bucket are merged as the writer would merge them.
    pub(crate) fn rows_in(
        &self,
        (after, until): (i64, i64),
        only: Option<i64>,
        stored: &HashSet<RowKey>,
    ) -> Vec<TargetRow> {
        self.rows_in_ref((after, until), only, stored).into_iter().map(Cow::into_owned).collect()
    }

    /// [`Self::rows_in`] borrowed from the snapshot, copied only where two rows merge: the
    /// window sums add every held row of the current tick at each evaluation, and copying each
    /// (its maps and their keys) was a share of a 500-target process's allocations (heaptrack,
    /// BENCHMARKS.md "Allocations, tenth stop").
    pub(crate) fn rows_in_ref(
        &self,
        (after, until): (i64, i64),
        only: Option<i64>,
        stored: &HashSet<RowKey>,
    ) -> Vec<Cow<'_, TargetRow>> {
        let mut rows: Vec<&TargetRow> = self
            .candidates((after, until))
            .filter(|r| only.is_none_or(|id| id == r.target_id) && !stored.contains(&(r.ts_ms, r.target_id)))
            .collect();
        rows.sort_by_key(|r| (r.ts_ms, r.target_id)); // stable: a later batch's row stays later
        let mut out: Vec<Cow<'_, TargetRow>> = Vec::with_capacity(rows.len());
        for r in rows {
            match out.last_mut() {
                Some(last) if (last.ts_ms, last.target_id) == (r.ts_ms, r.target_id) => last.to_mut().absorb_later(r),
                _ => out.push(Cow::Borrowed(r)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::bucket_end;
    use crate::ports::read::{PointQuery, StrataQuery, WindowQuery};
    use crate::scrape::increase::TargetState;
    use crate::scrape::{parse::parse, reading::read};
    use crate::store::range::{self, RangeRead};
    use crate::store::{Store, query, window, write};

    const T0: i64 = 1_800_000_000_000; // a whole minute
    const MIN: i64 = 60_000;

    fn row(target_id: i64, ts_ms: i64, ok: f64) -> TargetRow {
        let mut r = TargetRow { target_id, ts_ms, variant: "production".into(), ..Default::default() };
        r.counts.requests.insert("200".into(), ok);
        r
    }

    fn batch(bucket_end_ms: i64, rows: Vec<TargetRow>, late: bool) -> WriteBatch {
        WriteBatch { bucket_end_ms, rows, states: Vec::new(), points: Vec::new(), events: Vec::new(), late }
    }

    #[test]
    fn reads_get_uncommitted_rows_in_order_without_what_the_database_already_has() {
        let held = Held::default();
        held.push(batch(10, vec![row(2, 10, 1.0), row(1, 10, 2.0)], false));
        held.push(batch(5, vec![row(1, 5, 9.0)], true));
        held.push(batch(15, vec![row(1, 15, 3.0)], false));
        held.push(batch(15, vec![row(1, 15, 4.0)], false));
        let snap = held.snapshot(|| 5);
        let keys = |rows: &[TargetRow]| rows.iter().map(|r| (r.ts_ms, r.target_id)).collect::<Vec<_>>();
        let all = snap.rows_in((0, 100), None, &HashSet::new());
        assert_eq!(
            keys(&all),
            [(5, 1), (10, 1), (10, 2), (15, 1)],
            "a late batch's row, the others after the committed bucket"
        );
        assert_eq!(all[3].counts.requests["200"], 7.0, "two rows of one bucket merged");
        let committed_meanwhile = HashSet::from([(5, 1), (10, 1), (10, 2)]);
        assert_eq!(keys(&snap.rows_in((0, 100), None, &committed_meanwhile)), [(15, 1)]);
        assert_eq!(keys(&snap.rows_in((10, 100), Some(1), &HashSet::new())), [(15, 1)]);
        assert!(HeldRows::default().rows_in((0, 100), None, &HashSet::new()).is_empty());
        assert_eq!(snap.earliest_late_ms(), Some(5), "only late batches count");
        assert_eq!(HeldRows::default().earliest_late_ms(), None);
    }

    #[test]
    fn the_backlog_keeps_an_hour_and_releases_oldest_first() {
        let held = Held::default();
        for i in 0..MAX_BACKLOG {
            assert!(!held.push(batch(i as i64, Vec::new(), false)));
        }
        assert!(held.push(batch(9_999, Vec::new(), false)), "the oldest makes room");
        assert_eq!(held.front().map(|b| b.bucket_end_ms), Some(1));
        let mut noted = false;
        held.release_front(|| noted = true);
        assert!(noted);
        assert_eq!((held.front().map(|b| b.bucket_end_ms), held.len()), (Some(2), MAX_BACKLOG - 1));
    }

    /// A target's exposition after `i` scrapes: counters that grow, a gauge that moves.
    fn expo(i: i64) -> String {
        let ok = 1000 + 7 * i;
        format!(
            "# TYPE zai_proxy_requests_total counter\nzai_proxy_requests_total{{status_code=\"200\"}} {ok}\n\
             zai_proxy_requests_total{{status_code=\"503\"}} {}\n\
             # TYPE zai_proxy_concurrent_requests gauge\nzai_proxy_concurrent_requests {}\n\
             # TYPE zai_proxy_request_duration_seconds histogram\n\
             zai_proxy_request_duration_seconds_bucket{{le=\"0.5\"}} {ok}\n\
             zai_proxy_request_duration_seconds_bucket{{le=\"+Inf\"}} {ok}\n\
             zai_proxy_request_duration_seconds_sum 10\nzai_proxy_request_duration_seconds_count {ok}\n",
            i / 3,
            i % 5
        )
    }

    /// Two targets scraped every 5 s for 3 minutes: one batch per bucket, as the ticker makes.
    fn batches(store: &Store) -> Vec<WriteBatch> {
        let pairs = [("http://a/metrics", "production"), ("http://b/metrics", "canary")]
            .map(|(u, v)| (u.to_owned(), v.to_owned()))
            .to_vec();
        let ids: Vec<i64> =
            query::register_targets(&store.conn().unwrap(), &pairs, T0).unwrap().iter().map(|t| t.id).collect();
        let mut states = [TargetState::default(), TargetState::default()];
        (1..=36)
            .map(|i| {
                let t = T0 + i * 5_000;
                let rows = (0..2)
                    .map(|k| {
                        let reading = read(&parse(&expo(i * (k as i64 + 1))).unwrap());
                        let mut row = states[k].advance(&reading, t - 300, ids[k], &pairs[k].1);
                        (row.ts_ms, row.present_ms) = (bucket_end(t - 300, 5_000), 5_000);
                        row
                    })
                    .collect();
                batch(t, rows, false)
            })
            .collect()
    }

    /// What every read of the store answers for the last two minutes, as text to compare.
    fn reads(store: &Store, held: &HeldRows) -> Vec<String> {
        let c = store.conn().unwrap();
        let end = T0 + 36 * 5_000;
        let q = |step_ms, raw| RangeRead {
            q: PointQuery { start_ms: end - 2 * MIN, end_ms: end, step_ms, variant: None, target_url: None },
            raw,
            point_ms: 5_000,
            rollup_ms: MIN,
        };
        let json = |pts: Vec<crate::point::Point>| serde_json::to_string(&pts).unwrap();
        let w = WindowQuery::ending(end, 2 * MIN);
        let variants = ["production".to_owned(), "canary".to_owned()];
        let strata = StrataQuery { start_ms: end - 2 * MIN, end_ms: end, variants };
        vec![
            json(range::points_with(&c, &q(5_000, true), held, &mut |_, _, _| {}).unwrap()),
            json(range::points_with(&c, &q(MIN, false), held, &mut |_, _, _| {}).unwrap()),
            format!("{:?}", window::window_sums(&c, &w, (true, (5_000, MIN), i64::MIN), held).unwrap()),
            format!("{:?}", window::strata(&c, &strata, (true, (5_000, MIN)), held).unwrap()),
            store.cache().points_json_with(&c, &q(5_000, true), store.committed_until(), held).unwrap(),
        ]
    }

    fn commit(store: &Store, b: &WriteBatch) {
        write::write_batch(&mut store.conn().unwrap(), b, MIN).unwrap();
        store.note_committed(b.bucket_end_ms);
    }

    #[test]
    fn reads_with_held_batches_answer_what_they_answer_once_those_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db")).unwrap();
        let all = batches(&store);
        for b in &all {
            commit(&store, b);
        }
        let written = reads(&store, &HeldRows::default());

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db")).unwrap();
        let all = batches(&store);
        let (stored, failing) = all.split_at(20);
        for b in stored {
            commit(&store, b);
        }
        for b in failing {
            store.held().push(b.clone());
        }
        let held = store.held_rows();
        assert_eq!(reads(&store, &held), written, "the held batches fill in what is not stored yet");
        assert_ne!(reads(&store, &HeldRows::default()), written, "without them the reads stop at the failure");
        // A batch committed after the snapshot was taken is in both: counted once.
        commit(&store, &failing[0]);
        assert_eq!(reads(&store, &held), written);
    }

    #[test]
    fn a_late_row_older_than_stored_rows_is_read_in_its_place_until_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db")).unwrap();
        for b in &batches(&store) {
            commit(&store, b);
        }
        let written = reads(&store, &HeldRows::default());

        // Target b's scrape of bucket 25 reached the ticker after the bucket closed: it went to
        // the writer as a late batch after bucket 26's, and the writer stopped there.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db")).unwrap();
        let mut all = batches(&store);
        let late_row = all[24].rows.remove(1);
        let late = batch(all[24].bucket_end_ms, vec![late_row], true);
        for b in &all[..26] {
            commit(&store, b);
        }
        store.held().push(late.clone());
        for b in &all[26..] {
            store.held().push(b.clone());
        }
        let held = store.held_rows();
        assert_eq!(reads(&store, &held), written, "the late row is read in its bucket, before stored rows");
        commit(&store, &late);
        assert_eq!(reads(&store, &held), written, "written after the snapshot: counted once");
    }
}
