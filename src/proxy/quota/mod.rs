//! The quota poller: zai-proxy's observe-only view of the provider's account quota.
//!
//! When `QUOTA_POLL_ENABLED` is on, a task of its own polls the provider's
//! `/api/monitor/usage/quota/limit` with the proxy's upstream key (at start-up, then every
//! `QUOTA_POLL_INTERVAL`, each poll bounded by `QUOTA_POLL_TIMEOUT`) and exports what it read as
//! the `zai_proxy_quota_*` families and in `/health`. Nothing feeds admission: a request never
//! waits on a poll, and a hung quota endpoint costs only the poll's own timeout.
//!
//! Invariants: the key goes into one request header marked sensitive and nowhere else (no log
//! line, label, page or error quotes it, nor the provider's message, which can carry account
//! details); gauges are last-known-good (a failed poll leaves them); the sample's age and the
//! staleness transition are computed at poll time, as zai-proxy does.
//!
//! `settings` holds the `QUOTA_*` variables, `schema` reads an answer (pure), `poller` runs the
//! loop, writes the families and answers `/health`.

mod poller;
mod schema;
mod settings;

pub(crate) use poller::{QuotaHealth, QuotaPoller};
#[cfg(test)]
pub(crate) use schema::{LimitType, Window, normalise};
pub use settings::{QUOTA_PATH, QuotaArgs, QuotaSettings};

/// Why a poll failed. The text names the failure and, at most, a status or provider code:
/// never the key, a URL credential or anything the provider wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QuotaError {
    /// No answer within `QUOTA_POLL_TIMEOUT`.
    #[error("the quota endpoint did not answer within QUOTA_POLL_TIMEOUT")]
    Timeout,
    /// Connection refused, reset, TLS failure and the like.
    #[error("the quota endpoint could not be reached")]
    Unreachable,
    /// An HTTP status other than 200 (redirects are not followed: the key would go along).
    #[error("the quota endpoint answered HTTP {0}")]
    Status(u16),
    /// A body over [`MAX_ANSWER_BYTES`].
    #[error("the quota answer is larger than 64 KiB")]
    TooLarge,
    /// `success: false`, or a business code other than 0 and 200.
    #[error("the quota endpoint refused the request (provider code {0})")]
    Provider(i64),
    /// `ZAI_API_KEY` cannot be sent as a header value.
    #[error("ZAI_API_KEY is not a valid HTTP header value")]
    KeyNotAHeader,
    /// The body is not JSON.
    #[error("the quota answer is not valid JSON")]
    NotJson,
    /// JSON without a `data.limits` list.
    #[error("the quota answer has no data.limits list")]
    NoLimits,
}

/// Largest quota answer read (a real one is under 2 KiB).
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The `result` label values of `zai_proxy_quota_poll_total`.
pub(crate) mod result {
    /// A good answer.
    pub(crate) const SUCCESS: &str = "success";
    /// Transport, timeout, HTTP status, size or provider refusal.
    pub(crate) const ERROR: &str = "error";
    /// An answer that could not be read.
    pub(crate) const MALFORMED: &str = "malformed";
    /// Counted once when the sample stops being fresh (or a first poll fails).
    pub(crate) const STALE: &str = "stale";
}

impl QuotaError {
    /// The `result` label value: `malformed` for answers that could not be read, else `error`.
    pub(crate) fn result(&self) -> &'static str {
        match self {
            QuotaError::NotJson | QuotaError::NoLimits => result::MALFORMED,
            _ => result::ERROR,
        }
    }

    /// A short code for logs (`timeout`, `status`, `provider`, ...).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            QuotaError::Timeout => "timeout",
            QuotaError::Unreachable => "unreachable",
            QuotaError::Status(_) => "status",
            QuotaError::TooLarge => "too_large",
            QuotaError::Provider(_) => "provider",
            QuotaError::KeyNotAHeader => "bad_key",
            QuotaError::NotJson => "not_json",
            QuotaError::NoLimits => "no_limits",
        }
    }
}
