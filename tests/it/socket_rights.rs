//! Rights end when they end: a WebSocket closes when its token expires (4001).

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Bridge, city_room, env, jwt_expiring};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: String) -> Socket {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("the upgrade is accepted")
        .0
}

/// The socket still answers: `ping` → `pong`.
async fn answers(socket: &mut Socket) {
    socket.send(Message::text("ping")).await.expect("ping sent");
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an answer to ping")
            .expect("socket open")
            .expect("frame");
        match frame {
            Message::Text(text) if text.as_str() == "pong" => return,
            Message::Close(frame) => panic!("closed instead: {frame:?}"),
            _ => {}
        }
    }
}

/// The close frame's code and reason, read within `limit`; any other frame before it is
/// skipped. Fails if the socket is still open after `limit`, or ends without a close frame.
async fn closed_within(socket: &mut Socket, limit: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = tokio::time::timeout(left, socket.next())
            .await
            .unwrap_or_else(|_| panic!("the socket is still open after {limit:?}"));
        match frame {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.as_str().to_owned());
            }
            Some(Ok(Message::Close(None))) => panic!("closed without a code"),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("the socket failed without a close frame: {error}"),
            None => panic!("the socket ended without a close frame"),
        }
    }
}

/// Waits for the 4001 close of a socket whose token ends at `exp`: not before it, and
/// soon after it.
async fn closed_at_expiry(socket: &mut Socket, exp: i64) {
    let until_exp = u64::try_from(exp - chrono::Utc::now().timestamp()).unwrap_or(0);
    let (code, reason) = closed_within(
        socket,
        Duration::from_secs(until_exp) + Duration::from_secs(5),
    )
    .await;
    assert_eq!(code, 4001, "{reason}");
    assert!(reason.contains("token expired"), "{reason}");
    assert!(
        chrono::Utc::now().timestamp() >= exp,
        "closed before the token's exp"
    );
}

#[tokio::test]
async fn a_channel_socket_closes_with_4001_when_its_token_expires() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Площа").await;
    let (token, exp) = jwt_expiring("user:expiring", &[], Duration::from_secs(3));
    let mut socket = open(format!(
        "ws://{}/ws/messaging/{slug}?token={token}",
        env().bridge_addr
    ))
    .await;
    answers(&mut socket).await;
    closed_at_expiry(&mut socket, exp).await;
    bridge.stop().await;
}

#[tokio::test]
async fn the_presence_socket_closes_with_4001_when_its_token_expires() {
    let bridge = Bridge::start().await;
    // An admin's token: the private rooms it shows end with it.
    let (token, exp) = jwt_expiring("user:expiringadmin", &["admin"], Duration::from_secs(3));
    let mut socket = open(format!(
        "ws://{}/ws/city/presence?token={token}",
        env().bridge_addr
    ))
    .await;
    answers(&mut socket).await;
    closed_at_expiry(&mut socket, exp).await;
    bridge.stop().await;
}
