//! `GET /ws/city/presence`: a snapshot of every city room the client may see on connect
//! (private rooms only for admins), then `room.presence` updates of those rooms as they
//! are published, written by the hub's fan-out (`presence::sockets`) on the socket itself
//! (`crate::websocket`; the handler and each socket's task in `ws/presence.rs`): one that
//! falls behind gets a fresh snapshot, one that is stuck is dropped, and neither delays
//! anyone else.
//!
//! `GET /ws/messaging/{channel_id}`: the live feed of one channel (messages created,
//! updated, deleted, reactions, typing), in stream order; a client that falls behind is
//! told to resync (`{"type":"resync"}`: read the history `after` its last cursor). The
//! client may say its user types: `{"type":"typing","typing":true}`.
//!
//! `GET /ws/messaging`: the live feed of one person over every channel they are in
//! (`unread.updated`, `channel.joined`, `channel.left`, `invite`); `resync` means: read
//! `GET /api/messaging/channels` again.
//!
//! All end with the rights they were opened with, by a close frame a client can act on
//! (the README's "WebSocket close codes"):
//!
//! - 1012 (service restart): the bridge stops; reconnect with the same token.
//! - 4001 (token expired): at the JWT's `exp`; reconnect with a fresh token.
//! - 4003 (membership ended): the member left, was kicked or banned from the private
//!   channel (`/ws/messaging` only; admins' rights live in their token); do not reconnect.

use std::time::Duration;

use axum::{
    extract::{
        Query, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket},
    },
    http::{HeaderMap, StatusCode},
    response::Response,
};
use futures_util::{SinkExt as _, StreamExt as _, stream::SplitSink};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

mod presence;

pub use presence::presence;

use super::messaging::Person;
use crate::{app::AppState, auth::bearer_token, error::ApiError, metrics::Connected};

/// A client whose socket accepts nothing for this long is considered stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The close frame sent when the server stops: upgraded connections outlive the HTTP
/// server's graceful shutdown, so each socket ends itself and its client reconnects
/// (1012, "service restart").
fn going_away() -> Message {
    Message::Close(Some(CloseFrame {
        code: CLOSE_RESTARTING,
        reason: Utf8Bytes::from_static(RESTARTING),
    }))
}

/// The close code when the bridge stops: reconnect with the same token.
const CLOSE_RESTARTING: u16 = 1012;
const RESTARTING: &str = "the bridge is restarting";
const TOKEN_EXPIRED: &str = "token expired — reconnect with a fresh token";

/// The close code at the token's `exp`: the client reconnects with a fresh token.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// The close code when the member's right to the channel ended (left, kicked, banned):
/// reconnecting is refused (403) until the user is a member again.
pub const CLOSE_MEMBERSHIP_ENDED: u16 = 4003;

/// The close frame at the token's `exp`.
fn token_expired() -> Message {
    Message::Close(Some(CloseFrame {
        code: CLOSE_TOKEN_EXPIRED,
        reason: Utf8Bytes::from_static(TOKEN_EXPIRED),
    }))
}

/// The close frame when the membership of a private channel ended.
fn membership_ended() -> Message {
    Message::Close(Some(CloseFrame {
        code: CLOSE_MEMBERSHIP_ENDED,
        reason: Utf8Bytes::from_static("no longer a member of this private channel"),
    }))
}

/// When the token's rights end, as an instant of the socket's clock.
fn token_end(valid_for: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + valid_for
}

/// A watched membership of a private channel: resolves when it ends
/// (`ChannelHub::watch_membership`).
type Membership = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Resolves when `membership` ends; never when there is none to watch.
async fn ended(membership: Option<&mut Membership>) {
    match membership {
        Some(membership) => membership.await,
        None => std::future::pending().await,
    }
}

/// What a client's frame asks of the server.
enum FromClient {
    /// Answer this (`ping` → `pong`).
    Answer(Message),
    /// Its user types (`{"type":"typing","typing":true}`), or stopped.
    Typing(bool),
    /// Nothing.
    Nothing,
    /// The client closed, or its socket failed: the connection ends.
    Gone,
}

fn from_client(received: Option<Result<Message, axum::Error>>) -> FromClient {
    match received {
        Some(Ok(Message::Text(text))) if text.as_str() == "ping" => {
            FromClient::Answer(Message::Text(Utf8Bytes::from_static("pong")))
        }
        Some(Ok(Message::Text(text))) => {
            typing_frame(text.as_str()).map_or(FromClient::Nothing, FromClient::Typing)
        }
        Some(Ok(Message::Close(_)) | Err(_)) | None => FromClient::Gone,
        Some(Ok(_)) => FromClient::Nothing,
    }
}

/// `{"type":"typing","typing":<bool>}` → the bool.
fn typing_frame(text: &str) -> Option<bool> {
    #[derive(Deserialize)]
    struct Frame {
        #[serde(rename = "type")]
        kind: String,
        typing: bool,
    }
    serde_json::from_str::<Frame>(text)
        .ok()
        .filter(|f| f.kind == "typing")
        .map(|f| f.typing)
}

/// Says that the socket's user types in its channel (or stopped), in the background.
type Typist = Box<dyn Fn(bool) + Send + Sync>;

/// The channel socket's [`Typist`]: the person's rights are read again at each "typing"
/// that gets past the socket's own throttle (they may have joined since the upgrade).
fn typist(state: &AppState, person: &Person, channel: &str) -> Typist {
    let (state, person, channel) = (state.clone(), person.clone(), channel.to_owned());
    Box::new(move |typing| {
        let (task_state, person, channel) = (state.clone(), person.clone(), channel.clone());
        state.workers.spawn("typing", async move {
            let state = task_state;
            let sent = match person.readable(&state, &channel).await {
                Ok(readable) => {
                    super::messaging::reads::send_typing(&state, &person, &readable, typing).await
                }
                Err(refused) => Err(refused),
            };
            if let Err(error) = sent {
                tracing::debug!(?error, "typing from a channel socket not sent");
            }
        });
    })
}

/// Sends `outgoing` on a `kind` socket; whether the connection goes on: not after a close
/// frame, nor when the socket took nothing for [`SEND_TIMEOUT`] (the client is dropped).
async fn deliver(
    sink: &mut SplitSink<WebSocket, Message>,
    outgoing: Message,
    kind: &'static str,
) -> bool {
    let closing = matches!(outgoing, Message::Close(_));
    let sent = matches!(
        tokio::time::timeout(SEND_TIMEOUT, sink.send(outgoing)).await,
        Ok(Ok(()))
    );
    if !sent && !closing {
        crate::metrics::metrics().frame(kind, "dropped");
    }
    sent && !closing
}

/// `?token=` — browsers cannot set headers on a WebSocket.
#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// The JWT of a socket: `?token=`, else `Authorization: Bearer`.
fn socket_token<'a>(query: &'a TokenQuery, headers: &'a HeaderMap) -> Option<&'a str> {
    query.token.as_deref().or_else(|| bearer_token(headers))
}

/// # `GET /ws/messaging/{channel_id}`
///
/// The JWT (`?token=` or `Authorization: Bearer`) and the right to read the channel are
/// checked before the upgrade: a private channel is refused (403) to a non-member. The
/// socket closes with [`CLOSE_TOKEN_EXPIRED`] at the token's `exp`, and a member's socket
/// on a private channel with [`CLOSE_MEMBERSHIP_ENDED`] within seconds of the member
/// leaving, being kicked or banned (see `ChannelHub::check_memberships`).
pub async fn messaging(
    State(state): State<AppState>,
    super::extract::ApiPath(channel): super::extract::ApiPath<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let (person, valid_for) = Person::of_token(socket_token(&query, &headers), &state)?;
    let expires = token_end(valid_for);
    let room = state
        .store
        .channel_room(&channel)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let member = room.visibility == crate::domain::Visibility::Private && !person.admin;
    // Watched from before the check: a membership that ends after it is seen ending.
    let membership = match (&room.matrix_room_id, member) {
        (Some(room_id), true) => Some(state.channels.watch_membership(room_id, &person.user_id)),
        _ => None,
    };
    if member
        && !crate::messaging::access::is_joined(
            &state.store,
            &state.homeserver,
            &room,
            &person.user_id,
        )
        .await?
    {
        return Err(
            ApiError::new(StatusCode::FORBIDDEN, crate::error::ErrorCode::Forbidden)
                .with_detail("a private channel: only its members may watch it"),
        );
    }
    // Subscribed before the upgrade completes: nothing indexed after this answer is missed.
    let frames = state.channels.subscribe(room.id.as_str());
    let feed = Feed {
        kind: "messaging",
        frames,
        expires,
        membership,
        typist: Some(typist(&state, &person, room.id.as_str())),
        stopping: state.workers.cancelled(),
    };
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| serve_feed(socket, feed)))
}

/// # `GET /ws/messaging`
///
/// The caller's own feed over every channel they are in: `unread.updated` (a message
/// came, was edited or deleted, or they read — here or in any Matrix client),
/// `channel.joined`, `channel.left` and `invite`. The JWT is checked before the upgrade;
/// the socket closes with [`CLOSE_TOKEN_EXPIRED`] at its `exp`. A client that falls behind
/// gets `{"type":"resync"}` (read the channel list again); one that takes nothing for
/// 10 s is dropped.
pub async fn user_feed(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let (person, valid_for) = Person::of_token(socket_token(&query, &headers), &state)?;
    let feed = Feed {
        kind: "user",
        frames: state.users.subscribe(person.user_id.as_str()),
        expires: token_end(valid_for),
        membership: None,
        typist: None,
        stopping: state.workers.cancelled(),
    };
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| serve_feed(socket, feed)))
}

/// A live feed socket: a channel's or a person's.
struct Feed {
    /// The metrics' label.
    kind: &'static str,
    frames: tokio::sync::broadcast::Receiver<Utf8Bytes>,
    expires: tokio::time::Instant,
    membership: Option<Membership>,
    typist: Option<Typist>,
    stopping: CancellationToken,
}

async fn serve_feed(socket: WebSocket, feed: Feed) {
    let Feed {
        kind,
        mut frames,
        expires,
        mut membership,
        typist,
        stopping,
    } = feed;
    let _connected = Connected::new(kind);
    // "Typing" goes on at most every TYPING_RESEND from one socket (a page sends it at
    // every key press); "stopped" at once.
    let mut typed_at: Option<tokio::time::Instant> = None;
    let metrics = crate::metrics::metrics();
    let (mut sink, mut incoming) = socket.split();
    let expiry = tokio::time::sleep_until(expires);
    tokio::pin!(expiry);
    loop {
        let outgoing = tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    metrics.frame(kind, "sent");
                    Message::Text(frame)
                }
                Err(RecvError::Lagged(_)) => {
                    metrics.frame(kind, "resynced");
                    Message::Text(Utf8Bytes::from_static(crate::messaging::RESYNC))
                }
                Err(RecvError::Closed) => break,
            },
            received = incoming.next() => match from_client(received) {
                FromClient::Answer(answer) => answer,
                FromClient::Typing(typing) => {
                    let now = tokio::time::Instant::now();
                    let again = typing
                        && typed_at.is_some_and(|at| now - at < crate::messaging::TYPING_RESEND);
                    if let (Some(typist), false) = (&typist, again) {
                        typed_at = typing.then_some(now);
                        typist(typing);
                    }
                    continue;
                }
                FromClient::Nothing => continue,
                FromClient::Gone => break,
            },
            () = &mut expiry => token_expired(),
            () = ended(membership.as_mut()) => membership_ended(),
            () = stopping.cancelled() => going_away(),
        };
        if !deliver(&mut sink, outgoing, kind).await {
            break;
        }
    }
}
