//! A window's increases per variant from instant queries at its end: `increase(x[W])` by the
//! labels `point::Counts` keeps (status code, model and direction, error type, retry reason,
//! histogram bucket), so `/api/compare`, `/api/models` and the alerts compute their numbers
//! from the same `Counts` as in SQLite mode. Where a variant's data starts inside the window
//! (a new variant) comes from the first `zai_proxy_build_info` sample, so window rates divide
//! by the time the data covers (docs/decisions.md, Windows).

use std::collections::BTreeMap;

use futures_util::future::try_join_all;

use super::client::{EngineError, Series};
use super::session::Session;
use super::{Timing, selector};
use crate::canary::SideTick;
use crate::clock::bucket_end;
use crate::point::{ADJUSTMENTS, Counts, DIRECTIONS, Histogram, Label, bounded};
use crate::ports::read::{RolloutStart, StartedBy, StrataQuery, Stratum, WindowQuery, WindowSums};
use crate::promql::parts::{self, family as pfamily};
use crate::promql::{Selector, family};

/// What a query fills in a variant's counts.
#[derive(Debug, Clone, Copy)]
enum Part {
    Requests,
    Tokens,
    Cost,
    UpstreamErrors,
    Retries,
    Rejections,
    Adjustments,
    /// Request size sum, count; response size sum, count.
    Size(usize),
    /// Duration, TTFT, TPOT buckets.
    Buckets(usize),
    /// A caller bucket's rate-limiter wait: its histogram buckets, sum.
    WaitBuckets,
    WaitSum,
    FirstSeen,
}

impl Part {
    /// Whether the canary analysis reads this part.
    fn judged(self) -> bool {
        matches!(
            self,
            Part::Requests
                | Part::Tokens
                | Part::Cost
                | Part::UpstreamErrors
                | Part::Retries
                | Part::Buckets(0)
                | Part::Buckets(1)
        )
    }
}

/// Most instants the first-sample search looks at.
const FIRST_SEEN_STEPS: i64 = 1_000;

fn plan(sel: &Selector, t: &Timing, window_ms: i64) -> Vec<(Part, String)> {
    let inc = |f: &str, by: &str| parts::increase_by(f, sel, &[], by, window_ms);
    let size = |f: &str, suffix: &str| inc(&format!("{f}{suffix}"), "variant");
    let buckets = |f: &str| inc(&format!("{f}_bucket"), "variant, le");
    let res = bucket_end((window_ms / FIRST_SEEN_STEPS).max(t.point_ms), t.point_ms);
    vec![
        (Part::Requests, inc(family::REQUESTS, "variant, status_code")),
        (Part::Tokens, inc(family::TOKENS, "variant, model, direction")),
        (Part::Cost, inc(family::COST, "variant, model, direction")),
        (Part::UpstreamErrors, inc(family::UPSTREAM_ERRORS, "variant, error_type")),
        (Part::Retries, inc(family::RETRIES, "variant, reason")),
        (Part::Rejections, inc(family::REJECTIONS, "variant, client")),
        (Part::Adjustments, inc(pfamily::ADJUSTMENTS, "variant, direction")),
        (Part::Size(0), size(pfamily::REQUEST_SIZE, "_sum")),
        (Part::Size(1), size(pfamily::REQUEST_SIZE, "_count")),
        (Part::Size(2), size(pfamily::RESPONSE_SIZE, "_sum")),
        (Part::Size(3), size(pfamily::RESPONSE_SIZE, "_count")),
        (Part::Buckets(0), buckets(family::DURATION)),
        (Part::Buckets(1), buckets(family::TTFT)),
        (Part::Buckets(2), buckets(family::TPOT)),
        (Part::WaitBuckets, inc(&format!("{}_bucket", pfamily::RATE_LIMIT_WAIT), "variant, client, le")),
        (Part::WaitSum, inc(&format!("{}_sum", pfamily::RATE_LIMIT_WAIT), "variant, client")),
        (Part::FirstSeen, parts::first_seen(family::BUILD_INFO, sel, "variant", window_ms, res)),
    ]
}

/// Every variant's increases over `(q.start_ms, q.end_ms]`, with where its data starts.
pub(crate) async fn fetch(
    session: &Session<'_>,
    t: &Timing,
    q: &WindowQuery,
) -> Result<BTreeMap<String, WindowSums>, EngineError> {
    let window_ms = q.end_ms.saturating_sub(q.start_ms).max(1);
    session.check_window(window_ms)?;
    let sel = selector(None, q.target_url.as_deref());
    let queries = plan(&sel, t, window_ms);
    let answers = try_join_all(queries.iter().map(|(_, e)| session.instant(e, q.end_ms))).await?;
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for ((part, _), series) in queries.iter().zip(&answers) {
        for s in series.iter() {
            if let Some(&(_, v)) = s.samples.first().filter(|(_, v)| v.is_finite()) {
                acc.entry(s.label("variant").to_owned()).or_default().add(*part, s, v);
            }
        }
    }
    Ok(acc.into_iter().map(|(variant, a)| (variant, a.sums(q.start_ms, t.point_ms))).collect())
}

/// Width of the strata of a comparison: the window's grid width, and at least two of the
/// engine's scrapes (an `increase` needs two samples in its range), on the point grid.
pub fn strata_width(t: &Timing, grid_ms: i64) -> i64 {
    bucket_end(grid_ms.max(2 * t.scrape_ms).max(1), t.point_ms.max(1))
}

/// Both variants' increases per stratum over `(q.start_ms, q.end_ms]`: each part's
/// `increase(x[width])` by the labels `Counts` keeps, from `query_range` on the bucket ends of
/// `width`, so consecutive samples cover consecutive buckets that do not overlap (each request
/// counts in one stratum, as the store's rows). Only complete buckets are read.
pub async fn strata(
    session: &Session<'_>,
    t: &Timing,
    q: &StrataQuery,
    width_ms: i64,
    now_ms: i64,
) -> Result<Vec<Stratum>, EngineError> {
    session.check_window(q.end_ms.saturating_sub(q.start_ms))?;
    let first = bucket_end(q.start_ms.saturating_add(1), width_ms);
    let newest = q.end_ms.min(now_ms.saturating_sub(t.settle_ms()));
    let last = newest - newest.rem_euclid(width_ms);
    if last < first {
        return Ok(Vec::new());
    }
    let sel = selector(None, None);
    let queries: Vec<(Part, String)> = plan(&sel, t, width_ms).into_iter().filter(|(p, _)| p.judged()).collect();
    let answers = try_join_all(queries.iter().map(|(_, e)| session.range(e, first, last, width_ms))).await?;
    let mut acc: BTreeMap<i64, [Acc; 2]> = BTreeMap::new();
    for ((part, _), series) in queries.iter().zip(&answers) {
        for s in series.iter() {
            let Some(side) = q.variants.iter().position(|v| v == s.label("variant")) else { continue };
            for &(ts, v) in s.samples.iter().filter(|(_, v)| v.is_finite()) {
                acc.entry(ts).or_default()[side].add(*part, s, v);
            }
        }
    }
    let tick = |a: Acc| SideTick::from_counts(&a.sums(0, t.point_ms).counts);
    Ok(acc.into_iter().map(|(end_ms, [b, c])| Stratum { end_ms, sides: [tick(b), tick(c)] }).collect())
}

/// How far back source mode looks for when a variant's current version appeared: the 1 min
/// rows' default retention, the bound SQLite mode has.
const ROLLOUT_LOOKBACK_MS: i64 = 7 * 86_400_000;

/// When `variant`'s current `zai_proxy_build_info` version first appeared as of `end_ms`:
/// the version whose newest sample is the newest, then its first sample, found coarsely over
/// the look-back and again at the point width around it. Started by a version change when
/// another version was reported in the look-back, else by the first scrape seen.
pub async fn rollout_start(
    session: &Session<'_>,
    t: &Timing,
    variant: &str,
    end_ms: i64,
) -> Result<Option<RolloutStart>, EngineError> {
    let sel = selector(Some(variant), None);
    let coarse = bucket_end((ROLLOUT_LOOKBACK_MS / FIRST_SEEN_STEPS).max(t.point_ms), t.point_ms);
    let newest = parts::last_seen(family::BUILD_INFO, &sel, "version", ROLLOUT_LOOKBACK_MS, coarse);
    let versions = session.instant(&newest, end_ms).await?;
    let seen: Vec<(&str, f64)> = versions
        .iter()
        .filter_map(|s| s.samples.first().filter(|(_, v)| v.is_finite()).map(|&(_, v)| (s.label("version"), v)))
        .collect();
    let Some(&(current, _)) = seen.iter().max_by(|a, b| a.1.total_cmp(&b.1)) else { return Ok(None) };
    let only = Selector { matchers: vec![("version".to_owned(), current.to_owned())], ..sel };
    let first_at = |range_ms: i64, res_ms: i64, at_ms: i64| {
        let expr = parts::first_seen(family::BUILD_INFO, &only, "version", range_ms, res_ms);
        async move {
            let answer = session.instant(&expr, at_ms).await?;
            Ok::<_, EngineError>(
                answer.iter().filter_map(|s| s.samples.first()).map(|&(_, v)| v).find(|v| v.is_finite()),
            )
        }
    };
    let Some(rough) = first_at(ROLLOUT_LOOKBACK_MS, coarse, end_ms).await? else { return Ok(None) };
    let rough_ms = (rough * 1000.0).round() as i64;
    // The coarse instants see the first sample up to one coarse step late: look again there.
    let fine = first_at(2 * coarse, t.point_ms, rough_ms.min(end_ms)).await?;
    let since_ms = fine.map_or(rough_ms, |f| (f * 1000.0).round() as i64).max(end_ms - ROLLOUT_LOOKBACK_MS);
    let by = if seen.len() > 1 { StartedBy::Version } else { StartedBy::FirstScrape };
    let version = (by == StartedBy::Version).then(|| current.to_owned());
    Ok(Some(RolloutStart { since_ms, by, version }))
}

/// One variant's parts.
#[derive(Debug, Default)]
struct Acc {
    counts: Counts,
    sizes: [f64; 4],
    buckets: [Vec<(f64, f64)>; 3],
    /// Per caller bucket: wait histogram buckets and sum.
    waits: BTreeMap<String, (Vec<(f64, f64)>, f64)>,
    first_seen_ms: Option<i64>,
}

impl Acc {
    fn add(&mut self, part: Part, s: &Series, v: f64) {
        let c = &mut self.counts;
        let v = bounded(v);
        let direction = || DIRECTIONS.iter().position(|d| *d == s.label("direction"));
        match part {
            Part::Requests => *c.requests.entry(Label::from(s.label("status_code"))).or_default() += v,
            Part::Tokens => {
                if let Some(i) = direction() {
                    c.tokens.entry(Label::from(s.label("model"))).or_default()[i] += v;
                }
            }
            Part::Cost => {
                if let Some(i) = direction() {
                    c.cost.entry(Label::from(s.label("model"))).or_default()[i] += v;
                }
            }
            Part::UpstreamErrors => *c.upstream_errors.entry(Label::from(s.label("error_type"))).or_default() += v,
            Part::Retries => *c.retries.entry(Label::from(s.label("reason"))).or_default() += v,
            Part::Rejections => {
                c.rejections += v;
                if !s.label("client").is_empty() {
                    c.clients.entry(Label::from(s.label("client"))).or_default().rejections += v;
                }
            }
            Part::WaitBuckets => {
                if let (Some(le), false) = (s.le(), s.label("client").is_empty()) {
                    self.waits.entry(s.label("client").to_owned()).or_default().0.push((le, v));
                }
            }
            Part::WaitSum => {
                if !s.label("client").is_empty() {
                    self.waits.entry(s.label("client").to_owned()).or_default().1 += v;
                }
            }
            Part::Adjustments => {
                if let Some(i) = ADJUSTMENTS.iter().position(|d| *d == s.label("direction")) {
                    c.adjustments[i] += v;
                }
            }
            Part::Size(i) => self.sizes[i] += v,
            Part::Buckets(i) => {
                if let Some(le) = s.le() {
                    self.buckets[i].push((le, v));
                }
            }
            Part::FirstSeen => self.first_seen_ms = Some((v * 1000.0).round() as i64),
        }
    }

    /// The sums; the data starts at the start of the raw bucket of the variant's first sample,
    /// or at the window's start when it was there before.
    fn sums(self, start_ms: i64, point_ms: i64) -> WindowSums {
        let mut counts = self.counts;
        counts.request_size = crate::point::SumCount { sum: self.sizes[0], count: self.sizes[1] };
        counts.response_size = crate::point::SumCount { sum: self.sizes[2], count: self.sizes[3] };
        let [duration, ttft, tpot] = self.buckets.map(Histogram::from_cumulative);
        (counts.duration, counts.ttft, counts.tpot) = (duration, ttft, tpot);
        for (client, (buckets, sum)) in self.waits {
            let wait = Histogram { sum, ..Histogram::from_cumulative(buckets) };
            counts.clients.entry(Label::from(client)).or_default().wait = wait;
        }
        let data_from_ms =
            self.first_seen_ms.map_or(start_ms, |first| (bucket_end(first, point_ms) - point_ms).max(start_ms));
        WindowSums { counts, data_from_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)]) -> Series {
        Series { labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), samples: vec![] }
    }

    #[test]
    fn counts_keep_the_labels_the_store_keeps() {
        let mut a = Acc::default();
        a.add(Part::Requests, &series(&[("status_code", "500")]), 4.0);
        a.add(Part::Tokens, &series(&[("model", "glm-4.7"), ("direction", "output")]), 30.0);
        a.add(Part::Retries, &series(&[("reason", "retry")]), 2.0);
        a.add(Part::Retries, &series(&[("reason", "429")]), 2.0);
        a.add(Part::FirstSeen, &series(&[]), 1_000.3);
        let s = a.sums(990_000, 5_000);
        assert_eq!(s.counts.requests["500"], 4.0);
        assert_eq!(s.counts.tokens["glm-4.7"], [0.0, 30.0, 0.0, 0.0]);
        assert_eq!(s.counts.retry_attempts(), 2.0, "the generic retry series is left out");
        assert_eq!(s.data_from_ms, 1_000_000, "the raw bucket of the first sample");
        assert_eq!(Acc::default().sums(990_000, 5_000).data_from_ms, 990_000);
    }

    #[test]
    fn caller_buckets_are_kept_as_the_store_keeps_them() {
        let mut a = Acc::default();
        a.add(Part::Rejections, &series(&[("client", "source-07")]), 3.0);
        a.add(Part::Rejections, &series(&[]), 1.0);
        for (le, n) in [("0.1", 4.0), ("+Inf", 5.0)] {
            a.add(Part::WaitBuckets, &series(&[("client", "source-07"), ("le", le)]), n);
        }
        a.add(Part::WaitSum, &series(&[("client", "source-07")]), 0.9);
        let c = a.sums(0, 5_000).counts;
        assert_eq!(c.rejections, 4.0, "every rejection, with a bucket or without");
        let client = &c.clients["source-07"];
        assert_eq!((client.rejections, client.wait.count, client.wait.sum), (3.0, 5.0, 0.9));
        assert_eq!(c.clients.len(), 1, "no bucket for a series without `client`");
    }
}
