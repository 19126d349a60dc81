//! What the alert engine keeps and tells, in the core's own types: the persisted state of each
//! alert ([`AlertRecord`], in a [`AlertPhase`]), the store that keeps it ([`AlertStateStore`]),
//! the firing periods the charts shade ([`AlertPeriod`]) and the live stream it announces
//! changes on ([`Announcer`]).
//!
//! The store and the hub implement these traits and `app` wires them, so the engine imports
//! neither: it can be tested against an in-memory store and a recording announcer.

use std::collections::BTreeMap;

use super::BoxFuture;
use crate::phase::AlertPhase;

/// One alert (a rule applied to one variant) as persisted: enough to carry on after a restart
/// without notifying twice or forgetting an episode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AlertRecord {
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
pub(crate) struct AlertStoreError(pub String);

/// Keeps alert records across restarts; each firing episode of a record becomes a period.
pub(crate) trait AlertStateStore: Send + Sync + std::fmt::Debug {
    /// Every record kept.
    fn load(&self) -> BoxFuture<'_, Result<Vec<AlertRecord>, AlertStoreError>>;
    /// Writes changed records (upserts by rule and variant) and their firing periods.
    fn save(&self, records: Vec<AlertRecord>) -> BoxFuture<'_, Result<(), AlertStoreError>>;
}

/// The live stream, for things other than points: sends `{"type": kind, "data": data}` to
/// every connected client. Sending never waits.
pub(crate) trait Announcer: Send + Sync + std::fmt::Debug {
    /// Announces one event.
    fn announce(&self, kind: &'static str, data: serde_json::Value);
}
