//! `/api/city/rooms`: the city rooms as the DAARION UI lists, opens and manages them.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath, Caller, MaybeCaller};
use crate::{
    domain::{Slug, Visibility, slugify},
    error::ApiError,
    rooms::RoomPatch,
    rooms::Rooms,
    store::{CityRoom, NewRoom},
};

/// A city room as the UI sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CityRoomView {
    /// `room_city_<slug>`.
    pub id: String,
    /// URL name; the Matrix alias is `#city_<slug>:<server>`.
    pub slug: String,
    /// Name, without the "DAARION City — " prefix of the Matrix room name.
    pub name: String,
    /// Description (the Matrix topic).
    pub description: Option<String>,
    /// The room the UI opens first.
    pub is_default: bool,
    /// `public` or `private`.
    pub visibility: Visibility,
    /// `active` or `archived`.
    pub status: String,
    /// `ready` once the Matrix room exists, `pending` until then.
    pub matrix_status: String,
    /// The Matrix room id.
    pub matrix_room_id: Option<String>,
    /// The Matrix room alias.
    pub matrix_room_alias: Option<String>,
    /// People online in the room now (from live presence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members_online: Option<usize>,
    /// Time of the room's last event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event: Option<DateTime<Utc>>,
}

impl CityRoomView {
    /// The view of a stored room (without live presence).
    pub fn new(room: CityRoom) -> Self {
        Self {
            status: if room.archived_at.is_some() {
                "archived"
            } else {
                "active"
            }
            .to_owned(),
            matrix_status: if room.matrix_room_id.is_some() {
                "ready"
            } else {
                "pending"
            }
            .to_owned(),
            id: room.id.to_string(),
            slug: room.slug.to_string(),
            name: room.name,
            description: room.description,
            is_default: room.is_default,
            visibility: room.visibility,
            matrix_room_id: room.matrix_room_id.map(Into::into),
            matrix_room_alias: room.matrix_room_alias.map(Into::into),
            members_online: None,
            last_event: None,
        }
    }
}

/// A new city room.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateCityRoom {
    /// `^[a-z0-9][a-z0-9_-]{0,63}$`; derived from the name when absent.
    pub slug: Option<String>,
    /// 1–100 characters.
    pub name: String,
    /// Shown as the Matrix topic.
    pub description: Option<String>,
    /// Defaults to public.
    #[serde(default)]
    pub visibility: Visibility,
    /// Make it the default room.
    #[serde(default)]
    pub is_default: bool,
}

/// Changes to a city room; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct UpdateCityRoom {
    /// A new name (1–100 characters).
    pub name: Option<String>,
    /// A new description; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// Make it (or stop it being) the default room.
    pub is_default: Option<bool>,
    /// Archive: read-only in Matrix, `status: archived`; `false` restores it.
    pub archived: Option<bool>,
}

/// Tells a field set to `null` from an absent one.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A name of 1–100 characters, trimmed.
pub(super) fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > 100 || name.contains('\0') {
        return Err(ApiError::invalid("name", "must be 1 to 100 characters"));
    }
    Ok(name.to_owned())
}

/// The slug a create request asks for, or the one its name gives.
pub(super) fn requested_slug(slug: Option<String>, name: &str) -> Result<Slug, ApiError> {
    match slug {
        Some(slug) => Slug::parse(slug).map_err(|e| ApiError::invalid("slug", e.0)),
        None => Slug::parse(slugify(name))
            .map_err(|_| ApiError::invalid("slug", "the name gives no slug; send one")),
    }
}

pub(super) fn check_description(description: Option<&str>) -> Result<(), ApiError> {
    if description.is_some_and(|d| d.chars().count() > 1000 || d.contains('\0')) {
        return Err(ApiError::invalid(
            "description",
            "must be at most 1000 characters",
        ));
    }
    Ok(())
}

/// The UI's view of a room, with live presence.
pub fn live_view(rooms: &Rooms, room: crate::store::CityRoom) -> CityRoomView {
    let live = rooms.hub.room(room.slug.as_str());
    let mut view = CityRoomView::new(room);
    // A number for every room: nobody there (or no Matrix room yet) is 0.
    view.members_online = Some(live.as_ref().map_or(0, |live| live.online_count));
    if let Some(live) = live {
        view.last_event = live
            .last_event_ts
            .and_then(|ts| chrono::DateTime::from_timestamp_millis(i64::try_from(ts).ok()?));
    }
    view
}

/// # `GET /api/city/rooms`
///
/// Every city room, the default first, then by name. Private rooms are listed only to
/// callers with credentials.
#[utoipa::path(get, path = "/api/city/rooms", tag = "city rooms",
    responses((status = 200, body = [CityRoomView])))]
pub async fn list(
    State(rooms): State<Rooms>,
    MaybeCaller(caller): MaybeCaller,
) -> Result<Json<Vec<CityRoomView>>, ApiError> {
    let listed = rooms.store.list_rooms(caller.is_some()).await?;
    Ok(Json(
        listed
            .into_iter()
            .map(|room| live_view(&rooms, room))
            .collect(),
    ))
}

/// # `GET /api/city/rooms/{slug}`
#[utoipa::path(get, path = "/api/city/rooms/{slug}", tag = "city rooms",
    params(("slug" = String, Path, description = "the room's slug")),
    responses((status = 200, body = CityRoomView), (status = 404, description = "no such room")))]
pub async fn get(
    State(rooms): State<Rooms>,
    MaybeCaller(caller): MaybeCaller,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<CityRoomView>, ApiError> {
    // A value that is no slug (a NUL byte, say) names no room; it never reaches SQL.
    let slug = Slug::parse(slug).map_err(|_| ApiError::not_found())?;
    match rooms.store.room_by_slug(&slug).await? {
        Some(room) if room.visibility == Visibility::Public || caller.is_some() => {
            Ok(Json(live_view(&rooms, room)))
        }
        _ => Err(ApiError::not_found()),
    }
}

/// # `POST /api/city/rooms`
///
/// Creates the room and its Matrix room: 201 when the Matrix room exists, 202 with
/// `matrix_status: "pending"` when Synapse is unavailable (it is created when Synapse
/// answers again).
#[utoipa::path(post, path = "/api/city/rooms", tag = "city rooms", request_body = CreateCityRoom,
    security(("bearer" = [])),
    responses((status = 201, body = CityRoomView), (status = 202, body = CityRoomView),
        (status = 401, description = "no or invalid credentials"),
        (status = 403, description = "not an admin"), (status = 409, description = "slug taken"),
        (status = 422, description = "invalid field")))]
pub async fn create(
    State(rooms): State<Rooms>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateCityRoom>,
) -> Result<Response, ApiError> {
    let name = check_name(&body.name)?;
    check_description(body.description.as_deref())?;
    let slug = requested_slug(body.slug, &name)?;
    let new = NewRoom {
        slug: &slug,
        name: &name,
        description: body.description.as_deref(),
        visibility: body.visibility,
        is_default: body.is_default,
        microdao_id: None,
        encrypted: false,
        creator: None,
    };
    let Some((room, ready)) = rooms.create_city_room(&new).await? else {
        return Err(
            ApiError::new(StatusCode::CONFLICT, crate::error::ErrorCode::SlugTaken)
                .with_detail(format!("{slug} exists")),
        );
    };
    tracing::info!(%slug, by = caller.name(), ready, "city room created");
    let status = if ready {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(CityRoomView::new(room))).into_response())
}

/// # `PATCH /api/city/rooms/{slug}`
#[utoipa::path(patch, path = "/api/city/rooms/{slug}", tag = "city rooms", request_body = UpdateCityRoom,
    params(("slug" = String, Path, description = "the room's slug")),
    security(("bearer" = [])),
    responses((status = 200, body = CityRoomView), (status = 404, description = "no such room"),
        (status = 422, description = "invalid field"),
        (status = 503, description = "Synapse unavailable; try again")))]
pub async fn update(
    State(rooms): State<Rooms>,
    _caller: Caller,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateCityRoom>,
) -> Result<Json<CityRoomView>, ApiError> {
    let slug = Slug::parse(slug).map_err(|_| ApiError::not_found())?;
    let name = body.name.as_deref().map(check_name).transpose()?;
    check_description(body.description.as_ref().and_then(Option::as_deref))?;
    let patch = RoomPatch {
        name,
        description: body.description,
        is_default: body.is_default,
        archived: body.archived,
    };
    match rooms.update_city_room(&slug, &patch).await? {
        Some(room) => Ok(Json(live_view(&rooms, room))),
        None => Err(ApiError::not_found()),
    }
}
