//! Leaving and removing members, and pins, through the messaging API against the real
//! stack: what the API does shows in Synapse's room state, what Matrix clients do shows in
//! the API, and the platform hears of it on NATS and the channel's socket.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    Bridge, MatrixSync, MatrixUser, api, encode, env, eventually, jwt, nats_url, start_synapse,
    stop_synapse, typing_event, unique, until_frame,
};

fn token_of(user: &MatrixUser) -> String {
    jwt(&format!("user:{}", user.localpart()), &[])
}

/// A public channel `owner` creates (its admin); its slug and Matrix room.
async fn channel(owner: &MatrixUser) -> (String, String) {
    let slug = unique("ch");
    let (status, created) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(&token_of(owner)),
        Some(json!({"slug": slug, "name": "Канал", "visibility": "public", "microdao_id": "microdao:7"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    (slug, created["matrix_room_id"].as_str().unwrap().to_owned())
}

async fn membership_in_synapse(viewer: &MatrixUser, room_id: &str, user: &MatrixUser) -> Value {
    viewer
        .get(&format!(
            "/v3/rooms/{}/state/m.room.member/{}",
            encode(room_id),
            encode(&user.user_id)
        ))
        .await
        .expect("the member event")
}

async fn membership_listed(token: &str, slug: &str, user: &MatrixUser) -> Option<String> {
    let (status, list) = api(
        Method::GET,
        &format!("/api/messaging/channels/{slug}/members"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    list["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["matrix_user_id"] == user.user_id.as_str())
        .map(|m| m["membership"].as_str().unwrap().to_owned())
}

async fn remove(token: &str, slug: &str, member: &MatrixUser, query: &str) -> (u16, Value) {
    api(
        Method::DELETE,
        &format!(
            "/api/messaging/channels/{slug}/members/user:{}{query}",
            member.localpart()
        ),
        Some(token),
        None,
    )
    .await
}

#[tokio::test]
async fn leaving_kicking_and_banning_show_in_synapse_the_members_list_and_on_nats() {
    let nats = async_nats::connect(&nats_url())
        .await
        .expect("NATS reachable");
    let mut announced = nats.subscribe("messaging.member.>").await.unwrap();
    nats.flush().await.unwrap();
    let bridge = Bridge::start_with(&[("NATS_URL", &nats_url())]).await;
    let alice = MatrixUser::register("alice").await;
    let (bob, carol, dave) = (
        MatrixUser::register("bob").await,
        MatrixUser::register("carol").await,
        MatrixUser::register("dave").await,
    );
    let (slug, room_id) = channel(&alice).await;
    for user in [&bob, &carol, &dave] {
        user.join(&room_id).await.unwrap();
    }
    let alice_jwt = token_of(&alice);
    eventually("the three listed as joined", || async {
        let mut all = true;
        for user in [&bob, &carol, &dave] {
            all &= membership_listed(&alice_jwt, &slug, user).await.as_deref() == Some("join");
        }
        all.then_some(())
    })
    .await;

    // Alice (the channel's admin) kicks Bob and bans Carol; Dave leaves on his own.
    let (status, kicked) = remove(&alice_jwt, &slug, &bob, "?reason=off%20topic").await;
    assert_eq!(
        (status, kicked["membership"].as_str()),
        (200, Some("leave")),
        "{kicked}"
    );
    let (status, banned) = remove(&alice_jwt, &slug, &carol, "?ban=true&reason=spam").await;
    assert_eq!(
        (status, banned["membership"].as_str()),
        (200, Some("ban")),
        "{banned}"
    );
    let (status, left) = remove(&token_of(&dave), &slug, &dave, "").await;
    assert_eq!(
        (status, left["membership"].as_str()),
        (200, Some("leave")),
        "{left}"
    );

    // Synapse's room state says so, with who did it and why.
    let bob_member = membership_in_synapse(&alice, &room_id, &bob).await;
    assert_eq!(bob_member["membership"], "leave", "{bob_member}");
    assert_eq!(bob_member["reason"], "off topic", "{bob_member}");
    let carol_member = membership_in_synapse(&alice, &room_id, &carol).await;
    assert_eq!(carol_member["membership"], "ban", "{carol_member}");
    assert_eq!(carol_member["reason"], "spam", "{carol_member}");
    assert_eq!(
        membership_in_synapse(&alice, &room_id, &dave).await["membership"],
        "leave"
    );
    // The members list follows Synapse's push.
    eventually("the members list follows", || async {
        let listed = (
            membership_listed(&alice_jwt, &slug, &bob).await,
            membership_listed(&alice_jwt, &slug, &carol).await,
            membership_listed(&alice_jwt, &slug, &dave).await,
        );
        (listed
            == (
                Some("leave".to_owned()),
                Some("ban".to_owned()),
                Some("leave".to_owned()),
            ))
            .then_some(())
    })
    .await;
    // Carol, banned, cannot come back; Bob, kicked, can.
    assert_eq!(
        carol.join(&room_id).await.unwrap_err().status,
        reqwest::StatusCode::FORBIDDEN
    );
    bob.join(&room_id)
        .await
        .expect("a kicked member may rejoin");

    // Bob (power 0) may not remove Alice: Synapse refuses, the API says 403, nothing moves.
    let (status, refused) = remove(&token_of(&bob), &slug, &alice, "").await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (403, Some("forbidden")),
        "{refused}"
    );
    assert_eq!(
        membership_in_synapse(&bob, &room_id, &alice).await["membership"],
        "join"
    );
    // One does not ban oneself; a member id must name a user or an agent.
    let (status, body) = remove(&token_of(&bob), &slug, &bob, "?ban=true").await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("ban")),
        "{body}"
    );
    let (status, body) = api(
        Method::DELETE,
        &format!("/api/messaging/channels/{slug}/members/bob"),
        Some(&alice_jwt),
        None,
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("member_id")),
        "{body}"
    );

    // The platform heard of the three, and of nothing refused.
    let mut heard = Vec::new();
    while heard.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(10), announced.next())
            .await
            .expect("messaging.member.* on NATS")
            .unwrap();
        let payload: Value = serde_json::from_slice(&message.payload).unwrap();
        if payload["channel_id"] == format!("room_city_{slug}") {
            heard.push((message.subject.to_string(), payload));
        }
    }
    let find = |who: &MatrixUser| {
        heard
            .iter()
            .find(|(_, p)| p["member_id"] == format!("user:{}", who.localpart()))
            .unwrap_or_else(|| panic!("{} announced: {heard:?}", who.localpart()))
    };
    let (subject, payload) = find(&bob);
    assert_eq!(subject, "messaging.member.removed");
    assert_eq!(payload["ban"], false);
    assert_eq!(payload["removed_by"], format!("user:{}", alice.localpart()));
    let (subject, payload) = find(&carol);
    assert_eq!(subject, "messaging.member.removed");
    assert_eq!(payload["ban"], true);
    let (subject, payload) = find(&dave);
    assert_eq!(subject, "messaging.member.left");
    assert_eq!(payload["type"], "member.left");
    bridge.stop().await;
}

async fn pins(token: &str, slug: &str) -> Value {
    let (status, pins) = api(
        Method::GET,
        &format!("/api/messaging/channels/{slug}/pins"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{pins}");
    pins
}

#[tokio::test]
async fn pins_made_through_the_api_and_in_matrix_clients_are_one_list() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let bob = MatrixUser::register("bob").await;
    let (slug, room_id) = channel(&alice).await;
    bob.join(&room_id).await.unwrap();
    let alice_jwt = token_of(&alice);
    let mut sent = Vec::new();
    for text in ["перше", "друге"] {
        let (status, message) = api(
            Method::POST,
            &format!("/api/messaging/channels/{slug}/messages"),
            Some(&alice_jwt),
            Some(json!({"text": text})),
        )
        .await;
        assert_eq!(status, 201, "{message}");
        sent.push(message["matrix_event_id"].as_str().unwrap().to_owned());
    }
    let (first, second) = (&sent[0], &sent[1]);
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/ws/messaging/{slug}?token={alice_jwt}",
        env().bridge_addr
    ))
    .await
    .expect("ws");

    // Alice pins the first message through the API: it is in the room's state.
    let pin_path = |event: &str| format!("/api/messaging/channels/{slug}/pins/{}", encode(event));
    let (status, pinned) = api(Method::PUT, &pin_path(first), Some(&alice_jwt), None).await;
    assert_eq!(status, 200, "{pinned}");
    assert_eq!(pinned["pinned"], json!([first]));
    assert_eq!(pinned["messages"][0]["content_preview"], "перше");
    let state = alice.state(&room_id, "m.room.pinned_events").await.unwrap();
    assert_eq!(state["pinned"], json!([first]));
    // Pinning it again changes nothing.
    let (status, again) = api(Method::PUT, &pin_path(first), Some(&alice_jwt), None).await;
    assert_eq!((status, &again["pinned"]), (200, &json!([first])));

    // Alice pins the second in her Matrix client: the API and the socket have both.
    alice
        .put(
            &format!("/v3/rooms/{}/state/m.room.pinned_events/", encode(&room_id)),
            json!({"pinned": [first, second]}),
        )
        .await
        .unwrap();
    let frame = until_frame(&mut socket, "pins.updated", |f| {
        f["type"] == "pins.updated" && f["pinned"] == json!([first, second])
    })
    .await;
    assert_eq!(frame["channel_id"], format!("room_city_{slug}"));
    let listed = pins(&alice_jwt, &slug).await;
    assert_eq!(listed["pinned"], json!([first, second]));
    let previews: Vec<&Value> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["content_preview"])
        .collect();
    assert_eq!(previews, [&json!("перше"), &json!("друге")]);
    let (_, history) = api(
        Method::GET,
        &format!("/api/messaging/channels/{slug}/messages"),
        Some(&alice_jwt),
        None,
    )
    .await;
    assert!(
        history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["pinned"] == true),
        "{history}"
    );

    // Bob (power 0) may not pin: the room's power levels say so, through Synapse.
    let (status, refused) = api(
        Method::DELETE,
        &pin_path(first),
        Some(&token_of(&bob)),
        None,
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (403, Some("forbidden")),
        "{refused}"
    );
    // A message that is not the channel's is no pin.
    let (status, _) = api(
        Method::PUT,
        &pin_path("$nope:example.org"),
        Some(&alice_jwt),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Alice unpins the first through the API: Synapse and the API both drop it.
    let (status, unpinned) = api(Method::DELETE, &pin_path(first), Some(&alice_jwt), None).await;
    assert_eq!(
        (status, &unpinned["pinned"]),
        (200, &json!([second])),
        "{unpinned}"
    );
    let state = alice.state(&room_id, "m.room.pinned_events").await.unwrap();
    assert_eq!(state["pinned"], json!([second]));
    eventually("the index has the unpin", || async {
        (pins(&alice_jwt, &slug).await["pinned"] == json!([second])).then_some(())
    })
    .await;
    bridge.stop().await;
}

#[tokio::test]
async fn with_synapse_down_pins_removals_receipts_and_typing_answer_503_and_change_nothing() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let bob = MatrixUser::register("bob").await;
    let (slug, room_id) = channel(&alice).await;
    bob.join(&room_id).await.unwrap();
    let alice_jwt = token_of(&alice);
    let (status, sent) = api(
        Method::POST,
        &format!("/api/messaging/channels/{slug}/messages"),
        Some(&alice_jwt),
        Some(json!({"text": "pin me later"})),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let event_id = sent["matrix_event_id"].as_str().unwrap().to_owned();
    let base = format!("/api/messaging/channels/{slug}");
    let pin = format!("{base}/pins/{}", encode(&event_id));

    stop_synapse().await;
    for (method, path, body) in [
        (Method::PUT, pin.clone(), None),
        (
            Method::DELETE,
            format!("{base}/members/user:{}", bob.localpart()),
            None,
        ),
        (
            Method::POST,
            format!("{base}/read"),
            Some(json!({"event_id": event_id})),
        ),
        (
            Method::POST,
            format!("{base}/typing"),
            Some(json!({"typing": true})),
        ),
    ] {
        let (status, answer) = api(method.clone(), &path, Some(&alice_jwt), body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (503, Some("matrix_unavailable")),
            "{method} {path}: {answer}"
        );
    }
    let removed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE subject LIKE 'messaging.member.%' AND channel_id = $1",
    )
    .bind(format!("room_city_{slug}"))
    .fetch_one(bridge.pool())
    .await
    .unwrap();
    assert_eq!(removed, 0, "nothing announced that Synapse did not do");
    let (_, list) = api(
        Method::GET,
        "/api/messaging/channels",
        Some(&alice_jwt),
        None,
    )
    .await;
    let entry = list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["slug"] == slug.as_str())
        .cloned()
        .expect("the channel listed");
    assert!(
        entry["last_read_event_id"] != event_id.as_str(),
        "no read position Synapse has not got: {entry}"
    );
    start_synapse().await;

    // Back: the pin and the typing that failed go through at once (a "typing" that never
    // reached Synapse does not hold the throttle).
    let mut bobs_sync = MatrixSync::start(&bob, &room_id).await;
    let (status, answer) = api(
        Method::POST,
        &format!("{base}/typing"),
        Some(&alice_jwt),
        Some(json!({"typing": true})),
    )
    .await;
    assert_eq!(status, 204, "{answer}");
    bobs_sync
        .until("Alice typing after Synapse came back", |e| {
            typing_event(e, &alice.user_id, true)
        })
        .await;
    let (status, pinned) = api(Method::PUT, &pin, Some(&alice_jwt), None).await;
    assert_eq!(
        (status, &pinned["pinned"]),
        (200, &json!([event_id])),
        "{pinned}"
    );
    bridge.stop().await;
}
