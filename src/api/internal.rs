//! `/internal/*`: the Matrix gateway contract other DAARION services call, with the
//! internal secret.

use axum::{
    Json,
    extract::{Query, State},
    http::StatusCode,
    response::Response,
};
use ruma::RoomAliasId;
use ruma::events::room::member::MembershipState;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    extract::{ApiJson, ApiPath, Service},
    messaging::{event_id_field, limit_message, random_txn, related_in_channel, sent, text_field},
};
use crate::{
    app::AppState,
    domain::{AgentId, Slug, Visibility},
    error::ApiError,
    messaging::{
        self, Actor, Outgoing,
        access::{Readable, forbidden},
    },
    rooms::Ensured,
    store::{MessageView, NewRoom, channel_id},
};

/// A Matrix room and its alias.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MatrixRoomRef {
    /// `!…` room id.
    pub matrix_room_id: String,
    /// `#city_<slug>:<server>`.
    pub matrix_room_alias: String,
}

/// The room to create.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateMatrixRoom {
    /// The city room's slug.
    pub slug: String,
    /// Its name (used if the city room does not exist yet).
    pub name: String,
    /// `public` (default) or `private`.
    #[serde(default)]
    pub visibility: Visibility,
}

fn matrix_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        crate::error::ErrorCode::MatrixUnavailable,
    )
    .with_detail("Failed to create Matrix room")
}

/// # `POST /internal/matrix/rooms/create`
///
/// Idempotent: a room that exists is returned as it is. A slug with no city room gets one.
#[utoipa::path(post, path = "/internal/matrix/rooms/create", tag = "internal", request_body = CreateMatrixRoom,
    security(("bearer" = [])),
    responses((status = 200, body = MatrixRoomRef), (status = 400, description = "invalid slug"),
        (status = 409, description = "the city room is archived"),
        (status = 500, description = "matrix_unavailable")))]
pub async fn create_matrix_room(
    State(state): State<AppState>,
    _service: Service,
    ApiJson(body): ApiJson<CreateMatrixRoom>,
) -> Result<Json<MatrixRoomRef>, ApiError> {
    let slug = Slug::parse(body.slug).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            crate::error::ErrorCode::InvalidAlias,
        )
        .with_detail(format!("slug {e}"))
    })?;
    let name = super::city_rooms::check_name(&body.name)?;
    if state.store.room_by_slug(&slug).await?.is_none() {
        let new = NewRoom {
            slug: &slug,
            name: &name,
            description: None,
            visibility: body.visibility,
            is_default: false,
            microdao_id: None,
            encrypted: false,
            creator: None,
        };
        state.store.insert_room(&new).await?;
        state.hub.catalog_changed();
    }
    match state.rooms().ensure_matrix_room(&slug).await {
        Ok(Ensured::Created(room_id) | Ensured::Existing(room_id)) => Ok(Json(MatrixRoomRef {
            matrix_room_id: room_id.to_string(),
            matrix_room_alias: slug.alias(&state.config.server_name).to_string(),
        })),
        Ok(Ensured::Archived) => Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorCode::Archived,
        )),
        Ok(Ensured::UnknownSlug) => Err(ApiError::not_found()),
        // The old gateway's contract: 500 `matrix_unavailable` when Matrix fails. A
        // database failure is an internal error like anywhere else.
        Err(error @ crate::Error::Homeserver(_)) => {
            tracing::warn!(%error, %slug, "Matrix room creation failed");
            Err(matrix_unavailable())
        }
        Err(error) => Err(error.into()),
    }
}

/// The alias to look up.
#[derive(Debug, Deserialize)]
pub struct AliasQuery {
    alias: String,
}

/// # `GET /internal/matrix/rooms/find-by-alias?alias=…`
///
/// Answers from the bridge's own mapping: the bridge owns the `#city_*` namespace, and
/// asking Synapse about an unknown alias in it would create the room.
#[utoipa::path(get, path = "/internal/matrix/rooms/find-by-alias", tag = "internal",
    params(("alias" = String, Query, description = "#city_<slug>:<server>")),
    security(("bearer" = [])),
    responses((status = 200, body = MatrixRoomRef), (status = 400, description = "not a city alias"),
        (status = 404, description = "not_found")))]
pub async fn find_by_alias(
    State(state): State<AppState>,
    _service: Service,
    query: Result<Query<AliasQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MatrixRoomRef>, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            crate::error::ErrorCode::InvalidAlias,
        )
        .with_detail("?alias= is required")
    })?;
    let alias = RoomAliasId::parse(&query.alias).map_err(|_| invalid_alias())?;
    let slug = Slug::of_alias(&alias, &state.config.server_name).ok_or_else(invalid_alias)?;
    let room = state.store.room_by_slug(&slug).await?;
    match room.and_then(|r| r.matrix_room_id.zip(r.matrix_room_alias)) {
        Some((matrix_room_id, matrix_room_alias)) => Ok(Json(MatrixRoomRef {
            matrix_room_id: matrix_room_id.into(),
            matrix_room_alias: matrix_room_alias.into(),
        })),
        None => Err(ApiError::not_found()),
    }
}

fn invalid_alias() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        crate::error::ErrorCode::InvalidAlias,
    )
    .with_detail("expected #city_<slug>:<server>")
}

/// A room that failed in a backfill.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackfillFailure {
    /// The room.
    pub slug: String,
    /// Why.
    pub error: crate::error::ErrorCode,
}

/// What a backfill did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackfillSummary {
    /// Rooms without a Matrix room looked at.
    pub checked: usize,
    /// Found by their alias.
    pub found: usize,
    /// Created.
    pub created: usize,
    /// Failed.
    pub failed: Vec<BackfillFailure>,
    /// What was done to bring the city's Space in step.
    pub space: SpaceSummary,
}

/// The Spaces after a backfill.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SpaceSummary {
    /// The city's Space, `#city:<server>`; null when the registration does not reserve
    /// its alias (`city-bridge check` says what to add) or it could not be made.
    pub matrix_room_id: Option<String>,
    /// Rooms and sub-spaces listed (`m.space.child` sent).
    pub children_added: usize,
    /// Archived or private rooms withdrawn.
    pub children_removed: usize,
    /// `m.space.parent` events set in rooms.
    pub parents_added: usize,
    /// Rooms listed without their `m.space.parent`: the bridge has no power there.
    pub parents_refused: usize,
    /// Spaces put back in the room directory.
    pub published: usize,
    /// Spaces whose deleted alias was pointed at them again.
    pub aliases_restored: usize,
    /// Rooms that could not be listed.
    pub failed: usize,
    /// Why the Spaces could not be brought in step at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::ErrorCode>,
}

/// # `POST /internal/city/matrix/backfill`
#[utoipa::path(post, path = "/internal/city/matrix/backfill", tag = "internal",
    security(("bearer" = [])), responses((status = 200, body = BackfillSummary)))]
pub async fn backfill(
    State(state): State<AppState>,
    _service: Service,
) -> Result<Json<BackfillSummary>, ApiError> {
    let summary = state.rooms().backfill().await?;
    Ok(Json(BackfillSummary {
        checked: summary.checked,
        found: summary.found,
        created: summary.created,
        failed: summary
            .failed
            .into_iter()
            .map(|(slug, error)| BackfillFailure {
                slug: slug.to_string(),
                error,
            })
            .collect(),
        space: SpaceSummary {
            matrix_room_id: summary.space.space.map(|id| id.to_string()),
            children_added: summary.space.children_added,
            children_removed: summary.space.children_removed,
            parents_added: summary.space.parents_added,
            parents_refused: summary.space.parents_refused,
            published: summary.space.published,
            aliases_restored: summary.space.aliases_restored,
            failed: summary.space.failed,
            error: summary.space_error,
        },
    }))
}

/// One row of the mapping.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoomMapping {
    /// The city room.
    pub slug: String,
    /// Its Matrix room.
    pub matrix_room_id: Option<String>,
    /// Its alias.
    pub matrix_room_alias: Option<String>,
    /// `active` or `archived`.
    pub status: String,
    /// `ready` or `pending`.
    pub matrix_status: String,
}

/// # `GET /internal/city/rooms`
#[utoipa::path(get, path = "/internal/city/rooms", tag = "internal",
    security(("bearer" = [])), responses((status = 200, body = [RoomMapping])))]
pub async fn room_mapping(
    State(state): State<AppState>,
    _service: Service,
) -> Result<Json<Vec<RoomMapping>>, ApiError> {
    let rooms = state.store.list_rooms(true).await?;
    Ok(Json(
        rooms
            .into_iter()
            .map(|room| {
                let view = super::CityRoomView::new(room);
                RoomMapping {
                    slug: view.slug,
                    matrix_room_id: view.matrix_room_id,
                    matrix_room_alias: view.matrix_room_alias,
                    status: view.status,
                    matrix_status: view.matrix_status,
                }
            })
            .collect(),
    ))
}

/// An agent's presence.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentPresence {
    /// `online`, `unavailable` or `offline`.
    pub presence: String,
    /// Free text shown by clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
}

/// # `PUT /internal/agents/{agent_id}/presence`
///
/// Sets the agent's presence in Matrix (as the agent) and in the live room counts at once,
/// and keeps it: refreshed before Synapse would time the agent out, re-applied after a
/// restart, until the platform sets another.
#[utoipa::path(put, path = "/internal/agents/{agent_id}/presence", tag = "internal", request_body = AgentPresence,
    params(("agent_id" = String, Path, description = "agent:<name>")),
    security(("bearer" = [])),
    responses((status = 200, body = AgentPresence), (status = 404, description = "no such agent"),
        (status = 422, description = "invalid presence")))]
pub async fn agent_presence(
    State(state): State<AppState>,
    _service: Service,
    ApiPath(agent_id): ApiPath<String>,
    ApiJson(body): ApiJson<AgentPresence>,
) -> Result<Json<AgentPresence>, ApiError> {
    let Some(status) = crate::presence::PresenceStatus::parse(&body.presence) else {
        return Err(ApiError::invalid(
            "presence",
            "must be online, unavailable or offline",
        ));
    };
    if body
        .status_msg
        .as_deref()
        .is_some_and(|m| m.chars().count() > 500)
    {
        return Err(ApiError::invalid(
            "status_msg",
            "must be at most 500 characters",
        ));
    }
    let agent_id = AgentId::parse(agent_id).map_err(|_| ApiError::not_found())?;
    let user = agent_id.user_id(&state.config.server_name);
    let agent = state
        .store
        .agent(agent_id.as_str())
        .await?
        .ok_or_else(ApiError::not_found)?;
    if agent.matrix_user_id.is_none() {
        crate::agents::provision(
            &state.store,
            &state.homeserver,
            &state.config.server_name,
            &user,
        )
        .await?;
    }
    // Kept first: the keeper refreshes it in Synapse until the platform sets another.
    state
        .store
        .set_agent_presence(
            agent_id.as_str(),
            status.as_str(),
            body.status_msg.as_deref(),
        )
        .await?;
    state
        .homeserver
        .set_presence(&user, status.into(), body.status_msg.clone())
        .await
        .map_err(crate::Error::from)?;
    state.live.set_presence(&user, status);
    Ok(Json(body))
}

/// Which dead letters to replay.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReplayRequest {
    /// These ids.
    #[serde(default)]
    pub ids: Option<Vec<i64>>,
    /// Or every one (`true`).
    #[serde(default)]
    pub all: bool,
}

/// One dead letter that still cannot be applied.
#[derive(Debug, Serialize, ToSchema)]
pub struct StillFailing {
    /// Its id.
    pub id: i64,
    /// Why it was dead-lettered.
    pub reason: String,
}

/// What a replay did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplaySummary {
    /// Dead letters looked at.
    pub replayed: usize,
    /// Applied now, and deleted from the dead letters.
    pub applied: Vec<i64>,
    /// Still not applicable; kept.
    pub still_failing: Vec<StillFailing>,
}

/// # `POST /internal/dead-letters/replay`
///
/// Runs dead letters through the ingest pipeline again (after a fix), oldest first, in
/// turn with Synapse's transactions; the ones that apply now are deleted. Idempotent.
#[utoipa::path(post, path = "/internal/dead-letters/replay", tag = "internal",
    request_body = ReplayRequest, security(("bearer" = [])),
    responses((status = 200, body = ReplaySummary), (status = 422, description = "neither ids nor all")))]
pub async fn replay_dead_letters(
    State(state): State<AppState>,
    _service: Service,
    ApiJson(body): ApiJson<ReplayRequest>,
) -> Result<Json<ReplaySummary>, ApiError> {
    if state.receiving.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorCode::NotTheReceiver,
        )
        .with_detail("replay on the instance Synapse pushes to (BRIDGE_ROLE=all)"));
    }
    let ids = match (&body.ids, body.all) {
        (Some(ids), false) if !ids.is_empty() => Some(ids.as_slice()),
        (None, true) => None,
        _ => return Err(ApiError::invalid("ids", "send ids: [...] or all: true")),
    };
    let mut letters = state.store.stored_dead_letters(ids, 10_000).await?;
    letters.reverse();
    let mut summary = ReplaySummary {
        replayed: letters.len(),
        applied: Vec::new(),
        still_failing: Vec::new(),
    };
    for letter in letters {
        let raw = match serde_json::value::RawValue::from_string(letter.letter.event.clone()) {
            Ok(raw) => ruma::serde::Raw::from_json(raw),
            Err(_) => {
                summary.still_failing.push(StillFailing {
                    id: letter.id,
                    reason: letter.letter.reason,
                });
                continue;
            }
        };
        let applied = state
            .indexer
            .apply_raw(&format!("replay-{}", letter.id), &[raw])
            .await?;
        if applied.dead_letters == 0 {
            state
                .store
                .purge_dead_letters(Some(&[letter.id]), None)
                .await?;
            summary.applied.push(letter.id);
        } else {
            summary.still_failing.push(StillFailing {
                id: letter.id,
                reason: letter.letter.reason,
            });
        }
    }
    tracing::info!(
        replayed = summary.replayed,
        applied = summary.applied.len(),
        "dead letters replayed"
    );
    Ok(Json(summary))
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
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            crate::error::ErrorCode::UnknownAgent,
        ));
    }
    let room = state
        .store
        .channel_room(&body.channel_id)
        .await?
        .filter(|_| channel_id(&body.channel_id).is_some())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                crate::error::ErrorCode::UnknownChannel,
            )
        })?;
    let user = agent.user_id(&state.config.server_name);
    let joined =
        state.store.membership(&room.id, user.as_str()).await? == Some(MembershipState::Join);
    if !joined {
        return Err(forbidden(
            crate::error::ErrorCode::NotAMember,
            "the agent has not joined the channel",
        ));
    }
    if room.encrypted {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorCode::EncryptedChannel,
        ));
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
    let room_id = crate::api::messaging::writable_room(&state, &channel).await?;
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
        &state.messenger,
        &actor,
        &state.homeserver,
        &room_id,
        &random_txn(),
        &outgoing,
    )
    .await?;
    sent(&state, &channel.room, &event_id, &user).await
}
