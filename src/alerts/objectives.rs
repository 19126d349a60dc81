//! Objectives (`slos:`) at each evaluation: good and total requests over the period and the
//! burn windows from the read contract's window sums, [`slo::evaluate_all`] over them, and
//! each objective's two burn-rate alerts as rules the engine runs like any other (records,
//! receivers, restarts), so a page and a ticket reach Alertmanager the way every alert does.
//!
//! A window's sums are reused for a sixtieth of the time their data covers (at most a minute):
//! the 5 min window is read at every tick, a period of 28 days of data once a minute, which
//! moves its ratio by less than a minute's share of it. While the data is young (zai-dash just
//! started) every window is read at every tick, since a minute is then much of what it holds.
//!
//! The burn-rate charts of `/slos` draw what this module computed since zai-dash started: one
//! sample a minute per objective and variant, the last [`HISTORY_SAMPLES`].
//!
//! [`slo::evaluate_all`]: crate::budget::slo::evaluate_all

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::metric::Metric;
use super::rules::{Expr, Op, Rule, Scope};
use crate::budget::slo::{
    self, BURN_ALERTS, BURN_WINDOWS, BurnAlert, BurnRates, CountsSource, Indicator, SloCounts, SloSpec, SloStatus,
    SloVariant,
};
use crate::phase::AlertPhase;
use crate::point::Counts;
use crate::ports::read::{DataSource, SourceError, WindowQuery};

/// Samples kept per objective and variant for the charts: a day at one a minute.
pub const HISTORY_SAMPLES: usize = 1_440;
/// Time between two chart samples.
const HISTORY_STEP_MS: i64 = 60_000;
/// Longest time a window's sums are reused.
const MAX_REUSE_MS: i64 = 60_000;

/// One chart sample of an objective for a variant.
#[derive(Debug, Clone, PartialEq)]
pub struct SloSample {
    /// When evaluated, Unix ms.
    pub at_ms: i64,
    /// Error budget left then (`None`: no request in the period).
    pub budget_remaining: Option<f64>,
    /// Burn rates then.
    pub burn_rates: BurnRates,
}

/// Chart samples per `(objective, variant)`, oldest first.
pub type SloHistory = BTreeMap<(String, String), Vec<SloSample>>;

/// What the engine keeps between evaluations for the objectives.
#[derive(Debug, Default)]
pub struct Objectives {
    specs: Vec<SloSpec>,
    /// Per window length: what was read.
    sums: BTreeMap<i64, Read>,
    history: BTreeMap<(String, String), VecDeque<SloSample>>,
    /// The history as the snapshot shares it, rebuilt when a sample is added.
    shared: Arc<SloHistory>,
}

/// One window's sums as read.
#[derive(Debug, Clone, Default)]
struct Read {
    /// When, Unix ms.
    at_ms: i64,
    /// The longest time any variant's data covers in the window.
    covered_ms: i64,
    /// Each variant's increases.
    counts: BTreeMap<String, Counts>,
}

/// An objective's alert for a variant: `(alert name, variant)`.
pub type BurnKey = (String, String);

/// What an objective's alert shows and whether it fires.
pub type BurnValue = (Option<f64>, bool);

/// The objectives' part of one evaluation.
#[derive(Debug, Clone, Default)]
pub struct SloOutcome {
    /// Every objective for every variant it covers.
    pub statuses: Vec<SloStatus>,
    /// Per alert name and variant: the value shown and whether it fires.
    pub alerts: BTreeMap<BurnKey, BurnValue>,
}

impl Objectives {
    /// The objectives of the rules file.
    pub fn new(specs: Vec<SloSpec>) -> Self {
        Self { specs, ..Self::default() }
    }

    /// The chart samples so far.
    pub fn history(&self) -> Arc<SloHistory> {
        self.shared.clone()
    }

    /// Reads the windows that are due and evaluates every objective at `now_ms` for
    /// `variants`. A window that cannot be read keeps its last sums; without any, its burn is
    /// unknown (`null`) and conditions on it do not hold. Returns the outcome and the last
    /// read error.
    pub async fn evaluate(
        &mut self,
        source: &dyn DataSource,
        variants: &BTreeSet<String>,
        now_ms: i64,
    ) -> (Option<SloOutcome>, Option<SourceError>) {
        if self.specs.is_empty() {
            return (None, None);
        }
        let error = self.refresh(source, now_ms).await;
        let variants: Vec<String> = variants.iter().cloned().collect();
        let statuses = slo::evaluate_all(&self.specs, &variants, &Prefetched(&self.sums), now_ms);
        self.record(&statuses, now_ms);
        let alerts = statuses.iter().flat_map(alert_values).collect();
        (Some(SloOutcome { statuses, alerts }), error)
    }

    async fn refresh(&mut self, source: &dyn DataSource, now_ms: i64) -> Option<SourceError> {
        let windows: BTreeSet<i64> = self.specs.iter().flat_map(SloSpec::windows_ms).collect();
        let mut error = None;
        for w in windows {
            if self.sums.get(&w).is_some_and(|r| now_ms - r.at_ms < (r.covered_ms / 60).min(MAX_REUSE_MS)) {
                continue;
            }
            match source.window(WindowQuery::ending(now_ms, w)).await {
                Ok(sums) => {
                    let covered_ms = sums.values().map(|s| now_ms - s.data_from_ms).max().unwrap_or(0);
                    let counts = sums.into_iter().map(|(v, s)| (v, s.counts)).collect();
                    self.sums.insert(w, Read { at_ms: now_ms, covered_ms, counts });
                }
                Err(e) => error = Some(e),
            }
        }
        error
    }

    /// Adds a chart sample per status when the last one is a step old.
    fn record(&mut self, statuses: &[SloStatus], now_ms: i64) {
        let mut added = false;
        for s in statuses {
            let samples = self.history.entry((s.name.clone(), s.variant.clone())).or_default();
            if samples.back().is_some_and(|last| now_ms - last.at_ms < HISTORY_STEP_MS) {
                continue;
            }
            if samples.len() == HISTORY_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(SloSample {
                at_ms: now_ms,
                budget_remaining: s.error_budget_remaining,
                burn_rates: s.burn_rates,
            });
            added = true;
        }
        if added {
            let kept: BTreeSet<(String, String)> =
                statuses.iter().map(|s| (s.name.clone(), s.variant.clone())).collect();
            self.history.retain(|k, _| kept.contains(k));
            self.shared =
                Arc::new(self.history.iter().map(|(k, v)| (k.clone(), v.iter().cloned().collect())).collect());
        }
    }
}

/// Window sums read ahead, answering [`CountsSource`] (the evaluation itself is synchronous).
struct Prefetched<'a>(&'a BTreeMap<i64, Read>);

impl CountsSource for Prefetched<'_> {
    fn good_total(&self, indicator: &Indicator, variant: &str, window_ms: i64, _end_ms: i64) -> Option<SloCounts> {
        match self.0.get(&window_ms)?.counts.get(variant) {
            Some(counts) => indicator.good_total(counts),
            None => Some(SloCounts::default()),
        }
    }
}

/// Each generated alert of a status: the value it shows (the burn rate both windows of its
/// worst condition exceed, as a multiple of that condition's factor) and whether it fires.
fn alert_values(s: &SloStatus) -> Vec<(BurnKey, BurnValue)> {
    BURN_ALERTS
        .iter()
        .zip(&s.alerts)
        .map(|(alert, state)| {
            let value = worst_condition(alert, &s.burn_rates);
            ((state.alert.clone(), s.variant.clone()), (value, state.state == AlertPhase::Firing))
        })
        .collect()
}

fn worst_condition(alert: &BurnAlert, burn: &BurnRates) -> Option<f64> {
    alert
        .conditions
        .iter()
        .filter_map(|c| Some(burn.get(c.long.label)?.min(burn.get(c.short.label)?) / c.factor))
        .reduce(f64::max)
}

/// The rules the objectives' alerts run as: `<name>BurnRatePage` (`critical`) and
/// `<name>BurnRateTicket` (`warning`), no `for` (the short window is what keeps them from
/// flapping, as the workbook has it).
pub fn burn_rules(specs: &[SloSpec]) -> Vec<Rule> {
    let mut out = Vec::new();
    for spec in specs {
        for alert in &BURN_ALERTS {
            let conditions: Vec<String> = alert
                .conditions
                .iter()
                .map(|c| format!("{}x over {} and {}", crate::expo::go_float(c.factor), c.long.label, c.short.label))
                .collect();
            let kind = if alert.severity == "critical" { "page" } else { "ticket" };
            out.push(Rule {
                name: spec.alert_name(alert),
                scope: match &spec.variant {
                    SloVariant::One(v) => Scope::One(v.clone()),
                    SloVariant::Each => Scope::Each,
                },
                expr: Expr {
                    metric: Metric::SloBurnRate,
                    median_range_ms: None,
                    text: format!("{} burn rate / {kind} threshold", spec.name),
                },
                op: Op::Gt,
                threshold: 1.0,
                window_ms: 0,
                for_ms: 0,
                min_requests: 0.0,
                severity: alert.severity.to_owned(),
                summary: format!(
                    "{{{{ variant }}}} burns the error budget of {} ({}) at {{{{ value }}}} times the {kind} threshold ({})",
                    spec.name,
                    spec.describe(),
                    conditions.join(", or ")
                ),
                baseline: "production".to_owned(),
            });
        }
    }
    out
}

/// The windows a burn rate is known for, for the page's table headers.
pub fn burn_window_labels() -> Vec<&'static str> {
    BURN_WINDOWS.iter().map(|w| w.label).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::parse_rules_file;

    fn specs() -> Vec<SloSpec> {
        parse_rules_file(
            "rules: []\nslos:\n  - {name: Avail, indicator: availability, objective: 99, period: 7d}\n",
            "t",
        )
        .unwrap()
        .slos
    }

    #[test]
    fn each_objective_makes_a_page_and_a_ticket_rule() {
        let rules = burn_rules(&specs());
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["AvailBurnRatePage", "AvailBurnRateTicket"]);
        assert_eq!(rules[0].severity, "critical");
        assert_eq!(rules[1].severity, "warning");
        assert!(rules[0].summary.contains("14.4x over 1h and 5m"), "{}", rules[0].summary);
    }

    #[test]
    fn the_value_is_the_worst_condition_over_its_factor_and_unknown_windows_give_none() {
        let mut rates = [None; 7];
        // 5m, 30m, 1h, 2h, 6h, 1d, 3d
        rates[0] = Some(30.0);
        rates[2] = Some(28.8);
        let page = &BURN_ALERTS[0];
        assert_eq!(worst_condition(page, &BurnRates(rates)), Some(2.0));
        assert_eq!(worst_condition(&BURN_ALERTS[1], &BurnRates(rates)), None);
    }

    #[test]
    fn a_window_not_read_is_unknown_and_a_variant_without_data_has_no_requests() {
        let sums = BTreeMap::from([(300_000, Read::default())]);
        let p = Prefetched(&sums);
        assert_eq!(p.good_total(&Indicator::Availability, "a", 300_000, 0), Some(SloCounts::default()));
        assert_eq!(p.good_total(&Indicator::Availability, "a", 3_600_000, 0), None);
    }
}
