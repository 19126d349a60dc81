//! What to scrape: the `SCRAPE_TARGETS` entries (`URL` or `VARIANT=URL`, `dns+http://` for
//! per-pod discovery), validated by the scraper itself and composed into the settings by
//! `config`.

use url::Url;

use crate::redact::RedactedUrl;
use crate::setting::{ConfigError, bad};
use crate::variant::{is_valid_variant, variant_from_url};

/// One configured scrape target. `Debug` hides the URL's credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// The `/metrics` URL.
    pub url: Url,
    /// The variant given explicitly as `NAME=URL`; it wins over labels and URL rules.
    pub variant: Option<String>,
}

/// URL scheme prefix of a target whose host name is re-resolved every interval, each address
/// becoming its own target (`dns+http://NAME:PORT/metrics`).
pub const DNS_SCHEME_PREFIX: &str = "dns+";

impl std::fmt::Debug for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetSpec")
            .field("url", &RedactedUrl::from(&self.url))
            .field("variant", &self.variant)
            .finish()
    }
}

impl TargetSpec {
    /// True for a `dns+http://` or `dns+https://` entry (scraped per resolved address).
    pub fn is_dns(&self) -> bool {
        self.url.scheme().starts_with(DNS_SCHEME_PREFIX)
    }

    /// The variant to use before the target's first successful scrape.
    pub fn initial_variant(&self) -> String {
        self.variant.clone().unwrap_or_else(|| variant_from_url(self.url.as_str()).to_owned())
    }
}

/// Parses `SCRAPE_TARGETS`: comma-separated `URL` or `VARIANT=URL` entries. Messages show
/// entries with their credentials hidden.
pub fn parse_targets(value: &str) -> Result<Vec<TargetSpec>, ConfigError> {
    let mut targets: Vec<TargetSpec> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let target = parse_target(entry)?;
        if targets.iter().any(|t| t.url == target.url) {
            return Err(bad(format!("SCRAPE_TARGETS lists {} twice.", RedactedUrl::from(&target.url))));
        }
        targets.push(target);
    }
    if targets.is_empty() {
        return Err(bad(
            "SCRAPE_TARGETS is empty: give at least one /metrics URL, e.g. SCRAPE_TARGETS=http://zai-proxy:8080/metrics.",
        ));
    }
    Ok(targets)
}

fn parse_target(entry: &str) -> Result<TargetSpec, ConfigError> {
    let shown = RedactedUrl(entry);
    let (variant, url_text) = match entry.split_once('=') {
        Some((name, rest)) if !name.contains("://") && !name.contains('/') => {
            let name = name.trim().to_ascii_lowercase();
            if !is_valid_variant(&name) {
                return Err(bad(format!(
                    "SCRAPE_TARGETS entry {shown:?} has an invalid variant name {name:?}; use 1-64 characters of a-z 0-9 _ . -."
                )));
            }
            (Some(name), rest.trim())
        }
        _ => (None, entry),
    };
    let url =
        Url::parse(url_text).map_err(|e| bad(format!("SCRAPE_TARGETS entry {shown:?} is not a valid URL ({e}).")))?;
    if !matches!(url.scheme(), "http" | "https" | "dns+http" | "dns+https") || url.host_str().is_none() {
        return Err(bad(format!(
            "SCRAPE_TARGETS entry {shown:?} must be an http://, https:// or dns+http:// URL with a host."
        )));
    }
    if url.scheme().starts_with(DNS_SCHEME_PREFIX) && url.port_or_known_default().is_none() {
        return Err(bad(format!(
            "SCRAPE_TARGETS entry {shown:?} needs a port, like dns+http://zai-proxy:8080/metrics."
        )));
    }
    Ok(TargetSpec { url, variant })
}
