//! Pushed events into Postgres: messages, membership, edits, redactions; replays; bad events.

use serde_json::json;

use crate::support::{
    Bridge, MatrixUser, alias, city_room, count, eventually, hs_token, message_event, push, unique,
};

#[tokio::test]
async fn a_message_sent_from_a_client_is_indexed() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Chat").await;
    let alice = MatrixUser::register("alice").await;
    let room_id = alice.join(&alias(&slug)).await.unwrap();

    let body = format!("Привіт, місто! {}", "ї".repeat(600));
    let event_id = alice.send_text(&room_id, &body).await;

    let pool = bridge.pool().clone();
    let row: (String, String, String, String, String, String) = eventually("message indexed", || {
        let pool = pool.clone();
        let event_id = event_id.clone();
        async move {
            sqlx::query_as(
                "SELECT channel_id, sender_id, sender_matrix_id, sender_type, msgtype, content_preview \
                 FROM messages WHERE matrix_event_id = $1",
            )
            .bind(event_id)
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    })
    .await;
    assert_eq!(row.0, format!("room_city_{slug}"));
    assert_eq!(row.1, format!("user:{}", alice.localpart()));
    assert_eq!(row.2, alice.user_id);
    assert_eq!((row.3.as_str(), row.4.as_str()), ("human", "m.text"));
    assert_eq!(
        row.5.chars().count(),
        500,
        "preview is cut to 500 characters"
    );
    assert!(body.starts_with(&row.5));

    // Membership arrived too, with the display name.
    let membership: String = sqlx::query_scalar(
        "SELECT membership FROM room_members WHERE matrix_room_id = $1 AND user_id = $2",
    )
    .bind(&room_id)
    .bind(&alice.user_id)
    .fetch_one(bridge.pool())
    .await
    .unwrap();
    assert_eq!(membership, "join");
    bridge.stop().await;
}

#[tokio::test]
async fn edits_redactions_and_leaves_follow_matrix() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Edits").await;
    let alice = MatrixUser::register("alice").await;
    let room_id = alice.join(&alias(&slug)).await.unwrap();

    let original = alice.send_text(&room_id, "helo").await;
    alice
        .send(
            &room_id,
            "m.room.message",
            json!({
                "msgtype": "m.text", "body": "* hello",
                "m.new_content": {"msgtype": "m.text", "body": "hello"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": original},
            }),
        )
        .await
        .unwrap();
    let doomed = alice.send_text(&room_id, "oops, secret").await;
    alice.redact(&room_id, &doomed).await;
    alice.leave(&room_id).await;

    let pool = bridge.pool().clone();
    let room = room_id.clone();
    let user = alice.user_id.clone();
    eventually("leave recorded", || {
        let (pool, room, user) = (pool.clone(), room.clone(), user.clone());
        async move {
            let m: Option<String> = sqlx::query_scalar(
                "SELECT membership FROM room_members WHERE matrix_room_id = $1 AND user_id = $2",
            )
            .bind(room)
            .bind(user)
            .fetch_optional(&pool)
            .await
            .unwrap();
            (m.as_deref() == Some("leave")).then_some(())
        }
    })
    .await;
    // The leave came after the edit and the redaction, and events apply in order.
    let (preview, edited): (String, bool) = sqlx::query_as(
        "SELECT content_preview, edited_at IS NOT NULL FROM messages WHERE matrix_event_id = $1",
    )
    .bind(&original)
    .fetch_one(bridge.pool())
    .await
    .unwrap();
    assert_eq!((preview.as_str(), edited), ("hello", true));
    let (preview, redacted): (String, bool) = sqlx::query_as(
        "SELECT content_preview, redacted_at IS NOT NULL FROM messages WHERE matrix_event_id = $1",
    )
    .bind(&doomed)
    .fetch_one(bridge.pool())
    .await
    .unwrap();
    assert_eq!((preview.as_str(), redacted), ("", true));
    let edits_indexed = count(
        bridge.pool(),
        "SELECT count(*) FROM messages WHERE channel_id = $1",
        &format!("room_city_{slug}"),
    )
    .await;
    assert_eq!(edits_indexed, 2, "an edit is not a new message");
    bridge.stop().await;
}

/// A mapped room for hand-made transactions.
async fn mapped_room(bridge: &Bridge) -> (String, String) {
    let alice = MatrixUser::register("alice").await;
    let slug = city_room(bridge.pool(), "Replays").await;
    let room_id = alice.join(&alias(&slug)).await.unwrap();
    (room_id, alice.user_id)
}

#[tokio::test]
async fn replayed_and_renumbered_transactions_add_nothing() {
    let bridge = Bridge::start().await;
    let (room_id, sender) = mapped_room(&bridge).await;
    let events: Vec<_> = (0..5)
        .map(|i| {
            message_event(
                &room_id,
                &format!("${}", unique("ev")),
                &sender,
                &format!("m{i}"),
            )
        })
        .collect();
    let body = json!({ "events": events });
    let token = hs_token();
    let channel: String = sqlx::query_scalar("SELECT id FROM city_rooms WHERE matrix_room_id = $1")
        .bind(&room_id)
        .fetch_one(bridge.pool())
        .await
        .unwrap();
    let before = count(
        bridge.pool(),
        "SELECT count(*) FROM messages WHERE channel_id = $1",
        &channel,
    )
    .await;

    let txn = unique("txn");
    assert_eq!(push(&txn, &body, Some(&token)).await.0, 200);
    let after_first = count(
        bridge.pool(),
        "SELECT count(*) FROM messages WHERE channel_id = $1",
        &channel,
    )
    .await;
    assert_eq!(after_first, before + 5);

    assert_eq!(
        push(&txn, &body, Some(&token)).await.0,
        200,
        "replay is acknowledged"
    );
    assert_eq!(
        push(&unique("txn"), &body, Some(&token)).await.0,
        200,
        "renumbered is acknowledged"
    );
    let after_replays = count(
        bridge.pool(),
        "SELECT count(*) FROM messages WHERE channel_id = $1",
        &channel,
    )
    .await;
    assert_eq!(after_replays, after_first, "replays add no rows");

    // Old and new events in one transaction: the new ones land, the old ones stay once.
    let mut mixed = events.clone();
    mixed.extend((5..7).map(|i| {
        message_event(
            &room_id,
            &format!("${}", unique("ev")),
            &sender,
            &format!("m{i}"),
        )
    }));
    let ids: Vec<String> = mixed
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let mixed = json!({ "events": mixed });
    assert_eq!(push(&unique("txn"), &mixed, Some(&token)).await.0, 200);
    let previews: Vec<String> = sqlx::query_scalar(
        "SELECT content_preview FROM messages WHERE matrix_event_id = ANY($1) ORDER BY seq",
    )
    .bind(&ids)
    .fetch_all(bridge.pool())
    .await
    .unwrap();
    assert_eq!(previews, ["m0", "m1", "m2", "m3", "m4", "m5", "m6"]);
    bridge.stop().await;
}

#[tokio::test]
async fn bad_events_are_skipped_and_recorded_while_good_ones_land() {
    let bridge = Bridge::start().await;
    let (room_id, sender) = mapped_room(&bridge).await;
    let good_1 = format!("${}", unique("good"));
    let good_2 = format!("${}", unique("good"));
    let body = json!({ "events": [
        message_event(&room_id, &good_1, &sender, "first"),
        {"type": "m.room.message", "room_id": room_id, "content": {"body": "no id, no sender"}},
        {"type": "m.room.message", "event_id": format!("${}", unique("bad")), "room_id": room_id,
         "sender": sender, "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": 42}},
        {"type": "m.room.member", "event_id": format!("${}", unique("bad")), "room_id": room_id,
         "sender": sender, "origin_server_ts": 1, "state_key": "not-a-user", "content": {"membership": "join"}},
        message_event(&room_id, &good_2, &sender, "nul \u{0} inside is stored without it"),
    ]});
    let txn = unique("txn");
    let (status, reply) = push(&txn, &body, Some(&hs_token())).await;
    assert_eq!((status.as_u16(), reply), (200, json!({})));

    for good in [&good_1, &good_2] {
        assert_eq!(
            count(
                bridge.pool(),
                "SELECT count(*) FROM messages WHERE matrix_event_id = $1",
                good
            )
            .await,
            1
        );
    }
    let dead = bridge.state.store.dead_letters(&txn).await.unwrap();
    assert_eq!(dead.len(), 3, "{dead:#?}");
    assert!(
        dead[0].reason.starts_with("malformed event"),
        "{:?}",
        dead[0]
    );
    assert!(
        dead[1].reason.contains("m.room.message content"),
        "{:?}",
        dead[1]
    );
    assert!(dead[2].reason.contains("state_key"), "{:?}", dead[2]);
    assert!(
        dead[0].event.contains("no id, no sender"),
        "the event is kept as received"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_journal_row_that_is_no_transaction_is_dead_lettered_and_the_journal_goes_on() {
    let bridge = Bridge::start().await;
    let (room_id, sender) = mapped_room(&bridge).await;
    // Not something the bridge appends (it checks bodies first): a row written by hand,
    // or damaged. The next transaction leaves a gap the indexer reads from the table.
    let broken = unique("broken");
    // Synapse may push at the same moment (the bridge's own events, such as the room's
    // m.space.parent): a position it took is tried again with the next one.
    let mut inserted = false;
    for _ in 0..10 {
        let row = sqlx::query(
            "INSERT INTO ingest_journal (pos, txn_id, body) \
             SELECT greatest((SELECT max(pos) FROM ingest_journal), \
                             (SELECT pos FROM ingest_progress)) + 1, $1, $2",
        )
        .bind(&broken)
        .bind(&b"{\"events\": [trunc"[..])
        .execute(bridge.pool())
        .await;
        match row {
            Ok(_) => {
                inserted = true;
                break;
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => continue,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(inserted, "the broken row was written");
    let good = format!("${}", unique("good"));
    let body =
        json!({ "events": [message_event(&room_id, &good, &sender, "after the broken row")] });
    assert_eq!(push(&unique("txn"), &body, Some(&hs_token())).await.0, 200);

    assert_eq!(
        count(
            bridge.pool(),
            "SELECT count(*) FROM messages WHERE matrix_event_id = $1",
            &good
        )
        .await,
        1,
        "the transaction after the broken row is indexed"
    );
    let dead = bridge.state.store.dead_letters(&broken).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(
        dead[0].reason.starts_with("malformed event"),
        "{:?}",
        dead[0]
    );
    assert_eq!(dead[0].event, r#"{"events": [trunc"#, "kept as it was");
    bridge.stop().await;
}

#[tokio::test]
async fn events_of_unmapped_rooms_are_ignored() {
    let bridge = Bridge::start().await;
    let (room_id, sender) = mapped_room(&bridge).await;
    let elsewhere = format!("!{}:elsewhere", unique("unmapped"));
    let event_id = format!("${}", unique("elsewhere"));
    let beside = format!("${}", unique("beside"));
    let counted = bridge
        .state
        .receiving
        .as_ref()
        .expect("the bridge receives")
        .discovery
        .unmapped_events();
    // One transaction: a message of a room the bridge does not know, one of a city room.
    let body = json!({ "events": [
        message_event(&elsewhere, &event_id, "@x:elsewhere", "hi"),
        message_event(&room_id, &beside, &sender, "beside it"),
    ]});
    assert_eq!(push(&unique("txn"), &body, Some(&hs_token())).await.0, 200);
    // The transaction was read: the city room's message is indexed, and the other one
    // counted as an event of a room the bridge does not know.
    assert_eq!(
        count(
            bridge.pool(),
            "SELECT count(*) FROM messages WHERE matrix_event_id = $1",
            &beside
        )
        .await,
        1,
        "the city room's message beside it is indexed"
    );
    assert_eq!(
        bridge
            .state
            .receiving
            .as_ref()
            .expect("the bridge receives")
            .discovery
            .unmapped_events()
            - counted,
        1,
        "the event of the unknown room is counted"
    );
    // And nothing of it is stored: neither a message nor a dead letter.
    assert_eq!(
        count(
            bridge.pool(),
            "SELECT count(*) FROM messages WHERE matrix_event_id = $1",
            &event_id
        )
        .await,
        0
    );
    assert_eq!(
        count(
            bridge.pool(),
            "SELECT count(*) FROM dead_letters WHERE event_id = $1",
            &event_id
        )
        .await,
        0
    );
    bridge.stop().await;
}

#[tokio::test]
async fn redactions_only_from_the_sender_or_a_local_user_and_only_in_their_room() {
    let bridge = Bridge::start().await;
    let (room_id, sender) = mapped_room(&bridge).await;
    let target = format!("${}", unique("ev"));
    let token = hs_token();
    let body = json!({ "events": [message_event(&room_id, &target, &sender, "keep me")] });
    assert_eq!(push(&unique("txn"), &body, Some(&token)).await.0, 200);

    let redaction = |room: &str, by: &str| {
        json!({"type": "m.room.redaction", "event_id": format!("${}", unique("r")), "room_id": room,
               "sender": by, "origin_server_ts": 1_763_000_000_500_u64, "content": {"redacts": target}})
    };
    let other_room = mapped_room(&bridge).await.0;
    let attempts = json!({ "events": [
        redaction(&room_id, "@mallory:elsewhere.example"),
        redaction(&other_room, &sender),
    ]});
    assert_eq!(push(&unique("txn"), &attempts, Some(&token)).await.0, 200);
    let preview: String =
        sqlx::query_scalar("SELECT content_preview FROM messages WHERE matrix_event_id = $1")
            .bind(&target)
            .fetch_one(bridge.pool())
            .await
            .unwrap();
    assert_eq!(
        preview, "keep me",
        "a remote stranger, or another room, cannot redact it"
    );

    let own = json!({ "events": [redaction(&room_id, &sender)] });
    assert_eq!(push(&unique("txn"), &own, Some(&token)).await.0, 200);
    let redacted = count(
        bridge.pool(),
        "SELECT count(*) FROM messages WHERE matrix_event_id = $1 AND redacted_at IS NOT NULL",
        &target,
    )
    .await;
    assert_eq!(redacted, 1, "the sender's own redaction applies");
    bridge.stop().await;
}
