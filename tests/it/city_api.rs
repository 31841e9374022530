//! `/api/city/rooms` and the `/internal/*` gateway, against the real Synapse.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    Bridge, GATEWAY_SECRET, MatrixUser, alias, api, city_room, encode, eventually, jwt,
    start_synapse, stop_synapse, unique,
};

fn admin() -> String {
    jwt("user:admin", &["admin"])
}

async fn create(body: Value) -> (u16, Value) {
    api(Method::POST, "/api/city/rooms", Some(&admin()), Some(body)).await
}

#[tokio::test]
async fn created_rooms_exist_in_matrix_and_in_the_list() {
    let bridge = Bridge::start().await;
    let tag = unique("");
    let (status, room) =
        create(json!({"name": format!("Енергія {tag}"), "description": "Сонце і вітер"})).await;
    assert_eq!(status, 201, "{room}");
    let slug = room["slug"].as_str().unwrap().to_owned();
    assert_eq!(
        slug,
        format!("enerhiia-{tag}"),
        "slug transliterated from the Ukrainian name"
    );
    assert_eq!(room["id"], format!("room_city_{slug}"));
    assert_eq!(
        (room["status"].as_str(), room["matrix_status"].as_str()),
        (Some("active"), Some("ready"))
    );
    assert_eq!(room["visibility"], "public");
    assert_eq!(room["matrix_room_alias"], alias(&slug));
    let room_id = room["matrix_room_id"].as_str().unwrap().to_owned();

    // In Synapse: name, topic, alias, public join rule and directory listing.
    let alice = MatrixUser::register("alice").await;
    let resolved = alice
        .get(&format!("/v3/directory/room/{}", encode(&alias(&slug))))
        .await
        .unwrap();
    assert_eq!(resolved["room_id"], room_id.as_str());
    assert_eq!(alice.join(&alias(&slug)).await.unwrap(), room_id);
    assert_eq!(
        alice.state(&room_id, "m.room.name").await.unwrap()["name"],
        format!("DAARION City — Енергія {tag}")
    );
    assert_eq!(
        alice.state(&room_id, "m.room.topic").await.unwrap()["topic"],
        "Сонце і вітер"
    );
    assert_eq!(
        alice.state(&room_id, "m.room.join_rules").await.unwrap()["join_rule"],
        "public"
    );
    let listed = alice
        .get(&format!("/v3/directory/list/room/{}", encode(&room_id)))
        .await
        .unwrap();
    assert_eq!(listed["visibility"], "public");

    let (status, list) = api(Method::GET, "/api/city/rooms", None, None).await;
    assert_eq!(status, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list[0]["is_default"], true, "the default room comes first");
    let mine = list
        .iter()
        .find(|r| r["slug"] == slug.as_str())
        .expect("listed");
    assert_eq!(mine["matrix_room_id"], room_id.as_str());
    for field in [
        "id",
        "slug",
        "name",
        "description",
        "is_default",
        "matrix_room_id",
        "matrix_room_alias",
        "visibility",
        "status",
        "matrix_status",
    ] {
        assert!(mine.get(field).is_some(), "field {field} in {mine}");
    }
    let names: Vec<&str> = list[1..]
        .iter()
        .filter(|r| r["is_default"] == false)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.windows(2).all(|w| w[0] <= w[1]),
        "then by name: {names:?}"
    );

    let (status, one) = api(Method::GET, &format!("/api/city/rooms/{slug}"), None, None).await;
    assert_eq!(
        (status, &one["name"]),
        (200, &json!(format!("Енергія {tag}")))
    );
    let (status, missing) = api(Method::GET, "/api/city/rooms/no-such-room", None, None).await;
    assert_eq!((status, missing), (404, json!({"error": "not_found"})));
    bridge.stop().await;
}

#[tokio::test]
async fn private_rooms_are_invite_only_and_listed_only_with_credentials() {
    let bridge = Bridge::start().await;
    let slug = unique("private-");
    let (status, room) =
        create(json!({"slug": slug, "name": "Council", "visibility": "private"})).await;
    assert_eq!(status, 201, "{room}");
    let room_id = room["matrix_room_id"].as_str().unwrap();
    let bot = MatrixUser::appservice();
    assert_eq!(
        bot.state(room_id, "m.room.join_rules").await.unwrap()["join_rule"],
        "invite"
    );
    let listed = bot
        .get(&format!("/v3/directory/list/room/{}", encode(room_id)))
        .await
        .unwrap();
    assert_eq!(listed["visibility"], "private");
    let alice = MatrixUser::register("alice").await;
    assert!(
        alice.join(&alias(&slug)).await.is_err(),
        "not joinable without an invite"
    );

    let (_, public_list) = api(Method::GET, "/api/city/rooms", None, None).await;
    assert!(
        !public_list
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["slug"] == slug.as_str())
    );
    assert_eq!(
        api(Method::GET, &format!("/api/city/rooms/{slug}"), None, None)
            .await
            .0,
        404
    );
    let (_, full_list) = api(Method::GET, "/api/city/rooms", Some(&admin()), None).await;
    assert!(
        full_list
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["slug"] == slug.as_str())
    );
    bridge.stop().await;
}

#[tokio::test]
async fn duplicates_and_invalid_input_are_refused_with_the_field_named() {
    let bridge = Bridge::start().await;
    let slug = unique("dup-");
    assert_eq!(create(json!({"slug": slug, "name": "One"})).await.0, 201);
    let (status, body) = create(json!({"slug": slug, "name": "Two", "is_default": true})).await;
    assert_eq!((status, &body["error"]), (409, &json!("slug_taken")));
    let (_, general) = api(Method::GET, "/api/city/rooms/general", None, None).await;
    assert_eq!(
        general["is_default"], true,
        "a refused create leaves the default room alone"
    );

    let (status, body) = create(json!({"name": ""})).await;
    assert_eq!((status, &body["field"]), (422, &json!("name")));
    let (status, body) = create(json!({"name": "x".repeat(101)})).await;
    assert_eq!((status, &body["field"]), (422, &json!("name")));
    let (status, body) = create(json!({"slug": "Bad Slug", "name": "Ok"})).await;
    assert_eq!((status, &body["field"]), (422, &json!("slug")));
    let (status, body) = create(json!({"name": "🌞"})).await;
    assert_eq!(
        (status, &body["field"]),
        (422, &json!("slug")),
        "nothing to derive a slug from"
    );
    let (status, body) = create(json!({"name": "Ok", "visibility": "secret"})).await;
    assert_eq!((status, &body["error"]), (422, &json!("invalid")));

    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/city/rooms",
            crate::support::env().bridge_addr
        ))
        .bearer_auth(admin())
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_json");
    bridge.stop().await;
}

#[tokio::test]
async fn who_may_write() {
    let bridge = Bridge::start().await;
    let body = || Some(json!({"name": format!("Auth {}", unique(""))}));
    let user = jwt("user:bob", &["member"]);
    let expired = {
        let claims = json!({"sub": "user:admin", "roles": ["admin"], "exp": 1_000});
        jsonwebtoken::encode(
            &Default::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"test-jwt-secret"),
        )
        .unwrap()
    };
    assert_eq!(
        api(Method::POST, "/api/city/rooms", None, body()).await.0,
        401
    );
    assert_eq!(
        api(Method::POST, "/api/city/rooms", Some("garbage"), body())
            .await
            .0,
        401
    );
    assert_eq!(
        api(Method::POST, "/api/city/rooms", Some(&expired), body())
            .await
            .0,
        401
    );
    assert_eq!(
        api(Method::POST, "/api/city/rooms", Some(&user), body())
            .await
            .0,
        403
    );
    assert_eq!(
        api(Method::POST, "/api/city/rooms", Some(&admin()), body())
            .await
            .0,
        201
    );
    assert_eq!(
        api(
            Method::POST,
            "/api/city/rooms",
            Some(GATEWAY_SECRET),
            body()
        )
        .await
        .0,
        201
    );
    assert_eq!(
        api(
            Method::PATCH,
            "/api/city/rooms/general",
            Some(&user),
            Some(json!({}))
        )
        .await
        .0,
        403
    );

    for (token, expected) in [
        (None, 401),
        (Some("wrong".to_owned()), 403),
        (Some(admin()), 403),
        (Some(GATEWAY_SECRET.to_owned()), 200),
    ] {
        let (status, body) = api(Method::GET, "/internal/city/rooms", token.as_deref(), None).await;
        assert_eq!(status, expected, "{token:?}: {body}");
        if expected == 200 {
            let general = body
                .as_array()
                .expect("the mapping is a list")
                .iter()
                .find(|r| r["slug"] == "general")
                .expect("the seeded room is in the mapping");
            assert_eq!(general["status"], "active");
        } else {
            let code = if expected == 401 {
                "unauthorized"
            } else {
                "forbidden"
            };
            assert_eq!(body["error"], code, "{token:?}: {body}");
        }
    }
    bridge.stop().await;
}

#[tokio::test]
async fn rooms_created_while_synapse_is_down_appear_once_it_is_back() {
    let bridge = Bridge::start().await;
    let slug = unique("offline-");
    stop_synapse().await;
    let (status, room) = create(json!({"slug": slug, "name": "Offline"})).await;
    eventually("Synapse reported unreachable", || async {
        let (health_status, health) = api(Method::GET, "/healthz", None, None).await;
        assert_eq!(health_status, 200);
        (health["synapse"] == "unreachable").then_some(())
    })
    .await;
    start_synapse().await;
    assert_eq!(status, 202, "{room}");
    assert_eq!(room["matrix_status"], "pending");
    assert!(room["matrix_room_id"].is_null());

    let room_id: String = eventually("the pending room is created", || async {
        let (_, room) = api(Method::GET, &format!("/api/city/rooms/{slug}"), None, None).await;
        room["matrix_room_id"].as_str().map(ToOwned::to_owned)
    })
    .await;
    let bot = MatrixUser::appservice();
    let resolved = bot
        .get(&format!("/v3/directory/room/{}", encode(&alias(&slug))))
        .await
        .unwrap();
    assert_eq!(resolved["room_id"], room_id.as_str());
    // Exactly one Matrix room carries the name.
    let joined = bot.get("/v3/joined_rooms").await.unwrap();
    let mut named = 0;
    for room in joined["joined_rooms"].as_array().unwrap() {
        let name = bot.state(room.as_str().unwrap(), "m.room.name").await.ok();
        if name.is_some_and(|n| n["name"] == "DAARION City — Offline") {
            named += 1;
        }
    }
    assert_eq!(named, 1);
    bridge.stop().await;
}

#[tokio::test]
async fn backfill_finds_existing_aliases_creates_the_rest_and_is_idempotent() {
    let bridge = Bridge::start().await;
    let existing = city_room(bridge.pool(), "Had an alias").await;
    let missing = city_room(bridge.pool(), "Had nothing").await;
    // A room made under the alias earlier (say, by the old gateway) must be adopted.
    let bot = MatrixUser::appservice();
    let made = bot.create_room(&format!("city_{existing}")).await;

    let (status, first) = api(
        Method::POST,
        "/internal/city/matrix/backfill",
        Some(GATEWAY_SECRET),
        None,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    // The bridge may have adopted the existing room already, from the events Synapse
    // pushed when it was made (discovery of unrecorded rooms): then it is not counted as
    // found here. Either way it must end up mapped, below.
    assert_eq!(first["failed"], json!([]), "{first}");
    assert!(first["created"].as_u64().unwrap() >= 1, "{first}");
    let (_, a) = api(
        Method::GET,
        &format!("/api/city/rooms/{existing}"),
        None,
        None,
    )
    .await;
    assert_eq!(
        a["matrix_room_id"],
        made.as_str(),
        "the existing room was adopted"
    );
    let (_, b) = api(
        Method::GET,
        &format!("/api/city/rooms/{missing}"),
        None,
        None,
    )
    .await;
    assert_eq!(b["matrix_status"], "ready");

    let (_, second) = api(
        Method::POST,
        "/internal/city/matrix/backfill",
        Some(GATEWAY_SECRET),
        None,
    )
    .await;
    assert_eq!(
        (&second["found"], &second["created"]),
        (&json!(0), &json!(0)),
        "{second}"
    );
    let (_, b_again) = api(
        Method::GET,
        &format!("/api/city/rooms/{missing}"),
        None,
        None,
    )
    .await;
    assert_eq!(b_again["matrix_room_id"], b["matrix_room_id"]);
    bridge.stop().await;
}

#[tokio::test]
async fn archiving_makes_the_room_read_only_and_unarchiving_restores_it() {
    let bridge = Bridge::start().await;
    let slug = unique("arch-");
    let (_, room) = create(json!({"slug": slug, "name": "Agora"})).await;
    let room_id = room["matrix_room_id"].as_str().unwrap().to_owned();
    let alice = MatrixUser::register("alice").await;
    alice.join(&room_id).await.unwrap();
    alice.send_text(&room_id, "before").await;

    let path = format!("/api/city/rooms/{slug}");
    let patch = |body: Value| api(Method::PATCH, &path, Some(GATEWAY_SECRET), Some(body));
    let (status, archived) =
        patch(json!({"archived": true, "name": "Agora (old)", "description": "closed"})).await;
    assert_eq!(
        (status, &archived["status"]),
        (200, &json!("archived")),
        "{archived}"
    );
    assert_eq!(archived["name"], "Agora (old)");
    assert_eq!(
        alice.state(&room_id, "m.room.name").await.unwrap()["name"],
        "DAARION City — Agora (old)"
    );
    assert_eq!(
        alice.state(&room_id, "m.room.topic").await.unwrap()["topic"],
        "closed"
    );
    let refused = alice
        .send(
            &room_id,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "during"}),
        )
        .await;
    assert_eq!(refused.expect_err("read-only").status, 403);

    let (status, restored) = patch(json!({"archived": false})).await;
    assert_eq!((status, &restored["status"]), (200, &json!("active")));
    alice
        .send(
            &room_id,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "after"}),
        )
        .await
        .expect("posting restored");
    assert_eq!(patch(json!({"name": ""})).await.0, 422);
    assert_eq!(
        api(
            Method::PATCH,
            "/api/city/rooms/nope-nope",
            Some(GATEWAY_SECRET),
            Some(json!({}))
        )
        .await
        .0,
        404
    );
    bridge.stop().await;
}

#[tokio::test]
async fn gateway_create_and_find_by_alias() {
    let bridge = Bridge::start().await;
    let slug = unique("gw-");
    let body = json!({"slug": slug, "name": "Gateway", "visibility": "public"});
    let (status, created) = api(
        Method::POST,
        "/internal/matrix/rooms/create",
        Some(GATEWAY_SECRET),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["matrix_room_alias"], alias(&slug));
    let (status, again) = api(
        Method::POST,
        "/internal/matrix/rooms/create",
        Some(GATEWAY_SECRET),
        Some(body),
    )
    .await;
    assert_eq!((status, &again), (200, &created), "idempotent");

    let find = |a: String| async move {
        api(
            Method::GET,
            &format!("/internal/matrix/rooms/find-by-alias?alias={}", encode(&a)),
            Some(GATEWAY_SECRET),
            None,
        )
        .await
    };
    assert_eq!(find(alias(&slug)).await, (200, created.clone()));
    assert_eq!(
        find(alias("never-made")).await,
        (404, json!({"error": "not_found"}))
    );
    assert_eq!(find("#elsewhere:localhost".to_owned()).await.0, 400);
    assert_eq!(find(format!("#city_{slug}:other.org")).await.0, 400);
    let (status, _) = api(
        Method::POST,
        "/internal/matrix/rooms/create",
        Some(GATEWAY_SECRET),
        Some(json!({"slug": "Not OK", "name": "x"})),
    )
    .await;
    assert_eq!(status, 400);

    let (_, mapping) = api(
        Method::GET,
        "/internal/city/rooms",
        Some(GATEWAY_SECRET),
        None,
    )
    .await;
    let row = mapping
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["slug"] == slug.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["matrix_room_id"], created["matrix_room_id"]);
    assert_eq!(
        (row["status"].as_str(), row["matrix_status"].as_str()),
        (Some("active"), Some("ready"))
    );
    bridge.stop().await;
}

#[tokio::test]
async fn browsers_get_cors_and_an_openapi_document() {
    let bridge = Bridge::start_with(&[(
        "CORS_ALLOWED_ORIGINS",
        "https://daarion.city, http://localhost:3000",
    )])
    .await;
    let response = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}/api/city/rooms", bridge.url()))
        .header("origin", "https://daarion.city")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://daarion.city"
    );
    let other = reqwest::Client::new()
        .get(format!("{}/api/city/rooms", bridge.url()))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let (status, doc) = api(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/city/rooms",
        "/api/city/rooms/{slug}",
        "/internal/matrix/rooms/create",
        "/internal/matrix/rooms/find-by-alias",
        "/internal/city/matrix/backfill",
        "/internal/city/rooms",
        "/internal/dead-letters/replay",
        "/internal/agents/{agent_id}/presence",
        "/internal/agents/{agent_id}/post-to-channel",
        "/api/messaging/search",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    for (path, methods) in [
        ("/api/messaging/channels", &["get", "post"][..]),
        ("/api/messaging/channels/{id}", &["get"]),
        ("/api/messaging/channels/{id}/messages", &["get", "post"]),
        (
            "/api/messaging/channels/{id}/messages/{event_id}",
            &["patch", "delete"],
        ),
        (
            "/api/messaging/channels/{id}/messages/{event_id}/reactions",
            &["post"],
        ),
        (
            "/api/messaging/channels/{id}/messages/{event_id}/reactions/{key}",
            &["delete"],
        ),
        ("/api/messaging/channels/{id}/members", &["get", "post"]),
    ] {
        for method in methods {
            assert!(
                doc["paths"][path].get(method).is_some(),
                "{method} {path} documented"
            );
        }
    }
    bridge.stop().await;
}

#[tokio::test]
async fn an_unreadable_path_is_a_json_400() {
    let bridge = Bridge::start().await;
    let admin = jwt("user:admin", &["admin"]);
    for (method, path, token) in [
        (Method::GET, "/api/city/rooms/%C3%28", admin.as_str()),
        (Method::PATCH, "/api/city/rooms/%C3%28", admin.as_str()),
        (
            Method::GET,
            "/api/messaging/channels/%C3%28/messages",
            admin.as_str(),
        ),
        (
            Method::PUT,
            "/internal/agents/%C3%28/presence",
            crate::support::GATEWAY_SECRET,
        ),
    ] {
        let (status, body) = api(method.clone(), path, Some(token), Some(json!({}))).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert_eq!(body["error"], "bad_path", "{method} {path}: {body}");
    }
    bridge.stop().await;
}
