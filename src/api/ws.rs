//! `GET /ws/city/presence`: a snapshot of every room on connect, then `room.presence`
//! updates as they are published. Every client reads the same shared queue at its own
//! pace: one that falls behind gets a fresh snapshot, one that is stuck is dropped, and
//! neither delays anyone else.

use std::time::Duration;

use axum::{
    extract::{
        Query, State, WebSocketUpgrade,
        ws::{Message, Utf8Bytes, WebSocket},
    },
    http::{HeaderMap, StatusCode},
    response::Response,
};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    app::AppState,
    auth::{bearer_token, verify_jwt},
    error::ApiError,
    presence::PresenceHub,
};

/// A client whose socket accepts nothing for this long is considered stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// `?token=` — browsers cannot set headers on a WebSocket.
#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// # `GET /ws/city/presence`
///
/// The JWT (`?token=` or `Authorization: Bearer`) is checked before the upgrade.
pub async fn presence(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = query.token.as_deref().or_else(|| bearer_token(&headers));
    let valid = token
        .zip(state.config.jwt_secret.as_ref())
        .and_then(|(token, secret)| verify_jwt(token, secret.expose()))
        .is_some();
    if !valid {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized")
            .with_detail("a valid JWT is required"));
    }
    let hub = state.hub.clone();
    // Small buffers: ten thousand idle clients must stay cheap.
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| serve(socket, hub)))
}

async fn serve(socket: WebSocket, hub: std::sync::Arc<PresenceHub>) {
    // Subscribe before taking the snapshot, so no update falls between the two.
    let mut updates = hub.subscribe();
    let (mut sink, mut incoming) = socket.split();
    let snapshot = Message::Text(Utf8Bytes::from(hub.snapshot()));
    if !matches!(
        tokio::time::timeout(SEND_TIMEOUT, sink.send(snapshot)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    loop {
        let outgoing = tokio::select! {
            update = updates.recv() => match update {
                Ok(text) => Message::Text(text),
                // Fell behind the shared queue (a burst, or a slow reader): catch up with a
                // fresh snapshot instead of replaying. Nobody else waited for it.
                Err(RecvError::Lagged(_)) => Message::Text(Utf8Bytes::from(hub.snapshot())),
                Err(RecvError::Closed) => break,
            },
            received = incoming.next() => match received {
                Some(Ok(Message::Text(text))) if text.as_str() == "ping" => Message::Text(Utf8Bytes::from_static("pong")),
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
        };
        if !matches!(
            tokio::time::timeout(SEND_TIMEOUT, sink.send(outgoing)).await,
            Ok(Ok(()))
        ) {
            break;
        }
    }
}
