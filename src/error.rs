//! The crate error, and the two response shapes errors take: Matrix-style
//! (`{"errcode","error"}`) towards Synapse and API-style (`{"error","detail"}`) towards
//! the UI and internal callers. A 500's cause is logged here, never sent.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::matrix::HomeserverError;

/// What can go wrong inside the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A call to the homeserver failed.
    #[error("homeserver: {0}")]
    Homeserver(#[from] HomeserverError),
    /// The bus (NATS) could not be reached.
    #[error("bus: {0}")]
    Bus(String),
    /// Work that has its own bounded resources (searches) found them all taken, or ran
    /// out of time: to be tried again later.
    #[error("{0}: busy")]
    Busy(&'static str),
}

impl Error {
    /// The status and API error code this error is answered with — the one mapping.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Homeserver(e) if e.is_unavailable() => {
                (StatusCode::SERVICE_UNAVAILABLE, "matrix_unavailable")
            }
            Self::Homeserver(_) => (StatusCode::BAD_GATEWAY, "matrix_error"),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::Database(_) | Self::Bus(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        }
    }

    /// The API error code alone.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error answered in the Matrix shape, for `/_matrix/*`.
#[derive(Debug)]
pub struct MatrixError {
    status: StatusCode,
    errcode: &'static str,
    message: String,
}

impl MatrixError {
    /// An error with the given status, `errcode` and message.
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
        }
    }

    /// `404 M_NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    /// `404 M_UNRECOGNIZED`, for paths the appservice does not serve.
    pub fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<Error> for MatrixError {
    fn from(error: Error) -> Self {
        tracing::error!(%error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal error",
        )
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "errcode": self.errcode, "error": self.message })),
        )
            .into_response()
    }
}

/// An error answered in the API shape, for `/api/*`, `/internal/*` and `/healthz`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
    detail: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the given status and code.
    pub fn new(status: StatusCode, code: &'static str) -> Self {
        Self {
            status,
            code,
            field: None,
            detail: None,
            retry_after: None,
        }
    }

    /// `429 {"error":"rate_limited"}` with `Retry-After`: `what` may be done again in
    /// `wait` (rounded up to whole seconds, at least 1).
    pub fn rate_limited(wait: std::time::Duration, what: &str) -> Self {
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            .with_detail(format!("too many {what}; try again in {secs} s"))
            .with_retry_after(secs)
    }

    /// Adds `Retry-After: <secs>` to the answer.
    #[must_use]
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// `422 {"error":"invalid","field":…,"detail":…}`: a field of the request is unusable.
    pub fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        Self {
            field: Some(field),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        }
        .with_detail(detail)
    }

    /// Names the field of the request (or the claim of its token) the error is about.
    #[must_use]
    pub fn with_field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    /// Adds a human-readable detail.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// `404 {"error":"not_found"}`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found")
    }

    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let (status, code) = error.status_and_code();
        match &error {
            Error::Homeserver(e) if e.is_unavailable() => {
                tracing::warn!(%error, "homeserver unavailable");
                Self::new(status, code)
                    .with_detail("the Matrix homeserver is unavailable; try again")
            }
            Error::Homeserver(_) => {
                tracing::error!(%error, "homeserver refused a request");
                Self::new(status, code).with_detail("the Matrix homeserver refused the request")
            }
            Error::Busy(what) => {
                tracing::warn!(%error, "busy");
                Self::new(status, code).with_detail(format!(
                    "the {what} is busy or took too long; try again shortly"
                ))
            }
            Error::Database(_) | Error::Bus(_) => {
                tracing::error!(%error, "request failed");
                Self::new(status, code)
            }
        }
    }
}

impl From<HomeserverError> for ApiError {
    fn from(error: HomeserverError) -> Self {
        Error::from(error).into()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Error::from(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code });
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        if let Some(detail) = self.detail {
            body["detail"] = json!(detail);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        response
    }
}
