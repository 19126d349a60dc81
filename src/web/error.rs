//! The one mapping from errors to HTTP responses.
//!
//! Client mistakes get a 400 with a sentence naming the parameter; server-side failures get a
//! generic 500 body while the details go to the log (never to the client).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// An API error, rendered as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message says which parameter and why.
    #[error("{0}")]
    BadRequest(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let message = match &self {
            Self::BadRequest(m) => m.clone(),
            Self::Store(e) => {
                tracing::error!(error = %e, "Request failed in storage.");
                "internal error; see the zai-dash log".to_owned()
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

/// A page error, rendered as an HTML page (people, not scripts, read these).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The request is wrong (a bad `range`, an unknown parameter value).
    #[error("{0}")]
    BadRequest(String),
    /// Something failed on the server; details are logged, not shown.
    #[error("internal error")]
    Internal,
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::BadRequest(m) => Self::BadRequest(m),
            ApiError::Store(e) => {
                tracing::error!(error = %e, "Page failed in storage.");
                Self::Internal
            }
        }
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
        };
        let page = ErrorPage { status: status.as_u16(), reason: status.canonical_reason().unwrap_or("Error"), message };
        match askama::Template::render(&page) {
            Ok(html) => (status, axum::response::Html(html)).into_response(),
            Err(_) => (status, message.to_owned()).into_response(),
        }
    }
}
