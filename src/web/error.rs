//! The one mapping from errors to HTTP responses.
//!
//! Client mistakes get a 400 with a sentence naming the parameter; server-side failures get a
//! generic 500 body while the details go to the log (never to the client). In source mode an
//! engine that cannot answer is a 503 (unreachable, timed out) or a 502 (an error or a body that
//! is not the Prometheus API), with a sentence naming the engine's URL without credentials: the
//! person reading it can act on it, and nothing secret is in it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::ports::read::SourceError;

/// An API error, rendered as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The request is wrong; the message says which parameter and why.
    #[error("{0}")]
    BadRequest(String),
    /// The data source failed (storage, or the engine in source mode).
    #[error("{0}")]
    Source(#[from] SourceError),
}

impl ApiError {
    /// The HTTP status of this error.
    pub(crate) fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Source(e) => source_status(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let message = match &self {
            Self::BadRequest(m) => m.clone(),
            Self::Source(e) => source_message(e),
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

/// A page error, rendered as an HTML page (people, not scripts, read these).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    /// The request is wrong (a bad `range`, an unknown parameter value).
    #[error("{0}")]
    BadRequest(String),
    /// Something failed on the server; details are logged, not shown.
    #[error("internal error")]
    Internal,
    /// The engine behind source mode could not answer (502 or 503); the sentence names it.
    #[error("{1}")]
    Upstream(StatusCode, String),
}

/// Storage failures, logged with every request that meets them: at most one line a minute
/// (the storage's own state is on `/healthz` and in self-metrics).
static STORAGE_FAILED: crate::telemetry::LogThrottle = crate::telemetry::LogThrottle::new();

/// The status of a source failure: storage is ours (500), an engine is a gateway (502, 503).
fn source_status(e: &SourceError) -> StatusCode {
    match e {
        SourceError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        SourceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        SourceError::BadGateway(_) => StatusCode::BAD_GATEWAY,
    }
}

/// What a client is told: storage details stay in the log; an engine's sentence is shown (it
/// names the engine, never its credentials). Engine failures are logged at DEBUG only: the
/// live poller logs the engine going down and coming back once each.
fn source_message(e: &SourceError) -> String {
    match e {
        SourceError::Storage(_) => {
            if let Some(suppressed) = STORAGE_FAILED.admit() {
                tracing::error!(error = %e, suppressed, "Request failed in storage.");
            }
            "internal error; see the zai-dash log".to_owned()
        }
        SourceError::Unavailable(m) | SourceError::BadGateway(m) => {
            tracing::debug!(error = %m, "Request failed at the engine.");
            m.clone()
        }
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::BadRequest(m) => Self::BadRequest(m),
            ApiError::Source(e @ SourceError::Storage(_)) => {
                if let Some(suppressed) = STORAGE_FAILED.admit() {
                    tracing::error!(error = %e, suppressed, "Page failed in storage.");
                }
                Self::Internal
            }
            ApiError::Source(e) => Self::Upstream(source_status(&e), source_message(&e)),
        }
    }
}

impl From<SourceError> for PageError {
    fn from(e: SourceError) -> Self {
        ApiError::Source(e).into()
    }
}

/// The HTML error page.
#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m.as_str()),
            Self::Internal => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Something failed on the server; see the zai-dash log.")
            }
            Self::Upstream(status, m) => (*status, m.as_str()),
        };
        let page = ErrorPage { status: status.as_u16(), reason: status.canonical_reason().unwrap_or("Error"), message };
        match askama::Template::render(&page) {
            Ok(html) => (status, axum::response::Html(html)).into_response(),
            Err(_) => (status, message.to_owned()).into_response(),
        }
    }
}
