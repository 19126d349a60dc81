//! Which variant (production, canary, ...) a target belongs to.
//!
//! Order of precedence: an explicit `NAME=URL` in the configuration; else the single `variant`
//! label value the target exposes on its `zai_proxy_*` families (lower-cased); else the Go
//! dashboard's URL rule. The URL rule also applies before a target's first successful scrape.

/// True when `name` is a usable variant name: 1-64 characters of `a-z 0-9 _ . -`.
pub(crate) fn is_valid_variant(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

/// The Go dashboard's rule: a URL containing `canary` or `test` is a canary.
pub(crate) fn variant_from_url(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.contains("canary") || lower.contains("test") { "canary" } else { "production" }
}

/// The variant a target reports about itself, if it reports exactly one usable value.
pub(crate) fn variant_from_labels<'a>(mut values: impl Iterator<Item = &'a str>) -> Option<String> {
    let first = values.next()?.to_ascii_lowercase();
    if values.any(|v| !v.eq_ignore_ascii_case(&first)) || !is_valid_variant(&first) {
        return None;
    }
    Some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_rule_matches_go() {
        assert_eq!(variant_from_url("http://zai-proxy-test:8080/metrics"), "canary");
        assert_eq!(variant_from_url("http://zai-proxy-CANARY/metrics"), "canary");
        assert_eq!(variant_from_url("http://zai-proxy:8080/metrics"), "production");
    }

    #[test]
    fn labels_need_one_valid_value() {
        assert_eq!(variant_from_labels(["Stable", "stable"].into_iter()), Some("stable".into()));
        assert_eq!(variant_from_labels(["a", "b"].into_iter()), None);
        assert_eq!(variant_from_labels(std::iter::empty()), None);
        assert_eq!(variant_from_labels(["has space"].into_iter()), None);
    }

    #[test]
    fn variant_names() {
        assert!(is_valid_variant("canary-2.v1_x"));
        assert!(!is_valid_variant(""));
        assert!(!is_valid_variant("Canary"));
        assert!(!is_valid_variant(&"a".repeat(65)));
    }
}
