//! Optional authentication (`DASHBOARD_TOKEN`): one shared token protects pages, API, live
//! events and `/metrics`; `/healthz` and `/readyz` stay open for probes.
//!
//! API clients send `Authorization: Bearer <token>`. Browsers sign in once at `/login`, which
//! sets an HttpOnly, SameSite=Strict cookie, because `EventSource` cannot send headers. The
//! cookie carries the token hex-encoded (safe in a cookie whatever its characters), so a
//! restart or a second replica needs no session store; changing the token signs everyone out.
//! Every comparison is constant-time in the token's content.

use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::AppState;
use crate::setting::Secret;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "zai_dash_session";
/// Paths reachable without the token: probes, and the sign-in itself.
const OPEN_PATHS: [&str; 4] = ["/healthz", "/readyz", "/login", "/logout"];
/// How long the browser keeps the cookie (30 days).
const COOKIE_MAX_AGE_S: u32 = 30 * 24 * 3600;

/// Compares without an early exit, so the time taken does not reveal how much of a guess
/// matched (only the longer of the two lengths shows).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

/// True when the request carries the token as a bearer header or as the session cookie.
pub fn authorized(headers: &HeaderMap, token: &Secret) -> bool {
    let expected = token.expose().as_bytes();
    let by_header = bearer(headers).is_some_and(|t| constant_time_eq(t.as_bytes(), expected));
    let by_cookie = session_cookie(headers).is_some_and(|c| constant_time_eq(c.as_bytes(), hex(expected).as_bytes()));
    by_header | by_cookie
}

/// Middleware: lets open paths and authorized requests through; sends browsers asking for a
/// page to `/login` and answers everything else 401.
pub async fn require(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = state.settings.dashboard_token.as_ref() else {
        return next.run(req).await;
    };
    if OPEN_PATHS.contains(&req.uri().path()) || authorized(req.headers(), token) {
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
pub struct LoginForm {
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
pub async fn login_form() -> Html<String> {
    login_page("This dashboard is protected by a token (DASHBOARD_TOKEN).")
}

/// `POST /login`: sets the session cookie when the token is right.
pub async fn login(State(state): State<AppState>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let Some(token) = state.settings.dashboard_token.as_ref() else {
        return Redirect::to("/").into_response();
    };
    if !constant_time_eq(form.token.as_bytes(), token.expose().as_bytes()) {
        tracing::debug!("Sign-in with a wrong token.");
        return (StatusCode::UNAUTHORIZED, login_page("Wrong token; try again.")).into_response();
    }
    // Behind a TLS-terminating ingress the browser speaks https: mark the cookie Secure then.
    let https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
    let cookie = format!(
        "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_S}{}",
        hex(token.expose().as_bytes()),
        if https { "; Secure" } else { "" }
    );
    session_response(&cookie)
}

/// `POST /logout`: forgets the cookie.
pub async fn logout() -> Response {
    let mut resp = Redirect::to("/login").into_response();
    let cookie = format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
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
    fn header_and_cookie_are_both_accepted() {
        let token = Secret::new("s3 cr;et");
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, &token));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3 cr;et"));
        assert!(authorized(&h, &token));
        let mut h = HeaderMap::new();
        let cookie = format!("other=1; {COOKIE_NAME}={}", hex(b"s3 cr;et"));
        h.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        assert!(authorized(&h, &token));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("zai_dash_session=00"));
        assert!(!authorized(&h, &token));
    }
}
