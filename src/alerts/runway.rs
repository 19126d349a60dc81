//! Quota runway at each evaluation: the quota blocks of the points of the last
//! [`LOOKBACK_MS`] become each variant's quota samples, and [`budget::quota::runway`] turns
//! them into the view `/api/quota`, the overview and `quota_runway_seconds` share.
//!
//! The newest sample of each variant is remembered after it leaves the look-back, so a proxy
//! that stopped polling (or stopped being scraped) reads `stale` with its last values, not
//! `unavailable`, until zai-dash restarts; a variant that never reported quota is
//! `unavailable`.
//!
//! [`budget::quota::runway`]: crate::budget::quota::runway

use std::collections::{BTreeMap, BTreeSet};

use crate::budget::quota::{BURN_WINDOW_MS, DEFAULT_STALE_AFTER_MS, QuotaReport, QuotaSample, runway, runway_of};
use crate::ports::read::{DataSource, PointQuery, SourceError};

/// How far back samples are read: the burn window and a margin for a late bucket.
pub const LOOKBACK_MS: i64 = BURN_WINDOW_MS + 5 * 60_000;

/// How far before the previous read's end each evaluation reads again (from the grid step at
/// or before it): buckets this recent may still change (a scrape that completed just before
/// its bucket closed, merged late), older ones are kept from earlier reads. As long as the
/// window statistics keep open ([`super::windows::SETTLED_MS`]).
const REREAD_MS: i64 = super::windows::SETTLED_MS;

/// The newest quota sample seen per variant, kept between evaluations, and the samples of the
/// look-back read so far.
#[derive(Debug, Default)]
pub struct Runways {
    newest: BTreeMap<String, QuotaSample>,
    /// Each variant's samples by time, from the reads so far (within the look-back).
    kept: BTreeMap<String, BTreeMap<i64, QuotaSample>>,
    /// End and grid step of the last read. An evaluation reads only the points after it (less
    /// [`REREAD_MS`]) instead of the whole look-back: the whole read decoded every raw row of
    /// 20 minutes at every tick, the largest share of the process' CPU in the whole-process
    /// profile of issue 22 once the rows had piled up.
    read_until: Option<(i64, i64)>,
    /// The source's generation and sealed bound ([`DataSource::sealed_through`]) before the
    /// last read: while the generation stays, the points up to the bound are not read again
    /// (only [`REREAD_MS`] of them were before: about twice as many rows each evaluation).
    sealed: Option<(u64, i64)>,
}

impl Runways {
    /// Every variant's quota view at `now_ms` (`variants`: every variant known, so each has an
    /// entry, `unavailable` without quota).
    pub async fn read(
        &mut self,
        source: &dyn DataSource,
        variants: &BTreeSet<String>,
        now_ms: i64,
    ) -> Result<QuotaReport, SourceError> {
        let start_ms = now_ms - LOOKBACK_MS;
        let step_ms = source.grid_ms((start_ms, now_ms), 0, now_ms);
        // Where this read starts: after the kept samples, which must be on the same grid and
        // not ahead of the clock; a grid-aligned start, so its first point is a whole bucket.
        // The generation before the bound and the bound before the read, as the rules' windows
        // take them ([`super::windows`]).
        let sealed = source.strata_generation().zip(source.sealed_through(now_ms));
        let from_ms = match self.read_until {
            Some((until, step)) if step == step_ms && step > 0 && until <= now_ms && until - REREAD_MS > start_ms => {
                let reread = (until - REREAD_MS).div_euclid(step) * step;
                // Points up to the bound sealed at the last read, and still sealed now, are
                // what they were then, unless the generation moved.
                match (self.sealed, sealed) {
                    (Some((was, then)), Some((is, now))) if was == is => {
                        reread.max(then.min(now).min(until).div_euclid(step).saturating_mul(step))
                    }
                    _ => reread,
                }
            }
            _ => {
                self.kept.clear();
                start_ms
            }
        };
        let q = PointQuery { start_ms: from_ms, end_ms: now_ms, step_ms, variant: None, target_url: None };
        let points = source.quota_points(q).await?;
        self.read_until = Some((now_ms, step_ms));
        self.sealed = sealed;
        for kept in self.kept.values_mut() {
            kept.retain(|at, _| *at > start_ms && *at <= from_ms);
        }
        for p in points {
            let sample = QuotaSample::from_block(p.end_ms, &p.quota);
            match self.kept.get_mut(&p.variant) {
                Some(list) => list.insert(p.end_ms, sample),
                None => self.kept.entry(p.variant).or_default().insert(p.end_ms, sample),
            };
        }
        self.kept.retain(|_, list| !list.is_empty());
        // Lent, not copied: the look-back holds 240 samples per variant, each a few strings.
        let samples = self.kept.iter().map(|(v, list)| (v.as_str(), list.values().collect())).collect();
        Ok(report(&mut self.newest, samples, variants, now_ms))
    }

    /// The views from this read's samples and the remembered newest ones.
    #[cfg(test)]
    fn report(
        &mut self,
        samples: BTreeMap<String, Vec<QuotaSample>>,
        variants: &BTreeSet<String>,
        now_ms: i64,
    ) -> QuotaReport {
        let lent = samples.iter().map(|(v, list)| (v.as_str(), list.iter().collect())).collect();
        report(&mut self.newest, lent, variants, now_ms)
    }
}

/// The views from a read's samples (`newest`: the newest sample remembered per variant, updated
/// from them, and standing in for a variant without any).
fn report<'a>(
    newest: &'a mut BTreeMap<String, QuotaSample>,
    mut samples: BTreeMap<&'a str, Vec<&'a QuotaSample>>,
    variants: &BTreeSet<String>,
    now_ms: i64,
) -> QuotaReport {
    for (variant, list) in &samples {
        if let Some(latest) = list.iter().max_by_key(|s| s.at_ms) {
            match newest.get_mut(*variant) {
                Some(kept) if kept == *latest => {}
                Some(kept) => *kept = (*latest).clone(),
                None => {
                    newest.insert((*variant).to_owned(), (*latest).clone());
                }
            }
        }
    }
    for (variant, latest) in newest.iter() {
        samples.entry(variant.as_str()).or_insert_with(|| vec![latest]);
    }
    let mut report: QuotaReport =
        variants.iter().map(|v| (v.clone(), runway(&[], now_ms, DEFAULT_STALE_AFTER_MS))).collect();
    for (variant, list) in samples {
        report.insert(variant.to_owned(), runway_of(&list, now_ms, DEFAULT_STALE_AFTER_MS));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::quota::{QuotaState, WindowReading};

    fn sample(at_ms: i64, used: f64) -> QuotaSample {
        QuotaSample {
            at_ms,
            sample_age_seconds: Some(0.0),
            windows: vec![WindowReading {
                window: "five_hour".into(),
                limit_type: Some("credit_limit".into()),
                used_ratio: Some(used),
                reset_at_ms: Some(100_000_000),
            }],
        }
    }

    /// Points of two variants every 5 s, one of them with quota, as a store would answer them
    /// (each bucket in `(start, end]`), remembering the ranges asked for.
    #[derive(Debug, Default)]
    struct History {
        asked: std::sync::Mutex<Vec<(i64, i64)>>,
        /// Buckets are sealed this long after the clock, with a generation (as the store
        /// seals them); `None`: the source does not say.
        sealing: Option<i64>,
        generation: std::sync::Mutex<u64>,
        /// Usage of the buckets a late row changed, by bucket end.
        changed: std::sync::Mutex<BTreeMap<i64, f64>>,
    }

    impl History {
        fn point(&self, ts: i64, variant: &str) -> crate::point::Point {
            let usage = self.changed.lock().unwrap().get(&ts).copied().unwrap_or(ts as f64 / 1e10);
            let quota = (variant == "a").then(|| crate::point::Quota {
                five_hour: Some(crate::point::QuotaWindow {
                    usage_ratio: Some(usage),
                    reset_time_unix: Some(1e9),
                    ..Default::default()
                }),
                sample_age_seconds: Some(1.0),
                ..Default::default()
            });
            crate::point::Point { timestamp: ts, variant: variant.into(), quota, ..Default::default() }
        }
    }

    impl DataSource for History {
        fn variants(&self) -> crate::ports::BoxFuture<'_, Result<BTreeSet<String>, SourceError>> {
            Box::pin(std::future::ready(Ok(BTreeSet::new())))
        }

        fn grid_ms(&self, _window: (i64, i64), _min_step_ms: i64, _now_ms: i64) -> i64 {
            5_000
        }

        fn points(&self, _q: PointQuery) -> crate::ports::BoxFuture<'_, Result<Vec<crate::point::Point>, SourceError>> {
            panic!("the runway reads only each bucket's quota: quota_points, which costs the store less");
        }

        fn quota_points(
            &self,
            q: PointQuery,
        ) -> crate::ports::BoxFuture<'_, Result<Vec<crate::ports::read::QuotaPoint>, SourceError>> {
            self.asked.lock().unwrap().push((q.start_ms, q.end_ms));
            let first = (q.start_ms.div_euclid(5_000) + 1) * 5_000;
            let points =
                (first..=q.end_ms).step_by(5_000).flat_map(|ts| [self.point(ts, "a"), self.point(ts, "b")]).collect();
            Box::pin(std::future::ready(Ok(crate::ports::read::quota_of(points))))
        }

        fn window(
            &self,
            _q: crate::ports::read::WindowQuery,
        ) -> crate::ports::BoxFuture<'_, Result<BTreeMap<String, crate::ports::read::WindowSums>, SourceError>>
        {
            Box::pin(std::future::ready(Ok(BTreeMap::new())))
        }

        fn chart(
            &self,
            _q: PointQuery,
        ) -> crate::ports::BoxFuture<'_, Result<crate::ports::read::ChartData, SourceError>> {
            Box::pin(std::future::ready(Ok(Default::default())))
        }

        fn series(
            &self,
            _end_ms: i64,
            _range_ms: i64,
            _step_ms: i64,
        ) -> crate::ports::BoxFuture<'_, Result<Vec<crate::point::Point>, SourceError>> {
            Box::pin(std::future::ready(Ok(Vec::new())))
        }

        fn strata_generation(&self) -> Option<u64> {
            self.sealing.map(|_| *self.generation.lock().unwrap())
        }

        fn sealed_through(&self, now_ms: i64) -> Option<i64> {
            self.sealing.map(|lag| now_ms - lag)
        }
    }

    /// A source that seals buckets (the store) is read again only after what was sealed at
    /// the previous evaluation, until a late row moves its generation: then from `REREAD_MS`
    /// before, and the changed bucket's sample is the new one (this fails with the generation
    /// ignored).
    #[tokio::test]
    async fn a_sealing_source_is_read_after_its_sealed_bound_until_its_generation_moves() {
        let source = History { sealing: Some(11_000), ..Default::default() };
        let variants = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
        let mut kept = Runways::default();
        let t0 = 1_700_000_000_000_i64 + 1_234;
        for i in 0..120 {
            let now = t0 + i * 5_000;
            let moved = i % 10 == 5;
            if moved {
                // A bucket read at the last evaluation, sealed since: a late row changes it.
                let bucket = (now - 20_000).div_euclid(5_000) * 5_000;
                source.changed.lock().unwrap().insert(bucket, i as f64 / 100.0);
                *source.generation.lock().unwrap() += 1;
            }
            let before = source.asked.lock().unwrap().len();
            let report = kept.read(&source, &variants, now).await.unwrap();
            let start = source.asked.lock().unwrap()[before].0;
            let mut whole = Runways::default();
            assert_eq!(report, whole.read(&source, &variants, now).await.unwrap(), "evaluation {i}");
            assert_eq!(kept.kept, whole.kept, "evaluation {i}");
            let previous = now - 5_000;
            if i > 0 && moved {
                assert_eq!(start, (previous - REREAD_MS).div_euclid(5_000) * 5_000, "evaluation {i}");
            } else if i > 0 {
                assert_eq!(start, (previous - 11_000).div_euclid(5_000) * 5_000, "evaluation {i}");
            }
        }
    }

    #[tokio::test]
    async fn later_evaluations_read_only_the_recent_points_and_report_as_a_whole_read_would() {
        let source = History::default();
        let variants = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
        let mut kept = Runways::default();
        let t0 = 1_700_000_000_000_i64 + 1_234;
        for i in 0..400 {
            let now = t0 + i * 5_000;
            let report = kept.read(&source, &variants, now).await.unwrap();
            let whole = Runways::default().read(&source, &variants, now).await.unwrap();
            assert_eq!(report, whole, "evaluation {i}");
        }
        let asked = source.asked.lock().unwrap().clone();
        // Every second query is the whole read's; the incremental ones start `REREAD_MS` (on
        // the grid) before the previous evaluation, after the first evaluation.
        let (start, end) = asked[2];
        assert_eq!(end, t0 + 5_000);
        assert_eq!(start, (t0 - REREAD_MS).div_euclid(5_000) * 5_000, "read again from REREAD_MS before: {asked:?}");
        assert!(asked.iter().step_by(2).skip(1).all(|(s, e)| e - s <= REREAD_MS + 10_000));
        // The clock stepping back reads the whole look-back again.
        let now = t0 + 100 * 5_000;
        let back = kept.read(&source, &variants, now).await.unwrap();
        assert_eq!(back, Runways::default().read(&source, &variants, now).await.unwrap());
        assert_eq!(source.asked.lock().unwrap().iter().rev().nth(1).unwrap().0, now - LOOKBACK_MS);
    }

    #[test]
    fn a_variant_without_quota_is_unavailable_and_one_that_went_quiet_is_stale() {
        let mut r = Runways::default();
        let variants = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
        let first = BTreeMap::from([("a".to_owned(), vec![sample(1_000_000, 0.1), sample(1_120_000, 0.2)])]);
        let report = r.report(first, &variants, 1_120_000);
        assert_eq!(report["a"].state, QuotaState::Fresh);
        assert!(report["a"].windows[0].burn_per_hour.is_some());
        assert_eq!(report["b"].state, QuotaState::Unavailable);
        assert!(report["b"].windows.is_empty());
        let next = BTreeMap::from([("a".to_owned(), vec![sample(1_125_000, 0.25)])]);
        assert_eq!(r.report(next, &variants, 1_125_000)["a"].windows[0].used_ratio, Some(0.25));
        let later = r.report(BTreeMap::new(), &variants, 1_125_000 + DEFAULT_STALE_AFTER_MS + 1_000);
        assert_eq!(report.len(), 2);
        assert_eq!(later["a"].state, QuotaState::Stale, "the last sample is remembered, not forgotten");
        assert_eq!(later["a"].windows[0].used_ratio, Some(0.25), "the newest of the samples seen");
        assert_eq!(later["a"].windows[0].burn_per_hour, None, "no pace from a stale sample");
    }
}
