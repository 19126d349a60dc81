//! The four outcomes of a comparison, shared by the rows, the overall judgement, the alert value
//! and the `/metrics` gauge.

use serde::Serialize;

/// Outcome of one metric or of the whole comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No regression found.
    Pass,
    /// Not enough data to judge yet.
    InsufficientData,
    /// A regression worth a look.
    Warn,
    /// A regression that should stop a rollout.
    Fail,
}

impl Verdict {
    /// Every verdict, in rank order.
    pub const ALL: [Verdict; 4] = [Verdict::Pass, Verdict::InsufficientData, Verdict::Warn, Verdict::Fail];

    /// The wire name (`pass`, `warn`, `fail`, `insufficient_data`), also used as a CSS class.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::InsufficientData => "insufficient_data",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }

    /// The verdict with this wire name.
    pub fn parse(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == s)
    }
}
