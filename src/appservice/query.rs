//! Synapse asking whether a user or alias in our namespaces exists: agents are registered
//! and city rooms created on the spot.

use axum::extract::State;
use http::StatusCode;
use ruma::api::appservice::query::{query_room_alias, query_user_id};
use tracing::{info, warn};

use super::{Ruma, RumaResponse};
use crate::{
    agents::Agents,
    domain::Slug,
    error::MatrixError,
    metrics::OutcomeLabel,
    rooms::{Ensured, Rooms},
};

/// A request that did not parse (a malformed id) is simply not one of ours; auth errors stay.
fn unparsable_is_unknown<T>(request: Result<Ruma<T>, MatrixError>) -> Result<Ruma<T>, MatrixError> {
    request.map_err(|e| {
        if e.status() == StatusCode::BAD_REQUEST {
            MatrixError::not_found("Not one of ours")
        } else {
            e
        }
    })
}

/// # `GET /_matrix/app/v1/users/{userId}`
///
/// `@agent_<name>:<server>` with `agent:<name>` in `agents` is registered and answered 200;
/// anything else is 404 and nothing is registered.
pub async fn query_user(
    State(agents): State<Agents>,
    request: Result<Ruma<query_user_id::v1::Request>, MatrixError>,
) -> Result<RumaResponse<query_user_id::v1::Response>, MatrixError> {
    let queries = &crate::metrics::metrics().user_queries;
    let count = |outcome| {
        queries.get_or_create(&OutcomeLabel { outcome }).inc();
    };
    let user = unparsable_is_unknown(request)
        .inspect_err(|_| count("refused"))?
        .request
        .user_id;
    match agents.provision(&user).await {
        Ok(true) => {
            count("registered");
            Ok(RumaResponse(query_user_id::v1::Response::new()))
        }
        Ok(false) => {
            count("unknown");
            Err(MatrixError::not_found("No such agent"))
        }
        Err(e) => {
            count("failed");
            Err(e.into())
        }
    }
}

/// # `GET /_matrix/app/v1/rooms/{roomAlias}`
///
/// `#city_<slug>:<server>` of a city room that is not archived: its Matrix room is created
/// (or its alias restored) and the answer is 200. `#city:<server>`, the city's Space: made
/// if it does not exist yet, 200. Anything else is 404, nothing created.
pub async fn query_room_alias(
    State(rooms): State<Rooms>,
    request: Result<Ruma<query_room_alias::v1::Request>, MatrixError>,
) -> Result<RumaResponse<query_room_alias::v1::Response>, MatrixError> {
    let queries = &crate::metrics::metrics().alias_queries;
    let count = |outcome| {
        queries.get_or_create(&OutcomeLabel { outcome }).inc();
    };
    let alias = unparsable_is_unknown(request)
        .inspect_err(|_| count("refused"))?
        .request
        .room_alias;
    if alias == crate::domain::space_alias(None, &rooms.server_name) {
        return match rooms.ensure_city_space().await {
            Ok(Some(space)) => {
                count("space");
                info!(%alias, %space, "answered alias query of the city's Space");
                Ok(RumaResponse(query_room_alias::v1::Response::new()))
            }
            Ok(None) => {
                count("unknown");
                Err(MatrixError::not_found("The city has no Space"))
            }
            Err(e) => {
                count("failed");
                Err(e.into())
            }
        };
    }
    let Some(slug) = Slug::of_alias(&alias, &rooms.server_name) else {
        count("unknown");
        return Err(MatrixError::not_found("Not a city room alias"));
    };
    let ensured = rooms
        .ensure_matrix_room(&slug)
        .await
        .inspect_err(|_| count("failed"))?;
    match &ensured {
        Ensured::Created(room_id) | Ensured::Existing(room_id) => {
            count(if matches!(ensured, Ensured::Created(_)) {
                "created"
            } else {
                "existing"
            });
            info!(%alias, %room_id, "answered alias query");
            Ok(RumaResponse(query_room_alias::v1::Response::new()))
        }
        Ensured::UnknownSlug => {
            count("unknown");
            Err(MatrixError::not_found("No such city room"))
        }
        Ensured::Archived => {
            count("archived");
            warn!(%alias, "alias query for an archived city room refused");
            Err(MatrixError::not_found("City room is archived"))
        }
    }
}
