//! The outbox to JetStream: nothing lost or doubled when NATS goes away or the mark after a
//! publish is lost, and API-only instances fed from the bus.

use std::{
    process::{Child, Command},
    time::Duration,
};

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    ApiInstance, Bridge, MatrixUser, api, eventually, eventually_within, jwt, unique,
};

/// A NATS server of this test's own, with JetStream, that the test can stop and start
/// again on the same port and store.
struct PrivateNats {
    port: u16,
    dir: std::path::PathBuf,
    /// Settings of its configuration file beyond the port and the store.
    settings: String,
    child: Option<Child>,
}

impl PrivateNats {
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// With more settings in its configuration file (e.g. `max_payload: 1024`).
    async fn start_with(settings: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(unique("nats-"));
        let mut nats = Self {
            port,
            dir,
            settings: settings.to_owned(),
            child: None,
        };
        nats.resume().await;
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits (without holding up the runtime: the bridge under test
    /// runs on it meanwhile) until it accepts connections.
    async fn resume(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let config = self.dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{}\njetstream {{ store_dir: {:?} }}\n{}\n",
                self.port,
                self.dir.join("js"),
                self.settings
            ),
        )
        .unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (Debian package nats-server; scripts/services.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        eventually_within(
            Duration::from_secs(5),
            "the private nats-server",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every `messaging.message.created` of `channel` in the stream, in stream order: the
/// message ids.
async fn created_in_stream(nats: &str, stream: &str, channel: &str) -> Vec<String> {
    created_payloads(nats, stream, channel)
        .await
        .iter()
        .map(|v| v["matrix_event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every `messaging.message.created` of `channel` in the stream, in stream order.
async fn created_payloads(nats: &str, stream: &str, channel: &str) -> Vec<Value> {
    let client = async_nats::connect(nats).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(stream).await.expect("the stream exists");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: "messaging.message.created".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.clone().info().await.unwrap().num_pending;
    let mut messages = consumer.messages().await.unwrap();
    let mut payloads = Vec::new();
    for _ in 0..pending {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a stored message")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        if v["channel_id"] == channel {
            payloads.push(v);
        }
    }
    payloads
}

#[tokio::test]
async fn nothing_is_lost_or_doubled_while_nats_is_away_or_a_mark_is_lost() {
    let mut nats = PrivateNats::start().await;
    let stream = unique("EVENTS_");
    let url = nats.url();
    let bridge = Bridge::start_with(&[("NATS_URL", &url), ("NATS_STREAM", &stream)]).await;
    let alice = MatrixUser::register("alice").await;
    let alice_jwt = jwt(&format!("user:{}", alice.localpart()), &[]);
    let slug = unique("out");
    // A public channel of no microDAO is a city room: an admin makes it.
    let admin_jwt = jwt(&format!("user:{}", alice.localpart()), &["admin"]);
    let (status, channel) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(&admin_jwt),
        Some(json!({"slug": slug, "name": "Outbox", "visibility": "public"})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    let room_id = channel["matrix_room_id"].as_str().unwrap().to_owned();
    let channel_id = format!("room_city_{slug}");
    let path = format!("/api/messaging/channels/{slug}/messages");

    // Both ways, alternating: the API and a Matrix client.
    let mut sent = Vec::new();
    let say = async |n: usize| {
        let (status, m) = api(
            Method::POST,
            &path,
            Some(&alice_jwt),
            Some(json!({"text": format!("api {n}")})),
        )
        .await;
        assert_eq!(status, 201, "{m}");
        let api_event = m["matrix_event_id"].as_str().unwrap().to_owned();
        let client_event = alice.send_text(&room_id, &format!("client {n}")).await;
        [api_event, client_event]
    };
    for n in 0..2 {
        sent.extend(say(n).await);
    }
    eventually("published while NATS is up", || async {
        (created_in_stream(&url, &stream, &channel_id).await.len() == sent.len()).then_some(())
    })
    .await;

    // NATS goes away for a minute (long enough for the client's reconnect backoff to
    // grow); Synapse's pushes are still answered (the history shows them).
    nats.stop();
    let away = std::time::Instant::now();
    let mut n = 2;
    while away.elapsed() < std::time::Duration::from_secs(60) {
        sent.extend(say(n).await);
        n += 1;
        tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    }
    let jwt2 = alice_jwt.clone();
    let last = sent.last().unwrap().clone();
    eventually("indexed without NATS", || async {
        let (_, page) = api(Method::GET, &path, Some(&jwt2), None).await;
        (page["messages"][0]["matrix_event_id"] == last.as_str()).then_some(())
    })
    .await;
    let lag: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE seq > (SELECT seq FROM relay_progress)",
    )
    .fetch_one(bridge.pool())
    .await
    .unwrap();
    assert!(lag >= 6, "not published while NATS is away (lag {lag})");

    // Back: everything arrives, once, in order.
    nats.resume().await;
    let in_stream = eventually("published after NATS came back", || async {
        let ids = created_in_stream(&url, &stream, &channel_id).await;
        (ids.len() >= sent.len()).then_some(ids)
    })
    .await;
    assert_eq!(in_stream, sent, "every message once, in order");

    // The mark after a publish is lost (a crash between the two): published again, and
    // JetStream drops the duplicates.
    sqlx::query("UPDATE relay_progress SET seq = 0")
        .execute(bridge.pool())
        .await
        .unwrap();
    bridge.state.relay_due.notify_one();
    let pool = bridge.pool().clone();
    eventually("published again", || async {
        let lag: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages WHERE seq > (SELECT seq FROM relay_progress)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (lag == 0).then_some(())
    })
    .await;
    assert_eq!(
        created_in_stream(&url, &stream, &channel_id).await,
        sent,
        "still once each"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn an_api_only_instance_serves_live_channels_from_the_bus() {
    let nats = crate::support::nats_url();
    let receiver =
        Bridge::start_with(&[("NATS_URL", &nats), ("ROOM_PRESENCE_THROTTLE_MS", "50")]).await;
    let alice = MatrixUser::register("alice").await;
    let alice_jwt = jwt(&format!("user:{}", alice.localpart()), &[]);
    let slug = unique("two");
    // A public channel of no microDAO is a city room: an admin makes it.
    let admin_jwt = jwt(&format!("user:{}", alice.localpart()), &["admin"]);
    let (status, channel) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(&admin_jwt),
        Some(json!({"slug": slug, "name": "Two", "visibility": "public"})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    let room_id = channel["matrix_room_id"].as_str().unwrap().to_owned();

    // Alice types before the second instance exists: it learns of it from the bus's
    // presence bucket, not from an update.
    let marker = alice.send_text(&room_id, "marker").await;
    let jwt2 = alice_jwt.clone();
    eventually("Synapse pushing to the receiver", || async {
        let (_, page) = api(
            Method::GET,
            &format!("/api/messaging/channels/{slug}/messages"),
            Some(&jwt2),
            None,
        )
        .await;
        (page["messages"][0]["matrix_event_id"] == marker.as_str()).then_some(())
    })
    .await;
    alice.typing(&room_id, true).await;
    let kv = async_nats::jetstream::new(async_nats::connect(&nats).await.unwrap())
        .get_key_value("city_presence")
        .await
        .expect("the presence bucket");
    eventually("the typing state kept in the bucket", || async {
        let value = kv.get(slug.as_str()).await.ok().flatten()?;
        let v: Value = serde_json::from_slice(&value).ok()?;
        (v["typing_count"] == 1).then_some(())
    })
    .await;

    // A second instance on another port, API only.
    let api_instance = ApiInstance::start(&nats).await;
    let api_addr = api_instance.addr;

    // Its presence snapshot has the typing already.
    let (mut presence, _) = tokio_tungstenite::connect_async(format!(
        "ws://{api_addr}/ws/city/presence?token={alice_jwt}"
    ))
    .await
    .expect("presence WebSocket on the API-only instance");
    let Some(Ok(Message::Text(snapshot))) = presence.next().await else {
        panic!("a snapshot");
    };
    let snapshot: Value = serde_json::from_str(&snapshot).unwrap();
    let room = snapshot["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_slug"] == slug.as_str())
        .unwrap_or_else(|| panic!("{snapshot}"))
        .clone();
    assert_eq!(room["typing_count"], 1, "{snapshot}");

    // Appservice paths are not served there.
    let response = reqwest::Client::new()
        .put(format!("http://{api_addr}/_matrix/app/v1/transactions/1"))
        .json(&json!({"events": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "ws://{api_addr}/ws/messaging/{slug}?token={alice_jwt}"
    ))
    .await
    .expect("WebSocket on the API-only instance");
    let pushed = alice.send_text(&room_id, "seen everywhere").await;
    let frame = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let Some(Ok(Message::Text(text))) = socket.next().await else {
                panic!("socket closed");
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["type"] == "message.created" && v["matrix_event_id"] == pushed.as_str() {
                return v;
            }
        }
    })
    .await
    .expect("the message on the API-only instance");
    assert_eq!(frame["message"]["content_preview"], "seen everywhere");

    // Sending through the API-only instance: answered once the receiver indexed it.
    let response = reqwest::Client::new()
        .post(format!(
            "http://{api_addr}/api/messaging/channels/{slug}/messages"
        ))
        .bearer_auth(&alice_jwt)
        .json(&json!({"text": "via the API instance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let sent: Value = response.json().await.unwrap();
    assert_eq!(sent["content_preview"], "via the API instance");
    assert_eq!(sent["sender_matrix_id"], alice.user_id.as_str());

    api_instance.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn a_send_through_an_api_instance_while_the_receiver_is_down_is_accepted_and_indexed_later() {
    let nats = crate::support::nats_url();
    let receiver = Bridge::start_with(&[("NATS_URL", &nats)]).await;
    let alice = MatrixUser::register("alice").await;
    let alice_jwt = jwt(&format!("user:{}", alice.localpart()), &[]);
    let slug = unique("late");
    // A public channel of no microDAO is a city room: an admin makes it.
    let admin_jwt = jwt(&format!("user:{}", alice.localpart()), &["admin"]);
    let (status, channel) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(&admin_jwt),
        Some(json!({"slug": slug, "name": "Late", "visibility": "public"})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");

    // Only an API-only instance runs: Synapse accepts the message, but nothing it pushes
    // to is there to index it. The answer says so (202), after the instance's 10 s wait.
    let sent = std::sync::Arc::new(std::sync::Mutex::new(None::<Value>));
    let receiver = receiver
        .restart_with(&[("NATS_URL", &nats)], || {
            let (sent, nats, jwt, slug) =
                (sent.clone(), nats.clone(), alice_jwt.clone(), slug.clone());
            async move {
                let instance = ApiInstance::start(&nats).await;
                let response = reqwest::Client::new()
                    .post(format!(
                        "http://{}/api/messaging/channels/{slug}/messages",
                        instance.addr
                    ))
                    .bearer_auth(&jwt)
                    .json(&json!({"text": "while the receiver is away"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                *sent.lock().unwrap() = Some(response.json().await.unwrap());
                instance.stop().await;
            }
        })
        .await;
    let sent = sent.lock().unwrap().take().unwrap();
    assert_eq!(sent["indexed"], false, "{sent}");
    let event_id = sent["matrix_event_id"].as_str().unwrap().to_owned();

    // Back: Synapse pushes what it kept, and the message is there, from Alice.
    let path = format!("/api/messaging/channels/{slug}/messages");
    let message = eventually("indexed once the receiver is back", || async {
        let (_, page) = api(Method::GET, &path, Some(&alice_jwt), None).await;
        let first = page["messages"][0].clone();
        (first["matrix_event_id"] == event_id.as_str()).then_some(first)
    })
    .await;
    assert_eq!(message["content_preview"], "while the receiver is away");
    assert_eq!(message["sender_matrix_id"], alice.user_id.as_str());
    receiver.stop().await;
}

#[tokio::test]
async fn an_event_the_bus_refuses_is_set_aside_and_the_rest_flows() {
    // A NATS server that takes nothing over 2 KiB: a message of 500 quotes (each escaped,
    // twice in the payload) cannot be published; the messages around it can.
    let nats = PrivateNats::start_with("max_payload: 2048").await;
    let stream = unique("EVENTS_");
    let url = nats.url();
    let bridge = Bridge::start_with(&[("NATS_URL", &url), ("NATS_STREAM", &stream)]).await;
    let slug = crate::support::city_room(bridge.pool(), "Poison").await;
    let channel_id = format!("room_city_{slug}");
    let alice = MatrixUser::register("alice").await;
    let room_id = alice.join(&crate::support::alias(&slug)).await.unwrap();
    let before = alice.send_text(&room_id, "before").await;
    let poison = alice.send_text(&room_id, &"\"".repeat(500)).await;
    let after = alice.send_text(&room_id, "after").await;

    let in_stream = eventually("the messages after the refused one published", || async {
        let ids = created_in_stream(&url, &stream, &channel_id).await;
        (ids.len() >= 2).then_some(ids)
    })
    .await;
    assert_eq!(in_stream, [before, after]);
    let (reason, size): (String, i64) =
        sqlx::query_as("SELECT reason, size FROM outbox_dead_letters WHERE event_id = $1")
            .bind(&poison)
            .fetch_one(bridge.pool())
            .await
            .expect("the refused event is recorded");
    assert!(reason.contains("payload"), "{reason}");
    assert!(size > 2048, "{size}");
    bridge.stop().await;
}

#[tokio::test]
async fn a_message_with_many_reactions_stays_bounded_everywhere() {
    let bridge = Bridge::start().await;
    let slug = crate::support::city_room(bridge.pool(), "Reactions").await;
    let alice = MatrixUser::register("alice").await;
    let alice_jwt = jwt(&format!("user:{}", alice.localpart()), &[]);
    let room_id = alice.join(&crate::support::alias(&slug)).await.unwrap();
    let target = alice.send_text(&room_id, "react to me").await;
    let mut bus = bridge.state.bus.subscribe("messaging.>").await.unwrap();
    // 30 keys: more than a view lists. They sort k01 … k30, all with one reaction, so
    // k21 … k30 are outside the top keys.
    for n in 1..=30 {
        alice
            .send(
                &room_id,
                "m.reaction",
                json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": format!("k{n:02}")}}),
            )
            .await
            .unwrap();
    }
    let path = format!("/api/messaging/channels/{slug}/messages");
    let message = eventually("every reaction indexed", || async {
        let (_, page) = api(Method::GET, &path, Some(&alice_jwt), None).await;
        let first = page["messages"][0].clone();
        (first["reaction_keys"] == 30).then_some(first)
    })
    .await;
    assert_eq!(message["matrix_event_id"], target.as_str());
    assert_eq!(message["reaction_count"], 30);
    let keys: Vec<&str> = message["reactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 20, "the top keys only");
    assert_eq!(keys[0], "k01");
    assert!(message["reactions"][0]["mine"].as_bool().unwrap());

    // On the bus: the last key's update says its own count, and carries the bounded view.
    let update = loop {
        let m = tokio::time::timeout(Duration::from_secs(30), bus.recv())
            .await
            .expect("reaction updates on the bus")
            .unwrap();
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        if v["type"] == "reaction.updated" && v["key"] == "k30" {
            break v;
        }
    };
    assert_eq!(update["count"], 1);
    assert_eq!(update["message"]["reactions"].as_array().unwrap().len(), 20);
    assert_eq!(update["message"]["reaction_keys"], 30);
    bridge.stop().await;
}

/// A bridge relaying to a private JetStream, and a city room of the test's own joined by a
/// new user (through Synapse), for transactions pushed by hand.
struct Relaying {
    nats: PrivateNats,
    stream: String,
    bridge: Bridge,
    slug: String,
    channel_id: String,
    room_id: String,
    alice: MatrixUser,
    metrics: String,
}

impl Relaying {
    async fn start() -> Self {
        let nats = PrivateNats::start().await;
        let stream = unique("EVENTS_");
        let bridge =
            Bridge::start_with(&[("NATS_URL", &nats.url()), ("NATS_STREAM", &stream)]).await;
        let slug = crate::support::city_room(bridge.pool(), "Pushed").await;
        let alice = MatrixUser::register("alice").await;
        let room_id = alice.join(&crate::support::alias(&slug)).await.unwrap();
        let metrics = format!("{}/metrics", bridge.url());
        Self {
            nats,
            stream,
            channel_id: format!("room_city_{slug}"),
            bridge,
            slug,
            room_id,
            alice,
            metrics,
        }
    }
}

/// How many new messages the relay has taken from `source` (`handed`, `read_back`).
async fn relay_took(metrics: &str, source: &str) -> f64 {
    crate::metrics::get(
        &crate::metrics::scrape(metrics).await,
        &format!("city_bridge_relay_messages_total{{source={source}}}"),
    )
}

/// Pushes `events` as Synapse would, and waits until they are indexed.
async fn push_events(events: Vec<Value>) {
    let (status, body) = crate::support::push(
        &unique("txn"),
        &json!({ "events": events }),
        Some(&crate::support::hs_token()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_platform_is_told_of_a_new_message_as_the_api_shows_it() {
    let Relaying {
        nats,
        stream,
        bridge,
        slug,
        channel_id,
        room_id,
        alice,
        metrics,
    } = Relaying::start().await;
    let url = nats.url();
    let handed_before = relay_took(&metrics, "handed").await;
    let server = &crate::support::env().server_name;
    let agent = format!("@agent_{}:{server}", unique("scribe"));
    let [text, image, emote, edited, redacted] = ["text", "image", "emote", "edited", "redacted"]
        .map(|k| format!("${}:{server}", unique(k)));
    let at = |n: u64| 1_765_000_000_000_u64 + n;
    // The image is pinned before it is indexed: the pin comes first in the transaction.
    push_events(vec![
        json!({"type": "m.room.pinned_events", "state_key": "", "event_id": format!("${}:{server}", unique("pins")),
               "room_id": room_id, "sender": alice.user_id, "origin_server_ts": at(0),
               "content": {"pinned": [image]}}),
        json!({"type": "m.room.message", "event_id": text, "room_id": room_id, "sender": alice.user_id,
               "origin_server_ts": at(1), "content": {"msgtype": "m.text", "body": "Зустріч о сьомій"}}),
        json!({"type": "m.room.message", "event_id": image, "room_id": room_id, "sender": alice.user_id,
               "origin_server_ts": at(2),
               "content": {"msgtype": "m.image", "body": "roof.png", "url": format!("mxc://{server}/roof"),
                           "info": {"mimetype": "image/png", "size": 1234, "w": 640, "h": 480},
                           "m.mentions": {"user_ids": [agent]},
                           "m.relates_to": {"rel_type": "m.thread", "event_id": text, "is_falling_back": true,
                                            "m.in_reply_to": {"event_id": text}}}}),
        json!({"type": "m.room.message", "event_id": emote, "room_id": room_id, "sender": agent,
               "origin_server_ts": at(3), "content": {"msgtype": "m.emote", "body": "waves"}}),
        // Changed before they are published: an edit, and a redaction (whose text must
        // never go out).
        json!({"type": "m.room.message", "event_id": edited, "room_id": room_id, "sender": alice.user_id,
               "origin_server_ts": at(4), "content": {"msgtype": "m.text", "body": "at seven"}}),
        json!({"type": "m.room.message", "event_id": format!("${}:{server}", unique("edit")), "room_id": room_id,
               "sender": alice.user_id, "origin_server_ts": at(5),
               "content": {"msgtype": "m.text", "body": "* at eight", "m.new_content": {"msgtype": "m.text", "body": "at eight"},
                           "m.relates_to": {"rel_type": "m.replace", "event_id": edited}}}),
        json!({"type": "m.room.message", "event_id": redacted, "room_id": room_id, "sender": alice.user_id,
               "origin_server_ts": at(6), "content": {"msgtype": "m.text", "body": "my phone number"}}),
        json!({"type": "m.room.redaction", "event_id": format!("${}:{server}", unique("redaction")), "room_id": room_id,
               "sender": alice.user_id, "origin_server_ts": at(7), "redacts": redacted,
               "content": {"redacts": redacted}}),
    ])
    .await;

    let told = eventually("the five messages published", || async {
        let payloads = created_payloads(&url, &stream, &channel_id).await;
        (payloads.len() >= 5).then_some(payloads)
    })
    .await;
    let alice_jwt = jwt(&format!("user:{}", alice.localpart()), &[]);
    let (status, page) = api(
        Method::GET,
        &format!("/api/messaging/channels/{slug}/messages"),
        Some(&alice_jwt),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let shown = page["messages"].as_array().unwrap();
    let ids: Vec<&str> = told
        .iter()
        .map(|p| p["matrix_event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [&text, &image, &emote, &edited, &redacted],
        "once each, in order"
    );
    for payload in &told {
        let id = &payload["matrix_event_id"];
        let view = shown
            .iter()
            .find(|m| &m["matrix_event_id"] == id)
            .unwrap_or_else(|| panic!("{id} in the history: {page}"));
        assert_eq!(&payload["message"], view, "the message as the API shows it");
        for (field, in_view) in [
            ("sender_id", "sender_id"),
            ("sender_type", "sender_type"),
            ("preview", "content_preview"),
            ("created_at", "created_at"),
            ("msgtype", "msgtype"),
            ("reply_to", "reply_to"),
            ("thread_root", "thread_root"),
            ("media", "media"),
        ] {
            assert_eq!(payload[field], view[in_view], "{field} of {id}");
        }
    }
    let image_told = &told[1]["message"];
    assert_eq!(
        image_told["pinned"], true,
        "pinned before it was indexed: {image_told}"
    );
    assert_eq!(image_told["thread_root"], text.as_str());
    assert_eq!(image_told["media"]["mxc"], format!("mxc://{server}/roof"));
    assert_eq!(image_told["media"]["width"], 640);
    assert_eq!(told[2]["sender_type"], "agent");
    assert_eq!(told[0]["message"]["content_preview"], "Зустріч о сьомій");
    assert_eq!(
        told[3]["preview"], "at eight",
        "edited before it was published"
    );
    assert_eq!(told[4]["message"]["redacted"], true);
    assert!(
        !told[4].to_string().contains("phone"),
        "redacted before it was published: its text never goes out: {}",
        told[4]
    );
    // Taken as the indexer wrote them, not read back (the changed ones read again).
    assert_eq!(relay_took(&metrics, "handed").await - handed_before, 5.0);
    bridge.stop().await;
}

#[tokio::test]
async fn a_message_another_instance_indexed_is_published_in_its_place() {
    let Relaying {
        nats,
        stream,
        bridge,
        channel_id,
        room_id,
        alice,
        metrics,
        ..
    } = Relaying::start().await;
    let url = nats.url();
    let server = &crate::support::env().server_name;
    let read_back_before = relay_took(&metrics, "read_back").await;
    let [first, other, last] =
        ["first", "other", "last"].map(|k| format!("${}:{server}", unique(k)));
    let message =
        |id: &str, body: &str| crate::support::message_event(&room_id, id, &alice.user_id, body);

    // The relay cannot mark what it publishes until the test lets it: whatever it has
    // published by then, the message written behind this instance's back comes next.
    let mut hold = bridge.pool().begin().await.unwrap();
    sqlx::query("SELECT seq FROM relay_progress FOR UPDATE")
        .execute(&mut *hold)
        .await
        .unwrap();
    push_events(vec![message(&first, "first")]).await;
    // Another instance's indexer writes a message (this one's never hears of it)...
    sqlx::query(
        "INSERT INTO messages (channel_id, matrix_room_id, matrix_event_id, sender_id, \
                               sender_matrix_id, sender_type, msgtype, content_preview, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'human', 'm.text', 'other', now())",
    )
    .bind(&channel_id)
    .bind(&room_id)
    .bind(&other)
    .bind(format!("user:{}", alice.localpart()))
    .bind(&alice.user_id)
    .execute(bridge.pool())
    .await
    .unwrap();
    // ... before this one indexes the next.
    push_events(vec![message(&last, "last")]).await;
    hold.rollback().await.unwrap();

    let in_stream = eventually("the three messages published", || async {
        let ids = created_in_stream(&url, &stream, &channel_id).await;
        (ids.len() >= 3).then_some(ids)
    })
    .await;
    assert_eq!(in_stream, [first, other, last], "each once, in order");
    let read_back = relay_took(&metrics, "read_back").await - read_back_before;
    assert!(
        read_back >= 2.0,
        "the round with the other's message read back: {read_back}"
    );
    bridge.stop().await;
}
