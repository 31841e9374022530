//! History benchmark: loads 1,000,000 indexed messages into 10 channels with `COPY` (once;
//! a second run reuses them), then reads pages of 50 through the running bridge — the
//! newest page and pages deep in the past by cursor — and prints p50/p99/max latency.
//! Run it with `scripts/bench-history.sh`, which sets everything up.

#[path = "support.rs"]
mod support;

use support::{loaded_rows_are_settled, percentile, var};

use std::time::Instant;

use sqlx::{Connection as _, PgConnection};

const CHANNELS: usize = 10;
const PER_CHANNEL: usize = 100_000;

async fn load(db: &mut PgConnection) {
    let have: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE channel_id LIKE 'room_city_bench%'",
    )
    .fetch_one(&mut *db)
    .await
    .unwrap();
    if have >= (CHANNELS * PER_CHANNEL) as i64 {
        println!("history: {have} messages already loaded");
        return;
    }
    let started = Instant::now();
    for c in 0..CHANNELS {
        sqlx::query(
            "INSERT INTO city_rooms (id, slug, name, matrix_room_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(format!("room_city_bench{c}"))
        .bind(format!("bench{c}"))
        .bind(format!("Bench {c}"))
        .bind(format!("!bench{c}:localhost"))
        .execute(&mut *db)
        .await
        .unwrap();
    }
    let mut copy = db
        .copy_in_raw(
            "COPY messages (channel_id, matrix_room_id, matrix_event_id, sender_id, \
             sender_matrix_id, sender_type, msgtype, content_preview, created_at) FROM STDIN",
        )
        .await
        .unwrap();
    let mut chunk = String::with_capacity(4 << 20);
    // Interleaved across channels, as a busy city would push them.
    for n in 0..PER_CHANNEL {
        for c in 0..CHANNELS {
            let user = n % 500;
            chunk.push_str(&format!(
                "room_city_bench{c}\t!bench{c}:localhost\t$h{c}_{n}_aBcDeFgHiJkLmNoPqRsTuVw\t\
                 user:u{user}\t@u{user}:localhost\thuman\tm.text\t\
                 Повідомлення {n}: the energy cooperative meets on Thursday at the square; bring ideas\t\
                 2026-01-01 00:00:00+00\n"
            ));
        }
        if chunk.len() > (4 << 20) - 4096 {
            copy.send(chunk.as_bytes()).await.unwrap();
            chunk.clear();
        }
    }
    copy.send(chunk.as_bytes()).await.unwrap();
    let rows = copy.finish().await.unwrap();
    loaded_rows_are_settled(db).await;
    sqlx::query("ANALYZE messages")
        .execute(&mut *db)
        .await
        .unwrap();
    println!(
        "history: loaded {rows} messages into {CHANNELS} channels in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let url = var("BENCH_BRIDGE_URL", Some("http://127.0.0.1:16125"));
    let database_url = var("BENCH_DATABASE_URL", None);
    let secret = var("BENCH_JWT_SECRET", None);
    let requests: usize = var("BENCH_REQUESTS", Some("2000")).parse().unwrap();

    let mut db = PgConnection::connect(&database_url).await.unwrap();
    load(&mut db).await;
    // Cursors spread over the whole history of each channel.
    let seqs: Vec<(String, i64)> = sqlx::query_as(
        "SELECT channel_id, seq FROM messages TABLESAMPLE SYSTEM (1) \
         WHERE channel_id LIKE 'room_city_bench%' LIMIT 5000",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();

    let claims =
        serde_json::json!({"sub": "user:bench", "exp": chrono::Utc::now().timestamp() + 3600});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(requests);
    for i in 0..requests + 100 {
        let (path, deep) = if i % 2 == 0 {
            (
                format!(
                    "/api/messaging/channels/bench{}/messages?limit=50",
                    i % CHANNELS
                ),
                false,
            )
        } else {
            let (channel, seq) = &seqs[i % seqs.len()];
            (
                format!("/api/messaging/channels/{channel}/messages?limit=50&before=1-{seq:x}"),
                true,
            )
        };
        let started = Instant::now();
        let response = client
            .get(format!("{url}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let body: serde_json::Value = response.json().await.unwrap();
        let elapsed = started.elapsed();
        let got = body["messages"].as_array().map_or(0, Vec::len);
        assert!(got == 50 || deep, "{path}: {got} messages");
        if i >= 100 {
            latencies.push(elapsed);
        }
    }
    latencies.sort();
    println!(
        "history: {requests} pages of 50 from 1,000,000 messages: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
}
