//! `city-bridge dead-letters`: list, show, replay through the running bridge (idempotent),
//! purge.

use serde_json::{Value, json};

use crate::support::{
    Bridge, MatrixUser, alias, bridge_vars, city_room, count, hs_token, message_event, push, unique,
};

/// Runs the `city-bridge` binary with the bridge's environment; its stdout. (Awaited, not
/// blocking: `replay` calls the bridge, which runs on this test's runtime.)
async fn cli(args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_city-bridge"))
        .args(args)
        .envs(bridge_vars())
        .output()
        .await
        .expect("run city-bridge");
    assert!(
        output.status.success(),
        "city-bridge {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_once_fixed_and_purged() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let slug = city_room(bridge.pool(), "Letters").await;
    let room_id = alice.join(&alias(&slug)).await.unwrap();

    // A malformed event: dead-lettered, and still so when replayed.
    let bad_id = format!("${}", unique("bad"));
    let bad = json!({"type": "m.room.message", "event_id": bad_id, "room_id": room_id,
                     "sender": alice.user_id, "origin_server_ts": 1,
                     "content": {"msgtype": "m.text", "body": 5}});
    let (status, _) = push(&unique("t"), &json!({"events": [bad]}), Some(&hs_token())).await;
    assert_eq!(status, 200);
    // A good event dead-lettered by a bug since fixed (recorded by hand here).
    let good_id = format!("${}", unique("good"));
    let good = message_event(&room_id, &good_id, &alice.user_id, "found again");
    sqlx::query(
        "INSERT INTO dead_letters (txn_id, event_id, room_id, event_type, reason, event) \
         VALUES ('old', $1, $2, 'm.room.message', 'a bug, since fixed', $3)",
    )
    .bind(&good_id)
    .bind(&room_id)
    .bind(good.to_string())
    .execute(bridge.pool())
    .await
    .unwrap();
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM dead_letters WHERE event_id = ANY($1) ORDER BY event_id = $2",
    )
    .bind(vec![bad_id.clone(), good_id.clone()])
    .bind(&good_id)
    .fetch_all(bridge.pool())
    .await
    .unwrap();
    let (bad_row, good_row) = (ids[0], ids[1]);

    let listed = cli(&["dead-letters", "list", "--limit", "1000"]).await;
    assert!(
        listed.contains(&bad_id) && listed.contains(&good_id),
        "{listed}"
    );
    let shown: Value =
        serde_json::from_str(&cli(&["dead-letters", "show", &bad_row.to_string()]).await)
            .expect("show prints JSON");
    assert_eq!(shown["event_id"], bad_id.as_str());

    let first = replay(&[bad_row, good_row]).await;
    assert_eq!(first["applied"], json!([good_row]), "{first}");
    assert_eq!(first["still_failing"][0]["id"], bad_row);
    let indexed = "SELECT count(*) FROM messages WHERE matrix_event_id = $1";
    assert_eq!(count(bridge.pool(), indexed, &good_id).await, 1);
    // Again: nothing more applies, nothing is indexed twice.
    let second = replay(&[bad_row, good_row]).await;
    assert_eq!(second["applied"], json!([]), "{second}");
    assert_eq!(count(bridge.pool(), indexed, &good_id).await, 1);

    assert_eq!(
        cli(&["dead-letters", "purge", &bad_row.to_string()])
            .await
            .trim(),
        "1 deleted"
    );
    let left = "SELECT count(*) FROM dead_letters WHERE event_id = $1";
    assert_eq!(count(bridge.pool(), left, &bad_id).await, 0);
    bridge.stop().await;
}

/// `city-bridge dead-letters replay <ids>`, its JSON answer.
async fn replay(ids: &[i64]) -> Value {
    let mut args = vec!["dead-letters".to_owned(), "replay".to_owned()];
    args.extend(ids.iter().map(ToString::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_str::<Value>(&cli(&args).await).expect("replay prints JSON")
}

#[tokio::test]
async fn a_dead_letter_keeps_every_field_that_could_be_read() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let slug = city_room(bridge.pool(), "Letters").await;
    let room_id = alice.join(&alias(&slug)).await.unwrap();
    // A malformed sender makes the envelope invalid; the rest of it is readable.
    let event_id = format!("${}", unique("badsender"));
    let mut event = message_event(&room_id, &event_id, "not a user id", "hello");
    let txn = unique("t");
    let (status, _) = push(&txn, &json!({"events": [event.clone()]}), Some(&hs_token())).await;
    assert_eq!(status, 200);
    let letters = bridge.state.store.dead_letters(&txn).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.event_id.as_deref(), Some(event_id.as_str()));
    assert_eq!(letter.room_id.as_deref(), Some(room_id.as_str()));
    assert_eq!(letter.event_type.as_deref(), Some("m.room.message"));
    assert_eq!(letter.sender.as_deref(), Some("not a user id"));

    // A field of the wrong kind is left out; the others are kept.
    event["event_id"] = json!(5);
    let txn = unique("t");
    let (status, _) = push(&txn, &json!({"events": [event]}), Some(&hs_token())).await;
    assert_eq!(status, 200);
    let letters = bridge.state.store.dead_letters(&txn).await.unwrap();
    assert_eq!(letters[0].event_id, None);
    assert_eq!(letters[0].room_id.as_deref(), Some(room_id.as_str()));
    bridge.stop().await;
}
