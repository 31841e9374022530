//! Presence fan-out benchmark: BENCH_CLIENTS WebSocket clients on `/ws/city/presence`
//! while this program plays Synapse, pushing `m.typing` for a mapped room one transaction
//! at a time. Reports delivery latency (transaction sent → update received by a client,
//! over every client and update), the bridge's memory per idle connection and its CPU
//! time per delivered update. One thread (the load generator must cost less than the
//! server on a shared machine).
//! Run it with `scripts/bench-presence.sh`, which sets everything up.

#[path = "support.rs"]
mod support;

use support::{cpu_time, percentile, rss_kib, var};

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = var("BENCH_BRIDGE_ADDR", Some("127.0.0.1:16125"));
    // Where the clients connect: another instance (BRIDGE_ROLE=api) fed by the bus, or the
    // one Synapse pushes to.
    let ws_addr = var("BENCH_WS_ADDR", Some(&addr));
    let token = var("BENCH_HS_TOKEN", None);
    let jwt_secret = var("BENCH_JWT_SECRET", None);
    let pid = var("BENCH_BRIDGE_PID", None);
    let room_id = var("BENCH_ROOM_ID", Some("!bench:localhost"));
    let clients: usize = var("BENCH_CLIENTS", Some("10000")).parse().unwrap();
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
        let url = format!("ws://{ws_addr}/ws/city/presence?token={jwt}");
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        // The snapshot.
        socket.next().await.expect("snapshot").expect("snapshot");
        let sent_at = Arc::clone(&sent_at);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(updates);
            // The same state may come again (the bridge publishes a room's state again
            // when it learns more of it): an update counts when it first arrives.
            let mut got = vec![false; updates];
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let now = Instant::now();
                // The marker user `@bench<k>:` names the update; no full parse needed.
                let Some(start) = text.find("@bench") else {
                    continue;
                };
                let rest = &text[start + 6..];
                let Some(k) = rest.split(':').next().and_then(|k| k.parse::<usize>().ok()) else {
                    continue;
                };
                if let Some(at) = sent_at.get(k).and_then(OnceLock::get)
                    && !std::mem::replace(&mut got[k], true)
                {
                    seen.push((k, now - *at));
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
    // One update first, not measured: the first one through a fresh bus and presence
    // bucket is not the steady state.
    let warm_up = json!({
        "events": [],
        "ephemeral": [{"type": "m.typing", "room_id": room_id, "content": {"user_ids": ["@warm-up:localhost"]}}],
    });
    support::push(&http, &addr, &token, "warm-up", &warm_up).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_time(&pid);
    for k in 0..updates {
        let body = json!({
            "events": [],
            "ephemeral": [{"type": "m.typing", "room_id": room_id, "content": {"user_ids": [format!("@bench{k}:localhost")]}}],
        });
        sent_at[k].set(Instant::now()).expect("set once");
        support::push(&http, &addr, &token, &format!("presence-{k}"), &body).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut latencies = Vec::with_capacity(clients * updates);
    // When each update reached its last client: one late update weighs 1/updates of all
    // deliveries, more than the p99's 1%.
    let mut last = vec![Duration::ZERO; updates];
    for task in tasks {
        if let Ok(Ok(seen)) =
            tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), task).await
        {
            for (k, latency) in seen {
                last[k] = last[k].max(latency);
                latencies.push(latency);
            }
        }
    }
    last.sort();
    let cpu = cpu_time(&pid).saturating_sub(cpu_before);
    latencies.sort();
    let expected = clients * updates;
    println!(
        "presence fan-out benchmark: {clients} WebSocket clients, {updates} typing updates pushed one at a time"
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
            "  server CPU per delivery    : {:.2} µs ({:.2} s over the updates)",
            cpu.as_secs_f64() * 1e6 / latencies.len() as f64,
            cpu.as_secs_f64()
        );
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
        println!(
            "  last client, per update    : {:.2} ms median, {:.2} ms fastest, {:.2} ms slowest",
            percentile(&last, 50.0).as_secs_f64() * 1e3,
            last[0].as_secs_f64() * 1e3,
            last[last.len() - 1].as_secs_f64() * 1e3
        );
    }
    assert_eq!(
        latencies.len(),
        expected,
        "every client must see every update"
    );
}
