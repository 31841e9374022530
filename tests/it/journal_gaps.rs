//! The journal against a failing Postgres: an append that fails once, an append that
//! commits late, and Postgres itself stopped with `-m immediate` mid-stream. Each runs on
//! a private Postgres cluster of the test's own (initdb, pg_ctl), so that it can be broken
//! without touching the suite's database. Every acknowledged event is indexed, once and
//! in order, with no restart of the bridge.

use std::{path::PathBuf, process::Command, time::Duration};

use sqlx::PgPool;

use crate::support::{
    Bridge, MatrixUser, alias, city_room, hs_token, message_event, push_only, unique,
};

/// A Postgres cluster of one test's own, in a temporary directory, on a free port.
struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// initdb and start. Debian's server binaries are required (scripts/services.sh
    /// installs them); a missing one fails the test.
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's PostgreSQL server is installed (/usr/lib/postgresql)")
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = std::env::temp_dir().join(unique("city-bridge-pg-"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self { dir, bin, port };
        if running_as_root() {
            // initdb refuses root: the cluster belongs to Debian's postgres user.
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(&cluster.dir));
        }
        run(cluster
            .as_owner("initdb")
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
            .arg(cluster.data()));
        run(&mut cluster.start_command());
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn as_owner(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// What starts the cluster and waits until it accepts connections.
    fn start_command(&self) -> Command {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=50",
            self.port,
            self.dir.display()
        );
        let mut command = self.as_owner("pg_ctl");
        command
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data())
            .args(["-l"])
            .arg(self.dir.join("log"))
            .args(["-o", &options]);
        command
    }

    /// Starts the cluster again, without blocking the runtime the bridge runs on.
    async fn start_again(&self) {
        run_async(self.start_command()).await;
    }

    /// A crash: every process killed, no checkpoint, recovery at the next start.
    async fn stop_immediately(&self) {
        let mut command = self.as_owner("pg_ctl");
        command
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.data());
        run_async(command).await;
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A fresh database on the cluster, for the bridge.
    async fn database(&self) -> String {
        let admin = PgPool::connect(&self.url("postgres")).await.unwrap();
        sqlx::query("CREATE DATABASE city_bridge")
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        self.url("city_bridge")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .as_owner("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data())
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

fn run(command: &mut Command) {
    let out = command.output().expect("command runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `command`, on tokio's process support: the bridge under test shares this runtime.
async fn run_async(command: Command) {
    let mut command = tokio::process::Command::from(command);
    let out = command.output().await.expect("command runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (Synapse backs off between retries: up to two minutes) until every one of
/// `sent` is indexed, then checks each is there once and in the order sent.
async fn all_indexed_in_order(pool: &PgPool, sent: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    loop {
        let indexed: Vec<String> = sqlx::query_scalar(
            "SELECT matrix_event_id FROM messages WHERE matrix_event_id = ANY($1) ORDER BY seq",
        )
        .bind(sent)
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        if indexed.len() >= sent.len() {
            assert_eq!(indexed, sent, "each message once, in the order sent");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} acknowledged messages never indexed: {:?}",
            sent.len() - indexed.len(),
            sent.len(),
            sent.iter()
                .filter(|e| !indexed.contains(e))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One connection to the private database (the bridge's pool is its own).
async fn look(url: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_append_that_fails_once_stops_nothing() {
    let postgres = PrivatePostgres::start();
    let url = postgres.database().await;
    let bridge = Bridge::start_with(&[("DATABASE_URL", &url)]).await;
    let pool = look(&url).await;
    let slug = city_room(&pool, "Fails once").await;
    let alice = MatrixUser::register("alice").await;
    let room_id = alice.join(&alias(&slug)).await.unwrap();
    let first = alice.send_text(&room_id, "before").await;
    all_indexed_in_order(&pool, std::slice::from_ref(&first)).await;

    // One append fails, once: what a statement timeout, a deadlock or a full disk do. It is
    // a transaction of the test's own, pushed as Synapse pushes: Synapse's own retry of a
    // failed transaction can be lost to a race in its recoverer (a failure while a recovery
    // is finishing leaves the transaction stored and never sent), which is not what this
    // tests. (A sequence, because the failure rolls back anything the trigger writes.)
    sqlx::raw_sql(
        "CREATE SEQUENCE fail_once;
         CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.txn_id = 'fails-once' AND nextval('fail_once') = 1 THEN
             RAISE EXCEPTION 'the append fails once';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER fail_once BEFORE INSERT ON ingest_journal
           FOR EACH ROW EXECUTE FUNCTION fail_once();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let pushed = format!("${}", unique("pushed"));
    let body = serde_json::json!({
        "events": [message_event(&room_id, &pushed, &alice.user_id, "pushed")],
    });
    let (status, _) = push_only("fails-once", &body, Some(&hs_token())).await;
    assert_eq!(status.as_u16(), 500, "not acknowledged: not durable");
    // Retried, as Synapse does: acknowledged.
    let (status, _) = push_only("fails-once", &body, Some(&hs_token())).await;
    assert_eq!(status.as_u16(), 200);
    let mut sent = vec![first, pushed];
    for n in 0..5 {
        sent.push(alice.send_text(&room_id, &format!("after {n}")).await);
    }
    all_indexed_in_order(&pool, &sent).await;
    pool.close().await;
    bridge.stop().await;
}

#[tokio::test]
async fn an_append_committing_late_keeps_its_place() {
    let postgres = PrivatePostgres::start();
    let url = postgres.database().await;
    let bridge = Bridge::start_with(&[("DATABASE_URL", &url)]).await;
    let pool = look(&url).await;
    // The first append lingers after its insert, its row not yet committed (as one whose
    // request was cut off does): the second must wait for it, not take its place or skip it.
    sqlx::raw_sql(
        "CREATE SEQUENCE linger_once;
         CREATE FUNCTION linger_once() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('linger_once') = 1 THEN PERFORM pg_sleep(1.5); END IF;
           RETURN NULL;
         END $$;
         CREATE TRIGGER linger_once AFTER INSERT ON ingest_journal
           FOR EACH ROW EXECUTE FUNCTION linger_once();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let store = bridge.state.store.clone();
    let early = tokio::spawn({
        let store = store.clone();
        async move { store.journal_append("early", b"{\"events\":[]}").await }
    });
    // The early row is inserted and uncommitted: the trigger has begun sleeping.
    crate::support::eventually("the first append is under way", || async {
        let sleeping: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO ingest_journal%' \
             AND wait_event = 'PgSleep'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (sleeping == 1).then_some(())
    })
    .await;
    let late = store
        .journal_append("late", b"{\"events\":[]}")
        .await
        .unwrap();
    let early = early.await.unwrap().unwrap();
    // (Synapse may push to the bridge meanwhile: its appends take places too.)
    assert!(late > early, "the second append comes after the first");
    let (rows, first, last): (i64, i64, i64) =
        sqlx::query_as("SELECT count(*), min(pos), max(pos) FROM ingest_journal")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, last - first + 1, "no position left empty");
    pool.close().await;
    bridge.stop().await;
}

#[tokio::test]
async fn postgres_crashing_mid_stream_loses_nothing() {
    let postgres = PrivatePostgres::start();
    let url = postgres.database().await;
    let bridge = Bridge::start_with(&[("DATABASE_URL", &url)]).await;
    let pool = look(&url).await;
    let slug = city_room(&pool, "Crash").await;
    let alice = MatrixUser::register("alice").await;
    let room_id = alice.join(&alias(&slug)).await.unwrap();
    let mut sent = Vec::new();
    for n in 0..10 {
        sent.push(alice.send_text(&room_id, &format!("before {n}")).await);
    }
    // Pushes flow (Synapse's queue to the bridge is settled), and go on while Postgres
    // crashes under them.
    all_indexed_in_order(&pool, &sent).await;
    pool.close().await;
    for n in 0..3 {
        sent.push(alice.send_text(&room_id, &format!("racing {n}")).await);
    }
    postgres.stop_immediately().await;
    // Synapse takes these and retries the bridge, which refuses them while Postgres is away.
    for n in 0..5 {
        sent.push(alice.send_text(&room_id, &format!("during {n}")).await);
    }
    postgres.start_again().await;
    for n in 0..10 {
        sent.push(alice.send_text(&room_id, &format!("after {n}")).await);
    }
    let pool = look(&url).await;
    all_indexed_in_order(&pool, &sent).await;
    pool.close().await;
    bridge.stop().await;
}
