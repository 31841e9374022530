//! The bridge on a multi-thread runtime, as it runs in production: several people sending
//! into one channel at the same time, through the API and from Matrix clients, while a
//! client watches the channel's live feed. Every other test runs it on one thread, where
//! no two of its tasks ever run at once.

use std::{collections::HashMap, time::Duration};

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Bridge, MatrixUser, api, encode, env, eventually_explained, jwt, unique};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Messages each sender sends, one after the other.
const PER_SENDER: usize = 8;

/// A public channel made for one test by an admin; its slug, Matrix room and the admin's
/// JWT (to read it and to speak in it).
async fn public_channel(name: &str) -> (String, String, String) {
    let admin = MatrixUser::register("admin").await;
    let admin_jwt = jwt(&format!("user:{}", admin.localpart()), &["admin"]);
    let slug = unique("busy");
    let (status, channel) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(&admin_jwt),
        Some(json!({"slug": slug, "name": name, "visibility": "public"})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    let room_id = channel["matrix_room_id"].as_str().unwrap().to_owned();
    (slug, room_id, admin_jwt)
}

/// Sends through the API as `jwt`; the message's event id.
async fn say(slug: &str, jwt: &str, text: &str) -> String {
    let (status, message) = api(
        Method::POST,
        &format!("/api/messaging/channels/{slug}/messages"),
        Some(jwt),
        Some(json!({ "text": text })),
    )
    .await;
    assert_eq!(status, 201, "{message}");
    message["matrix_event_id"].as_str().unwrap().to_owned()
}

/// `api_senders` people sending through the API (each a user the bridge has not seen: it
/// registers them on first use) and `matrix_senders` people in Matrix clients, all at
/// once, each `PER_SENDER` messages in turn. What each sent, in the order sent, by
/// `sender_id`.
async fn send_at_once(
    slug: &str,
    room_id: &str,
    api_senders: usize,
    matrix_senders: usize,
) -> Vec<(String, Vec<String>)> {
    let mut clients = Vec::new();
    for _ in 0..matrix_senders {
        let user = MatrixUser::register("client").await;
        user.join(room_id).await.expect("join the channel's room");
        clients.push(user);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(api_senders + matrix_senders));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..api_senders {
        let (slug, start) = (slug.to_owned(), start.clone());
        let sender_id = format!("user:{}", unique("api"));
        let token = jwt(&sender_id, &[]);
        senders.spawn(async move {
            start.wait().await;
            let mut sent = Vec::new();
            for n in 0..PER_SENDER {
                sent.push(say(&slug, &token, &format!("{sender_id} says {n}")).await);
            }
            (sender_id, sent)
        });
    }
    for user in clients {
        let (room_id, start) = (room_id.to_owned(), start.clone());
        senders.spawn(async move {
            start.wait().await;
            let mut sent = Vec::new();
            for n in 0..PER_SENDER {
                let text = format!("{} writes {n}", user.user_id);
                sent.push(user.send_text(&room_id, &text).await);
            }
            (format!("user:{}", user.localpart()), sent)
        });
    }
    senders.join_all().await
}

/// The channel's whole history, oldest first, page by page as a client reads it.
async fn history(slug: &str, jwt: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut path = format!("/api/messaging/channels/{slug}/messages?limit=100");
        if let Some(cursor) = &before {
            path.push_str(&format!("&before={}", encode(cursor)));
        }
        let (status, page) = api(Method::GET, &path, Some(jwt), None).await;
        assert_eq!(status, 200, "{page}");
        messages.extend(page["messages"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => before = Some(cursor.to_owned()),
            None => break,
        }
    }
    messages.reverse();
    messages
}

fn event_ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["matrix_event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the history holds every message sent (Matrix clients' messages are indexed
/// when Synapse pushes them), then checks that it holds each exactly once and each
/// sender's in the order sent; the history, oldest first.
async fn every_message_once_in_order(
    slug: &str,
    jwt: &str,
    sent: &[(String, Vec<String>)],
    others: usize,
) -> Vec<Value> {
    let expected = sent.iter().map(|(_, ids)| ids.len()).sum::<usize>() + others;
    let history = eventually_explained(
        Duration::from_secs(30),
        "every message in the history",
        || async move {
            let history = history(slug, jwt).await;
            if history.len() >= expected {
                return Ok(history);
            }
            let shown = event_ids(&history);
            let missing: Vec<&String> = sent
                .iter()
                .flat_map(|(_, ids)| ids)
                .filter(|id| !shown.contains(id))
                .collect();
            Err(format!(
                "{} of {expected} messages; missing {missing:?}",
                history.len()
            ))
        },
    )
    .await;
    let ids = event_ids(&history);
    let mut times: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *times.entry(id).or_default() += 1;
    }
    for (sender, theirs) in sent {
        for id in theirs {
            assert_eq!(
                times.get(id.as_str()),
                Some(&1),
                "{sender}'s {id} once in the history: {ids:?}"
            );
        }
        let in_history: Vec<String> = history
            .iter()
            .filter(|m| m["sender_id"] == sender.as_str())
            .map(|m| m["matrix_event_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&in_history, theirs, "{sender}'s messages in the order sent");
    }
    assert_eq!(ids.len(), expected, "nothing else, nothing twice: {ids:?}");
    history
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_through_the_api_and_matrix_clients_are_each_indexed_once_in_order() {
    let bridge = Bridge::start().await;
    let (slug, room_id, admin_jwt) = public_channel("Busy square").await;

    let sent = send_at_once(&slug, &room_id, 3, 2).await;

    every_message_once_in_order(&slug, &admin_jwt, &sent, 0).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE channel_id = $1")
        .bind(format!("room_city_{slug}"))
        .fetch_one(bridge.pool())
        .await
        .unwrap();
    assert_eq!(rows, 5 * PER_SENDER as i64, "one row per message");
    bridge.stop().await;
}

/// Reads the feed until the `message.created` of a message with the text `last`; the event
/// ids of every `message.created` read, in the order received (`last`'s included).
async fn created_until(socket: &mut Socket, last: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut ids = Vec::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {last:?}; received {ids:?}"))
            .expect("the feed open")
            .expect("a frame");
        let Message::Text(text) = frame else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
        match frame["type"].as_str() {
            Some("message.created") => {
                let message = &frame["message"];
                ids.push(message["matrix_event_id"].as_str().unwrap().to_owned());
                if message["content_preview"] == last {
                    return ids;
                }
            }
            Some("resync") => panic!("the feed fell behind (resync) after {ids:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_feed_shows_every_message_once_in_the_index_order_under_concurrent_sends() {
    let bridge = Bridge::start().await;
    let (slug, room_id, admin_jwt) = public_channel("Live square").await;
    let url = format!(
        "ws://{}/ws/messaging/{slug}?token={admin_jwt}",
        env().bridge_addr
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    // The feed is live once it shows a first message.
    let opening = say(&slug, &admin_jwt, "the square opens").await;
    assert_eq!(
        created_until(&mut socket, "the square opens").await,
        std::slice::from_ref(&opening)
    );

    // The feed is read on one worker while the senders run on both.
    let closing = format!("the square closes {}", unique(""));
    let feed = tokio::spawn({
        let closing = closing.clone();
        async move { created_until(&mut socket, &closing).await }
    });
    let sent = send_at_once(&slug, &room_id, 2, 2).await;
    // Everyone's messages indexed, then one more: the feed is read up to it.
    let indexed = every_message_once_in_order(&slug, &admin_jwt, &sent, 1).await;
    let closed = say(&slug, &admin_jwt, &closing).await;
    let shown = feed.await.expect("the feed read");

    let mut in_index = event_ids(&indexed);
    in_index.push(closed);
    assert_eq!(
        in_index.first(),
        Some(&opening),
        "the history starts with the opening"
    );
    assert_eq!(
        shown,
        in_index[1..],
        "every message.created once, in the order of the index"
    );
    bridge.stop().await;
}
