//! What each scraper must have seen, computed from the sample times both actually took.
//!
//! Every counter of a fake pod is `rate × unit(t)`, where `unit(t)` is the seconds since the
//! pod's (virtual) start or last reset. So every counter-derived number of a window reduces to
//! one *coverage* per pod: the seconds of `unit` that a scraper attributes to the window.
//! - Prometheus' coverage is its `increase()` of a unit-rate counter, replayed here from the
//!   sample timestamps stored in its TSDB, extrapolation included ([`PodRun::prom_cov`]).
//! - zai-dash's coverage is the sum of the increases between its consecutive answered scrapes
//!   whose completion falls in the window's buckets ([`PodRun::dash_cov`]), from the render
//!   times the fake logged. A render within [`AMBIG_MS`] before a bucket edge may complete
//!   after it, so that coverage is a range.
//!
//! In steady state both coverages equal the window length (to a few milliseconds), so the two
//! must agree within the 1 % tolerance alone. Where they legitimately differ (a pod's first
//! scrape is a baseline for zai-dash; Prometheus extrapolates up to half an interval past a
//! series' first and last sample; a scrape completing just after a bucket edge), the suite
//! evaluates the field at the corners of the two coverages and allows exactly that spread.

use std::sync::Arc;

use super::fake::{Family, Life, PodSpec, Series};

/// A render this close before a bucket edge may complete after it (zai-dash assigns a scrape
/// to the bucket in which it *completed*: render, response, parse, then its clock read).
pub const AMBIG_MS: i64 = 30;

/// One pod over the run, with what each scraper took from it.
pub struct PodRun {
    pub spec: Arc<PodSpec>,
    pub families: Vec<Family>,
    pub life: Life,
    pub instance: String,
    /// Render times of zai-dash's answered scrapes, ascending.
    pub dash: Vec<i64>,
    /// Prefix sums of the unit-counter increases between consecutive zai-dash scrapes.
    dash_cum: Vec<f64>,
    /// Spans `(from, to)` in which zai-dash may have dropped a rendered answer (its restart).
    pub dash_uncertain: Vec<(i64, i64)>,
    /// Timestamps of Prometheus' counter samples (explicit, = render times), ascending.
    pub prom: Vec<i64>,
    /// Timestamps of Prometheus' gauge samples (scrape start), ascending.
    pub prom_gauge: Vec<i64>,
}

/// Coverage of one pod in one window: Prometheus' value and zai-dash's range (seconds).
#[derive(Debug, Clone, Copy)]
pub struct Cov {
    pub prom: f64,
    pub lo: f64,
    pub hi: f64,
}

impl PodRun {
    pub fn new(
        spec: Arc<PodSpec>,
        life: Life,
        instance: String,
        dash: Vec<i64>,
        prom: Vec<i64>,
        prom_gauge: Vec<i64>,
    ) -> Self {
        let families = spec.families();
        let mut run = Self {
            spec,
            families,
            life,
            instance,
            dash,
            dash_cum: Vec::new(),
            dash_uncertain: Vec::new(),
            prom,
            prom_gauge,
        };
        run.index();
        run
    }

    fn index(&mut self) {
        self.dash.sort_unstable();
        let mut cum = vec![0.0; self.dash.len()];
        for j in 1..self.dash.len() {
            let (a, b) = (self.life.unit_value(self.dash[j - 1]), self.life.unit_value(self.dash[j]));
            cum[j] = cum[j - 1] + if b >= a { b - a } else { b };
        }
        self.dash_cum = cum;
    }

    pub fn variant(&self) -> &str {
        self.spec.variant
    }

    /// Prometheus' `increase()` over `[end - range, end]` of a unit-rate counter of this pod,
    /// replayed on its stored sample times (Prometheus 2.x `extrapolatedRate`: closed range,
    /// counter resets added back, extrapolation to the range edges when the first/last sample
    /// is within 1.1 average intervals of them, else by half an interval, and never below the
    /// counter's zero point). 0 when fewer than two samples (Prometheus drops the series).
    pub fn prom_cov(&self, end: i64, range: i64) -> f64 {
        let start = end - range;
        let s: Vec<i64> = self.prom.iter().copied().filter(|t| *t >= start && *t <= end).collect();
        if s.len() < 2 {
            return 0.0;
        }
        let v: Vec<f64> = s.iter().map(|t| self.life.unit_value(*t)).collect();
        let mut result = v[v.len() - 1] - v[0];
        let mut last = 0.0;
        for x in &v {
            if *x < last {
                result += last;
            }
            last = *x;
        }
        let (first_t, last_t) = (s[0], s[s.len() - 1]);
        let mut to_start = (first_t - start) as f64 / 1000.0;
        let to_end = (end - last_t) as f64 / 1000.0;
        let sampled = (last_t - first_t) as f64 / 1000.0;
        let avg = sampled / (s.len() - 1) as f64;
        if result > 0.0 && v[0] >= 0.0 {
            let to_zero = sampled * (v[0] / result);
            if to_zero < to_start {
                to_start = to_zero;
            }
        }
        let threshold = avg * 1.1;
        let mut interval = sampled;
        interval += if to_start < threshold { to_start } else { avg / 2.0 };
        interval += if to_end < threshold { to_end } else { avg / 2.0 };
        result * (interval / sampled)
    }

    /// Index of the last zai-dash render at or before `t`.
    fn last_at_or_before(&self, t: i64) -> Option<usize> {
        self.dash.partition_point(|r| *r <= t).checked_sub(1)
    }

    /// Which of zai-dash's scrapes may be the last one completed at or before the edge `e`.
    fn boundaries(&self, e: i64) -> Vec<Option<usize>> {
        let mut out = vec![self.last_at_or_before(e), self.last_at_or_before(e - AMBIG_MS)];
        if let Some(h) = out[0]
            && self.dash_uncertain.iter().any(|(a, b)| (*a..=*b).contains(&self.dash[h]))
        {
            out.push(h.checked_sub(1));
        }
        out.sort();
        out.dedup();
        out
    }

    fn cum(&self, idx: Option<usize>) -> f64 {
        idx.map_or(0.0, |i| self.dash_cum[i])
    }

    /// zai-dash's coverage of `(b0, b1]` (buckets ending in it), as a range; `b0 = None` means
    /// since its first scrape (running totals).
    pub fn dash_cov(&self, b0: Option<i64>, b1: i64) -> (f64, f64) {
        let froms = b0.map_or_else(|| vec![None], |b| self.boundaries(b));
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for to in self.boundaries(b1) {
            for from in &froms {
                let c = (self.cum(to) - self.cum(*from)).max(0.0);
                lo = lo.min(c);
                hi = hi.max(c);
            }
        }
        (lo, hi)
    }

    /// zai-dash's per-pod rate factor in a 5 s point: increases over the time they cover
    /// (`Σ increase / elapsed`), for a unit-rate counter: 1 in steady state, below 1 across a
    /// reset, `None` when the pod has no increase in the bucket. As a range over the edges.
    pub fn dash_rate_factor(&self, b0: i64, b1: i64) -> Option<(f64, f64)> {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for to in self.boundaries(b1) {
            for from in self.boundaries(b0) {
                let (Some(t), f) = (to, from) else { continue };
                let f_idx = match f {
                    Some(f) if f < t => f,
                    None if t > 0 => 0,
                    _ => continue,
                };
                let span = (self.dash[t] - self.dash[f_idx]) as f64 / 1000.0;
                if span <= 0.0 {
                    continue;
                }
                let x = (self.cum(Some(t)) - self.cum(Some(f_idx))) / span;
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        (lo <= hi).then_some((lo, hi))
    }

    /// Coverage of `(end - range, end]` for both scrapers.
    pub fn cov(&self, end: i64, range: i64) -> Cov {
        let (lo, hi) = self.dash_cov(Some(end - range), end);
        Cov { prom: self.prom_cov(end, range), lo, hi }
    }

    /// Coverage of the running totals at `end`: zai-dash since its first scrape, Prometheus'
    /// `increase(x[10m])` (the whole run).
    pub fn cov_total(&self, end: i64) -> Cov {
        let (lo, hi) = self.dash_cov(None, end);
        Cov { prom: self.prom_cov(end, 600_000), lo, hi }
    }

    /// Gauge sample Prometheus' `last_over_time(g[slot - 1ms])` picks at the slot end `s`.
    pub fn prom_gauge_at(&self, s: i64, slot: i64) -> Option<i64> {
        let i = self.prom_gauge.partition_point(|t| *t <= s).checked_sub(1)?;
        (self.prom_gauge[i] > s - slot).then_some(self.prom_gauge[i])
    }

    /// The last zai-dash scrape completed in the slot `(s - slot, s]`.
    pub fn dash_gauge_at(&self, s: i64, slot: i64) -> Option<i64> {
        let i = self.last_at_or_before(s)?;
        (self.dash[i] > s - slot).then_some(self.dash[i])
    }

    /// Every series of the pod matching `sel`.
    pub fn series<'a>(&'a self, sel: &'a Sel) -> impl Iterator<Item = &'a Series> + 'a {
        self.families.iter().flat_map(|f| f.series.iter()).filter(move |s| sel.matches(s))
    }

    /// Σ rates of the series matching `sel`.
    pub fn rate(&self, sel: &Sel) -> f64 {
        self.series(sel).map(|s| s.rate).sum()
    }
}

/// Label matcher: `=`, `!=`, or a status class `=~"5.."`.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Eq,
    Ne,
    Class,
}

/// A series selector, rendered as PromQL and evaluated on the fakes' catalogue alike.
#[derive(Debug, Clone, Copy)]
pub struct Sel {
    pub name: &'static str,
    pub matchers: &'static [(&'static str, Op, &'static str)],
}

impl Sel {
    pub const fn new(name: &'static str) -> Self {
        Self { name, matchers: &[] }
    }

    pub const fn with(name: &'static str, matchers: &'static [(&'static str, Op, &'static str)]) -> Self {
        Self { name, matchers }
    }

    pub fn promql(&self) -> String {
        let m: Vec<String> = self
            .matchers
            .iter()
            .map(|(l, op, v)| match op {
                Op::Eq => format!("{l}=\"{v}\""),
                Op::Ne => format!("{l}!=\"{v}\""),
                Op::Class => format!("{l}=~\"{v}..\""),
            })
            .collect();
        if m.is_empty() { self.name.to_owned() } else { format!("{}{{{}}}", self.name, m.join(",")) }
    }

    pub fn matches(&self, s: &Series) -> bool {
        s.name == self.name
            && self.matchers.iter().all(|(l, op, v)| {
                let got = s.label(l).unwrap_or("");
                match op {
                    Op::Eq => got == *v,
                    Op::Ne => got != *v,
                    Op::Class => got.len() == 3 && got.starts_with(v),
                }
            })
    }
}

/// Σ over pods of `rate(sel) × coverage`.
pub fn count(pods: &[&PodRun], covs: &[f64], sel: &Sel) -> f64 {
    pods.iter().zip(covs).map(|(p, c)| p.rate(sel) * c).sum()
}

/// Prometheus' `histogram_quantile` over the summed `{name}_bucket` increases (seconds).
pub fn quantile(
    pods: &[&PodRun],
    covs: &[f64],
    name: &str,
    extra: &'static [(&'static str, Op, &'static str)],
    q: f64,
) -> Option<f64> {
    let bucket = format!("{name}_bucket");
    let mut by_le: Vec<(f64, f64)> = Vec::new();
    for (p, c) in pods.iter().zip(covs) {
        for s in p.families.iter().flat_map(|f| f.series.iter()).filter(|s| s.name == bucket) {
            if !extra.iter().all(|(l, _, v)| s.label(l) == Some(v)) {
                continue;
            }
            let le: f64 = match s.label("le").unwrap() {
                "+Inf" => f64::INFINITY,
                x => x.parse().unwrap(),
            };
            match by_le.iter_mut().find(|(b, _)| *b == le) {
                Some(e) => e.1 += s.rate * c,
                None => by_le.push((le, s.rate * c)),
            }
        }
    }
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    histogram_quantile(q, &by_le)
}

/// Prometheus' `histogram_quantile` (2.x, classic buckets).
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let &(last_le, total) = buckets.last()?;
    if last_le != f64::INFINITY || total <= 0.0 || buckets.len() < 2 {
        return None;
    }
    let rank = q * total;
    let idx = buckets.iter().position(|&(_, c)| c >= rank)?;
    if idx == buckets.len() - 1 {
        return Some(buckets[buckets.len() - 2].0);
    }
    let (upper, c) = buckets[idx];
    let (lower, below) = if idx == 0 { (0.0, 0.0) } else { buckets[idx - 1] };
    if idx == 0 && upper <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / (c - below))
}

/// Candidate coverages of each pod: Prometheus' value and the far ends of zai-dash's range.
pub fn corners(covs: &[Cov]) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = vec![Vec::new()];
    for c in covs {
        let a = c.prom.min(c.lo);
        let b = c.prom.max(c.hi);
        let options: Vec<f64> = if b - a > 1e-6 { vec![a, b] } else { vec![c.prom] };
        out = out
            .into_iter()
            .flat_map(|prefix| {
                options.iter().map(move |o| {
                    let mut v = prefix.clone();
                    v.push(*o);
                    v
                })
            })
            .collect();
    }
    out
}

/// `f` at Prometheus' coverages, and the largest distance to `f` at any corner: the part of a
/// difference between the scrapers that their sample times explain.
pub fn expect(covs: &[Cov], f: impl Fn(&[f64]) -> Option<f64>) -> (Option<f64>, f64) {
    let prom: Vec<f64> = covs.iter().map(|c| c.prom).collect();
    let center = f(&prom);
    let mut spread: f64 = 0.0;
    for corner in corners(covs) {
        match (center, f(&corner)) {
            (Some(a), Some(b)) => spread = spread.max((a - b).abs()),
            (None, None) => {}
            _ => spread = f64::INFINITY,
        }
    }
    (center, spread)
}
