//! The comparisons: zai-dash's answers against PromQL, bucket by bucket, with the spread the
//! two scrapers' sample times explain (see `model`), and zai-dash against itself across tables,
//! ranges, reads, the live stream and a restart.
//!
//! PromQL's answers are kept as they come, NaN and infinities included: a value is compared
//! or, where the model says there is none (a status code no pod of the variant exports), its
//! absence is checked (see `ledger`). A check never passes because a side had nothing to say.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::fields::{Field, Kind, json_num, point_fields, quota_fields, total_fields};
use super::ledger::{Ctx, Ledger, MAX_EXPLAINED, Tol};
use super::model::{Cov, Op, PodRun, Sel, count, expect, quantile};
use super::prom::Prometheus;

/// How far zai-dash's clock read after a scrape may trail the render by, beyond the render
/// jitter already in the logs: 5 s points divide by zai-dash's own elapsed time.
pub const JITTER_MS: f64 = 10.0;
/// Relative tolerance of every rate, count, quantile and gauge.
pub const REL: Tol = Tol::Rel(0.01);
/// Tolerance of an error share, in percentage points.
pub const POINTS: Tol = Tol::Abs(0.3);

/// The whole run as the verifier sees it.
pub struct Run {
    pub pods: Vec<PodRun>,
    pub scrape_ms: i64,
    pub slot_ms: i64,
    /// `(time, what, variant)` of every lifecycle event.
    pub events: Vec<(i64, &'static str, String)>,
}

/// Key of a point: variant and bucket end.
pub type Key = (String, i64);

impl Run {
    pub fn pods_of(&self, variant: &str) -> Vec<&PodRun> {
        self.pods.iter().filter(|p| p.variant() == variant).collect()
    }

    /// Every variant some pod has.
    pub fn variants(&self) -> BTreeSet<&str> {
        self.pods.iter().map(PodRun::variant).collect()
    }

    /// Events of `variant` that touch the bucket `(b0, b1]` (or the scrape before it).
    pub fn scenario(&self, variant: &str, b0: i64, b1: i64) -> String {
        let labels: BTreeSet<&str> = self
            .events
            .iter()
            .filter(|(t, _, v)| v == variant && *t > b0 - 2 * self.scrape_ms && *t <= b1)
            .map(|(_, what, _)| *what)
            .collect();
        if labels.is_empty() { "steady".into() } else { labels.into_iter().collect::<Vec<_>>().join("+") }
    }

    /// The finding a failure of this field in this bucket points to: a rate or gauge in a wide
    /// bucket that a pod entered or left is finding 1.
    fn finding_for(&self, field: &Field, scenario: &str, wide: bool) -> Option<u8> {
        let churny = scenario.contains("churn") || scenario.contains("death");
        let sensitive = matches!(field.kind, Kind::Rate(_) | Kind::Gauge(_) | Kind::Util);
        (wide && churny && sensitive).then_some(1)
    }

    pub fn rel(&self, t: i64, r0: i64) -> String {
        format!("R0{:+.1}s", (t - r0) as f64 / 1000.0)
    }
}

fn tol_for(field: &Field) -> Tol {
    if field.name == "error_rate_pct" { POINTS } else { REL }
}

/// Series of a range query by variant: ts -> value (NaN and infinities kept).
async fn by_variant(
    prom: &Prometheus,
    expr: &str,
    start: i64,
    end: i64,
    step: i64,
) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let mut out: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for (labels, values) in prom.range(expr, start, end, step).await {
        let v = labels.get("variant").cloned().unwrap_or_default();
        out.entry(v).or_default().extend(values);
    }
    out
}

/// Gauge presence model over `(b0, b1]`: Prometheus' value, zai-dash's value, and per pod the
/// slack its entering or leaving the bucket may add with another (valid) presence weighting.
fn gauge(run: &Run, pods: &[&PodRun], family: &str, b0: i64, b1: i64) -> (f64, f64, Vec<f64>) {
    let slot = run.slot_ms;
    let n = ((b1 - b0) / slot) as f64;
    let (mut prom, mut dash, mut slack) = (0.0, 0.0, Vec::new());
    for p in pods {
        let mut max: f64 = 0.0;
        let mut s = b0 + slot;
        while s <= b1 {
            if let Some(t) = p.prom_gauge_at(s, slot) {
                prom += p.spec.gauge_at(family, t, slot).unwrap();
            }
            if let Some(t) = p.dash_gauge_at(s, slot) {
                let v = p.spec.gauge_at(family, t, slot).unwrap();
                dash += v;
                max = max.max(v);
            }
            s += slot;
        }
        let mut pod_slack = 0.0;
        if n > 1.0 {
            let first = p.dash.first().copied().unwrap_or(i64::MAX);
            let last = p.dash.last().copied().unwrap_or(i64::MIN);
            let died = p.life.down_from_ms.is_some();
            let ends = usize::from(first > b0 && first <= b1) + usize::from(died && last > b0 && last <= b1);
            pod_slack = max * ends as f64 / n;
        }
        slack.push(pod_slack);
    }
    (prom / n, dash / n, slack)
}

/// Compares points of one resolution (`width` ms buckets) with PromQL.
pub async fn points(
    ledger: &mut Ledger,
    run: &Run,
    prom: &Prometheus,
    area: &str,
    width: i64,
    pts: &BTreeMap<Key, Value>,
    r0: i64,
) {
    let Some(tmin) = pts.keys().map(|k| k.1).min() else {
        ledger.fact(&ctx(None, area, "-", "-"), "points", "answer", false, "no points to compare".into());
        return;
    };
    let tmax = pts.keys().map(|k| k.1).max().unwrap();
    let raw = width == run.slot_ms;
    let w_s = width as f64 / 1000.0;
    if raw {
        quota_vs_prometheus(ledger, run, prom, area, pts, r0).await;
    }
    quota(ledger, run, area, width, pts, r0);
    for field in point_fields() {
        let series = by_variant(prom, &field.promql(width, run.slot_ms), tmin, tmax, width).await;
        for ((variant, ts), p) in pts {
            let pods = run.pods_of(variant);
            let b0 = ts - width;
            let scenario = run.scenario(variant, b0, *ts);
            let at = format!("{variant} @ {}", run.rel(*ts, r0));
            let c = ctx(run.finding_for(&field, &scenario, !raw), area, &scenario, &at);
            let harness = ctx(None, &format!("harness: {area}"), &scenario, &at);
            let dash = json_num(p, field.name);
            let promv = series.get(variant).and_then(|m| m.get(ts)).copied();
            match field.kind {
                Kind::Rate(sel) if raw => {
                    raw_rate(ledger, &c, &field, &pods, &sel, b0, *ts, dash, promv, w_s, &harness)
                }
                Kind::Count(sel) if raw => {
                    raw_count(ledger, &c, &field, &pods, &sel, (b0, *ts), (dash, promv), &harness)
                }
                Kind::Rate(_) | Kind::Count(_) | Kind::Ratio(..) | Kind::Quantile(..) => {
                    let covs: Vec<Cov> = pods.iter().map(|p| p.cov(*ts, width)).collect();
                    let (exp, spread) = expect(&covs, field.eval(&pods, w_s));
                    ledger.expect(
                        &c,
                        field.group,
                        field.name,
                        exp.is_some(),
                        ("zai-dash", dash),
                        ("Prometheus", promv),
                        tol_for(&field),
                        spread,
                    );
                    ledger.expect(
                        &harness,
                        "replay",
                        field.name,
                        exp.is_some(),
                        ("Prometheus", promv),
                        ("replayed", exp),
                        Tol::Rel(2e-3),
                        0.0,
                    );
                }
                Kind::Gauge(g) => {
                    let (pe, de, slack) = gauge(run, &pods, g, b0, *ts);
                    let slack: f64 = slack.iter().sum();
                    ledger.num(
                        &c,
                        field.group,
                        field.name,
                        ("zai-dash", dash),
                        ("Prometheus", promv),
                        REL,
                        (de - pe).abs() + slack,
                    );
                    ledger.num(
                        &harness,
                        "replay",
                        field.name,
                        ("Prometheus", promv),
                        ("replayed", Some(pe)),
                        Tol::Rel(1e-6),
                        0.0,
                    );
                }
                Kind::Util => {
                    let (pc, dc, sc) = gauge(run, &pods, "zai_proxy_concurrent_requests", b0, *ts);
                    let (pm, dm, sm) = gauge(run, &pods, "zai_proxy_max_workers", b0, *ts);
                    let expected = pc / pm;
                    // A pod's other presence weighting moves its concurrency and its workers
                    // together: the ratio at every choice of direction per pod.
                    let mut spread: f64 = 0.0;
                    for signs in 0..3_usize.pow(pods.len() as u32) {
                        let (mut c2, mut m2, mut k) = (dc, dm, signs);
                        for (c_slack, m_slack) in sc.iter().zip(&sm) {
                            let dir = (k % 3) as f64 - 1.0;
                            k /= 3;
                            c2 += dir * c_slack;
                            m2 += dir * m_slack;
                        }
                        let off = if m2 > 0.0 { (c2 / m2 - expected).abs() } else { f64::INFINITY };
                        spread = spread.max(off);
                    }
                    ledger.num(&c, field.group, field.name, ("zai-dash", dash), ("Prometheus", promv), REL, spread);
                    ledger.num(
                        &harness,
                        "replay",
                        field.name,
                        ("Prometheus", promv),
                        ("replayed", Some(expected)),
                        Tol::Rel(1e-6),
                        0.0,
                    );
                }
            }
        }
    }
}

/// A rate of a 5 s point: zai-dash divides each pod's increases by the time they cover
/// (`Σ increase / elapsed`, docs/decisions.md, Point semantics), Prometheus' `increase / W` by the bucket. They
/// agree whenever every pod covers the whole bucket; where a pod enters, leaves or restarts,
/// the definitions differ by design and zai-dash is held to its own definition instead, replayed
/// from its scrape times.
#[allow(clippy::too_many_arguments)]
fn raw_rate(
    ledger: &mut Ledger,
    c: &Ctx,
    field: &Field,
    pods: &[&PodRun],
    sel: &Sel,
    b0: i64,
    b1: i64,
    dash: Option<f64>,
    promv: Option<f64>,
    w_s: f64,
    harness: &Ctx,
) {
    let covs: Vec<Cov> = pods.iter().map(|p| p.cov(b1, b1 - b0)).collect();
    let (prom_exp, _) = expect(&covs, field.eval(pods, w_s));
    let (mut lo, mut hi, mut jitter) = (0.0, 0.0, 0.0);
    for p in pods {
        let r = p.rate(sel);
        if let Some((a, b)) = p.dash_rate_factor(b0, b1) {
            lo += r * a;
            hi += r * b;
            jitter += r * 2.0 * JITTER_MS / (b1 - b0) as f64;
        }
    }
    let exists = prom_exp.is_some();
    let replayed = ("replayed", prom_exp);
    ledger.expect(harness, "replay", field.name, exists, ("Prometheus", promv), replayed, Tol::Rel(2e-3), 0.0);
    let pe = prom_exp.unwrap_or(0.0);
    let explained = (lo - pe).abs().max((hi - pe).abs());
    if !exists || explained <= 0.002 * pe.abs() + 1e-9 {
        let both = (("zai-dash", dash), ("Prometheus", promv));
        ledger.expect(c, field.group, field.name, exists, both.0, both.1, REL, explained + jitter);
    } else {
        let mut c = c.clone();
        c.area = format!("{} per-pod elapsed", c.area);
        let mid = (lo + hi) / 2.0;
        let expected = Some(mid);
        ledger.num(
            &c,
            field.group,
            field.name,
            ("zai-dash", dash),
            ("replayed Σ increase/elapsed", expected),
            REL,
            (hi - lo) / 2.0 + jitter,
        );
    }
}

/// The sample size of a 5 s point: zai-dash's increases in the bucket against Prometheus'
/// `increase()`, within the spread the two scrapers' sample times explain. Across a counter
/// reset that spread can exceed [`MAX_EXPLAINED`] of Prometheus' value, and then the comparison
/// bounds nothing: each scraper loses the traffic between its own last scrape and the reset,
/// Prometheus extrapolates over what is left, and zai-dash's scrapes rendered just before both
/// edges may complete on either side (a 2 s bucket: Prometheus' 1.37 s of coverage against
/// zai-dash's 1.49 to 2.49 s). There the count is held to its own definition, zai-dash's
/// increases replayed from its scrape times (`... own increases` in the summary), as the rates
/// of 5 s points are: a tighter check than the unbounded comparison, never a looser one.
#[allow(clippy::too_many_arguments)]
fn raw_count(
    ledger: &mut Ledger,
    c: &Ctx,
    field: &Field,
    pods: &[&PodRun],
    sel: &Sel,
    (b0, b1): (i64, i64),
    (dash, promv): (Option<f64>, Option<f64>),
    harness: &Ctx,
) {
    let covs: Vec<Cov> = pods.iter().map(|p| p.cov(b1, b1 - b0)).collect();
    let (prom_exp, spread) = expect(&covs, field.eval(pods, (b1 - b0) as f64 / 1000.0));
    let exists = prom_exp.is_some();
    ledger.expect(
        harness,
        "replay",
        field.name,
        exists,
        ("Prometheus", promv),
        ("replayed", prom_exp),
        Tol::Rel(2e-3),
        0.0,
    );
    let bounded = prom_exp.is_none_or(|e| spread <= MAX_EXPLAINED * e.abs());
    if bounded {
        ledger.expect(c, field.group, field.name, exists, ("zai-dash", dash), ("Prometheus", promv), REL, spread);
        return;
    }
    let (lo, hi) = pods.iter().fold((0.0, 0.0), |(lo, hi), p| {
        let (a, b) = p.dash_cov(Some(b0), b1);
        let r = p.rate(sel);
        (lo + r * a, hi + r * b)
    });
    let mut c = c.clone();
    c.area = format!("{} own increases", c.area);
    let replayed = ("replayed Σ increase", Some((lo + hi) / 2.0));
    ledger.num(&c, field.group, field.name, ("zai-dash", dash), replayed, REL, (hi - lo) / 2.0);
}

pub fn ctx(finding: Option<u8>, area: &str, scenario: &str, at: &str) -> Ctx {
    Ctx { finding, area: area.to_owned(), scenario: scenario.to_owned(), at: at.to_owned() }
}

/// Running totals: each observation `(variant, ts, point, source)` against
/// `sum(increase(x[10m]))` at `ts` (the whole run), with the spread explained by each pod's
/// first sample (a baseline for zai-dash; Prometheus extrapolates half an interval before it)
/// and last sample.
pub async fn totals(
    ledger: &mut Ledger,
    run: &Run,
    prom: &Prometheus,
    area: &str,
    obs: &[(String, i64, Value)],
    r0: i64,
    finding: Option<u8>,
) {
    let Some(tmin) = obs.iter().map(|o| o.1).min() else {
        ledger.fact(&ctx(finding, area, "-", "-"), "cumulative", "answer", false, "no observations to compare".into());
        return;
    };
    let tmax = obs.iter().map(|o| o.1).max().unwrap();
    for field in total_fields() {
        let Kind::Count(sel) = field.kind else { panic!("{} is not a count", field.name) };
        let series = by_variant(prom, &field.promql(600_000, run.slot_ms), tmin, tmax, run.slot_ms).await;
        for (variant, ts, p) in obs {
            let pods = run.pods_of(variant);
            let covs: Vec<Cov> = pods.iter().map(|p| p.cov_total(*ts)).collect();
            let (exp, spread) = expect(&covs, |c| Some(count(&pods, c, &sel)));
            let scenario = run.scenario(variant, *ts - run.slot_ms, *ts);
            let at = format!("{variant} @ {}", run.rel(*ts, r0));
            let promv = series.get(variant).and_then(|m| m.get(ts)).copied();
            ledger.expect(
                &ctx(finding, area, &scenario, &at),
                "cumulative",
                field.name,
                exp.is_some(),
                ("zai-dash", json_num(p, field.name)),
                ("Prometheus", promv),
                REL,
                spread,
            );
            ledger.expect(
                &ctx(None, &format!("harness: {area}"), &scenario, &at),
                "replay",
                field.name,
                exp.is_some(),
                ("Prometheus", promv),
                ("replayed", exp),
                Tol::Rel(2e-3),
                0.0,
            );
        }
    }
}

/// Cumulative fields never go down along time, whichever answer they come from.
pub fn monotonic(ledger: &mut Ledger, run: &Run, area: &str, obs: &[(String, i64, Value, String)], r0: i64) {
    for field in total_fields() {
        let mut by_variant: BTreeMap<&str, Vec<(i64, f64, &str)>> = BTreeMap::new();
        let mut missing = Vec::new();
        for (v, ts, p, src) in obs {
            match json_num(p, field.name) {
                Some(x) => by_variant.entry(v).or_default().push((*ts, x, src)),
                None => missing.push(format!("{v} {} ({src})", run.rel(*ts, r0))),
            }
        }
        let c = ctx(Some(2), area, "whole run", "every variant");
        let detail =
            format!("{} observations without a value: {:?}", missing.len(), missing.iter().take(5).collect::<Vec<_>>());
        ledger.fact(&c, "cumulative", &format!("{} present", field.name), missing.is_empty(), detail);
        for (variant, mut list) in by_variant {
            list.sort_by_key(|e| e.0);
            // The largest value seen at any earlier bucket, and where it came from.
            let mut earlier: Option<(i64, f64, &str)> = None;
            let mut bad = Vec::new();
            for group in list.chunk_by(|a, b| a.0 == b.0) {
                for &(ts, x, src) in group {
                    if let Some((pts, px, psrc)) = earlier
                        && x < px * (1.0 - 1e-9) - 1e-9
                    {
                        bad.push(format!(
                            "{} ({src}) = {x:.3} after {} ({psrc}) = {px:.3}",
                            run.rel(ts, r0),
                            run.rel(pts, r0)
                        ));
                    }
                }
                let top = group.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
                if earlier.is_none_or(|e| top.1 > e.1) {
                    earlier = Some(top);
                }
            }
            let c = ctx(Some(2), area, "whole run", variant);
            let detail = if bad.is_empty() {
                format!("{} observations never go down", list.len())
            } else {
                format!("{} steps down, first: {}", bad.len(), bad[0])
            };
            ledger.fact(&c, "cumulative", field.name, bad.is_empty(), detail);
        }
    }
}

/// How two JSON values differ: not at all, only in the last bits of some numbers (a different
/// summation order), or materially.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Diff {
    Same,
    Bits,
    Material,
}

fn diff(a: Option<&Value>, b: Option<&Value>) -> Diff {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if x == y {
                Diff::Same
            } else if (x - y).abs() <= 1e-12 * x.abs().max(y.abs()) {
                Diff::Bits
            } else {
                Diff::Material
            }
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.keys().chain(y.keys()).map(|k| diff(x.get(k), y.get(k))).max().unwrap_or(Diff::Same)
        }
        (x, y) if x == y => Diff::Same,
        _ => Diff::Material,
    }
}

/// Whether two points agree but for the last bits of some numbers.
pub fn same_enough(a: &Value, b: &Value) -> bool {
    diff(Some(a), Some(b)) <= Diff::Bits
}

/// Reads of the same bucket agree field for field (`what` names the two sources). Material
/// differences in cumulative fields are finding 2; differences in the last bits only break
/// the "one sum order, so REST and the live stream agree to the bit" of docs/decisions.md,
/// Point semantics (tag 8).
pub fn same_point(ledger: &mut Ledger, c: &Ctx, a: &Value, b: &Value, what: &str) {
    let totals: BTreeSet<&str> = total_fields().iter().map(|f| f.name).collect();
    let keys: BTreeSet<&String> = a.as_object().unwrap().keys().chain(b.as_object().unwrap().keys()).collect();
    let (mut total, mut other, mut bits) = (Vec::new(), Vec::new(), Vec::new());
    for k in keys {
        let d = diff(a.get(k), b.get(k));
        if d == Diff::Same {
            continue;
        }
        let text = format!("{k}: {} vs {}", a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null));
        match (d, totals.contains(k.as_str())) {
            (Diff::Bits, _) => bits.push(text),
            (_, true) => total.push(text),
            _ => other.push(text),
        }
    }
    let mut c2 = c.clone();
    c2.finding = Some(2);
    ledger.fact(&c2, "same answer", &format!("{what} (cumulative fields)"), total.is_empty(), total.join("; "));
    ledger.fact(c, "same answer", &format!("{what} (other fields)"), other.is_empty(), other.join("; "));
    let mut c8 = c.clone();
    c8.finding = Some(8);
    ledger.fact(&c8, "same answer", &format!("{what} (to the bit)"), bits.is_empty(), bits.join("; "));
}

/// One `/api/compare` answer.
pub struct CompareObs {
    pub label: &'static str,
    /// End of the data the window holds (the last closed raw bucket).
    pub data_end: i64,
    pub t_after: i64,
    pub body: Value,
}

/// Selector with extra label equalities (leaked: a test process, a handful of selectors).
fn sel_with(
    name: &'static str,
    base: &[(&'static str, Op, &'static str)],
    extra: &[(&'static str, &'static str)],
) -> Sel {
    let mut m: Vec<(&'static str, Op, &'static str)> = base.to_vec();
    m.extend(extra.iter().map(|(l, v)| (*l, Op::Eq, *v)));
    Sel::with(name, Box::leak(m.into_boxed_slice()))
}

/// An `/api/compare` window against PromQL at the window's data end. Rates divide by the time
/// the data covers (`covered_seconds`, docs/decisions.md, Windows): from the first bucket with data of
/// the variant (or the window start) to the window's end.
pub async fn compare(ledger: &mut Ledger, run: &Run, prom: &Prometheus, o: &CompareObs, r0: i64) {
    let window = 60_000;
    let e = o.data_end;
    let area = format!("/api/compare window=1m ({})", o.label);
    for (side, variant) in [("baseline_stats", "production"), ("candidate_stats", "canary")] {
        let pods = run.pods_of(variant);
        let stats = &o.body[side];
        let scenario = run.scenario(variant, e - window, e);
        let at = format!("{variant} window ending {}", run.rel(e, r0));
        let covs: Vec<Cov> = pods.iter().map(|p| p.cov(e, window)).collect();
        // Expected covered span: from the start of the variant's first bucket with data (or from
        // that bucket's end, or from the window start) to the data end or the request time.
        let first = pods.iter().filter_map(|p| p.dash.first()).min().copied().unwrap_or(e);
        let first_bucket_end = (first + run.slot_ms - 1).div_euclid(run.slot_ms) * run.slot_ms;
        let start_hi = (first_bucket_end - run.slot_ms).max(e - window);
        let start_lo = first_bucket_end.max(e - window);
        let cov_lo = (e - start_lo) as f64 / 1000.0 - 0.1;
        let cov_hi = (o.t_after - start_hi) as f64 / 1000.0 + 0.1;
        let partial = start_hi > e - window;
        let f3 = Some(3);
        let covered = stats.get("covered_seconds").or_else(|| o.body.get("covered_seconds")).and_then(Value::as_f64);
        let cf = ctx(f3, &area, &scenario, &at);
        ledger.fact(
            &cf,
            "window span",
            "covered_seconds",
            covered.is_some_and(|c| c >= cov_lo && c <= cov_hi),
            format!(
                "covered_seconds {covered:?}, expected between {cov_lo:.1} and {cov_hi:.1} (window {} s)",
                window / 1000
            ),
        );
        let inc = |s: &Sel| format!("sum by (variant) (increase({}[{window}ms]))", s.promql());
        let at_e = |expr: String| async move {
            prom.instant(&expr, e)
                .await
                .into_iter()
                .find(|(l, _)| l.get("variant").map(String::as_str) == Some(variant))
                .map(|(_, v)| v[0].1)
        };
        let c = ctx(None, &area, &scenario, &at);
        let counts = [("requests", super::fields::REQ), ("errors_5xx", super::fields::REQ_5XX)];
        for (name, sel) in counts {
            let (exp, spread) = expect(&covs, |cv| Some(count(&pods, cv, &sel)));
            let pv = at_e(inc(&sel)).await;
            ledger.num(&c, "counts", name, ("zai-dash", json_num(stats, name)), ("Prometheus", pv), REL, spread);
            ledger.num(
                &ctx(None, &format!("harness: {area}"), &scenario, &at),
                "replay",
                name,
                ("Prometheus", pv),
                ("replayed", exp),
                Tol::Rel(2e-3),
                0.0,
            );
        }
        let (share, spread) = expect(&covs, |cv| {
            let d = count(&pods, cv, &super::fields::REQ);
            (d > 0.0).then(|| 100.0 * count(&pods, cv, &super::fields::REQ_5XX) / d)
        });
        let pv = at_e(format!("100 * {} / {}", inc(&super::fields::REQ_5XX), inc(&super::fields::REQ))).await;
        ledger.expect(
            &c,
            "error %",
            "error_rate_pct",
            share.is_some(),
            ("zai-dash", json_num(stats, "error_rate_pct")),
            ("Prometheus", pv),
            POINTS,
            spread,
        );
        for (name, h, q) in [
            ("latency_p50_ms", super::fields::DURATION, 0.5),
            ("latency_p95_ms", super::fields::DURATION, 0.95),
            ("latency_p99_ms", super::fields::DURATION, 0.99),
            ("ttft_p95_ms", super::fields::TTFT, 0.95),
        ] {
            let (exp, spread) = expect(&covs, |cv| quantile(&pods, cv, h, &[], q).map(|s| s * 1000.0));
            let pv = at_e(format!(
                "1000 * histogram_quantile({q}, sum by (variant, le) (increase({h}_bucket[{window}ms])))"
            ))
            .await;
            let both = (("zai-dash", json_num(stats, name)), ("Prometheus", pv));
            ledger.expect(&c, "quantiles", name, exp.is_some(), both.0, both.1, REL, spread);
        }
        // Window rates: the window's increase over the covered span.
        let rates: [(&str, Sel, f64); 4] = [
            ("req_rate", super::fields::REQ, 1.0),
            ("token_rate_in", sel_with("zai_proxy_tokens_total", &[], &[("direction", "input")]), 1.0),
            ("token_rate_out", sel_with("zai_proxy_tokens_total", &[], &[("direction", "output")]), 1.0),
            ("cost_per_hour_usd", super::fields::COST, 3600.0),
        ];
        let cr = ctx(if partial { f3 } else { None }, &area, &scenario, &at);
        for (name, sel, k) in rates {
            let (_, spread) = expect(&covs, |cv| Some(count(&pods, cv, &sel)));
            // No answer from Prometheus is a failed check, not a skipped one.
            let pv = at_e(inc(&sel)).await;
            let mid = (cov_lo + cov_hi) / 2.0;
            let reference = pv.map(|pv| k * pv / mid);
            let band = pv.map_or(0.0, |pv| {
                k * pv * (1.0 / cov_lo - 1.0 / mid).abs().max((1.0 / cov_hi - 1.0 / mid).abs()) + k * spread / cov_lo
            });
            ledger.num(
                &cr,
                "rates",
                name,
                ("zai-dash", json_num(stats, name)),
                ("Prometheus increase / covered span", reference),
                REL,
                band,
            );
        }
        let (rate, n) = (json_num(stats, "req_rate"), json_num(stats, "requests"));
        let consistent = match (covered, rate, n) {
            (Some(cov), Some(rate), Some(n)) => (rate * cov - n).abs() <= 1e-6 * n.max(1.0),
            _ => false,
        };
        ledger.fact(
            &cf,
            "window span",
            "req_rate × covered_seconds = requests",
            consistent,
            format!("{rate:?} × {covered:?} vs {n:?}"),
        );
    }
}

/// `/api/models` over an explicit window `(start, end]` against PromQL at `end`.
#[allow(clippy::too_many_arguments)]
pub async fn models(
    ledger: &mut Ledger,
    run: &Run,
    prom: &Prometheus,
    area: &str,
    finding: Option<u8>,
    start: i64,
    end: i64,
    rows: &Value,
    r0: i64,
) {
    let window = end - start;
    let empty = rows.as_array().is_none_or(Vec::is_empty);
    let c0 = ctx(finding, area, "-", &format!("({}, {}]", run.rel(start, r0), run.rel(end, r0)));
    ledger.fact(&c0, "answer", "rows", !empty, format!("{} rows", rows.as_array().map_or(0, Vec::len)));
    if empty {
        return;
    }
    rows_are_expected(ledger, run, &c0, rows);
    let dirs = [
        ("tokens_input", "input"),
        ("tokens_output", "output"),
        ("tokens_cache_read", "cache_read"),
        ("tokens_cache_write", "cache_write"),
    ];
    for variant in ["production", "canary"] {
        let pods = run.pods_of(variant);
        let scenario = run.scenario(variant, start, end);
        let covs: Vec<Cov> = pods.iter().map(|p| p.cov(end, window)).collect();
        let models: BTreeSet<&'static str> = pods.iter().flat_map(|p| p.spec.models.iter().map(|m| m.name)).collect();
        for model in models {
            let row = rows.as_array().unwrap().iter().find(|r| r["variant"] == variant && r["model"] == model);
            let at = format!("{variant}/{model} ({}, {}]", run.rel(start, r0), run.rel(end, r0));
            let c = ctx(finding, area, &scenario, &at);
            let Some(row) = row else {
                ledger.fact(&c, "tokens", "row", false, "no row for this variant and model".into());
                continue;
            };
            for (name, d) in dirs {
                let sel = sel_with("zai_proxy_tokens_total", &[], &[("model", model), ("direction", d)]);
                let (_, spread) = expect(&covs, |cv| Some(count(&pods, cv, &sel)));
                let pv = prom
                    .instant(&format!("sum by (variant) (increase({}[{window}ms]))", sel.promql()), end)
                    .await
                    .into_iter()
                    .find(|(l, _)| l.get("variant").map(String::as_str) == Some(variant))
                    .map(|(_, v)| v[0].1);
                ledger.num(&c, "tokens", name, ("zai-dash", json_num(row, name)), ("Prometheus", pv), REL, spread);
            }
            let sel = sel_with("zai_proxy_estimated_cost_usd_total", &[], &[("model", model)]);
            let (_, spread) = expect(&covs, |cv| Some(count(&pods, cv, &sel)));
            let pv = prom
                .instant(&format!("sum by (variant) (increase({}[{window}ms]))", sel.promql()), end)
                .await
                .into_iter()
                .find(|(l, _)| l.get("variant").map(String::as_str) == Some(variant))
                .map(|(_, v)| v[0].1);
            ledger.num(
                &c,
                "cost",
                "cost_usd",
                ("zai-dash", json_num(row, "cost_usd")),
                ("Prometheus", pv),
                REL,
                spread,
            );
        }
    }
}

/// `/api/models` holds one row per variant and model some pod of the variant serves, and no
/// other (no phantom variant or model, no row twice).
fn rows_are_expected(ledger: &mut Ledger, run: &Run, c: &Ctx, rows: &Value) {
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    for variant in run.variants() {
        for p in run.pods_of(variant) {
            expected.extend(p.spec.models.iter().map(|m| (variant.to_owned(), m.name.to_owned())));
        }
    }
    let got: Vec<(String, String)> = rows
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (r["variant"].as_str().unwrap_or("?").to_owned(), r["model"].as_str().unwrap_or("?").to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let unique: BTreeSet<(String, String)> = got.iter().cloned().collect();
    let extra: Vec<&(String, String)> = unique.difference(&expected).collect();
    ledger.fact(
        c,
        "answer",
        "rows: one per variant and model served, no other",
        extra.is_empty() && unique.len() == got.len(),
        format!("{} rows, {} distinct; unexpected: {extra:?}", got.len(), unique.len()),
    );
}

/// Every point's quota block shows exactly what every pod exports (the quota is account-wide:
/// taken from one pod, never summed, at every width), and no field the pods do not export.
pub fn quota(ledger: &mut Ledger, run: &Run, area: &str, width: i64, pts: &BTreeMap<Key, Value>, r0: i64) {
    let (numbers, limits) = quota_fields();
    let mut shape: BTreeSet<String> = numbers.iter().map(|f| f.path.clone()).collect();
    shape.extend(limits.iter().map(|(path, _)| path.clone()));
    for ((variant, ts), p) in pts {
        let c = ctx(None, area, &run.scenario(variant, ts - width, *ts), &format!("{variant} @ {}", run.rel(*ts, r0)));
        for f in &numbers {
            let exported = ("exported by every pod", Some(f.value));
            ledger.num(&c, "quota", &f.path, ("zai-dash", json_num(p, &f.path)), exported, Tol::Rel(1e-12), 0.0);
        }
        for (path, want) in &limits {
            let got = path.split('.').try_fold(p, |v, k| v.get(k));
            ledger.fact(&c, "quota", path, got == Some(want), format!("{got:?}, expected {want}"));
        }
        let mut fields = BTreeSet::new();
        leaves(&p["quota"], "quota", &mut fields);
        let extra: Vec<&String> = fields.difference(&shape).collect();
        ledger.fact(
            &c,
            "quota",
            "no field the pods do not export",
            extra.is_empty(),
            format!("{extra:?} in {}", p["quota"]),
        );
    }
}

/// Dotted paths of the leaves of a JSON object.
fn leaves(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v.as_object() {
        Some(o) => o.iter().for_each(|(k, x)| leaves(x, &format!("{prefix}.{k}"), out)),
        None => {
            out.insert(prefix.to_owned());
        }
    }
}

/// The quota numbers of raw points against Prometheus' reading of the same gauges, and
/// Prometheus' reading against what the pods export (a harness check: the selectors are right).
async fn quota_vs_prometheus(
    ledger: &mut Ledger,
    run: &Run,
    prom: &Prometheus,
    area: &str,
    pts: &BTreeMap<Key, Value>,
    r0: i64,
) {
    let (Some(tmin), Some(tmax)) = (pts.keys().map(|k| k.1).min(), pts.keys().map(|k| k.1).max()) else { return };
    for f in quota_fields().0 {
        let series = by_variant(prom, &f.promql(run.slot_ms), tmin, tmax, run.slot_ms).await;
        for ((variant, ts), p) in pts {
            let scenario = run.scenario(variant, ts - run.slot_ms, *ts);
            let at = format!("{variant} @ {}", run.rel(*ts, r0));
            let promv = series.get(variant).and_then(|m| m.get(ts)).copied();
            let c = ctx(None, area, &scenario, &at);
            ledger.num(&c, "quota", &f.path, ("zai-dash", json_num(p, &f.path)), ("Prometheus", promv), REL, 0.0);
            let h = ctx(None, &format!("harness: {area}"), &scenario, &at);
            ledger.num(&h, "replay", &f.path, ("Prometheus", promv), ("exported", Some(f.value)), Tol::Rel(1e-12), 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::harness::fake::Life;
    use crate::harness::fields::REQ;
    use crate::harness::pods;

    const RESET: i64 = 1_047_000;

    /// canary-a scraped every 500 ms by both scrapers, zai-dash 10 ms before each raw edge
    /// (both edges of a 2 s bucket are ambiguous), Prometheus 25 ms after each half second.
    fn pod(reset_ms: Option<i64>) -> PodRun {
        let life = Life { born_ms: 0, up_from_ms: 0, down_from_ms: None, reset_ms };
        let dash: Vec<i64> = (0..20).map(|i| 1_040_490 + 500 * i).collect();
        let prom: Vec<i64> = (0..20).map(|i| 1_040_025 + 500 * i).collect();
        PodRun::new(Arc::new(pods::canary_a()), life, "a".into(), dash, prom, Vec::new())
    }

    /// The sample-size checks of the bucket `(1046, 1048]` s for a zai-dash value of `dash`
    /// and Prometheus' replayed value: `(area, passed)` of each non-harness check.
    fn count_checks(pod: &PodRun, dash: f64) -> Vec<(String, bool)> {
        let field = point_fields().into_iter().find(|f| f.name == "requests").unwrap();
        let (b0, b1) = (1_046_000, 1_048_000);
        let prom = pod.cov(b1, b1 - b0).prom * pod.rate(&REQ);
        let mut l = Ledger::default();
        let (c, h) = (ctx(None, "raw", "-", "-"), ctx(None, "harness: raw", "-", "-"));
        raw_count(&mut l, &c, &field, &[pod], &REQ, (b0, b1), (Some(dash), Some(prom)), &h);
        assert!(l.failures().all(|f| !f.area.starts_with("harness")), "the replay disagrees with itself");
        l.checks.iter().filter(|f| !f.area.starts_with("harness")).map(|f| (f.area.clone(), f.ok)).collect()
    }

    #[test]
    fn a_reset_bucket_that_prometheus_cannot_bound_is_held_to_zai_dash_own_increases() {
        let p = pod(Some(RESET));
        let rate = p.rate(&REQ);
        // zai-dash's increases if every scrape completes before the next edge: 46.49, 46.99,
        // the reset's 0.49 and 47.99.
        let truth = rate * 1.99;
        assert_eq!(count_checks(&p, truth), [("raw own increases".to_owned(), true)]);
        // A pod counted as if it had not reset (the traffic before the reset added back), or
        // the reset's scrape dropped: both outside the edges' ambiguity.
        assert_eq!(count_checks(&p, rate * 2.6), [("raw own increases".to_owned(), false)]);
        assert_eq!(count_checks(&p, rate * 1.4), [("raw own increases".to_owned(), false)]);
    }

    #[test]
    fn a_steady_bucket_is_compared_with_prometheus() {
        let p = pod(None);
        let rate = p.rate(&REQ);
        assert_eq!(count_checks(&p, rate * 2.0), [("raw".to_owned(), true)]);
        assert_eq!(count_checks(&p, rate * 2.6), [("raw".to_owned(), false)]);
    }
}
