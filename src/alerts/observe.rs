//! What the engine reads each tick, and the value of each rule for each variant from it.
//!
//! Window metrics come from the stats source for each distinct window (the window sums the
//! compare page reads), `canary_verdict` from the canary analysis `/api/compare` runs
//! ([`crate::ports::rollout::judge`], since the candidate's rollout began), the median
//! baselines from a history of points refreshed once per window, `worker_utilization` from the
//! latest live point, `target_down` and `storage_healthy` from the health board.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use tokio::sync::Notify;

use super::metric::{Metric, PROCESS_VARIANT, verdict_rank};
use super::rules::{Rule, Scope};
use crate::canary::{CanaryConfig, Verdict};
use crate::health::TargetHealth;
use crate::point::Point;
use crate::ports::ingest::{Event, PointSink};
use crate::ports::read::{DataSource, SourceError, WindowStats};
use crate::ports::rollout::{self, Interval};

/// The latest live point of each variant, fed by the writer's point sink; each published set
/// is a tick that wakes the engine.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    latest: RwLock<BTreeMap<String, Point>>,
    tick: Notify,
}

impl Feed {
    /// Latest points no older than `since_ms` (older ones belong to variants that stopped).
    pub(crate) fn fresh(&self, since_ms: i64) -> BTreeMap<String, Point> {
        let Ok(latest) = self.latest.read() else { return BTreeMap::new() };
        latest.iter().filter(|(_, p)| p.timestamp >= since_ms).map(|(v, p)| (v.clone(), p.clone())).collect()
    }

    /// Waits for the next published point set.
    pub(crate) async fn ticked(&self) {
        self.tick.notified().await;
    }
}

impl PointSink for Feed {
    fn publish(&self, points: Vec<Point>) {
        if let Ok(mut latest) = self.latest.write() {
            for p in points {
                latest.insert(p.variant.clone(), p);
            }
        }
        self.tick.notify_one();
    }

    fn publish_events(&self, _events: Vec<Event>) {}
}

/// Everything one evaluation reads.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    /// Per window length: each variant's statistics (absent when the source failed).
    pub windows: BTreeMap<i64, BTreeMap<String, WindowStats>>,
    /// Fresh latest points.
    pub latest: BTreeMap<String, Point>,
    /// Per variant: its targets on the health board and how many are down.
    pub targets: BTreeMap<String, (usize, usize)>,
    /// Per rule name and variant: the median baseline.
    pub medians: BTreeMap<String, BTreeMap<String, Option<f64>>>,
    /// The database refuses writes (the writer's report on the health board).
    pub storage_failing: bool,
    /// Each variant's quota runway (`None`: the points could not be read this tick).
    pub quota: Option<crate::budget::quota::QuotaReport>,
    /// The objectives' statuses and alert values (`None`: no objective, or not evaluated).
    pub slos: Option<super::objectives::SloOutcome>,
    /// Per (baseline, candidate): the canary verdict since the rollout began, and the
    /// candidate's requests.
    pub verdicts: BTreeMap<(String, String), (Verdict, f64)>,
    /// Spend and the budgets' shares (`None`: could not be read this tick).
    pub spend: Option<crate::budget::spend::SpendReport>,
}

impl Inputs {
    /// Reads the windows the rules need; a failing source leaves its windows out (their rules
    /// are not evaluated this tick) and is reported.
    pub(crate) async fn read_windows(
        &mut self,
        rules: &[Rule],
        source: &dyn DataSource,
        now_ms: i64,
    ) -> Option<SourceError> {
        let windows: BTreeSet<i64> = rules.iter().filter(|r| r.expr.metric.windowed()).map(|r| r.window_ms).collect();
        let mut error = None;
        for w in windows {
            match source.window_stats(now_ms, w).await {
                Ok(stats) => {
                    self.windows.insert(w, stats);
                }
                Err(e) => error = Some(e),
            }
        }
        error
    }

    /// [`Inputs::read_windows`] from the buckets kept in `kept` and the recent ones read now.
    pub(crate) async fn read_windows_by_bucket(
        &mut self,
        rules: &[Rule],
        source: &dyn DataSource,
        kept: &mut super::windows::BucketSums,
        now_ms: i64,
    ) -> Option<SourceError> {
        let windows: BTreeSet<i64> = rules.iter().filter(|r| r.expr.metric.windowed()).map(|r| r.window_ms).collect();
        let (stats, error) = kept.window_stats(source, &windows, now_ms).await;
        self.windows.extend(stats);
        error
    }

    /// Judges every pair a `canary_verdict` rule watches, as `/api/compare` judges it by
    /// default; a pair the source cannot answer is left out (its rules wait a tick).
    pub async fn read_verdicts(
        &mut self,
        rules: &[Rule],
        source: &dyn DataSource,
        cfg: &CanaryConfig,
        now_ms: i64,
    ) -> Option<SourceError> {
        let mut error = None;
        for rule in rules.iter().filter(|r| r.expr.metric == Metric::CanaryVerdict) {
            for variant in self.variants_of(rule, std::iter::empty()) {
                let key = (rule.baseline.clone(), variant);
                if self.verdicts.contains_key(&key) {
                    continue;
                }
                let judged = match Interval::rollout(source, &key.1, now_ms).await {
                    Ok(interval) => rollout::judge(source, (&key.0, &key.1), interval, cfg).await,
                    Err(e) => Err(e),
                };
                match judged {
                    Ok(j) => {
                        let requests = j.judgement.candidate_requests();
                        self.verdicts.insert(key, (j.judgement.verdict, requests));
                    }
                    Err(e) => error = Some(e),
                }
            }
        }
        error
    }

    /// Counts each variant's targets and those whose scrapes fail.
    pub(crate) fn read_health(&mut self, targets: &[TargetHealth]) {
        for t in targets.iter().filter(|t| !t.retired) {
            let entry = self.targets.entry(t.variant.clone()).or_default();
            entry.0 += 1;
            if !t.up && t.consecutive_failures > 0 {
                entry.1 += 1;
            }
        }
    }

    /// Every variant some input knows of.
    pub(crate) fn variants(&self) -> BTreeSet<String> {
        let from_windows = self.windows.values().flat_map(|w| w.keys());
        from_windows.chain(self.latest.keys()).chain(self.targets.keys()).cloned().collect()
    }

    /// The variants a rule is evaluated for: its own, or every known one (`extra`: those with
    /// a record, so an alert of a vanished variant resolves); never the canary's baseline.
    pub(crate) fn variants_of(&self, rule: &Rule, extra: impl Iterator<Item = String>) -> BTreeSet<String> {
        if rule.expr.metric.of_process() {
            return BTreeSet::from([PROCESS_VARIANT.to_owned()]);
        }
        let mut out = match &rule.scope {
            Scope::One(v) => BTreeSet::from([v.clone()]),
            Scope::Each => self.variants().into_iter().chain(extra).collect(),
        };
        if rule.expr.metric == Metric::CanaryVerdict {
            out.remove(&rule.baseline);
        }
        out
    }

    /// The rule's value for `variant` and the requests behind it; `None` when the inputs it
    /// needs could not be read this tick.
    pub(crate) fn value(&self, rule: &Rule, variant: &str) -> Option<(Option<f64>, f64)> {
        let metric = rule.expr.metric;
        match metric {
            Metric::TargetDown => {
                let down = self.targets.get(variant).map(|(_, down)| *down as f64);
                Some((down.or(Some(0.0)), f64::INFINITY))
            }
            Metric::WorkerUtilization => {
                Some((self.latest.get(variant).and_then(|p| metric.of_point(p)), f64::INFINITY))
            }
            Metric::CanaryVerdict => self.verdict(rule, variant),
            Metric::StorageHealthy => Some((Some(if self.storage_failing { 0.0 } else { 1.0 }), f64::INFINITY)),
            Metric::QuotaRunwaySeconds => {
                let view = self.quota.as_ref()?.get(variant);
                Some((view.and_then(crate::budget::quota::QuotaView::quota_runway_seconds), f64::INFINITY))
            }
            Metric::SpendShare { monthly, projected } => {
                Some((super::costs::share(self.spend.as_ref()?, monthly, projected), f64::INFINITY))
            }
            Metric::SloBurnRate => {
                let found = self.slos.as_ref()?.alerts.get(&(rule.name.clone(), variant.to_owned()));
                Some((found.and_then(|(value, _)| *value), f64::INFINITY))
            }
            _ => {
                let stats = self.windows.get(&rule.window_ms)?.get(variant);
                let requests = stats.map_or(0.0, |s| s.side.requests);
                let value = stats.and_then(|s| metric.of_window(s));
                Some((self.relative(rule, variant, value), requests))
            }
        }
    }

    /// What one evaluation found for the rule and `variant`; `None` when its inputs could not
    /// be read this tick. An objective's alert fires as the objective's evaluation says (its
    /// comparison is the exported rules' own), not by comparing the value shown.
    pub fn observe(&self, rule: &Rule, variant: &str) -> Option<super::eval::Observation> {
        let (value, requests) = self.value(rule, variant)?;
        if rule.expr.metric == Metric::SloBurnRate {
            let fires = self.slos.as_ref()?.alerts.get(&(rule.name.clone(), variant.to_owned())).is_some_and(|a| a.1);
            return Some(super::eval::Observation { value, holds: fires });
        }
        Some(super::eval::Observation::judge(rule, value, requests))
    }

    /// `value / median` for rules that compare with their median; the value itself otherwise.
    fn relative(&self, rule: &Rule, variant: &str, value: Option<f64>) -> Option<f64> {
        if rule.expr.median_range_ms.is_none() {
            return value;
        }
        let median = self.medians.get(&rule.name)?.get(variant).copied().flatten()?;
        value.filter(|_| median > 0.0).map(|v| v / median)
    }

    /// The canary verdict of `variant` against the rule's baseline, as its rank.
    fn verdict(&self, rule: &Rule, variant: &str) -> Option<(Option<f64>, f64)> {
        let (verdict, requests) = self.verdicts.get(&(rule.baseline.clone(), variant.to_owned()))?;
        Some((Some(verdict_rank(*verdict)), *requests))
    }
}

/// Medians of a rule's metric per variant over a history, refreshed at most once per window.
#[derive(Debug, Default)]
pub(crate) struct Medians {
    /// Per rule: when last read, and the medians.
    cache: BTreeMap<String, (i64, BTreeMap<String, Option<f64>>)>,
}

impl Medians {
    /// Refreshes what is due and copies every rule's medians into `inputs`.
    pub(crate) async fn refresh(&mut self, rules: &[Rule], source: &dyn DataSource, now_ms: i64, inputs: &mut Inputs) {
        for rule in rules {
            let Some(range_ms) = rule.expr.median_range_ms else { continue };
            let due = self.cache.get(&rule.name).is_none_or(|(at, _)| now_ms - at >= rule.window_ms.max(1_000));
            if due {
                match source.series(now_ms, range_ms, rule.window_ms).await {
                    Ok(points) => {
                        self.cache.insert(rule.name.clone(), (now_ms, medians(rule, range_ms, &points)));
                    }
                    Err(e) => {
                        tracing::debug!(rule = %rule.name, error = %e, "Median history unavailable; keeping the last one.")
                    }
                }
            }
            if let Some((_, m)) = self.cache.get(&rule.name) {
                inputs.medians.insert(rule.name.clone(), m.clone());
            }
        }
    }
}

/// Per variant, the median of the rule's metric over steps with enough requests; `None` with
/// too little history to call anything usual (a twenty-fourth of the range, at least 3 steps).
pub(crate) fn medians(rule: &Rule, range_ms: i64, points: &[Point]) -> BTreeMap<String, Option<f64>> {
    let steps = range_ms / rule.window_ms.max(1);
    let needed = (steps / 24).max(3) as usize;
    let mut by_variant: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.requests >= rule.min_requests.max(1.0)) {
        if let Some(v) = rule.expr.metric.of_point(p).filter(|v| v.is_finite()) {
            by_variant.entry(p.variant.as_str()).or_default().push(v);
        }
    }
    by_variant.into_iter().map(|(variant, mut values)| (variant.to_owned(), median(&mut values, needed))).collect()
}

fn median(values: &mut [f64], needed: usize) -> Option<f64> {
    if values.len() < needed {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] })
}

/// A source whose window statistics and history are always the same (tests); it has no
/// points, sums or marks of its own.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct FixedStats {
    /// Answer of `window_stats`, per window.
    pub windows: BTreeMap<i64, BTreeMap<String, WindowStats>>,
    /// Answer of `series`.
    pub series: Vec<Point>,
    /// Answer of `strata`.
    pub strata: Option<Vec<crate::ports::read::Stratum>>,
    /// How often `strata` was asked.
    pub strata_reads: std::sync::atomic::AtomicUsize,
    /// `window_stats` never answers (an engine that hangs).
    pub stalled: bool,
}

#[cfg(test)]
mod fixed {
    use std::collections::{BTreeMap, BTreeSet};

    use super::{FixedStats, Point, SourceError, WindowStats};
    use crate::ports::BoxFuture;
    use crate::ports::read::{ChartData, DataSource, PointQuery, StrataQuery, Stratum, WindowQuery, WindowSums};

    type Answer<'a, T> = BoxFuture<'a, Result<T, SourceError>>;

    fn ready<'a, T: Send + 'a>(v: T) -> Answer<'a, T> {
        Box::pin(std::future::ready(Ok(v)))
    }

    impl DataSource for FixedStats {
        fn variants(&self) -> Answer<'_, BTreeSet<String>> {
            ready(BTreeSet::new())
        }

        fn grid_ms(&self, _window: (i64, i64), _min_step_ms: i64, _now_ms: i64) -> i64 {
            5_000
        }

        fn points(&self, _q: PointQuery) -> Answer<'_, Vec<Point>> {
            ready(Vec::new())
        }

        fn window(&self, _q: WindowQuery) -> Answer<'_, BTreeMap<String, WindowSums>> {
            ready(BTreeMap::new())
        }

        fn chart(&self, _q: PointQuery) -> Answer<'_, ChartData> {
            ready(ChartData::default())
        }

        fn window_stats(&self, _end_ms: i64, window_ms: i64) -> Answer<'_, BTreeMap<String, WindowStats>> {
            if self.stalled {
                return Box::pin(std::future::pending());
            }
            ready(self.windows.get(&window_ms).cloned().unwrap_or_default())
        }

        fn series(&self, _end_ms: i64, _range_ms: i64, _step_ms: i64) -> Answer<'_, Vec<Point>> {
            ready(self.series.clone())
        }

        fn strata(&self, _q: StrataQuery) -> Answer<'_, Option<Vec<Stratum>>> {
            self.strata_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ready(self.strata.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::parse_rules;
    use crate::ports::read::{SideStats, Stratum};

    fn rules(yaml: &str) -> Vec<Rule> {
        parse_rules(yaml, "t").unwrap()
    }

    fn stats(requests: f64, errors: f64, p95: f64) -> WindowStats {
        let side = SideStats {
            requests,
            errors_5xx: errors,
            error_rate_pct: (requests > 0.0).then(|| 100.0 * errors / requests),
            latency_p95_ms: Some(p95),
            ..Default::default()
        };
        WindowStats { side, rejection_rate: 0.0 }
    }

    #[test]
    fn values_come_from_the_right_input() {
        let rs = rules(
            "rules:\n  - {name: E, expr: error_rate_pct, threshold: 5, window: 1m}\n  - {name: D, expr: target_down, threshold: 0}\n  - {name: C, expr: canary_verdict, threshold: fail, window: 1m}\n",
        );
        let mut inputs = Inputs::default();
        inputs.windows.insert(
            60_000,
            BTreeMap::from([
                ("production".to_owned(), stats(1000.0, 5.0, 200.0)),
                ("canary".to_owned(), stats(500.0, 60.0, 210.0)),
            ]),
        );
        let mut down = TargetHealth::new(1, "http://a/metrics".into(), "canary".into());
        down.consecutive_failures = 2;
        let never = TargetHealth::new(2, "http://b/metrics".into(), "canary".into());
        inputs.read_health(&[down, never]);
        assert_eq!(inputs.value(&rs[0], "canary"), Some((Some(12.0), 500.0)));
        assert_eq!(inputs.value(&rs[0], "gone"), Some((None, 0.0)));
        assert_eq!(inputs.value(&rs[1], "canary").map(|v| v.0), Some(Some(1.0)), "a never-scraped target is not down");
        assert_eq!(inputs.value(&rs[2], "canary"), None, "no verdict read: not evaluated");
        inputs.verdicts.insert(("production".into(), "canary".into()), (Verdict::Fail, 500.0));
        assert_eq!(inputs.value(&rs[2], "canary"), Some((Some(3.0), 500.0)));
        let each = inputs.variants_of(&rs[2], std::iter::empty());
        assert_eq!(each.into_iter().collect::<Vec<_>>(), ["canary"], "never the baseline");
        assert_eq!(
            inputs.value(&rules("rules:\n  - {name: X, expr: req_rate, threshold: 1, window: 2m}\n")[0], "canary"),
            None,
            "window not read"
        );
    }

    /// `canary_verdict` is the canary analysis' verdict over the strata since the rollout
    /// began, the one `/api/compare` gives: 12 % against 0.5 % 5xx over 200 ticks fails, the
    /// same traffic on both sides never does.
    #[tokio::test]
    async fn the_canary_verdict_is_the_sequential_judgement_of_the_strata() {
        use crate::canary::SideTick;
        let rs = rules("rules:\n  - {name: C, variant: canary, expr: canary_verdict, threshold: fail}\n");
        let tick = |errors: f64| SideTick {
            requests: 100.0,
            errors_5xx: errors,
            ok_2xx: 100.0 - errors,
            ..Default::default()
        };
        let strata = |c: f64| (0..200).map(|k| Stratum { end_ms: k * 5_000, sides: [tick(0.5), tick(c)] }).collect();
        let rs = &rs;
        let judge = |c: f64| async move {
            let source = FixedStats { strata: Some(strata(c)), ..Default::default() };
            let mut inputs = Inputs::default();
            let cfg = CanaryConfig::default();
            assert!(inputs.read_verdicts(rs, &source, &cfg, 1_000_000).await.is_none());
            inputs.value(&rs[0], "canary").and_then(|v| v.0)
        };
        assert_eq!(judge(12.0).await, Some(verdict_rank(Verdict::Fail)));
        assert!(judge(0.5).await.is_some_and(|v| v < verdict_rank(Verdict::Warn)));
    }

    #[test]
    fn storage_is_one_alert_for_the_process_whatever_the_variants() {
        let r = &rules("rules:\n  - {name: S, expr: storage_healthy, op: '==', threshold: 0}\n")[0];
        let mut inputs = Inputs::default();
        inputs.read_health(&[TargetHealth::new(1, "http://a/metrics".into(), "canary".into())]);
        let variants = inputs.variants_of(r, ["production".to_owned()].into_iter());
        assert_eq!(variants.into_iter().collect::<Vec<_>>(), [PROCESS_VARIANT]);
        assert_eq!(inputs.value(r, PROCESS_VARIANT), Some((Some(1.0), f64::INFINITY)));
        inputs.storage_failing = true;
        assert_eq!(inputs.value(r, PROCESS_VARIANT), Some((Some(0.0), f64::INFINITY)));
    }

    #[test]
    fn medians_need_history_and_enough_requests() {
        let r = &rules(
            "rules:\n  - {name: L, expr: 'latency_p95_ms / median_over_time(latency_p95_ms[1h])', threshold: 2, window: 5m, min_requests: 10}\n",
        )[0];
        let point = |variant: &str, requests: f64, p95: f64| Point {
            variant: variant.into(),
            requests,
            latency_p95: Some(p95),
            ..Default::default()
        };
        let pts = vec![
            point("a", 50.0, 100.0),
            point("a", 50.0, 300.0),
            point("a", 50.0, 200.0),
            point("a", 2.0, 9000.0),
            point("b", 50.0, 1.0),
        ];
        let m = medians(r, 3_600_000, &pts);
        assert_eq!(m["a"], Some(200.0), "the step with 2 requests is left out");
        assert_eq!(m["b"], None, "one step is no history");
        let mut inputs = Inputs::default();
        inputs.windows.insert(300_000, BTreeMap::from([("a".to_owned(), stats(100.0, 0.0, 500.0))]));
        inputs.medians.insert("L".into(), m);
        assert_eq!(inputs.value(r, "a"), Some((Some(2.5), 100.0)));
    }
}
