//! Where an alert stands: Prometheus' alert states plus `resolved`. Vocabulary shared by the
//! alert engine (`alerts`), what it persists (`ports::alert_state`) and the objectives'
//! burn-rate alerts (`budget::slo`), which are pure and sit below both.

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
    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Inactive, Self::Pending, Self::Firing, Self::Resolved].into_iter().find(|p| p.as_str() == s)
    }
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
