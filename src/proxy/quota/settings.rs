//! The quota poller's settings: zai-proxy's `QUOTA_*` variables as flags with environment
//! fallbacks, validated into [`QuotaSettings`]. Every value is checked even while polling is
//! off, so turning it on later cannot meet a setting that never parsed.

use std::time::Duration;

use clap::Args;

use crate::redact::RedactedUrl;
use crate::setting::{ConfigError, bad, parse_duration};

/// The provider path polled under `ZAI_QUOTA_BASE_URL`.
pub const QUOTA_PATH: &str = "/api/monitor/usage/quota/limit";

/// zai-proxy's quota poller settings.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Built-in proxy")]
pub struct QuotaArgs {
    /// Poll the provider's account quota and export `zai_proxy_quota_*` (observe-only; no
    /// request ever waits on it). `false`, `0`, `no`, `n` or empty are off.
    #[arg(long, env = "QUOTA_POLL_ENABLED", default_value = "false")]
    pub quota_poll_enabled: String,
    /// Time between quota polls (the first is at start-up).
    #[arg(long, env = "QUOTA_POLL_INTERVAL", default_value = "1m")]
    pub quota_poll_interval: String,
    /// Longest a quota poll may take, connect and body included; then it counts as an error.
    #[arg(long, env = "QUOTA_POLL_TIMEOUT", default_value = "5s")]
    pub quota_poll_timeout: String,
    /// Without a successful poll for this long, the last sample is reported stale (it stays
    /// exported, with its age).
    #[arg(long, env = "QUOTA_STALE_AFTER", default_value = "15m")]
    pub quota_stale_after: String,
    /// Origin of the provider's quota API (`/api/monitor/usage/quota/limit` is appended).
    #[arg(long, env = "ZAI_QUOTA_BASE_URL", default_value = "https://api.z.ai", hide_env_values = true)]
    pub zai_quota_base_url: String,
}

/// Validated poller settings; present in the proxy's settings only when polling is on.
#[derive(Debug, Clone)]
pub struct QuotaSettings {
    /// Time between polls.
    pub interval: Duration,
    /// Deadline of one whole poll.
    pub timeout: Duration,
    /// Age after which the last good sample is no longer fresh.
    pub stale_after: Duration,
    /// The full URL polled (base without trailing slash, then [`QUOTA_PATH`]).
    pub endpoint: String,
}

impl Default for QuotaArgs {
    /// The defaults clap gives, for tests and the demo.
    fn default() -> Self {
        Self {
            quota_poll_enabled: "false".into(),
            quota_poll_interval: "1m".into(),
            quota_poll_timeout: "5s".into(),
            quota_stale_after: "15m".into(),
            zai_quota_base_url: "https://api.z.ai".into(),
        }
    }
}

impl QuotaArgs {
    /// Checks every value; `None` when polling is off.
    pub(crate) fn validate(&self) -> Result<Option<QuotaSettings>, ConfigError> {
        let settings = QuotaSettings {
            interval: parse_duration("QUOTA_POLL_INTERVAL", &self.quota_poll_interval)?,
            timeout: parse_duration("QUOTA_POLL_TIMEOUT", &self.quota_poll_timeout)?,
            stale_after: parse_duration("QUOTA_STALE_AFTER", &self.quota_stale_after)?,
            endpoint: endpoint(&self.zai_quota_base_url)?,
        };
        Ok(enabled(&self.quota_poll_enabled).then_some(settings))
    }
}

/// zai-proxy's booleans, where unset or empty means the default (off here).
fn enabled(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    !v.is_empty() && !matches!(v.as_str(), "false" | "0" | "no" | "n")
}

fn endpoint(base: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(base.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .filter(|u| u.query().is_none() && u.fragment().is_none())
        .filter(|u| u.username().is_empty() && u.password().is_none());
    let Some(url) = parsed else {
        return Err(bad(format!(
            "ZAI_QUOTA_BASE_URL {:?} is not an http(s) origin like https://api.z.ai.",
            RedactedUrl(base).to_string()
        )));
    };
    Ok(format!("{}{QUOTA_PATH}", url.as_str().trim_end_matches('/')))
}

/// A duration the way Go prints one (`1m0s`, `15m0s`, `5s`, `1.5s`, `500ms`), as zai-proxy's
/// `/health` shows `interval` and `stale_after`.
pub(crate) fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 1_000_000));
    }
    let secs = d.as_secs();
    let (hours, minutes) = (secs / 3600, secs % 3600 / 60);
    let seconds = decimal(u128::from(secs % 60) * 1_000_000_000 + u128::from(d.subsec_nanos()), 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / unit` with the fraction's trailing zeros dropped (`1500, 1000` -> `1.5`).
fn decimal(value: u128, unit: u128) -> String {
    let (whole, frac) = (value / unit, value % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        let cases = [
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(900), "15m0s"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(5400 + 7), "1h30m7s"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::ZERO, "0s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn polling_is_off_unless_asked_and_every_value_is_checked() {
        let mut a = QuotaArgs::default();
        assert!(a.validate().unwrap().is_none());
        for on in ["true", "1", "yes", "on"] {
            a.quota_poll_enabled = on.into();
            assert!(a.validate().unwrap().is_some(), "{on}");
        }
        for off in ["", "false", "0", "No", "n"] {
            a.quota_poll_enabled = off.into();
            assert!(a.validate().unwrap().is_none(), "{off:?}");
        }
        a.quota_poll_enabled = "true".into();
        let s = a.validate().unwrap().unwrap();
        assert_eq!(s.endpoint, "https://api.z.ai/api/monitor/usage/quota/limit");
        assert_eq!(
            (s.interval, s.timeout, s.stale_after),
            (Duration::from_secs(60), Duration::from_secs(5), Duration::from_secs(900))
        );
        a.quota_poll_enabled = "false".into();
        a.quota_poll_timeout = "soon".into();
        assert!(a.validate().unwrap_err().to_string().contains("QUOTA_POLL_TIMEOUT"), "checked while off too");
        a.quota_poll_timeout = "5s".into();
        a.zai_quota_base_url = "ftp://api.z.ai".into();
        assert!(a.validate().unwrap_err().to_string().contains("ZAI_QUOTA_BASE_URL"));
        a.zai_quota_base_url = "https://user:pw@api.z.ai".into();
        let refused = a.validate().unwrap_err().to_string();
        assert!(
            refused.contains("ZAI_QUOTA_BASE_URL") && !refused.contains("pw"),
            "the key goes in a header: {refused}"
        );
        a.zai_quota_base_url = "http://127.0.0.1:9/".into();
        a.quota_poll_enabled = "y".into();
        assert_eq!(a.validate().unwrap().unwrap().endpoint, "http://127.0.0.1:9/api/monitor/usage/quota/limit");
    }
}
