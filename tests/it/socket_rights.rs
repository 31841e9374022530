//! Rights end when they end: a WebSocket closes when its token expires (4001), and a
//! member who leaves, is kicked or banned from a private channel is dropped from its feed
//! (4003) within seconds, on the receiver and on an API-only instance alike.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    ApiInstance, Bridge, MatrixUser, api, city_room, encode, env, jwt, jwt_expiring, nats_url,
    unique,
};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How soon after the membership event a dropped member's socket must be closed.
const DROPPED_WITHIN: Duration = Duration::from_secs(10);

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

/// Reads frames until the `message.created` of `event_id`.
async fn receives(socket: &mut Socket, event_id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = tokio::time::timeout(left, socket.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {event_id}"))
            .expect("socket open")
            .expect("frame");
        match frame {
            Message::Text(text) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["type"] == "message.created" && v["matrix_event_id"] == event_id {
                    return;
                }
            }
            Message::Close(frame) => panic!("closed before {event_id}: {frame:?}"),
            _ => {}
        }
    }
}

fn token_of(user: &MatrixUser) -> String {
    jwt(&format!("user:{}", user.localpart()), &[])
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

/// A private channel created by `owner` through the API, with `member` invited and joined
/// in Matrix; its slug and Matrix room id.
async fn private_channel_with(owner: &MatrixUser, member: &MatrixUser) -> (String, String) {
    let slug = unique("priv");
    let (status, created) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(&token_of(owner)),
        Some(json!({"slug": slug, "name": "Рада", "visibility": "private"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let room_id = created["matrix_room_id"].as_str().unwrap().to_owned();
    owner
        .invite(&room_id, &member.user_id)
        .await
        .expect("invite");
    member.join(&room_id).await.expect("join");
    (slug, room_id)
}

/// After `drop` ends `member`'s membership, their feed closes with 4003 within
/// [`DROPPED_WITHIN`], the owner's stays, and a new upgrade is refused.
async fn dropped_from_feed(
    addr: std::net::SocketAddr,
    owner: &MatrixUser,
    member: &MatrixUser,
    drop_member: impl AsyncFnOnce(&str),
) {
    let (slug, room_id) = private_channel_with(owner, member).await;
    let url =
        |user: &MatrixUser| format!("ws://{addr}/ws/messaging/{slug}?token={}", token_of(user));
    let mut members_feed = open(url(member)).await;
    let mut owners_feed = open(url(owner)).await;
    let before = owner.send_text(&room_id, "до").await;
    receives(&mut members_feed, &before).await;
    receives(&mut owners_feed, &before).await;

    drop_member(&room_id).await;
    let (code, reason) = closed_within(&mut members_feed, DROPPED_WITHIN).await;
    assert_eq!(code, 4003, "{reason}");
    assert!(reason.contains("no longer a member"), "{reason}");

    // The owner is still a member: their feed goes on.
    let after = owner.send_text(&room_id, "після").await;
    receives(&mut owners_feed, &after).await;
    // And the dropped member cannot come back.
    match tokio_tungstenite::connect_async(url(member)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("the upgrade must be refused: {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_member_kicked_from_a_private_channel_is_dropped_from_its_feed() {
    let bridge = Bridge::start().await;
    let bob = MatrixUser::register("bob").await;
    let carol = MatrixUser::register("carol").await;
    dropped_from_feed(env().bridge_addr, &bob, &carol, async |room_id: &str| {
        bob.post(
            &format!("/v3/rooms/{}/kick", encode(room_id)),
            json!({"user_id": carol.user_id, "reason": "досить"}),
        )
        .await
        .expect("kick");
    })
    .await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_member_who_leaves_a_private_channel_is_dropped_from_its_feed() {
    let bridge = Bridge::start().await;
    let bob = MatrixUser::register("bob").await;
    let carol = MatrixUser::register("carol").await;
    dropped_from_feed(env().bridge_addr, &bob, &carol, async |room_id: &str| {
        carol.leave(room_id).await;
    })
    .await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_member_banned_from_a_private_channel_is_dropped_from_its_feed_on_an_api_only_instance() {
    let nats = nats_url();
    let bridge = Bridge::start_with(&[("NATS_URL", &nats)]).await;
    let instance = ApiInstance::start(&nats).await;
    let bob = MatrixUser::register("bob").await;
    let carol = MatrixUser::register("carol").await;
    dropped_from_feed(instance.addr, &bob, &carol, async |room_id: &str| {
        bob.post(
            &format!("/v3/rooms/{}/ban", encode(room_id)),
            json!({"user_id": carol.user_id, "reason": "назавжди"}),
        )
        .await
        .expect("ban");
    })
    .await;
    instance.stop().await;
    bridge.stop().await;
}
