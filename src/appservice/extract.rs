//! The [`Ruma`] extractor: authentication, body limit, and ruma's typed request parsing.

use axum::{
    body::Body,
    extract::{FromRef, FromRequest, FromRequestParts, RawPathParams, Request},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{StatusCode, request::Parts};
use http_body_util::{BodyExt as _, Limited};
use ruma::api::{
    IncomingRequest, IncomingRequestExt as _, OutgoingResponse, OutgoingResponseExt as _,
};

use crate::{app::AppState, auth::bearer_token, error::MatrixError};

/// Largest request body accepted: Synapse's worst transaction is 100 events of 64 KiB
/// (6.4 MiB) plus ephemeral data; anything far beyond that is refused with 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A request of the Application Service API, authenticated and parsed by ruma.
#[derive(Debug)]
pub struct Ruma<T> {
    /// The typed request.
    pub request: T,
    /// The body as received.
    pub body: Bytes,
}

/// Proof that the request carried the homeserver's token.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated;

fn authenticate(parts: &Parts, state: &AppState) -> Result<Authenticated, MatrixError> {
    // The legacy `?access_token=` is deliberately not read: it leaks into logs.
    let Some(token) = bearer_token(&parts.headers) else {
        return Err(MatrixError::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        ));
    };
    if state.config.registration.hs_token.matches(token) {
        Ok(Authenticated)
    } else {
        Err(MatrixError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "Invalid access token",
        ))
    }
}

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, MatrixError> {
        authenticate(parts, &AppState::from_ref(state))
    }
}

fn too_large() -> MatrixError {
    MatrixError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
        "Request body too large",
    )
}

impl<T, S> FromRequest<S> for Ruma<T>
where
    T: IncomingRequest,
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &S) -> Result<Self, MatrixError> {
        let state = AppState::from_ref(state);
        let (mut parts, body) = request.into_parts();
        authenticate(&parts, &state)?;
        let params = RawPathParams::from_request_parts(&mut parts, &state)
            .await
            .map_err(|_| MatrixError::unrecognized())?;
        let args: Vec<&str> = params.iter().map(|(_, value)| value).collect();
        let body = collect(&parts, body).await?;
        let request =
            T::try_from_http_request(http::Request::from_parts(parts, body.as_ref()), &args)
                .map_err(|e| {
                    if !body.is_empty()
                        && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err()
                    {
                        MatrixError::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", "Body is not JSON")
                    } else {
                        MatrixError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", e.to_string())
                    }
                })?;
        Ok(Self { request, body })
    }
}

/// The body of an authenticated request, up to [`MAX_BODY_BYTES`], unparsed (after an
/// [`Authenticated`] extractor).
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = MatrixError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, MatrixError> {
        let (parts, body) = request.into_parts();
        collect(&parts, body).await.map(Self)
    }
}

/// The body, refused with 413 past [`MAX_BODY_BYTES`] (declared or sent).
async fn collect(parts: &Parts, body: axum::body::Body) -> Result<Bytes, MatrixError> {
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "Body could not be read",
        )),
    }
}

/// A ruma response, answered as the HTTP response ruma serialises it to.
#[derive(Debug)]
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(Body::from),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a response");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}
