//! What both variants did, tick by tick, folded into running sums ([`Evidence`]).
//!
//! One [`SideTick`] per variant per stratum: a 5 s scrape tick live, a 1 min row for older
//! intervals. The strata must be fixed in advance (by the clock, never by the data); within
//! that, any width is valid. Folding is O(1) per metric and O(bounds) per histogram; two
//! accumulators over consecutive intervals [`Evidence::merge`] into the one over both.
//!
//! It also records when each family a deployment may not export (histograms, token and cost
//! amounts) first had data on both sides, which fixes the hypotheses tested
//! ([`Evidence::tested`]).

use super::catalog::{
    C_CACHE, C_COST, C_ERRORS, C_OUTPUT, C_RATE_LIMITED, C_RETRIES, C_UPSTREAM, COUNTERS, MetricId, Source,
};
use super::stratified::{Estimate, OwnShare, Paired};
use crate::point::Counts;

/// A family of series a deployment may not export at all: a histogram, or an amount that stays 0
/// where nobody records it. Indexes [`Evidence`]'s appearances.
type Family = usize;
const F_LATENCY: Family = 0;
const F_TTFT: Family = 1;
const F_OUTPUT: Family = 2;
const FAMILIES: usize = 5;
/// The amount counters, in family order from [`F_OUTPUT`].
const AMOUNTS: [usize; 3] = [C_OUTPUT, C_CACHE, C_COST];

/// The family a metric's data comes from; `None` for shares and events of requests, which
/// every proxy exports.
fn family(metric: MetricId) -> Option<Family> {
    match metric.source() {
        Source::Latency(_) => Some(F_LATENCY),
        Source::Ttft(_) => Some(F_TTFT),
        Source::Counter(c) => AMOUNTS.iter().position(|&a| a == c).map(|i| F_OUTPUT + i),
    }
}

/// What one variant did in one tick (increases over the tick).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideTick {
    /// Requests of any status.
    pub requests: f64,
    /// 5xx responses (503 capacity rejections included).
    pub errors_5xx: f64,
    /// 429 responses.
    pub rate_limited: f64,
    /// 2xx responses: the denominator of per-success amounts.
    pub ok_2xx: f64,
    /// Upstream errors of every type.
    pub upstream_errors: f64,
    /// Retries performed (zai-proxy's generic `retry` series excluded).
    pub retries: f64,
    /// Request duration buckets: `(le in seconds, cumulative count)`, ascending, `+Inf` last.
    pub latency: Vec<(f64, f64)>,
    /// Time-to-first-token buckets, same shape; empty when not exported.
    pub ttft: Vec<(f64, f64)>,
    /// Input tokens not read from or written to the cache.
    pub input_tokens: f64,
    /// Output tokens.
    pub output_tokens: f64,
    /// Prompt tokens read from the cache.
    pub cache_read_tokens: f64,
    /// Prompt tokens written to the cache.
    pub cache_write_tokens: f64,
    /// Estimated cost, USD.
    pub cost_usd: f64,
}

impl SideTick {
    /// One variant's summed increases over a tick, as the store and the source mode give them.
    pub(crate) fn from_counts(c: &Counts) -> Self {
        let tokens = c.tokens_by_direction();
        let cost = c.cost_by_direction();
        Self {
            requests: c.total_requests(),
            errors_5xx: c.requests_in_class('5'),
            rate_limited: c.requests.get("429").copied().unwrap_or(0.0),
            ok_2xx: c.requests_in_class('2'),
            upstream_errors: crate::point::total(c.upstream_errors.values()),
            retries: c.retry_attempts(),
            latency: c.duration.buckets.clone(),
            ttft: c.ttft.buckets.clone(),
            input_tokens: tokens[0],
            output_tokens: tokens[1],
            cache_read_tokens: tokens[2],
            cache_write_tokens: tokens[3],
            cost_usd: cost.iter().fold(0.0, |a, b| a + b),
        }
    }

    /// Numerator and denominator of each counter comparison, in [`COUNTERS`] order.
    fn counters(&self) -> [(f64, f64); COUNTERS] {
        let mut out = [(0.0, 0.0); COUNTERS];
        out[C_ERRORS] = (self.requests, self.errors_5xx);
        out[C_RATE_LIMITED] = (self.requests, self.rate_limited);
        out[C_UPSTREAM] = (self.requests, self.upstream_errors);
        out[C_RETRIES] = (self.requests, self.retries);
        out[C_OUTPUT] = (self.ok_2xx, self.output_tokens);
        out[C_CACHE] = (self.input_tokens + self.cache_read_tokens + self.cache_write_tokens, self.cache_read_tokens);
        out[C_COST] = (self.ok_2xx, self.cost_usd);
        out
    }
}

/// Tail shares of one histogram family: for every finite `le` bound both sides expose, the
/// stratified comparison of the share of observations above it. The bound a metric uses is
/// chosen when judging ([`Tails::bound_for`]), so no choice is frozen by early data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tails {
    bounds: Vec<f64>,
    /// Observations per side over every tick.
    observed: [f64; 2],
    above: Vec<Paired>,
    /// The baseline's buckets before the rollout as `(le, share of observations above)`,
    /// when known.
    reference: Vec<(f64, f64)>,
}

/// Cumulative count at exactly `le`, if the histogram has that bound.
fn cumulative_at(buckets: &[(f64, f64)], le: f64) -> Option<f64> {
    buckets.iter().find(|b| b.0 == le).map(|b| b.1)
}

/// Observations of a histogram: its `+Inf` bucket (0 without one).
fn observations(buckets: &[(f64, f64)]) -> f64 {
    match buckets.last() {
        Some(&(le, c)) if le == f64::INFINITY => c.max(0.0),
        _ => 0.0,
    }
}

impl Tails {
    fn fold(&mut self, b: &[(f64, f64)], c: &[(f64, f64)]) {
        let (nb, nc) = (observations(b), observations(c));
        if nb <= 0.0 && nc <= 0.0 {
            return;
        }
        self.observed[0] += nb;
        self.observed[1] += nc;
        if self.same_layout(b, c) {
            // The usual case (one exporter, one layout): position i is bound i on both sides.
            for (i, acc) in self.above.iter_mut().enumerate() {
                acc.fold(nb, (nb - b[i].1).clamp(0.0, nb), nc, (nc - c[i].1).clamp(0.0, nc));
            }
            return;
        }
        self.learn_bounds(b);
        self.learn_bounds(c);
        for (i, &le) in self.bounds.iter().enumerate() {
            // A side without this bound (another layout, or no data this tick) counts nothing.
            let side = |h: &[(f64, f64)], n: f64| match cumulative_at(h, le) {
                Some(below) => (n, (n - below).clamp(0.0, n)),
                None => (0.0, 0.0),
            };
            let ((nb_i, xb), (nc_i, xc)) = (side(b, nb), side(c, nc));
            self.above[i].fold(nb_i, xb, nc_i, xc);
        }
    }

    /// Whether both histograms have exactly the known finite bounds, then `+Inf`.
    fn same_layout(&self, b: &[(f64, f64)], c: &[(f64, f64)]) -> bool {
        let k = self.bounds.len();
        if b.len() != k + 1 || c.len() != k + 1 {
            return false;
        }
        for i in 0..k {
            if b[i].0 != self.bounds[i] || c[i].0 != self.bounds[i] {
                return false;
            }
        }
        true
    }

    /// Adds the finite bounds of `buckets` not seen before (their sums start now).
    fn learn_bounds(&mut self, buckets: &[(f64, f64)]) {
        for &(le, _) in buckets {
            if !le.is_finite() || self.bounds.contains(&le) {
                continue;
            }
            let at = self.bounds.partition_point(|&x| x < le);
            self.bounds.insert(at, le);
            self.above.insert(at, Paired::default());
        }
    }

    fn merge(&mut self, o: &Tails) {
        self.observed[0] += o.observed[0];
        self.observed[1] += o.observed[1];
        for (&le, p) in o.bounds.iter().zip(&o.above) {
            if !self.bounds.contains(&le) {
                self.learn_bounds(&[(le, 0.0)]);
            }
            if let Some(i) = self.bounds.iter().position(|&x| x == le) {
                self.above[i].merge(p);
            }
        }
        if self.reference.is_empty() {
            self.reference.clone_from(&o.reference);
        }
    }

    /// Whether any observation was folded.
    pub fn is_empty(&self) -> bool {
        self.observed[0] <= 0.0 && self.observed[1] <= 0.0
    }

    /// The bound (seconds) at or above the `q` quantile, with its comparison: from the
    /// reference histogram when there is one, else from both sides pooled. Pooled rather
    /// than the baseline alone: a bound picked from one side's own sample sits where that
    /// side happened to be light, which biases the test against the other side; under no
    /// difference the pooled sample says nothing about which side is which. A quantile in
    /// the `+Inf` bucket takes the highest finite bound.
    pub(crate) fn bound_for(&self, q: f64) -> Option<(f64, &Paired)> {
        let allowed_above = 1.0 - q;
        let i = if self.reference.is_empty() {
            (0..self.bounds.len()).find(|&i| {
                let p = &self.above[i];
                let n = p.n[0] + p.n[1];
                n > 0.0 && (p.y[0] + p.y[1]) / n <= allowed_above
            })
        } else {
            // Ascending, so the first bound within is the one at or above the quantile; every
            // reference bound was learned when the reference was set.
            let le = self.reference.iter().find(|r| r.1 <= allowed_above).map(|r| r.0);
            le.and_then(|le| self.bounds.iter().position(|&b| b == le))
        };
        let i = i.or_else(|| self.bounds.len().checked_sub(1))?;
        Some((self.bounds[i], &self.above[i]))
    }

    /// Keeps `buckets` (cumulative, `+Inf` last) as the reference: each finite bound with the
    /// share of observations above it. A reference without observations says nothing and is
    /// not kept.
    fn set_reference(&mut self, buckets: &[(f64, f64)]) {
        let total = observations(buckets);
        self.reference = if total > 0.0 {
            buckets.iter().filter(|b| b.0.is_finite()).map(|&(le, below)| (le, (total - below) / total)).collect()
        } else {
            Vec::new()
        };
        self.learn_bounds(buckets);
    }
}

/// Everything folded so far for one (baseline, candidate) pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    pub(crate) counters: [Paired; COUNTERS],
    /// The candidate's own 5xx and 429 shares, for ceilings.
    own: [OwnShare; 2],
    pub(crate) latency: Tails,
    pub(crate) ttft: Tails,
    /// Per [`Family`]: each side's requests before the tick at which both sides first had data
    /// for it (`None`: not yet). Whether a metric takes a share of `alpha` is decided from this
    /// ([`Evidence::tested`]).
    appeared: [Option<[f64; 2]>; FAMILIES],
    /// Ticks folded.
    pub ticks: u64,
}

impl Evidence {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the baseline's latency and TTFT buckets from before the rollout (for example the
    /// hour before `since`): tail bounds then come from there, fixed before the candidate ran.
    pub fn set_reference(&mut self, latency: &[(f64, f64)], ttft: &[(f64, f64)]) {
        self.latency.set_reference(latency);
        self.ttft.set_reference(ttft);
    }

    /// Folds one tick of both variants.
    pub fn fold(&mut self, baseline: &SideTick, candidate: &SideTick) {
        let before = self.requests();
        let (b, c) = (baseline.counters(), candidate.counters());
        for (acc, ((nb, yb), (nc, yc))) in self.counters.iter_mut().zip(b.into_iter().zip(c)) {
            acc.fold(nb, yb, nc, yc);
        }
        self.own[0].fold(baseline.requests, candidate.requests, candidate.errors_5xx);
        self.own[1].fold(baseline.requests, candidate.requests, candidate.rate_limited);
        self.latency.fold(&baseline.latency, &candidate.latency);
        self.ttft.fold(&baseline.ttft, &candidate.ttft);
        self.ticks += 1;
        self.note_appearances(before);
    }

    /// Adds an accumulator over the ticks that follow this one's.
    pub fn merge(&mut self, o: &Evidence) {
        let before = self.requests();
        for (mine, theirs) in self.appeared.iter_mut().zip(&o.appeared) {
            if mine.is_none() {
                *mine = theirs.map(|r| [before[0] + r[0], before[1] + r[1]]);
            }
        }
        for (a, b) in self.counters.iter_mut().zip(&o.counters) {
            a.merge(b);
        }
        for (a, b) in self.own.iter_mut().zip(&o.own) {
            a.merge(b);
        }
        self.latency.merge(&o.latency);
        self.ttft.merge(&o.ttft);
        self.ticks += o.ticks;
        // Data on one side in each part: both sides have it now, somewhere in `o`; its end
        // is the one point known.
        let after = self.requests();
        self.note_appearances(after);
    }

    /// Records the families both sides now have data for, which did not before `requests`.
    fn note_appearances(&mut self, requests: [f64; 2]) {
        for f in 0..FAMILIES {
            if self.appeared[f].is_none() && self.both_sides_have(f) {
                self.appeared[f] = Some(requests);
            }
        }
    }

    /// Whether both sides have data for family `f`: observations for a histogram, a non-zero
    /// amount for tokens and cost (an amount nobody records stays 0).
    fn both_sides_have(&self, f: Family) -> bool {
        let both = |v: [f64; 2]| v[0] > 0.0 && v[1] > 0.0;
        match f {
            F_LATENCY => both(self.latency.observed),
            F_TTFT => both(self.ttft.observed),
            _ => {
                let p = &self.counters[AMOUNTS[f - F_OUTPUT]];
                both(p.n) && both(p.y)
            }
        }
    }

    /// Whether `metric` is one of the hypotheses tested: its family had data on both sides by
    /// the first look that could test anything (both sides at `min_requests` requests; before
    /// that no metric is tested). Metrics counted from requests alone always are. Fixing the
    /// family there means the number of hypotheses never changes once a p-value can matter.
    pub(crate) fn tested(&self, metric: MetricId, min_requests: f64) -> bool {
        match family(metric) {
            None => true,
            Some(f) => self.appeared[f].is_some_and(|r| r[0].min(r[1]) < min_requests),
        }
    }

    /// The candidate's own share for `metric`'s ceiling (5xx and 429 only).
    pub(crate) fn own_share(&self, metric: MetricId) -> Option<Estimate> {
        match metric {
            MetricId::ErrorRate => self.own[0].estimate(),
            MetricId::RateLimited => self.own[1].estimate(),
            _ => None,
        }
    }

    /// Requests per side `[baseline, candidate]`.
    pub(crate) fn requests(&self) -> [f64; 2] {
        self.counters[C_ERRORS].n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(counts: &[(f64, f64)]) -> Vec<(f64, f64)> {
        counts.to_vec()
    }

    #[test]
    fn side_tick_from_counts_excludes_the_generic_retry_series() {
        let mut c = Counts::default();
        c.requests.insert("200".into(), 90.0);
        c.requests.insert("503".into(), 6.0);
        c.requests.insert("429".into(), 4.0);
        c.retries.insert("retry".into(), 3.0);
        c.retries.insert("timeout".into(), 3.0);
        c.upstream_errors.insert("timeout".into(), 2.0);
        c.tokens.insert("m".into(), [100.0, 50.0, 300.0, 10.0]);
        c.cost.insert("m".into(), [0.1, 0.2, 0.01, 0.0]);
        let t = SideTick::from_counts(&c);
        assert_eq!((t.requests, t.errors_5xx, t.rate_limited, t.ok_2xx), (100.0, 6.0, 4.0, 90.0));
        assert_eq!((t.retries, t.upstream_errors), (3.0, 2.0));
        assert_eq!((t.input_tokens, t.output_tokens, t.cache_read_tokens), (100.0, 50.0, 300.0));
        assert!((t.cost_usd - 0.31).abs() < 1e-12);
    }

    #[test]
    fn tail_bound_is_the_pooled_quantile_bucket() {
        let mut e = Evidence::new();
        let b = SideTick { latency: hist(&[(0.5, 80.0), (1.0, 97.0), (f64::INFINITY, 100.0)]), ..SideTick::default() };
        let c = SideTick { latency: hist(&[(0.5, 70.0), (1.0, 93.0), (f64::INFINITY, 100.0)]), ..SideTick::default() };
        e.fold(&b, &c);
        // Pooled above 0.5 s: 25 %; above 1 s: 5 %: the p95 bound is 1 s.
        let (le, p) = e.latency.bound_for(0.95).unwrap();
        assert_eq!(le, 1.0);
        assert_eq!((p.y, p.n), ([3.0, 7.0], [100.0, 100.0]));
        // The p99 is in +Inf: the highest finite bound stands in.
        assert_eq!(e.latency.bound_for(0.99).unwrap().0, 1.0);
        // A reference from before the rollout decides instead.
        e.set_reference(&[(0.5, 960.0), (1.0, 999.0), (f64::INFINITY, 1000.0)], &[]);
        assert_eq!(e.latency.bound_for(0.95).unwrap().0, 0.5);
        assert!(e.ttft.is_empty() && e.ttft.bound_for(0.95).is_none());
    }

    #[test]
    fn a_changed_bucket_layout_keeps_counting_the_shared_bounds() {
        let mut e = Evidence::new();
        let old = SideTick { latency: hist(&[(1.0, 9.0), (f64::INFINITY, 10.0)]), ..SideTick::default() };
        let new = SideTick { latency: hist(&[(0.5, 5.0), (1.0, 8.0), (f64::INFINITY, 10.0)]), ..SideTick::default() };
        e.fold(&old, &old);
        e.fold(&old, &new);
        let one = &e.latency.above[e.latency.bounds.iter().position(|&b| b == 1.0).unwrap()];
        assert_eq!((one.n, one.y), ([20.0, 20.0], [2.0, 3.0]));
        // 0.5 s exists on the candidate only: the baseline contributes nothing there.
        let half = &e.latency.above[0];
        assert_eq!((half.n, half.y, half.ticks), ([0.0, 10.0], [0.0, 5.0], 0.0));
    }

    #[test]
    fn merge_equals_folding_everything() {
        let t = |r: f64, e: f64| SideTick {
            requests: r,
            errors_5xx: e,
            ok_2xx: r - e,
            latency: hist(&[(1.0, r - 1.0), (f64::INFINITY, r)]),
            ..SideTick::default()
        };
        let mut all = Evidence::new();
        let (mut a, mut b) = (Evidence::new(), Evidence::new());
        for (i, (x, y)) in [(t(10.0, 1.0), t(12.0, 2.0)), (t(8.0, 0.0), t(9.0, 1.0))].iter().enumerate() {
            all.fold(x, y);
            if i == 0 { a.fold(x, y) } else { b.fold(x, y) }
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(a.requests(), [18.0, 21.0]);
    }
}
