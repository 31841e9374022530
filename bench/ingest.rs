//! Ingest load generator: plays Synapse against a running bridge — one transaction in
//! flight, EVENTS_PER_TXN `m.room.message` events of realistic size each — and prints
//! events/s and acknowledgement latency. At the end it checks in Postgres that every
//! event sent is indexed (unless BENCH_DATABASE_URL is unset: a peer that stores nothing,
//! for `scripts/bench-compare.sh`). Run it with `scripts/bench-ingest.sh`, which sets
//! everything up.

#[path = "support.rs"]
mod support;

use support::{cpu_time, percentile, postgres_cpu, postgres_cpu_since, var};

use std::time::{Duration, Instant};

use serde_json::json;

/// A message as Synapse pushes it: ~900 bytes of JSON, like a chat line with formatting.
/// Built once as a template so the generator spends its CPU sending, not formatting.
fn event_template(room_id: &str) -> (String, String) {
    let body = "Повідомлення: the energy cooperative meets on Thursday at the square; \
                bring your ideas for the solar roof and the shared battery. Agenda and notes \
                are in the room topic. Дякую!";
    let event = json!({
        "type": "m.room.message",
        "event_id": "@@ID@@",
        "room_id": room_id,
        "sender": "@alice:localhost",
        "origin_server_ts": 1_763_000_000_000_u64,
        "content": {
            "msgtype": "m.text",
            "body": body,
            "format": "org.matrix.custom.html",
            "formatted_body": format!("<p>{body}</p>"),
            "m.mentions": {},
        },
        "unsigned": {"age": 12},
        "hashes": {"sha256": "kD6oU8vSN1sBCnIqmTsLw0iBMbo1N9R2vGZsaXsRANU"},
        "signatures": {"localhost": {"ed25519:a_AbCd": "m2m5+QyBSXnLFJUDThhv/3Qs6qEzrqY0kUdnD0rBCqdl/9ug0bkUcgTmIYwbqc4UZJtUoX4d5ZbRy+yIeVvjDg"}},
    })
    .to_string();
    let (before, after) = event.split_once("@@ID@@").expect("placeholder");
    (before.to_owned(), after.to_owned())
}

fn transaction_body(template: &(String, String), run: &str, first: u64, count: u64) -> Vec<u8> {
    let mut body =
        String::with_capacity((template.0.len() + template.1.len() + 48) * count as usize + 16);
    body.push_str(r#"{"events":["#);
    for n in first..first + count {
        if n > first {
            body.push(',');
        }
        body.push_str(&template.0);
        body.push_str(&format!("${run}_{n}_aBcDeFgHiJkLmNoPqRsTuVwXyZ"));
        body.push_str(&template.1);
    }
    body.push_str("]}");
    body.into_bytes()
}

#[tokio::main]
async fn main() {
    let url = var("BENCH_BRIDGE_URL", Some("http://127.0.0.1:16125"));
    let token = var("BENCH_HS_TOKEN", None);
    let database_url = std::env::var("BENCH_DATABASE_URL").ok();
    let room_id = var("BENCH_ROOM_ID", Some("!bench:localhost"));
    let per_txn: u64 = var("EVENTS_PER_TXN", Some("100")).parse().unwrap();
    let seconds: u64 = var("BENCH_SECONDS", Some("20")).parse().unwrap();
    let warmup = Duration::from_secs(3);

    let run = format!("{:08x}", rand::random::<u32>());
    let client = reqwest::Client::new();
    // Index lag, sampled: the last event of the latest acknowledged transaction, polled
    // for in the index every millisecond until it is there (as a history page would see it).
    let (acked_tx, acked_rx) = tokio::sync::watch::channel::<Option<(String, Instant)>>(None);
    // The server's CPU (and, with a database, Postgres's) per event: what the figure costs,
    // on a machine whose other load varies. The bench's own backend (one connection, for
    // the lag samples and the final count) is left out.
    let server_pid = std::env::var("BENCH_BRIDGE_PID").ok();
    let pool = match &database_url {
        Some(url) => Some(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .unwrap(),
        ),
        None => None,
    };
    let bench_backend = match &pool {
        Some(pool) => {
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(pool)
                .await
                .unwrap();
            vec![pid.to_string()]
        }
        None => Vec::new(),
    };
    // Postgres is measured only when the server uses it.
    let cpu_now = || {
        server_pid.as_deref().map(|pid| {
            let postgres = pool.as_ref().map(|_| postgres_cpu(&bench_backend));
            (cpu_time(pid), postgres.unwrap_or_default())
        })
    };
    let lag_sampler = pool
        .clone()
        .map(|pool| tokio::spawn(sample_index_lag(pool, acked_rx)));
    let mut cpu_at_start = None;
    let template = event_template(&room_id);
    let mut latencies = Vec::new();
    let mut sent = 0_u64;
    let mut measured_events = 0_u64;
    let start = Instant::now();
    let mut measure_start = None;
    let mut txn = 0_u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= warmup + Duration::from_secs(seconds) {
            break;
        }
        let body = transaction_body(&template, &run, sent, per_txn);
        txn += 1;
        let t0 = Instant::now();
        let response = client
            .put(format!("{url}/_matrix/app/v1/transactions/{run}-{txn}"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("bridge reachable");
        assert_eq!(
            response.status(),
            200,
            "transaction refused: {:?}",
            response.text().await
        );
        let latency = t0.elapsed();
        sent += per_txn;
        if elapsed >= warmup {
            let last = format!("${run}_{}_aBcDeFgHiJkLmNoPqRsTuVwXyZ", sent - 1);
            acked_tx.send_replace(Some((last, Instant::now())));
        }
        if elapsed >= warmup {
            if measure_start.is_none() {
                measure_start = Some(t0);
                cpu_at_start = cpu_now();
            }
            latencies.push(latency);
            measured_events += per_txn;
        }
    }
    let wall = measure_start.expect("ran past warm-up").elapsed();
    latencies.sort();
    drop(acked_tx);
    let mut lags = match lag_sampler {
        Some(sampler) => sampler.await.unwrap(),
        None => Vec::new(),
    };
    lags.sort();
    let indexed: Option<i64> = match &pool {
        Some(pool) => {
            // Acknowledged is durable; indexed follows within moments. Wait (bounded) for
            // the indexer to finish the tail before counting.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM messages WHERE matrix_event_id LIKE $1",
                )
                .bind(format!("${run}_%"))
                .fetch_one(pool)
                .await
                .unwrap();
                if n as u64 >= sent || Instant::now() > deadline {
                    break Some(n);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        None => None,
    };
    // Includes indexing the tail, and the warm-up's spill into the measured time.
    let cpu = cpu_at_start
        .zip(cpu_now())
        .map(|((server0, pg0), (server1, pg1))| {
            let per_event = |d: Duration| d.as_secs_f64() * 1e6 / measured_events as f64;
            (
                per_event(server1.saturating_sub(server0)),
                per_event(postgres_cpu_since(&pg0, &pg1)),
            )
        });
    println!("ingest benchmark: {per_txn} events per transaction, one transaction in flight");
    println!("  transactions measured : {}", latencies.len());
    println!(
        "  events/s (sustained)  : {:.0}",
        measured_events as f64 / wall.as_secs_f64()
    );
    println!(
        "  ack latency p50       : {:.2} ms",
        percentile(&latencies, 50.0).as_secs_f64() * 1e3
    );
    println!(
        "  ack latency p99       : {:.2} ms",
        percentile(&latencies, 99.0).as_secs_f64() * 1e3
    );
    println!(
        "  ack latency max       : {:.2} ms",
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    if !lags.is_empty() {
        println!(
            "  index lag p50 / p99   : {:.2} / {:.2} ms (acknowledged → visible, {} sampled)",
            percentile(&lags, 50.0).as_secs_f64() * 1e3,
            percentile(&lags, 99.0).as_secs_f64() * 1e3,
            lags.len()
        );
        println!(
            "  index lag max         : {:.2} ms",
            lags.last().unwrap().as_secs_f64() * 1e3
        );
    }
    match cpu {
        Some((server, postgres)) if pool.is_some() => println!(
            "  CPU per event         : {server:.1} µs server + {postgres:.1} µs Postgres = {:.1} µs",
            server + postgres
        ),
        Some((server, _)) => println!("  CPU per event         : {server:.1} µs server"),
        None => {}
    }
    match indexed {
        Some(indexed) => {
            println!("  events sent / indexed : {sent} / {indexed}");
            assert_eq!(
                indexed as u64, sent,
                "every acknowledged event must be indexed"
            );
        }
        None => {
            println!("  events sent           : {sent} (a peer that stores nothing: not checked)")
        }
    }
}

/// Polls the index for the latest acknowledged event until it is visible; one sample per
/// acknowledged transaction the sampler gets to (it skips those it is too busy for).
async fn sample_index_lag(
    pool: sqlx::PgPool,
    mut acked: tokio::sync::watch::Receiver<Option<(String, Instant)>>,
) -> Vec<Duration> {
    let mut lags = Vec::new();
    while acked.changed().await.is_ok() {
        let Some((event_id, at)) = acked.borrow_and_update().clone() else {
            continue;
        };
        loop {
            let visible: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE matrix_event_id = $1)",
            )
            .bind(&event_id)
            .fetch_one(&pool)
            .await
            .unwrap();
            if visible {
                lags.push(at.elapsed());
                break;
            }
            if at.elapsed() > Duration::from_secs(30) {
                panic!("{event_id} not indexed 30 s after its acknowledgement");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    lags
}
