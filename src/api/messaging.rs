//! `/api/messaging/*` and `/internal/agents/{agent_id}/post-to-channel`: channels, history,
//! sending as the caller's own Matrix user, edits, reactions, members, search.

use std::time::Duration;

use axum::{
    Json,
    extract::{FromRef, FromRequestParts, Query, State},
    http::{HeaderMap, StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, UserId, api::error::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{
    city_rooms::{check_description, check_name, requested_slug},
    extract::{ApiJson, ApiPath, Service},
};
use crate::{
    Error,
    app::AppState,
    auth::{Claims, bearer_token, verify_jwt},
    domain::{AgentId, Invalid, USER_ID_PREFIX, Visibility, local_user_id},
    error::ApiError,
    ingest::Context,
    messaging::{self, Actor, MAX_TEXT_CHARS, Outgoing, subjects},
    rooms::Ensured,
    store::{ChannelView, CityRoom, Cursor, MessageView, NewRoom, Page, SearchHit, channel_id},
};

/// Largest history page.
const MAX_PAGE: i64 = 100;
/// History page when none is asked for.
const DEFAULT_PAGE: i64 = 50;
/// Longest `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 128;

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
    /// The person of a verified JWT, or why it has no Matrix identity here: 401
    /// `invalid_subject` when the name it gives is not a fully conforming Matrix user of
    /// this homeserver (nothing is done as such a user, so Synapse never gets an account of
    /// that name), 403 `no_matrix_identity` when it names no user of this homeserver the
    /// bridge may act as.
    pub fn of_claims(claims: Claims, state: &AppState) -> Result<Self, ApiError> {
        let server = &state.config.server_name;
        let no_identity = |detail: &str| {
            ApiError::new(StatusCode::FORBIDDEN, "no_matrix_identity")
                .with_detail(detail.to_owned())
        };
        let invalid_subject = |field: &'static str, rule: Invalid| {
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_subject")
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
    /// WebSockets).
    pub fn of_token(token: Option<&str>, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = token else {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized")
                .with_detail("a user JWT is required"));
        };
        let claims = state
            .config
            .jwt_secret
            .as_ref()
            .and_then(|secret| verify_jwt(token, secret.expose()))
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token"))?;
        Self::of_claims(claims, state)
    }

    fn actor(&self) -> Actor {
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
        Self::of_token(bearer_token(&parts.headers), &state)
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
        Person::of_token(token, &state).map(Self::Person)
    }
}

fn puppeting_disabled() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "puppeting_disabled").with_detail(
        "the bridge cannot act as users: set PUPPET_REGISTRATION (see README, Double puppeting)",
    )
}

fn forbidden(code: &'static str, detail: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code).with_detail(detail.to_owned())
}

/// An error of an action taken as a user: the homeserver refusing it (power levels,
/// membership) is the user's 403, not the bridge's 502.
fn user_action_error(error: Error) -> ApiError {
    if let Error::Homeserver(e) = &error
        && e.status() == Some(StatusCode::FORBIDDEN)
    {
        return forbidden("forbidden", "the homeserver refused this to the user");
    }
    error.into()
}

/// A channel the caller may read.
struct Readable {
    room: CityRoom,
    matrix_room_id: Option<OwnedRoomId>,
    joined: bool,
}

/// The channel named by a path (id or slug) if `person` may read it: public channels to
/// anyone, private ones to their members and admins.
async fn readable(state: &AppState, id: &str, person: &Person) -> Result<Readable, ApiError> {
    let (room, membership) = state
        .store
        .channel_for(id, person.user_id.as_str())
        .await?
        .ok_or_else(ApiError::not_found)?;
    // The index first; the homeserver only for a private channel it says is not joined.
    let mut joined = membership.is_some_and(|m| m == "join");
    if room.visibility == Visibility::Private && !joined {
        joined = is_joined(state, &room, &person.user_id).await?;
    }
    if room.visibility == Visibility::Private && !joined && !person.admin {
        return Err(forbidden(
            "forbidden",
            "a private channel: only its members may read it",
        ));
    }
    Ok(Readable {
        matrix_room_id: room.matrix_room_id.clone(),
        room,
        joined,
    })
}

/// Whether `user` has joined the channel: the index says so, or — for a join it has not
/// been pushed yet (a moment ago in a client, or by the API itself) — the homeserver does.
pub(super) async fn is_joined(
    state: &AppState,
    room: &CityRoom,
    user: &UserId,
) -> Result<bool, ApiError> {
    if state
        .store
        .membership(&room.id, user.as_str())
        .await?
        .is_some_and(|m| m == "join")
    {
        return Ok(true);
    }
    let Some(room_id) = &room.matrix_room_id else {
        return Ok(false);
    };
    Ok(state
        .homeserver
        .membership(room_id, user)
        .await?
        .is_some_and(|m| m == "join"))
}

/// The channel's Matrix room, for writing: created now if it does not exist yet (a city
/// room's Matrix room is otherwise made on the first join by alias). 403 when archived.
async fn writable_room(state: &AppState, channel: &Readable) -> Result<OwnedRoomId, ApiError> {
    if channel.room.archived_at.is_some() {
        return Err(forbidden("archived", "the channel is archived"));
    }
    if let Some(room_id) = &channel.matrix_room_id {
        return Ok(room_id.clone());
    }
    match state.rooms().ensure_matrix_room(&channel.room.slug).await? {
        Ensured::Created(room_id) | Ensured::Existing(room_id) => Ok(room_id),
        Ensured::Archived => Err(forbidden("archived", "the channel is archived")),
        Ensured::UnknownSlug => Err(ApiError::not_found()),
    }
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
            "not_a_member",
            "join the private channel (by invitation) first",
        ));
    }
    let homeserver = person
        .actor()
        .homeserver(state)
        .ok_or_else(puppeting_disabled)?;
    person
        .actor()
        .ensure_exists(state)
        .await
        .map_err(user_action_error)?;
    homeserver
        .join(room_id, &person.user_id)
        .await
        .map_err(|e| user_action_error(e.into()))
}

fn random_txn() -> String {
    format!(
        "cb{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

fn text_field(text: &str) -> Result<(), ApiError> {
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

fn event_id_field(
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
async fn related_in_channel(
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
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
        })
}

/// The answer to a send Synapse accepted: 201 with the message; or, when the instance
/// Synapse pushes to has not indexed it yet (an API-only instance waits 10 s for that),
/// 202 with its event id — it was sent, and a retry would send it again.
async fn sent(
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

/// `?microdao_id=`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ChannelFilter {
    /// Only the channels of this microDAO.
    microdao_id: Option<String>,
}

/// `{"channels": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    /// The channels.
    pub channels: Vec<ChannelView>,
}

/// # `GET /api/messaging/channels`
///
/// Public channels, and the private ones the caller is a member of (every one for an
/// admin); microDAO channels included, filterable by `?microdao_id=`.
#[utoipa::path(get, path = "/api/messaging/channels", tag = "messaging", params(ChannelFilter),
    security(("bearer" = [])),
    responses((status = 200, body = ChannelList), (status = 401, description = "no or invalid JWT")))]
pub async fn list_channels(
    State(state): State<AppState>,
    person: Person,
    Query(filter): Query<ChannelFilter>,
) -> Result<Json<ChannelList>, ApiError> {
    if filter
        .microdao_id
        .as_deref()
        .is_some_and(|m| m.contains('\0'))
    {
        return Err(ApiError::invalid("microdao_id", "must not contain NUL"));
    }
    let channels = state
        .store
        .channels(
            person.user_id.as_str(),
            person.admin,
            filter.microdao_id.as_deref(),
            state.sender.as_str(),
        )
        .await?;
    Ok(Json(ChannelList { channels }))
}

/// # `GET /api/messaging/channels/{id}`
#[utoipa::path(get, path = "/api/messaging/channels/{id}", tag = "messaging",
    params(("id" = String, Path, description = "room_city_<slug>, or the slug")),
    security(("bearer" = [])),
    responses((status = 200, body = ChannelView), (status = 403, description = "private channel"),
        (status = 404, description = "no such channel")))]
pub async fn get_channel(
    State(state): State<AppState>,
    person: Person,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ChannelView>, ApiError> {
    let channel = readable(&state, &id, &person).await?;
    let view = state
        .store
        .channel(&channel.room.id, state.sender.as_str())
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(view))
}

/// A new channel.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateChannel {
    /// `^[a-z0-9][a-z0-9_-]{0,63}$`; derived from the name when absent.
    pub slug: Option<String>,
    /// 1–100 characters.
    pub name: String,
    /// The Matrix topic.
    pub description: Option<String>,
    /// The microDAO it belongs to (then it is not one of the city's rooms).
    pub microdao_id: Option<String>,
    /// `public` (default) or `private`.
    #[serde(default)]
    pub visibility: Visibility,
    /// End-to-end encrypted: the bridge then indexes metadata only and cannot send.
    #[serde(default)]
    pub encrypted: bool,
}

/// # `POST /api/messaging/channels`
///
/// A public channel of no microDAO is one of the city's rooms: admins and the service
/// only (403 `admin_required`). Any user may create private channels and channels of a
/// microDAO, up to `CHANNELS_PER_USER` of them (403 `channel_quota`). A person who creates
/// a channel is joined and made the room's admin (power level 100). 202 while Synapse is
/// unavailable (the room is created when it answers; the creator then joins by
/// invitation).
#[utoipa::path(post, path = "/api/messaging/channels", tag = "messaging", request_body = CreateChannel,
    security(("bearer" = [])),
    responses((status = 201, body = ChannelView), (status = 202, body = ChannelView),
        (status = 403, description = "admin_required: a public channel without microdao_id is a city room; channel_quota: the user has made CHANNELS_PER_USER channels"),
        (status = 409, description = "slug taken"), (status = 422, description = "invalid field"),
        (status = 503, description = "puppeting disabled"),
        (status = 429, description = "rate limited; see Retry-After")))]
pub async fn create_channel(
    State(state): State<AppState>,
    creator: ChannelCreator,
    ApiJson(body): ApiJson<CreateChannel>,
) -> Result<Response, ApiError> {
    let person = match creator {
        ChannelCreator::Service => None,
        ChannelCreator::Person(person) => Some(person),
    };
    if let Some(person) = &person {
        // The creator is joined as themself: without the puppet registration, refused.
        person
            .actor()
            .homeserver(&state)
            .ok_or_else(puppeting_disabled)?;
    }
    let admin = person.as_ref().is_none_or(|p| p.admin);
    if !admin && body.visibility == Visibility::Public && body.microdao_id.is_none() {
        return Err(forbidden(
            "admin_required",
            "a public channel without a microdao_id is one of the city's rooms: only admins \
             make those; give a microdao_id, or make it private",
        ));
    }
    if let Some(person) = person.as_ref().filter(|p| !p.admin) {
        let quota = state.config.channels_per_user;
        if state
            .store
            .channels_created_by(person.user_id.as_str())
            .await?
            >= i64::from(quota)
        {
            return Err(forbidden(
                "channel_quota",
                &format!("a user may create at most {quota} channels"),
            ));
        }
    }
    let name = check_name(&body.name)?;
    check_description(body.description.as_deref())?;
    if body
        .microdao_id
        .as_deref()
        .is_some_and(|m| m.trim().is_empty() || m.chars().count() > 200 || m.contains('\0'))
    {
        return Err(ApiError::invalid(
            "microdao_id",
            "must be 1 to 200 characters",
        ));
    }
    let slug = requested_slug(body.slug, &name)?;
    if let Some(person) = &person {
        rate_limit(
            &state,
            "channels created",
            &[(
                &format!("create:u:{}", person.user_id),
                state.config.rates.channels_per_user,
            )],
        )?;
    }
    let new = NewRoom {
        slug: &slug,
        name: &name,
        description: body.description.as_deref(),
        visibility: body.visibility,
        is_default: false,
        microdao_id: body.microdao_id.as_deref(),
        encrypted: body.encrypted,
        creator: person.as_ref().map(|p| (&*p.user_id, p.sub.as_str())),
    };
    let Some((room, ready)) = state.rooms().create_city_room(&new).await? else {
        return Err(
            ApiError::new(StatusCode::CONFLICT, "slug_taken").with_detail(format!("{slug} exists"))
        );
    };
    if ready && person.is_some() {
        // Otherwise the reconciler does it, once it has made the Matrix room.
        messaging::settle_creators(&state, Some(&slug))
            .await
            .map_err(user_action_error)?;
    }
    let by = person.as_ref().map_or("service", |p| p.sub.as_str());
    tracing::info!(%slug, by, ready, "channel created");
    let view = state
        .store
        .channel(&room.id, state.sender.as_str())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let status = if ready {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(view)).into_response())
}

/// Whether `user` may give `member` the `level` under the room's power levels `levels`
/// (the Matrix rules: one's own level bounds what one gives, the level of a user at or
/// above one's own is not one's to change, and changing power levels is a state event
/// needing its own level).
fn may_grant(levels: &Value, user: &UserId, member: &UserId, level: i64) -> bool {
    let number = |v: &Value, default: i64| v.as_i64().unwrap_or(default);
    let level_of = |u: &UserId| {
        number(
            &levels["users"][u.as_str()],
            number(&levels["users_default"], 0),
        )
    };
    let own = level_of(user);
    let needed = number(
        &levels["events"]["m.room.power_levels"],
        number(&levels["state_default"], 50),
    );
    own >= level && own >= needed && member != user && level_of(member) < own
}

/// Sets `user`'s level in `levels` (as read from the room) and stores them.
async fn set_power_in(
    state: &AppState,
    room_id: &OwnedRoomId,
    levels: Value,
    user: &UserId,
    level: i64,
) -> Result<(), ApiError> {
    if let Some(levels) = messaging::with_level(levels, user, level) {
        state.homeserver.set_power_levels(room_id, &levels).await?;
    }
    Ok(())
}

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
    let channel = readable(&state, &id, &person).await?;
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
fn limit_message(state: &AppState, user: &UserId, channel: &CityRoom) -> Result<(), ApiError> {
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

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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
    let homeserver = actor.homeserver(&state).ok_or_else(puppeting_disabled)?;
    text_field(&body.text)?;
    let msgtype = match body.msgtype.as_deref() {
        None | Some("m.text") => "m.text",
        Some("m.emote") => "m.emote",
        Some(_) => return Err(ApiError::invalid("msgtype", "must be m.text or m.emote")),
    };
    let reply_to = event_id_field("reply_to", body.reply_to.as_deref())?;
    let thread_root = event_id_field("thread_root", body.thread_root.as_deref())?;
    let key = idempotency_key(&headers)?;
    let channel = readable(&state, &id, &person).await?;
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
const KEY_TAKEN_OVER_AFTER: Duration = Duration::from_secs(60);

/// The transaction id of a send with an `Idempotency-Key`: the user's localpart, then the
/// key, after a `~` that no localpart holds (Synapse deduplicates transaction ids per
/// appservice, not per user: `a.b` with key `c` and `a` with key `b.c` must differ).
fn keyed_txn_id(user: &UserId, key: &str) -> String {
    format!("idem~{}~{key}", user.localpart())
}

/// The answer to a send whose `Idempotency-Key` is held already (`(channel, event)`): the
/// first send's message; 202 again while it is not indexed yet; 409 while that send is
/// under way; 422 for a key used for another channel.
async fn replay(
    state: &AppState,
    channel: &CityRoom,
    person: &Person,
    (held_channel, event_id): (Option<String>, Option<String>),
) -> Result<Response, ApiError> {
    let reused = || {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            .with_detail("this Idempotency-Key was used for a message to another channel")
    };
    if held_channel
        .as_deref()
        .is_some_and(|c| c != channel.id.as_str())
    {
        return Err(reused());
    }
    let Some(event_id) = event_id else {
        return Err(
            ApiError::new(StatusCode::CONFLICT, "idempotency_key_in_flight")
                .with_detail("a request with this Idempotency-Key is being sent; retry shortly")
                .with_retry_after(1),
        );
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
    if channel.room.encrypted {
        return Err(ApiError::new(StatusCode::CONFLICT, "encrypted_channel")
            .with_detail("the channel is end-to-end encrypted; the bridge holds no keys"));
    }
    let room_id = writable_room(state, channel).await?;
    if let Err(limited) = limit_message(state, &person.user_id, &channel.room) {
        return Ok(Err(limited.into_response()));
    }
    join_if_needed(state, channel, person, &room_id).await?;
    let actor = person.actor();
    let Some(key) = key else {
        let event_id =
            messaging::send(state, &actor, homeserver, &room_id, &random_txn(), outgoing)
                .await
                .map_err(user_action_error)?;
        return Ok(Ok(event_id));
    };
    let txn_id = keyed_txn_id(&person.user_id, key);
    let event_id = actor
        .send_keyed(homeserver, &room_id, &txn_id, outgoing)
        .await
        .map_err(user_action_error)?;
    // Kept as soon as Synapse has answered: a retry from now on answers this event (202
    // until it is indexed), whatever happens to this request.
    state
        .store
        .send_key_sent(person.user_id.as_str(), key, event_id.as_str())
        .await?;
    actor
        .index_stored(state, homeserver, &room_id, &event_id)
        .await?;
    Ok(Ok(event_id))
}

/// New text for a message.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EditMessage {
    /// At most 16,000 characters.
    pub text: String,
}

async fn own_message(
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
    let homeserver = actor.homeserver(&state).ok_or_else(puppeting_disabled)?;
    text_field(&body.text)?;
    let target = parse_event_id(&event_id)?;
    let channel = readable(&state, &id, &person).await?;
    let message = own_message(&state, &channel, target.as_str(), &person).await?;
    if message.sender_matrix_id != person.user_id.as_str() {
        return Err(forbidden(
            "not_author",
            "only the author may edit a message",
        ));
    }
    if message.redacted || message.msgtype.is_none() || channel.room.encrypted {
        return Err(ApiError::new(StatusCode::CONFLICT, "not_editable")
            .with_detail("the message was deleted, or the channel is encrypted"));
    }
    let room_id = writable_room(&state, &channel).await?;
    limit_action(&state, &person)?;
    let msgtype = message.msgtype.as_deref().unwrap_or("m.text");
    let outgoing = Outgoing::edit(&target, msgtype, &body.text);
    messaging::send(
        &state,
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
    let homeserver = actor.homeserver(&state).ok_or_else(puppeting_disabled)?;
    let target = parse_event_id(&event_id)?;
    let channel = readable(&state, &id, &person).await?;
    let message = own_message(&state, &channel, target.as_str(), &person).await?;
    if !message.redacted {
        let room_id = writable_room(&state, &channel).await?;
        limit_action(&state, &person)?;
        messaging::redact(&state, &actor, homeserver, &room_id, &target, &random_txn())
            .await
            .map_err(user_action_error)?;
    }
    Ok(Json(
        view(&state, &channel.room, target.as_str(), &person.user_id).await?,
    ))
}

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
    let homeserver = actor.homeserver(&state).ok_or_else(puppeting_disabled)?;
    let key = body.key.trim();
    if key.is_empty()
        || key.chars().count() > crate::ingest::REACTION_KEY_CHARS
        || key.contains('\0')
    {
        return Err(ApiError::invalid("key", "must be 1 to 64 characters"));
    }
    let target = parse_event_id(&event_id)?;
    let channel = readable(&state, &id, &person).await?;
    let message = own_message(&state, &channel, target.as_str(), &person).await?;
    if message.redacted {
        return Err(ApiError::new(StatusCode::CONFLICT, "redacted"));
    }
    let room_id = writable_room(&state, &channel).await?;
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
            &state,
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
    let homeserver = actor.homeserver(&state).ok_or_else(puppeting_disabled)?;
    let target = parse_event_id(&event_id)?;
    let channel = readable(&state, &id, &person).await?;
    own_message(&state, &channel, target.as_str(), &person).await?;
    if key.contains('\0') {
        return Err(ApiError::not_found());
    }
    let reaction = state
        .store
        .reaction_event(target.as_str(), &key, person.user_id.as_str())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let reaction = parse_event_id(&reaction)?;
    let room_id = writable_room(&state, &channel).await?;
    limit_action(&state, &person)?;
    messaging::redact(
        &state,
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

/// A member of a channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    /// `user:<name>`, `agent:<name>`, or the Matrix id of a remote user.
    pub member_id: String,
    /// The Matrix user.
    pub matrix_user_id: String,
    /// `join`, `invite`, `leave`, `ban` or `knock`.
    pub membership: String,
    /// `admin` (power 100), `moderator` (50 or more) or `member`.
    pub role: String,
    /// The display name.
    pub display_name: Option<String>,
}

/// `{"members": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    /// Joined first.
    pub members: Vec<Member>,
}

fn role(levels: Option<&serde_json::Value>, user: &str) -> &'static str {
    let level = levels
        .and_then(|l| {
            l["users"][user]
                .as_i64()
                .or_else(|| l["users_default"].as_i64())
        })
        .unwrap_or(0);
    match level {
        100.. => "admin",
        50.. => "moderator",
        _ => "member",
    }
}

fn context(state: &AppState) -> Context<'_> {
    Context {
        server_name: &state.config.server_name,
        agents: &state.namespaces.users,
        sender: &state.sender,
    }
}

/// # `GET /api/messaging/channels/{id}/members`
///
/// From the membership the bridge keeps (Synapse's pushes); roles from the room's power
/// levels.
#[utoipa::path(get, path = "/api/messaging/channels/{id}/members", tag = "messaging",
    params(("id" = String, Path, description = "room_city_<slug>, or the slug")),
    security(("bearer" = [])),
    responses((status = 200, body = MemberList), (status = 403, description = "private channel"),
        (status = 404, description = "no such channel")))]
pub async fn members(
    State(state): State<AppState>,
    person: Person,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MemberList>, ApiError> {
    let channel = readable(&state, &id, &person).await?;
    let levels = match &channel.matrix_room_id {
        Some(room_id) => match state.homeserver.power_levels(room_id).await {
            Ok(levels) => Some(levels),
            Err(error) => {
                tracing::warn!(%room_id, %error, "cannot read power levels; roles shown as member");
                None
            }
        },
        None => None,
    };
    let ctx = context(&state);
    let members = state
        .store
        .members(&channel.room.id, state.sender.as_str())
        .await?
        .into_iter()
        .map(|row| {
            let member_id = UserId::parse(row.matrix_user_id.as_str()).map_or_else(
                |_| row.matrix_user_id.clone(),
                |u| ctx.classify_sender(&u).0,
            );
            Member {
                role: role(levels.as_ref(), &row.matrix_user_id).to_owned(),
                member_id,
                matrix_user_id: row.matrix_user_id,
                membership: row.membership,
                display_name: row.display_name,
            }
        })
        .collect();
    Ok(Json(MemberList { members }))
}

/// Someone to invite.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Invite {
    /// `user:<name>` or `agent:<name>`.
    pub member_id: String,
    /// `member` (default), `moderator` or `admin`: the power level given to them.
    pub role: Option<String>,
}

/// # `POST /api/messaging/channels/{id}/members`
///
/// Invites as the caller; an agent accepts at once (the bridge joins it).
#[utoipa::path(post, path = "/api/messaging/channels/{id}/members", tag = "messaging",
    request_body = Invite,
    params(("id" = String, Path, description = "room_city_<slug>, or the slug")),
    security(("bearer" = [])),
    responses((status = 201, body = Member), (status = 403, description = "the caller may not invite"),
        (status = 404, description = "no such channel or agent"), (status = 422, description = "invalid member_id or role"),
        (status = 429, description = "rate limited; see Retry-After")))]
pub async fn invite(
    State(state): State<AppState>,
    person: Person,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Invite>,
) -> Result<Response, ApiError> {
    let actor = person.actor();
    let homeserver = actor.homeserver(&state).ok_or_else(puppeting_disabled)?;
    let level = match body.role.as_deref() {
        None | Some("member") => None,
        Some("moderator") => Some(50),
        Some("admin") => Some(100),
        Some(_) => {
            return Err(ApiError::invalid(
                "role",
                "must be member, moderator or admin",
            ));
        }
    };
    let server = &state.config.server_name;
    let (invitee, agent) = if let Ok(agent) = AgentId::parse(body.member_id.as_str()) {
        if state.store.agent(agent.as_str()).await?.is_none() {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_agent"));
        }
        (agent.user_id(server), true)
    } else if let Some(name) = body.member_id.strip_prefix(USER_ID_PREFIX) {
        let user =
            local_user_id(name, server).map_err(|rule| ApiError::invalid("member_id", rule.0))?;
        if state.namespaces.users.is_exclusive_match(user.as_str()) {
            return Err(ApiError::invalid(
                "member_id",
                "agents are invited as agent:<name>",
            ));
        }
        if user == state.sender {
            return Err(ApiError::invalid(
                "member_id",
                "the bridge's own user is not invited",
            ));
        }
        (user, false)
    } else {
        return Err(ApiError::invalid(
            "member_id",
            "must be user:<name> or agent:<name>",
        ));
    };
    let channel = readable(&state, &id, &person).await?;
    let room_id = writable_room(&state, &channel).await?;
    rate_limit(
        &state,
        "invitations",
        &[(
            &format!("invite:u:{}", person.user_id),
            state.config.rates.invitations_per_user,
        )],
    )?;
    // The bridge's own user sets the power level, so the caller's right to give it is
    // checked here, as Synapse would check it for the caller: a role above member only
    // from someone whose own level is at least that role and who may change power levels.
    let levels =
        match level {
            Some(level) => {
                let levels = state.homeserver.power_levels(&room_id).await?;
                if !person.admin && !may_grant(&levels, &person.user_id, &invitee, level) {
                    return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden").with_detail(
                    "giving this role needs a power level at least as high, above the member's \
                     own, and the right to change power levels",
                ));
                }
                Some((levels, level))
            }
            None => None,
        };
    actor
        .ensure_exists(&state)
        .await
        .map_err(user_action_error)?;
    if agent {
        crate::agents::provision(&state.store, &state.homeserver, server, &invitee).await?;
    }
    // Whether Synapse accepted an invitation: only then is anyone invited (and told).
    let invited = match homeserver
        .invite(&room_id, invitee.clone(), Some(&person.user_id))
        .await
    {
        Ok(()) => true,
        // An agent joined already: the invitation is moot, the role still applies. Any
        // other refusal (the caller may not invite) is the caller's answer.
        Err(e)
            if e.status() == Some(StatusCode::FORBIDDEN)
                && agent
                && is_joined(&state, &channel.room, &invitee).await? =>
        {
            tracing::debug!(%invitee, "invite refused: the agent is joined already");
            false
        }
        Err(e) => return Err(user_action_error(e.into())),
    };
    if agent {
        state.homeserver.join(&room_id, &invitee).await?;
    }
    if let Some((levels, level)) = levels {
        set_power_in(&state, &room_id, levels, &invitee, level).await?;
    }
    if invited {
        state
            .store
            .record_event(
                subjects::MEMBER_INVITED,
                channel.room.id.as_str(),
                &json!({
                    "type": "member.invited",
                    "channel_id": channel.room.id,
                    "member_id": body.member_id,
                    "invited_by": person.sub,
                    "role": if agent { "agent" } else { body.role.as_deref().unwrap_or("member") },
                }),
            )
            .await?;
        state.relay_due.notify_one();
    }
    let member = Member {
        member_id: body.member_id,
        matrix_user_id: invitee.to_string(),
        membership: if agent { "join" } else { "invite" }.to_owned(),
        role: match level {
            Some(100) => "admin",
            Some(_) => "moderator",
            None => "member",
        }
        .to_owned(),
        display_name: None,
    };
    // 201 for an invitation made; 200 for an agent that was a member already.
    let status = if invited {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(member)).into_response())
}

/// An agent's message.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AgentPost {
    /// The channel: `room_city_<slug>`, or the slug.
    pub channel_id: String,
    /// At most 16,000 characters.
    pub text: String,
    /// The event id of the message this replies to.
    pub reply_to: Option<String>,
    /// The event id of the thread's root.
    pub thread_root: Option<String>,
}

/// # `POST /internal/agents/{agent_id}/post-to-channel`
///
/// Sent as `m.notice` from `@agent_<name>`, which must have joined the channel.
#[utoipa::path(post, path = "/internal/agents/{agent_id}/post-to-channel", tag = "internal",
    request_body = AgentPost,
    params(("agent_id" = String, Path, description = "agent:<name>")),
    security(("bearer" = [])),
    responses((status = 201, body = MessageView), (status = 202, description = "sent, not indexed yet"), (status = 429, description = "rate limited (Retry-After)"), (status = 403, description = "the agent is not a member"),
        (status = 404, description = "no such agent or channel"), (status = 409, description = "encrypted channel"),
        (status = 422, description = "invalid field")))]
pub async fn agent_post(
    State(state): State<AppState>,
    _service: Service,
    ApiPath(agent_id): ApiPath<String>,
    ApiJson(body): ApiJson<AgentPost>,
) -> Result<Response, ApiError> {
    text_field(&body.text)?;
    let reply_to = event_id_field("reply_to", body.reply_to.as_deref())?;
    let thread_root = event_id_field("thread_root", body.thread_root.as_deref())?;
    let agent = AgentId::parse(agent_id).map_err(|_| ApiError::not_found())?;
    if state.store.agent(agent.as_str()).await?.is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_agent"));
    }
    let room = state
        .store
        .channel_room(&body.channel_id)
        .await?
        .filter(|_| channel_id(&body.channel_id).is_some())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_channel"))?;
    let user = agent.user_id(&state.config.server_name);
    let joined = state
        .store
        .membership(&room.id, user.as_str())
        .await?
        .is_some_and(|m| m == "join");
    if !joined {
        return Err(forbidden(
            "not_a_member",
            "the agent has not joined the channel",
        ));
    }
    if room.encrypted {
        return Err(ApiError::new(StatusCode::CONFLICT, "encrypted_channel"));
    }
    related_in_channel(
        &state,
        &room,
        [
            ("reply_to", reply_to.as_deref()),
            ("thread_root", thread_root.as_deref()),
        ],
    )
    .await?;
    let channel = Readable {
        matrix_room_id: room.matrix_room_id.clone(),
        room,
        joined,
    };
    let room_id = writable_room(&state, &channel).await?;
    // Agents are held to the same limits as people: their own, and the channel's.
    limit_message(&state, &user, &channel.room)?;
    let actor = Actor::Agent(user.clone());
    let outgoing = Outgoing::text(
        "m.notice",
        &body.text,
        reply_to.as_deref(),
        thread_root.as_deref(),
    );
    let event_id = messaging::send(
        &state,
        &actor,
        &state.homeserver,
        &room_id,
        &random_txn(),
        &outgoing,
    )
    .await?;
    sent(&state, &channel.room, &event_id, &user).await
}

/// `?q=&channel_id=&limit=`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchQuery {
    /// Words; each matches as a prefix.
    q: Option<String>,
    /// Only this channel.
    channel_id: Option<String>,
    /// 1–100, default 20.
    limit: Option<i64>,
}

/// `{"results": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    /// Best first.
    pub results: Vec<SearchHit>,
}

/// # `GET /api/messaging/search`
///
/// Over the previews of the channels the caller may read, never encrypted ones.
#[utoipa::path(get, path = "/api/messaging/search", tag = "messaging", params(SearchQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SearchResults), (status = 422, description = "no query, or no word of 2 letters"),
        (status = 429, description = "rate limited; see Retry-After"),
        (status = 503, description = "searches busy or too slow (`busy`): try again")))]
pub async fn search(
    State(state): State<AppState>,
    person: Person,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchResults>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let q = query.q.as_deref().map(str::trim).unwrap_or_default();
    if q.is_empty() || q.chars().count() > 200 {
        return Err(ApiError::invalid("q", "must be 1 to 200 characters"));
    }
    if !crate::store::searchable(q) {
        return Err(ApiError::invalid(
            "q",
            "must hold a word of at least 2 letters (words of 3 or more match as prefixes)",
        ));
    }
    let limit = query.limit.unwrap_or(20);
    if limit < 1 {
        return Err(ApiError::invalid("limit", "must be 1 to 100"));
    }
    let channel = match query.channel_id.as_deref() {
        Some(id) => Some(channel_id(id).ok_or_else(ApiError::not_found)?),
        None => None,
    };
    rate_limit(
        &state,
        "searches",
        &[(
            &format!("search:u:{}", person.user_id),
            state.config.rates.searches_per_user,
        )],
    )?;
    let results = state
        .store
        .search(
            q,
            channel.as_ref(),
            person.user_id.as_str(),
            person.admin,
            limit.min(MAX_PAGE),
        )
        .await?;
    Ok(Json(SearchResults { results }))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_those_who_hold_a_level_and_may_change_levels_give_it() {
        let alice = UserId::parse("@alice:example.org").unwrap();
        let bob = UserId::parse("@bob:example.org").unwrap();
        let levels = json!({
            "users": {"@alice:example.org": 100, "@bob:example.org": 50},
            "users_default": 0,
            "events": {"m.room.power_levels": 100},
        });
        let carol = UserId::parse("@carol:example.org").unwrap();
        assert!(may_grant(&levels, &alice, &carol, 100));
        assert!(
            !may_grant(&levels, &bob, &carol, 50),
            "bob may not change power levels"
        );
        let moderators_may = json!({"users": {"@bob:example.org": 50}, "state_default": 50});
        assert!(may_grant(&moderators_may, &bob, &carol, 50));
        assert!(
            !may_grant(&moderators_may, &bob, &carol, 100),
            "not above one's own level"
        );
        assert!(
            !may_grant(&moderators_may, &carol, &alice, 50),
            "users_default is 0"
        );
        let peers = json!({"users": {"@alice:example.org": 100, "@bob:example.org": 100}});
        assert!(
            !may_grant(&peers, &bob, &alice, 50),
            "not to a member at one's own level"
        );
        assert!(!may_grant(&peers, &bob, &bob, 50), "not to oneself");
        assert!(may_grant(&peers, &bob, &carol, 50));
    }

    #[test]
    fn roles_from_power_levels() {
        let levels = json!({"users": {"@a:x": 100, "@m:x": 50}, "users_default": 0});
        assert_eq!(role(Some(&levels), "@a:x"), "admin");
        assert_eq!(role(Some(&levels), "@m:x"), "moderator");
        assert_eq!(role(Some(&levels), "@n:x"), "member");
        assert_eq!(role(None, "@a:x"), "member");
    }

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
