//! Ingest load generator: plays Synapse against a running server — one transaction in
//! flight, EVENTS_PER_TXN `m.room.message` events of realistic size each — and prints
//! events/s, acknowledgement latency and CPU per event. Run it with
//! `scripts/bench-ingest.sh` or `scripts/bench-compare.sh`, which set everything up.
//!
//! - BENCH_DATABASE_URL: the database the server writes to. When set, the CPU of the
//!   Postgres processes working for it and of the cluster's background processes (WAL
//!   writer, checkpointer; not the benchmark's own connections, not other databases'
//!   backends: `support::PostgresCpu`) is counted with the server's,
//!   and at the end every event sent must be in BENCH_STORED_IN (`table.column` of the
//!   event id; default `messages.matrix_event_id`, the bridge's index). Unset: a server
//!   that stores nothing.
//! - BENCH_WAIT_FOR: the work the bridge does after its acknowledgement that must be done
//!   before the CPU is read, comma-separated: `index` (the last event sent is in
//!   `messages`), `search` (it has its search vector: written with the row), `relay`
//!   (`relay_progress` at the last message and, with BENCH_NATS_URL, the JetStream stream
//!   BENCH_NATS_STREAM holding one more message per event). With it, the warm-up's backlog
//!   is worked off before the measured load starts (the CPU counted is the measured
//!   events' own), and "completed" events/s is the events over the time until everything
//!   caught up. Without it, both figures end at the last acknowledgement (for a server
//!   that commits before it answers, its last commit).
//! - BENCH_BRIDGE_PID: the server process whose CPU is counted; BENCH_NATS_PID:
//!   nats-server, whose CPU is reported apart.
//! - BENCH_INDEX_LAG=0: no sampling of the index lag (one query every millisecond while an
//!   acknowledged event is not yet in the index, on the machine the server shares).

#[path = "support.rs"]
mod support;

use support::{PostgresCpu, bench_pool, cpu_time, percentile, postgres_cpu_since, var};

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde_json::json;

fn event_template(room_id: &str) -> (String, String) {
    let body = "Повідомлення: the energy cooperative meets on Thursday at the square; \
                bring your ideas for the solar roof and the shared battery. Agenda and notes \
                are in the room topic. Дякую!";
    let event = json!({
        "type": "m.room.message",
        "event_id": "@@ID@@",
        "room_id": room_id,
        "sender": "@alice:localhost",
        "origin_server_ts": SENT_PLACEHOLDER,
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

/// Stands for `origin_server_ts` in the template: each transaction's events are stamped
/// with the time it is pushed, as Synapse's are (a late local event is what the bridge
/// takes for a sign of Synapse recovering, and reads the rooms back for).
const SENT_PLACEHOLDER: u64 = 1_000_000_000_000;

fn transaction_body(template: &(String, String), run: &str, first: u64, count: u64) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
        .to_string();
    let placeholder = SENT_PLACEHOLDER.to_string();
    let template = (
        template.0.replace(&placeholder, &now),
        template.1.replace(&placeholder, &now),
    );
    let mut body =
        String::with_capacity((template.0.len() + template.1.len() + 48) * count as usize + 16);
    body.push_str(r#"{"events":["#);
    for n in first..first + count {
        if n > first {
            body.push(',');
        }
        body.push_str(&template.0);
        body.push_str(&event_id(run, n));
        body.push_str(&template.1);
    }
    body.push_str("]}");
    body.into_bytes()
}

/// The id of the `n`th event of run `run`.
fn event_id(run: &str, n: u64) -> String {
    format!("${run}_{n}_aBcDeFgHiJkLmNoPqRsTuVwXyZ")
}

/// What the bridge does after the acknowledgement, to wait for (BENCH_WAIT_FOR).
#[derive(Clone, Copy, Default)]
struct Stages {
    index: bool,
    search: bool,
    relay: bool,
}

impl Stages {
    fn parse(list: &str) -> Self {
        let mut stages = Self::default();
        for stage in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match stage {
                "index" => stages.index = true,
                "search" => stages.search = true,
                "relay" => stages.relay = true,
                other => panic!("BENCH_WAIT_FOR: no stage {other} (index, search, relay)"),
            }
        }
        stages
    }

    fn wanted(self) -> Vec<&'static str> {
        [
            ("index", self.index),
            ("search", self.search),
            ("relay", self.relay),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
}

/// The load: transactions pushed one at a time.
struct Load {
    client: reqwest::Client,
    url: String,
    token: String,
    template: (String, String),
    run: String,
    per_txn: u64,
    sent: u64,
    txn: u64,
}

impl Load {
    /// Pushes the next transaction and waits for its 200; how long that took.
    async fn push(&mut self) -> Duration {
        let body = transaction_body(&self.template, &self.run, self.sent, self.per_txn);
        self.txn += 1;
        let t0 = Instant::now();
        let response = self
            .client
            .put(format!(
                "{}/_matrix/app/v1/transactions/{}-{}",
                self.url, self.run, self.txn
            ))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("server reachable");
        assert_eq!(
            response.status(),
            200,
            "transaction refused: {:?}",
            response.text().await
        );
        self.sent += self.per_txn;
        t0.elapsed()
    }

    /// The last event pushed.
    fn last_event(&self) -> String {
        event_id(&self.run, self.sent - 1)
    }
}

/// A CPU reading: the server's, each Postgres process's working for its database (when it
/// uses one, [`PostgresCpu`]), nats-server's.
#[derive(Clone)]
struct Cpu {
    server: Duration,
    postgres: HashMap<String, Duration>,
    nats: Duration,
}

/// Reads the CPU time of what is measured.
struct Meter {
    server: Option<String>,
    nats: Option<String>,
    postgres: Option<PostgresCpu>,
}

impl Meter {
    async fn read(&self) -> Option<Cpu> {
        let server = cpu_time(self.server.as_deref()?);
        Some(Cpu {
            server,
            postgres: match &self.postgres {
                Some(postgres) => postgres.read().await,
                None => Default::default(),
            },
            nats: self.nats.as_deref().map(cpu_time).unwrap_or_default(),
        })
    }
}

/// CPU per event between two readings: (server, Postgres, nats-server), in µs.
fn per_event(from: &Cpu, to: &Cpu, events: u64) -> (f64, f64, f64) {
    let us = |d: Duration| d.as_secs_f64() * 1e6 / events as f64;
    (
        us(to.server.saturating_sub(from.server)),
        us(postgres_cpu_since(&from.postgres, &to.postgres)),
        us(to.nats.saturating_sub(from.nats)),
    )
}

#[tokio::main]
async fn main() {
    let url = var("BENCH_BRIDGE_URL", Some("http://127.0.0.1:16125"));
    let token = var("BENCH_HS_TOKEN", None);
    let database_url = std::env::var("BENCH_DATABASE_URL").ok();
    let room_id = var("BENCH_ROOM_ID", Some("!bench:localhost"));
    let per_txn: u64 = var("EVENTS_PER_TXN", Some("100")).parse().unwrap();
    let seconds: u64 = var("BENCH_SECONDS", Some("20")).parse().unwrap();
    let stored_in = var("BENCH_STORED_IN", Some("messages.matrix_event_id"));
    let (table, id_column) = stored_in
        .rsplit_once('.')
        .expect("BENCH_STORED_IN is table.column");
    let stages = Stages::parse(&var("BENCH_WAIT_FOR", Some("")));
    let sample_lag = var("BENCH_INDEX_LAG", Some("1")) != "0" && table == "messages";
    let warmup = Duration::from_secs(3);
    assert!(
        stages.wanted().is_empty() || database_url.is_some(),
        "BENCH_WAIT_FOR needs BENCH_DATABASE_URL"
    );

    let run = format!("{:08x}", rand::random::<u32>());
    let server_pid = std::env::var("BENCH_BRIDGE_PID").ok();
    let nats_pid = std::env::var("BENCH_NATS_PID").ok();
    // The benchmark's own connections (lag samples, catching up, the final count) are left
    // out of Postgres's CPU.
    let pool = match &database_url {
        Some(url) => Some(bench_pool(url, 1).await),
        None => None,
    };
    let mut stream = match std::env::var("BENCH_NATS_URL").ok() {
        Some(nats_url) if stages.relay => {
            let client = async_nats::connect(nats_url).await.expect("NATS");
            let stream_name = var("BENCH_NATS_STREAM", Some("CITY_EVENTS"));
            Some(
                async_nats::jetstream::new(client)
                    .get_stream(&stream_name)
                    .await
                    .unwrap_or_else(|e| panic!("the stream {stream_name}: {e}")),
            )
        }
        _ => None,
    };
    let meter = Meter {
        server: server_pid.clone(),
        nats: nats_pid.clone(),
        postgres: match &database_url {
            Some(url) if server_pid.is_some() => Some(PostgresCpu::track(url).await),
            _ => None,
        },
    };
    // Index lag, sampled: the last event of the latest acknowledged transaction, polled
    // for in the index every millisecond until it is there (as a history page would see it).
    let (acked_tx, acked_rx) = tokio::sync::watch::channel::<Option<(String, Instant)>>(None);
    let lag_sampler = pool
        .clone()
        .filter(|_| sample_lag)
        .map(|pool| tokio::spawn(sample_index_lag(pool, acked_rx)));
    let mut load = Load {
        client: reqwest::Client::new(),
        url,
        token,
        template: event_template(&room_id),
        run: run.clone(),
        per_txn,
        sent: 0,
        txn: 0,
    };

    // Warm-up (connections, caches, a peer's JIT), then what it left to do.
    let start = Instant::now();
    while start.elapsed() < warmup {
        load.push().await;
    }
    let mut stream_before = 0;
    if let Some(pool) = &pool
        && !stages.wanted().is_empty()
    {
        catch_up(pool, stages, &load.last_event(), None, Instant::now()).await;
        if let Some(stream) = stream.as_mut() {
            stream_before = stream.info().await.unwrap().state.messages;
        }
    }

    let cpu_at_start = meter.read().await;
    let first = load.sent;
    let mut latencies = Vec::new();
    let measure_start = Instant::now();
    while measure_start.elapsed() < Duration::from_secs(seconds) {
        latencies.push(load.push().await);
        acked_tx.send_replace(Some((load.last_event(), Instant::now())));
    }
    let acked_wall = measure_start.elapsed();
    let load_end = Instant::now();
    let cpu_at_ack = meter.read().await;
    let measured_events = load.sent - first;
    drop(acked_tx);
    let mut lags = match lag_sampler {
        Some(sampler) => sampler.await.unwrap(),
        None => Vec::new(),
    };
    lags.sort();
    let caught_up = match &pool {
        Some(pool) if !stages.wanted().is_empty() => {
            let target = stream_before + measured_events;
            catch_up(
                pool,
                stages,
                &load.last_event(),
                stream.as_mut().map(|s| (s, target)),
                load_end,
            )
            .await
        }
        _ => Vec::new(),
    };
    let (completed_wall, cpu_at_end) = if caught_up.is_empty() {
        (acked_wall, cpu_at_ack.clone())
    } else {
        (acked_wall + load_end.elapsed(), meter.read().await)
    };
    let stream_after = match stream.as_mut() {
        Some(stream) => Some(stream.info().await.unwrap().state.clone()),
        None => None,
    };

    // Every event sent is stored (the index follows the acknowledgement within moments
    // when nothing waited for it).
    let stored: Option<i64> = match &pool {
        Some(pool) => {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let n: i64 = sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM {table} WHERE {id_column} LIKE $1"
                ))
                .bind(format!("${run}_%"))
                .fetch_one(pool)
                .await
                .unwrap();
                if n as u64 >= load.sent || Instant::now() > deadline {
                    break Some(n);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        None => None,
    };

    latencies.sort();
    let rate = |wall: Duration| measured_events as f64 / wall.as_secs_f64();
    println!("ingest benchmark: {per_txn} events per transaction, one transaction in flight");
    println!("  transactions measured   : {}", latencies.len());
    println!("  events/s (acknowledged) : {:.0}", rate(acked_wall));
    if caught_up.is_empty() {
        println!(
            "  events/s (completed)    : {:.0} (nothing waited for after the last acknowledgement)",
            rate(completed_wall)
        );
    } else {
        println!(
            "  events/s (completed)    : {:.0} (until {} caught up, {:.0} ms after the last acknowledgement)",
            rate(completed_wall),
            stages.wanted().join(", "),
            (completed_wall - acked_wall).as_secs_f64() * 1e3
        );
        let each: Vec<String> = caught_up
            .iter()
            .map(|(name, at)| format!("{name} +{:.0} ms", at.as_secs_f64() * 1e3))
            .collect();
        println!("  caught up after the load: {}", each.join(", "));
    }
    if let Some(state) = &stream_after {
        println!(
            "  JetStream stream        : {} messages (last sequence {}), {} more than before the measured load",
            state.messages,
            state.last_sequence,
            state.messages - stream_before
        );
    }
    println!(
        "  ack latency p50         : {:.2} ms",
        percentile(&latencies, 50.0).as_secs_f64() * 1e3
    );
    println!(
        "  ack latency p99         : {:.2} ms",
        percentile(&latencies, 99.0).as_secs_f64() * 1e3
    );
    println!(
        "  ack latency max         : {:.2} ms",
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    if !lags.is_empty() {
        println!(
            "  index lag p50 / p99     : {:.2} / {:.2} ms (acknowledged → visible, {} sampled)",
            percentile(&lags, 50.0).as_secs_f64() * 1e3,
            percentile(&lags, 99.0).as_secs_f64() * 1e3,
            lags.len()
        );
        println!(
            "  index lag max           : {:.2} ms",
            lags.last().unwrap().as_secs_f64() * 1e3
        );
    }
    if let (Some(start), Some(ack), Some(end)) = (&cpu_at_start, &cpu_at_ack, &cpu_at_end) {
        let line = |label: &str, (server, postgres, _): (f64, f64, f64)| match &pool {
            Some(_) => println!(
                "  {label}: {server:.1} µs server + {postgres:.1} µs Postgres = {:.1} µs",
                server + postgres
            ),
            None => println!("  {label}: {server:.1} µs server"),
        };
        if !caught_up.is_empty() {
            line(
                "CPU per event, to the ack",
                per_event(start, ack, measured_events),
            );
        }
        let total = per_event(start, end, measured_events);
        line("CPU per event           ", total);
        println!(
            "  CPU per event (total)   : {:.1} µs{}",
            total.0 + total.1,
            if caught_up.is_empty() {
                " (to the last acknowledgement)"
            } else {
                " (to the end of the work waited for)"
            }
        );
        if nats_pid.is_some() {
            println!(
                "  nats-server CPU per event: {:.1} µs (not in the total)",
                total.2
            );
        }
    }
    match stored {
        Some(stored) => {
            println!("  events sent / stored    : {} / {stored}", load.sent);
            assert_eq!(
                stored as u64, load.sent,
                "every acknowledged event must be stored ({stored_in})"
            );
        }
        None => println!(
            "  events sent             : {} (a server that stores nothing: not checked)",
            load.sent
        ),
    }
}

/// Waits until the bridge has done what `stages` names for every event up to
/// `last_event` (and, with a stream, until it holds `target` messages); when each stage
/// caught up, counted from `since`.
async fn catch_up(
    pool: &sqlx::PgPool,
    stages: Stages,
    last_event: &str,
    mut stream: Option<(&mut async_nats::jetstream::stream::Stream, u64)>,
    since: Instant,
) -> Vec<(&'static str, Duration)> {
    let wanted = stages.wanted();
    let mut done: Vec<(&'static str, Duration)> = Vec::new();
    loop {
        // The indexer applies the journal in order: the last event indexed, all are. The
        // relay is then compared with the last message.
        // The last event's search vector: absent while it is not indexed.
        let (searchable, relay, last): (Option<bool>, i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT search IS NOT NULL FROM messages WHERE matrix_event_id = $1), \
                    (SELECT seq FROM relay_progress), (SELECT max(seq) FROM messages)",
        )
        .bind(last_event)
        .fetch_one(pool)
        .await
        .unwrap();
        let indexed = searchable.is_some();
        let at = since.elapsed();
        let last = last.unwrap_or(0);
        let mut reached = vec![
            ("index", indexed),
            ("search", searchable == Some(true)),
            ("relay", indexed && relay >= last),
        ];
        if let Some((stream, target)) = stream.as_mut()
            && reached[2].1
            && !done.iter().any(|(name, _)| *name == "relay")
        {
            // The relay's mark moves once JetStream acknowledged: the stream must agree.
            reached[2].1 = stream.info().await.unwrap().state.messages >= *target;
        }
        for (name, ok) in reached {
            if ok && wanted.contains(&name) && !done.iter().any(|(n, _)| *n == name) {
                done.push((name, at));
            }
        }
        if done.len() == wanted.len() {
            return done;
        }
        assert!(
            at < Duration::from_secs(300),
            "not caught up 300 s after the load: {} of {}",
            done.len(),
            wanted.join(", ")
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
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
