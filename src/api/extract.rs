//! Extractors of the REST API: JSON bodies whose rejections are API errors, and callers.

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request, rejection::JsonRejection};
use http::{StatusCode, request::Parts};
use serde::de::DeserializeOwned;

use crate::{
    app::AppState,
    auth::{Claims, bearer_token, verify_jwt},
    error::ApiError,
};

/// A JSON body; a bad one is a 400 (or 415) with an API error body, like every other error.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                crate::error::ErrorCode::UnsupportedMediaType,
            )
            .with_detail("send Content-Type: application/json")),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                crate::error::ErrorCode::Invalid,
            )
            .with_detail(e.body_text())),
            Err(e) => Err(
                ApiError::new(StatusCode::BAD_REQUEST, crate::error::ErrorCode::BadJson)
                    .with_detail(e.body_text()),
            ),
        }
    }
}

/// Path parameters; a path that cannot be read (invalid UTF-8 after percent-decoding, say)
/// is a 400 with an API error body, like every other error.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(e) => Err(
                ApiError::new(StatusCode::BAD_REQUEST, crate::error::ErrorCode::BadPath)
                    .with_detail(e.body_text()),
            ),
        }
    }
}

/// Who is calling a write endpoint: another DAARION service (the internal secret) or an
/// admin user (a JWT with the `admin` role).
#[derive(Debug, Clone)]
pub enum Caller {
    /// `Authorization: Bearer $MATRIX_GATEWAY_SECRET`.
    Service,
    /// A user JWT with the `admin` role.
    Admin {
        /// The user.
        sub: String,
    },
}

impl Caller {
    /// Who, for logs: `service` or the user's id.
    pub fn name(&self) -> &str {
        match self {
            Self::Service => "service",
            Self::Admin { sub } => sub,
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        crate::error::ErrorCode::Unauthorized,
    )
    .with_detail("a bearer token is required")
}

/// The claims of a user JWT (`Authorization: Bearer`, or `?token=` on a WebSocket): the one
/// place a user JWT is checked, for REST and WebSockets alike. 401 `unauthorized` without a
/// token, 401 `invalid_token` for one that does not verify (or when no `JWT_SECRET` is set).
pub fn user_claims(token: Option<&str>, state: &AppState) -> Result<Claims, ApiError> {
    let Some(token) = token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            crate::error::ErrorCode::Unauthorized,
        )
        .with_detail("a user JWT is required"));
    };
    state
        .config
        .jwt_secret
        .as_ref()
        .and_then(|secret| verify_jwt(token, secret.expose()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                crate::error::ErrorCode::InvalidToken,
            )
        })
}

/// The caller, if the request carries credentials; `Err` for credentials that are wrong.
pub fn identify(parts: &Parts, state: &AppState) -> Result<Option<Caller>, ApiError> {
    let Some(token) = bearer_token(&parts.headers) else {
        return Ok(None);
    };
    if state.config.gateway_secret.matches(token) {
        return Ok(Some(Caller::Service));
    }
    let claims = user_claims(Some(token), state)?;
    if claims.is_admin() {
        Ok(Some(Caller::Admin { sub: claims.sub }))
    } else {
        Err(
            ApiError::new(StatusCode::FORBIDDEN, crate::error::ErrorCode::Forbidden)
                .with_detail("the admin role is required"),
        )
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        identify(parts, &AppState::from_ref(state))?.ok_or_else(unauthorized)
    }
}

/// Any caller with valid credentials, or none: reads show more to the former.
#[derive(Debug, Clone)]
pub struct MaybeCaller(pub Option<Caller>);

impl<S> FromRequestParts<S> for MaybeCaller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(Self(
            identify(parts, &AppState::from_ref(state)).unwrap_or(None),
        ))
    }
}

/// Another DAARION service, proven by `Authorization: Bearer $MATRIX_GATEWAY_SECRET`.
#[derive(Debug, Clone, Copy)]
pub struct Service;

impl<S> FromRequestParts<S> for Service
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        match bearer_token(&parts.headers) {
            None => Err(unauthorized()),
            Some(token) if state.config.gateway_secret.matches(token) => Ok(Self),
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                crate::error::ErrorCode::Forbidden,
            )),
        }
    }
}
