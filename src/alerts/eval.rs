//! The state machine of one alert: `inactive` -> `pending` -> `firing` -> `resolved`, as
//! Prometheus runs it, on explicit times (the engine passes the injected clock's), so tests
//! drive it without sleeping.

use std::collections::BTreeMap;

use super::rules::Rule;
use crate::phase::AlertPhase;
use crate::ports::alert_state::AlertRecord;

/// What one evaluation found for one alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Observation {
    /// The value (`None`: no data).
    pub value: Option<f64>,
    /// Whether the condition holds (there is a value, enough requests, and the comparison holds).
    pub holds: bool,
}

impl Observation {
    /// Judges `value` against the rule, given the requests behind it.
    pub(crate) fn judge(rule: &Rule, value: Option<f64>, requests: f64) -> Self {
        let holds =
            value.is_some_and(|v| v.is_finite() && rule.op.holds(v, rule.threshold)) && requests >= rule.min_requests;
        Self { value, holds }
    }
}

/// A record for an alert never seen before.
pub(crate) fn new_record(rule: &Rule, variant: &str, now_ms: i64) -> AlertRecord {
    AlertRecord {
        rule: rule.name.clone(),
        variant: variant.to_owned(),
        phase: AlertPhase::Inactive,
        active_ms: None,
        fired_ms: None,
        resolved_ms: None,
        value: None,
        severity: rule.severity.clone(),
        metric: rule.expr.metric.name().to_owned(),
        notified: BTreeMap::new(),
        updated_ms: now_ms,
    }
}

/// Moves `rec` on at `now_ms`; returns the new phase when it changed. A condition that holds
/// makes an inactive or resolved alert pending (firing at once when `for_ms` is 0), and a
/// pending one firing once it has held for `for_ms`; one that stops holding makes a pending alert
/// inactive and a firing one resolved.
pub(crate) fn advance(rec: &mut AlertRecord, obs: Observation, now_ms: i64, for_ms: i64) -> Option<AlertPhase> {
    rec.value = obs.value;
    let next = match (rec.phase, obs.holds) {
        (AlertPhase::Inactive | AlertPhase::Resolved, true) => {
            rec.active_ms = Some(now_ms);
            if for_ms == 0 { AlertPhase::Firing } else { AlertPhase::Pending }
        }
        (AlertPhase::Pending, true) if now_ms - rec.active_ms.unwrap_or(now_ms) >= for_ms => AlertPhase::Firing,
        (AlertPhase::Pending, false) => {
            rec.active_ms = None;
            AlertPhase::Inactive
        }
        (AlertPhase::Firing, false) => {
            rec.active_ms = None;
            rec.resolved_ms = Some(now_ms);
            AlertPhase::Resolved
        }
        _ => return None,
    };
    if next == AlertPhase::Firing {
        rec.fired_ms = Some(now_ms);
        rec.resolved_ms = None;
    }
    rec.phase = next;
    rec.updated_ms = now_ms;
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::parse_rules;
    use crate::clock::{Clock, ManualClock};

    fn rule(extra: &str) -> Rule {
        let text = format!("rules:\n  - name: E\n    expr: error_rate_pct\n    threshold: 5\n{extra}");
        parse_rules(&text, "t").unwrap().remove(0)
    }

    #[test]
    fn pending_then_firing_after_for_then_resolved() {
        let r = rule("    for: 2m\n    min_requests: 100\n");
        let clock = ManualClock::new(1_000_000);
        let mut rec = new_record(&r, "canary", clock.now_ms());
        let bad = Observation::judge(&r, Some(12.0), 500.0);
        assert_eq!(advance(&mut rec, bad, clock.now_ms(), r.for_ms), Some(AlertPhase::Pending));
        clock.advance_ms(119_000);
        assert_eq!(advance(&mut rec, bad, clock.now_ms(), r.for_ms), None, "not yet 2m");
        clock.advance_ms(1_000);
        assert_eq!(advance(&mut rec, bad, clock.now_ms(), r.for_ms), Some(AlertPhase::Firing));
        assert_eq!((rec.active_ms, rec.fired_ms), (Some(1_000_000), Some(1_120_000)));
        clock.advance_ms(5_000);
        assert_eq!(advance(&mut rec, bad, clock.now_ms(), r.for_ms), None, "stays firing");
        let good = Observation::judge(&r, Some(1.0), 500.0);
        clock.advance_ms(5_000);
        assert_eq!(advance(&mut rec, good, clock.now_ms(), r.for_ms), Some(AlertPhase::Resolved));
        assert_eq!((rec.resolved_ms, rec.fired_ms), (Some(1_130_000), Some(1_120_000)));
        assert_eq!(advance(&mut rec, good, clock.now_ms(), r.for_ms), None);
    }

    #[test]
    fn a_pending_alert_that_recovers_never_fires() {
        let r = rule("    for: 1m\n");
        let mut rec = new_record(&r, "production", 0);
        advance(&mut rec, Observation::judge(&r, Some(9.0), 1.0), 0, r.for_ms);
        assert_eq!(
            advance(&mut rec, Observation::judge(&r, Some(1.0), 1.0), 30_000, r.for_ms),
            Some(AlertPhase::Inactive)
        );
        assert_eq!(
            advance(&mut rec, Observation::judge(&r, Some(9.0), 1.0), 40_000, r.for_ms),
            Some(AlertPhase::Pending)
        );
        assert_eq!(rec.active_ms, Some(40_000), "the clock restarts");
        assert_eq!(rec.fired_ms, None);
    }

    #[test]
    fn too_few_requests_or_no_data_do_not_hold() {
        let r = rule("    min_requests: 100\n");
        assert!(!Observation::judge(&r, Some(100.0), 3.0).holds, "three requests");
        assert!(!Observation::judge(&r, None, 500.0).holds);
        assert!(!Observation::judge(&r, Some(f64::NAN), 500.0).holds);
        assert!(Observation::judge(&r, Some(5.1), 100.0).holds);
        let mut rec = new_record(&r, "canary", 0);
        assert_eq!(
            advance(&mut rec, Observation::judge(&r, Some(50.0), 100.0), 0, 0),
            Some(AlertPhase::Firing),
            "for 0"
        );
    }
}
