//! `/api/messaging/channels/{id}/pins`: a channel's pinned messages, and pinning and
//! unpinning as the caller's own Matrix user (`m.room.pinned_events`: the room's power
//! levels decide who may). Pins made in a Matrix client are indexed from Synapse's pushes.

use axum::{Json, extract::State};
use ruma::OwnedEventId;

use super::{
    Person, join_if_needed, limit_action, message_in, parse_event_id, puppeting_disabled,
    user_action_error,
};
use crate::{
    api::extract::ApiPath,
    app::AppState,
    error::ApiError,
    store::{MAX_PINS, Pins},
};

/// # `GET /api/messaging/channels/{id}/pins`
#[utoipa::path(get, path = "/api/messaging/channels/{id}/pins", tag = "messaging",
    params(("id" = String, Path, description = "room_city_<slug>, or the slug")),
    security(("bearer" = [])),
    responses((status = 200, body = Pins), (status = 403, description = "private channel"),
        (status = 404, description = "no such channel")))]
pub async fn pins(
    State(state): State<AppState>,
    person: Person,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Pins>, ApiError> {
    let channel = person.readable(&state, &id).await?;
    Ok(Json(
        state
            .store
            .pins(&channel.room.id, person.user_id.as_str())
            .await?,
    ))
}

/// # `PUT /api/messaging/channels/{id}/pins/{event_id}`
///
/// Pins a message of the channel (last in the list); pinning a pinned one changes nothing.
/// The answer is the room's pins as Synapse now has them.
#[utoipa::path(put, path = "/api/messaging/channels/{id}/pins/{event_id}", tag = "messaging",
    params(("id" = String, Path, description = "room_city_<slug>, or the slug"),
        ("event_id" = String, Path, description = "the message's event id")),
    security(("bearer" = [])),
    responses((status = 200, body = Pins),
        (status = 403, description = "the room's power levels do not let the caller pin"),
        (status = 404, description = "no such message"),
        (status = 409, description = "too many pins"),
        (status = 429, description = "rate limited; see Retry-After")))]
pub async fn pin(
    State(state): State<AppState>,
    person: Person,
    ApiPath((id, event_id)): ApiPath<(String, String)>,
) -> Result<Json<Pins>, ApiError> {
    change(&state, &person, &id, &event_id, true).await
}

/// # `DELETE /api/messaging/channels/{id}/pins/{event_id}`
///
/// Unpins a message; unpinning one that is not pinned changes nothing.
#[utoipa::path(delete, path = "/api/messaging/channels/{id}/pins/{event_id}", tag = "messaging",
    params(("id" = String, Path, description = "room_city_<slug>, or the slug"),
        ("event_id" = String, Path, description = "the message's event id")),
    security(("bearer" = [])),
    responses((status = 200, body = Pins),
        (status = 403, description = "the room's power levels do not let the caller unpin"),
        (status = 404, description = "no such message"),
        (status = 429, description = "rate limited; see Retry-After")))]
pub async fn unpin(
    State(state): State<AppState>,
    person: Person,
    ApiPath((id, event_id)): ApiPath<(String, String)>,
) -> Result<Json<Pins>, ApiError> {
    change(&state, &person, &id, &event_id, false).await
}

async fn change(
    state: &AppState,
    person: &Person,
    id: &str,
    event_id: &str,
    pin: bool,
) -> Result<Json<Pins>, ApiError> {
    let actor = person.actor();
    let homeserver = actor
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    let target = parse_event_id(event_id)?;
    let channel = person.readable(state, id).await?;
    message_in(state, &channel, target.as_str(), person).await?;
    let room_id = crate::api::messaging::writable_room(state, &channel).await?;
    limit_action(state, person)?;
    join_if_needed(state, &channel, person, &room_id).await?;
    let mut pinned: Vec<OwnedEventId> = homeserver
        .pinned_events(&room_id, &person.user_id)
        .await
        .map_err(|e| user_action_error(e.into()))?;
    let present = pinned.contains(&target);
    if pin && !present {
        if pinned.len() >= MAX_PINS {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                crate::error::ErrorCode::TooManyPins,
            )
            .with_detail(format!("a channel keeps at most {MAX_PINS} pins")));
        }
        pinned.push(target);
    } else if !pin && present {
        pinned.retain(|e| *e != target);
    } else {
        return answer(state, person, pinned).await;
    }
    homeserver
        .set_pinned_events(&room_id, pinned.clone(), &person.user_id)
        .await
        .map_err(|e| user_action_error(e.into()))?;
    answer(state, person, pinned).await
}

/// The pins as Synapse has them now (the index catches up from its push).
async fn answer(
    state: &AppState,
    person: &Person,
    pinned: Vec<OwnedEventId>,
) -> Result<Json<Pins>, ApiError> {
    let ids: Vec<&str> = pinned.iter().map(|e| e.as_str()).collect();
    let mut messages = state.store.messages(&ids, person.user_id.as_str()).await?;
    messages.sort_by_key(|m| ids.iter().position(|e| *e == m.matrix_event_id));
    for message in &mut messages {
        message.pinned = true;
    }
    Ok(Json(Pins {
        pinned: ids.into_iter().map(str::to_owned).collect(),
        messages,
    }))
}
