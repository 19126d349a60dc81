//! Dashboard sessions, their settings, and the sign-in limit.
//!
//! A session cookie is `v1.<issued ms>.<random id>.<HMAC>`: the HMAC-SHA256, under a key
//! derived from `DASHBOARD_TOKEN` and `SESSION_EPOCH`, of the issue time and a random id. So a
//! leaked cookie is not the token, it expires after `SESSION_TTL`, and nothing but revocations
//! is stored: any replica with the same token and epoch accepts a session another one issued.
//!
//! What signs a session out, and where (README, "Authentication"):
//! - `/logout` clears the browser's cookie and revokes the session's id on the replica that
//!   answered it; in SQLite mode the revocation is stored until the session would have expired,
//!   so a restart does not bring it back. Other replicas (source mode runs several, with no
//!   shared store) do not learn of it: a copy of the cookie keeps working there until it
//!   expires. A single session cannot be revoked everywhere without state the replicas share.
//! - Changing `SESSION_EPOCH` (or the token) changes the key: every session issued before is
//!   refused by every replica that runs with the new value, whatever it stores.
//!
//! `/login` allows [`FAILURES_PER_MINUTE`] wrong tokens per client address per minute; more
//! get 429 with `Retry-After`, so a token cannot be guessed at the speed of the network.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use clap::Args;

use crate::setting::{ConfigError, Secret, bad};

/// Wrong tokens a client address may send per minute before it must wait.
pub(crate) const FAILURES_PER_MINUTE: usize = 5;
const MINUTE_MS: i64 = 60_000;
/// Client addresses remembered at once; beyond it the oldest record is forgotten first, so a
/// flood of addresses cannot grow memory.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// `COOKIE_SECURE` and `SESSION_EPOCH`, flags of `serve`.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// When the session cookie gets the `Secure` flag: `auto` (when an ingress reports
    /// `X-Forwarded-Proto: https`), `always` (the dashboard is only reached over https) or
    /// `never`.
    #[arg(long, env = "COOKIE_SECURE", default_value = "auto")]
    pub cookie_secure: String,
    /// Part of the session key: change it (on every replica) to sign every browser session out
    /// without changing DASHBOARD_TOKEN. Any text up to 128 visible characters (`2`,
    /// `2025-06-01`).
    #[arg(long, env = "SESSION_EPOCH", default_value = "")]
    pub session_epoch: String,
}

impl Default for SessionArgs {
    fn default() -> Self {
        Self { cookie_secure: "auto".into(), session_epoch: String::new() }
    }
}

/// When the session cookie is marked `Secure` (sent over https only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CookieSecure {
    /// When the request reached an https ingress (`X-Forwarded-Proto: https`).
    #[default]
    Auto,
    /// Always: a browser on plain http then never sends it back (it cannot sign in).
    Always,
    /// Never.
    Never,
}

impl CookieSecure {
    /// Whether a cookie set in answer to a request forwarded as `forwarded_https` is `Secure`.
    pub(crate) fn applies(self, forwarded_https: bool) -> bool {
        match self {
            Self::Auto => forwarded_https,
            Self::Always => true,
            Self::Never => false,
        }
    }
}

/// The validated session settings besides the token and the lifetime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPolicy {
    /// `COOKIE_SECURE`.
    pub cookie_secure: CookieSecure,
    /// `SESSION_EPOCH` (empty: none, the key of earlier versions).
    pub epoch: String,
}

/// Longest `SESSION_EPOCH`.
const MAX_EPOCH_CHARS: usize = 128;

impl SessionArgs {
    /// Checks both values.
    pub(crate) fn validate(&self) -> Result<SessionPolicy, ConfigError> {
        let cookie_secure = match self.cookie_secure.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => CookieSecure::Auto,
            "always" => CookieSecure::Always,
            "never" => CookieSecure::Never,
            _ => {
                return Err(bad(format!("COOKIE_SECURE {:?} is not one of auto, always, never.", self.cookie_secure)));
            }
        };
        let epoch = self.session_epoch.trim();
        if epoch.len() > MAX_EPOCH_CHARS || !epoch.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(format!(
                "SESSION_EPOCH must be at most {MAX_EPOCH_CHARS} visible ASCII characters without spaces (e.g. 2 or 2025-06-01)."
            )));
        }
        Ok(SessionPolicy { cookie_secure, epoch: epoch.to_owned() })
    }
}

/// Sessions of one token and epoch.
pub struct Sessions {
    key: hmac::Key,
    ttl_ms: i64,
    random: SystemRandom,
    revoked: Mutex<HashMap<String, i64>>,
    failures: Mutex<HashMap<IpAddr, VecDeque<i64>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("ttl_ms", &self.ttl_ms).finish_non_exhaustive()
    }
}

/// A session cookie's parts, once its signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// Random id (what logout revokes).
    pub id: String,
    /// When it stops being accepted, Unix ms.
    pub expires_ms: i64,
}

impl Sessions {
    /// Sessions signed with a key derived from `token` and `epoch`, valid for `ttl_ms`. Without
    /// an epoch the key is the one earlier versions derived, so an upgrade signs nobody out.
    pub(crate) fn new(token: &Secret, epoch: &str, ttl_ms: i64) -> Self {
        let derive = hmac::Key::new(hmac::HMAC_SHA256, token.expose().as_bytes());
        let mut label = b"zai-dash session key v1".to_vec();
        if !epoch.is_empty() {
            label.push(0);
            label.extend_from_slice(epoch.as_bytes());
        }
        let key = hmac::sign(&derive, &label);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()),
            ttl_ms,
            random: SystemRandom::new(),
            revoked: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// A new session cookie value issued at `now_ms`; `None` if the system has no randomness.
    pub(crate) fn issue(&self, now_ms: i64) -> Option<String> {
        let mut id = [0u8; 16];
        self.random.fill(&mut id).ok()?;
        let body = format!("v1.{now_ms}.{}", hex(&id));
        let tag = hmac::sign(&self.key, body.as_bytes());
        Some(format!("{body}.{}", hex(tag.as_ref())))
    }

    /// The session of a cookie value, when it is signed by this token, not expired and not
    /// revoked.
    pub(crate) fn check(&self, cookie: &str, now_ms: i64) -> Option<Session> {
        let session = self.verify(cookie)?;
        let revoked = self.revoked.lock().map(|r| r.contains_key(&session.id)).unwrap_or(true);
        (now_ms < session.expires_ms && !revoked).then_some(session)
    }

    /// Signature and shape only (what logout needs to revoke an expired-or-not session).
    pub(crate) fn verify(&self, cookie: &str) -> Option<Session> {
        let (body, tag) = cookie.rsplit_once('.')?;
        let mut parts = body.split('.');
        let (Some("v1"), Some(issued), Some(id), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let tag = unhex(tag)?;
        hmac::verify(&self.key, body.as_bytes(), &tag).ok()?;
        let issued: i64 = issued.parse().ok()?;
        Some(Session { id: id.to_owned(), expires_ms: issued.saturating_add(self.ttl_ms) })
    }

    /// Forgets a session until it would have expired.
    pub(crate) fn revoke(&self, session: &Session, now_ms: i64) {
        if let Ok(mut r) = self.revoked.lock() {
            r.retain(|_, expires| *expires > now_ms);
            r.insert(session.id.clone(), session.expires_ms);
        }
    }

    /// Revocations read back from storage at start-up.
    pub(crate) fn restore_revoked(&self, revoked: impl IntoIterator<Item = (String, i64)>) {
        if let Ok(mut r) = self.revoked.lock() {
            r.extend(revoked);
        }
    }

    /// `Err(seconds to wait)` when `ip` sent too many wrong tokens in the last minute.
    pub(crate) fn login_allowed(&self, ip: IpAddr, now_ms: i64) -> Result<(), u64> {
        let Ok(mut f) = self.failures.lock() else { return Ok(()) };
        let Some(times) = f.get_mut(&ip) else { return Ok(()) };
        while times.front().is_some_and(|t| *t <= now_ms - MINUTE_MS) {
            times.pop_front();
        }
        match times.front() {
            Some(oldest) if times.len() >= FAILURES_PER_MINUTE => {
                let wait_ms = oldest + MINUTE_MS - now_ms;
                Err(u64::try_from(wait_ms.max(1_000).div_euclid(1_000) + 1).unwrap_or(60))
            }
            _ => Ok(()),
        }
    }

    /// Counts a wrong token from `ip`.
    pub(crate) fn record_failure(&self, ip: IpAddr, now_ms: i64) {
        let Ok(mut f) = self.failures.lock() else { return };
        if f.len() >= MAX_TRACKED_ADDRESSES && !f.contains_key(&ip) {
            f.retain(|_, times| times.back().is_some_and(|t| *t > now_ms - MINUTE_MS));
            if f.len() >= MAX_TRACKED_ADDRESSES {
                let oldest = f.iter().min_by_key(|(_, t)| t.back().copied()).map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    f.remove(&oldest);
                }
            }
        }
        let times = f.entry(ip).or_default();
        times.push_back(now_ms);
        while times.len() > FAILURES_PER_MINUTE {
            times.pop_front();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn sessions() -> Sessions {
        Sessions::new(&Secret::new("correct horse battery staple"), "", 12 * HOUR)
    }

    #[test]
    fn a_session_is_signed_expires_and_is_not_the_token() {
        let s = sessions();
        let cookie = s.issue(1_000).unwrap();
        assert!(!cookie.contains("correct"), "the cookie carries no trace of the token");
        assert!(s.check(&cookie, 2_000).is_some());
        assert!(s.check(&cookie, 1_000 + 12 * HOUR).is_none(), "expired after SESSION_TTL");
        let other = Sessions::new(&Secret::new("another token entirely"), "", 12 * HOUR);
        assert!(other.check(&cookie, 2_000).is_none(), "a new token signs everyone out");
    }

    #[test]
    fn a_new_epoch_signs_everyone_out_and_no_epoch_keeps_the_old_key() {
        let token = Secret::new("correct horse battery staple");
        let cookie = sessions().issue(1_000).unwrap();
        let same = Sessions::new(&token, "", 12 * HOUR);
        assert!(same.check(&cookie, 2_000).is_some(), "another replica, or an upgrade without an epoch");
        let epoch_1 = Sessions::new(&token, "1", 12 * HOUR);
        assert!(epoch_1.check(&cookie, 2_000).is_none());
        let issued = epoch_1.issue(1_000).unwrap();
        assert!(Sessions::new(&token, "1", 12 * HOUR).check(&issued, 2_000).is_some());
        assert!(Sessions::new(&token, "2", 12 * HOUR).check(&issued, 2_000).is_none());
    }

    #[test]
    fn session_settings_are_checked() {
        let args =
            |secure: &str, epoch: &str| SessionArgs { cookie_secure: secure.into(), session_epoch: epoch.into() };
        let p = args(" Always ", " 2025-06-01 ").validate().unwrap();
        assert_eq!(p, SessionPolicy { cookie_secure: CookieSecure::Always, epoch: "2025-06-01".into() });
        assert_eq!(SessionArgs::default().validate().unwrap(), SessionPolicy::default());
        let e = args("sometimes", "").validate().unwrap_err().to_string();
        assert_eq!(e, "COOKIE_SECURE \"sometimes\" is not one of auto, always, never.");
        assert!(args("auto", "two words").validate().unwrap_err().to_string().starts_with("SESSION_EPOCH"));
        assert!(args("auto", &"x".repeat(129)).validate().is_err());
        assert!(CookieSecure::Auto.applies(true) && !CookieSecure::Auto.applies(false));
        assert!(CookieSecure::Always.applies(false) && !CookieSecure::Never.applies(true));
    }

    #[test]
    fn a_forged_or_altered_cookie_is_refused() {
        let s = sessions();
        let cookie = s.issue(1_000).unwrap();
        let later = cookie.replacen("v1.1000.", "v1.99999999999.", 1);
        assert!(s.check(&later, 2_000).is_none(), "the issue time is signed");
        for bad in ["", "v1", "v1.1.2.3", "x.1.ab.cd", "v1.1000.abcd.zz", &format!("{cookie}.x")] {
            assert!(s.check(bad, 2_000).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn logout_revokes_the_session_only() {
        let s = sessions();
        let (a, b) = (s.issue(1_000).unwrap(), s.issue(1_000).unwrap());
        s.revoke(&s.verify(&a).unwrap(), 2_000);
        assert!(s.check(&a, 3_000).is_none());
        assert!(s.check(&b, 3_000).is_some());
    }

    #[test]
    fn five_wrong_tokens_a_minute_then_wait() {
        let s = sessions();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        for i in 0..5 {
            assert_eq!(s.login_allowed(ip, i * 1_000), Ok(()));
            s.record_failure(ip, i * 1_000);
        }
        let wait = s.login_allowed(ip, 5_000).unwrap_err();
        assert!((55..=61).contains(&wait), "{wait}");
        assert_eq!(s.login_allowed("10.0.0.8".parse().unwrap(), 5_000), Ok(()), "per address");
        assert_eq!(s.login_allowed(ip, 60_001), Ok(()), "a minute later");
    }
}
