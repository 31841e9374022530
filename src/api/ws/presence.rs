//! `GET /ws/city/presence` on the socket itself: the handler, and each socket's own task
//! beside the hub's fan-out (`presence::sockets`).

use std::time::Duration;

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use tokio_util::sync::CancellationToken;

use super::{
    CLOSE_RESTARTING, CLOSE_TOKEN_EXPIRED, RESTARTING, SEND_TIMEOUT, TOKEN_EXPIRED, TokenQuery,
    socket_token, token_end,
};
use crate::{
    api::extract::user_claims,
    app::AppState,
    error::ApiError,
    metrics::Connected,
    presence::{PresenceHub, Viewer, sockets::Flushed},
    websocket,
};

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
        waiting_since = if pending {
            waiting_since.or_else(|| Some(tokio::time::Instant::now()))
        } else {
            None
        };
        let stuck_at = waiting_since.unwrap_or_else(tokio::time::Instant::now) + stuck_after;
        tokio::select! {
            biased;
            () = &mut stopped => break Some(websocket::close(CLOSE_RESTARTING, RESTARTING)),
            () = &mut expiry => break Some(websocket::close(CLOSE_TOKEN_EXPIRED, TOKEN_EXPIRED)),
            written = stream.writable(), if pending => {
                if written.is_err() {
                    break None;
                }
                match socket.flush() {
                    Flushed::Drained => {
                        socket.resync(snapshot);
                    }
                    Flushed::Blocked { progressed: true } => waiting_since = None,
                    Flushed::Blocked { progressed: false } => {}
                    Flushed::Failed => break None,
                }
            }
            () = tokio::time::sleep_until(stuck_at), if pending => {
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

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use axum::routing::get;
    use futures_util::{SinkExt as _, StreamExt as _};
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

    /// A hub whose city has one public room, `general`.
    fn city() -> Arc<PresenceHub> {
        let hub = PresenceHub::new();
        hub.set_catalog(vec![("general".to_owned(), Visibility::Public)]);
        hub
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
        let hub = city();
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
        let hub = city();
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
        let hub = city();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_whose_socket_takes_nothing_is_dropped_and_leaves_the_fan_out() {
        use tokio::io::AsyncReadExt as _;
        let hub = city();
        let stuck_after = Duration::from_millis(500);
        let url =
            presence_server_dropping_after(Arc::clone(&hub), CancellationToken::new(), stuck_after)
                .await;
        // A client that never reads: updates until frames wait for its socket.
        let mut client = raw_client(&url).await;
        let mut n = 0;
        while hub.sockets().queued_frames() == 0 {
            n += 1;
            hub.take(&update(n)).await;
        }

        // Its socket takes nothing from then on: the bridge drops it and writes no more.
        tokio::time::timeout(Duration::from_secs(10), async {
            while !hub.sockets().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the stuck socket leaves the fan-out");
        let mut received = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut received)).await;
        assert!(read.is_ok(), "the bridge closes the connection");
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
        let hub = city();
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
        let hub = city();
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

    #[tokio::test]
    async fn a_request_that_is_not_a_websocket_upgrade_gets_a_400_with_the_api_error_body() {
        let url = presence_server(city(), CancellationToken::new()).await;
        let http = url.replace("ws://", "http://");
        let client = reqwest::Client::new();
        let plain = client.get(&http).send().await.unwrap();
        let old_version = client
            .get(&http)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "8")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        let no_key = client
            .get(&http)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .send()
            .await
            .unwrap();
        for (refused, detail) in [
            (plain, "a WebSocket upgrade"),
            (old_version, "Sec-WebSocket-Version must be 13"),
            (no_key, "Sec-WebSocket-Key is missing"),
        ] {
            assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
            let body: Value = refused.json().await.unwrap();
            assert_eq!(body["error"], "invalid");
            assert!(body["detail"].as_str().unwrap().contains(detail), "{body}");
        }
    }
}
