//! The window statistics of the rules, read bucket by bucket and kept between evaluations.
//!
//! Reading a rule's whole window at every evaluation decoded every raw row of every target in
//! it (a 5-minute window at 100 targets: 6,000 rows every 5 s); the whole-process profile of
//! issue 22 found those reads to be the largest share of the process' instructions, above the
//! scraping itself. The store's raw rows are keyed by their bucket's end, so a window's sums
//! are the sums of its buckets: a bucket older than [`SETTLED_MS`] is read once, on its own,
//! and kept; only the buckets after it are read at each evaluation (rows may still arrive
//! there: a scrape that completed just before its bucket closed is merged late).
//!
//! A source that says which buckets it has sealed ([`DataSource::sealed_through`], the store:
//! about 11 s after a bucket closed) has its sealed buckets kept as soon as they are sealed,
//! while its generation stays: a late row merged into one moves the generation and the buckets
//! kept that way are read again. Only the seconds after the sealed bound are read at each
//! evaluation then, not the last 30 s (in the whole-process profile of issue 22's ninth stop,
//! those re-reads were the largest share of the alert engine's).
//!
//! Only for a source whose window sums add up this way (the store; not the PromQL source
//! mode, whose `increase()` extrapolates within each range), and only for windows the store
//! answers from raw rows (its grid width is a raw point's). The sums are added in another
//! order than one whole read adds them, so a fractional total (cost, latency sums) can differ
//! from the page's in its last bits.

use std::collections::{BTreeMap, BTreeSet};

use crate::ports::read::{DataSource, SourceError, WindowQuery, WindowStats, WindowSums};

/// Buckets ending this long before an evaluation are settled: read once and kept.
pub(crate) const SETTLED_MS: i64 = 30_000;

/// Most buckets read one by one in one evaluation (the first one fills a whole window): a
/// window of more buckets is read whole instead.
const MAX_BUCKET_READS: i64 = 720;

/// Each settled or sealed bucket's sums per variant, by bucket end.
#[derive(Debug, Default)]
pub(crate) struct BucketSums {
    /// Width of the buckets kept; another width empties the cache.
    step_ms: i64,
    buckets: BTreeMap<i64, Bucket>,
    /// The source's generation at the last evaluation: the buckets kept because they were
    /// sealed (not yet settled) hold while it stays.
    generation: Option<u64>,
}

/// One bucket's sums.
#[derive(Debug)]
struct Bucket {
    sums: BTreeMap<String, WindowSums>,
    /// Read, or found unchanged, once it was [`SETTLED_MS`] old: kept whatever the generation
    /// does (as every kept bucket was before sealed ones were kept).
    settled: bool,
}

impl BucketSums {
    /// Each variant's statistics over each of `windows` ending at `now_ms`, as
    /// [`DataSource::window_stats`] answers them; a window that cannot be answered from the
    /// buckets is read whole. A window that cannot be read is left out and the error returned.
    pub(crate) async fn window_stats(
        &mut self,
        source: &dyn DataSource,
        windows: &BTreeSet<i64>,
        now_ms: i64,
    ) -> (BTreeMap<i64, BTreeMap<String, WindowStats>>, Option<SourceError>) {
        let mut out = BTreeMap::new();
        let mut error = None;
        let step = source.grid_ms((now_ms - 1, now_ms), 0, now_ms);
        let settled = (now_ms - SETTLED_MS).div_euclid(step.max(1)) * step;
        // The generation before the bound and the bound before the rows: a late row written
        // after either moves the generation, and the next evaluation reads its bucket again.
        let generation = source.strata_generation();
        let sealed = match (generation, source.sealed_through(now_ms)) {
            (Some(_), Some(ms)) if step > 0 => ms.min(now_ms).div_euclid(step).saturating_mul(step),
            _ => i64::MIN,
        };
        let by_bucket: Vec<i64> = windows
            .iter()
            .copied()
            .filter(|&w| {
                step > 0
                    && w > now_ms - settled
                    && (w / step) <= MAX_BUCKET_READS
                    && source.grid_ms((now_ms - w, now_ms), 0, now_ms) == step
            })
            .collect();
        for &w in windows.iter().filter(|w| !by_bucket.contains(w)) {
            match source.window_stats(now_ms, w).await {
                Ok(stats) => {
                    out.insert(w, stats);
                }
                Err(e) => error = Some(e),
            }
        }
        let Some(&longest) = by_bucket.iter().max() else {
            self.buckets.clear();
            return (out, error);
        };
        self.forget_unsealed(generation, settled);
        let kept_until = settled.max(sealed);
        if let Err(e) = self.fill(source, step, (now_ms - longest, kept_until), settled).await {
            return (out, Some(e));
        }
        let recent = match source.window(WindowQuery { start_ms: kept_until, end_ms: now_ms, target_url: None }).await {
            Ok(sums) => sums,
            Err(e) => return (out, Some(e)),
        };
        for w in by_bucket {
            let start = now_ms - w;
            let mut sums: BTreeMap<String, WindowSums> = BTreeMap::new();
            let kept = self.buckets.range(start + 1..=kept_until).flat_map(|(_, b)| &b.sums);
            for (variant, s) in kept.chain(&recent) {
                match sums.get_mut(variant) {
                    Some(acc) => {
                        acc.counts.add(&s.counts);
                        acc.data_from_ms = acc.data_from_ms.min(s.data_from_ms);
                    }
                    None => {
                        sums.insert(variant.clone(), s.clone());
                    }
                }
            }
            let stats = sums
                .into_iter()
                .map(|(variant, mut s)| {
                    s.data_from_ms = s.data_from_ms.max(start);
                    let stats = WindowStats::from_sums(&s, now_ms);
                    (variant, stats)
                })
                .collect();
            out.insert(w, stats);
        }
        (out, error)
    }

    /// Drops the buckets kept only because they were sealed when the generation moved (those
    /// no longer sealed, a late batch waiting to be written into them, [`Self::fill`] drops);
    /// those that held until they are [`SETTLED_MS`] old are settled now, as a read of them now
    /// would be.
    fn forget_unsealed(&mut self, generation: Option<u64>, settled: i64) {
        let moved = generation.is_none() || generation != self.generation;
        self.buckets.retain(|_, b| b.settled || !moved);
        for (_, b) in self.buckets.range_mut(..=settled) {
            b.settled = true;
        }
        self.generation = generation;
    }

    /// Reads every bucket of `(from, until]` not kept yet (those up to `settled` settled, the
    /// others sealed) and forgets the older ones.
    async fn fill(
        &mut self,
        source: &dyn DataSource,
        step: i64,
        (from, until): (i64, i64),
        settled: i64,
    ) -> Result<(), SourceError> {
        if step != self.step_ms {
            self.buckets.clear();
            self.step_ms = step;
        }
        self.buckets.retain(|&end, _| end > from && end <= until);
        let first = (from.div_euclid(step) + 1) * step;
        for end in (first..=until).step_by(usize::try_from(step).unwrap_or(usize::MAX)) {
            if self.buckets.contains_key(&end) {
                continue;
            }
            let sums = source.window(WindowQuery { start_ms: end - step, end_ms: end, target_url: None }).await?;
            self.buckets.insert(end, Bucket { sums, settled: end <= settled });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::point::{Counts, Point};
    use crate::ports::BoxFuture;
    use crate::ports::read::{ChartData, PointQuery};

    type Answer<'a, T> = BoxFuture<'a, Result<T, SourceError>>;

    /// One row: bucket end, variant, requests, 5xx, rejections.
    type Row = (i64, &'static str, f64, f64, f64);

    /// Rows as the store keeps them: one per target and 5 s bucket, stamped with the bucket's
    /// end; a window sums the rows stamped inside it, as the store's `window_sums` does.
    #[derive(Debug, Default)]
    struct Rows {
        rows: Mutex<Vec<Row>>,
        reads: Mutex<Vec<(i64, i64)>>,
        /// Buckets are sealed this long after the clock (the store: two point widths and a
        /// second), with a generation; `None`: the source does not say.
        sealing: Option<i64>,
        generation: Mutex<u64>,
        /// The oldest bucket of a late batch held, not written yet: open until written.
        late: Mutex<Option<i64>>,
        /// Nothing committed yet: nothing sealed (the store says `i64::MIN`).
        unsealed: Mutex<bool>,
    }

    impl DataSource for Rows {
        fn variants(&self) -> Answer<'_, BTreeSet<String>> {
            Box::pin(std::future::ready(Ok(BTreeSet::new())))
        }

        fn grid_ms(&self, (start, end): (i64, i64), _min_step_ms: i64, _now_ms: i64) -> i64 {
            if end - start <= 3_600_000 { 5_000 } else { 60_000 }
        }

        fn points(&self, _q: PointQuery) -> Answer<'_, Vec<Point>> {
            Box::pin(std::future::ready(Ok(Vec::new())))
        }

        fn window(&self, q: WindowQuery) -> Answer<'_, BTreeMap<String, WindowSums>> {
            self.reads.lock().unwrap().push((q.start_ms, q.end_ms));
            let mut out: BTreeMap<String, WindowSums> = BTreeMap::new();
            let mut rows = self.rows.lock().unwrap().clone();
            rows.sort_by_key(|r| r.0);
            for (ts, variant, requests, errors, rejections) in rows {
                if ts <= q.start_ms || ts > q.end_ms {
                    continue;
                }
                let mut c = Counts::default();
                c.requests.insert("200".into(), requests - errors);
                c.requests.insert("503".into(), errors);
                c.rejections = rejections;
                let from = (ts - 5_000).max(q.start_ms);
                let s = out
                    .entry(variant.into())
                    .or_insert_with(|| WindowSums { data_from_ms: from, ..Default::default() });
                s.counts.add(&c);
                s.data_from_ms = s.data_from_ms.min(from);
            }
            Box::pin(std::future::ready(Ok(out)))
        }

        fn chart(&self, _q: PointQuery) -> Answer<'_, ChartData> {
            Box::pin(std::future::ready(Ok(ChartData::default())))
        }

        fn strata_generation(&self) -> Option<u64> {
            self.sealing.map(|_| *self.generation.lock().unwrap())
        }

        fn sealed_through(&self, now_ms: i64) -> Option<i64> {
            let late = self.late.lock().unwrap().map_or(i64::MAX, |ts| ts - 1);
            let none = if *self.unsealed.lock().unwrap() { i64::MIN } else { i64::MAX };
            self.sealing.map(|lag| (now_ms - lag).min(late).min(none))
        }

        fn series(&self, _end_ms: i64, _range_ms: i64, _step_ms: i64) -> Answer<'_, Vec<Point>> {
            Box::pin(std::future::ready(Ok(Vec::new())))
        }
    }

    /// Evaluates `kept` at `now` and checks each window against a whole read of it; the reads
    /// the evaluation made.
    async fn evaluate(
        kept: &mut BucketSums,
        source: &Rows,
        windows: &BTreeSet<i64>,
        (now, tick): (i64, i64),
    ) -> Vec<(i64, i64)> {
        let before = source.reads.lock().unwrap().len();
        let (got, error) = kept.window_stats(source, windows, now).await;
        let made: Vec<(i64, i64)> = source.reads.lock().unwrap()[before..].to_vec();
        assert!(error.is_none());
        for &w in windows {
            let whole = source.window_stats(now, w).await.unwrap();
            assert_eq!(got[&w], whole, "tick {tick}, window {w}");
        }
        made
    }

    #[tokio::test]
    async fn buckets_kept_and_recent_ones_read_answer_as_whole_windows_do() {
        let source = Rows::default();
        let windows = BTreeSet::from([60_000, 300_000, 10_000, 2 * 3_600_000]);
        let mut kept = BucketSums::default();
        let t0 = 1_700_000_000_000_i64;
        for tick in 0..200_i64 {
            let bucket = t0 + tick * 5_000;
            {
                let mut rows = source.rows.lock().unwrap();
                // Two variants; the canary starts later and skips a few buckets.
                rows.push((bucket, "production", (10 + tick % 7) as f64, (tick % 3) as f64, 0.0));
                if tick > 30 && tick % 11 != 0 {
                    rows.push((bucket, "canary", 4.0, (tick % 2) as f64, 1.0));
                }
                // A late row: a scrape merged into a bucket 20 s back, still within the recent reads.
                if tick % 13 == 0 && tick > 4 {
                    rows.push((bucket - 20_000, "production", 5.0, 5.0, 0.0));
                }
            }
            let now = bucket + 500;
            let made = evaluate(&mut kept, &source, &windows, (now, tick)).await;
            if tick == 0 {
                assert!(made.len() > 50, "the first evaluation reads each settled bucket of 5 min: {}", made.len());
            } else {
                // One newly settled bucket and the recent 30 s; the 10 s window (all recent)
                // and the 2 h one (not raw rows) are read whole.
                let settled = (now - SETTLED_MS).div_euclid(5_000) * 5_000;
                let expected =
                    [(now - 10_000, now), (now - 2 * 3_600_000, now), (settled - 5_000, settled), (settled, now)];
                assert_eq!(made, expected, "tick {tick}");
            }
        }
    }

    /// A source that seals buckets (the store) has each bucket kept from when it is sealed,
    /// not 30 s old: each evaluation reads the newly sealed bucket and the seconds after it.
    /// A late row written into a sealed bucket moves the generation, and a late batch still
    /// held keeps its buckets open: either way the buckets kept since are read again, and
    /// every window answers as a whole read does (this fails with the generation or the held
    /// batch ignored).
    #[tokio::test]
    async fn sealed_buckets_are_kept_until_a_late_row_reaches_them() {
        let source = Rows { sealing: Some(11_000), unsealed: Mutex::new(true), ..Default::default() };
        let windows = BTreeSet::from([60_000, 300_000]);
        let mut kept = BucketSums::default();
        let t0 = 1_700_000_000_000_i64;
        // The first evaluation comes before anything is committed: nothing is sealed then.
        let mut quiet_since = 1;
        for tick in 0..150_i64 {
            *source.unsealed.lock().unwrap() = tick == 0;
            let bucket = t0 + tick * 5_000;
            let mut event = false;
            {
                let mut rows = source.rows.lock().unwrap();
                rows.push((bucket, "production", (10 + tick % 7) as f64, (tick % 3) as f64, 0.0));
                if tick > 30 {
                    rows.push((bucket, "canary", 4.0, (tick % 2) as f64, 1.0));
                }
                if tick % 9 == 0 && tick > 4 {
                    // Written late into a sealed bucket: the store moves its generation.
                    rows.push((bucket - 20_000, "production", 5.0, 5.0, 0.0));
                    *source.generation.lock().unwrap() += 1;
                    event = true;
                }
                let mut late = source.late.lock().unwrap();
                if tick % 7 == 3 {
                    // Held: read with the stored rows, not written yet.
                    rows.push((bucket - 20_000, "canary", 3.0, 3.0, 0.0));
                    *late = Some(bucket - 20_000);
                    event = true;
                } else if late.take().is_some() {
                    *source.generation.lock().unwrap() += 1;
                    event = true;
                }
            }
            if event {
                quiet_since = tick;
            }
            let now = bucket + 500;
            let made = evaluate(&mut kept, &source, &windows, (now, tick)).await;
            if tick > quiet_since {
                let sealed = (now - 11_000).div_euclid(5_000) * 5_000;
                assert_eq!(made, [(sealed - 5_000, sealed), (sealed, now)], "tick {tick}");
            }
        }
    }
}
