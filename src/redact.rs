//! URL credentials hidden wherever a URL is shown: `http://user:pass@host/metrics?token=t`
//! becomes `http://***@host/metrics?token=***`.
//!
//! A scrape URL may carry credentials (user info, or a query value such as `?token=`), and the
//! scraper must send them; but the same URL is what pages, the API, the live stream,
//! self-metric labels, logs and error messages name a target by. So only the scrape itself sees
//! the real URL: every place that shows, logs or labels one goes through [`RedactedUrl`] (or
//! [`redact`]), and the health board and events hold the redacted form from the start.
//!
//! Hidden: the user info (`user:pass@`, or just `user@`), and the value of every query
//! parameter whose name (percent-decoded, any case) contains one of [`SECRET_KEY_WORDS`]
//! (`token`, `api_key`, `X-Auth`, `signature`, `password`, ...). The rest (scheme, host, port,
//! path, other parameters) stays, so a target is still recognisable. Redacting text that is
//! already redacted changes nothing, so [`same_target`] can compare either form.
//!
//! Works on text rather than on a parsed `Url`, so a configured entry that does not even parse
//! is hidden the same way in the error message that refuses it.

use std::borrow::Cow;
use std::fmt;

/// What hidden parts are replaced with.
pub(crate) const MASK: &str = "***";

/// Query parameters whose name contains one of these (case-insensitive) have their value
/// hidden: `token` (`access_token`), `key` (`api_key`, `apikey`), `secret`, `pass`
/// (`password`, `passwd`), `auth` (`X-Auth`, `authorization`), `sig` (`sig`, `signature`),
/// `credential`.
pub(crate) const SECRET_KEY_WORDS: [&str; 7] = ["token", "key", "secret", "pass", "auth", "sig", "credential"];

/// A URL to show: its `Display` hides the credentials (see the module).
#[derive(Clone, Copy)]
pub(crate) struct RedactedUrl<'a>(pub(crate) &'a str);

impl<'a> From<&'a url::Url> for RedactedUrl<'a> {
    fn from(url: &'a url::Url) -> Self {
        Self(url.as_str())
    }
}

impl fmt::Display for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(self.0))
    }
}

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact(self.0))
    }
}

/// The URL (or URL-like text) with its credentials replaced by [`MASK`]; borrowed when there
/// is nothing to hide.
pub(crate) fn redact(text: &str) -> Cow<'_, str> {
    let (before_fragment, fragment) = match text.find('#') {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let authority_start = before_fragment.find("://").map_or(0, |i| i + 3);
    let authority_len =
        before_fragment[authority_start..].find(['/', '?']).unwrap_or(before_fragment.len() - authority_start);
    let authority = &before_fragment[authority_start..authority_start + authority_len];
    let userinfo_end = authority.rfind('@').filter(|_| authority_start > 0);
    let rest = &before_fragment[authority_start + authority_len..];
    let (path, query) = match rest.find('?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let hidden_query = query.and_then(redact_query);
    if userinfo_end.is_none() && hidden_query.is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&before_fragment[..authority_start]);
    match userinfo_end {
        Some(at) => {
            out.push_str(MASK);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(hidden_query.as_deref().unwrap_or(q));
    }
    out.push_str(fragment);
    Cow::Owned(out)
}

/// The query with secret-looking values hidden, `None` when none is.
fn redact_query(query: &str) -> Option<String> {
    let mut changed = false;
    let parts: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if value != MASK && is_secret_name(name) => {
                changed = true;
                Cow::Owned(format!("{name}={MASK}"))
            }
            _ => Cow::Borrowed(pair),
        })
        .collect();
    changed.then(|| parts.join("&"))
}

/// Whether a query parameter's name looks like it holds a credential.
fn is_secret_name(raw_name: &str) -> bool {
    let name: String = url::form_urlencoded::parse(raw_name.as_bytes())
        .next()
        .map(|(k, _)| k.to_ascii_lowercase())
        .unwrap_or_else(|| raw_name.to_ascii_lowercase());
    SECRET_KEY_WORDS.iter().any(|w| name.contains(w))
}

/// Whether `filter` (a `target=` parameter) names the target `url`: the URL itself, or the
/// form pages and the API show it in. Either side may already be redacted.
pub(crate) fn same_target(filter: &str, url: &str) -> bool {
    filter == url || redact(filter) == redact(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_and_secret_looking_query_values_are_hidden() {
        for (given, shown) in [
            ("http://user:pass@h:9/metrics", "http://***@h:9/metrics"),
            ("http://user@h/metrics", "http://***@h/metrics"),
            ("https://h/m?token=t&x=1&api_key=k", "https://h/m?token=***&x=1&api_key=***"),
            (
                "http://h/m?X-Auth=a&Signature=s&sig=s&PassWord=p&apikey=k",
                "http://h/m?X-Auth=***&Signature=***&sig=***&PassWord=***&apikey=***",
            ),
            (
                "http://h/m?api%5Fkey=k&client_secret=s&credentials=c",
                "http://h/m?api%5Fkey=***&client_secret=***&credentials=***",
            ),
            (
                "dns+http://u:p@zai-proxy:8080/metrics?access_token=t#frag",
                "dns+http://***@zai-proxy:8080/metrics?access_token=***#frag",
            ),
            ("http://a:b@h?token=t", "http://***@h?token=***"),
            ("Bad Name=http://u:p@h/m", "Bad Name=http://***@h/m"),
        ] {
            assert_eq!(redact(given), shown, "{given}");
            assert_eq!(redact(shown), shown, "redacting twice changes nothing: {shown}");
        }
    }

    #[test]
    fn text_without_credentials_is_borrowed_unchanged() {
        for plain in [
            "http://h:9/metrics",
            "http://h/m?x=1&variant=canary&token",
            "http://h/path@with-at/m",
            "pod-1:8080",
            "10.0.0.1:9090",
            "",
            "http://h/m?#token=t",
        ] {
            assert!(matches!(redact(plain), Cow::Borrowed(_)), "{plain}");
        }
    }

    #[test]
    fn display_and_debug_hide_the_credentials() {
        let url = url::Url::parse("http://u:secret-pw@h/m?token=secret-t").unwrap();
        let shown = RedactedUrl::from(&url);
        assert_eq!(shown.to_string(), "http://***@h/m?token=***");
        assert!(!format!("{shown:?}").contains("secret"));
    }

    #[test]
    fn a_target_is_named_by_its_url_or_its_redacted_form() {
        let url = "http://u:p@h:9/metrics?token=t&x=1";
        assert!(same_target(url, url));
        assert!(same_target("http://***@h:9/metrics?token=***&x=1", url));
        assert!(!same_target("http://***@h:9/metrics?token=***&x=2", url));
        assert!(!same_target("http://h:9/metrics", url), "the user info is part of the name");
        assert!(same_target("http://h:9/metrics", "http://h:9/metrics"));
    }
}
