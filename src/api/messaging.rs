//! `/api/messaging/*`: channels, history, sending as the caller's own Matrix user, edits,
//! reactions, members, search. One file per resource; this one keeps what they share (and
//! `/internal/agents/{agent_id}/post-to-channel` in `internal.rs` uses): reading the channel
//! a path names, the checks and limits of a write, and the answers to a send.

pub(super) mod channels;
pub(super) mod media;
pub(super) mod members;
pub(super) mod messages;
mod person;
pub(super) mod pins;
pub(super) mod reactions;
pub(super) mod reads;
pub(super) mod search;

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use ruma::{EventId, OwnedEventId, OwnedRoomId, UserId};
use serde_json::json;

pub use self::person::Person;
use crate::{
    Error,
    app::AppState,
    domain::Visibility,
    error::ApiError,
    messaging::{
        MAX_TEXT_CHARS,
        access::{Readable, forbidden},
    },
    store::{CityRoom, MessageView},
};

/// Largest history page.
const MAX_PAGE: i64 = 100;

fn puppeting_disabled() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        crate::error::ErrorCode::PuppetingDisabled,
    )
    .with_detail(
        "the bridge cannot act as users: set PUPPET_REGISTRATION (see README, Double puppeting)",
    )
}

/// An error of an action taken as a user: the homeserver refusing it (power levels,
/// membership) is the user's 403, not the bridge's 502.
fn user_action_error(error: Error) -> ApiError {
    if let Error::Homeserver(e) = &error
        && e.status() == Some(StatusCode::FORBIDDEN)
    {
        return forbidden(
            crate::error::ErrorCode::Forbidden,
            "the homeserver refused this to the user",
        );
    }
    error.into()
}

/// Joins `person` to a public channel before it speaks there (as Element does).
async fn join_if_needed(
    state: &AppState,
    channel: &Readable,
    person: &Person,
    room_id: &OwnedRoomId,
) -> Result<(), ApiError> {
    if channel.joined {
        return Ok(());
    }
    if channel.room.visibility == Visibility::Private {
        return Err(forbidden(
            crate::error::ErrorCode::NotAMember,
            "join the private channel (by invitation) first",
        ));
    }
    let homeserver = person
        .actor()
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    person
        .actor()
        .ensure_exists(&state.messenger)
        .await
        .map_err(user_action_error)?;
    homeserver
        .join(room_id, &person.user_id)
        .await
        .map_err(|e| user_action_error(e.into()))
}

pub(super) fn random_txn() -> String {
    format!(
        "cb{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

pub(super) fn text_field(text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid("text", "must not be empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::invalid(
            "text",
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(())
}

pub(super) fn event_id_field(
    field: &'static str,
    value: Option<&str>,
) -> Result<Option<OwnedEventId>, ApiError> {
    value
        .map(|v| {
            EventId::parse(v)
                .ok()
                .filter(|_| !v.contains('\0'))
                .ok_or_else(|| ApiError::invalid(field, "not a Matrix event id"))
        })
        .transpose()
}

/// `reply_to` and `thread_root` must name messages of the channel (as the index has
/// them): 422 for an event of another channel, or of none.
pub(super) async fn related_in_channel(
    state: &AppState,
    channel: &CityRoom,
    relations: [(&'static str, Option<&EventId>); 2],
) -> Result<(), ApiError> {
    for (field, event_id) in relations {
        let Some(event_id) = event_id else { continue };
        if state
            .store
            .message(&channel.id, event_id.as_str(), "")
            .await?
            .is_none()
        {
            return Err(ApiError::invalid(
                field,
                "no message of this channel has this event id",
            ));
        }
    }
    Ok(())
}

async fn view(
    state: &AppState,
    channel: &CityRoom,
    event_id: &str,
    viewer: &UserId,
) -> Result<MessageView, ApiError> {
    state
        .store
        .message(&channel.id, event_id, viewer.as_str())
        .await?
        .ok_or_else(|| {
            tracing::error!(event_id, "an event accepted by Synapse is not in the index");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                crate::error::ErrorCode::InternalError,
            )
        })
}

/// The answer to a send Synapse accepted: 201 with the message; or, when the instance
/// Synapse pushes to has not indexed it yet (an API-only instance waits 10 s for that),
/// 202 with its event id — it was sent, and a retry would send it again.
pub(super) async fn sent(
    state: &AppState,
    channel: &CityRoom,
    event_id: &EventId,
    viewer: &UserId,
) -> Result<Response, ApiError> {
    match state
        .store
        .message(&channel.id, event_id.as_str(), viewer.as_str())
        .await?
    {
        Some(message) => Ok((StatusCode::CREATED, Json(message)).into_response()),
        None => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "channel_id": channel.id,
                "matrix_event_id": event_id,
                "indexed": false,
            })),
        )
            .into_response()),
    }
}

/// Takes one of each `(key, per_minute)` from the rate limits; 429 `rate_limited` with
/// `Retry-After` when one is at its limit (nothing is taken then).
fn rate_limit(state: &AppState, what: &str, keys: &[(&str, u32)]) -> Result<(), ApiError> {
    state
        .limits
        .take_each(keys)
        .map_err(|wait| ApiError::rate_limited(wait, what))
}

/// The limits of a message from `user` into `channel`: the sender's own, theirs in the
/// channel, and the channel's (far larger: one noisy sender does not silence it).
pub(super) fn limit_message(
    state: &AppState,
    user: &UserId,
    channel: &CityRoom,
) -> Result<(), ApiError> {
    let rates = &state.config.rates;
    rate_limit(
        state,
        "messages",
        &[
            (
                &format!("send:u:{user}"),
                state.config.message_rate_per_minute,
            ),
            (
                &format!("send:uc:{user}:{}", channel.id),
                rates.messages_per_user_in_channel,
            ),
            (
                &format!("send:c:{}", channel.id),
                rates.messages_per_channel,
            ),
        ],
    )
}

/// The limit of a user's edits, reactions and deletions.
fn limit_action(state: &AppState, person: &Person) -> Result<(), ApiError> {
    rate_limit(
        state,
        "edits, reactions and deletions",
        &[(
            &format!("act:u:{}", person.user_id),
            state.config.rates.actions_per_user,
        )],
    )
}

/// The message `event_id` of the channel as `person` sees it (their own reactions marked);
/// 404 when the channel has none.
async fn message_in(
    state: &AppState,
    channel: &Readable,
    event_id: &str,
    person: &Person,
) -> Result<MessageView, ApiError> {
    state
        .store
        .message(&channel.room.id, event_id, person.user_id.as_str())
        .await?
        .ok_or_else(ApiError::not_found)
}

fn parse_event_id(event_id: &str) -> Result<OwnedEventId, ApiError> {
    if event_id.contains('\0') {
        return Err(ApiError::not_found());
    }
    EventId::parse(event_id).map_err(|_| ApiError::not_found())
}

/// The channel's Matrix room, for writing: created now if it does not exist yet (a city
/// room's Matrix room is otherwise made on the first join by alias). 403 when archived.
pub(crate) async fn writable_room(
    state: &AppState,
    channel: &crate::messaging::access::Readable,
) -> Result<ruma::OwnedRoomId, ApiError> {
    if channel.room.archived_at.is_some() {
        return Err(forbidden(
            crate::error::ErrorCode::Archived,
            "the channel is archived",
        ));
    }
    if let Some(room_id) = &channel.matrix_room_id {
        return Ok(room_id.clone());
    }
    match state.rooms().ensure_matrix_room(&channel.room.slug).await? {
        crate::rooms::Ensured::Created(room_id) | crate::rooms::Ensured::Existing(room_id) => {
            Ok(room_id)
        }
        crate::rooms::Ensured::Archived => Err(forbidden(
            crate::error::ErrorCode::Archived,
            "the channel is archived",
        )),
        crate::rooms::Ensured::UnknownSlug => Err(ApiError::not_found()),
    }
}
