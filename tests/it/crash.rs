//! The bridge killed with SIGKILL while messages flow: after a restart every message a
//! client was given an event id for is indexed — nothing acknowledged is lost. (Once is
//! the primary key's job; the test does not pretend to check it.) And killed between the
//! acknowledgement of transactions and their indexing: the journal has them.

use std::{process::Command, time::Duration};

use serde_json::json;

use crate::support::{
    MatrixUser, alias, bridge_vars, encode, eventually, eventually_within, hs_token, message_event,
    serial, unique,
};

/// The bridge as a child process, killed when dropped (a failing test leaves none behind).
struct Child(std::process::Child);

impl Child {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_bridge() -> Child {
    Child(
        Command::new(env!("CARGO_BIN_EXE_city-bridge"))
            .arg("serve")
            .envs(bridge_vars())
            .env("RUST_LOG", "city_bridge=warn")
            .spawn()
            .expect("spawn city-bridge"),
    )
}

async fn wait_healthy() {
    let url = format!("http://{}/healthz", crate::support::env().bridge_addr);
    eventually("bridge up", || {
        let url = url.clone();
        async move {
            reqwest::get(url)
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        }
    })
    .await;
}

#[tokio::test]
async fn sigkill_while_messages_are_sent_loses_nothing() {
    let _serial = serial().await;
    let pool = sqlx::PgPool::connect(&crate::support::env().database_url)
        .await
        .unwrap();
    let mut bridge = spawn_bridge();
    wait_healthy().await;

    let slug = crate::support::city_room(&pool, "Crash").await;
    let alice = MatrixUser::register("alice").await;
    let room_id = alice.join(&alias(&slug)).await.expect("join");

    let mut sent = Vec::new();
    for i in 0..40 {
        if i == 15 {
            // Child::kill sends SIGKILL: no graceful shutdown, no flush.
            bridge.kill();
        }
        if i == 30 {
            bridge = spawn_bridge();
        }
        sent.push(
            alice
                .send_text(&room_id, &format!("message {i} {}", unique("")))
                .await,
        );
    }

    let channel = format!("room_city_{slug}");
    // Synapse retries a down appservice on its own schedule (2, 4, 8, 16… s, doubling up
    // to minutes). The restarted bridge's ping makes it retry at once, but only if Synapse
    // had already put the bridge in recovery when the ping came; otherwise the next retry
    // may be minutes away — longer still when an earlier test (a database outage) left
    // Synapse backing off. Nothing may be lost either way: wait for Synapse's schedule.
    // Messages 30–39 are sent while Synapse's recovery ends, the moment it can leave a
    // transaction queued and unsent (two runs in four before the bridge read rooms back
    // after a recovery: `rooms/catch_up.rs`).
    let indexed: i64 = eventually_within(
        Duration::from_secs(300),
        "all 40 messages indexed after the restart",
        || {
            let pool = pool.clone();
            let channel = channel.clone();
            async move {
                let n: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM messages WHERE channel_id = $1")
                        .bind(channel)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                (n >= 40).then_some(n)
            }
        },
    )
    .await;
    assert_eq!(
        indexed, 40,
        "every event sent across the crash is in the index"
    );
    // And with the body that was sent, in the right room.
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE matrix_event_id = ANY($1) \
         AND (channel_id <> $2 OR content_preview NOT LIKE 'message %')",
    )
    .bind(&sent)
    .bind(channel)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0, "indexed as sent");
    bridge.kill();
}

#[tokio::test]
async fn sigkill_after_the_acknowledgement_before_the_index_loses_nothing() {
    let _serial = serial().await;
    let env = crate::support::env();
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let mut bridge = spawn_bridge();
    wait_healthy().await;
    let slug = crate::support::city_room(&pool, "Journal").await;
    let room_id = format!("!{}:{}", unique("journal"), env.server_name);
    sqlx::query("UPDATE city_rooms SET matrix_room_id = $1 WHERE slug = $2")
        .bind(&room_id)
        .bind(&slug)
        .execute(&pool)
        .await
        .unwrap();

    // The indexer's commit records its journal mark: holding that row holds every index
    // write uncommitted (invisible), while appending to the journal goes on.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT pos FROM ingest_progress FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();

    let run = unique("");
    let mut sent = Vec::new();
    let client = reqwest::Client::new();
    for txn in 0..3 {
        let events: Vec<_> = (0..50)
            .map(|i| {
                let event_id = format!("${run}_{txn}_{i}");
                sent.push(event_id.clone());
                message_event(
                    &room_id,
                    &event_id,
                    "@alice:localhost",
                    &format!("m {txn} {i}"),
                )
            })
            .collect();
        let response = client
            .put(format!(
                "http://{}/_matrix/app/v1/transactions/{}",
                env.bridge_addr,
                encode(&format!("journal-{run}-{txn}"))
            ))
            .bearer_auth(hs_token())
            .json(&json!({ "events": events }))
            .send()
            .await
            .expect("bridge reachable");
        assert_eq!(response.status(), 200, "transaction {txn} acknowledged");
    }
    let visible: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE matrix_event_id = ANY($1)")
            .bind(&sent)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        visible, 0,
        "acknowledged, not yet indexed: the moment to crash"
    );

    bridge.kill();
    holder.rollback().await.unwrap();
    bridge = spawn_bridge();
    wait_healthy().await;

    let indexed: Vec<String> =
        eventually("the journal's 150 events indexed after the restart", || {
            let pool = pool.clone();
            let sent = sent.clone();
            async move {
                let ids: Vec<String> = sqlx::query_scalar(
                "SELECT matrix_event_id FROM messages WHERE matrix_event_id = ANY($1) ORDER BY seq",
            )
            .bind(&sent)
            .fetch_all(&pool)
            .await
            .unwrap();
                (ids.len() >= sent.len()).then_some(ids)
            }
        })
        .await;
    assert_eq!(
        indexed, sent,
        "every acknowledged event, once, in the order pushed"
    );
    bridge.kill();
}
