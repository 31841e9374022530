//! Who calls `/api/messaging/*`: the person of a user JWT, as a Matrix user of this
//! homeserver, and who creates a channel (a person, or another DAARION service).

use std::time::Duration;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{StatusCode, request::Parts},
};
use ruma::{OwnedUserId, UserId};

use crate::{
    api::extract::user_claims,
    app::AppState,
    auth::{Claims, bearer_token},
    domain::{Invalid, USER_ID_PREFIX, local_user_id},
    error::ApiError,
    messaging::Actor,
};

/// A DAARION user, as a Matrix user of this homeserver.
#[derive(Debug, Clone)]
pub struct Person {
    /// `sub` of the JWT.
    pub sub: String,
    /// The Matrix user.
    pub user_id: OwnedUserId,
    /// Whether the JWT has the `admin` role.
    pub admin: bool,
}

impl Person {
    /// The channel `id` (its id or slug) if this person may read it (see
    /// [`crate::messaging::access::readable`]).
    pub async fn readable(
        &self,
        state: &AppState,
        id: &str,
    ) -> Result<crate::messaging::access::Readable, ApiError> {
        crate::messaging::access::readable(
            &state.store,
            &state.homeserver,
            id,
            &self.user_id,
            self.admin,
        )
        .await
    }

    /// The person of a verified JWT, or why it has no Matrix identity here: 401
    /// `invalid_subject` when the name it gives is not a fully conforming Matrix user of
    /// this homeserver (nothing is done as such a user, so Synapse never gets an account of
    /// that name), 403 `no_matrix_identity` when it names no user of this homeserver the
    /// bridge may act as.
    fn of_claims(claims: Claims, state: &AppState) -> Result<Self, ApiError> {
        let server = &state.config.server_name;
        let no_identity = |detail: &str| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                crate::error::ErrorCode::NoMatrixIdentity,
            )
            .with_detail(detail.to_owned())
        };
        let invalid_subject = |field: &'static str, rule: Invalid| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                crate::error::ErrorCode::InvalidSubject,
            )
            .with_field(field)
            .with_detail(rule.0)
        };
        let user_id = match (
            &claims.matrix_user_id,
            claims.sub.strip_prefix(USER_ID_PREFIX),
        ) {
            (Some(id), _) => {
                let user_id = UserId::parse(id.as_str())
                    .map_err(|_| no_identity("matrix_user_id is not a Matrix user id"))?;
                if user_id.server_name() != server {
                    return Err(no_identity("only users of this homeserver"));
                }
                local_user_id(user_id.localpart(), server)
                    .map_err(|rule| invalid_subject("matrix_user_id", rule))?
            }
            (None, Some(name)) => {
                local_user_id(name, server).map_err(|rule| invalid_subject("sub", rule))?
            }
            (None, None) => {
                return Err(no_identity(
                    "sub must be user:<name>, or matrix_user_id set",
                ));
            }
        };
        if state.namespaces.users.is_exclusive_match(user_id.as_str()) || user_id == state.sender {
            return Err(no_identity(
                "the bridge's own users cannot act through the API",
            ));
        }
        Ok(Self {
            admin: claims.is_admin(),
            sub: claims.sub,
            user_id,
        })
    }

    /// The person behind a request's token (`Authorization: Bearer`, or `?token=` for
    /// WebSockets), and how long the token is still valid (what it grants ends then, live
    /// connections included).
    pub fn of_token(token: Option<&str>, state: &AppState) -> Result<(Self, Duration), ApiError> {
        let claims = user_claims(token, state)?;
        let valid_for = claims.valid_for();
        Ok((Self::of_claims(claims, state)?, valid_for))
    }

    /// The person as the one who acts in Matrix (through the puppet registration).
    pub(super) fn actor(&self) -> Actor {
        Actor::Person(self.user_id.clone())
    }
}

impl<S> FromRequestParts<S> for Person
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let (person, _) = Self::of_token(bearer_token(&parts.headers), &state)?;
        Ok(person)
    }
}

/// Who creates a channel: a person (a user JWT), or another DAARION service
/// (`Authorization: Bearer $MATRIX_GATEWAY_SECRET`), which may make city rooms and has no
/// Matrix user of its own (its channels have no creator to join).
#[derive(Debug, Clone)]
pub enum ChannelCreator {
    /// Another DAARION service.
    Service,
    /// A person.
    Person(Person),
}

impl<S> FromRequestParts<S> for ChannelCreator
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let token = bearer_token(&parts.headers);
        if token.is_some_and(|t| state.config.gateway_secret.matches(t)) {
            return Ok(Self::Service);
        }
        let (person, _) = Person::of_token(token, &state)?;
        Ok(Self::Person(person))
    }
}
