//! Send benchmark: what sending through the bridge costs over Synapse's own `/send`.
//! Alternates, one at a time, a message sent by a Matrix client straight to Synapse
//! (`PUT /rooms/{room}/send`) and one sent through `POST /api/messaging/channels/{id}/messages`
//! (which sends as the same user through the puppet registration and answers once the event
//! is indexed), and prints both latency distributions and their difference.
//! Run it with `scripts/bench-send.sh`, which sets everything up.

#[path = "support.rs"]
mod support;

use support::{Sender, percentile, var};

use std::time::{Duration, Instant};

use serde_json::json;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let bridge = var("BENCH_BRIDGE_URL", Some("http://127.0.0.1:16125"));
    let synapse = var("BENCH_SYNAPSE_URL", None);
    let secret = var("BENCH_JWT_SECRET", None);
    let count: usize = var("BENCH_MESSAGES", Some("500")).parse().unwrap();
    let http = reqwest::Client::new();

    let Sender {
        name,
        token,
        jwt,
        channel,
    } = Sender::new(&http, &synapse, &bridge, &secret, "Send benchmark").await;
    let room_id = channel["matrix_room_id"]
        .as_str()
        .expect("channel created")
        .to_owned();
    let room = room_id.replace('!', "%21").replace(':', "%3A");

    let mut direct = Vec::with_capacity(count);
    let mut through = Vec::with_capacity(count);
    for i in 0..count + 20 {
        let started = Instant::now();
        let response = http
            .put(format!(
                "{synapse}/_matrix/client/v3/rooms/{room}/send/m.room.message/d{i}"
            ))
            .bearer_auth(&token)
            .json(&json!({"msgtype": "m.text", "body": format!("direct {i}")}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "direct send: {}",
            response.status()
        );
        let d = started.elapsed();
        let started = Instant::now();
        let response = http
            .post(format!("{bridge}/api/messaging/channels/{name}/messages"))
            .bearer_auth(&jwt)
            .json(&json!({"text": format!("through the bridge {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let t = started.elapsed();
        if i >= 20 {
            direct.push(d);
            through.push(t);
        }
    }
    direct.sort();
    through.sort();
    println!("send benchmark: {count} messages each way, alternating, one at a time");
    for (what, v) in [
        ("Synapse /send directly", &direct),
        ("through the bridge", &through),
    ] {
        println!(
            "  {what:<24}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0)),
            ms(*v.last().unwrap())
        );
    }
    println!(
        "  overhead                : p50 {:+.2} ms, p99 {:+.2} ms",
        ms(percentile(&through, 50.0)) - ms(percentile(&direct, 50.0)),
        ms(percentile(&through, 99.0)) - ms(percentile(&direct, 99.0)),
    );
}
