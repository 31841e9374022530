//! The OpenAPI 3 document of the REST API, generated from the handlers' annotations.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{
    city_rooms, internal,
    messaging::{channels, media, members, messages, pins, reactions, reads, search},
};

#[derive(OpenApi)]
#[openapi(
    info(title = "city-bridge", description = "REST API of the DAARION.city Matrix bridge"),
    paths(
        city_rooms::list, city_rooms::get, city_rooms::create, city_rooms::update,
        internal::create_matrix_room, internal::find_by_alias, internal::backfill, internal::room_mapping,
        internal::agent_presence, internal::replay_dead_letters,
        channels::list_channels, channels::get_channel, channels::create_channel,
        messages::history, messages::send_message, messages::edit_message,
        messages::delete_message, reactions::react, reactions::unreact, members::members,
        members::invite, members::remove, pins::pins, pins::pin, pins::unpin,
        internal::agent_post, search::search, media::upload, media::download, media::config,
        reads::mark_read, reads::typing,
    ),
    components(schemas(
        city_rooms::CityRoomView, city_rooms::CreateCityRoom, city_rooms::UpdateCityRoom,
        crate::domain::Visibility, internal::MatrixRoomRef, internal::CreateMatrixRoom,
        internal::BackfillSummary, internal::BackfillFailure, internal::SpaceSummary, internal::RoomMapping, internal::AgentPresence,
        internal::ReplayRequest, internal::ReplaySummary, internal::StillFailing,
        channels::ChannelList, channels::CreateChannel, messages::History, messages::SendMessage,
        messages::EditMessage, reactions::React, members::Member, members::MemberList,
        members::Invite, internal::AgentPost, search::SearchResults,
        crate::store::ChannelView, crate::store::MessageView, crate::store::ReactionCount,
        crate::store::SearchHit, crate::store::Pins, members::Removed, crate::error::ApiErrorBody,
        crate::error::ErrorCode, crate::store::model::Media, media::UploadForm, media::MediaConfig,
        channels::ChannelOrder, crate::store::ChannelSummary, crate::store::Unread,
        crate::store::LastMessage, reads::MarkRead, reads::ChannelUnread, reads::Typing,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorCode;

    #[test]
    fn the_document_lists_the_error_codes() {
        let document = serde_json::to_value(super::document()).unwrap();
        let schemas = &document["components"]["schemas"];
        let codes: Vec<&str> = schemas["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode is a string enum")
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!(codes.contains(&code.as_str()), "{code} in {codes:?}");
        }
        assert_eq!(
            schemas["ApiErrorBody"]["properties"]["error"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
    }
}
