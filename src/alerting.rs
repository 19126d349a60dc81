//! What the alert engine keeps and tells, in the core's own types: the persisted state of each
//! alert ([`AlertRecord`]), the store that keeps it ([`AlertStateStore`]), the firing periods the
//! charts shade ([`AlertPeriod`]) and the live stream it announces changes on ([`Announcer`]).
//!
//! The store and the hub implement these traits and `app` wires them, so the engine imports
//! neither: it can be tested against an in-memory store and a recording announcer.

use std::collections::BTreeMap;

use crate::ingest::BoxFuture;

/// Where an alert stands. Prometheus' states, plus `resolved` for an alert that fired and
/// stopped (kept so that the page can say when, and so that receivers are told once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertPhase {
    /// The condition does not hold.
    Inactive,
    /// The condition holds, for less than the rule's `for`.
    Pending,
    /// The condition has held for the rule's `for`: receivers are told.
    Firing,
    /// It fired, and the condition stopped holding.
    Resolved,
}

impl AlertPhase {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertPhase::Inactive => "inactive",
            AlertPhase::Pending => "pending",
            AlertPhase::Firing => "firing",
            AlertPhase::Resolved => "resolved",
        }
    }

    /// The phase with this stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Inactive, Self::Pending, Self::Firing, Self::Resolved].into_iter().find(|p| p.as_str() == s)
    }
}

/// One alert (a rule applied to one variant) as persisted: enough to carry on after a restart
/// without notifying twice or forgetting an episode.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// Rule name (`alertname`).
    pub rule: String,
    /// Variant the alert is about.
    pub variant: String,
    /// Current phase.
    pub phase: AlertPhase,
    /// Since when the condition holds (pending or firing), Unix ms.
    pub active_ms: Option<i64>,
    /// When the current or last episode started firing.
    pub fired_ms: Option<i64>,
    /// When the last episode resolved.
    pub resolved_ms: Option<i64>,
    /// The value at the last evaluation (`None`: no data).
    pub value: Option<f64>,
    /// The rule's severity (kept with the firing periods).
    pub severity: String,
    /// The metric the rule watches (`error_rate_pct`, ...): which charts a period shades.
    pub metric: String,
    /// Per receiver, the last phase it acknowledged (`firing` or `resolved`): after a restart a
    /// receiver is only told what it has not heard yet.
    pub notified: BTreeMap<String, AlertPhase>,
    /// Last change, Unix ms.
    pub updated_ms: i64,
}

/// A period during which an alert fired, for shading charts.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPeriod {
    /// Rule name.
    pub rule: String,
    /// Variant.
    pub variant: String,
    /// Severity.
    pub severity: String,
    /// Metric the rule watches.
    pub metric: String,
    /// Start, Unix ms.
    pub from_ms: i64,
    /// End, Unix ms; `None` while it still fires.
    pub to_ms: Option<i64>,
}

/// Why alert state could not be read or written (the store's own text).
#[derive(Debug, thiserror::Error)]
#[error("alert state: {0}")]
pub struct AlertStoreError(pub String);

/// Keeps alert records across restarts; each firing episode of a record becomes a period.
pub trait AlertStateStore: Send + Sync + std::fmt::Debug {
    /// Every record kept.
    fn load(&self) -> BoxFuture<'_, Result<Vec<AlertRecord>, AlertStoreError>>;
    /// Writes changed records (upserts by rule and variant) and their firing periods.
    fn save(&self, records: Vec<AlertRecord>) -> BoxFuture<'_, Result<(), AlertStoreError>>;
}

/// The live stream, for things other than points: sends `{"type": kind, "data": data}` to
/// every connected client. Sending never waits.
pub trait Announcer: Send + Sync + std::fmt::Debug {
    /// Announces one event.
    fn announce(&self, kind: &'static str, data: serde_json::Value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_their_names() {
        for p in [AlertPhase::Inactive, AlertPhase::Pending, AlertPhase::Firing, AlertPhase::Resolved] {
            assert_eq!(AlertPhase::parse(p.as_str()), Some(p));
        }
        assert_eq!(AlertPhase::parse("on fire"), None);
    }
}
