//! The messaging walk-through of the README, end to end: a user sends through the API as
//! herself, a Matrix client answers in a thread and reacts, and the API's history, search
//! and the channel's WebSocket show all of it.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Bridge, MatrixUser, api, encode, env, eventually, jwt, unique, until_frame};

#[tokio::test]
async fn a_message_sent_through_the_api_is_the_users_own_and_element_replies_are_indexed() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let alice_jwt = jwt(&format!("user:{}", alice.localpart()), &[]);
    let slug = unique("chat");

    // Alice creates a channel: she is joined and its admin.
    // A public channel of no microDAO is a city room: an admin makes it.
    let admin_jwt = jwt(&format!("user:{}", alice.localpart()), &["admin"]);
    let (status, channel) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(&admin_jwt),
        Some(json!({"slug": slug, "name": "Чат", "visibility": "public"})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    assert_eq!(channel["id"], format!("room_city_{slug}"));
    let room_id = channel["matrix_room_id"].as_str().expect("room").to_owned();
    let levels = alice
        .state(&room_id, "m.room.power_levels")
        .await
        .expect("alice is in the room");
    assert_eq!(levels["users"][&alice.user_id], 100, "{levels}");

    // The channel's live feed, opened before anything is said.
    let url = format!(
        "ws://{}/ws/messaging/{slug}?token={alice_jwt}",
        env().bridge_addr
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("ws");

    // Alice speaks through the API; Synapse has it from her, not from a bot.
    let path = format!("/api/messaging/channels/room_city_{slug}/messages");
    let (status, sent) = api(
        Method::POST,
        &path,
        Some(&alice_jwt),
        Some(json!({"text": "Привіт, місто!"})),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let event_id = sent["matrix_event_id"].as_str().unwrap().to_owned();
    assert_eq!(sent["sender_id"], format!("user:{}", alice.localpart()));
    assert_eq!(sent["sender_type"], "human");
    assert_eq!(sent["content_preview"], "Привіт, місто!");
    let event = alice
        .get(&format!(
            "/v3/rooms/{}/event/{}",
            encode(&room_id),
            encode(&event_id)
        ))
        .await
        .expect("the event in Synapse");
    assert_eq!(event["sender"], alice.user_id.as_str());
    let created = until_frame(&mut socket, "message.created", |f| {
        f["type"] == "message.created" && f["message"]["matrix_event_id"] == event_id.as_str()
    })
    .await;
    assert_eq!(created["message"]["content_preview"], "Привіт, місто!");

    // Bob, in a Matrix client, answers in a thread and reacts.
    let bob = MatrixUser::register("bob").await;
    bob.join(&room_id).await.expect("bob joins");
    let reply = bob
        .send(
            &room_id,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "Вітаю!",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": event_id,
                                    "is_falling_back": true,
                                    "m.in_reply_to": {"event_id": event_id}}}),
        )
        .await
        .expect("thread reply");
    bob.send(
        &room_id,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": "👍"}}),
    )
    .await
    .expect("reaction");
    let threaded = until_frame(&mut socket, "the thread reply", |f| {
        f["type"] == "message.created" && f["message"]["matrix_event_id"] == reply.as_str()
    })
    .await;
    assert_eq!(threaded["message"]["thread_root"], event_id.as_str());
    let reacted = until_frame(&mut socket, "the reaction", |f| {
        f["type"] == "reaction.updated"
    })
    .await;
    assert_eq!(
        (reacted["key"].as_str(), reacted["count"].as_i64()),
        (Some("👍"), Some(1))
    );

    // The history: newest first, each message once, the reaction counted.
    let (status, history) = api(Method::GET, &path, Some(&alice_jwt), None).await;
    assert_eq!(status, 200, "{history}");
    let messages = history["messages"].as_array().unwrap();
    let ids: Vec<&str> = messages
        .iter()
        .map(|m| m["matrix_event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [reply.as_str(), event_id.as_str()], "{history}");
    assert_eq!(messages[0]["thread_root"], event_id.as_str());
    assert_eq!(
        messages[1]["reactions"],
        json!([{"key": "👍", "count": 1, "mine": false}])
    );
    assert_eq!(history["next_cursor"], Value::Null);

    // Search finds the Ukrainian text once the indexer has run.
    let found = eventually("the message searchable", || {
        let token = alice_jwt.clone();
        let slug = slug.clone();
        async move {
            let (_, body) = api(
                Method::GET,
                &format!(
                    "/api/messaging/search?q=%D0%BC%D1%96%D1%81%D1%82%D0%BE&channel_id={slug}"
                ),
                Some(&token),
                None,
            )
            .await;
            body["results"]
                .as_array()
                .filter(|r| !r.is_empty())
                .cloned()
        }
    })
    .await;
    assert_eq!(found[0]["matrix_event_id"], event_id.as_str());
    assert!(
        found[0]["highlight"]
            .as_str()
            .unwrap()
            .contains("<b>місто</b>"),
        "{found:?}"
    );
    bridge.stop().await;
}
