//! Judging the evidence against a configuration: one row per metric and the overall verdict.
//!
//! Numbers only: no string is built here, so a simulation can judge at every 5 s look. Reasons
//! and `needed_requests` are computed when a [`Judgement`] is serialized (`report`).

use super::boundary::{MAX_HYPOTHESES, holm};
use super::catalog::{MetricId, Source};
use super::evidence::Evidence;
use super::spec::{Allowed, CanaryConfig, MetricSpec, Tuning, Worse};
use super::stratified::{Estimate, Kind, Paired};
use super::verdict::Verdict;

/// The method, as the answer names it.
pub const METHOD: &str = "always_valid_mixture";

/// Paired ticks an amount (tokens, USD) needs before it is tested: its variance comes from the
/// spread between ticks, which a handful of ticks estimates badly (60 ticks: 5 minutes live).
pub(crate) const MIN_TICKS_FOR_AMOUNTS: f64 = 60.0;

/// Where a metric stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    /// Confidently within its allowed degradation.
    Pass,
    /// Significantly higher than the baseline.
    High,
    /// Significantly lower than the baseline.
    Low,
    /// A side has no data for it.
    Nodata,
    /// Not decidable yet.
    Undecided,
}

/// Why a row is what it is (rendered into `reason` when serialized).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A side had no requests, or the family is not exported.
    NoData,
    /// The family had no data on both sides when testing began: no share of `alpha`, no test.
    Untested,
    /// Fewer than the minimum requests on a side.
    TooFewRequests,
    /// An amount with too few ticks to estimate its spread.
    TooFewTicks,
    /// An amount recorded on one side only: no ratio.
    NoRatio,
    /// Within the allowed degradation.
    Within,
    /// Beyond the allowed degradation.
    Beyond,
    /// Above the absolute ceiling.
    AboveCeiling,
    /// Significantly worse (Holm), not yet provably beyond the allowed degradation.
    Significant,
    /// Neither yet.
    Open,
}

/// One metric's row. Values are in the metric's shown unit (percent for shares).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Which metric.
    pub metric: MetricId,
    /// Baseline's value over the interval (plain `Σy/Σn`).
    pub baseline: Option<f64>,
    /// Candidate's value.
    pub candidate: Option<f64>,
    /// Stratified difference (points or unit) or relative change (percent).
    pub delta: Option<f64>,
    /// Confidence sequence of `delta`, valid at every look: for a metric worse one way, each
    /// end a one-sided bound at [`Row::level`] (the ends the decisions use); for an either-way
    /// metric, the two-sided sequence at that level.
    pub delta_ci: Option<[f64; 2]>,
    /// Where the metric stands.
    pub classification: Classification,
    /// The metric's verdict (`insufficient_data` while undecided or without data).
    pub verdict: Verdict,
    /// Why.
    pub why: Why,
    /// Whether a failure of this metric fails the canary.
    pub critical: bool,
    /// Weight in the score.
    pub weight: f64,
    /// Level of the confidence sequence, or of each of its ends: the metric's share of `alpha`
    /// (`alpha · weight / total weight`).
    pub level: f64,
    /// Always-valid p-value of "no difference", against "worse" only for a one-way metric.
    pub p_value: f64,
    /// Tail metrics: the latency bound used, ms.
    pub bound_ms: Option<f64>,
    /// Candidate's own share sequence, percent, when a ceiling applies.
    pub ceiling_ci: Option<[f64; 2]>,
    pub(crate) allowed: Allowed,
    pub(crate) worse: Worse,
    pub(crate) ceiling: Option<f64>,
    /// Sample sizes `[baseline, candidate]` (requests, observations, answered requests) and
    /// numerators.
    pub(crate) n: [f64; 2],
    pub(crate) y: [f64; 2],
    pub(crate) need: Option<Need>,
}

/// What `needed_requests` is computed from, lazily.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Need {
    pub tuning: Tuning,
    pub level: f64,
    /// Current information and candidate requests (information grows with them).
    pub info: f64,
    pub candidate_requests: f64,
    pub delta: f64,
    /// Requests still missing before the minimum is met.
    pub below_minimum: f64,
}

/// The overall answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// `pass`, `warn`, `fail` or `insufficient_data`.
    pub verdict: Verdict,
    /// Weighted share of passing metrics among decided ones, 0-100 (`None` before any).
    pub score: Option<f64>,
    /// One row per enabled metric.
    pub rows: Vec<Row>,
    /// Family-wise error rate.
    pub alpha: f64,
    /// Level of a weight-1 hypothesis: `alpha / total weight` of the tested hypotheses (a
    /// critical metric's is [`super::CRITICAL_ALPHA_WEIGHT`] times this; each row has its own).
    pub level: f64,
    /// Number of hypotheses tested: metrics whose data exist, plus their ceilings.
    pub hypotheses: usize,
    pub(crate) min_requests: f64,
}

impl Judgement {
    /// The candidate's requests over the interval (the 5xx share's denominator).
    pub(crate) fn candidate_requests(&self) -> f64 {
        let requests = |m: MetricId| self.rows.iter().find(|r| r.metric == m).map(|r| r.n[1]);
        requests(MetricId::ErrorRate).or_else(|| requests(MetricId::RateLimited)).unwrap_or(0.0)
    }
}

/// A metric's data before classification.
struct Measured<'e> {
    paired: Option<&'e Paired>,
    bound_s: Option<f64>,
    /// The estimate and the variance of the confidence sequence.
    estimate: Option<Estimate>,
    /// The same comparison as the test of "no difference" sees it (its null variance).
    null: Option<Estimate>,
    /// The candidate's own share, when a ceiling applies.
    share: Option<Estimate>,
    why: Option<Why>,
}

fn measure<'e>(e: &'e Evidence, m: &MetricSpec, tested: bool, cfg: &CanaryConfig) -> Measured<'e> {
    let (paired, bound_s) = match m.id.source() {
        Source::Counter(i) => (Some(&e.counters[i]), None),
        Source::Latency(q) => e.latency.bound_for(q).map_or((None, None), |(b, p)| (Some(p), Some(b))),
        Source::Ttft(q) => e.ttft.bound_for(q).map_or((None, None), |(b, p)| (Some(p), Some(b))),
    };
    let mut out = Measured { paired, bound_s, estimate: None, null: None, share: None, why: None };
    let requests = e.requests();
    if !tested && !too_few(requests, cfg.min_requests()) {
        out.why = Some(Why::Untested);
        return out;
    }
    let Some(p) = paired else {
        out.why = Some(Why::NoData);
        return out;
    };
    let kind = m.id.kind();
    let nothing = kind == Kind::Amount && p.y[0] <= 0.0 && p.y[1] <= 0.0;
    if p.n[0] <= 0.0 || p.n[1] <= 0.0 || nothing {
        out.why = Some(Why::NoData);
    } else if too_few(requests, cfg.min_requests()) || (is_tail(m.id) && too_few(p.n, cfg.min_requests())) {
        out.why = Some(Why::TooFewRequests);
    } else if kind == Kind::Amount && p.ticks < MIN_TICKS_FOR_AMOUNTS {
        out.why = Some(Why::TooFewTicks);
    } else {
        let relative = matches!(m.allowed, Allowed::Relative(_));
        out.estimate = if relative { p.log_ratio(kind) } else { p.difference(kind) };
        out.null = p.no_difference(kind, relative);
        if out.estimate.is_none() || out.null.is_none() {
            out.estimate = None;
            out.why = Some(Why::NoRatio);
        } else if m.ceiling.is_some() {
            out.share = e.own_share(m.id);
        }
    }
    out
}

/// Whether a side is below `min` (requests, or observations).
fn too_few(n: [f64; 2], min: f64) -> bool {
    n[0] < min || n[1] < min
}

/// Tail metrics also need the minimum in histogram observations (TTFT counts only streamed
/// requests).
fn is_tail(id: MetricId) -> bool {
    !matches!(id.source(), Source::Counter(_))
}

/// The hypotheses of one judgement: where each enabled metric's (and its ceiling's) p-value
/// goes, and each one's weight in the split of alpha.
struct Hypotheses {
    slot: [usize; MAX_HYPOTHESES],
    ceiling_slot: [usize; MAX_HYPOTHESES],
    weight: [f64; MAX_HYPOTHESES],
    len: usize,
}

impl Hypotheses {
    /// Every tested metric, then every tested metric's ceiling. A metric whose family had no
    /// data when testing began takes no share (`Evidence::tested`).
    fn new(cfg: &CanaryConfig, enabled: &[usize], tested: &[bool]) -> Self {
        let mut f = Hypotheses {
            slot: [usize::MAX; MAX_HYPOTHESES],
            ceiling_slot: [usize::MAX; MAX_HYPOTHESES],
            weight: [1.0; MAX_HYPOTHESES],
            len: 0,
        };
        for (k, &i) in enabled.iter().enumerate().filter(|&(k, _)| tested[k]) {
            f.slot[k] = f.len;
            f.weight[f.len] = cfg.metrics()[i].alpha_weight();
            f.len += 1;
        }
        for (k, _) in enabled.iter().enumerate().filter(|&(k, &i)| tested[k] && cfg.tuning(i).ceiling.is_some()) {
            f.ceiling_slot[k] = f.len;
            f.len += 1;
        }
        f
    }

    /// `alpha` over the total weight: the level of a weight-1 hypothesis.
    fn unit_level(&self, alpha: f64) -> f64 {
        alpha / self.weight[..self.len].iter().sum::<f64>().max(1.0)
    }
}

/// Judges `e` against `cfg`: every enabled metric's row and the overall verdict.
pub fn judge(e: &Evidence, cfg: &CanaryConfig) -> Judgement {
    let enabled: Vec<usize> = (0..cfg.metrics().len()).filter(|&i| cfg.metrics()[i].enabled).collect();
    let enabled = &enabled[..enabled.len().min(MAX_HYPOTHESES / 2)];
    let tested: Vec<bool> = enabled.iter().map(|&i| e.tested(cfg.metrics()[i].id, cfg.min_requests())).collect();
    let hypotheses = Hypotheses::new(cfg, enabled, &tested);
    let level = hypotheses.unit_level(cfg.alpha());
    let measured: Vec<Measured> =
        enabled.iter().zip(&tested).map(|(&i, &t)| measure(e, &cfg.metrics()[i], t, cfg)).collect();
    // Hypotheses without an estimate yet (too little data) keep p = 1.
    let mut all = [1.0; MAX_HYPOTHESES];
    let mut p = [1.0; MAX_HYPOTHESES];
    for (k, m) in measured.iter().enumerate() {
        let t = cfg.tuning(enabled[k]);
        let (Some(null), true) = (m.null, m.estimate.is_some() && hypotheses.slot[k] != usize::MAX) else { continue };
        p[k] = t.p_value(null);
        all[hypotheses.slot[k]] = p[k];
        if let (Some((c, mix)), Some(share), true) = (t.ceiling, m.share, hypotheses.ceiling_slot[k] != usize::MAX) {
            all[hypotheses.ceiling_slot[k]] = mix.p_value(share.delta - c, 1.0 / share.variance);
        }
    }
    let n = hypotheses.len;
    let mut rejected = [false; MAX_HYPOTHESES];
    holm(&all[..n], &hypotheses.weight[..n], cfg.alpha(), &mut rejected[..n]);
    let is_rejected = |s: usize| s != usize::MAX && rejected[s];
    let rows: Vec<Row> = (0..enabled.len())
        .map(|k| {
            let w = hypotheses.slot.get(k).and_then(|&s| hypotheses.weight.get(s)).copied().unwrap_or(1.0);
            let significant = is_rejected(hypotheses.slot[k]);
            let decided = Decided { level: level * w, ceiling_level: level, p_value: p[k], significant };
            let (spec, tuning) = (&cfg.metrics()[enabled[k]], cfg.tuning(enabled[k]));
            row(spec, tuning, &measured[k], decided, is_rejected(hypotheses.ceiling_slot[k]), e, cfg)
        })
        .collect();
    let (verdict, score) = overall(&rows);
    Judgement { verdict, score, rows, alpha: cfg.alpha(), level, hypotheses: n, min_requests: cfg.min_requests() }
}

/// What the multiplicity step decided for one metric.
#[derive(Debug, Clone, Copy)]
struct Decided {
    /// The metric's share of alpha: `alpha · weight / total weight`.
    level: f64,
    /// Its ceiling's share.
    ceiling_level: f64,
    p_value: f64,
    /// Holm rejected "no difference".
    significant: bool,
}

impl Tuning {
    /// The always-valid p-value of "no difference" against the worse direction(s), from the
    /// comparison's null form ([`Paired::no_difference`]): one-sided mixtures for a one-way
    /// metric (a lower-is-worse one looks at `−d`), two-sided otherwise.
    fn p_value(&self, est: Estimate) -> f64 {
        let distance = if self.up.is_none() { -est.delta } else { est.delta };
        self.mixture.p_value(distance, 1.0 / est.variance)
    }
}

/// Builds one row from its measurement and the multiplicity decisions.
fn row(
    m: &MetricSpec,
    t: &Tuning,
    data: &Measured,
    decided: Decided,
    ceiling_rejected: bool,
    e: &Evidence,
    cfg: &CanaryConfig,
) -> Row {
    let level = decided.level;
    let scale = m.id.display_scale();
    let (n, y) = data.paired.map_or(([0.0; 2], [0.0; 2]), |p| (p.n, p.y));
    let value = |s: usize| data.paired.and_then(|p| p.rate(s)).map(|r| r * scale);
    let mut r = Row {
        metric: m.id,
        baseline: value(0),
        candidate: value(1),
        delta: None,
        delta_ci: None,
        classification: Classification::Undecided,
        verdict: Verdict::InsufficientData,
        why: data.why.unwrap_or(Why::Open),
        critical: m.critical,
        weight: m.weight,
        level,
        p_value: decided.p_value,
        bound_ms: data.bound_s.map(|b| b * 1000.0),
        ceiling_ci: None,
        allowed: m.allowed,
        worse: m.worse,
        ceiling: m.ceiling,
        n,
        y,
        need: None,
    };
    let requests = e.requests();
    let below_minimum = (cfg.min_requests() - requests[0].min(requests[1])).max(0.0);
    let Some(est) = data.estimate else {
        r.classification = match r.why {
            Why::NoData | Why::Untested => Classification::Nodata,
            _ => Classification::Undecided,
        };
        if r.why == Why::TooFewRequests {
            r.need =
                Some(Need { tuning: *t, level, info: 0.0, candidate_requests: requests[1], delta: 0.0, below_minimum });
        }
        return r;
    };
    let info = 1.0 / est.variance;
    let hw = t.mixture.half_width(info, level);
    let (lo, hi) = (est.delta - hw, est.delta + hw);
    let shown = |d: f64| match m.allowed {
        Allowed::Absolute(_) => d * scale,
        Allowed::Relative(_) => 100.0 * d.exp_m1(),
    };
    r.delta = Some(shown(est.delta));
    r.delta_ci = Some([shown(lo), shown(hi)]);
    let ceiling = ceiling_state(t, data, decided.ceiling_level, &mut r);
    let (class, verdict, why) = classify(t, est.delta, lo, hi, decided.significant, ceiling, ceiling_rejected);
    r.classification = class;
    r.verdict = verdict;
    r.why = why;
    if class == Classification::Undecided {
        r.need =
            Some(Need { tuning: *t, level, info, candidate_requests: requests[1], delta: est.delta, below_minimum });
    }
    r
}

/// Where the candidate's own share stands against its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ceiling {
    /// No ceiling configured.
    None,
    /// Provably below.
    Below,
    /// Provably above.
    Above,
    /// Not decided yet.
    Open,
}

fn ceiling_state(t: &Tuning, data: &Measured, level: f64, r: &mut Row) -> Ceiling {
    let (Some((c, mix)), Some(share)) = (t.ceiling, data.share) else {
        return Ceiling::None;
    };
    let hw = mix.half_width(1.0 / share.variance, level);
    r.ceiling_ci = Some([100.0 * (share.delta - hw), 100.0 * (share.delta + hw)]);
    if share.delta - hw > c {
        Ceiling::Above
    } else if share.delta + hw <= c {
        Ceiling::Below
    } else {
        Ceiling::Open
    }
}

/// The classification table (ARCHITECTURE.md, "Canary analysis"). Every warn or fail needs a
/// Holm rejection of "no difference" (or of "below the ceiling"), required here explicitly: the
/// test uses the variance under no difference, the sequence the one at the estimate, so a
/// sequence beyond the margin does not by itself imply the rejection.
fn classify(
    t: &Tuning,
    delta: f64,
    lo: f64,
    hi: f64,
    significant: bool,
    ceiling: Ceiling,
    ceiling_rejected: bool,
) -> (Classification, Verdict, Why) {
    use Classification::{High, Low, Pass, Undecided};
    if let Some(up) = t.up
        && lo > up
        && significant
    {
        return (High, Verdict::Fail, Why::Beyond);
    }
    if let Some(down) = t.down
        && hi < -down
        && significant
    {
        return (Low, Verdict::Fail, Why::Beyond);
    }
    if ceiling == Ceiling::Above && ceiling_rejected {
        return (High, Verdict::Fail, Why::AboveCeiling);
    }
    let within_up = t.up.is_none_or(|up| hi <= up);
    let within_down = t.down.is_none_or(|down| lo >= -down);
    if within_up && within_down && matches!(ceiling, Ceiling::None | Ceiling::Below) {
        return (Pass, Verdict::Pass, Why::Within);
    }
    if significant && t.up.is_some() && delta > 0.0 {
        return (High, Verdict::Warn, Why::Significant);
    }
    if significant && t.down.is_some() && delta < 0.0 {
        return (Low, Verdict::Warn, Why::Significant);
    }
    (Undecided, Verdict::InsufficientData, Why::Open)
}

/// The overall verdict and score.
///
/// `fail` when a critical metric fails or the score is below 75; `warn` when any metric warns
/// or a non-critical one fails (a known regression outranks missing data); `insufficient_data`
/// while a critical metric is undecided or has no data; `pass` when the score is at least 95.
pub(crate) fn overall(rows: &[Row]) -> (Verdict, Option<f64>) {
    let decided =
        |r: &&Row| matches!(r.classification, Classification::Pass | Classification::High | Classification::Low);
    let total: f64 = rows.iter().filter(decided).map(|r| r.weight).sum();
    let passing: f64 = rows.iter().filter(|r| r.classification == Classification::Pass).map(|r| r.weight).sum();
    // `+ 0.0`: an empty sum of floats is -0.0, which would show as a score of "-0".
    let score = (total > 0.0).then(|| 100.0 * passing / total + 0.0);
    let verdict = if rows.iter().any(|r| r.critical && r.verdict == Verdict::Fail) || score.is_some_and(|s| s < 75.0) {
        Verdict::Fail
    } else if rows.iter().any(|r| matches!(r.verdict, Verdict::Warn | Verdict::Fail)) {
        Verdict::Warn
    } else if rows.iter().any(|r| r.critical && r.classification != Classification::Pass) {
        Verdict::InsufficientData
    } else if score.is_none_or(|s| s >= 95.0) {
        Verdict::Pass
    } else {
        Verdict::Warn
    };
    (verdict, score)
}

impl Need {
    /// Candidate requests at which the sequence would decide at the current estimate and
    /// variance per request (traffic split unchanged): its half-width must fall to the distance
    /// between the estimate and the nearest margin. `None` when the estimate sits on a margin.
    pub(crate) fn requests(&self) -> Option<f64> {
        let cap = 1e12;
        if self.info <= 0.0 {
            return Some(self.below_minimum.max(1.0).ceil());
        }
        let d = self.delta;
        let to_pass = [self.tuning.up.map(|u| u - d), self.tuning.down.map(|l| d + l)]
            .into_iter()
            .flatten()
            .fold(f64::INFINITY, f64::min);
        let target = if to_pass > 0.0 { to_pass } else { -to_pass };
        let info = self.tuning.mixture.info_for_half_width(target, self.level)?;
        let n = (self.candidate_requests * info / self.info).min(cap);
        Some((n - self.candidate_requests).max(self.below_minimum).max(1.0).ceil())
    }
}

/// [`classify`] without a ceiling, for the table test.
#[cfg(test)]
pub(crate) fn classify_for_tests(
    t: &Tuning,
    delta: f64,
    lo: f64,
    hi: f64,
    significant: bool,
) -> (Classification, Verdict, Why) {
    classify(t, delta, lo, hi, significant, Ceiling::None, false)
}

/// A tuning with the given margins, for the table test.
#[cfg(test)]
pub(crate) fn tuning_for_tests(up: Option<f64>, down: Option<f64>) -> Tuning {
    Tuning { up, down, mixture: super::boundary::Mixture::with_rho(1.0, super::boundary::Sides::Two), ceiling: None }
}
