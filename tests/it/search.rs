//! Search against a hostile or unlucky caller: highlights that text cannot forge, queries
//! too short to mean anything, and searches that can never make a pushed transaction wait.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::support::{
    Bridge, MatrixUser, alias, api, city_room, encode, env, eventually, jwt, unique,
};

/// The search results for `q` as `token`'s holder sees them.
async fn results(token: &str, q: &str) -> Vec<Value> {
    let path = format!("/api/messaging/search?q={}", encode(q));
    let (status, body) = api(Method::GET, &path, Some(token), None).await;
    assert_eq!(status, 200, "{body}");
    body["results"].as_array().unwrap().clone()
}

/// The result for `event_id` among those of `q`, once it is there.
async fn found(token: &str, q: &str, event_id: &str) -> Value {
    eventually("the message searchable", || async {
        results(token, q)
            .await
            .into_iter()
            .find(|r| r["matrix_event_id"] == event_id)
    })
    .await
}

#[tokio::test]
async fn highlights_cannot_be_forged_and_a_letter_is_no_query() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Search").await;
    let alice = MatrixUser::register("alice").await;
    let token = jwt(&format!("user:{}", alice.localpart()), &[]);
    let room_id = alice.join(&alias(&slug)).await.unwrap();
    let word = unique("needle");
    let event_id = alice
        .send_text(&room_id, &format!("<b>forged</b> \u{1}x\u{2} {word}"))
        .await;

    let hit = found(&token, &word, &event_id).await;
    let highlight = hit["highlight"].as_str().unwrap();
    assert!(
        highlight.contains(&format!("<b>{word}</b>")),
        "the match is marked: {highlight}"
    );
    assert!(
        highlight.contains("&lt;b&gt;forged&lt;/b&gt;"),
        "the text's own tags are escaped: {highlight}"
    );
    assert_eq!(
        highlight.matches("<b>").count(),
        1,
        "only the match is marked: {highlight}"
    );

    for q in ["a", "a%20b%20c"] {
        let (status, body) = api(
            Method::GET,
            &format!("/api/messaging/search?q={q}"),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(status, 422, "{q}: {body}");
        assert_eq!(body["field"], "q", "{body}");
    }
    bridge.stop().await;
}

#[tokio::test]
async fn searches_stuck_in_the_database_never_hold_up_synapse() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Stuck searches").await;
    let alice = MatrixUser::register("alice").await;
    let token = jwt(&format!("user:{}", alice.localpart()), &[]);
    let room_id = alice.join(&alias(&slug)).await.unwrap();
    let before = alice.send_text(&room_id, "indexed before").await;
    found(&token, "indexed", &before).await;

    // Every search now waits on a lock (as one that scans a huge index would run): more
    // searches at once than the bridge has database connections. (Searches read who may
    // see a channel; indexing a message does not.)
    let mut locker = sqlx::PgConnection::connect(&env().database_url)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE room_members IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let searches: Vec<_> = (0..24)
        .map(|_| {
            let token = token.clone();
            tokio::spawn(async move {
                api(
                    Method::GET,
                    "/api/messaging/search?q=indexed",
                    Some(&token),
                    None,
                )
                .await
            })
        })
        .collect();

    // Meanwhile Synapse's pushes are acknowledged and indexed.
    let during = alice.send_text(&room_id, "while searches are stuck").await;
    // The test's own connection: the bridge's pool is what is under test.
    let pool = sqlx::PgPool::connect(&env().database_url).await.unwrap();
    crate::support::eventually_within(
        Duration::from_secs(20),
        "indexed while searches are stuck",
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM messages WHERE matrix_event_id = $1")
                    .bind(&during)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (n == 1).then_some(())
        },
    )
    .await;
    // The searches are told to try again: none is left waiting.
    for search in searches {
        let (status, body) = search.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "busy", "{body}");
    }
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    bridge.stop().await;
}

/// The event ids `q` finds, as `token`'s holder sees them.
async fn hits(token: &str, q: &str) -> Vec<String> {
    results(token, q)
        .await
        .iter()
        .map(|r| r["matrix_event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn search_finds_words_with_any_apostrophe_and_follows_edits_and_redactions() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Search words").await;
    let alice = MatrixUser::register("alice").await;
    let token = jwt(&format!("user:{}", alice.localpart()), &[]);
    let room_id = alice.join(&alias(&slug)).await.unwrap();
    let word = unique("ринок");
    let event_id = alice
        .send_text(&room_id, &format!("Свіже М'ЯСО на {word}, don't miss"))
        .await;

    found(&token, &word, &event_id).await;
    // Postgres holds the words the bridge made (the binary form it was sent, read back).
    let stored: String =
        sqlx::query_scalar("SELECT search::text FROM messages WHERE matrix_event_id = $1")
            .bind(&event_id)
            .fetch_one(bridge.pool())
            .await
            .unwrap();
    assert_eq!(
        stored,
        format!("'donʼt':5 'miss':6 'мʼясо':2 'на':3 '{word}':4 'свіже':1")
    );

    // Typed with another apostrophe: the same word.
    for (q, marked) in [
        (format!("мʼясо {word}"), "<b>М'ЯСО</b>"),
        (format!("м’ясо {word}"), "<b>М'ЯСО</b>"),
        (format!("don’t {word}"), "<b>don't</b>"),
    ] {
        let hit = found(&token, &q, &event_id).await;
        let highlight = hit["highlight"].as_str().unwrap();
        assert!(highlight.contains(marked), "{q}: {highlight}");
        assert!(
            highlight.contains(&format!("<b>{word}</b>")),
            "{q}: {highlight}"
        );
    }

    // An edit: found by the new text, no longer by the old one.
    let new_word = unique("площа");
    alice
        .send(
            &room_id,
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": format!("* {new_word}"),
                "m.new_content": {"msgtype": "m.text", "body": new_word},
                "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
            }),
        )
        .await
        .unwrap();
    found(&token, &new_word, &event_id).await;
    assert!(hits(&token, &word).await.is_empty(), "the old text is gone");

    // A redaction: found by nothing.
    alice.redact(&room_id, &event_id).await;
    eventually("the redacted message unsearchable", || async {
        hits(&token, &new_word).await.is_empty().then_some(())
    })
    .await;
    bridge.stop().await;
}
