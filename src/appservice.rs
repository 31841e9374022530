//! Inbound from Synapse: the Application Service API. Every request is authenticated with
//! the `hs_token` before a handler sees it: by the [`Ruma`] extractor, or, for pushed
//! transactions (whose body is read by borrowing, not by ruma) and the third-party
//! lookups, by `extract::Authenticated`.

mod extract;
mod query;
mod transactions;

use axum::{
    Router,
    routing::{get, post, put},
};
use ruma::api::appservice::ping::send_ping;

pub use self::extract::{Ruma, RumaResponse};
use crate::{app::AppState, error::MatrixError};

/// The routes under `/_matrix/app/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/transactions/{txn_id}", put(transactions::push_events))
        .route("/users/{user_id}", get(query::query_user))
        .route("/rooms/{room_alias}", get(query::query_room_alias))
        .route("/ping", post(ping))
        .route("/thirdparty/protocol/{protocol}", get(no_third_party))
        .route("/thirdparty/location/{protocol}", get(no_third_party))
        .route("/thirdparty/user/{protocol}", get(no_third_party))
        .route("/thirdparty/location", get(no_third_party))
        .route("/thirdparty/user", get(no_third_party))
        .method_not_allowed_fallback(|| async {
            MatrixError::new(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "M_UNRECOGNIZED",
                "Method not allowed",
            )
        })
}

/// # `POST /_matrix/app/v1/ping`
///
/// Synapse checking that the appservice is up (after our startup ping, or an admin's).
async fn ping(
    Ruma { request, .. }: Ruma<send_ping::v1::Request>,
) -> RumaResponse<send_ping::v1::Response> {
    tracing::debug!(txn_id = ?request.transaction_id, "pinged by the homeserver");
    RumaResponse(send_ping::v1::Response::new())
}

/// # `GET /_matrix/app/v1/thirdparty/*`
///
/// The bridge bridges no third-party network: it has no protocols, locations or users.
async fn no_third_party(_auth: extract::Authenticated) -> MatrixError {
    MatrixError::not_found("No third-party protocols")
}
