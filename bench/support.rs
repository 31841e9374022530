//! What the benchmarks share: their settings from the environment, playing Synapse's
//! push, percentiles, and the measured process's memory and CPU time. Each benchmark includes it with
//! `#[path = "support.rs"] mod support;` and uses what it needs.
#![allow(dead_code)] // each benchmark binary uses a part of it

use std::time::Duration;

/// The environment variable `name`, or `default`; missing and no default: the benchmark
/// was not started by its `scripts/bench-*.sh`.
pub fn var(name: &str, default: Option<&str>) -> String {
    std::env::var(name)
        .ok()
        .or_else(|| default.map(ToOwned::to_owned))
        .unwrap_or_else(|| panic!("{name} is required (run the benchmark's scripts/bench-*.sh)"))
}

/// The `p`th percentile of `sorted` (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("bridge process");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// CPU time (user + system) process `pid` has used, from /proc (clock ticks of 10 ms).
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("bridge process");
    stat_ticks(&stat, false)
}

/// User + system ticks of a `/proc/<pid>/stat` line, with its reaped children's too.
fn stat_ticks(stat: &str, with_children: bool) -> Duration {
    // The fields after the command (which is in parentheses and may hold spaces).
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .expect("stat")
        .1
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().unwrap())
        .collect();
    let ticks = fields[0]
        + fields[1]
        + if with_children {
            fields[2] + fields[3]
        } else {
            0
        };
    Duration::from_millis(ticks * 10)
}

/// The name the benchmarks' own Postgres connections give themselves: their backends are
/// left out of the server's Postgres CPU.
pub const BENCH_APPLICATION: &str = "city-bridge-bench";

/// A pool of the benchmark's own connections to `url`, named [`BENCH_APPLICATION`].
pub async fn bench_pool(url: &str, connections: u32) -> sqlx::PgPool {
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("database URL");
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options.application_name(BENCH_APPLICATION))
        .await
        .expect("database")
}

/// The CPU time of the Postgres processes that work for one database: its backends and
/// autovacuum workers, with the cluster's background processes (WAL writer, checkpointer,
/// background writer, which every database shares), but the benchmark's own connections.
/// Other databases' backends on a shared machine are left out. Sampled every 100 ms, so
/// that a process that exits between two readings counts for what it used until its last
/// sample.
#[derive(Clone)]
pub struct PostgresCpu {
    pool: sqlx::PgPool,
    used: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Duration>>>,
}

impl PostgresCpu {
    /// Starts sampling the processes of the database at `url` (a connection of its own).
    pub async fn track(url: &str) -> Self {
        let this = Self {
            pool: bench_pool(url, 1).await,
            used: Default::default(),
        };
        this.sample().await;
        let sampler = this.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                sampler.sample().await;
            }
        });
        this
    }

    async fn sample(&self) {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE (datname = current_database() OR datname IS NULL) AND application_name <> $1",
        )
        .bind(BENCH_APPLICATION)
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        let now: Vec<(String, Duration)> = pids
            .into_iter()
            .filter_map(|pid| {
                // A backend may exit between the listing and the read.
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                Some((pid.to_string(), stat_ticks(&stat, false)))
            })
            .collect();
        let mut used = self.used.lock().unwrap();
        for (pid, ticks) in now {
            let entry = used.entry(pid).or_default();
            *entry = (*entry).max(ticks);
        }
    }

    /// Each process's CPU time now, by pid (one that exited: until its last sample); the
    /// difference of two readings is [`postgres_cpu_since`].
    pub async fn read(&self) -> std::collections::HashMap<String, Duration> {
        self.sample().await;
        self.used.lock().unwrap().clone()
    }
}

/// The Postgres CPU used between two [`PostgresCpu::read`]ings: per process, so one that
/// started or ended in between counts for what it used in between.
pub fn postgres_cpu_since(
    before: &std::collections::HashMap<String, Duration>,
    after: &std::collections::HashMap<String, Duration>,
) -> Duration {
    after
        .iter()
        .map(|(pid, used)| used.saturating_sub(before.get(pid).copied().unwrap_or_default()))
        .sum()
}

/// Pushes `body` to the bridge at `addr` as Synapse would (transaction id `<name>-<random>`)
/// and expects its 200.
pub async fn push(
    http: &reqwest::Client,
    addr: &str,
    token: &str,
    name: &str,
    body: &serde_json::Value,
) {
    let response = http
        .put(format!(
            "http://{addr}/_matrix/app/v1/transactions/{name}-{}",
            rand::random::<u32>()
        ))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 200, "transaction {name} refused");
}

/// A Matrix user registered on `synapse`, their admin JWT (signed with `secret`) and a
/// public channel of theirs made through the bridge (`slug` = their localpart, so one
/// name serves the user, the channel and its path).
pub struct Sender {
    /// The localpart, and the channel's slug.
    pub name: String,
    /// Their Matrix access token.
    pub token: String,
    /// Their DAARION JWT (an admin: a public channel of no microDAO is a city room).
    pub jwt: String,
    /// The channel as the bridge answered its creation.
    pub channel: serde_json::Value,
}

impl Sender {
    /// Registers the user and creates the channel named `channel_name`.
    pub async fn new(
        http: &reqwest::Client,
        synapse: &str,
        bridge: &str,
        secret: &str,
        channel_name: &str,
    ) -> Self {
        use serde_json::{Value, json};
        let name = format!("bench{:08x}", rand::random::<u32>());
        let registered: Value = http
            .post(format!("{synapse}/_matrix/client/v3/register"))
            .json(&json!({"username": name, "password": "bench-password-123",
                          "auth": {"type": "m.login.dummy"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = registered["access_token"]
            .as_str()
            .expect("registered")
            .to_owned();
        let claims = json!({"sub": format!("user:{name}"), "roles": ["admin"],
                            "exp": chrono::Utc::now().timestamp() + 3600});
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        let channel: Value = http
            .post(format!("{bridge}/api/messaging/channels"))
            .bearer_auth(&jwt)
            .json(&json!({"slug": name, "name": channel_name, "visibility": "public"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(channel["matrix_room_id"].is_string(), "{channel}");
        Self {
            name,
            token,
            jwt,
            channel,
        }
    }
}

/// After rows were loaded straight into `messages`: the relay takes them as done (steady
/// state: what was loaded is published already, and it does not work through it during
/// the run).
pub async fn loaded_rows_are_settled(db: &mut sqlx::PgConnection) {
    sqlx::query("UPDATE relay_progress SET seq = (SELECT max(seq) FROM messages)")
        .execute(&mut *db)
        .await
        .unwrap();
}
