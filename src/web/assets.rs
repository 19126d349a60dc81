//! Static assets (the built live script and the stylesheet), embedded in the binary with
//! `include_bytes!`, so the binary is the whole deployment and `cargo build` never needs npm.
//!
//! Each asset's URL carries a hash of its content (`/static/app.js?v=<hash>`): a response to
//! that exact URL may be cached for a year (`immutable`), since a new build changes the URL.
//! Every response carries the hash as a strong `ETag`, and `If-None-Match` gets a 304, so even
//! an unversioned request revalidates for a few bytes.

use std::sync::LazyLock;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

struct Asset {
    name: &'static str,
    mime: &'static str,
    bytes: &'static [u8],
    hash: String,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    [
        ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../static/app.js").as_slice()),
        ("app.css", "text/css; charset=utf-8", include_bytes!("../../static/app.css").as_slice()),
    ]
    .into_iter()
    .map(|(name, mime, bytes)| Asset { name, mime, bytes, hash: content_hash(bytes) })
    .collect()
});

/// FNV-1a (64 bit) of the content, as 16 hex digits: a cache key, not a security measure.
pub(crate) fn content_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The versioned URL of an asset (`/static/app.js?v=...`); a plain path for an unknown name.
pub(crate) fn url(name: &str) -> String {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => format!("/static/{}?v={}", a.name, a.hash),
        None => format!("/static/{name}"),
    }
}

/// Query of an asset request.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Version {
    v: Option<String>,
}

/// `GET /static/{name}`.
pub(crate) async fn serve(Path(name): Path<String>, Query(version): Query<Version>, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let etag = format!("\"{}\"", asset.hash);
    let cache = if version.v.as_deref() == Some(asset.hash.as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut out = HeaderMap::new();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, v);
    }
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.mime));
    (StatusCode::OK, out, asset.bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_content_dependent() {
        assert_eq!(content_hash(b""), "cbf29ce484222325");
        assert_eq!(content_hash(b"a"), "af63dc4c8601ec8c");
        assert!(url("app.js").starts_with("/static/app.js?v="));
        assert_eq!(url("nope.js"), "/static/nope.js");
    }
}
