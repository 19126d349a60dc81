//! Alert records and firing periods (tables `alerts` and `alert_periods`): the store's side of
//! [`AlertStateStore`], and the periods the charts shade.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::{Store, StoreError};
use crate::phase::AlertPhase;
use crate::ports::BoxFuture;
use crate::ports::alert_state::{AlertPeriod, AlertRecord, AlertStateStore, AlertStoreError};

/// Firing periods are kept this long after they end (the 1 min table's default retention and
/// a day more), so a 7 d chart still shades them.
pub(crate) const PERIOD_RETENTION_MS: i64 = 8 * 86_400_000;

/// Every record.
pub(crate) fn load(conn: &Connection) -> Result<Vec<AlertRecord>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT rule, variant, phase, active_ms, fired_ms, resolved_ms, value, severity, metric, notified, updated_ms
         FROM alerts ORDER BY rule, variant",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(AlertRecord {
            rule: r.get(0)?,
            variant: r.get(1)?,
            phase: AlertPhase::parse(&r.get::<_, String>(2)?).unwrap_or(AlertPhase::Inactive),
            active_ms: r.get(3)?,
            fired_ms: r.get(4)?,
            resolved_ms: r.get(5)?,
            value: r.get(6)?,
            severity: r.get(7)?,
            metric: r.get(8)?,
            notified: parse_notified(&r.get::<_, String>(9)?),
            updated_ms: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `{"alertmanager":"firing"}`; an unreadable value counts as nothing acknowledged.
fn parse_notified(text: &str) -> BTreeMap<String, AlertPhase> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Upserts records and their firing periods in one transaction, and drops periods that ended
/// before `PERIOD_RETENTION_MS`.
pub(crate) fn save(conn: &mut Connection, records: &[AlertRecord]) -> Result<(), StoreError> {
    let tx = super::write_transaction(conn)?;
    {
        let mut record = tx.prepare_cached(
            "INSERT OR REPLACE INTO alerts
             (rule, variant, phase, active_ms, fired_ms, resolved_ms, value, severity, metric, notified, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut period = tx.prepare_cached(
            "INSERT INTO alert_periods (rule, variant, from_ms, to_ms, severity, metric) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (rule, variant, from_ms) DO UPDATE SET to_ms = excluded.to_ms",
        )?;
        for r in records {
            let notified = serde_json::to_string(&r.notified)?;
            let value = r.value.filter(|v| v.is_finite());
            record.execute(params![
                r.rule,
                r.variant,
                r.phase.as_str(),
                r.active_ms,
                r.fired_ms,
                r.resolved_ms,
                value,
                r.severity,
                r.metric,
                notified,
                r.updated_ms
            ])?;
            if let Some(from) = r.fired_ms {
                let to = if r.phase == AlertPhase::Firing { None } else { r.resolved_ms };
                period.execute(params![r.rule, r.variant, from, to, r.severity, r.metric])?;
            }
        }
        let newest = records.iter().map(|r| r.updated_ms).max().unwrap_or(0);
        tx.execute("DELETE FROM alert_periods WHERE to_ms < ?1", [newest - PERIOD_RETENTION_MS])?;
    }
    tx.commit()?;
    Ok(())
}

/// Firing periods that overlap `[start_ms, end_ms]`, oldest first.
pub(crate) fn periods(conn: &Connection, start_ms: i64, end_ms: i64) -> Result<Vec<AlertPeriod>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT rule, variant, severity, metric, from_ms, to_ms FROM alert_periods
         WHERE from_ms <= ?2 AND (to_ms IS NULL OR to_ms >= ?1) ORDER BY from_ms, rule, variant",
    )?;
    let rows = stmt.query_map([start_ms, end_ms], |r| {
        Ok(AlertPeriod {
            rule: r.get(0)?,
            variant: r.get(1)?,
            severity: r.get(2)?,
            metric: r.get(3)?,
            from_ms: r.get(4)?,
            to_ms: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl AlertStateStore for Store {
    fn load(&self) -> BoxFuture<'_, Result<Vec<AlertRecord>, AlertStoreError>> {
        Box::pin(async move { self.with_conn(|c| load(c)).await.map_err(|e| AlertStoreError(e.to_string())) })
    }

    fn save(&self, records: Vec<AlertRecord>) -> BoxFuture<'_, Result<(), AlertStoreError>> {
        Box::pin(
            async move { self.with_conn(move |c| save(c, &records)).await.map_err(|e| AlertStoreError(e.to_string())) },
        )
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
            notified: BTreeMap::from([("webhook".to_owned(), AlertPhase::Firing)]),
            updated_ms: updated,
        }
    }

    #[test]
    fn records_round_trip_and_episodes_become_periods() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        let mut c = store.conn().unwrap();
        save(&mut c, &[record(AlertPhase::Firing, Some(1_000), None, 1_000)]).unwrap();
        assert_eq!(periods(&c, 0, 5_000).unwrap()[0].to_ms, None, "still firing");
        let resolved = record(AlertPhase::Resolved, Some(1_000), Some(4_000), 4_000);
        save(&mut c, std::slice::from_ref(&resolved)).unwrap();
        save(&mut c, &[record(AlertPhase::Firing, Some(9_000), None, 9_000)]).unwrap();
        assert_eq!(load(&c).unwrap()[0].fired_ms, Some(9_000));
        let p = periods(&c, 0, 10_000).unwrap();
        assert_eq!(p.iter().map(|p| (p.from_ms, p.to_ms)).collect::<Vec<_>>(), [(1_000, Some(4_000)), (9_000, None)]);
        assert_eq!(periods(&c, 5_000, 8_000).unwrap().len(), 0, "neither overlaps");
        save(&mut c, std::slice::from_ref(&resolved)).unwrap();
        assert_eq!(load(&c).unwrap(), vec![resolved]);
    }

    #[test]
    fn old_periods_age_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        let mut c = store.conn().unwrap();
        save(&mut c, &[record(AlertPhase::Resolved, Some(1_000), Some(2_000), 2_000)]).unwrap();
        let later = 2_000 + PERIOD_RETENTION_MS + 1;
        let mut other = record(AlertPhase::Firing, Some(later), None, later);
        other.variant = "production".into();
        save(&mut c, &[other]).unwrap();
        assert_eq!(periods(&c, 0, i64::MAX).unwrap().len(), 1);
    }
}
