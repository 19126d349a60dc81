//! Alert records and firing periods in memory: source mode keeps no file, so the alert engine's
//! [`AlertStateStore`] is this replica's memory. A restart forgets the states (an alert that
//! still holds goes pending again and fires after its `for`), and each replica evaluates and
//! notifies on its own: Alertmanager deduplicates identical alerts from several replicas, a
//! plain webhook hears each replica (README, "Source mode").

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::phase::AlertPhase;

use crate::ports::BoxFuture;
use crate::ports::alert_state::{AlertPeriod, AlertRecord, AlertStateStore, AlertStoreError};

/// Firing periods are kept this long after they end, as the store keeps them (a 7 d chart
/// still shades them).
const PERIOD_RETENTION_MS: i64 = 8 * 86_400_000;

/// `(rule, variant)`.
type Key = (String, String);

#[derive(Debug, Default)]
struct State {
    records: BTreeMap<Key, AlertRecord>,
    /// By `(rule, variant, from_ms)`.
    periods: BTreeMap<(String, String, i64), AlertPeriod>,
}

/// The records and periods of this process.
#[derive(Debug, Default)]
pub struct MemoryAlerts {
    state: Mutex<State>,
}

impl MemoryAlerts {
    /// Firing periods that overlap `[start_ms, end_ms]`, oldest first.
    pub(crate) fn periods(&self, start_ms: i64, end_ms: i64) -> Vec<AlertPeriod> {
        let Ok(state) = self.state.lock() else { return Vec::new() };
        let mut out: Vec<AlertPeriod> = state
            .periods
            .values()
            .filter(|p| p.from_ms <= end_ms && p.to_ms.is_none_or(|t| t >= start_ms))
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.from_ms, &a.rule, &a.variant).cmp(&(b.from_ms, &b.rule, &b.variant)));
        out
    }

    fn save_now(&self, records: Vec<AlertRecord>) {
        let Ok(mut state) = self.state.lock() else { return };
        let newest = records.iter().map(|r| r.updated_ms).max().unwrap_or(0);
        for r in records {
            if let Some(from) = r.fired_ms {
                let to = if r.phase == AlertPhase::Firing { None } else { r.resolved_ms };
                let period = AlertPeriod {
                    rule: r.rule.clone(),
                    variant: r.variant.clone(),
                    severity: r.severity.clone(),
                    metric: r.metric.clone(),
                    from_ms: from,
                    to_ms: to,
                };
                state.periods.insert((r.rule.clone(), r.variant.clone(), from), period);
            }
            state.records.insert((r.rule.clone(), r.variant.clone()), r);
        }
        state.periods.retain(|_, p| p.to_ms.is_none_or(|t| t >= newest - PERIOD_RETENTION_MS));
    }
}

impl AlertStateStore for MemoryAlerts {
    fn load(&self) -> BoxFuture<'_, Result<Vec<AlertRecord>, AlertStoreError>> {
        let records = self.state.lock().map(|s| s.records.values().cloned().collect()).unwrap_or_default();
        Box::pin(std::future::ready(Ok(records)))
    }

    fn save(&self, records: Vec<AlertRecord>) -> BoxFuture<'_, Result<(), AlertStoreError>> {
        self.save_now(records);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(phase: AlertPhase, fired: Option<i64>, resolved: Option<i64>, updated: i64) -> AlertRecord {
        AlertRecord {
            rule: "HighErrorRate".into(),
            variant: "canary".into(),
            phase,
            active_ms: None,
            fired_ms: fired,
            resolved_ms: resolved,
            value: Some(12.5),
            severity: "critical".into(),
            metric: "error_rate_pct".into(),
            notified: BTreeMap::new(),
            updated_ms: updated,
        }
    }

    #[tokio::test]
    async fn episodes_become_periods_as_in_the_store() {
        let m = MemoryAlerts::default();
        m.save(vec![record(AlertPhase::Firing, Some(1_000), None, 1_000)]).await.unwrap();
        assert_eq!(m.periods(0, 5_000)[0].to_ms, None, "still firing");
        m.save(vec![record(AlertPhase::Resolved, Some(1_000), Some(4_000), 4_000)]).await.unwrap();
        m.save(vec![record(AlertPhase::Firing, Some(9_000), None, 9_000)]).await.unwrap();
        let p = m.periods(0, 10_000);
        assert_eq!(p.iter().map(|p| (p.from_ms, p.to_ms)).collect::<Vec<_>>(), [(1_000, Some(4_000)), (9_000, None)]);
        assert!(m.periods(5_000, 8_000).is_empty());
        assert_eq!(m.load().await.unwrap()[0].fired_ms, Some(9_000));
        let later = 4_000 + PERIOD_RETENTION_MS + 1;
        m.save(vec![record(AlertPhase::Firing, Some(later), None, later)]).await.unwrap();
        assert_eq!(m.periods(0, i64::MAX).len(), 2, "the old period aged out");
    }
}
