//! Optional authentication (`DASHBOARD_TOKEN`): one shared token protects pages, API, live
//! events and `/metrics`; `/healthz` and `/readyz` stay open for probes.
//!
//! API clients send `Authorization: Bearer <token>` (compared in constant time). Browsers sign
//! in once at `/login`, which sets an HttpOnly, SameSite=Strict session cookie, because
//! `EventSource` cannot send headers; the cookie is a signed session, never the token
//! ([`super::session`]). Sign-in and sign-out are POSTs, so [`super::guard`] checks that they
//! name an allowed host and come from the dashboard's own origin; wrong tokens are limited per
//! client address.

use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::extract::{ConnectInfo, Form, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::AppState;
use super::session::{Session, Sessions};
use crate::setting::Secret;
use crate::telemetry::LogThrottle;

/// Name of the session cookie.
pub(crate) const COOKIE_NAME: &str = "zai_dash_session";
/// Paths reachable without the token: probes, and the sign-in itself.
const OPEN_PATHS: [&str; 4] = ["/healthz", "/readyz", "/login", "/logout"];

/// Compares without an early exit, so the time taken does not reveal how much of a guess
/// matched (only the longer of the two lengths shows).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// The bearer token of an `Authorization` header, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of our cookie, if the request carries it.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
}

/// True when the request carries the token as a bearer header or a valid session cookie.
pub(crate) fn authorized(headers: &HeaderMap, token: &Secret, sessions: &Sessions, now_ms: i64) -> bool {
    let by_header = bearer(headers).is_some_and(|t| constant_time_eq(t.as_bytes(), token.expose().as_bytes()));
    by_header || session_cookie(headers).is_some_and(|c| sessions.check(c, now_ms).is_some())
}

/// Middleware: lets open paths and authorized requests through; sends browsers asking for a
/// page to `/login` and answers everything else 401.
pub(crate) async fn require(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (Some(token), Some(sessions)) = (state.settings.dashboard_token.as_ref(), state.sessions.as_deref()) else {
        return next.run(req).await;
    };
    if OPEN_PATHS.contains(&req.uri().path()) || authorized(req.headers(), token, sessions, state.clock.now_ms()) {
        return next.run(req).await;
    }
    let wants_page = req.uri().path() == "/"
        || req.headers().get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if wants_page && !req.uri().path().starts_with("/api/") && req.uri().path() != "/metrics" {
        return Redirect::to("/login").into_response();
    }
    let body =
        axum::Json(serde_json::json!({ "error": "authentication required: send Authorization: Bearer <token>" }));
    let mut resp = (StatusCode::UNAUTHORIZED, body).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"zai-dash\""));
    resp
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    /// The token typed in.
    pub token: String,
}

fn login_page(message: &str) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>zai-dash: sign in</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>\
         <body><main><h1>zai-dash</h1><p>{message}</p>\
         <form method=\"post\" action=\"/login\"><label>Dashboard token \
         <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required autofocus></label> \
         <button type=\"submit\">Sign in</button></form></main></body></html>\n"
    ))
}

/// `GET /login`.
pub(crate) async fn login_form() -> Html<String> {
    login_page("This dashboard is protected by a token (DASHBOARD_TOKEN).")
}

/// `POST /login`: sets a session cookie when the token is right. Wrong tokens count against
/// the client's address.
pub(crate) async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let (Some(token), Some(sessions)) = (state.settings.dashboard_token.as_ref(), state.sessions.as_deref()) else {
        return Redirect::to("/").into_response();
    };
    let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.0.ip());
    let now = state.clock.now_ms();
    if let Err(wait_s) = sessions.login_allowed(ip, now) {
        // Every refused attempt, from any number of addresses: at most one line a minute.
        static PAUSED: LogThrottle = LogThrottle::new();
        if let Some(suppressed) = PAUSED.admit() {
            tracing::warn!(client = %ip, suppressed, "Too many wrong dashboard tokens; sign-in paused for this address.");
        }
        return too_many(wait_s);
    }
    if !constant_time_eq(form.token.trim().as_bytes(), token.expose().as_bytes()) {
        sessions.record_failure(ip, now);
        tracing::debug!(client = %ip, "Sign-in with a wrong token.");
        return (StatusCode::UNAUTHORIZED, login_page("Wrong token; try again.")).into_response();
    }
    let Some(session) = sessions.issue(now) else {
        tracing::error!("No system randomness for a session id; sign-in refused.");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let max_age = state.settings.session_ttl.as_secs();
    let cookie = format!(
        "{COOKIE_NAME}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        secure(&state, &headers)
    );
    session_response(&cookie)
}

/// `; Secure` when `COOKIE_SECURE` says so for this request: `auto` follows what a
/// TLS-terminating ingress reports (`X-Forwarded-Proto: https`).
fn secure(state: &AppState, headers: &HeaderMap) -> &'static str {
    let https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
    if state.settings.sessions.cookie_secure.applies(https) { "; Secure" } else { "" }
}

/// `POST /logout`: forgets the cookie and revokes the session on this replica (stored in
/// SQLite mode until it would have expired, so it survives restarts; other replicas are not
/// told, see [`super::session`]).
pub(crate) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = state.sessions.as_deref().zip(session_cookie(&headers)).and_then(|(s, c)| s.verify(c));
    if let (Some(sessions), Some(session)) = (state.sessions.as_deref(), session) {
        sessions.revoke(&session, state.clock.now_ms());
        persist_revocation(&state, session).await;
    }
    let mut resp = Redirect::to("/login").into_response();
    let cookie = format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}", secure(&state, &headers));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn persist_revocation(state: &AppState, session: Session) {
    // Source mode keeps no file: the revocation holds on this replica until it restarts.
    let Some(store) = state.store.as_ref() else { return };
    let result = store.revoke_session(session.id, session.expires_ms).await;
    static NOT_STORED: LogThrottle = LogThrottle::new();
    if let Err(e) = result
        && let Some(suppressed) = NOT_STORED.admit()
    {
        tracing::warn!(error = %e, suppressed, "Cannot store a revoked session; it stays revoked until a restart.");
    }
}

fn too_many(wait_s: u64) -> Response {
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, login_page("Too many wrong tokens; wait a minute.")).into_response();
    if let Ok(v) = HeaderValue::from_str(&wait_s.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn session_response(cookie: &str) -> Response {
    let mut resp = Redirect::to("/").into_response();
    match HeaderValue::from_str(cookie) {
        Ok(v) => {
            resp.headers_mut().insert(header::SET_COOKIE, v);
            resp
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Headers every response carries: no MIME sniffing, no framing by other sites (clickjacking).
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("content-security-policy", HeaderValue::from_static("frame-ancestors 'none'"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn header_and_session_cookie_are_both_accepted_but_never_the_token_as_cookie() {
        let token = Secret::new("s3 cr;et-long-enough");
        let sessions = Sessions::new(&token, "", 3_600_000);
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, &token, &sessions, 0));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3 cr;et-long-enough"));
        assert!(authorized(&h, &token, &sessions, 0));
        let mut h = HeaderMap::new();
        let cookie = format!("other=1; {COOKIE_NAME}={}", sessions.issue(0).unwrap());
        h.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        assert!(authorized(&h, &token, &sessions, 1));
        let mut h = HeaderMap::new();
        let hex: String = token.expose().bytes().map(|b| format!("{b:02x}")).collect();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("{COOKIE_NAME}={hex}")).unwrap());
        assert!(!authorized(&h, &token, &sessions, 1), "the old cookie (the token in hex) is no session");
    }
}
