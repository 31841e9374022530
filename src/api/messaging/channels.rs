//! `/api/messaging/channels` and `/api/messaging/channels/{id}`: the channels a person may
//! read, one channel, and making a new one.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Person, person::ChannelCreator, puppeting_disabled, rate_limit, user_action_error};
use crate::{
    api::{
        city_rooms::{check_description, check_name, requested_slug},
        extract::{ApiJson, ApiPath},
    },
    app::AppState,
    domain::Visibility,
    error::ApiError,
    messaging::{self, access::forbidden},
    store::{ChannelSummary, ChannelView, NewRoom},
};

/// `?microdao_id=&sort=`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ChannelFilter {
    /// Only the channels of this microDAO.
    microdao_id: Option<String>,
    /// `name` (default: the default room first, then by name) or `activity` (the newest
    /// last message first; channels without messages last).
    #[serde(default)]
    #[param(inline)]
    sort: ChannelOrder,
}

/// How the channel list is ordered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// The default room first, then by name.
    #[default]
    Name,
    /// By last activity, newest first.
    Activity,
}

/// `{"channels": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    /// The channels, each with what the caller has not read of it.
    pub channels: Vec<ChannelSummary>,
}

/// # `GET /api/messaging/channels`
///
/// Public channels, and the private ones the caller is a member of (every one for an
/// admin); microDAO channels included, filterable by `?microdao_id=`. Each with the
/// caller's `unread_count` and `mention_count` (in the channels they joined),
/// `last_read_event_id` and the `last_message`; `?sort=activity` puts the latest first.
#[utoipa::path(get, path = "/api/messaging/channels", tag = "messaging", params(ChannelFilter),
    security(("bearer" = [])),
    responses((status = 200, body = ChannelList), (status = 401, description = "no or invalid JWT"),
        (status = 422, description = "invalid query")))]
pub async fn list_channels(
    State(state): State<AppState>,
    person: Person,
    filter: Result<Query<ChannelFilter>, QueryRejection>,
) -> Result<Json<ChannelList>, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    if filter
        .microdao_id
        .as_deref()
        .is_some_and(|m| m.contains('\0'))
    {
        return Err(ApiError::invalid("microdao_id", "must not contain NUL"));
    }
    let channels = state
        .store
        .channel_summaries(
            person.user_id.as_str(),
            person.admin,
            filter.microdao_id.as_deref(),
            state.sender.as_str(),
            filter.sort == ChannelOrder::Activity,
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
    let channel = person.readable(&state, &id).await?;
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
            .homeserver(&state.messenger)
            .ok_or_else(puppeting_disabled)?;
    }
    let admin = person.as_ref().is_none_or(|p| p.admin);
    if !admin && body.visibility == Visibility::Public && body.microdao_id.is_none() {
        return Err(forbidden(
            crate::error::ErrorCode::AdminRequired,
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
                crate::error::ErrorCode::ChannelQuota,
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
            ApiError::new(StatusCode::CONFLICT, crate::error::ErrorCode::SlugTaken)
                .with_detail(format!("{slug} exists")),
        );
    };
    if ready && person.is_some() {
        // Otherwise the reconciler does it, once it has made the Matrix room.
        messaging::settle_creators(&state.messenger, Some(&slug))
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
