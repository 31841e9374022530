//! Who may do what through the messaging API, against the real stack: JWT subjects that
//! are Matrix users, who may create which channels, idempotent sends that cannot be
//! confused, fair rate limits, invitations, role grants, replies and threads.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    Bridge, GATEWAY_SECRET, MatrixUser, api, city_room, env, jwt, synapse_has_user, unique,
};

fn token_of(user: &MatrixUser) -> String {
    jwt(&format!("user:{}", user.localpart()), &[])
}

async fn create_channel(token: &str, body: Value) -> (u16, Value) {
    api(
        Method::POST,
        "/api/messaging/channels",
        Some(token),
        Some(body),
    )
    .await
}

async fn city_page_lists(slug: &str) -> bool {
    let (_, rooms) = api(Method::GET, "/api/city/rooms", Some(GATEWAY_SECRET), None).await;
    rooms.as_array().unwrap().iter().any(|r| r["slug"] == slug)
}

async fn send(token: &str, slug: &str, body: Value) -> (u16, Value) {
    api(
        Method::POST,
        &format!("/api/messaging/channels/{slug}/messages"),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn subjects_must_be_conforming_localparts_and_refused_ones_get_no_account() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Ратуша").await;
    let server = &env().server_name;
    let tag = unique("");
    // `@<name>:<server>` one byte over 255.
    let long = format!("l{tag}{}", "x".repeat(255 - 2 - server.len() - tag.len()));
    // (subject's name, the Matrix user it would have been, a word of the rule named)
    let refused = [
        (
            format!("Alice{tag}"),
            format!("@Alice{tag}:{server}"),
            "a-z",
        ),
        (
            format!("al!ce{tag}"),
            format!("@al!ce{tag}:{server}"),
            "a-z",
        ),
        (format!("\u{430}lice{tag}"), String::new(), "a-z"),
        (
            format!("@alice{tag}:{server}"),
            format!("@alice{tag}:{server}"),
            "a-z",
        ),
        (String::new(), String::new(), "a-z"),
        (long.clone(), format!("@{long}:{server}"), "255 bytes"),
    ];
    for (name, would_be, rule) in refused {
        let token = jwt(&format!("user:{name}"), &[]);
        let (status, body) = send(&token, &slug, json!({"text": "хто я?"})).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_subject")),
            "user:{name}: {body}"
        );
        assert_eq!(body["field"], "sub", "{body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(rule), "user:{name}: names the rule: {body}");
        let (status, body) = api(Method::GET, "/api/messaging/channels", Some(&token), None).await;
        assert_eq!(status, 401, "reads too: {body}");
        if !would_be.is_empty() {
            assert!(
                !synapse_has_user(&would_be).await,
                "no Synapse account for {would_be}"
            );
        }
    }

    // Every character the rule allows, and exactly 255 bytes, are fine.
    for name in [format!("a.b_c=d-e/{tag}"), long[1..].to_owned()] {
        let (status, body) = send(
            &jwt(&format!("user:{name}"), &[]),
            &slug,
            json!({"text": "я тут"}),
        )
        .await;
        assert_eq!(status, 201, "user:{name}: {body}");
        assert!(synapse_has_user(&format!("@{name}:{server}")).await);
    }
    bridge.stop().await;
}

#[tokio::test]
async fn city_rooms_are_made_by_admins_and_the_service_and_users_have_a_channel_quota() {
    let bridge = Bridge::start_with(&[("CHANNELS_PER_USER", "2")]).await;
    let alice = MatrixUser::register("alice").await;
    let alice_jwt = token_of(&alice);

    // A public channel of no microDAO is one of the city's rooms: not Alice's to make.
    let official = unique("ch");
    let (status, body) = create_channel(
        &alice_jwt,
        json!({"slug": official, "name": "Офіційна", "visibility": "public"}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("admin_required")),
        "{body}"
    );
    let (status, _) = api(
        Method::GET,
        &format!("/api/messaging/channels/{official}"),
        Some(&alice_jwt),
        None,
    )
    .await;
    assert_eq!(status, 404, "nothing was made");
    assert!(!city_page_lists(&official).await);

    // An admin may make it (the slug was not taken by the refused attempt), and so may the
    // service.
    let admin = jwt(&format!("user:{}", unique("mayor")), &["admin"]);
    let (status, body) = create_channel(
        &admin,
        json!({"slug": official, "name": "Офіційна", "visibility": "public"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(city_page_lists(&official).await);
    let by_service = unique("ch");
    let (status, body) = create_channel(
        GATEWAY_SECRET,
        json!({"slug": by_service, "name": "Від сервісу"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(city_page_lists(&by_service).await);

    // Alice's own: private channels and microDAO channels, under the slug rules, up to her
    // quota.
    let (status, body) = create_channel(
        &alice_jwt,
        json!({"slug": "Not A Slug", "name": "x", "visibility": "private"}),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("slug")),
        "{body}"
    );
    let (status, body) = create_channel(
        &alice_jwt,
        json!({"slug": unique("ch"), "name": "Моя", "visibility": "private"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = create_channel(
        &alice_jwt,
        json!({"slug": unique("ch"), "name": "Моя DAO", "visibility": "public",
               "microdao_id": unique("microdao:")}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let over = unique("ch");
    let (status, body) = create_channel(
        &alice_jwt,
        json!({"slug": over, "name": "Третя", "visibility": "private"}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("channel_quota")),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap_or_default().contains('2'),
        "{body}"
    );
    let (status, _) = api(
        Method::GET,
        &format!("/api/messaging/channels/{over}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 404, "nothing was made");
    bridge.stop().await;
}
