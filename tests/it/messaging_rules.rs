//! Messaging rules against the real stack: who may read and write what, idempotent sends,
//! agents, edits, deletions and reactions from both sides, confidential channels, limits,
//! history pages, typing.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    Bridge, GATEWAY_SECRET, MatrixUser, api, encode, env, eventually, jwt, start_synapse,
    stop_synapse, unique,
};

fn token_of(user: &MatrixUser) -> String {
    jwt(&format!("user:{}", user.localpart()), &[])
}

/// Creates a channel as `owner` (an admin: a public channel of no microDAO is a city
/// room); its slug and Matrix room id.
async fn channel(owner: &MatrixUser, extra: Value) -> (String, String) {
    let slug = unique("ch");
    let mut body = json!({"slug": slug, "name": "Канал", "visibility": "public"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, created) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(&jwt(&format!("user:{}", owner.localpart()), &["admin"])),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    (slug, created["matrix_room_id"].as_str().unwrap().to_owned())
}

async fn send(token: &str, slug: &str, body: Value) -> (u16, Value) {
    api(
        Method::POST,
        &format!("/api/messaging/channels/{slug}/messages"),
        Some(token),
        Some(body),
    )
    .await
}

async fn history(token: &str, slug: &str, query: &str) -> Value {
    let (status, body) = api(
        Method::GET,
        &format!("/api/messaging/channels/{slug}/messages{query}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The indexed message `event_id` once `check` holds for it.
async fn indexed(token: &str, slug: &str, event_id: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("{event_id} indexed as expected"), || async {
        let page = history(token, slug, "?limit=100").await;
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["matrix_event_id"] == event_id && check(m))
            .cloned()
    })
    .await
}

/// Matrix `/messages` of a room as `user`: the events' (type, sender, content).
async fn timeline(user: &MatrixUser, room_id: &str) -> Vec<Value> {
    let page = user
        .get(&format!(
            "/v3/rooms/{}/messages?dir=b&limit=100",
            encode(room_id)
        ))
        .await
        .expect("room messages");
    page["chunk"].as_array().unwrap().clone()
}

#[tokio::test]
async fn private_channels_are_for_their_members() {
    let bridge = Bridge::start().await;
    let bob = MatrixUser::register("bob").await;
    let carol = MatrixUser::register("carol").await;
    let (slug, _) = channel(&bob, json!({"visibility": "private"})).await;
    let (status, sent) = send(
        &token_of(&bob),
        &slug,
        json!({"text": "таємниця secret plan"}),
    )
    .await;
    assert_eq!(status, 201, "{sent}");

    let carol_jwt = token_of(&carol);
    for path in [
        format!("/api/messaging/channels/{slug}"),
        format!("/api/messaging/channels/{slug}/messages"),
        format!("/api/messaging/channels/{slug}/members"),
    ] {
        let (status, body) = api(Method::GET, &path, Some(&carol_jwt), None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"], "forbidden");
    }
    let (status, body) = send(&carol_jwt, &slug, json!({"text": "let me in"})).await;
    assert_eq!(status, 403, "{body}");
    let url = format!(
        "ws://{}/ws/messaging/{slug}?token={carol_jwt}",
        env().bridge_addr
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("the upgrade must be refused: {:?}", other.map(|_| ())),
    }
    let (status, _) = api(
        Method::GET,
        &format!("/api/messaging/channels/{slug}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);

    let listed = |token: String| {
        let slug = slug.clone();
        async move {
            let (_, body) = api(Method::GET, "/api/messaging/channels", Some(&token), None).await;
            body["channels"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["slug"] == slug.as_str())
        }
    };
    assert!(!listed(carol_jwt.clone()).await, "not listed to others");
    assert!(listed(token_of(&bob)).await, "listed to its member");
    assert!(
        listed(jwt("user:someadmin", &["admin"])).await,
        "listed to admins"
    );

    // Search: found by the member once indexed, never by others.
    let bob_jwt = token_of(&bob);
    eventually("searchable by its member", || async {
        let (_, body) = api(
            Method::GET,
            "/api/messaging/search?q=secret",
            Some(&bob_jwt),
            None,
        )
        .await;
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["matrix_event_id"] == sent["matrix_event_id"])
            .then_some(())
    })
    .await;
    let (_, body) = api(
        Method::GET,
        "/api/messaging/search?q=secret",
        Some(&carol_jwt),
        None,
    )
    .await;
    assert!(
        !body["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["matrix_event_id"] == sent["matrix_event_id"]),
        "{body}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_replayed_send_with_the_same_idempotency_key_sends_once() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let (slug, room_id) = channel(&alice, json!({})).await;
    let key = unique("key");
    let mut first = None;
    for _ in 0..3 {
        let response = reqwest::Client::new()
            .post(format!(
                "http://{}/api/messaging/channels/{slug}/messages",
                env().bridge_addr
            ))
            .bearer_auth(token_of(&alice))
            .header("Idempotency-Key", &key)
            .json(&json!({"text": "once only"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        let event_id = body["matrix_event_id"].as_str().unwrap().to_owned();
        assert_eq!(first.get_or_insert(event_id.clone()), &event_id);
    }
    let in_synapse = timeline(&alice, &room_id)
        .await
        .into_iter()
        .filter(|e| e["content"]["body"] == "once only")
        .count();
    assert_eq!(in_synapse, 1, "Synapse holds one such event");
    let page = history(&token_of(&alice), &slug, "").await;
    let indexed = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["content_preview"] == "once only")
        .count();
    assert_eq!(indexed, 1);

    // The same key for a message to another channel is a mistake, not a replay.
    let (other, _) = channel(&alice, json!({})).await;
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/messaging/channels/{other}/messages",
            env().bridge_addr
        ))
        .bearer_auth(token_of(&alice))
        .header("Idempotency-Key", &key)
        .json(&json!({"text": "somewhere else"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "idempotency_key_reused", "{body}");
    bridge.stop().await;
}

#[tokio::test]
async fn only_a_room_admin_gives_roles() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let bob = MatrixUser::register("bob").await;
    let (slug, room_id) = channel(&alice, json!({})).await;
    bob.join(&room_id).await.unwrap();
    let invite = |token: String, member: String, role: &'static str| {
        let slug = slug.clone();
        async move {
            api(
                Method::POST,
                &format!("/api/messaging/channels/{slug}/members"),
                Some(&token),
                Some(json!({"member_id": member, "role": role})),
            )
            .await
        }
    };
    let carol = MatrixUser::register("carol").await;
    let dave = MatrixUser::register("dave").await;
    let user_of = |u: &MatrixUser| format!("user:{}", u.localpart());

    // Bob, a member (power 0), may not make anyone an admin or a moderator.
    for role in ["admin", "moderator"] {
        let (status, body) = invite(token_of(&bob), user_of(&dave), role).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden")),
            "{body}"
        );
        assert!(
            body["detail"].as_str().unwrap().contains("power level"),
            "refused by the bridge before anything is sent: {body}"
        );
    }
    let levels = alice.state(&room_id, "m.room.power_levels").await.unwrap();
    assert!(levels["users"][&dave.user_id].is_null(), "{levels}");

    // Alice, the channel's creator and admin, may.
    let (status, body) = invite(token_of(&alice), user_of(&carol), "moderator").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["role"], "moderator");
    let levels = alice.state(&room_id, "m.room.power_levels").await.unwrap();
    assert_eq!(levels["users"][&carol.user_id], 50, "{levels}");
    // A plain invitation is Synapse's to allow, as in Element: the room's invite level is
    // 50, so Bob's is refused.
    let (status, body) = invite(token_of(&bob), user_of(&dave), "member").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn agents_post_only_where_they_have_joined() {
    let bridge = Bridge::start().await;
    let name = unique("sofia");
    sqlx::query("INSERT INTO agents (id, display_name) VALUES ($1, 'Sofia')")
        .bind(format!("agent:{name}"))
        .execute(bridge.pool())
        .await
        .unwrap();
    let alice = MatrixUser::register("alice").await;
    let (slug, _) = channel(&alice, json!({})).await;
    let post = |channel_id: String, agent: String| async move {
        api(
            Method::POST,
            &format!("/internal/agents/{agent}/post-to-channel"),
            Some(GATEWAY_SECRET),
            Some(json!({"channel_id": channel_id, "text": "Я Софія"})),
        )
        .await
    };
    let agent = format!("agent:{name}");
    let (status, body) = post(format!("room_city_{slug}"), agent.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("not_a_member")),
        "{body}"
    );
    let (status, _) = post(
        format!("room_city_{slug}"),
        format!("agent:{}", unique("ghost")),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(format!("room_city_{}", unique("nowhere")), agent.clone()).await;
    assert_eq!(status, 404);

    // Alice invites the agent: it accepts on its own.
    let (status, body) = api(
        Method::POST,
        &format!("/api/messaging/channels/{slug}/members"),
        Some(&token_of(&alice)),
        Some(json!({"member_id": agent})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let alice_jwt = token_of(&alice);
    eventually("the agent a joined member", || async {
        let (_, body) = api(
            Method::GET,
            &format!("/api/messaging/channels/{slug}/members"),
            Some(&alice_jwt),
            None,
        )
        .await;
        body["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["member_id"] == agent.as_str() && m["membership"] == "join")
            .then_some(())
    })
    .await;
    let (status, message) = post(slug.clone(), agent.clone()).await;
    assert_eq!(status, 201, "{message}");
    assert_eq!(message["sender_type"], "agent");
    assert_eq!(message["sender_id"], agent.as_str());
    assert_eq!(message["msgtype"], "m.notice");
    assert_eq!(
        message["sender_matrix_id"],
        format!("@agent_{name}:{}", env().server_name)
    );
    bridge.stop().await;
}

#[tokio::test]
async fn edits_deletions_and_reactions_from_the_api_and_from_element() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let bob = MatrixUser::register("bob").await;
    let (slug, room_id) = channel(&alice, json!({})).await;
    let (alice_jwt, bob_jwt) = (token_of(&alice), token_of(&bob));
    let (_, sent) = send(&alice_jwt, &slug, json!({"text": "first draft"})).await;
    let event_id = sent["matrix_event_id"].as_str().unwrap().to_owned();
    let message_path = format!(
        "/api/messaging/channels/{slug}/messages/{}",
        encode(&event_id)
    );

    let (status, body) = api(
        Method::PATCH,
        &message_path,
        Some(&bob_jwt),
        Some(json!({"text": "hijacked"})),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (403, Some("not_author")));
    let (status, edited) = api(
        Method::PATCH,
        &message_path,
        Some(&alice_jwt),
        Some(json!({"text": "final text"})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["content_preview"], "final text");
    assert!(edited["edited_at"].is_string());
    let replace = timeline(&alice, &room_id)
        .await
        .into_iter()
        .find(|e| e["content"]["m.relates_to"]["rel_type"] == "m.replace")
        .expect("an m.replace in Synapse");
    assert_eq!(replace["sender"], alice.user_id.as_str());

    // Bob reacts through the API (joining the public channel first), then takes it back.
    let (status, reacted) = api(
        Method::POST,
        &format!("{message_path}/reactions"),
        Some(&bob_jwt),
        Some(json!({"key": "🔥"})),
    )
    .await;
    assert_eq!(status, 200, "{reacted}");
    assert_eq!(
        reacted["reactions"],
        json!([{"key": "🔥", "count": 1, "mine": true}])
    );
    let (status, unreacted) = api(
        Method::DELETE,
        &format!("{message_path}/reactions/{}", encode("🔥")),
        Some(&bob_jwt),
        None,
    )
    .await;
    assert_eq!(status, 200, "{unreacted}");
    assert_eq!(unreacted["reactions"], json!([]));

    // Bob may not delete Alice's message; she may.
    let (status, _) = api(Method::DELETE, &message_path, Some(&bob_jwt), None).await;
    assert_eq!(status, 403);
    let (status, deleted) = api(Method::DELETE, &message_path, Some(&alice_jwt), None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        (
            deleted["redacted"].as_bool(),
            deleted["content_preview"].as_str()
        ),
        (Some(true), Some(""))
    );

    // The same from Element: an edit, a reaction, a redaction.
    let from_element = alice.send_text(&room_id, "typed in Element").await;
    alice
        .send(
            &room_id,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "* fixed in Element",
                   "m.new_content": {"msgtype": "m.text", "body": "fixed in Element"},
                   "m.relates_to": {"rel_type": "m.replace", "event_id": from_element}}),
        )
        .await
        .unwrap();
    indexed(&alice_jwt, &slug, &from_element, |m| {
        m["content_preview"] == "fixed in Element" && m["edited_at"].is_string()
    })
    .await;
    bob.join(&room_id).await.unwrap();
    let reaction = bob
        .send(
            &room_id,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": from_element, "key": "👍"}}),
        )
        .await
        .unwrap();
    indexed(&alice_jwt, &slug, &from_element, |m| {
        m["reactions"] == json!([{"key": "👍", "count": 1, "mine": false}])
    })
    .await;
    bob.redact(&room_id, &reaction).await;
    indexed(&alice_jwt, &slug, &from_element, |m| {
        m["reactions"] == json!([])
    })
    .await;
    alice.redact(&room_id, &from_element).await;
    indexed(&alice_jwt, &slug, &from_element, |m| {
        m["redacted"] == true && m["content_preview"] == ""
    })
    .await;
    bridge.stop().await;
}

#[tokio::test]
async fn confidential_channels_are_indexed_as_metadata_only() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let (slug, room_id) = channel(&alice, json!({"encrypted": true})).await;
    let encryption = alice
        .state(&room_id, "m.room.encryption")
        .await
        .expect("m.room.encryption");
    assert_eq!(encryption["algorithm"], "m.megolm.v1.aes-sha2");
    let jwt_a = token_of(&alice);
    let (status, body) = send(&jwt_a, &slug, json!({"text": "no keys"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("encrypted_channel"))
    );

    // A client that sends in the clear anyway: who and when, never what.
    let event_id = alice.send_text(&room_id, "confidential words").await;
    let message = indexed(&jwt_a, &slug, &event_id, |_| true).await;
    assert_eq!(message["content_preview"], "");
    assert_eq!(message["msgtype"], Value::Null);

    // A public room encrypted later from Element: metadata only from then on.
    let (open_slug, open_room) = channel(&alice, json!({})).await;
    let before = alice.send_text(&open_room, "said in the open").await;
    alice
        .put(
            &format!("/v3/rooms/{}/state/m.room.encryption/", encode(&open_room)),
            json!({"algorithm": "m.megolm.v1.aes-sha2"}),
        )
        .await
        .unwrap();
    let after = alice.send_text(&open_room, "said after encryption").await;
    let after = indexed(&jwt_a, &open_slug, &after, |_| true).await;
    assert_eq!(after["content_preview"], "");
    let before = indexed(&jwt_a, &open_slug, &before, |_| true).await;
    assert_eq!(before["content_preview"], "said in the open");
    let (_, channel_now) = api(
        Method::GET,
        &format!("/api/messaging/channels/{open_slug}"),
        Some(&jwt_a),
        None,
    )
    .await;
    assert_eq!(channel_now["encrypted"], true);
    bridge.stop().await;
}

#[tokio::test]
async fn sends_are_limited_per_minute_and_by_length() {
    let bridge = Bridge::start_with(&[("MESSAGE_RATE_PER_MINUTE", "3")]).await;
    let alice = MatrixUser::register("alice").await;
    let (slug, _) = channel(&alice, json!({})).await;
    let jwt_a = token_of(&alice);
    let (status, body) = send(&jwt_a, &slug, json!({"text": "x".repeat(16_001)})).await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = send(&jwt_a, &slug, json!({"text": "x".repeat(16_000)})).await;
    assert_eq!(status, 201);
    for n in 0..2 {
        let (status, _) = send(&jwt_a, &slug, json!({"text": format!("{n}")})).await;
        assert_eq!(status, 201);
    }
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/messaging/channels/{slug}/messages",
            env().bridge_addr
        ))
        .bearer_auth(&jwt_a)
        .json(&json!({"text": "one too many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    bridge.stop().await;
}

#[tokio::test]
async fn without_the_puppet_registration_reads_work_and_sends_are_refused() {
    let bridge = Bridge::start_with(&[("PUPPET_REGISTRATION", "")]).await;
    let reader = jwt(&format!("user:{}", unique("reader")), &[]);
    let (status, body) = send(&reader, "general", json!({"text": "hello"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("puppeting_disabled"))
    );
    history(&reader, "general", "").await;
    bridge.stop().await;
}

#[tokio::test]
async fn microdao_channels_are_not_city_rooms() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let microdao = unique("microdao:");
    let (slug, _) = channel(&alice, json!({"microdao_id": microdao})).await;
    let (_, city) = api(Method::GET, "/api/city/rooms", None, None).await;
    assert!(
        !city
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["slug"] == slug.as_str()),
        "{city}"
    );
    let (_, listed) = api(
        Method::GET,
        &format!("/api/messaging/channels?microdao_id={}", encode(&microdao)),
        Some(&token_of(&alice)),
        None,
    )
    .await;
    let slugs: Vec<&str> = listed["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, [slug.as_str()]);
    assert_eq!(listed["channels"][0]["microdao_id"], microdao.as_str());
    bridge.stop().await;
}

#[tokio::test]
async fn history_pages_by_cursor_and_typing_is_live() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let (slug, room_id) = channel(&alice, json!({})).await;
    let jwt_a = token_of(&alice);
    let mut sent = Vec::new();
    for n in 1..=7 {
        let (_, m) = send(&jwt_a, &slug, json!({"text": format!("m{n}")})).await;
        sent.push(m["matrix_event_id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut query = "?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = history(&jwt_a, &slug, &query).await;
        pages += 1;
        seen.extend(
            page["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["matrix_event_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=3&before={cursor}"),
            None => break,
        }
    }
    sent.reverse();
    assert_eq!(seen, sent, "newest first, no overlap, nothing skipped");
    assert_eq!(pages, 3);
    // Catching up: what came after the third message.
    let third = history(&jwt_a, &slug, "?limit=100").await["messages"][4]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let after = history(&jwt_a, &slug, &format!("?after={third}")).await;
    let newer: Vec<&str> = after["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content_preview"].as_str().unwrap())
        .collect();
    assert_eq!(newer, ["m7", "m6", "m5", "m4"]);
    let (status, body) = api(
        Method::GET,
        &format!("/api/messaging/channels/{slug}/messages?before=nonsense"),
        Some(&jwt_a),
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // Typing in a Matrix client reaches the channel's WebSocket. (First, Synapse is seen
    // pushing to this bridge: after a previous bridge stopped it may be backing off.)
    let marker = alice.send_text(&room_id, "marker").await;
    indexed(&jwt_a, &slug, &marker, |_| true).await;
    let url = format!(
        "ws://{}/ws/messaging/{slug}?token={jwt_a}",
        env().bridge_addr
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    socket.send(Message::text("ping")).await.unwrap();
    alice.typing(&room_id, true).await;
    let (mut pong, mut typing) = (false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(pong && typing) {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("pong and typing within 30 s")
            .unwrap()
            .unwrap();
        let Message::Text(text) = frame else { continue };
        if text.as_str() == "pong" {
            pong = true;
        } else if let Ok(v) = serde_json::from_str::<Value>(&text)
            && v["type"] == "typing"
        {
            typing = v["user_ids"] == json!([alice.user_id]);
        }
    }
    bridge.stop().await;
}

#[tokio::test]
async fn every_indexed_message_is_announced_on_nats_and_unknown_users_are_registered() {
    let nats = std::env::var("CITY_BRIDGE_TEST_NATS_URL")
        .expect("CITY_BRIDGE_TEST_NATS_URL (scripts/test.sh sets it)");
    let client = async_nats::connect(&nats).await.expect("NATS reachable");
    let mut created = client.subscribe("messaging.message.created").await.unwrap();
    let mut channels = client.subscribe("messaging.channel.created").await.unwrap();
    client.flush().await.unwrap();
    let bridge = Bridge::start_with(&[("NATS_URL", &nats)]).await;
    let alice = MatrixUser::register("alice").await;
    let (slug, room_id) = channel(&alice, json!({"microdao_id": "microdao:7"})).await;
    let announced = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = channels.next().await.unwrap();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            if v["channel_id"] == format!("room_city_{slug}") {
                return v;
            }
        }
    })
    .await
    .expect("messaging.channel.created");
    assert_eq!(announced["microdao_id"], "microdao:7");
    assert_eq!(announced["matrix_room_id"], room_id.as_str());
    assert_eq!(
        announced["created_by"],
        format!("user:{}", alice.localpart())
    );

    // A DAARION user Synapse has never seen speaks through the API: registered on first
    // use, and the message is theirs.
    let newcomer = unique("newcomer");
    let (status, sent) = send(
        &jwt(&format!("user:{newcomer}"), &[]),
        &slug,
        json!({"text": "перше слово"}),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let newcomer_id = format!("@{newcomer}:{}", env().server_name);
    assert_eq!(sent["sender_matrix_id"], newcomer_id.as_str());
    // And one from a Matrix client: both are announced, with the seed's payload.
    let from_client = alice.send_text(&room_id, "from a client").await;
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while seen.len() < 2 {
            let m = created.next().await.unwrap();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            if v["channel_id"] == format!("room_city_{slug}") {
                seen.push(v);
            }
        }
    })
    .await
    .expect("two messaging.message.created");
    assert_eq!(seen[0]["matrix_event_id"], sent["matrix_event_id"]);
    assert_eq!(seen[0]["sender_id"], format!("user:{newcomer}"));
    assert_eq!(seen[0]["preview"], "перше слово");
    assert_eq!(seen[0]["sender_type"], "human");
    assert!(seen[0]["created_at"].is_string());
    assert_eq!(seen[1]["matrix_event_id"], from_client.as_str());
    bridge.stop().await;
}

#[tokio::test]
async fn speaking_in_a_city_room_without_its_matrix_room_yet_creates_it() {
    let bridge = Bridge::start().await;
    let slug = crate::support::city_room(bridge.pool(), "Площа").await;
    let (status, sent) = send(
        &jwt(&format!("user:{}", unique("early")), &[]),
        &slug,
        json!({"text": "першим"}),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let mapped: Option<String> =
        sqlx::query_scalar("SELECT matrix_room_id FROM city_rooms WHERE slug = $1")
            .bind(&slug)
            .fetch_one(bridge.pool())
            .await
            .unwrap();
    assert!(mapped.is_some(), "the Matrix room was created and recorded");
    bridge.stop().await;
}

#[tokio::test]
async fn a_channel_created_while_synapse_is_down_is_its_creators_once_it_exists() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let slug = unique("down");
    stop_synapse().await;
    let (status, created) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(&token_of(&alice)),
        Some(json!({"slug": slug, "name": "Поки офлайн", "visibility": "private"})),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    assert!(created["matrix_room_id"].is_null(), "{created}");
    // (Looked at while Synapse is still down: the bridge goes on running while it starts.)
    let no_event: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE subject = 'messaging.channel.created' AND channel_id = $1",
    )
    .bind(format!("room_city_{slug}"))
    .fetch_one(bridge.pool())
    .await
    .unwrap();
    assert_eq!(
        no_event, 0,
        "no channel.created before the channel has its room"
    );
    start_synapse().await;

    // The reconciler makes the room; Alice ends up its admin and a member, and may read
    // her private channel.
    let alice_jwt = token_of(&alice);
    let room_id: String = eventually("the creator joined her channel", || async {
        let (status, channel) = api(
            Method::GET,
            &format!("/api/messaging/channels/{slug}"),
            Some(&alice_jwt),
            None,
        )
        .await;
        let room_id = channel["matrix_room_id"].as_str()?.to_owned();
        let joined = alice.state(&room_id, "m.room.create").await.is_ok();
        (status == 200 && joined).then_some(room_id)
    })
    .await;
    let levels = alice.state(&room_id, "m.room.power_levels").await.unwrap();
    assert_eq!(levels["users"][&alice.user_id], 100, "{levels}");
    let payload: Value = eventually("channel.created written", || async {
        sqlx::query_scalar(
            "SELECT payload FROM outbox WHERE subject = 'messaging.channel.created' \
             AND channel_id = $1",
        )
        .bind(format!("room_city_{slug}"))
        .fetch_optional(bridge.pool())
        .await
        .unwrap()
    })
    .await;
    assert_eq!(payload["matrix_room_id"], room_id.as_str(), "{payload}");
    assert_eq!(payload["created_by"], format!("user:{}", alice.localpart()));
    bridge.stop().await;
}
