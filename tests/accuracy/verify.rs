//! The comparisons: zai-dash's answers against PromQL, bucket by bucket, with the spread the
//! two scrapers' sample times explain (see `model`), and zai-dash against itself across tables,
//! ranges, reads, the live stream and a restart.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::fields::{Field, Kind, json_num, point_fields, total_fields};
use super::ledger::{Ctx, Ledger, Tol};
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

/// Series of a range query by variant: ts -> value.
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
        out.entry(v).or_default().extend(values.into_iter().filter(|(_, x)| x.is_finite()));
    }
    out
}

/// Gauge presence model over `(b0, b1]`: Prometheus' value, zai-dash's value, and the slack a
/// pod entering or leaving the bucket may add with another (valid) presence weighting.
fn gauge(run: &Run, pods: &[&PodRun], family: &str, b0: i64, b1: i64) -> (f64, f64, f64) {
    let slot = run.slot_ms;
    let n = ((b1 - b0) / slot) as f64;
    let (mut prom, mut dash, mut slack) = (0.0, 0.0, 0.0);
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
        if n > 1.0 {
            let first = p.dash.first().copied().unwrap_or(i64::MAX);
            let last = p.dash.last().copied().unwrap_or(i64::MIN);
            let died = p.life.down_from_ms.is_some();
            let ends = usize::from(first > b0 && first <= b1) + usize::from(died && last > b0 && last <= b1);
            slack += max * ends as f64 / n;
        }
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
    for field in point_fields() {
        if matches!(field.kind, Kind::Quota(..)) && !raw {
            continue;
        }
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
                Kind::Rate(_) | Kind::Count(_) | Kind::Ratio(..) | Kind::Quantile(..) => {
                    let covs: Vec<Cov> = pods.iter().map(|p| p.cov(*ts, width)).collect();
                    let (exp, spread) = expect(&covs, field.eval(&pods, w_s));
                    ledger.num(
                        &c,
                        field.group,
                        field.name,
                        ("zai-dash", dash),
                        ("Prometheus", promv),
                        tol_for(&field),
                        spread,
                    );
                    ledger.num(
                        &harness,
                        "replay",
                        field.name,
                        ("Prometheus", promv),
                        ("replayed", exp),
                        Tol::Rel(2e-3),
                        0.0,
                    );
                }
                Kind::Gauge(g) => {
                    let (pe, de, slack) = gauge(run, &pods, g, b0, *ts);
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
                    let mut spread: f64 = 0.0;
                    for (c2, m2) in [(dc - sc, dm + sm), (dc + sc, dm - sm), (dc - sc, dm - sm), (dc + sc, dm + sm)] {
                        if m2 > 0.0 {
                            spread = spread.max((c2 / m2 - expected).abs());
                        }
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
                Kind::Quota(..) => {
                    ledger.num(
                        &c,
                        field.group,
                        field.name,
                        ("zai-dash", dash),
                        ("Prometheus", promv),
                        Tol::Rel(1e-9),
                        0.0,
                    );
                }
            }
        }
    }
}

/// A rate of a 5 s point: zai-dash divides each pod's increases by the time they cover
/// (`Σ increase / elapsed`, decisions section 8), Prometheus' `increase / W` by the bucket. They
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
    ledger.num(harness, "replay", field.name, ("Prometheus", promv), ("replayed", prom_exp), Tol::Rel(2e-3), 0.0);
    let pe = prom_exp.unwrap_or(0.0);
    let explained = (lo - pe).abs().max((hi - pe).abs());
    if explained <= 0.002 * pe.abs() + 1e-9 {
        ledger.num(c, field.group, field.name, ("zai-dash", dash), ("Prometheus", promv), REL, explained + jitter);
    } else {
        let mut c = c.clone();
        c.area = format!("{} per-pod elapsed", c.area);
        let mid = (lo + hi) / 2.0;
        let expected = (prom_exp.is_some() || hi > 0.0).then_some(mid);
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
    let Some(tmin) = obs.iter().map(|o| o.1).min() else { return };
    let tmax = obs.iter().map(|o| o.1).max().unwrap();
    for field in total_fields() {
        let Kind::Count(sel) = field.kind else { continue };
        let series = by_variant(prom, &field.promql(600_000, run.slot_ms), tmin, tmax, run.slot_ms).await;
        for (variant, ts, p) in obs {
            let pods = run.pods_of(variant);
            let covs: Vec<Cov> = pods.iter().map(|p| p.cov_total(*ts)).collect();
            let (exp, spread) = expect(&covs, |c| Some(count(&pods, c, &sel)));
            let scenario = run.scenario(variant, *ts - run.slot_ms, *ts);
            let at = format!("{variant} @ {}", run.rel(*ts, r0));
            let promv = series.get(variant).and_then(|m| m.get(ts)).copied();
            ledger.num(
                &ctx(finding, area, &scenario, &at),
                "cumulative",
                field.name,
                ("zai-dash", json_num(p, field.name)),
                ("Prometheus", promv),
                REL,
                spread,
            );
            ledger.num(
                &ctx(None, &format!("harness: {area}"), &scenario, &at),
                "replay",
                field.name,
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
        for (v, ts, p, src) in obs {
            if let Some(x) = json_num(p, field.name) {
                by_variant.entry(v).or_default().push((*ts, x, src));
            }
        }
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
/// decisions section 8's "same sum order everywhere, so REST and SSE agree to the bit" (tag 8).
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
/// the data covers (`covered_seconds`, decisions section 8): from the first bucket with data of
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
        let (_, spread) = expect(&covs, |cv| {
            let d = count(&pods, cv, &super::fields::REQ);
            (d > 0.0).then(|| 100.0 * count(&pods, cv, &super::fields::REQ_5XX) / d)
        });
        let pv = at_e(format!("100 * {} / {}", inc(&super::fields::REQ_5XX), inc(&super::fields::REQ))).await;
        ledger.num(
            &c,
            "error %",
            "error_rate_pct",
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
            let (_, spread) = expect(&covs, |cv| quantile(&pods, cv, h, &[], q).map(|s| s * 1000.0));
            let pv = at_e(format!(
                "1000 * histogram_quantile({q}, sum by (variant, le) (increase({h}_bucket[{window}ms])))"
            ))
            .await;
            ledger.num(&c, "quantiles", name, ("zai-dash", json_num(stats, name)), ("Prometheus", pv), REL, spread);
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
            let Some(pv) = at_e(inc(&sel)).await else { continue };
            let mid = (cov_lo + cov_hi) / 2.0;
            let reference = k * pv / mid;
            let band =
                k * pv * (1.0 / cov_lo - 1.0 / mid).abs().max((1.0 / cov_hi - 1.0 / mid).abs()) + k * spread / cov_lo;
            ledger.num(
                &cr,
                "rates",
                name,
                ("zai-dash", json_num(stats, name)),
                ("Prometheus increase / covered span", Some(reference)),
                REL,
                band,
            );
        }
        if let (Some(cov), Some(rate), Some(n)) = (covered, json_num(stats, "req_rate"), json_num(stats, "requests")) {
            ledger.fact(
                &cf,
                "window span",
                "req_rate × covered_seconds = requests",
                (rate * cov - n).abs() <= 1e-6 * n.max(1.0),
                format!("{rate} × {cov} vs {n}"),
            );
        }
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
