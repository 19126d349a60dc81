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
