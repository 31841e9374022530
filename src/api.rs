//! REST for the DAARION UI and internal callers: `/api/city/*`, `/api/messaging/*`,
//! `/internal/*`, the WebSockets, the OpenAPI document of them at `/openapi.json`, and
//! the city page that uses them (`/`, [`crate::web`]).

mod city_rooms;
mod extract;
mod internal;
mod messaging;
mod openapi;
mod ws;

use axum::{
    Json, Router,
    routing::{get, post},
};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use self::{city_rooms::CityRoomView, extract::ApiJson};
use crate::{app::AppState, config::CorsOrigins};

/// The REST routes.
pub fn router(config: &crate::config::Config) -> Router<AppState> {
    let cors_origins = &config.cors_origins;
    // An upload's body may hold the largest file and a little more (its other fields).
    let upload_limit = usize::try_from(
        config
            .media_max_bytes
            .saturating_add(messaging::media::FORM_SLACK_BYTES),
    )
    .unwrap_or(usize::MAX);
    let public = Router::new()
        .route(
            "/api/city/rooms",
            get(city_rooms::list).post(city_rooms::create),
        )
        .route(
            "/api/city/rooms/{slug}",
            get(city_rooms::get).patch(city_rooms::update),
        )
        .route(
            "/api/messaging/channels",
            get(messaging::channels::list_channels).post(messaging::channels::create_channel),
        )
        .route(
            "/api/messaging/channels/{id}",
            get(messaging::channels::get_channel),
        )
        .route(
            "/api/messaging/channels/{id}/messages",
            get(messaging::messages::history).post(messaging::messages::send_message),
        )
        .route(
            "/api/messaging/channels/{id}/media",
            post(messaging::media::upload)
                .layer(axum::extract::DefaultBodyLimit::max(upload_limit)),
        )
        .route("/api/messaging/media/config", get(messaging::media::config))
        .route(
            "/api/messaging/media/{server_name}/{media_id}",
            get(messaging::media::download),
        )
        .route(
            "/api/messaging/channels/{id}/messages/{event_id}",
            axum::routing::patch(messaging::messages::edit_message)
                .delete(messaging::messages::delete_message),
        )
        .route(
            "/api/messaging/channels/{id}/messages/{event_id}/reactions",
            post(messaging::reactions::react),
        )
        .route(
            "/api/messaging/channels/{id}/messages/{event_id}/reactions/{key}",
            axum::routing::delete(messaging::reactions::unreact),
        )
        .route(
            "/api/messaging/channels/{id}/members",
            get(messaging::members::members).post(messaging::members::invite),
        )
        .route(
            "/api/messaging/channels/{id}/members/{member_id}",
            axum::routing::delete(messaging::members::remove),
        )
        .route(
            "/api/messaging/channels/{id}/pins",
            get(messaging::pins::pins),
        )
        .route(
            "/api/messaging/channels/{id}/pins/{event_id}",
            axum::routing::put(messaging::pins::pin).delete(messaging::pins::unpin),
        )
        .route(
            "/api/messaging/channels/{id}/read",
            post(messaging::reads::mark_read),
        )
        .route(
            "/api/messaging/channels/{id}/typing",
            post(messaging::reads::typing),
        )
        .route("/api/messaging/search", get(messaging::search::search))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }));
    let allow = match cors_origins {
        CorsOrigins::None => None,
        CorsOrigins::Any => Some(AllowOrigin::any()),
        CorsOrigins::List(origins) => Some(AllowOrigin::list(origins.iter().cloned())),
    };
    let public = match allow {
        None => public,
        Some(allow) => public.layer(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([
                    http::Method::GET,
                    http::Method::POST,
                    http::Method::PATCH,
                    http::Method::DELETE,
                ])
                .allow_headers([
                    http::header::AUTHORIZATION,
                    http::header::CONTENT_TYPE,
                    http::HeaderName::from_static("idempotency-key"),
                ])
                .expose_headers([http::header::RETRY_AFTER]),
        ),
    };
    public
        .route(
            "/internal/matrix/rooms/create",
            post(internal::create_matrix_room),
        )
        .route(
            "/internal/matrix/rooms/find-by-alias",
            get(internal::find_by_alias),
        )
        .route("/internal/city/matrix/backfill", post(internal::backfill))
        .route("/internal/city/rooms", get(internal::room_mapping))
        .route(
            "/internal/dead-letters/replay",
            post(internal::replay_dead_letters),
        )
        .route(
            "/internal/agents/{agent_id}/presence",
            axum::routing::put(internal::agent_presence),
        )
        .route(
            "/internal/agents/{agent_id}/post-to-channel",
            post(internal::agent_post),
        )
        .route("/ws/city/presence", get(ws::presence))
        .route("/ws/messaging", get(ws::user_feed))
        .route("/ws/messaging/{channel_id}", get(ws::messaging))
        // The city page: to anyone, outside CORS (the browser loads it as a page).
        .merge(crate::web::router())
}
