//! Outbox relay benchmark, against the release bridge with NATS (JetStream):
//! 1. throughput: pushes BENCH_EVENTS messages (transactions of 100, as fast as the bridge
//!    acknowledges them) and measures how long until JetStream acknowledged them all (the
//!    relay's mark reaches the last one);
//! 2. latency: pushes single-message transactions one at a time and measures push → the
//!    `messaging.message.created` of that message received by a NATS subscriber.
//!
//! Run it with `scripts/bench-relay.sh`, which sets everything up.

#[path = "support.rs"]
mod support;

use support::{percentile, var};

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};

fn event(room_id: &str, id: &str, body: &str) -> Value {
    json!({
        "type": "m.room.message", "event_id": id, "room_id": room_id,
        "sender": "@alice:localhost", "origin_server_ts": 1_763_000_000_000_u64,
        "content": {"msgtype": "m.text", "body": body},
    })
}

#[tokio::main]
async fn main() {
    let url = var("BENCH_BRIDGE_URL", Some("http://127.0.0.1:16125"));
    let token = var("BENCH_HS_TOKEN", None);
    let database_url = var("BENCH_DATABASE_URL", None);
    let nats = var("BENCH_NATS_URL", Some("nats://127.0.0.1:4222"));
    let room_id = var("BENCH_ROOM_ID", Some("!bench:localhost"));
    let total: usize = var("BENCH_EVENTS", Some("50000")).parse().unwrap();
    let singles: usize = var("BENCH_SINGLES", Some("300")).parse().unwrap();
    let run = format!("{:08x}", rand::random::<u32>());
    let http = reqwest::Client::new();
    let db = sqlx::PgPool::connect(&database_url).await.unwrap();
    let push = |txn: String, events: Vec<Value>| {
        let http = http.clone();
        let url = url.clone();
        let token = token.clone();
        async move {
            let response = http
                .put(format!("{url}/_matrix/app/v1/transactions/{txn}"))
                .bearer_auth(token)
                .json(&json!({"events": events}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    };

    // 1. Throughput.
    let body = "Повідомлення: the energy cooperative meets on Thursday at the square";
    let started = Instant::now();
    let mut n = 0;
    while n < total {
        let events = (n..(n + 100).min(total))
            .map(|i| event(&room_id, &format!("$relay-{run}-{i}"), body))
            .collect();
        push(format!("relay-{run}-{n}"), events).await;
        n += 100;
    }
    let pushed = started.elapsed();
    loop {
        let lag: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages WHERE seq > (SELECT seq FROM relay_progress)",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if lag == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let relayed = started.elapsed();
    println!("relay benchmark: {total} messages pushed in transactions of 100");
    println!(
        "  pushed and acknowledged in   : {:.2} s ({:.0} events/s)",
        pushed.as_secs_f64(),
        total as f64 / pushed.as_secs_f64()
    );
    println!(
        "  all stored by JetStream in   : {:.2} s ({:.0} events/s end to end)",
        relayed.as_secs_f64(),
        total as f64 / relayed.as_secs_f64()
    );

    // 2. Latency, one message at a time.
    let client = async_nats::connect(&nats).await.unwrap();
    let mut created = client.subscribe("messaging.message.created").await.unwrap();
    client.flush().await.unwrap();
    let mut latencies = Vec::with_capacity(singles);
    for i in 0..singles + 20 {
        let id = format!("$single-{run}-{i}");
        let started = Instant::now();
        push(
            format!("single-{run}-{i}"),
            vec![event(&room_id, &id, "one")],
        )
        .await;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), created.next())
                .await
                .expect("published within 10 s")
                .unwrap();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            if v["matrix_event_id"] == id.as_str() {
                break;
            }
        }
        if i >= 20 {
            latencies.push(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies.sort();
    println!(
        "  push → NATS subscriber, one at a time: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
}
