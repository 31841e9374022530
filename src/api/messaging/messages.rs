//! `/api/messaging/channels/{id}/messages`: history pages, sending (with
//! `Idempotency-Key`), edits and deletions.

use std::time::Duration;

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use ruma::{EventId, OwnedEventId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    MAX_PAGE, Person, event_id_field, join_if_needed, limit_action, limit_message, message_in,
    parse_event_id, puppeting_disabled, random_txn, related_in_channel, sent, text_field,
    user_action_error, view,
};
use crate::{
    api::extract::{ApiJson, ApiPath},
    app::AppState,
    error::ApiError,
    messaging::{
        self, Outgoing,
        access::{Readable, forbidden},
    },
    store::{CityRoom, Cursor, MessageView, Page},
};

/// History page when none is asked for.
const DEFAULT_PAGE: i64 = 50;
/// Longest `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// `?limit=&before=&after=`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// 1–100, default 50.
    limit: Option<i64>,
    /// A `next_cursor` (or a message's `cursor`): the page of older messages.
    before: Option<String>,
    /// A message's `cursor`: the oldest messages after it (catching up after a reconnect).
    after: Option<String>,
}

/// A page of history.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// Newest first.
    pub messages: Vec<MessageView>,
    /// With `before`: the cursor of the next older page; with `after`: the cursor to
    /// continue catching up from. Null when there is no more.
    pub next_cursor: Option<String>,
}

fn cursor_field(field: &'static str, value: &str) -> Result<Cursor, ApiError> {
    Cursor::decode(value).ok_or_else(|| ApiError::invalid(field, "not a cursor of this API"))
}

/// # `GET /api/messaging/channels/{id}/messages`
///
/// Newest first, in the order the bridge indexed them (Synapse's push order), never by
/// senders' clocks; stable under concurrent inserts.
#[utoipa::path(get, path = "/api/messaging/channels/{id}/messages", tag = "messaging",
    params(("id" = String, Path, description = "room_city_<slug>, or the slug"), HistoryQuery),
    security(("bearer" = [])),
    responses((status = 200, body = History), (status = 403, description = "private channel"),
        (status = 404, description = "no such channel"), (status = 422, description = "bad cursor")))]
pub async fn history(
    State(state): State<AppState>,
    person: Person,
    ApiPath(id): ApiPath<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<History>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let channel = person.readable(&state, &id).await?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit < 1 {
        return Err(ApiError::invalid("limit", "must be 1 to 100"));
    }
    let limit = limit.min(MAX_PAGE);
    let page = match (query.before.as_deref(), query.after.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "before",
                "send before or after, not both",
            ));
        }
        (Some(before), None) => Page::Before(Some(cursor_field("before", before)?)),
        (None, Some(after)) => Page::After(cursor_field("after", after)?),
        (None, None) => Page::Before(None),
    };
    let (messages, more) = state
        .store
        .history(&channel.room.id, page, limit, person.user_id.as_str())
        .await?;
    let next_cursor = match page {
        _ if !more => None,
        Page::Before(_) => messages.last().map(|m| m.cursor.clone()),
        Page::After(_) => messages.first().map(|m| m.cursor.clone()),
    };
    Ok(Json(History {
        messages,
        next_cursor,
    }))
}

/// A message to send.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendMessage {
    /// At most 16,000 characters.
    pub text: String,
    /// The event id of the message this replies to.
    pub reply_to: Option<String>,
    /// The event id of the thread's root.
    pub thread_root: Option<String>,
    /// `m.text` (default) or `m.emote`.
    pub msgtype: Option<String>,
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default();
    let ok = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:~".contains(&b));
    if !ok {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "must be 1 to 128 characters of A-Z a-z 0-9 - _ . : ~",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// # `POST /api/messaging/channels/{id}/messages`
///
/// Sent as the caller's own Matrix user (joining a public channel first), answered once
/// Synapse accepted it and it is indexed. A retried request with the same
/// `Idempotency-Key` answers the first result (202 again while it is not indexed) and sends
/// nothing new; while the first is still being sent, 409 `idempotency_key_in_flight`.
#[utoipa::path(post, path = "/api/messaging/channels/{id}/messages", tag = "messaging",
    request_body = SendMessage,
    params(("id" = String, Path, description = "room_city_<slug>, or the slug"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe")),
    security(("bearer" = [])),
    responses((status = 201, body = MessageView), (status = 202, description = "sent, not indexed yet by the instance Synapse pushes to: {channel_id, matrix_event_id, indexed: false}"), (status = 403, description = "not a member, or archived"),
        (status = 404, description = "no such channel"), (status = 409, description = "encrypted channel, or a request with this Idempotency-Key is being sent (Retry-After)"),
        (status = 422, description = "invalid field, text over 16,000 characters, or an Idempotency-Key used for another channel"),
        (status = 429, description = "rate limited; see Retry-After"),
        (status = 503, description = "puppeting disabled, or Synapse unavailable")))]
pub async fn send_message(
    State(state): State<AppState>,
    person: Person,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<Response, ApiError> {
    let actor = person.actor();
    let homeserver = actor
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    text_field(&body.text)?;
    let msgtype = match body.msgtype.as_deref() {
        None | Some("m.text") => "m.text",
        Some("m.emote") => "m.emote",
        Some(_) => return Err(ApiError::invalid("msgtype", "must be m.text or m.emote")),
    };
    let reply_to = event_id_field("reply_to", body.reply_to.as_deref())?;
    let thread_root = event_id_field("thread_root", body.thread_root.as_deref())?;
    let key = idempotency_key(&headers)?;
    let channel = person.readable(&state, &id).await?;
    related_in_channel(
        &state,
        &channel.room,
        [
            ("reply_to", reply_to.as_deref()),
            ("thread_root", thread_root.as_deref()),
        ],
    )
    .await?;
    let user = person.user_id.as_str();
    if let Some(key) = &key
        && let Some(held) = state
            .store
            .reserve_send_key(user, key, channel.room.id.as_str(), KEY_TAKEN_OVER_AFTER)
            .await?
    {
        return replay(&state, &channel.room, &person, held).await;
    }
    let outgoing = Outgoing::text(
        msgtype,
        &body.text,
        reply_to.as_deref(),
        thread_root.as_deref(),
    );
    let outcome = send_now(
        &state,
        &channel,
        &person,
        homeserver,
        key.as_deref(),
        &outgoing,
    )
    .await;
    if let Some(key) = &key
        && !matches!(outcome, Ok(Ok(_)))
    {
        // The key is the send's while it runs: a send that made nothing frees it for a
        // retry (one that made an event keeps it: only unsent keys are released).
        state.store.release_send_key(user, key).await?;
    }
    match outcome? {
        Ok(event_id) => sent(&state, &channel.room, &event_id, &person.user_id).await,
        Err(refused) => Ok(refused),
    }
}

/// A send with an `Idempotency-Key` lasting longer than this is taken to be cut off: a
/// retry takes the key over (and sends under the same transaction id, so Synapse answers
/// with the first event if there was one).
pub(super) const KEY_TAKEN_OVER_AFTER: Duration = Duration::from_secs(60);

/// The transaction id of a send with an `Idempotency-Key`: the user's localpart, then the
/// key, after a `~` that no localpart holds (Synapse deduplicates transaction ids per
/// appservice, not per user: `a.b` with key `c` and `a` with key `b.c` must differ).
pub(super) fn keyed_txn_id(user: &UserId, key: &str) -> String {
    format!("idem~{}~{key}", user.localpart())
}

/// The answer to a send whose `Idempotency-Key` is held already (`(channel, event)`): the
/// first send's message; 202 again while it is not indexed yet; 409 while that send is
/// under way; 422 for a key used for another channel.
pub(super) async fn replay(
    state: &AppState,
    channel: &CityRoom,
    person: &Person,
    (held_channel, event_id): (Option<String>, Option<String>),
) -> Result<Response, ApiError> {
    let reused = || {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            crate::error::ErrorCode::IdempotencyKeyReused,
        )
        .with_detail("this Idempotency-Key was used for a message to another channel")
    };
    if held_channel
        .as_deref()
        .is_some_and(|c| c != channel.id.as_str())
    {
        return Err(reused());
    }
    let Some(event_id) = event_id else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorCode::IdempotencyKeyInFlight,
        )
        .with_detail("a request with this Idempotency-Key is being sent; retry shortly")
        .with_retry_after(1));
    };
    let event_id = EventId::parse(&event_id).map_err(|_| reused())?;
    if held_channel.is_none()
        && state
            .store
            .message(&channel.id, event_id.as_str(), person.user_id.as_str())
            .await?
            .is_none()
    {
        // Kept from before channels were recorded: known by its message only.
        return Err(reused());
    }
    sent(state, channel, &event_id, &person.user_id).await
}

/// The rest of a send, once its `Idempotency-Key` (if any) is held: the channel's checks
/// and limits, joining it, then the send. `Ok(Err(answer))`: refused before anything was
/// sent (rate limited).
async fn send_now(
    state: &AppState,
    channel: &Readable,
    person: &Person,
    homeserver: &crate::matrix::Homeserver,
    key: Option<&str>,
    outgoing: &Outgoing,
) -> Result<Result<OwnedEventId, Response>, ApiError> {
    not_encrypted(channel)?;
    let room_id = crate::api::messaging::writable_room(state, channel).await?;
    if let Err(limited) = limit_message(state, &person.user_id, &channel.room) {
        return Ok(Err(limited.into_response()));
    }
    join_if_needed(state, channel, person, &room_id).await?;
    deliver(state, person, homeserver, &room_id, key, outgoing)
        .await
        .map(Ok)
}

/// 409 for an end-to-end encrypted channel: the bridge holds no keys to write there.
pub(super) fn not_encrypted(channel: &Readable) -> Result<(), ApiError> {
    if channel.room.encrypted {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorCode::EncryptedChannel,
        )
        .with_detail("the channel is end-to-end encrypted; the bridge holds no keys"));
    }
    Ok(())
}

/// Sends `outgoing` to `room_id` as `person` and indexes it: under the transaction id of
/// their `Idempotency-Key` (kept as sent as soon as Synapse answers, then indexed as
/// Synapse stored it), or a random one.
pub(super) async fn deliver(
    state: &AppState,
    person: &Person,
    homeserver: &crate::matrix::Homeserver,
    room_id: &ruma::RoomId,
    key: Option<&str>,
    outgoing: &Outgoing,
) -> Result<OwnedEventId, ApiError> {
    let actor = person.actor();
    let Some(key) = key else {
        return messaging::send(
            &state.messenger,
            &actor,
            homeserver,
            room_id,
            &random_txn(),
            outgoing,
        )
        .await
        .map_err(user_action_error);
    };
    let txn_id = keyed_txn_id(&person.user_id, key);
    let event_id = actor
        .send_keyed(homeserver, room_id, &txn_id, outgoing)
        .await
        .map_err(user_action_error)?;
    // Kept as soon as Synapse has answered: a retry from now on answers this event (202
    // until it is indexed), whatever happens to this request.
    state
        .store
        .send_key_sent(person.user_id.as_str(), key, event_id.as_str())
        .await?;
    actor
        .index_stored(&state.messenger, homeserver, room_id, &event_id)
        .await?;
    Ok(event_id)
}

/// New text for a message.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EditMessage {
    /// At most 16,000 characters.
    pub text: String,
}

/// # `PATCH /api/messaging/channels/{id}/messages/{event_id}`
///
/// An `m.replace` edit, by the author only.
#[utoipa::path(patch, path = "/api/messaging/channels/{id}/messages/{event_id}", tag = "messaging",
    request_body = EditMessage,
    params(("id" = String, Path, description = "room_city_<slug>, or the slug"),
        ("event_id" = String, Path, description = "the message's event id")),
    security(("bearer" = [])),
    responses((status = 200, body = MessageView), (status = 403, description = "not the author"),
        (status = 404, description = "no such message"), (status = 409, description = "redacted, or encrypted channel"),
        (status = 429, description = "rate limited; see Retry-After")))]
pub async fn edit_message(
    State(state): State<AppState>,
    person: Person,
    ApiPath((id, event_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<EditMessage>,
) -> Result<Json<MessageView>, ApiError> {
    let actor = person.actor();
    let homeserver = actor
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    text_field(&body.text)?;
    let target = parse_event_id(&event_id)?;
    let channel = person.readable(&state, &id).await?;
    let message = message_in(&state, &channel, target.as_str(), &person).await?;
    if message.sender_matrix_id != person.user_id.as_str() {
        return Err(forbidden(
            crate::error::ErrorCode::NotAuthor,
            "only the author may edit a message",
        ));
    }
    if message.redacted || message.msgtype.is_none() || channel.room.encrypted {
        return Err(
            ApiError::new(StatusCode::CONFLICT, crate::error::ErrorCode::NotEditable)
                .with_detail("the message was deleted, or the channel is encrypted"),
        );
    }
    let room_id = crate::api::messaging::writable_room(&state, &channel).await?;
    limit_action(&state, &person)?;
    let msgtype = message.msgtype.as_deref().unwrap_or("m.text");
    let outgoing = match &message.media {
        Some(media) => Outgoing::replace(
            &target,
            crate::messaging::media::recaptioned(msgtype, media, &body.text),
        )?,
        None => Outgoing::edit(&target, msgtype, &body.text),
    };
    messaging::send(
        &state.messenger,
        &actor,
        homeserver,
        &room_id,
        &random_txn(),
        &outgoing,
    )
    .await
    .map_err(user_action_error)?;
    Ok(Json(
        view(&state, &channel.room, target.as_str(), &person.user_id).await?,
    ))
}

/// # `DELETE /api/messaging/channels/{id}/messages/{event_id}`
///
/// A redaction, by the author or a moderator of the room (Synapse decides).
#[utoipa::path(delete, path = "/api/messaging/channels/{id}/messages/{event_id}", tag = "messaging",
    params(("id" = String, Path, description = "room_city_<slug>, or the slug"),
        ("event_id" = String, Path, description = "the message's event id")),
    security(("bearer" = [])),
    responses((status = 200, body = MessageView), (status = 403, description = "not allowed"),
        (status = 404, description = "no such message"),
        (status = 429, description = "rate limited; see Retry-After")))]
pub async fn delete_message(
    State(state): State<AppState>,
    person: Person,
    ApiPath((id, event_id)): ApiPath<(String, String)>,
) -> Result<Json<MessageView>, ApiError> {
    let actor = person.actor();
    let homeserver = actor
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    let target = parse_event_id(&event_id)?;
    let channel = person.readable(&state, &id).await?;
    let message = message_in(&state, &channel, target.as_str(), &person).await?;
    if !message.redacted {
        let room_id = crate::api::messaging::writable_room(&state, &channel).await?;
        limit_action(&state, &person)?;
        messaging::redact(
            &state.messenger,
            &actor,
            homeserver,
            &room_id,
            &target,
            &random_txn(),
        )
        .await
        .map_err(user_action_error)?;
    }
    Ok(Json(
        view(&state, &channel.room, target.as_str(), &person.user_id).await?,
    ))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn idempotency_keys() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert("idempotency-key", HeaderValue::from_static("abc-123"));
        assert_eq!(
            idempotency_key(&headers).unwrap().as_deref(),
            Some("abc-123")
        );
        headers.insert("idempotency-key", HeaderValue::from_static("a b"));
        assert!(idempotency_key(&headers).is_err());
    }
}
