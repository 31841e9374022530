//! Read receipts, unread counts, the per-user feed and typing, against the real stack: a
//! message from a Matrix client raises Alice's unread count in the channel list and on her
//! feed; her receipt from a Matrix client clears it, and so does reading through the API
//! (Synapse then has her receipt); her typing through the API reaches a Matrix client's
//! `/sync`; her feed closes when her token expires.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    ApiInstance, Bridge, MatrixSync, MatrixUser, Socket, api, encode, env, eventually, jwt,
    jwt_expiring, nats_url, typing_event, unique, until_frame,
};

async fn open(url: String) -> Socket {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("the upgrade is accepted")
        .0
}

/// The `unread.updated` of `channel` with `count` unread.
async fn unread_frame(socket: &mut Socket, channel: &str, count: i64) -> Value {
    until_frame(
        socket,
        &format!("unread.updated {count} of {channel}"),
        |f| {
            f["type"] == "unread.updated"
                && f["channel_id"] == channel
                && f["unread_count"] == count
        },
    )
    .await
}

/// The channel list entry of `channel` as `token` sees it.
async fn listed(token: &str, channel: &str) -> Value {
    let (status, list) = api(Method::GET, "/api/messaging/channels", Some(token), None).await;
    assert_eq!(status, 200, "{list}");
    list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == channel)
        .cloned()
        .unwrap_or_else(|| panic!("{channel} listed: {list}"))
}

/// Waits until the list shows `count` unread in `channel`; the entry.
async fn listed_with(token: &str, channel: &str, count: i64) -> Value {
    eventually(&format!("{count} unread in {channel}"), || async {
        let entry = listed(token, channel).await;
        (entry["unread_count"] == count).then_some(entry)
    })
    .await
}

/// Alice (an admin, so that she may make a public city room) makes a channel through the
/// API; Bob joins it from his Matrix client. (channel id, Matrix room id).
async fn channel_with_bob(alice_admin: &str, bob: &MatrixUser) -> (String, String) {
    let slug = unique("unread");
    let (status, channel) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(alice_admin),
        Some(json!({"slug": slug, "name": "Непрочитане", "visibility": "public"})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    let room_id = channel["matrix_room_id"].as_str().unwrap().to_owned();
    bob.join(&room_id).await.expect("bob joins");
    (channel["id"].as_str().unwrap().to_owned(), room_id)
}

#[tokio::test]
async fn a_message_from_a_matrix_client_is_unread_until_alice_reads_it_in_a_client_or_the_api() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let bob = MatrixUser::register("bob").await;
    let alice_jwt = jwt(&format!("user:{}", alice.localpart()), &[]);
    let alice_admin = jwt(&format!("user:{}", alice.localpart()), &["admin"]);
    let mut feed = open(format!(
        "ws://{}/ws/messaging?token={alice_jwt}",
        env().bridge_addr
    ))
    .await;

    let (channel, room_id) = channel_with_bob(&alice_admin, &bob).await;
    until_frame(&mut feed, "channel.joined", |f| {
        f["type"] == "channel.joined" && f["channel_id"] == channel.as_str()
    })
    .await;
    let entry = listed(&alice_jwt, &channel).await;
    assert_eq!(entry["joined"], true, "{entry}");
    assert_eq!(entry["unread_count"], 0, "{entry}");
    assert_eq!(entry["last_message"], Value::Null, "{entry}");

    // Bob, in his Matrix client: a plain message, one naming Alice in its text, one
    // mentioning her through m.mentions only.
    bob.send_text(&room_id, "Добрий вечір").await;
    bob.send_text(&room_id, &format!("{}, глянь сюди", alice.localpart()))
        .await;
    let third = bob
        .send(
            &room_id,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "потрібна твоя думка",
                   "m.mentions": {"user_ids": [alice.user_id]}}),
        )
        .await
        .expect("send");
    let entry = listed_with(&alice_jwt, &channel, 3).await;
    assert_eq!(entry["mention_count"], 2, "{entry}");
    assert_eq!(entry["last_message"]["matrix_event_id"], third.as_str());
    assert_eq!(entry["last_message"]["preview"], "потрібна твоя думка");
    assert_eq!(
        entry["last_message"]["sender_matrix_id"],
        bob.user_id.as_str()
    );
    let frame = unread_frame(&mut feed, &channel, 3).await;
    assert_eq!(frame["mention_count"], 2, "{frame}");
    assert_eq!(frame["last_message"]["matrix_event_id"], third.as_str());

    // Alice reads them in her Matrix client: the receipt Synapse pushes clears the count.
    alice
        .post(
            &format!(
                "/v3/rooms/{}/receipt/m.read/{}",
                encode(&room_id),
                encode(&third)
            ),
            json!({}),
        )
        .await
        .expect("receipt");
    let entry = listed_with(&alice_jwt, &channel, 0).await;
    assert_eq!(entry["mention_count"], 0, "{entry}");
    assert_eq!(entry["last_read_event_id"], third.as_str());
    unread_frame(&mut feed, &channel, 0).await;

    // Another message; Alice reads it through the API, and Synapse has her receipt.
    let mut alices_sync = MatrixSync::start(&alice, &room_id).await;
    let fourth = bob.send_text(&room_id, "ще одне").await;
    unread_frame(&mut feed, &channel, 1).await;
    let read = format!("/api/messaging/channels/{channel}/read");
    let (status, body) = api(
        Method::POST,
        &read,
        Some(&alice_jwt),
        Some(json!({"event_id": fourth})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["unread_count"].as_i64(),
            body["last_read_event_id"].as_str()
        ),
        (Some(0), Some(fourth.as_str())),
        "{body}"
    );
    unread_frame(&mut feed, &channel, 0).await;
    let fully_read = alice
        .get(&format!(
            "/v3/user/{}/rooms/{}/account_data/m.fully_read",
            encode(&alice.user_id),
            encode(&room_id)
        ))
        .await
        .expect("m.fully_read");
    assert_eq!(fully_read["event_id"], fourth.as_str());
    alices_sync
        .until("Alice's m.read receipt", |e| {
            e["type"] == "m.receipt" && !e["content"][&fourth]["m.read"][&alice.user_id].is_null()
        })
        .await;

    // Reading an older message does not move the position back.
    let (status, body) = api(
        Method::POST,
        &read,
        Some(&alice_jwt),
        Some(json!({"event_id": third})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["last_read_event_id"], fourth.as_str(), "{body}");

    // A receipt of an event that is no message (here Alice's own topic change, after a
    // message of Bob's) reads the channel up to its last message.
    let fifth = bob.send_text(&room_id, "і ще").await;
    unread_frame(&mut feed, &channel, 1).await;
    let topic = alice
        .put(
            &format!("/v3/rooms/{}/state/m.room.topic/", encode(&room_id)),
            json!({"topic": "Про непрочитане"}),
        )
        .await
        .expect("topic");
    let topic = topic["event_id"].as_str().unwrap().to_owned();
    alice
        .post(
            &format!(
                "/v3/rooms/{}/receipt/m.read/{}",
                encode(&room_id),
                encode(&topic)
            ),
            json!({}),
        )
        .await
        .expect("receipt");
    let entry = listed_with(&alice_jwt, &channel, 0).await;
    assert_eq!(entry["last_read_event_id"], topic.as_str(), "{entry}");
    assert_eq!(entry["last_message"]["matrix_event_id"], fifth.as_str());

    // What is refused, each with a JSON error.
    for (body, want) in [
        (json!({"event_id": "not an event"}), 422),
        (json!({"event_id": "$nowhere:localhost"}), 422),
        (json!({}), 422),
    ] {
        let (status, answer) = api(Method::POST, &read, Some(&alice_jwt), Some(body)).await;
        assert_eq!(status, want, "{answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let carol = MatrixUser::register("carol").await;
    let carol_jwt = jwt(&format!("user:{}", carol.localpart()), &[]);
    let (status, answer) = api(
        Method::POST,
        &read,
        Some(&carol_jwt),
        Some(json!({"event_id": fourth})),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("not_a_member"))
    );
    let entry = listed(&carol_jwt, &channel).await;
    assert_eq!(
        (entry["joined"].as_bool(), entry["unread_count"].as_i64()),
        (Some(false), Some(0)),
        "no counts in a channel not joined: {entry}"
    );
    let (status, answer) = api(
        Method::GET,
        "/api/messaging/channels?sort=sideways",
        Some(&alice_jwt),
        None,
    )
    .await;
    assert_eq!(status, 422, "{answer}");

    // By activity, the channel with the newest message comes first.
    let (status, list) = api(
        Method::GET,
        "/api/messaging/channels?sort=activity",
        Some(&alice_jwt),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["channels"][0]["id"], channel.as_str(), "{list}");

    // The position survives a restart.
    bridge.stop().await;
    let bridge = Bridge::start().await;
    let entry = listed(&alice_jwt, &channel).await;
    assert_eq!(
        (
            entry["unread_count"].as_i64(),
            entry["last_read_event_id"].as_str()
        ),
        (Some(0), Some(topic.as_str())),
        "{entry}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn the_pages_typing_reaches_a_matrix_clients_sync() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let bob = MatrixUser::register("bob").await;
    let alice_jwt = jwt(&format!("user:{}", alice.localpart()), &[]);
    let alice_admin = jwt(&format!("user:{}", alice.localpart()), &["admin"]);
    let (channel, room_id) = channel_with_bob(&alice_admin, &bob).await;
    let typing = format!("/api/messaging/channels/{channel}/typing");
    let mut bobs_sync = MatrixSync::start(&bob, &room_id).await;

    let (status, body) = api(
        Method::POST,
        &typing,
        Some(&alice_jwt),
        Some(json!({"typing": true})),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    bobs_sync
        .until("Alice typing", |e| typing_event(e, &alice.user_id, true))
        .await;
    // Said again at once: throttled, answered the same.
    let (status, _) = api(
        Method::POST,
        &typing,
        Some(&alice_jwt),
        Some(json!({"typing": true})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = api(
        Method::POST,
        &typing,
        Some(&alice_jwt),
        Some(json!({"typing": false})),
    )
    .await;
    assert_eq!(status, 204);
    bobs_sync
        .until("Alice no longer typing", |e| {
            typing_event(e, &alice.user_id, false)
        })
        .await;

    // The same as a frame on the channel's socket.
    let mut socket = open(format!(
        "ws://{}/ws/messaging/{channel}?token={alice_jwt}",
        env().bridge_addr
    ))
    .await;
    socket
        .send(Message::text(r#"{"type":"typing","typing":true}"#))
        .await
        .unwrap();
    bobs_sync
        .until("Alice typing again, from her socket", |e| {
            typing_event(e, &alice.user_id, true)
        })
        .await;

    // Not a member: refused.
    let carol = MatrixUser::register("carol").await;
    let (status, answer) = api(
        Method::POST,
        &typing,
        Some(&jwt(&format!("user:{}", carol.localpart()), &[])),
        Some(json!({"typing": true})),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("not_a_member"))
    );
    let (status, answer) = api(
        Method::POST,
        &typing,
        Some(&alice_jwt),
        Some(json!({"typing": "yes"})),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    bridge.stop().await;
}

#[tokio::test]
async fn the_per_user_feed_is_served_by_an_api_only_instance() {
    let nats = nats_url();
    let bridge = Bridge::start_with(&[("NATS_URL", &nats)]).await;
    let instance = ApiInstance::start(&nats).await;
    let alice = MatrixUser::register("alice").await;
    let bob = MatrixUser::register("bob").await;
    let alice_jwt = jwt(&format!("user:{}", alice.localpart()), &[]);
    let alice_admin = jwt(&format!("user:{}", alice.localpart()), &["admin"]);
    let (channel, room_id) = channel_with_bob(&alice_admin, &bob).await;
    let mut feed = open(format!(
        "ws://{}/ws/messaging?token={alice_jwt}",
        instance.addr
    ))
    .await;
    let said = bob.send_text(&room_id, "через NATS").await;
    unread_frame(&mut feed, &channel, 1).await;
    let (status, body) = api(
        Method::POST,
        &format!("/api/messaging/channels/{channel}/read"),
        Some(&alice_jwt),
        Some(json!({"event_id": said})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    unread_frame(&mut feed, &channel, 0).await;
    instance.stop().await;
    bridge.stop().await;
}

#[tokio::test]
async fn the_per_user_feed_closes_with_4001_when_its_token_expires() {
    let bridge = Bridge::start().await;
    let refused = tokio_tungstenite::connect_async(format!(
        "ws://{}/ws/messaging?token=forged",
        env().bridge_addr
    ))
    .await;
    assert!(refused.is_err(), "a forged token is refused at the upgrade");
    let (token, exp) = jwt_expiring("user:expiringfeed", &[], Duration::from_secs(3));
    let mut feed = open(format!(
        "ws://{}/ws/messaging?token={token}",
        env().bridge_addr
    ))
    .await;
    feed.send(Message::text("ping")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut ponged = false;
    let close = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, feed.next())
            .await
            .expect("closed at the token's exp")
        {
            Some(Ok(Message::Text(text))) if text.as_str() == "pong" => ponged = true,
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("ended without a close frame: {other:?}"),
        }
    };
    assert!(ponged, "the feed answered before it closed");
    assert_eq!(u16::from(close.code), 4001, "{close:?}");
    assert!(chrono::Utc::now().timestamp() >= exp, "closed before exp");
    bridge.stop().await;
}

#[tokio::test]
async fn the_feed_tells_of_an_invitation_a_join_and_leaving() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let bob = MatrixUser::register("bob").await;
    let alice_jwt = jwt(&format!("user:{}", alice.localpart()), &[]);
    let bob_jwt = jwt(&format!("user:{}", bob.localpart()), &[]);
    let mut feed = open(format!(
        "ws://{}/ws/messaging?token={alice_jwt}",
        env().bridge_addr
    ))
    .await;
    let (status, channel) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(&bob_jwt),
        Some(json!({"slug": unique("private"), "name": "Тихий куток", "visibility": "private"})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    let (id, room_id) = (
        channel["id"].as_str().unwrap().to_owned(),
        channel["matrix_room_id"].as_str().unwrap().to_owned(),
    );
    let (status, invited) = api(
        Method::POST,
        &format!("/api/messaging/channels/{id}/members"),
        Some(&bob_jwt),
        Some(json!({"member_id": format!("user:{}", alice.localpart())})),
    )
    .await;
    assert_eq!(status, 201, "{invited}");
    let invite = until_frame(&mut feed, "the invitation", |f| {
        f["type"] == "invite" && f["channel_id"] == id.as_str()
    })
    .await;
    assert_eq!(invite["name"], "Тихий куток", "{invite}");

    alice.join(&room_id).await.expect("alice accepts");
    until_frame(&mut feed, "channel.joined", |f| {
        f["type"] == "channel.joined" && f["channel_id"] == id.as_str()
    })
    .await;
    unread_frame(&mut feed, &id, 0).await;
    alice.leave(&room_id).await;
    let left = until_frame(&mut feed, "channel.left", |f| {
        f["type"] == "channel.left" && f["channel_id"] == id.as_str()
    })
    .await;
    assert_eq!(left["membership"], "leave", "{left}");
    bridge.stop().await;
}
