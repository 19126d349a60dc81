//! Histogram bucket counts and Prometheus' `histogram_quantile` interpolation.
//!
//! Quantiles are only ever computed from *summed bucket increases* of a window, never averaged:
//! an average of percentiles is not a percentile (the Go dashboard's rollup bug).

/// Cumulative bucket counts (`le` ascending, Prometheus style), with sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// `(upper bound, cumulative count)`, ascending by bound; the last bound is `+Inf`
    /// whenever the source exposed one.
    pub buckets: Vec<(f64, f64)>,
    /// Sum of observed values.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

impl Histogram {
    /// A histogram from cumulative `(le, count)` buckets in any order, as an engine answers
    /// `rate(x_bucket)`: the count is the `+Inf` bucket's (0 without one), the sum unknown (0).
    pub(crate) fn from_cumulative(mut buckets: Vec<(f64, f64)>) -> Histogram {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = buckets.last().filter(|b| b.0 == f64::INFINITY).map_or(0.0, |b| b.1);
        Histogram { buckets, sum: 0.0, count }
    }

    /// True when the histogram holds no observation.
    pub fn is_empty(&self) -> bool {
        self.count <= 0.0 && self.buckets.iter().all(|&(_, c)| c <= 0.0)
    }

    /// Adds `other` into `self`, bucket by bucket.
    ///
    /// Identical bounds (the normal case: one exporter, one bucket layout) add element-wise.
    /// Different layouts are merged on the union of bounds, reading each side as a step function
    /// (its cumulative count at the largest bound not above the merged bound), which never
    /// invents observations.
    pub fn add(&mut self, other: &Histogram) {
        if other.is_empty() && other.buckets.is_empty() {
            return;
        }
        self.sum += other.sum;
        self.count += other.count;
        if self.buckets.len() == other.buckets.len() && self.buckets.iter().zip(&other.buckets).all(|(a, b)| a.0 == b.0)
        {
            for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                a.1 += b.1;
            }
            return;
        }
        let mut bounds: Vec<f64> = self.buckets.iter().chain(&other.buckets).map(|b| b.0).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        self.buckets =
            bounds.into_iter().map(|le| (le, step_at(&self.buckets, le) + step_at(&other.buckets, le))).collect();
    }

    /// The `q` quantile (0..=1) with Prometheus' linear interpolation inside the bucket, or
    /// `None` when there are no observations or no `+Inf` bucket to anchor the total.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let buckets = monotonic(&self.buckets);
        let &(last_le, total) = buckets.last()?;
        if last_le != f64::INFINITY || total <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total;
        let idx = buckets.iter().position(|&(_, c)| c >= rank)?;
        if idx == buckets.len() - 1 {
            // In the +Inf bucket: Prometheus answers the highest finite bound.
            return buckets.len().checked_sub(2).map(|i| buckets[i].0);
        }
        let (upper, count) = buckets[idx];
        let (lower, below) = if idx == 0 { (if upper > 0.0 { 0.0 } else { upper }, 0.0) } else { buckets[idx - 1] };
        if count - below <= 0.0 {
            return Some(upper);
        }
        Some(lower + (upper - lower) * (rank - below) / (count - below))
    }

    /// The `q` quantile of a histogram of seconds, in milliseconds and clamped to a finite
    /// value: every latency percentile zai-dash shows (points, `/api/compare`, the alerts)
    /// comes from here.
    pub(crate) fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.quantile(q).map(|s| super::bounded(s * 1000.0))
    }
}

/// Cumulative count of `buckets` at bound `le` (step function, 0 below the first bound).
fn step_at(buckets: &[(f64, f64)], le: f64) -> f64 {
    buckets.iter().take_while(|b| b.0 <= le).last().map_or(0.0, |b| b.1)
}

/// Forces counts to be non-decreasing, as Prometheus does before interpolating, so a
/// scrape that raced an observation cannot produce a negative bucket.
fn monotonic(buckets: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut max = 0.0_f64;
    buckets
        .iter()
        .map(|&(le, c)| {
            max = max.max(c);
            (le, max)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: &[(f64, f64)]) -> Histogram {
        Histogram { buckets: b.to_vec(), sum: 0.0, count: b.last().map_or(0.0, |x| x.1) }
    }

    #[test]
    fn interpolates_like_prometheus() {
        // 100 observations: 50 in (0,1], 40 in (1,2], 10 in (2,+Inf).
        let x = h(&[(1.0, 50.0), (2.0, 90.0), (f64::INFINITY, 100.0)]);
        assert_eq!(x.quantile(0.5), Some(1.0));
        assert!((x.quantile(0.7).unwrap() - 1.5).abs() < 1e-9);
        assert_eq!(x.quantile(0.99), Some(2.0)); // +Inf bucket -> highest finite bound
        assert!((x.quantile(0.25).unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn empty_or_unanchored_gives_none() {
        assert_eq!(h(&[(1.0, 0.0), (f64::INFINITY, 0.0)]).quantile(0.5), None);
        assert_eq!(h(&[(1.0, 5.0), (2.0, 6.0)]).quantile(0.5), None);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn add_same_and_different_bounds() {
        let mut a = h(&[(1.0, 1.0), (f64::INFINITY, 2.0)]);
        a.add(&h(&[(1.0, 3.0), (f64::INFINITY, 3.0)]));
        assert_eq!(a.buckets, vec![(1.0, 4.0), (f64::INFINITY, 5.0)]);
        assert_eq!(a.count, 5.0);
        let mut b = h(&[(1.0, 1.0), (f64::INFINITY, 1.0)]);
        b.add(&h(&[(0.5, 2.0), (f64::INFINITY, 2.0)]));
        assert_eq!(b.buckets, vec![(0.5, 2.0), (1.0, 3.0), (f64::INFINITY, 3.0)]);
    }

    #[test]
    fn non_monotonic_input_is_repaired() {
        let x = h(&[(1.0, 10.0), (2.0, 8.0), (f64::INFINITY, 10.0)]);
        assert_eq!(x.quantile(0.5), Some(0.5));
    }

    #[test]
    fn an_engines_buckets_in_any_order_become_one_histogram() {
        let x = Histogram::from_cumulative(vec![(f64::INFINITY, 12.0), (0.1, 6.0), (1.0, 12.0)]);
        assert_eq!(x.buckets, vec![(0.1, 6.0), (1.0, 12.0), (f64::INFINITY, 12.0)]);
        assert_eq!(x.count, 12.0);
        assert!((x.quantile_ms(0.5).unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(Histogram::from_cumulative(vec![(1.0, 3.0)]).count, 0.0, "no +Inf: no count");
    }
}
