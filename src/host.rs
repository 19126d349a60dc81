//! Which `Host` a browser's request may name: the defence against DNS rebinding.
//!
//! A page on `evil.example` can make its own name resolve to 127.0.0.1 (or any address it
//! learnt) once it has loaded; the browser then sends the page's requests to zai-dash with
//! `Host: evil.example` and `Origin: http://evil.example`. Those agree, so an `Origin == Host`
//! check passes and the page could sign in with a guessed token, sign a user out, or spend the
//! proxy's upstream key. What such a page cannot choose is the name: it is its own. So an IP
//! literal or `localhost` is always accepted (rebinding needs a DNS name the attacker
//! controls), and a DNS name only when the operator lists it in `ALLOWED_HOSTS` (`*` turns the
//! check off). The dashboard checks every state-changing request; the proxy checks requests
//! that carry an `Origin` (browsers send one on every cross-origin or non-GET request, SDKs
//! send none and keep working by any name).

use std::net::IpAddr;

use axum::http::{HeaderMap, Uri, header};
use clap::Args;

use crate::setting::{ConfigError, bad};

/// `ALLOWED_HOSTS`, shared by `serve` and `proxy`.
#[derive(Debug, Clone, Default, Args)]
pub struct HostArgs {
    /// DNS names browsers may reach the dashboard and the proxy by, comma-separated (the
    /// Service names, the ingress host); IP addresses and `localhost` are always accepted; `*`
    /// accepts any name. Other names are refused on sign-in, sign-out and every other change
    /// (DNS rebinding).
    #[arg(long, env = "ALLOWED_HOSTS", default_value = "")]
    pub allowed_hosts: String,
}

impl HostArgs {
    /// The validated list.
    pub(crate) fn validate(&self) -> Result<AllowedHosts, ConfigError> {
        AllowedHosts::parse(&self.allowed_hosts)
    }
}

/// The names a browser may use besides IP literals and `localhost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    /// `*`: no check.
    Any,
    /// Lower-case names without a trailing dot; empty means IP literals and `localhost` only.
    Names(Vec<String>),
}

impl Default for AllowedHosts {
    fn default() -> Self {
        Self::Names(Vec::new())
    }
}

impl AllowedHosts {
    /// Parses `ALLOWED_HOSTS`: comma-separated host names (no scheme, port or path), or `*`.
    pub(crate) fn parse(value: &str) -> Result<Self, ConfigError> {
        let mut names = Vec::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                return Ok(Self::Any);
            }
            let name = entry.trim_end_matches('.').to_ascii_lowercase();
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !valid {
                return Err(bad(format!(
                    "ALLOWED_HOSTS entry {entry:?} is not a host name; list names like dash.example.com, without scheme, port or path, or * for any."
                )));
            }
            names.push(name);
        }
        Ok(Self::Names(names))
    }

    /// Whether a request naming `host` (a `Host` header value, maybe with a port) may change
    /// state.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let names = match self {
            Self::Any => return true,
            Self::Names(names) => names,
        };
        let name = host_name(host);
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost" || names.contains(&name)
    }

    /// `Some(the refusal)` when `headers` name a host that is not allowed; a request that
    /// names none (no `Host`, no authority) is no browser's and passes.
    pub(crate) fn refusal(&self, headers: &HeaderMap, uri: &Uri) -> Option<String> {
        let host = request_host(headers, uri)?;
        (!self.allows(host)).then(|| {
            format!(
                "Host {host:?} is not allowed to change anything here: add its name to ALLOWED_HOSTS, or use an IP address or localhost (this protects against DNS rebinding)."
            )
        })
    }
}

/// The host a request was sent to: `Host`, else the HTTP/2 authority.
pub(crate) fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    headers.get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| uri.authority().map(|a| a.as_str()))
}

/// The name part of a `Host` value: `[::1]:8080` -> `::1`, `a.b:80` -> `a.b`, `a.b` -> `a.b`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_and_localhost_are_always_accepted() {
        let none = AllowedHosts::default();
        for host in
            ["127.0.0.1:8080", "10.1.2.3", "[::1]:8080", "[fd00::1]", "localhost:8080", "LOCALHOST", "localhost."]
        {
            assert!(none.allows(host), "{host}");
        }
        for host in ["evil.example:8080", "evil.example", "zai-dash", "127.0.0.1.nip.io", "localhost.evil.example", ""]
        {
            assert!(!none.allows(host), "{host}");
        }
    }

    #[test]
    fn listed_names_are_accepted_in_any_case_with_any_port() {
        let listed = AllowedHosts::parse(" zai-dash, Dash.Example.com. ,,").unwrap();
        assert_eq!(listed, AllowedHosts::Names(vec!["zai-dash".into(), "dash.example.com".into()]));
        for host in ["zai-dash:8080", "dash.example.com", "DASH.example.com:443", "dash.example.com.:443"] {
            assert!(listed.allows(host), "{host}");
        }
        assert!(!listed.allows("evil.example"));
        assert!(!listed.allows("example.com"));
        assert!(AllowedHosts::parse("a, *").unwrap().allows("anything.example:1"));
    }

    #[test]
    fn bad_entries_are_refused_naming_the_setting() {
        for bad in ["http://dash.example", "dash.example:8080", "dash.example/x", "a..b", "-", "a b"] {
            let e = AllowedHosts::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("ALLOWED_HOSTS entry"), "{bad}: {e}");
        }
        assert_eq!(AllowedHosts::parse("").unwrap(), AllowedHosts::default());
    }

    #[test]
    fn the_refusal_names_the_host_and_the_setting_and_hostless_requests_pass() {
        let mut h = HeaderMap::new();
        let uri = Uri::from_static("/login");
        assert!(AllowedHosts::default().refusal(&h, &uri).is_none(), "no Host: not a browser");
        h.insert(header::HOST, "evil.example:8080".parse().unwrap());
        let refusal = AllowedHosts::default().refusal(&h, &uri).unwrap();
        assert!(refusal.contains("\"evil.example:8080\"") && refusal.contains("ALLOWED_HOSTS"), "{refusal}");
        let h2 = HeaderMap::new();
        let absolute = Uri::from_static("http://evil.example/login");
        assert!(AllowedHosts::default().refusal(&h2, &absolute).is_some(), "the HTTP/2 authority counts");
    }
}
