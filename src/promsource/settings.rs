//! The source mode's settings: which engine, with which credentials and headers, how long a
//! query may take. Validated here, composed by `config`; secrets never reach a log or a page.

use std::time::Duration;

use crate::setting::{ConfigError, Secret, bad, parse_duration};

/// The settings as given (flags or environment), before validation.
#[derive(Debug, Clone, Default)]
pub struct EngineArgs<'a> {
    /// `PROMETHEUS_URL`: the engine's base URL (Mimir's includes `/prometheus`).
    pub url: Option<&'a str>,
    /// `PROMETHEUS_BEARER_TOKEN`.
    pub bearer_token: Option<&'a Secret>,
    /// `PROMETHEUS_HEADERS`: `Name: value` entries, separated by commas or newlines.
    pub headers: Option<&'a Secret>,
    /// `PROMETHEUS_TIMEOUT`.
    pub timeout: Option<&'a str>,
    /// `PROMETHEUS_DELAY`.
    pub delay: Option<&'a str>,
}

impl EngineArgs<'_> {
    /// The settings given, by name: `config` refuses them outside source mode.
    pub(crate) fn given(&self) -> Vec<&'static str> {
        let set = |v: Option<&str>| v.is_some_and(|v| !v.trim().is_empty());
        let mut out = Vec::new();
        if set(self.url) {
            out.push("PROMETHEUS_URL");
        }
        if set(self.bearer_token.map(Secret::expose)) {
            out.push("PROMETHEUS_BEARER_TOKEN");
        }
        if set(self.headers.map(Secret::expose)) {
            out.push("PROMETHEUS_HEADERS");
        }
        out
    }
}

/// Default of `PROMETHEUS_TIMEOUT`.
pub(crate) const DEFAULT_TIMEOUT: &str = "10s";
/// Default of `PROMETHEUS_DELAY`: Prometheus answers with a scrape's samples at once, and
/// VictoriaMetrics with those of series it already knows within a second.
pub(crate) const DEFAULT_DELAY: &str = "1500ms";
/// Longest `PROMETHEUS_DELAY`: the live stream and the newest points lag by as much.
const MAX_DELAY: Duration = Duration::from_secs(300);

/// Where the source mode reads from.
#[derive(Clone)]
pub struct EngineSettings {
    /// Base URL, without credentials.
    pub url: url::Url,
    /// User and password of the URL (`http://user:pass@host`), sent as basic auth.
    pub basic_auth: Option<(String, Secret)>,
    /// Sent as `Authorization: Bearer`.
    pub bearer_token: Option<Secret>,
    /// Extra headers (`X-Scope-OrgID` for Mimir's tenants); values may be secrets.
    pub headers: Vec<(String, Secret)>,
    /// Limit on every query, connection included.
    pub timeout: Duration,
    /// How long after a scrape the engine may still answer without its samples: a bucket is
    /// answered (and published live) only this long plus a scrape interval after it ends.
    /// VictoriaMetrics makes a series it has not seen before searchable only up to ~10 s
    /// later, so a new pod would be missing from the buckets answered before that.
    pub delay: Duration,
}

impl std::fmt::Debug for EngineSettings {
    /// Credentials and header values are never shown; header names are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSettings")
            .field("url", &self.display_url())
            .field("basic_auth", &self.basic_auth.is_some())
            .field("bearer_token", &self.bearer_token.is_some())
            .field("headers", &self.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("delay", &self.delay)
            .finish()
    }
}

impl EngineSettings {
    /// Checks every value; each problem is one sentence naming the setting, never repeating a
    /// value that may be secret.
    pub(crate) fn validate(args: &EngineArgs<'_>) -> Result<Self, ConfigError> {
        let raw = args.url.map(str::trim).filter(|u| !u.is_empty()).ok_or_else(|| {
            bad("SOURCE=prometheus needs PROMETHEUS_URL, the engine's base URL (e.g. http://prometheus:9090).")
        })?;
        let (url, basic_auth) = parse_url(raw)?;
        let bearer_token = args.bearer_token.map(|t| t.expose().trim()).filter(|t| !t.is_empty()).map(Secret::new);
        let headers = parse_headers(args.headers.map_or("", Secret::expose))?;
        let authorization = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("authorization"));
        if (bearer_token.is_some() || basic_auth.is_some()) && authorization {
            return Err(bad(
                "PROMETHEUS_HEADERS sets Authorization while PROMETHEUS_BEARER_TOKEN or credentials in PROMETHEUS_URL do too; keep one.",
            ));
        }
        let timeout = parse_duration("PROMETHEUS_TIMEOUT", args.timeout.unwrap_or(DEFAULT_TIMEOUT))?;
        let delay = parse_duration("PROMETHEUS_DELAY", args.delay.unwrap_or(DEFAULT_DELAY))?;
        if delay > MAX_DELAY {
            return Err(bad("PROMETHEUS_DELAY must be at most 5m (the live stream lags by as much)."));
        }
        Ok(Self { url, basic_auth, bearer_token, headers, timeout, delay })
    }

    /// Settings for tests: an engine at `url`, no credentials unless the URL has some.
    pub fn for_tests(url: &str) -> Self {
        let (url, basic_auth) = parse_url(url).unwrap_or_else(|e| panic!("EngineSettings::for_tests({url:?}): {e}"));
        let delay = Duration::from_millis(super::ENGINE_DELAY_MS.unsigned_abs());
        Self { url, basic_auth, bearer_token: None, headers: Vec::new(), timeout: Duration::from_secs(5), delay }
    }

    /// The URL as messages and pages show it: no credentials (they moved to `basic_auth`; a
    /// query is refused), no trailing `/`.
    pub(crate) fn display_url(&self) -> String {
        crate::redact::RedactedUrl::from(&self.url).to_string().trim_end_matches('/').to_owned()
    }
}

/// An http(s) URL with a host; user and password move out of it into basic auth.
fn parse_url(raw: &str) -> Result<(url::Url, Option<(String, Secret)>), ConfigError> {
    let mut url = match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => return Err(bad("PROMETHEUS_URL is not an http:// or https:// URL.")),
    };
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("PROMETHEUS_URL has a query or fragment; give the engine's base URL only."));
    }
    let basic = (!url.username().is_empty()).then(|| {
        let user = percent_decode(url.username());
        let password = url.password().map(percent_decode).unwrap_or_default();
        (user, Secret::new(password))
    });
    // Cannot fail on an http(s) URL with a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, basic))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// `Name: value` entries separated by commas or newlines.
fn parse_headers(text: &str) -> Result<Vec<(String, Secret)>, ConfigError> {
    let mut out = Vec::new();
    for (i, entry) in text.split([',', '\n']).map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let problem = || {
            bad(format!("PROMETHEUS_HEADERS entry {} is not `Name: value` with a valid header name and value.", i + 1))
        };
        let (name, value) = entry.split_once(':').ok_or_else(problem)?;
        let (name, value) = (name.trim(), value.trim());
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(value).is_err()
            || value.is_empty()
        {
            return Err(problem());
        }
        out.push((name.to_owned(), Secret::new(value)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(args: EngineArgs<'_>) -> String {
        EngineSettings::validate(&args).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn the_url_is_required_and_checked_without_repeating_it() {
        assert!(err(EngineArgs::default()).starts_with("SOURCE=prometheus needs PROMETHEUS_URL"));
        let e = err(EngineArgs { url: Some("ftp://user:hunter2@x"), ..Default::default() });
        assert_eq!(e, "PROMETHEUS_URL is not an http:// or https:// URL.");
        assert!(err(EngineArgs { url: Some("http://p:9090/?x=1"), ..Default::default() }).contains("query"));
    }

    #[test]
    fn credentials_leave_the_url_and_never_show() {
        let token = Secret::new("tok-123");
        let headers = Secret::new("X-Scope-OrgID: tenant-a, X-Extra:  v2 ");
        let s = EngineSettings::validate(&EngineArgs {
            url: Some("https://bob:p%40ss@mimir.example/prometheus/"),
            bearer_token: None,
            headers: Some(&headers),
            timeout: Some("3s"),
            delay: None,
        })
        .unwrap();
        assert_eq!(s.display_url(), "https://mimir.example/prometheus");
        let (user, password) = s.basic_auth.clone().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("bob", "p@ss"));
        assert_eq!(s.headers[1].0, "X-Extra");
        assert_eq!(s.headers[1].1.expose(), "v2");
        let shown = format!("{s:?}");
        assert!(!shown.contains("p@ss") && !shown.contains("tenant-a") && shown.contains("X-Scope-OrgID"), "{shown}");
        assert!(
            err(EngineArgs {
                url: Some("http://p"),
                bearer_token: Some(&token),
                headers: Some(&Secret::new("Authorization: x")),
                timeout: None,
                delay: None,
            })
            .starts_with("PROMETHEUS_HEADERS sets Authorization")
        );
    }

    #[test]
    fn bad_headers_and_timeouts_are_named() {
        let h = Secret::new("X-Scope-OrgID tenant");
        assert_eq!(
            err(EngineArgs { url: Some("http://p"), headers: Some(&h), ..Default::default() }),
            "PROMETHEUS_HEADERS entry 1 is not `Name: value` with a valid header name and value."
        );
        assert!(
            err(EngineArgs { url: Some("http://p"), timeout: Some("soon"), ..Default::default() })
                .starts_with("PROMETHEUS_TIMEOUT")
        );
    }

    #[test]
    fn the_engine_delay_defaults_to_a_second_and_a_half_and_is_bounded() {
        let s = |delay| EngineSettings::validate(&EngineArgs { url: Some("http://p"), delay, ..Default::default() });
        assert_eq!(s(None).unwrap().delay, Duration::from_millis(1_500));
        assert_eq!(s(Some("12s")).unwrap().delay, Duration::from_secs(12));
        assert!(s(Some("soon")).unwrap_err().to_string().starts_with("PROMETHEUS_DELAY"));
        assert_eq!(
            s(Some("6m")).unwrap_err().to_string(),
            "PROMETHEUS_DELAY must be at most 5m (the live stream lags by as much)."
        );
    }
}
