//! Who may change state on the dashboard: every request other than GET, HEAD and OPTIONS
//! (sign-in, sign-out, any later POST) must name an allowed `Host` (DNS rebinding, see
//! [`crate::host`]) and, when it carries an `Origin`, come from the dashboard's own origin (a
//! cross-site form post). Reads are not checked: they change nothing, and links must work by
//! any name.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::telemetry::{LogThrottle, excerpt};

/// Middleware: 403 for a state-changing request from a host or origin that may not change
/// anything; everything else passes.
pub(crate) async fn state_changes(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    if let Some(refusal) = state.settings.allowed_hosts.refusal(req.headers(), req.uri()) {
        // One per request a hostile page sends: at most one line a minute.
        static REFUSED_HOST: LogThrottle = LogThrottle::new();
        if let Some(suppressed) = REFUSED_HOST.admit() {
            tracing::warn!(path = req.uri().path(), suppressed, "Request refused: its Host is not in ALLOWED_HOSTS.");
        }
        return (StatusCode::FORBIDDEN, refusal).into_response();
    }
    if let Some(refused) = cross_site(req.headers()) {
        return refused;
    }
    next.run(req).await
}

/// A 403 for a state-changing request whose `Origin` is another site (a cross-site form post).
/// Requests without `Origin` (curl, scripts, old browsers' same-origin posts) pass.
fn cross_site(headers: &HeaderMap) -> Option<Response> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest).trim_end_matches('/');
    if origin_host.eq_ignore_ascii_case(host) {
        return None;
    }
    // One per request a hostile page sends: at most one line a minute, the origin excerpted.
    static REFUSED_ORIGIN: LogThrottle = LogThrottle::new();
    if let Some(suppressed) = REFUSED_ORIGIN.admit() {
        tracing::warn!(origin = %excerpt(origin), suppressed, "Cross-site post to the dashboard refused.");
    }
    Some((StatusCode::FORBIDDEN, "cross-site request refused").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cross_site_posts_are_refused_same_site_and_originless_ones_pass() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("dash.example:8080"));
        assert!(cross_site(&h).is_none());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://dash.example:8080"));
        assert!(cross_site(&h).is_none());
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert_eq!(cross_site(&h).unwrap().status(), StatusCode::FORBIDDEN);
    }
}
