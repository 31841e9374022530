//! Lazy `#city_<slug>` rooms: created by the first join by alias, exactly once.

use crate::support::{Bridge, MatrixUser, alias, city_room, count, env};

#[tokio::test]
async fn join_by_alias_creates_and_maps_the_room_and_a_second_join_reaches_it() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Енергія").await;
    let alice = MatrixUser::register("alice").await;
    let bob = MatrixUser::register("bob").await;

    let room_id = alice.join(&alias(&slug)).await.expect("join by alias");

    let (mapped_id, mapped_alias): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT matrix_room_id, matrix_room_alias FROM city_rooms WHERE slug = $1")
            .bind(&slug)
            .fetch_one(bridge.pool())
            .await
            .unwrap();
    assert_eq!(mapped_id.as_deref(), Some(room_id.as_str()));
    assert_eq!(mapped_alias.as_deref(), Some(alias(&slug).as_str()));

    let name = alice
        .state(&room_id, "m.room.name")
        .await
        .expect("room name");
    assert_eq!(name["name"], "DAARION City — Енергія");
    let topic = alice
        .state(&room_id, "m.room.topic")
        .await
        .expect("room topic");
    assert_eq!(topic["topic"], "About Енергія");
    let join_rules = alice.state(&room_id, "m.room.join_rules").await.unwrap();
    assert_eq!(join_rules["join_rule"], "public");
    let directory = alice
        .get(&format!(
            "/v3/directory/list/room/{}",
            crate::support::encode(&room_id)
        ))
        .await
        .unwrap();
    assert_eq!(directory["visibility"], "public");

    assert_eq!(bob.join(&alias(&slug)).await.expect("second join"), room_id);
    bridge.stop().await;
}

#[tokio::test]
async fn concurrent_joins_create_one_room() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Rush").await;
    let mut users = Vec::new();
    for _ in 0..6 {
        users.push(MatrixUser::register("rush").await);
    }
    let target = alias(&slug);
    let mut joins = tokio::task::JoinSet::new();
    for user in users {
        let target = target.clone();
        joins.spawn(async move { user.join(&target).await.expect("join") });
    }
    let rooms: Vec<String> = joins.join_all().await;
    assert_eq!(rooms.len(), 6);
    assert!(
        rooms.iter().all(|r| r == &rooms[0]),
        "all joins reach one room: {rooms:?}"
    );
    let mapped = count(
        bridge.pool(),
        "SELECT count(*) FROM city_rooms WHERE matrix_room_id = $1",
        &rooms[0],
    )
    .await;
    assert_eq!(mapped, 1);
    bridge.stop().await;
}

#[tokio::test]
async fn unknown_or_archived_slug_cannot_be_joined_and_nothing_is_created() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;

    let unknown = crate::support::unique("nosuch");
    let refused = alice
        .join(&alias(&unknown))
        .await
        .expect_err("unknown slug");
    assert_eq!(
        (refused.status.as_u16(), refused.errcode.as_str()),
        (404, "M_NOT_FOUND"),
        "{refused:?}"
    );
    assert_eq!(
        count(
            bridge.pool(),
            "SELECT count(*) FROM city_rooms WHERE slug = $1",
            &unknown
        )
        .await,
        0
    );

    let archived = city_room(bridge.pool(), "Old").await;
    sqlx::query("UPDATE city_rooms SET archived_at = now() WHERE slug = $1")
        .bind(&archived)
        .execute(bridge.pool())
        .await
        .unwrap();
    let refused = alice
        .join(&alias(&archived))
        .await
        .expect_err("archived slug");
    assert_eq!(refused.status, 404);
    let mapped = count(
        bridge.pool(),
        "SELECT count(*) FROM city_rooms WHERE slug = $1 AND matrix_room_id IS NOT NULL",
        &archived,
    )
    .await;
    assert_eq!(mapped, 0, "an archived room gets no Matrix room");

    // A malformed city alias (uppercase is not a slug) is not ours either.
    let refused = alice
        .join(&format!("#city_NOPE:{}", env().server_name))
        .await
        .expect_err("malformed");
    assert_eq!(refused.status, 404);
    bridge.stop().await;
}

#[tokio::test]
async fn seeded_general_room_is_joinable() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let room_id = alice
        .join(&alias("general"))
        .await
        .expect("join #city_general");
    let name = alice.state(&room_id, "m.room.name").await.unwrap();
    assert_eq!(name["name"], "DAARION City — General");
    bridge.stop().await;
}
