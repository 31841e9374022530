//! `/api/messaging/channels/{id}/messages/{event_id}/reactions`: reacting, and taking a
//! reaction back.

use axum::{Json, extract::State, http::StatusCode};
use ruma::api::error::ErrorKind;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    Person, join_if_needed, limit_action, message_in, parse_event_id, puppeting_disabled,
    random_txn, user_action_error, view,
};
use crate::{
    Error,
    api::extract::{ApiJson, ApiPath},
    app::AppState,
    error::ApiError,
    messaging::{self, Outgoing},
    store::MessageView,
};

/// A reaction.
#[derive(Debug, Deserialize, ToSchema)]
pub struct React {
    /// The key, usually one emoji; at most 64 characters.
    pub key: String,
}

/// # `POST /api/messaging/channels/{id}/messages/{event_id}/reactions`
#[utoipa::path(post, path = "/api/messaging/channels/{id}/messages/{event_id}/reactions", tag = "messaging",
    request_body = React,
    params(("id" = String, Path, description = "room_city_<slug>, or the slug"),
        ("event_id" = String, Path, description = "the message's event id")),
    security(("bearer" = [])),
    responses((status = 200, body = MessageView), (status = 404, description = "no such message"),
        (status = 422, description = "invalid key"),
        (status = 429, description = "rate limited; see Retry-After")))]
pub async fn react(
    State(state): State<AppState>,
    person: Person,
    ApiPath((id, event_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<React>,
) -> Result<Json<MessageView>, ApiError> {
    let actor = person.actor();
    let homeserver = actor
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    let key = body.key.trim();
    if key.is_empty()
        || key.chars().count() > crate::ingest::REACTION_KEY_CHARS
        || key.contains('\0')
    {
        return Err(ApiError::invalid("key", "must be 1 to 64 characters"));
    }
    let target = parse_event_id(&event_id)?;
    let channel = person.readable(&state, &id).await?;
    let message = message_in(&state, &channel, target.as_str(), &person).await?;
    if message.redacted {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorCode::Redacted,
        ));
    }
    let room_id = crate::api::messaging::writable_room(&state, &channel).await?;
    limit_action(&state, &person)?;
    join_if_needed(&state, &channel, &person, &room_id).await?;
    if state
        .store
        .reaction_event(target.as_str(), key, person.user_id.as_str())
        .await?
        .is_none()
    {
        let outgoing = Outgoing::reaction(&target, key);
        match messaging::send(
            &state.messenger,
            &actor,
            homeserver,
            &room_id,
            &random_txn(),
            &outgoing,
        )
        .await
        {
            Ok(_) => {}
            // Reacted already (the index has not seen it yet): nothing to do.
            Err(Error::Homeserver(e))
                if matches!(e.kind(), Some(ErrorKind::DuplicateAnnotation)) => {}
            Err(e) => return Err(user_action_error(e)),
        }
    }
    Ok(Json(
        view(&state, &channel.room, target.as_str(), &person.user_id).await?,
    ))
}

/// # `DELETE /api/messaging/channels/{id}/messages/{event_id}/reactions/{key}`
#[utoipa::path(delete, path = "/api/messaging/channels/{id}/messages/{event_id}/reactions/{key}",
    tag = "messaging",
    params(("id" = String, Path, description = "room_city_<slug>, or the slug"),
        ("event_id" = String, Path, description = "the message's event id"),
        ("key" = String, Path, description = "the reaction key")),
    security(("bearer" = [])),
    responses((status = 200, body = MessageView), (status = 404, description = "no such reaction"),
        (status = 429, description = "rate limited; see Retry-After")))]
pub async fn unreact(
    State(state): State<AppState>,
    person: Person,
    ApiPath((id, event_id, key)): ApiPath<(String, String, String)>,
) -> Result<Json<MessageView>, ApiError> {
    let actor = person.actor();
    let homeserver = actor
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    let target = parse_event_id(&event_id)?;
    let channel = person.readable(&state, &id).await?;
    message_in(&state, &channel, target.as_str(), &person).await?;
    if key.contains('\0') {
        return Err(ApiError::not_found());
    }
    let reaction = state
        .store
        .reaction_event(target.as_str(), &key, person.user_id.as_str())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let reaction = parse_event_id(&reaction)?;
    let room_id = crate::api::messaging::writable_room(&state, &channel).await?;
    limit_action(&state, &person)?;
    messaging::redact(
        &state.messenger,
        &actor,
        homeserver,
        &room_id,
        &reaction,
        &random_txn(),
    )
    .await
    .map_err(user_action_error)?;
    Ok(Json(
        view(&state, &channel.room, target.as_str(), &person.user_id).await?,
    ))
}
