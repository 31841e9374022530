//! Postgres going away mid-stream: Synapse's transactions are refused (500) while it is
//! gone, Synapse keeps them and retries, and once it is back every message is indexed,
//! once. Postgres is shared by the whole suite, so it "goes away" behind a TCP relay of
//! this test's own: every connection of the bridge is cut and new ones are refused, as a
//! restart does to them.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use tokio::{net::TcpListener, task::AbortHandle};

use crate::support::{
    Bridge, MatrixUser, alias, city_room, count, env, hs_token, message_event, push, unique,
};

/// A TCP relay to the suite's Postgres that can be made to drop everything.
struct PostgresRelay {
    port: u16,
    down: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl PostgresRelay {
    async fn start() -> Self {
        let url = &env().database_url;
        let upstream = url
            .split_once('@')
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(host, _)| host.to_owned())
            .expect("the test database URL names host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (down_, connections_) = (down.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if down_.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                connections_.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            port,
            down,
            connections,
        }
    }

    /// The test database, through the relay.
    fn url(&self) -> String {
        let url = &env().database_url;
        let (credentials, rest) = url.split_once('@').unwrap();
        let (_, database) = rest.split_once('/').unwrap();
        format!("{credentials}@127.0.0.1:{}/{database}", self.port)
    }

    fn go_away(&self) {
        self.down.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn postgres_gone_mid_stream_loses_and_doubles_nothing() {
    let relay = PostgresRelay::start().await;
    let bridge = Bridge::start_with(&[("DATABASE_URL", &relay.url())]).await;
    // The suite's own connection, not through the relay, to look at what was stored.
    let pool = sqlx::PgPool::connect(&env().database_url).await.unwrap();
    let slug = city_room(&pool, "Outage").await;
    let alice = MatrixUser::register("alice").await;
    let room_id = alice.join(&alias(&slug)).await.unwrap();
    // What the relay publishes (in-process: no NATS_URL), through the outage too.
    let mut created = bridge
        .state
        .bus
        .subscribe("messaging.message.created")
        .await
        .unwrap();
    let before = alice.send_text(&room_id, "before the outage").await;
    let indexed = "SELECT count(*) FROM messages WHERE matrix_event_id = $1";
    crate::support::eventually("indexed before the outage", || async {
        (count(&pool, indexed, &before).await == 1).then_some(())
    })
    .await;

    relay.go_away();
    // A transaction now is refused: not durable, so not acknowledged.
    let probe = message_event(
        &room_id,
        &format!("${}", unique("probe")),
        &alice.user_id,
        "x",
    );
    let (status, _) = push(&unique("t"), &json!({"events": [probe]}), Some(&hs_token())).await;
    assert_eq!(status.as_u16(), 500);
    // Synapse accepts what Alice says and keeps retrying the bridge meanwhile.
    let mut during = Vec::new();
    for n in 0..5 {
        during.push(alice.send_text(&room_id, &format!("during {n}")).await);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    relay.come_back();
    let after = alice.send_text(&room_id, "after the outage").await;

    // Synapse backs off between its retries (seconds, doubling): give it time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let all: Vec<&String> = during.iter().chain([&after]).collect();
    loop {
        let mut missing = 0;
        for event_id in &all {
            match count(&pool, indexed, event_id).await {
                1 => {}
                0 => missing += 1,
                n => panic!("{event_id} indexed {n} times"),
            }
        }
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} messages sent while Postgres was away never indexed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // In the order Synapse delivered them.
    let order: Vec<String> = sqlx::query_scalar(
        "SELECT matrix_event_id FROM messages WHERE matrix_event_id = ANY($1) ORDER BY seq",
    )
    .bind(all.iter().map(|e| e.as_str()).collect::<Vec<_>>())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(order.iter().collect::<Vec<_>>(), all);
    // Published once each, in order: a relay round Postgres cut short loses nothing of
    // what the indexer handed it.
    let channel = format!("room_city_{slug}");
    let mut published = Vec::new();
    while published.len() < all.len() + 1 {
        let message = tokio::time::timeout(Duration::from_secs(30), created.recv())
            .await
            .expect("every indexed message published")
            .expect("the bus is open");
        let created: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        if created["channel_id"] == channel.as_str() {
            published.push(created["matrix_event_id"].as_str().unwrap().to_owned());
        }
    }
    let expected: Vec<&String> = std::iter::once(&before).chain(all).collect();
    assert_eq!(published.iter().collect::<Vec<_>>(), expected);
    bridge.stop().await;
}
