//! `GET /ws/city/presence`: a snapshot of every city room the client may see on connect
//! (private rooms only for admins), then `room.presence` updates of those rooms as they
//! are published, written by the hub's fan-out (`presence::sockets`) on the socket itself
//! (`crate::websocket`): one that falls behind gets a fresh snapshot, one that is stuck is
//! dropped, and neither delays anyone else.
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

use super::{extract::user_claims, messaging::Person};
use crate::{
    app::AppState,
    auth::bearer_token,
    error::ApiError,
    metrics::Connected,
    presence::{PresenceHub, Viewer, sockets::Flushed},
    websocket,
};

/// A client whose socket accepts nothing for this long is considered stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The close frame sent when the server stops: upgraded connections outlive the HTTP
/// server's graceful shutdown, so each socket ends itself and its client reconnects
/// (1012, "service restart").
fn going_away() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1012,
        reason: Utf8Bytes::from_static("the bridge is restarting"),
    }))
}

/// The close code at the token's `exp`: the client reconnects with a fresh token.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// The close code when the member's right to the channel ended (left, kicked, banned):
/// reconnecting is refused (403) until the user is a member again.
pub const CLOSE_MEMBERSHIP_ENDED: u16 = 4003;

/// The close frame at the token's `exp`.
fn token_expired() -> Message {
    Message::Close(Some(CloseFrame {
        code: CLOSE_TOKEN_EXPIRED,
        reason: Utf8Bytes::from_static("token expired — reconnect with a fresh token"),
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

/// Resolves at `at`; never without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

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

/// # `GET /ws/city/presence`
///
/// The JWT (`?token=` or `Authorization: Bearer`) is checked before the upgrade; the
/// socket closes with [`CLOSE_TOKEN_EXPIRED`] at its `exp`.
pub async fn presence(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    upgrade: websocket::Upgrade,
) -> Result<Response, ApiError> {
    // Any valid JWT, with or without a Matrix identity here; every refusal is the same 401.
    let claims = user_claims(socket_token(&query, &headers), &state).map_err(|_| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            crate::error::ErrorCode::Unauthorized,
        )
        .with_detail("a valid JWT is required")
    })?;
    let viewer = Viewer {
        admin: claims.is_admin(),
    };
    let expires = token_end(claims.valid_for());
    let hub = state.hub.clone();
    let stopping = state.workers.cancelled();
    Ok(upgrade.on_upgrade(move |stream, read| {
        serve_presence(stream, read, hub, viewer, expires, stopping, SEND_TIMEOUT)
    }))
}

/// How long a closed presence socket reads what its client still sends (until the
/// client closes too), so that the close frame is not lost to a reset.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A socket in the hub's fan-out, until this is dropped (however its task ends).
struct Registered<'a> {
    hub: &'a PresenceHub,
    socket: std::sync::Arc<crate::presence::sockets::Socket>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.hub.sockets().end(&self.socket);
    }
}

/// A presence socket's own task: it sends the snapshot, reads what the client sends (and
/// answers), writes what the fan-out queued when the socket can take it, resynchronises a
/// client that fell behind, drops one that takes nothing for `stuck_after`, and closes
/// the socket at the token's end or when the bridge stops. Updates themselves are written
/// by the hub's fan-out (`presence::sockets`), not here. Nothing is read while frames
/// wait: a client that does not read cannot make the bridge queue answers.
async fn serve_presence(
    stream: tokio::net::TcpStream,
    read: bytes::Bytes,
    hub: std::sync::Arc<PresenceHub>,
    viewer: Viewer,
    expires: tokio::time::Instant,
    stopping: CancellationToken,
    stuck_after: Duration,
) {
    let _connected = Connected::new("presence");
    let snapshot = || websocket::text(&hub.snapshot(viewer));
    let stream = std::sync::Arc::new(stream);
    let registered = Registered {
        hub: &hub,
        socket: hub
            .sockets()
            .register(std::sync::Arc::clone(&stream), viewer),
    };
    let socket = &registered.socket;
    socket.resync(snapshot);
    let mut reader = websocket::Reader::new(read);
    let expiry = tokio::time::sleep_until(expires);
    tokio::pin!(expiry);
    let stopped = stopping.cancelled();
    tokio::pin!(stopped);
    // Since when queued frames have waited without the socket taking any.
    let mut waiting_since: Option<tokio::time::Instant> = None;
    let last = loop {
        // What the client sent, message by message.
        match reader.message() {
            Ok(Some(websocket::Received::Text(text))) if text == "ping" => {
                socket.send(websocket::text("pong"));
                continue;
            }
            Ok(Some(websocket::Received::Ping(payload))) => {
                socket.send(websocket::pong(&payload));
                continue;
            }
            Ok(Some(websocket::Received::Close(code))) => {
                // Echoed, as RFC 6455 §5.5.1 asks.
                break Some(websocket::close(code.unwrap_or(1000), ""));
            }
            Ok(Some(websocket::Received::Text(_) | websocket::Received::Nothing)) => continue,
            Ok(None) => {}
            Err(violation) => break Some(violation.close_frame()),
        }
        let pending = socket.pending();
        let stuck_at = match (pending, waiting_since) {
            (false, _) => {
                waiting_since = None;
                None
            }
            (true, Some(since)) => Some(since + stuck_after),
            (true, None) => {
                let now = tokio::time::Instant::now();
                waiting_since = Some(now);
                Some(now + stuck_after)
            }
        };
        tokio::select! {
            biased;
            () = &mut stopped => break Some(websocket::close(1012, "the bridge is restarting")),
            () = &mut expiry => break Some(websocket::close(
                CLOSE_TOKEN_EXPIRED,
                "token expired — reconnect with a fresh token",
            )),
            written = stream.writable(), if pending => {
                if written.is_err() {
                    break None;
                }
                match socket.flush() {
                    Flushed::Drained { lagged } => {
                        if lagged {
                            socket.resync(snapshot);
                        }
                    }
                    Flushed::Blocked { progressed: true } => waiting_since = None,
                    Flushed::Blocked { progressed: false } => {}
                    Flushed::Failed => break None,
                }
            }
            () = sleep_until(stuck_at), if pending => {
                crate::metrics::metrics().frame("presence", "dropped");
                break None;
            }
            () = socket.queued() => {}
            readable = stream.readable(), if !pending => {
                if readable.is_err() {
                    break None;
                }
                match stream.try_read_buf(reader.buffer(4 * 1024)) {
                    // The client closed its side.
                    Ok(0) => break None,
                    Ok(_) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break None,
                }
            }
        }
    };
    let Some(close) = last else {
        return;
    };
    // The last frame, after what is queued, if the socket takes it soon; nothing after it.
    socket.close(close);
    let flushed = tokio::time::timeout(stuck_after, async {
        while socket.pending() {
            if stream.writable().await.is_err() || socket.flush() == Flushed::Failed {
                break;
            }
        }
    });
    let _ = flushed.await;
    drop(registered);
    // The closing handshake: nothing more from this side, and what the client still sends
    // (its close) is read until it closes too.
    if let Ok(mut stream) = std::sync::Arc::try_unwrap(stream) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let _ = stream.shutdown().await;
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            // On the heap: an array here would be in every socket's task for its whole life.
            let mut scratch = vec![0; 4 * 1024];
            while matches!(stream.read(&mut scratch).await, Ok(1..)) {}
        })
        .await;
    }
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

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use axum::routing::get;
    use serde_json::Value;
    use tokio_tungstenite::{connect_async, tungstenite::Message as Frame};

    use super::*;
    use crate::{domain::Visibility, presence::RoomPresence};

    /// A `room.presence` of `general` with `online` people, padded to ~16 KB so that a
    /// few thousand fill any socket's buffers.
    fn update(online: usize) -> Vec<u8> {
        serde_json::to_vec(&RoomPresence {
            room_slug: "general".to_owned(),
            matrix_room_id: "!general:city.org".to_owned(),
            matrix_room_alias: None,
            online_count: online,
            typing_count: 512,
            typing_users: (0..512)
                .map(|n| format!("@typist{n:05}:city.org"))
                .collect(),
            last_event_ts: None,
        })
        .unwrap()
    }

    fn json(frame: Frame) -> Value {
        serde_json::from_str(frame.to_text().unwrap()).unwrap()
    }

    /// Serves `hub`'s presence sockets (a citizen's, tokens valid for an hour) as the
    /// bridge does, until `stopping`: the address to connect to.
    async fn presence_server(hub: Arc<PresenceHub>, stopping: CancellationToken) -> String {
        presence_server_dropping_after(hub, stopping, SEND_TIMEOUT).await
    }

    /// [`presence_server`], dropping clients whose socket takes nothing for `stuck_after`.
    async fn presence_server_dropping_after(
        hub: Arc<PresenceHub>,
        stopping: CancellationToken,
        stuck_after: Duration,
    ) -> String {
        let app = axum::Router::new().route(
            "/",
            get(move |upgrade: websocket::Upgrade| {
                let (hub, stopping) = (Arc::clone(&hub), stopping.clone());
                async move {
                    upgrade.on_upgrade(move |stream, read| {
                        let forever = tokio::time::Instant::now() + Duration::from_secs(3600);
                        let viewer = Viewer { admin: false };
                        serve_presence(stream, read, hub, viewer, forever, stopping, stuck_after)
                    })
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(crate::app::serve(listener, app, std::future::pending()));
        url
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_holds_nobody_up_and_is_caught_up_with_a_snapshot() {
        let hub = PresenceHub::new();
        hub.set_catalog(vec![("general".to_owned(), Visibility::Public)]);
        let url = presence_server(Arc::clone(&hub), CancellationToken::new()).await;
        let (mut slow, _) = connect_async(&url).await.unwrap();
        let (mut fast, _) = connect_async(&url).await.unwrap();
        for socket in [&mut slow, &mut fast] {
            let snapshot = json(socket.next().await.unwrap().unwrap());
            assert_eq!(snapshot["type"], "snapshot");
        }

        // 2,000 updates (32 MB) while `slow` reads nothing: `fast` gets every one of them.
        const UPDATES: usize = 2_000;
        let reader = tokio::spawn(async move {
            for n in 1..=UPDATES {
                let frame = json(fast.next().await.unwrap().unwrap());
                assert_eq!(frame["online_count"], n, "in order, none missed");
            }
        });
        for n in 1..=UPDATES {
            hub.take(&update(n)).await;
        }
        tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("the reading client is not held up by the one that does not read")
            .unwrap();

        // `slow` reads again: what its socket held, in order, then a snapshot with the
        // latest state.
        let mut last = 0;
        let caught_up = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let frame = json(slow.next().await.unwrap().unwrap());
                if frame["type"] == "snapshot" {
                    return frame;
                }
                let n = frame["online_count"].as_u64().unwrap();
                assert!(n > last, "in order: {n} after {last}");
                last = n;
            }
        })
        .await
        .expect("a snapshot after what the socket held");
        assert!(
            last < UPDATES as u64,
            "its socket could not hold every update"
        );
        assert_eq!(caught_up["rooms"][0]["online_count"], UPDATES);
    }

    /// The close frame a socket ends with: its code.
    async fn closed_with(
        socket: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> u16 {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .expect("the socket ends")
            {
                Some(Ok(Frame::Close(Some(close)))) => return close.code.into(),
                Some(Ok(_)) => continue,
                other => panic!("a close frame, not {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_presence_socket_answers_pings_and_closes_with_a_code_that_says_why() {
        let hub = PresenceHub::new();
        hub.set_catalog(vec![("general".to_owned(), Visibility::Public)]);
        let stopping = CancellationToken::new();
        let url = presence_server(Arc::clone(&hub), stopping.clone()).await;
        let (mut socket, _) = connect_async(&url).await.unwrap();
        assert_eq!(
            json(socket.next().await.unwrap().unwrap())["type"],
            "snapshot"
        );

        // A text "ping" (what the city page sends) and a protocol ping are both answered.
        socket.send(Frame::text("ping")).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap(), Frame::text("pong"));
        socket
            .send(Frame::Ping("are you there".into()))
            .await
            .unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Frame::Pong("are you there".into())
        );
        // Updates go on after the answers.
        hub.take(&update(7)).await;
        assert_eq!(
            json(socket.next().await.unwrap().unwrap())["online_count"],
            7
        );

        // A message over 64 KiB: 1009, and the others are not affected.
        let (mut other, _) = connect_async(&url).await.unwrap();
        other.next().await.unwrap().unwrap();
        socket
            .send(Frame::text("x".repeat(websocket::MAX_MESSAGE + 1)))
            .await
            .unwrap();
        assert_eq!(closed_with(&mut socket).await, 1009);
        hub.take(&update(8)).await;
        assert_eq!(
            json(other.next().await.unwrap().unwrap())["online_count"],
            8
        );

        // The client closes: its close is echoed.
        let (mut leaving, _) = connect_async(&url).await.unwrap();
        leaving.next().await.unwrap().unwrap();
        leaving.close(None).await.unwrap();
        assert!(matches!(
            leaving.next().await,
            Some(Ok(Frame::Close(_))) | None
        ));

        // The bridge stops: 1012, reconnect.
        stopping.cancel();
        assert_eq!(closed_with(&mut other).await, 1012);
        tokio::time::timeout(Duration::from_secs(10), async {
            while !hub.sockets().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every ended socket leaves the fan-out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_was_idle_for_a_while_is_not_taken_for_stuck_when_its_socket_fills() {
        let hub = PresenceHub::new();
        hub.set_catalog(vec![("general".to_owned(), Visibility::Public)]);
        let stuck_after = Duration::from_secs(2);
        let url =
            presence_server_dropping_after(Arc::clone(&hub), CancellationToken::new(), stuck_after)
                .await;
        let (mut client, _) = connect_async(&url).await.unwrap();
        assert_eq!(
            json(client.next().await.unwrap().unwrap())["type"],
            "snapshot"
        );
        // Quiet for longer than a stuck socket is given: the state to test, not a wait.
        tokio::time::sleep(stuck_after * 3 / 2).await;

        // A burst larger than the socket's buffers (16 MB) while the client is busy, so
        // frames wait for the socket; then it reads:
        // it gets the latest state, as updates or as a snapshot, and is not dropped.
        const UPDATES: usize = 1_000;
        let mut queued = 0;
        for n in 1..=UPDATES {
            hub.take(&update(n)).await;
            queued = queued.max(hub.sockets().queued_frames());
        }
        assert!(queued > 0, "frames waited for the socket");
        let latest = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let frame = match client.next().await {
                    Some(Ok(frame)) => json(frame),
                    other => panic!("the client was dropped: {other:?}"),
                };
                let online = if frame["type"] == "snapshot" {
                    frame["rooms"][0]["online_count"].clone()
                } else {
                    frame["online_count"].clone()
                };
                if online == UPDATES {
                    return online;
                }
            }
        })
        .await
        .expect("the latest state arrives");
        assert_eq!(latest, UPDATES);
    }

    /// A bare TCP client of `url`, past the upgrade: for what a WebSocket library would
    /// not do (never read, read the raw frames).
    async fn raw_client(url: &str) -> tokio::net::TcpStream {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let addr = url.trim_start_matches("ws://").trim_end_matches('/');
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        stream
    }

    /// The opcodes of the server frames in `bytes` (unmasked), in order.
    fn opcodes(mut bytes: &[u8]) -> Vec<u8> {
        let mut opcodes = Vec::new();
        while bytes.len() >= 2 {
            let (length, header) = match bytes[1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
                127 => (
                    usize::try_from(u64::from_be_bytes(bytes[2..10].try_into().unwrap())).unwrap(),
                    10,
                ),
                n => (usize::from(n), 2),
            };
            if bytes.len() < header + length {
                break;
            }
            opcodes.push(bytes[0] & 0x0f);
            bytes = &bytes[header + length..];
        }
        opcodes
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_pings_and_never_reads_cannot_make_the_bridge_queue_without_end() {
        use tokio::io::AsyncWriteExt as _;
        let hub = PresenceHub::new();
        hub.set_catalog(vec![("general".to_owned(), Visibility::Public)]);
        let url = presence_server(Arc::clone(&hub), CancellationToken::new()).await;
        let mut client = raw_client(&url).await;
        // 50 MB of masked pings of 125 bytes, each owed a pong of the same size.
        let mut ping = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
        ping.extend([0; 125]);
        let pings: Vec<u8> = ping
            .iter()
            .copied()
            .cycle()
            .take(ping.len() * 400_000)
            .collect();
        let written = tokio::time::timeout(Duration::from_secs(3), client.write_all(&pings)).await;
        assert!(
            written.is_err(),
            "the bridge stops reading once its answers wait for the client"
        );
        let queued = hub.sockets().queued_frames();
        assert!(queued < 1_000, "{queued} answers queued");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_goes_after_the_close_frame() {
        use tokio::io::AsyncReadExt as _;
        let hub = PresenceHub::new();
        hub.set_catalog(vec![("general".to_owned(), Visibility::Public)]);
        let stopping = CancellationToken::new();
        let url = presence_server(Arc::clone(&hub), stopping.clone()).await;
        let mut client = raw_client(&url).await;
        // The client reads nothing for now: updates wait for its socket.
        let mut n = 0;
        while hub.sockets().queued_frames() < 100 {
            n += 1;
            hub.take(&update(n)).await;
        }
        // The bridge stops: its close frame joins the queue, and updates keep coming.
        let before = hub.sockets().queued_frames();
        stopping.cancel();
        tokio::time::timeout(Duration::from_secs(10), async {
            while hub.sockets().queued_frames() == before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the close frame is queued");
        for more in 1..=30 {
            hub.take(&update(n + more)).await;
        }
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut received))
            .await
            .expect("the bridge closes the connection")
            .unwrap();
        let opcodes = opcodes(&received);
        assert_eq!(opcodes.last(), Some(&0x8), "the close frame is the last");
        assert_eq!(opcodes.iter().filter(|op| **op == 0x8).count(), 1);
    }
}
