//! `/api/messaging/channels/{id}/members`: who is in a channel and with what role,
//! inviting people and agents (with a role), leaving, and removing (kicking or banning).

use axum::{
    Json,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UserId,
    events::room::power_levels::RoomPowerLevelsEventContent,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{Person, puppeting_disabled, rate_limit, user_action_error};
use crate::{
    api::extract::{ApiJson, ApiPath},
    app::AppState,
    domain::{AgentId, USER_ID_PREFIX, local_user_id},
    error::ApiError,
    ingest::Context,
    matrix::HomeserverError,
    messaging::{
        self,
        access::{is_joined, may_grant},
        subjects,
    },
    presence::PresenceStatus,
    rooms::{Role, typed_power_levels},
};

/// The room's power levels: as read from the room (what is sent back when one is changed)
/// and as ruma reads them (for the arithmetic); content ruma cannot read is an invalid
/// answer of the homeserver.
async fn power_levels(
    state: &AppState,
    room_id: &RoomId,
) -> Result<(Value, RoomPowerLevelsEventContent), HomeserverError> {
    let content = state.homeserver.power_levels(room_id).await?;
    let levels = typed_power_levels(&content)
        .map_err(|e| HomeserverError::InvalidResponse(format!("the power levels: {e}")))?;
    Ok((content, levels))
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
    /// `online`, `unavailable` or `offline`, as Synapse last pushed it to the receiving
    /// instance; null where this instance has not seen it (an API-only instance).
    pub presence: Option<&'static str>,
}

/// `{"members": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    /// Joined first.
    pub members: Vec<Member>,
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
    let channel = person.readable(&state, &id).await?;
    let levels = match &channel.matrix_room_id {
        Some(room_id) => match power_levels(&state, room_id).await {
            Ok((_, levels)) => Some(levels),
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
            let user = UserId::parse(row.matrix_user_id.as_str()).ok();
            let member_id = user
                .as_ref()
                .map_or_else(|| row.matrix_user_id.clone(), |u| ctx.classify_sender(u).0);
            let role = match &user {
                Some(user) => Role::of_user(levels.as_ref(), user),
                None => Role::of_level(levels.as_ref().map_or(0, |l| l.users_default.into())),
            };
            let presence = state
                .live
                .presence_of(&row.matrix_user_id)
                .map(PresenceStatus::as_str);
            Member {
                role: role.as_str().to_owned(),
                member_id,
                matrix_user_id: row.matrix_user_id,
                presence,
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
    let homeserver = actor
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    let role = match body.role.as_deref() {
        None => Role::Member,
        Some(name) => Role::named(name)
            .ok_or_else(|| ApiError::invalid("role", "must be member, moderator or admin"))?,
    };
    let server = &state.config.server_name;
    let (invitee, agent) = member_user(&state, &body.member_id)?;
    if agent {
        let id = AgentId::of_user(&invitee, server).expect("an agent's user");
        if state.store.agent(id.as_str()).await?.is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                crate::error::ErrorCode::UnknownAgent,
            ));
        }
    } else if invitee == state.sender {
        return Err(ApiError::invalid(
            "member_id",
            "the bridge's own user is not invited",
        ));
    }
    let channel = person.readable(&state, &id).await?;
    let room_id = crate::api::messaging::writable_room(&state, &channel).await?;
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
    let levels = match role {
        Role::Member => None,
        role => {
            let (content, levels) = power_levels(&state, &room_id).await?;
            if !person.admin && !may_grant(&levels, &person.user_id, &invitee, role.level()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    crate::error::ErrorCode::Forbidden,
                )
                .with_detail(
                    "giving this role needs a power level at least as high, above the member's \
                     own, and the right to change power levels",
                ));
            }
            Some(content)
        }
    };
    actor
        .ensure_exists(&state.messenger)
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
                && is_joined(&state.store, &state.homeserver, &channel.room, &invitee).await? =>
        {
            tracing::debug!(%invitee, "invite refused: the agent is joined already");
            false
        }
        Err(e) => return Err(user_action_error(e.into())),
    };
    if agent {
        state.homeserver.join(&room_id, &invitee).await?;
    }
    if let Some(levels) = levels {
        set_power_in(&state, &room_id, levels, &invitee, role.level()).await?;
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
        role: role.as_str().to_owned(),
        display_name: None,
        presence: state
            .live
            .presence_of(invitee.as_str())
            .map(PresenceStatus::as_str),
    };
    // 201 for an invitation made; 200 for an agent that was a member already.
    let status = if invited {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(member)).into_response())
}

/// The Matrix user a `member_id` names, and whether it is an agent: `agent:<name>`, or
/// `user:<name>` (a person of this homeserver; an agent's user is named as an agent).
fn member_user(state: &AppState, member_id: &str) -> Result<(OwnedUserId, bool), ApiError> {
    let server = &state.config.server_name;
    if let Ok(agent) = AgentId::parse(member_id) {
        return Ok((agent.user_id(server), true));
    }
    let Some(name) = member_id.strip_prefix(USER_ID_PREFIX) else {
        return Err(ApiError::invalid(
            "member_id",
            "must be user:<name> or agent:<name>",
        ));
    };
    let user =
        local_user_id(name, server).map_err(|rule| ApiError::invalid("member_id", rule.0))?;
    if state.namespaces.users.is_exclusive_match(user.as_str()) {
        return Err(ApiError::invalid(
            "member_id",
            "agents are named as agent:<name>",
        ));
    }
    Ok((user, false))
}

/// How a member is removed.
#[derive(Debug, Deserialize, IntoParams)]
pub struct RemoveQuery {
    /// Ban rather than kick: they cannot come back until unbanned.
    #[serde(default)]
    pub ban: bool,
    /// Why (shown in Matrix clients); at most 500 characters.
    pub reason: Option<String>,
}

/// A member who left or was removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Removed {
    /// As in the request.
    pub member_id: String,
    /// The Matrix user.
    pub matrix_user_id: String,
    /// `leave` (left, or kicked) or `ban`.
    pub membership: String,
}

/// # `DELETE /api/messaging/channels/{id}/members/{member_id}`
///
/// The caller themself: leaves the channel. Anyone else (a person or an agent): removed
/// as the caller — kicked, or with `?ban=true` banned; Synapse's power levels decide
/// whether the caller may (403 otherwise). `messaging.member.left` or
/// `messaging.member.removed` follows on the bus; the members list follows Synapse's push.
#[utoipa::path(delete, path = "/api/messaging/channels/{id}/members/{member_id}", tag = "messaging",
    params(("id" = String, Path, description = "room_city_<slug>, or the slug"),
        ("member_id" = String, Path, description = "user:<name> or agent:<name>"), RemoveQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Removed),
        (status = 403, description = "the caller may not remove this member"),
        (status = 404, description = "no such channel"), (status = 422, description = "invalid member_id, ban or reason"),
        (status = 429, description = "rate limited; see Retry-After")))]
pub async fn remove(
    State(state): State<AppState>,
    person: Person,
    ApiPath((id, member_id)): ApiPath<(String, String)>,
    query: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Removed>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    if query
        .reason
        .as_deref()
        .is_some_and(|r| r.chars().count() > 500 || r.contains('\0'))
    {
        return Err(ApiError::invalid(
            "reason",
            "must be at most 500 characters",
        ));
    }
    let actor = person.actor();
    let homeserver = actor
        .homeserver(&state.messenger)
        .ok_or_else(puppeting_disabled)?;
    let (target, _) = member_user(&state, &member_id)?;
    let leaving = target == person.user_id;
    if leaving && query.ban {
        return Err(ApiError::invalid(
            "ban",
            "one leaves a channel, one is not banned from it",
        ));
    }
    let channel = person.readable(&state, &id).await?;
    // A channel without its Matrix room yet has no members to remove.
    let room_id = channel
        .matrix_room_id
        .clone()
        .ok_or_else(ApiError::not_found)?;
    rate_limit(
        &state,
        "removals",
        &[(
            &format!("remove:u:{}", person.user_id),
            state.config.rates.invitations_per_user,
        )],
    )?;
    actor
        .ensure_exists(&state.messenger)
        .await
        .map_err(user_action_error)?;
    let done = if leaving {
        homeserver.leave(&room_id, &person.user_id).await
    } else {
        homeserver
            .remove(
                &room_id,
                target.clone(),
                query.ban,
                query.reason,
                &person.user_id,
            )
            .await
    };
    done.map_err(|e| user_action_error(e.into()))?;
    let (subject, payload) = if leaving {
        (
            subjects::MEMBER_LEFT,
            json!({"type": "member.left", "channel_id": channel.room.id, "member_id": member_id}),
        )
    } else {
        (
            subjects::MEMBER_REMOVED,
            json!({
                "type": "member.removed",
                "channel_id": channel.room.id,
                "member_id": member_id,
                "removed_by": person.sub,
                "ban": query.ban,
            }),
        )
    };
    state
        .store
        .record_event(subject, channel.room.id.as_str(), &payload)
        .await?;
    state.relay_due.notify_one();
    tracing::info!(channel = %channel.room.id, %member_id, leaving, ban = query.ban, "member removed");
    Ok(Json(Removed {
        member_id,
        matrix_user_id: target.to_string(),
        membership: if query.ban { "ban" } else { "leave" }.to_owned(),
    }))
}
