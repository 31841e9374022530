//! Live presence: Synapse pushes presence and typing; the bridge keeps per-room counts,
//! serves them on `/ws/city/presence` and publishes them on the bus.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    Bridge, GATEWAY_SECRET, MatrixUser, alias, api, encode, env, eventually, jwt, unique,
};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect() -> Socket {
    connect_as(&jwt("user:viewer", &[])).await
}

async fn connect_as(token: &str) -> Socket {
    let url = format!("ws://{}/ws/city/presence?token={token}", env().bridge_addr,);
    tokio_tungstenite::connect_async(url)
        .await
        .expect("WebSocket connects")
        .0
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a message within 30 s")
            .expect("socket open")
            .expect("message");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

/// Reads updates until one for `slug` satisfies `check`.
async fn until(
    socket: &mut Socket,
    slug: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        let update = next_json(socket).await;
        if update["type"] == "room.presence" && update["room_slug"] == slug && check(&update) {
            return update;
        }
    }
}

async fn new_room(name: &str) -> (String, String) {
    let slug = unique("live-");
    let (status, room) = api(
        Method::POST,
        "/api/city/rooms",
        Some(GATEWAY_SECRET),
        Some(json!({"slug": slug, "name": name})),
    )
    .await;
    assert_eq!(status, 201, "{room}");
    (slug, room["matrix_room_id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn websocket_needs_a_token_and_answers_ping() {
    let bridge = Bridge::start().await;
    let url = format!("ws://{}/ws/city/presence", env().bridge_addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let bad = format!("ws://{}/ws/city/presence?token=nope", env().bridge_addr);
    match tokio_tungstenite::connect_async(bad).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401, "a bad token is refused as such")
        }
        other => panic!("expected 401, got {other:?}"),
    }

    let mut socket = connect().await;
    let snapshot = next_json(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert!(snapshot["rooms"].is_array());
    socket.send(Message::text("ping")).await.unwrap();
    loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Text(text) if text.as_str() == "pong" => break,
            Message::Text(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    bridge.stop().await;
}

#[tokio::test]
async fn online_count_and_typing_follow_matrix() {
    let bridge = Bridge::start_with(&[("ROOM_PRESENCE_THROTTLE_MS", "50")]).await;
    let (slug, room_id) = new_room("Live").await;
    let mut socket = connect().await;
    assert_eq!(next_json(&mut socket).await["type"], "snapshot");

    let alice = MatrixUser::register("alice").await;
    alice.set_presence("online").await;
    alice.join(&alias(&slug)).await.unwrap();
    let update = until(&mut socket, &slug, "alice online in the room", |u| {
        u["online_count"] == 1
    })
    .await;
    assert_eq!(update["matrix_room_id"], room_id.as_str());
    assert_eq!(update["matrix_room_alias"], alias(&slug));

    // The REST list shows the same count.
    let room = eventually("members_online in REST", || async {
        let (_, room) = api(Method::GET, &format!("/api/city/rooms/{slug}"), None, None).await;
        (room["members_online"] == 1).then_some(room)
    })
    .await;
    assert!(room["last_event"].is_string(), "{room}");

    alice.typing(&room_id, true).await;
    let update = until(&mut socket, &slug, "alice typing", |u| {
        u["typing_count"] == 1
    })
    .await;
    assert_eq!(update["typing_users"], json!([alice.user_id]));
    alice.typing(&room_id, false).await;
    until(&mut socket, &slug, "typing stopped", |u| {
        u["typing_count"] == 0
    })
    .await;

    alice.set_presence("offline").await;
    until(&mut socket, &slug, "alice offline", |u| {
        u["online_count"] == 0
    })
    .await;
    alice.set_presence("online").await;
    until(&mut socket, &slug, "alice back online", |u| {
        u["online_count"] == 1
    })
    .await;
    alice.leave(&room_id).await;
    until(&mut socket, &slug, "alice left", |u| u["online_count"] == 0).await;
    bridge.stop().await;
}

#[tokio::test]
async fn bursts_are_throttled_and_end_in_the_final_state() {
    let bridge = Bridge::start_with(&[("ROOM_PRESENCE_THROTTLE_MS", "1500")]).await;
    let (slug, room_id) = new_room("Burst").await;
    let alice = MatrixUser::register("alice").await;
    alice.join(&room_id).await.unwrap();
    // Synapse delivers to this bridge again (it backs off from an appservice that was
    // away, as bridges of earlier tests were): a message of Alice's is indexed.
    let marker = alice.send_text(&room_id, "here").await;
    let pool = bridge.pool().clone();
    eventually("Synapse pushing to this bridge", || {
        let (pool, marker) = (pool.clone(), marker.clone());
        async move {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM messages WHERE matrix_event_id = $1")
                    .bind(marker)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (n == 1).then_some(())
        }
    })
    .await;
    // Let the throttle window of the room's last publication run out, so the burst starts
    // a fresh one (a duration of the bridge's own, not a guess at when something arrives).
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut socket = connect().await;
    next_json(&mut socket).await;

    for on in [true, false, true, false, true] {
        alice.typing(&room_id, on).await;
    }
    // First change at once, the rest folded into one trailing update with the last state.
    let mut updates = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout_at(deadline, socket.next()).await
    {
        let update: Value = serde_json::from_str(&text).unwrap();
        if update["room_slug"] == slug.as_str() {
            updates.push(update);
        }
    }
    assert!(
        !updates.is_empty() && updates.len() <= 3,
        "throttled: {updates:#?}"
    );
    assert_eq!(
        updates.last().unwrap()["typing_count"],
        1,
        "the burst ends typing: {updates:#?}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_restarted_bridge_rebuilds_the_counts_without_new_pushes() {
    let bridge = Bridge::start_with(&[("ROOM_PRESENCE_THROTTLE_MS", "50")]).await;
    let (slug, room_id) = new_room("Restart").await;
    let alice = MatrixUser::register("alice").await;
    alice.set_presence("online").await;
    alice.join(&room_id).await.unwrap();
    let mut socket = connect().await;
    until(&mut socket, &slug, "online before restart", |u| {
        u["online_count"] == 1
    })
    .await;
    bridge.stop().await;

    let bridge = Bridge::start_with(&[("ROOM_PRESENCE_THROTTLE_MS", "50")]).await;
    let snapshot = eventually("snapshot rebuilt", || async {
        let mut socket = connect().await;
        let snapshot = next_json(&mut socket).await;
        let room = snapshot["rooms"]
            .as_array()?
            .iter()
            .find(|r| r["room_slug"] == slug.as_str())?
            .clone();
        (room["online_count"] == 1).then_some(room)
    })
    .await;
    assert_eq!(
        snapshot,
        json!({"room_slug": slug, "online_count": 1, "typing_count": 0})
    );
    bridge.stop().await;
}

#[tokio::test]
async fn agents_presence_counts_and_nats_carries_the_payloads() {
    let nats = std::env::var("CITY_BRIDGE_TEST_NATS_URL")
        .expect("CITY_BRIDGE_TEST_NATS_URL (scripts/test.sh sets it)");
    let client = async_nats::connect(&nats).await.expect("NATS reachable");
    let bridge =
        Bridge::start_with(&[("ROOM_PRESENCE_THROTTLE_MS", "50"), ("NATS_URL", &nats)]).await;
    let (slug, room_id) = new_room("Agents").await;
    let name = unique("nova");
    sqlx::query("INSERT INTO agents (id, display_name) VALUES ($1, 'Nova')")
        .bind(format!("agent:{name}"))
        .execute(bridge.pool())
        .await
        .unwrap();
    let mut rooms = client
        .subscribe(format!("city.presence.room.{slug}"))
        .await
        .unwrap();
    let mut users = client
        .subscribe(format!("city.presence.user.agent_{name}"))
        .await
        .unwrap();

    // The agent is registered on first use, joins, and comes online through the API.
    let agent = format!("@agent_{name}:{}", env().server_name);
    let (status, body) = api(
        Method::PUT,
        &format!("/internal/agents/agent:{name}/presence"),
        Some(GATEWAY_SECRET),
        Some(json!({"presence": "online", "status_msg": "thinking"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let bot = MatrixUser::appservice();
    bot.invite(&room_id, &agent).await.unwrap();
    MatrixUser::masquerading(&agent)
        .join(&room_id)
        .await
        .unwrap();
    let members = bot
        .get(&format!("/v3/rooms/{}/joined_members", encode(&room_id)))
        .await
        .unwrap();
    assert!(
        members["joined"].get(&agent).is_some(),
        "agent joined: {members}"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, rooms.next())
            .await
            .expect("room presence on NATS")
            .unwrap();
        let payload: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(payload["type"], "room.presence");
        assert_eq!(payload["room_slug"], slug.as_str());
        assert_eq!(payload["matrix_room_id"], room_id.as_str());
        if payload["online_count"] == 1 {
            break;
        }
    }
    let message = tokio::time::timeout(Duration::from_secs(30), users.next())
        .await
        .expect("user presence on NATS")
        .unwrap();
    let payload: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        (
            payload["type"].as_str(),
            payload["matrix_user_id"].as_str(),
            payload["status"].as_str()
        ),
        (Some("user.presence"), Some(agent.as_str()), Some("online"))
    );

    let (status, _) = api(
        Method::PUT,
        "/internal/agents/agent:nobody-here/presence",
        Some(GATEWAY_SECRET),
        Some(json!({"presence": "online"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = api(
        Method::PUT,
        &format!("/internal/agents/agent:{name}/presence"),
        Some(GATEWAY_SECRET),
        Some(json!({"presence": "dancing"})),
    )
    .await;
    assert_eq!((status, &body["field"]), (422, &json!("presence")));
    bridge.stop().await;
}

#[tokio::test]
async fn an_unreachable_nats_stops_start_up_with_a_clear_error() {
    // Nothing listens on port 9: NATS_URL names a server that is not there.
    let config = crate::support::config_with(&[("NATS_URL", "nats://127.0.0.1:9")]);
    let error = city_bridge::app::AppState::new(config)
        .await
        .expect_err("no NATS, no start");
    assert!(
        error.to_string().contains("cannot connect to NATS"),
        "{error}"
    );
}

fn slugs(snapshot: &Value) -> Vec<String> {
    snapshot["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["room_slug"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn private_rooms_reach_only_admins_and_every_room_is_in_the_snapshot() {
    let bridge = Bridge::start_with(&[("ROOM_PRESENCE_THROTTLE_MS", "50")]).await;
    let (quiet, _) = new_room("Quiet").await;
    let council = unique("council-");
    let (status, room) = api(
        Method::POST,
        "/api/city/rooms",
        Some(GATEWAY_SECRET),
        Some(json!({"slug": council, "name": "Council", "visibility": "private"})),
    )
    .await;
    assert_eq!(status, 201, "{room}");
    let council_room = room["matrix_room_id"].as_str().unwrap().to_owned();
    let admin_token = jwt("user:mayor", &["admin"]);

    // Every active room the client may see, nobody there included; no private room.
    let snapshot = eventually("the new rooms in the snapshot", || async {
        let mut socket = connect().await;
        let snapshot = next_json(&mut socket).await;
        slugs(&snapshot).contains(&quiet).then_some(snapshot)
    })
    .await;
    assert!(!slugs(&snapshot).contains(&council), "{snapshot}");
    let entry = snapshot["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_slug"] == quiet.as_str())
        .unwrap();
    assert_eq!(
        (
            entry["online_count"].as_u64(),
            entry["typing_count"].as_u64()
        ),
        (Some(0), Some(0))
    );
    let mut admin = connect_as(&admin_token).await;
    assert!(slugs(&next_json(&mut admin).await).contains(&council));
    let (_, listed) = api(Method::GET, &format!("/api/city/rooms/{quiet}"), None, None).await;
    assert_eq!(
        listed["members_online"], 0,
        "a number even when nobody is there"
    );

    // Alice comes online in the private room, then types in the public one.
    let mut citizen = connect().await;
    next_json(&mut citizen).await;
    let alice = MatrixUser::register("alice").await;
    MatrixUser::appservice()
        .invite(&council_room, &alice.user_id)
        .await
        .unwrap();
    alice.join(&council_room).await.unwrap();
    alice.set_presence("online").await;
    until(&mut admin, &council, "admin sees the private room", |u| {
        u["online_count"] == 1
    })
    .await;
    let quiet_room = alice.join(&alias(&quiet)).await.unwrap();
    alice.typing(&quiet_room, true).await;
    // Everything the citizen got up to the public update: nothing of the private room.
    loop {
        let update = next_json(&mut citizen).await;
        assert_ne!(
            update["room_slug"],
            council.as_str(),
            "private room leaked: {update}"
        );
        if update["room_slug"] == quiet.as_str() && update["typing_count"] == 1 {
            break;
        }
    }
    bridge.stop().await;
}

#[tokio::test]
async fn a_status_learnt_by_lookup_is_published_on_the_users_subject() {
    let nats = std::env::var("CITY_BRIDGE_TEST_NATS_URL")
        .expect("CITY_BRIDGE_TEST_NATS_URL (scripts/test.sh sets it)");
    let client = async_nats::connect(&nats).await.expect("NATS reachable");
    let bridge =
        Bridge::start_with(&[("ROOM_PRESENCE_THROTTLE_MS", "50"), ("NATS_URL", &nats)]).await;
    let (_, room_id) = new_room("Lookup").await;
    let alice = MatrixUser::register("alice").await;
    let mut subject = client
        .subscribe(format!("city.presence.user.{}", alice.localpart()))
        .await
        .unwrap();
    // Online before sharing a room with the bridge: nothing was pushed about her yet.
    alice.set_presence("online").await;
    alice.join(&room_id).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), subject.next())
        .await
        .expect("her status on her subject")
        .unwrap();
    let payload: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(payload["matrix_user_id"], alice.user_id.as_str());
    assert_eq!(payload["status"], "online");
    bridge.stop().await;
}

async fn synapse_presence(observer: &MatrixUser, user: &str) -> String {
    observer
        .get(&format!("/v3/presence/{}/status", encode(user)))
        .await
        .expect("presence")["presence"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_agent_set_online_stays_online_and_a_restart_reapplies_it() {
    let bridge = Bridge::start_with(&[("AGENT_PRESENCE_REFRESH_SECS", "5")]).await;
    let name = unique("vigil");
    sqlx::query("INSERT INTO agents (id, display_name) VALUES ($1, 'Vigil')")
        .bind(format!("agent:{name}"))
        .execute(bridge.pool())
        .await
        .unwrap();
    let agent = format!("@agent_{name}:{}", env().server_name);
    let (status, body) = api(
        Method::PUT,
        &format!("/internal/agents/agent:{name}/presence"),
        Some(GATEWAY_SECRET),
        Some(json!({"presence": "online"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The agent itself asks Synapse (presence is visible to those sharing a room, and to
    // the user).
    let observer = MatrixUser::masquerading(&agent);
    // Synapse times out users that do not sync after about 30 s: watch for 45 s.
    let until = tokio::time::Instant::now() + Duration::from_secs(45);
    while tokio::time::Instant::now() < until {
        assert_eq!(
            synapse_presence(&observer, &agent).await,
            "online",
            "still online"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    bridge.stop().await;

    // While the bridge is down the agent drops offline (as Synapse's timeout would do);
    // the next bridge puts back what the platform set.
    MatrixUser::masquerading(&agent)
        .put(
            &format!("/v3/presence/{}/status", encode(&agent)),
            json!({"presence": "offline"}),
        )
        .await
        .unwrap();
    assert_eq!(synapse_presence(&observer, &agent).await, "offline");
    let bridge = Bridge::start_with(&[("AGENT_PRESENCE_REFRESH_SECS", "5")]).await;
    eventually("presence re-applied after a restart", || {
        let (observer, agent) = (observer.clone(), agent.clone());
        async move { (synapse_presence(&observer, &agent).await == "online").then_some(()) }
    })
    .await;
    bridge.stop().await;
}
