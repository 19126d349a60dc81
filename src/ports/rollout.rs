//! The one path from the read contract to a canary judgement: which interval a pair is judged
//! over (since the candidate's rollout began, unless asked otherwise) and the strata read,
//! folded and judged. `/api/compare`, `/compare`, the `canary_verdict` alert value, the
//! `zai_dash_canary_verdict` gauge and the minutely history all call [`judge`], so they
//! cannot disagree (README, "`GET /api/compare`"; ARCHITECTURE.md, "Canary analysis").

use super::judge_cache::{Folded, Key};
use super::read::{DataSource, RolloutStart, SettledStrata, SourceError, StrataQuery, Stratum, WindowQuery};
use crate::canary::{CanaryConfig, Evidence, Judgement, judge as judge_evidence};
use crate::point::Histogram;

/// How far before the interval the baseline's latency and TTFT reference is read: its tail
/// bounds are then fixed before the candidate served anything.
pub const REFERENCE_MS: i64 = 3_600_000;

/// The interval judged when nothing is known of the candidate yet.
pub const FALLBACK_MS: i64 = 15 * 60_000;

/// What the reasons say when the source gives no per-tick increases.
pub const NO_STRATA: &str = "this source does not read per-tick increases of both variants (source mode), so no \
     sequential verdict is given; compare the variants in SQLite mode, or read their PromQL directly";

/// How the judged interval was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Chosen {
    /// Since the candidate's rollout began (the default).
    Rollout,
    /// From an explicit `since=` to now.
    Since,
    /// An explicit `start=`/`end=`.
    Range,
    /// The last N minutes (`window=`, for old clients).
    Window,
}

/// The interval `(since_ms, until_ms]` a pair is judged over.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Start (exclusive), Unix ms.
    pub since_ms: i64,
    /// End (inclusive), Unix ms.
    pub until_ms: i64,
    /// How it was chosen.
    pub chosen: Chosen,
    /// The candidate's rollout start, when the interval follows it.
    pub started: Option<RolloutStart>,
}

impl Interval {
    /// Since the candidate's current version first appeared (else its first scrape; never
    /// before what retention still holds) up to `now_ms`; the last [`FALLBACK_MS`] when nothing
    /// is known of the candidate.
    pub async fn rollout(source: &dyn DataSource, candidate: &str, now_ms: i64) -> Result<Interval, SourceError> {
        let started = source.rollout_start(candidate, now_ms).await?;
        let since = started.as_ref().map_or(now_ms - FALLBACK_MS, |s| s.since_ms);
        let since_ms = since.min(now_ms - 1);
        Ok(Interval { since_ms, until_ms: now_ms, chosen: Chosen::Rollout, started })
    }

    /// Length in seconds.
    pub fn seconds(&self) -> f64 {
        (self.until_ms - self.since_ms) as f64 / 1000.0
    }
}

/// A pair judged over an interval.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The interval judged.
    pub interval: Interval,
    /// Rows and overall verdict.
    pub judgement: Judgement,
    /// Strata folded (ticks, or minutes for intervals answered from rollups).
    pub strata: usize,
    /// Why there is no verdict at all (a source without per-tick increases).
    pub unsupported: Option<&'static str>,
}

impl Judged {
    /// The judgement's reasons, led by why nothing could be judged when that is the case.
    pub fn reasons(&self) -> Vec<String> {
        match self.unsupported {
            Some(why) => std::iter::once(why.to_owned()).chain(self.judgement.reasons()).collect(),
            None => self.judgement.reasons(),
        }
    }
}

/// Judges `candidate` against `baseline` over `interval` with `cfg`: the baseline's hour
/// before the interval as the tail reference, then every stratum of the interval folded in
/// time order. A source whose strata settle keeps the evidence folded over its settled strata
/// ([`super::judge_cache`]): the next judgement of the same interval reads and folds only what
/// came after, with the same result as judging afresh.
pub async fn judge(
    source: &dyn DataSource,
    (baseline, candidate): (&str, &str),
    interval: Interval,
    cfg: &CanaryConfig,
) -> Result<Judged, SourceError> {
    let q = StrataQuery {
        start_ms: interval.since_ms,
        end_ms: interval.until_ms,
        variants: [baseline.to_owned(), candidate.to_owned()],
    };
    // A fixed-length look back (`window=`) starts later at every call: nothing kept would be
    // asked for again.
    let sliding = interval.chosen == Chosen::Window;
    let (Some(cache), Some(generation), false) = (source.judge_cache(), source.strata_generation(), sliding) else {
        return judge_afresh(source, q, interval, cfg).await;
    };
    let key =
        Key { pair: (baseline.to_owned(), candidate.to_owned()), since_ms: interval.since_ms, config: cfg.clone() };
    if let Some(mut kept) = cache.get(&key, generation)
        && let Some(read) = source.settled_strata(q.clone(), kept.through_ms).await?
        // A late row lowered the watermark below what was folded (before the generation
        // moved): what was kept may be wrong.
        && read.settled_until_ms >= kept.through_ms
        // The interval outgrew raw ticks: it is read in minutes now.
        && read.stratum_ms == kept.stratum_ms
        // Judged without a reference while the baseline observed no latency: its first
        // observations now make one, and the strata judged start after them.
        && !(kept.unreferenced && read.strata.iter().any(|s| observed(&s.sides[0].latency) > 0.0))
    {
        let fresh = fold_settled(&mut kept, &read, generation);
        cache.put(key, kept.clone());
        let mut evidence = kept.evidence;
        for s in fresh {
            evidence.fold(&s.sides[0], &s.sides[1]);
        }
        let strata = kept.strata + fresh.len();
        return Ok(Judged { interval, judgement: judge_evidence(&evidence, cfg), strata, unsupported: None });
    }
    let Some(read) = source.settled_strata(q.clone(), interval.since_ms).await? else {
        return judge_afresh(source, q, interval, cfg).await;
    };
    judge_keeping_settled(source, cache, (key, generation), read, interval, cfg).await
}

/// Judges the whole interval from `read` and keeps the evidence over its settled strata, once
/// the latency reference is settled too.
async fn judge_keeping_settled(
    source: &dyn DataSource,
    cache: &super::judge_cache::JudgeCache,
    (key, generation): (Key, u64),
    read: SettledStrata,
    interval: Interval,
    cfg: &CanaryConfig,
) -> Result<Judged, SourceError> {
    let mut evidence = Evidence::new();
    let (judged, reference_settled, unreferenced) = match reference_before(source, &key.pair.0, &interval).await? {
        Some(c) => {
            evidence.set_reference(&c.duration.buckets, &c.ttft.buckets);
            (&read.strata[..], true, false)
        }
        None => {
            let judged = reference_from_prefix(&mut evidence, &read.strata);
            let prefix = read.strata.len() - judged.len();
            // No latency observed by the baseline (absent, idle, or without a histogram):
            // every stratum is judged without a reference, which holds until it observes some
            // (checked at every later read).
            let unreferenced = prefix == 0 && evidence == Evidence::new();
            // Kept only once the prefix that fixed the reference has settled: a later read
            // would otherwise take another prefix.
            let fixed = prefix > 0 && evidence != Evidence::new();
            (judged, unreferenced || (fixed && read.strata[prefix - 1].end_ms <= read.settled_until_ms), unreferenced)
        }
    };
    let settled = judged.partition_point(|s| s.end_ms <= read.settled_until_ms);
    for s in &judged[..settled] {
        evidence.fold(&s.sides[0], &s.sides[1]);
    }
    if reference_settled && read.settled_until_ms > interval.since_ms {
        let through_ms = read.settled_until_ms.max(interval.since_ms);
        let folded = evidence.clone();
        let stratum_ms = read.stratum_ms;
        cache.put(key, Folded { evidence: folded, strata: settled, through_ms, generation, stratum_ms, unreferenced });
    }
    for s in &judged[settled..] {
        evidence.fold(&s.sides[0], &s.sides[1]);
    }
    Ok(Judged { interval, judgement: judge_evidence(&evidence, cfg), strata: judged.len(), unsupported: None })
}

/// Folds the settled strata of `read` into `kept`; returns the rest, to fold into a copy.
fn fold_settled<'r>(kept: &mut Folded, read: &'r SettledStrata, generation: u64) -> &'r [Stratum] {
    let settled = read.strata.partition_point(|s| s.end_ms <= read.settled_until_ms);
    for s in &read.strata[..settled] {
        kept.evidence.fold(&s.sides[0], &s.sides[1]);
    }
    kept.strata += settled;
    kept.through_ms = kept.through_ms.max(read.settled_until_ms);
    kept.generation = generation;
    &read.strata[settled..]
}

/// [`judge`] reading every stratum of the interval: for sources whose strata never settle.
async fn judge_afresh(
    source: &dyn DataSource,
    q: StrataQuery,
    interval: Interval,
    cfg: &CanaryConfig,
) -> Result<Judged, SourceError> {
    let baseline = q.variants[0].clone();
    let Some(strata) = source.strata(q).await? else {
        let judgement = judge_evidence(&Evidence::new(), cfg);
        return Ok(Judged { interval, judgement, strata: 0, unsupported: Some(NO_STRATA) });
    };
    let mut evidence = Evidence::new();
    let judged = match reference_before(source, &baseline, &interval).await? {
        Some(c) => {
            evidence.set_reference(&c.duration.buckets, &c.ttft.buckets);
            &strata[..]
        }
        None => reference_from_prefix(&mut evidence, &strata),
    };
    for s in judged {
        evidence.fold(&s.sides[0], &s.sides[1]);
    }
    Ok(Judged { interval, judgement: judge_evidence(&evidence, cfg), strata: judged.len(), unsupported: None })
}

/// The baseline's counts over the hour before the interval, when it observed any latency there.
async fn reference_before(
    source: &dyn DataSource,
    baseline: &str,
    interval: &Interval,
) -> Result<Option<crate::point::Counts>, SourceError> {
    let before =
        WindowQuery { start_ms: interval.since_ms - REFERENCE_MS, end_ms: interval.since_ms, target_url: None };
    let history = source.window(before).await?.remove(baseline).map(|r| r.counts);
    Ok(history.filter(|c| observed(&c.duration.buckets) > 0.0))
}

/// Observations of cumulative buckets: the `+Inf` bucket's count.
fn observed(buckets: &[(f64, f64)]) -> f64 {
    match buckets.last() {
        Some(&(le, n)) if le == f64::INFINITY => n,
        _ => 0.0,
    }
}

/// Baseline latency observations that make a reference when the baseline has no history
/// before the interval.
pub const REFERENCE_OBSERVATIONS: f64 = 200.0;

/// Without history before the interval, the baseline's first [`REFERENCE_OBSERVATIONS`]
/// requests of it are the reference, and only the strata after them are judged: tail bounds
/// must come from data the test does not see, or a candidate slower across the board moves a
/// pooled bound into its own range and hides (everything above 5 s: 0 % on both sides). The
/// split depends on the baseline's traffic alone, so it is fixed the same way at every look.
/// Returns the strata left to judge (none until the reference is complete; all of them when
/// the baseline exports no latency histogram, which leaves nothing to refer to).
fn reference_from_prefix<'s>(evidence: &mut Evidence, strata: &'s [Stratum]) -> &'s [Stratum] {
    if strata.iter().all(|s| observed(&s.sides[0].latency) <= 0.0) {
        return strata;
    }
    let (mut latency, mut ttft) = (Histogram::default(), Histogram::default());
    for (i, s) in strata.iter().enumerate() {
        let b = &s.sides[0];
        latency.add(&Histogram { buckets: b.latency.clone(), sum: 0.0, count: 0.0 });
        ttft.add(&Histogram { buckets: b.ttft.clone(), sum: 0.0, count: 0.0 });
        if observed(&latency.buckets) >= REFERENCE_OBSERVATIONS {
            evidence.set_reference(&latency.buckets, &ttft.buckets);
            return &strata[i + 1..];
        }
    }
    &[]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::SideTick;

    fn stratum(baseline_ms: f64, candidate_ms: f64) -> Stratum {
        let side = |ms: f64| {
            let fast = if ms <= 250.0 { 100.0 } else { 0.0 };
            SideTick {
                requests: 100.0,
                ok_2xx: 100.0,
                latency: vec![(0.25, fast), (5.0, 100.0), (f64::INFINITY, 100.0)],
                ..Default::default()
            }
        };
        Stratum { end_ms: 0, sides: [side(baseline_ms), side(candidate_ms)] }
    }

    /// Without history, the baseline's first 200 requests are the reference and are not
    /// judged; a candidate 20x slower is then above the baseline's p95 bound on every request.
    #[test]
    fn the_baselines_first_requests_are_the_reference_without_history() {
        let strata: Vec<Stratum> = (0..10).map(|_| stratum(200.0, 4000.0)).collect();
        let mut e = Evidence::new();
        assert_eq!(reference_from_prefix(&mut e, &strata).len(), 8, "two strata of 100 requests are the reference");
        for s in reference_from_prefix(&mut Evidence::new(), &strata) {
            e.fold(&s.sides[0], &s.sides[1]);
        }
        let j = judge_evidence(&e, &CanaryConfig::default());
        let tail = j.rows.iter().find(|r| r.metric == crate::canary::MetricId::LatencyP95Tail).unwrap();
        assert_eq!(tail.bound_ms, Some(250.0), "{tail:?}");
        assert_eq!(tail.candidate, Some(100.0));
        assert!(reference_from_prefix(&mut Evidence::new(), &strata[..1]).is_empty(), "nothing judged before");
        let plain = || SideTick { requests: 100.0, ..Default::default() };
        let no_histogram: Vec<Stratum> = (0..3).map(|_| Stratum { end_ms: 0, sides: [plain(), plain()] }).collect();
        assert_eq!(reference_from_prefix(&mut Evidence::new(), &no_histogram).len(), 3, "no latency: judge everything");
    }
}
