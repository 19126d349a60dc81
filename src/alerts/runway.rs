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

use crate::budget::quota::{BURN_WINDOW_MS, DEFAULT_STALE_AFTER_MS, QuotaReport, QuotaSample, runway};
use crate::ports::read::{DataSource, PointQuery, SourceError};

/// How far back samples are read: the burn window and a margin for a late bucket.
pub const LOOKBACK_MS: i64 = BURN_WINDOW_MS + 5 * 60_000;

/// The newest quota sample seen per variant, kept between evaluations.
#[derive(Debug, Default)]
pub struct Runways {
    newest: BTreeMap<String, QuotaSample>,
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
        let q = PointQuery { start_ms, end_ms: now_ms, step_ms, variant: None, target_url: None };
        let mut samples: BTreeMap<String, Vec<QuotaSample>> = BTreeMap::new();
        for p in source.points(q).await? {
            if let Some(block) = &p.quota {
                samples.entry(p.variant.clone()).or_default().push(QuotaSample::from_block(p.timestamp, block));
            }
        }
        Ok(self.report(samples, variants, now_ms))
    }

    /// The views from this read's samples and the remembered newest ones.
    fn report(
        &mut self,
        mut samples: BTreeMap<String, Vec<QuotaSample>>,
        variants: &BTreeSet<String>,
        now_ms: i64,
    ) -> QuotaReport {
        for (variant, list) in &samples {
            if let Some(newest) = list.iter().max_by_key(|s| s.at_ms) {
                self.newest.insert(variant.clone(), newest.clone());
            }
        }
        for (variant, newest) in &self.newest {
            samples.entry(variant.clone()).or_insert_with(|| vec![newest.clone()]);
        }
        let mut report: QuotaReport =
            variants.iter().map(|v| (v.clone(), runway(&[], now_ms, DEFAULT_STALE_AFTER_MS))).collect();
        for (variant, list) in samples {
            report.insert(variant, runway(&list, now_ms, DEFAULT_STALE_AFTER_MS));
        }
        report
    }
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
        let later = r.report(BTreeMap::new(), &variants, 1_120_000 + DEFAULT_STALE_AFTER_MS + 1_000);
        assert_eq!(report.len(), 2);
        assert_eq!(later["a"].state, QuotaState::Stale, "the last sample is remembered, not forgotten");
        assert_eq!(later["a"].windows[0].used_ratio, Some(0.2));
        assert_eq!(later["a"].windows[0].burn_per_hour, None, "no pace from a stale sample");
    }
}
