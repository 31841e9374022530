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
    /// A fault of the bridge's own (what it built cannot be used): answered as a 500.
    #[error("internal: {0}")]
    Internal(String),
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
    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::Homeserver(e) if e.is_unavailable() => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::MatrixUnavailable,
            ),
            Self::Homeserver(_) => (StatusCode::BAD_GATEWAY, ErrorCode::MatrixError),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy),
            Self::Database(_) | Self::Bus(_) | Self::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError)
            }
        }
    }

    /// The API error code alone.
    pub fn code(&self) -> ErrorCode {
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

/// Declares [`ErrorCode`] and its wire names.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal,)*) => {
        /// Every `error` code the API answers with (`{"error": <code>}`); the OpenAPI
        /// document lists them.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    /// Only an admin may do this (a city room channel).
    AdminRequired = "admin_required",
    /// The room or channel is archived: read-only.
    Archived = "archived",
    /// The body is not the JSON the endpoint takes.
    BadJson = "bad_json",
    /// A path segment is unusable.
    BadPath = "bad_path",
    /// A `multipart/form-data` body that cannot be read.
    BadMultipart = "bad_multipart",
    /// A bounded resource (search) is taken or timed out: try again shortly.
    Busy = "busy",
    /// The caller has made as many channels as allowed.
    ChannelQuota = "channel_quota",
    /// The channel is end-to-end encrypted: the bridge cannot write there.
    EncryptedChannel = "encrypted_channel",
    /// The caller may not do this.
    Forbidden = "forbidden",
    /// A request with this `Idempotency-Key` is still under way.
    IdempotencyKeyInFlight = "idempotency_key_in_flight",
    /// This `Idempotency-Key` was used for another request.
    IdempotencyKeyReused = "idempotency_key_reused",
    /// Something failed on the bridge's side (the cause is in its log).
    InternalError = "internal_error",
    /// A field of the request is unusable (`field` names it).
    Invalid = "invalid",
    /// Not a room alias of this homeserver.
    InvalidAlias = "invalid_alias",
    /// The token's subject is not a DAARION user or agent.
    InvalidSubject = "invalid_subject",
    /// A channel keeps at most 100 pins.
    TooManyPins = "too_many_pins",
    /// A file over the bridge's or the homeserver's size limit.
    TooLarge = "too_large",
    /// The token is malformed, expired or wrongly signed.
    InvalidToken = "invalid_token",
    /// The homeserver refused a request of the bridge's.
    MatrixError = "matrix_error",
    /// The homeserver is unavailable: try again.
    MatrixUnavailable = "matrix_unavailable",
    /// The caller has no Matrix user on this homeserver.
    NoMatrixIdentity = "no_matrix_identity",
    /// Join the channel first (a private one by invitation).
    NotAMember = "not_a_member",
    /// Only the message's author may do this.
    NotAuthor = "not_author",
    /// The message cannot be edited (not text, or redacted).
    NotEditable = "not_editable",
    /// The body is not `multipart/form-data` (an upload).
    NotMultipart = "not_multipart",
    /// No such thing, or not one the caller may see.
    NotFound = "not_found",
    /// Only the instance Synapse pushes to does this.
    NotTheReceiver = "not_the_receiver",
    /// The bridge cannot act as users (no puppet registration).
    PuppetingDisabled = "puppeting_disabled",
    /// Too many requests: see `Retry-After`.
    RateLimited = "rate_limited",
    /// The message was deleted.
    Redacted = "redacted",
    /// A room with this slug exists.
    SlugTaken = "slug_taken",
    /// No credentials, or not the right ones.
    Unauthorized = "unauthorized",
    /// No such agent.
    UnknownAgent = "unknown_agent",
    /// No such channel.
    UnknownChannel = "unknown_channel",
    /// The body's content type is not JSON.
    UnsupportedMediaType = "unsupported_media_type",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every API error, for the OpenAPI document.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ApiErrorBody {
    /// What went wrong.
    pub error: ErrorCode,
    /// The request field (or token claim) it is about, when one is.
    pub field: Option<&'static str>,
    /// A human-readable detail.
    pub detail: Option<String>,
}

/// An error answered in the API shape, for `/api/*`, `/internal/*` and `/healthz`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    field: Option<&'static str>,
    detail: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the given status and code.
    pub fn new(status: StatusCode, code: ErrorCode) -> Self {
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
        Self::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited)
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
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::Invalid)
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
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound)
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
            Error::Database(_) | Error::Bus(_) | Error::Internal(_) => {
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
        let mut body = json!({ "error": self.code.as_str() });
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

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn error_codes_are_written_as_their_wire_names() {
        for &code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
