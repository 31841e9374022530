//! Channel fan-out benchmark: BENCH_CLIENTS WebSocket clients on `/ws/messaging/general`
//! while this program plays Synapse, pushing one `m.room.message` of the channel's room per
//! transaction. Reports delivery latency (transaction sent → `message.created` received by
//! a client, over every client and message) and the bridge's memory per idle connection.
//! Run it with `scripts/bench-channel.sh`, which sets everything up.

#[path = "support.rs"]
mod support;

use support::{percentile, rss_kib, var};

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() {
    let addr = var("BENCH_BRIDGE_ADDR", Some("127.0.0.1:16125"));
    // Where the clients connect: another instance (BRIDGE_ROLE=api) fed by the bus, or the
    // one Synapse pushes to.
    let ws_addr = var("BENCH_WS_ADDR", Some(&addr));
    let token = var("BENCH_HS_TOKEN", None);
    let jwt_secret = var("BENCH_JWT_SECRET", None);
    let pid = var("BENCH_BRIDGE_PID", None);
    let room_id = var("BENCH_ROOM_ID", Some("!bench:localhost"));
    let clients: usize = var("BENCH_CLIENTS", Some("1000")).parse().unwrap();
    let updates: usize = var("BENCH_UPDATES", Some("50")).parse().unwrap();

    let claims = json!({"sub": "user:bench", "exp": chrono::Utc::now().timestamp() + 3600});
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(jwt_secret.as_bytes()),
    )
    .unwrap();

    let rss_before = rss_kib(&pid);
    // Every client records, per update k, when it saw it.
    // Written once per update before it is pushed, read by every client: no lock.
    let sent_at: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..updates).map(|_| OnceLock::new()).collect());
    let mut tasks = Vec::with_capacity(clients);
    let connect_start = Instant::now();
    for _ in 0..clients {
        let url = format!("ws://{ws_addr}/ws/messaging/general?token={jwt}");
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let sent_at = Arc::clone(&sent_at);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(updates);
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let now = Instant::now();
                // The marker `bench-<k>.` in the body names the message; no full parse needed.
                let Some(start) = text.find("bench-") else {
                    continue;
                };
                let rest = &text[start + 6..];
                let Some(k) = rest.split('.').next().and_then(|k| k.parse::<usize>().ok()) else {
                    continue;
                };
                if let Some(at) = sent_at.get(k).and_then(OnceLock::get) {
                    seen.push(now - *at);
                }
                if seen.len() == updates {
                    break;
                }
            }
            seen
        }));
    }
    let connect_time = connect_start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = rss_kib(&pid);

    let http = reqwest::Client::new();
    // One message first, not measured: the first publish of a fresh stream (and the
    // first message through a new subscription) is not the steady state.
    let warm_up = json!({"events": [{
        "type": "m.room.message", "room_id": room_id, "sender": "@alice:localhost",
        "event_id": format!("$warm-up-{}", rand::random::<u32>()),
        "origin_server_ts": 1_763_000_000_000_u64,
        "content": {"msgtype": "m.text", "body": "warm-up"},
    }]});
    support::push(&http, &addr, &token, "warm-up", &warm_up).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for k in 0..updates {
        let body = json!({
            "events": [{
                "type": "m.room.message", "room_id": room_id, "sender": "@alice:localhost",
                "event_id": format!("$channel-{k}-{}", rand::random::<u32>()),
                "origin_server_ts": 1_763_000_000_000_u64,
                "content": {"msgtype": "m.text", "body": format!("bench-{k}. Привіт, місто: the cooperative meets on Thursday")},
            }],
        });
        sent_at[k].set(Instant::now()).expect("set once");
        support::push(&http, &addr, &token, &format!("channel-{k}"), &body).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut latencies = Vec::with_capacity(clients * updates);
    for task in tasks {
        if let Ok(Ok(seen)) =
            tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), task).await
        {
            latencies.extend(seen);
        }
    }
    latencies.sort();
    let expected = clients * updates;
    println!(
        "channel fan-out benchmark: {clients} WebSocket clients of one channel, {updates} messages pushed one at a time"
    );
    println!(
        "  connect time (sequential)  : {:.1} s",
        connect_time.as_secs_f64()
    );
    println!(
        "  bridge RSS before / after  : {} / {} KiB",
        rss_before, rss_connected
    );
    println!(
        "  memory per idle connection : {:.1} KiB",
        (rss_connected.saturating_sub(rss_before)) as f64 / clients as f64
    );
    println!(
        "  deliveries                 : {} of {expected}",
        latencies.len()
    );
    if !latencies.is_empty() {
        println!(
            "  delivery latency p50       : {:.2} ms",
            percentile(&latencies, 50.0).as_secs_f64() * 1e3
        );
        println!(
            "  delivery latency p99       : {:.2} ms",
            percentile(&latencies, 99.0).as_secs_f64() * 1e3
        );
        println!(
            "  delivery latency max       : {:.2} ms",
            latencies.last().unwrap().as_secs_f64() * 1e3
        );
    }
    assert_eq!(
        latencies.len(),
        expected,
        "every client must see every update"
    );
}
