//! Channel list benchmark: one channel of 100,000 indexed messages and 20 of 1,000 (loaded
//! with `COPY` once; a second run reuses them), a person who has joined all 21, then
//! `GET /api/messaging/channels` through the running bridge with their unread and mention
//! counts and last messages, in three cases: read up to 50 messages before the end of
//! the large channel (the usual case), never read anything (every count stops at 1,000),
//! and by activity. Prints p50/p99/max latency of each.
//! Run it with `scripts/bench-unread.sh`, which sets everything up.

#[path = "support.rs"]
mod support;

use support::{loaded_rows_are_settled, percentile, var};

use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection};

const LARGE: usize = 100_000;
const SMALL_CHANNELS: usize = 20;
const SMALL: usize = 1_000;
const READER: &str = "@bench:localhost";

fn channel(c: usize) -> String {
    if c == 0 {
        "room_city_unread_large".to_owned()
    } else {
        format!("room_city_unread_{c}")
    }
}

async fn load(db: &mut PgConnection) {
    let have: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE channel_id LIKE 'room_city_unread%'",
    )
    .fetch_one(&mut *db)
    .await
    .unwrap();
    if have >= (LARGE + SMALL_CHANNELS * SMALL) as i64 {
        println!("unread: {have} messages already loaded");
        return;
    }
    let started = Instant::now();
    for c in 0..=SMALL_CHANNELS {
        let id = channel(c);
        let slug = id.trim_start_matches("room_city_").to_owned();
        let room = format!("!{slug}:localhost");
        sqlx::query(
            "INSERT INTO city_rooms (id, slug, name, matrix_room_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(&slug)
        .bind(format!("Unread {c}"))
        .bind(&room)
        .execute(&mut *db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO room_members (matrix_room_id, user_id, room_id, membership, display_name, \
                                       event_id, event_ts) \
             VALUES ($1, $2, $3, 'join', 'Bench Reader', $4, 0) ON CONFLICT DO NOTHING",
        )
        .bind(&room)
        .bind(READER)
        .bind(&id)
        .bind(format!("$join_{slug}"))
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
    for c in 0..=SMALL_CHANNELS {
        let id = channel(c);
        let slug = id.trim_start_matches("room_city_").to_owned();
        for n in 0..if c == 0 { LARGE } else { SMALL } {
            let user = n % 500;
            // One message in ten names the reader.
            let text = if n % 10 == 0 {
                "bench, the energy cooperative meets on Thursday; bring ideas"
            } else {
                "the energy cooperative meets on Thursday at the square; bring ideas"
            };
            chunk.push_str(&format!(
                "{id}\t!{slug}:localhost\t$u{c}_{n}_aBcDeFgHiJkLmNoPqRsTuVw\tuser:u{user}\t\
                 @u{user}:localhost\thuman\tm.text\tПовідомлення {n}: {text}\t\
                 2026-01-01 00:00:00+00\n"
            ));
            if chunk.len() > (4 << 20) - 4096 {
                copy.send(chunk.as_bytes()).await.unwrap();
                chunk.clear();
            }
        }
    }
    copy.send(chunk.as_bytes()).await.unwrap();
    let rows = copy.finish().await.unwrap();
    loaded_rows_are_settled(db).await;
    sqlx::query("VACUUM ANALYZE messages")
        .execute(&mut *db)
        .await
        .unwrap();
    println!(
        "unread: loaded {rows} messages into {} channels in {:.1} s",
        SMALL_CHANNELS + 1,
        started.elapsed().as_secs_f64()
    );
}

/// Read positions: none (never read), or 50 messages before the end of the large channel
/// and at the end of the others.
async fn read_positions(db: &mut PgConnection, read: bool) {
    sqlx::query("DELETE FROM read_positions WHERE user_id = $1")
        .bind(READER)
        .execute(&mut *db)
        .await
        .unwrap();
    if !read {
        return;
    }
    sqlx::query(
        "INSERT INTO read_positions (user_id, room_id, event_id, seq) \
         SELECT $1, channel_id, \
                (array_agg(matrix_event_id ORDER BY seq DESC))[CASE WHEN channel_id = $2 THEN 51 ELSE 1 END], \
                (array_agg(seq ORDER BY seq DESC))[CASE WHEN channel_id = $2 THEN 51 ELSE 1 END] \
         FROM messages WHERE channel_id LIKE 'room_city_unread%' GROUP BY channel_id",
    )
    .bind(READER)
    .bind(channel(0))
    .execute(&mut *db)
    .await
    .unwrap();
}

async fn measure(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    path: &str,
    requests: usize,
) -> (Vec<Duration>, serde_json::Value) {
    let mut latencies = Vec::with_capacity(requests);
    let mut last = serde_json::Value::Null;
    for i in 0..requests + 50 {
        let started = Instant::now();
        let response = client
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        last = response.json().await.unwrap();
        if i >= 50 {
            latencies.push(started.elapsed());
        }
    }
    latencies.sort();
    (latencies, last)
}

fn large(list: &serde_json::Value) -> (i64, i64) {
    let entry = list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == channel(0).as_str())
        .expect("the large channel listed");
    (
        entry["unread_count"].as_i64().unwrap(),
        entry["mention_count"].as_i64().unwrap(),
    )
}

#[tokio::main]
async fn main() {
    let url = var("BENCH_BRIDGE_URL", Some("http://127.0.0.1:16125"));
    let database_url = var("BENCH_DATABASE_URL", None);
    let secret = var("BENCH_JWT_SECRET", None);
    let requests: usize = var("BENCH_REQUESTS", Some("1000")).parse().unwrap();

    let mut db = PgConnection::connect(&database_url).await.unwrap();
    load(&mut db).await;
    let claims =
        serde_json::json!({"sub": "user:bench", "exp": chrono::Utc::now().timestamp() + 3600});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let client = reqwest::Client::new();
    for (case, read, path) in [
        ("read to 50 before the end", true, "/api/messaging/channels"),
        (
            "never read (counts capped)",
            false,
            "/api/messaging/channels",
        ),
        (
            "by activity, read to 50 before the end",
            true,
            "/api/messaging/channels?sort=activity",
        ),
    ] {
        read_positions(&mut db, read).await;
        let (latencies, list) = measure(&client, &url, &token, path, requests).await;
        let (unread, mentions) = large(&list);
        println!(
            "unread: {requests} channel lists ({} channels, one of {LARGE} messages), {case}: \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (large channel: {unread} unread, {mentions} mentions)",
            list["channels"].as_array().unwrap().len(),
            percentile(&latencies, 50.0).as_secs_f64() * 1e3,
            percentile(&latencies, 99.0).as_secs_f64() * 1e3,
            latencies.last().unwrap().as_secs_f64() * 1e3,
        );
    }
}
