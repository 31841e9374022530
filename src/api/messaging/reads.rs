//! `/api/messaging/channels/{id}/read` and `/api/messaging/channels/{id}/typing`: what a
//! person has read (a read receipt and the fully-read marker, as themself) and that they
//! are typing — what Element does for its user, done for the page's.

use std::time::Instant;

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Person, event_id_field, puppeting_disabled, rate_limit, user_action_error};
use crate::{
    api::extract::{ApiJson, ApiPath},
    app::AppState,
    error::ApiError,
    messaging::{
        self, TYPING_TIMEOUT,
        access::{Readable, forbidden},
    },
    store::Unread,
};

/// What was read.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MarkRead {
    /// The newest message the person has seen (a message of the channel).
    pub event_id: String,
}

/// What the caller has not read of a channel now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelUnread {
    /// The channel.
    pub channel_id: String,
    /// The counts, the read position and the last message.
    #[serde(flatten)]
    pub unread: Unread,
}

fn not_a_member() -> ApiError {
    forbidden(
        crate::error::ErrorCode::NotAMember,
        "join the channel first",
    )
}

/// # `POST /api/messaging/channels/{id}/read`
///
/// Sends `m.read` and `m.fully_read` at the message as the caller (every Matrix client of
/// theirs sees the room read), and moves their read position: the answer has their counts
/// after it. A position only moves forward; reading an older message changes nothing here.
#[utoipa::path(post, path = "/api/messaging/channels/{id}/read", tag = "messaging",
    request_body = MarkRead,
    params(("id" = String, Path, description = "room_city_<slug>, or the slug")),
    security(("bearer" = [])),
    responses((status = 200, body = ChannelUnread),
        (status = 403, description = "not_a_member: the caller has not joined the channel"),
        (status = 404, description = "no such channel"),
        (status = 422, description = "event_id is not a message of this channel"),
        (status = 429, description = "rate limited; see Retry-After"),
        (status = 503, description = "puppeting disabled")))]
pub async fn mark_read(
    State(state): State<AppState>,
    person: Person,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<MarkRead>,
) -> Result<Json<ChannelUnread>, ApiError> {
    let homeserver = person
        .actor()
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    let event_id = event_id_field("event_id", Some(&body.event_id))?.expect("given");
    let channel = person.readable(&state, &id).await?;
    let (Some(room_id), true) = (&channel.matrix_room_id, channel.joined) else {
        return Err(not_a_member());
    };
    if state
        .store
        .message(&channel.room.id, event_id.as_str(), "")
        .await?
        .is_none()
    {
        return Err(ApiError::invalid(
            "event_id",
            "no message of this channel has this event id",
        ));
    }
    rate_limit(
        &state,
        "read receipts",
        &[(
            &format!("read:u:{}", person.user_id),
            state.config.rates.actions_per_user,
        )],
    )?;
    homeserver
        .mark_read(room_id, &event_id, &person.user_id)
        .await
        .map_err(|e| user_action_error(e.into()))?;
    let user = person.user_id.as_str();
    if state
        .store
        .set_read_position(&channel.room.id, user, event_id.as_str())
        .await?
    {
        messaging::read_moved(&state.bus, &channel.room.id, user, event_id.as_str());
    }
    let unread = state
        .store
        .unread_of(&channel.room.id, &[user])
        .await?
        .into_iter()
        .next()
        .map(|(_, unread)| unread)
        .ok_or_else(not_a_member)?;
    Ok(Json(ChannelUnread {
        channel_id: channel.room.id.to_string(),
        unread,
    }))
}

/// Whether the caller is typing.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Typing {
    /// `true` while they compose (say it again every few seconds), `false` once they stop.
    pub typing: bool,
}

/// # `POST /api/messaging/channels/{id}/typing`
///
/// `m.typing` as the caller, for 10 s (or stopped). "Typing" is sent to Synapse at most
/// once every 4 s per person and channel; the page may say it at every key press. 204.
#[utoipa::path(post, path = "/api/messaging/channels/{id}/typing", tag = "messaging",
    request_body = Typing,
    params(("id" = String, Path, description = "room_city_<slug>, or the slug")),
    security(("bearer" = [])),
    responses((status = 204, description = "sent, or already said less than 4 s ago"),
        (status = 403, description = "not_a_member: the caller has not joined the channel"),
        (status = 404, description = "no such channel"),
        (status = 429, description = "rate limited; see Retry-After"),
        (status = 503, description = "puppeting disabled")))]
pub async fn typing(
    State(state): State<AppState>,
    person: Person,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Typing>,
) -> Result<StatusCode, ApiError> {
    let channel = person.readable(&state, &id).await?;
    send_typing(&state, &person, &channel, body.typing).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Says that `person` types in `channel` (or stopped), throttled: also what a
/// `{"type":"typing","typing":true}` frame on the channel's socket does.
pub(crate) async fn send_typing(
    state: &AppState,
    person: &Person,
    channel: &Readable,
    typing: bool,
) -> Result<(), ApiError> {
    let homeserver = person
        .actor()
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    let (Some(room_id), true) = (&channel.matrix_room_id, channel.joined) else {
        return Err(not_a_member());
    };
    let user = person.user_id.as_str();
    if !state
        .typing
        .admit(user, channel.room.id.as_str(), typing, Instant::now())
    {
        return Ok(());
    }
    // Bounds what "stopped", which is never throttled, can cost.
    rate_limit(
        state,
        "typing notices",
        &[(
            &format!("typing:u:{user}"),
            state.config.rates.actions_per_user,
        )],
    )?;
    homeserver
        .typing(room_id, &person.user_id, typing.then_some(TYPING_TIMEOUT))
        .await
        .map_err(|e| {
            // Not said after all: the next "typing" must not be throttled away.
            state.typing.forget(user, channel.room.id.as_str());
            user_action_error(e.into())
        })
}
