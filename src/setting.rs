//! Parsing and checking single setting values: durations, listen addresses, the database
//! path, secrets, and the one-sentence error every bad value gets.
//!
//! Every subsystem validates its own settings type (the scraper, the proxy, the web layer)
//! with these helpers, and `config` composes those types; so this vocabulary sits in the core,
//! below every subsystem, and knows nothing about any of them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// A configuration problem, phrased as one sentence that names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A [`ConfigError`] from a message.
pub(crate) fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// A secret string whose `Debug` never shows the value, so settings can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is compared or sent.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A duration in whole milliseconds, saturating.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Parses a positive humantime duration, naming `setting` on failure.
pub fn parse_duration(setting: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        bad(format!("{setting} has an invalid duration {value:?} ({e}); use forms like 500ms, 5s, 24h or 7d."))
    })?;
    if d.is_zero() {
        return Err(bad(format!("{setting} must be longer than zero.")));
    }
    Ok(d)
}

/// Parses a positive size in bytes: a whole number with an optional unit, `KiB`, `MiB`, `GiB`
/// (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000), naming `setting` on failure.
pub(crate) fn parse_bytes(setting: &str, value: &str) -> Result<u64, ConfigError> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = (&v[..split], v[split..].trim());
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => 0,
    };
    let bytes = digits.parse::<u64>().ok().and_then(|n| n.checked_mul(factor)).filter(|&b| b > 0);
    bytes
        .ok_or_else(|| bad(format!("{setting} has an invalid size {value:?}; use forms like 65536, 512KiB or 256MiB.")))
}

/// Accepts `host:port`, `[v6]:port` and Go's `:port` (all interfaces).
pub fn parse_listen_addr(setting: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let v = value.trim();
    let full = if v.starts_with(':') { format!("0.0.0.0{v}") } else { v.to_owned() };
    full.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| bad(format!("{setting} {value:?} is not an address like :8080 or 127.0.0.1:8080.")))
}

/// Creates the database directory and checks that it is writable.
pub fn prepare_db_path(path: &std::path::Path) -> Result<PathBuf, ConfigError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| bad(format!("DB_PATH {}: cannot create directory {} ({e}).", path.display(), dir.display())))?;
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".zai-dash-write-test-{}-{n}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| bad(format!("DB_PATH {}: directory {} is not writable ({e}).", path.display(), dir.display())))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_bytes("S", "256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("S", " 64 KiB ").unwrap(), 65_536);
        assert_eq!(parse_bytes("S", "1gb").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("S", "4096").unwrap(), 4_096);
        for bad in ["", "0", "-1", "1.5MiB", "12 parsecs", "99999999999999999999GiB"] {
            let e = parse_bytes("REMOTE_WRITE_MAX_BACKLOG_BYTES", bad).unwrap_err().to_string();
            assert!(e.starts_with("REMOTE_WRITE_MAX_BACKLOG_BYTES has an invalid size"), "{bad:?}: {e}");
        }
    }
}
