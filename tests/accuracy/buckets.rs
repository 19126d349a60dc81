//! Which points an answer must hold and which it may hold, from the times zai-dash actually
//! scraped each pod (the fakes log them).
//!
//! A variant has a point in every bucket in which a scrape of one of its pods completed (a
//! pod's first scrape, a baseline, too) and in no other. A scrape completes a few milliseconds
//! after the fake rendered it ([`AMBIG_MS`] at most), so a bucket is *required* when a render
//! falls inside it at least that long before its end, and *allowed* when a render falls inside
//! it or just before it. Each answer is checked for
//! - every required bucket (a bucket dropped across a pod replacement, a death or a reset, or
//!   moved by a step, is missing),
//! - no point outside the allowed ones (off the bucket grid, outside the window, before the
//!   data, in the future, a variant no pod has),
//! - no bucket twice.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use zai_dash::clock::bucket_end;

use super::ledger::Ledger;
use super::model::AMBIG_MS;
use super::verify::{Run, ctx};

/// What one answer is held to: its bucket width, the span `(after, until]` its points may lie
/// in, and the span in which every required bucket must be there.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub width: i64,
    pub may: (i64, i64),
    pub must: (i64, i64),
}

impl Expect {
    /// A `range=` read of `range` ms at `width`, sent at `sent` and answered at `at` (zai-dash's
    /// clock read falls between): the window is `(now - range, now]`, its first bucket the one
    /// holding `now - range + 1`; buckets are required up to `settled` (sealed by then).
    /// `ahead`: whether the newest bucket may end after `now` (a `step` wider than a raw point
    /// groups the open raw bucket's predecessors under a future end).
    pub fn range_read(width: i64, range: i64, (sent, at): (i64, i64), settled: i64, ahead: bool) -> Self {
        let after = |now: i64| bucket_end(now - range + 1, width) - width;
        let newest = if ahead { bucket_end(at, width) } else { at };
        Self { width, may: (after(sent), newest), must: (after(at), settled) }
    }
}

fn rel(t: i64, r0: i64) -> String {
    format!("R0{:+.1}s", (t - r0) as f64 / 1000.0)
}

/// Bucket ends at `width` in `(from, until]` holding a render of one of `variant`'s pods: all
/// such buckets (`surely = false`) or only those the scrape surely completed in.
pub fn with_scrapes(run: &Run, variant: &str, width: i64, (from, until): (i64, i64), surely: bool) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for pod in run.pods_of(variant) {
        for &r in &pod.dash {
            // The scrape completed in `[r, r + AMBIG_MS)`: in one of these two buckets.
            let (first, last) = (bucket_end(r, width), bucket_end(r + AMBIG_MS, width));
            let uncertain = pod.dash_uncertain.iter().any(|(a, b)| (*a..=*b).contains(&r));
            let ends = match surely {
                true if first == last && !uncertain => vec![first],
                true => vec![],
                false => vec![first, last],
            };
            out.extend(ends.into_iter().filter(|e| *e > from && *e <= until));
        }
    }
    out
}

/// Checks the buckets of one answer (`points` as returned, duplicates and all): per variant,
/// every required bucket there, none outside the allowed ones, none twice.
pub fn check(ledger: &mut Ledger, run: &Run, area: &str, points: &[Value], e: Expect, r0: i64) {
    let mut by_variant: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut malformed = Vec::new();
    for p in points {
        match (p["variant"].as_str(), p["timestamp"].as_i64()) {
            (Some(v), Some(ts)) => by_variant.entry(v.to_owned()).or_default().push(ts),
            _ => malformed.push(p.to_string()),
        }
    }
    let known = run.variants();
    let unknown: Vec<&String> = by_variant.keys().filter(|v| !known.contains(v.as_str())).collect();
    let c0 = ctx(Some(2), &format!("bucket presence: {area}"), "-", "every variant");
    ledger.fact(
        &c0,
        "buckets",
        "points name a known variant and a timestamp",
        malformed.is_empty() && unknown.is_empty(),
        format!("unknown variants {unknown:?}, points without variant or timestamp: {malformed:?}"),
    );
    for variant in known {
        let got: Vec<i64> = by_variant.get(variant).cloned().unwrap_or_default();
        let set: BTreeSet<i64> = got.iter().copied().collect();
        let required = with_scrapes(run, variant, e.width, e.must, true);
        let allowed = with_scrapes(run, variant, e.width, e.may, false);
        let missing: Vec<String> = required.difference(&set).map(|t| rel(*t, r0)).collect();
        let extra: Vec<String> =
            set.iter().filter(|t| t.rem_euclid(e.width) != 0 || !allowed.contains(t)).map(|t| rel(*t, r0)).collect();
        let twice: Vec<String> =
            set.iter().filter(|t| got.iter().filter(|g| g == t).count() > 1).map(|t| rel(*t, r0)).collect();
        let scenario = run.scenario(variant, e.must.0, e.must.1);
        let c = ctx(Some(2), &format!("bucket presence: {area}"), &scenario, variant);
        ledger.fact(
            &c,
            "buckets",
            "every bucket with scrapes is there",
            missing.is_empty(),
            format!("{} of {} required buckets missing: {missing:?}", missing.len(), required.len()),
        );
        ledger.fact(
            &c,
            "buckets",
            "no bucket without scrapes",
            extra.is_empty(),
            format!("{} points in no allowed bucket (width {} s): {extra:?}", extra.len(), e.width / 1000),
        );
        ledger.fact(&c, "buckets", "no bucket twice", twice.is_empty(), format!("buckets answered twice: {twice:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::harness::fake::Life;
    use crate::harness::model::PodRun;
    use crate::harness::pods;

    /// One production pod scraped every 500 ms from 100.2 s to 110 s.
    fn run() -> Run {
        let life = Life { born_ms: 0, up_from_ms: 0, down_from_ms: None, reset_ms: None };
        let dash: Vec<i64> = (0..20).map(|i| 100_200 + 500 * i).collect();
        let pod = PodRun::new(Arc::new(pods::prod_a()), life, "a".into(), dash, Vec::new(), Vec::new());
        Run { pods: vec![pod], scrape_ms: 500, slot_ms: 2_000, events: Vec::new() }
    }

    fn failed(points: &[i64]) -> Vec<String> {
        let pts: Vec<Value> =
            points.iter().map(|t| serde_json::json!({"variant": "production", "timestamp": t})).collect();
        let mut l = Ledger::default();
        let e = Expect { width: 2_000, may: (100_000, 112_000), must: (100_000, 110_000) };
        check(&mut l, &run(), "test", &pts, e, 0);
        l.failures().map(|c| c.field.clone()).collect()
    }

    #[test]
    fn a_missing_extra_or_repeated_bucket_fails() {
        let all = [102_000, 104_000, 106_000, 108_000, 110_000];
        assert!(failed(&all).is_empty(), "{:?}", failed(&all));
        assert_eq!(failed(&[102_000, 104_000, 108_000, 110_000]), ["every bucket with scrapes is there"]);
        assert_eq!(
            failed(&[104_000, 106_000, 108_000, 110_000, 112_000]),
            ["every bucket with scrapes is there", "no bucket without scrapes"]
        );
        let mut twice = all.to_vec();
        twice.push(106_000);
        assert_eq!(failed(&twice), ["no bucket twice"]);
        assert_eq!(failed(&[102_000, 104_000, 105_000, 106_000, 108_000, 110_000]), ["no bucket without scrapes"]);
    }
}
