//! Who may do what through the messaging API, against the real stack: JWT subjects that
//! are Matrix users, who may create which channels, idempotent sends that cannot be
//! confused, fair rate limits, invitations, role grants, replies and threads.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    ApiInstance, Bridge, GATEWAY_SECRET, MatrixUser, api, api_with_headers, city_room, encode, env,
    eventually_within, jwt, nats_url, synapse_has_user, unique,
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

/// A send with an `Idempotency-Key` to the bridge at `addr`: the status and the body.
async fn keyed_send(
    addr: std::net::SocketAddr,
    token: &str,
    slug: &str,
    key: &str,
    text: &str,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "http://{addr}/api/messaging/channels/{slug}/messages"
        ))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&json!({"text": text}))
        .send()
        .await
        .expect("bridge reachable");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The channel's Matrix room id.
async fn matrix_room(slug: &str) -> String {
    let admin = jwt(&format!("user:{}", unique("reader")), &["admin"]);
    let (_, channel) = api(
        Method::GET,
        &format!("/api/messaging/channels/{slug}"),
        Some(&admin),
        None,
    )
    .await;
    channel["matrix_room_id"]
        .as_str()
        .expect("a Matrix room")
        .to_owned()
}

/// The `m.room.message` events Synapse holds in a city room (the bridge's own user
/// created it, so it reads them): (event id, sender, body), newest first.
async fn synapse_messages(room_id: &str) -> Vec<(String, String, String)> {
    let page = MatrixUser::appservice()
        .get(&format!(
            "/v3/rooms/{}/messages?dir=b&limit=100",
            encode(room_id)
        ))
        .await
        .expect("room messages");
    page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&e["event_id"]),
                text(&e["sender"]),
                text(&e["content"]["body"]),
            )
        })
        .collect()
}

#[tokio::test]
async fn idempotency_keys_of_different_users_never_meet() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Ринок").await;
    let server = &env().server_name;
    let addr = env().bridge_addr;
    // `u.x` with key `k` and `u` with key `x.k`: the same words, cut in different places.
    let u = unique("u");
    let (first, second) = (format!("@{u}.x:{server}"), format!("@{u}:{server}"));
    let (status, one) = keyed_send(
        addr,
        &jwt(&format!("user:{u}.x"), &[]),
        &slug,
        "k",
        "перший",
    )
    .await;
    assert_eq!(status, 201, "{one}");
    let (status, two) = keyed_send(
        addr,
        &jwt(&format!("user:{u}"), &[]),
        &slug,
        "x.k",
        "другий",
    )
    .await;
    assert_eq!(status, 201, "{two}");
    assert_eq!(two["sender_matrix_id"], second.as_str(), "{two}");
    assert_eq!(two["content_preview"], "другий", "{two}");
    assert_ne!(one["matrix_event_id"], two["matrix_event_id"]);
    let stored = synapse_messages(&matrix_room(&slug).await).await;
    for (sender, text) in [(&first, "перший"), (&second, "другий")] {
        assert!(
            stored.iter().any(|(_, s, b)| s == sender && b == text),
            "Synapse holds {sender}'s {text}: {stored:?}"
        );
    }
    bridge.stop().await;
}

#[tokio::test]
async fn concurrent_sends_with_one_key_index_only_what_synapse_stored() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Вокзал").await;
    let addr = env().bridge_addr;
    let token = jwt(&format!("user:{}", unique("twin")), &[]);
    // The Matrix room exists and the sender has joined before the races begin.
    let (status, body) = keyed_send(addr, &token, &slug, &unique("key"), "warm-up").await;
    assert_eq!(status, 201, "{body}");
    let room_id = matrix_room(&slug).await;
    for round in 0..8 {
        let key = unique("key");
        let texts = [format!("left {round}"), format!("right {round}")];
        let (a, b) = tokio::join!(
            keyed_send(addr, &token, &slug, &key, &texts[0]),
            keyed_send(addr, &token, &slug, &key, &texts[1]),
        );
        let stored: Vec<_> = synapse_messages(&room_id)
            .await
            .into_iter()
            .filter(|(_, _, body)| texts.contains(body))
            .collect();
        assert_eq!(stored.len(), 1, "one event per key: {stored:?}");
        let (event_id, _, text) = &stored[0];
        let mut answered = 0;
        for (status, body) in [a, b] {
            match status {
                201 => {
                    answered += 1;
                    assert_eq!(body["matrix_event_id"], event_id.as_str(), "{body}");
                    assert_eq!(
                        body["content_preview"],
                        text.as_str(),
                        "what Synapse stored: {body}"
                    );
                }
                409 => assert_eq!(body["error"], "idempotency_key_in_flight", "{body}"),
                _ => panic!("round {round}: {status} {body}"),
            }
        }
        assert!(answered >= 1, "the request that held the key answers 201");
        let (_, page) = api(
            Method::GET,
            &format!("/api/messaging/channels/{slug}/messages?limit=5"),
            Some(&token),
            None,
        )
        .await;
        let indexed = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["matrix_event_id"] == event_id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{event_id} indexed: {page}"));
        assert_eq!(
            indexed["content_preview"],
            text.as_str(),
            "round {round}: {indexed}"
        );
    }
    bridge.stop().await;
}

#[tokio::test]
async fn a_retry_after_a_202_answers_202_until_the_message_is_indexed() {
    let nats = nats_url();
    let receiver = Bridge::start_with(&[("NATS_URL", &nats)]).await;
    let slug = city_room(receiver.pool(), "Пошта").await;
    let token = jwt(&format!("user:{}", unique("patient")), &[]);
    let (status, body) =
        keyed_send(env().bridge_addr, &token, &slug, &unique("key"), "warm-up").await;
    assert_eq!(status, 201, "{body}");
    let key = unique("key");

    // Only an API-only instance runs: the message is sent, not yet indexed (202), and a
    // retry with the key says the same and sends nothing new.
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let receiver = receiver
        .restart_with(&[("NATS_URL", &nats)], || {
            let (answers, nats, token, slug, key) = (
                answers.clone(),
                nats.clone(),
                token.clone(),
                slug.clone(),
                key.clone(),
            );
            async move {
                let instance = ApiInstance::start(&nats).await;
                for _ in 0..2 {
                    let answer =
                        keyed_send(instance.addr, &token, &slug, &key, "поки нікого").await;
                    answers.lock().unwrap().push(answer);
                }
                instance.stop().await;
            }
        })
        .await;
    let answers = answers.lock().unwrap().clone();
    let (status, first) = &answers[0];
    assert_eq!(*status, 202, "{first}");
    assert_eq!(first["indexed"], false, "{first}");
    let (status, retry) = &answers[1];
    assert_eq!((*status, retry), (202, first), "a retry after a 202");

    // The receiver is back: Synapse pushes the message, and the retry answers it.
    let event_id = first["matrix_event_id"].as_str().unwrap().to_owned();
    // (Synapse retries its pushes on its own schedule, up to two minutes apart here.)
    let message = eventually_within(
        Duration::from_secs(120),
        "the retry answers 201 once indexed",
        || async {
            let (status, body) =
                keyed_send(env().bridge_addr, &token, &slug, &key, "поки нікого").await;
            (status == 201).then_some(body)
        },
    )
    .await;
    assert_eq!(message["matrix_event_id"], event_id.as_str());
    let sent = synapse_messages(&matrix_room(&slug).await)
        .await
        .into_iter()
        .filter(|(_, _, body)| body == "поки нікого")
        .count();
    assert_eq!(sent, 1, "sent once");
    receiver.stop().await;
}

/// A write's answer, which must be 429 `rate_limited` with a `Retry-After` of 1 to 60 s.
fn assert_limited(what: &str, (status, headers, body): (u16, reqwest::header::HeaderMap, Value)) {
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited")),
        "{what}: {body}"
    );
    let retry: u64 = headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: Retry-After"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{what}: Retry-After {retry}");
}

async fn post(token: &str, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    api_with_headers(Method::POST, path, Some(token), &[], Some(body)).await
}

#[tokio::test]
async fn one_noisy_user_does_not_silence_a_channel() {
    let bridge = Bridge::start_with(&[
        ("MESSAGE_RATE_PER_MINUTE", "3"),
        ("USER_CHANNEL_RATE_PER_MINUTE", "2"),
        ("CHANNEL_RATE_PER_MINUTE", "5"),
    ])
    .await;
    let a = city_room(bridge.pool(), "Майдан").await;
    let b = city_room(bridge.pool(), "Поділ").await;
    let person = |name: &str| jwt(&format!("user:{}", unique(name)), &[]);
    let (alice, bob, carol, dave) = (
        person("alice"),
        person("bob"),
        person("carol"),
        person("dave"),
    );
    let say = |token: String, slug: String| async move {
        post(
            &token,
            &format!("/api/messaging/channels/{slug}/messages"),
            json!({"text": "гучно"}),
        )
        .await
    };

    // Alice says two things in a channel, and Bob too: a channel hears more than one
    // person's worth.
    for token in [&alice, &alice, &bob, &bob] {
        let (status, _, body) = say(token.clone(), a.clone()).await;
        assert_eq!(status, 201, "others are not silenced: {body}");
    }
    // Alice is at her limit in that channel, not elsewhere; then at her own.
    assert_limited(
        "alice's third in one channel",
        say(alice.clone(), a.clone()).await,
    );
    let (status, _, body) = say(alice.clone(), b.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_limited(
        "alice's fourth in a minute",
        say(alice.clone(), b.clone()).await,
    );

    // The channel's own, larger limit.
    let (status, _, body) = say(carol.clone(), a.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_limited("the channel's sixth", say(dave.clone(), a.clone()).await);
    let (status, _, body) = say(dave.clone(), b.clone()).await;
    assert_eq!(status, 201, "{body}");
    bridge.stop().await;
}

#[tokio::test]
async fn every_write_and_search_is_limited_per_user() {
    let bridge = Bridge::start_with(&[
        ("ACTION_RATE_PER_MINUTE", "2"),
        ("INVITE_RATE_PER_MINUTE", "1"),
        ("CHANNEL_CREATE_RATE_PER_MINUTE", "1"),
        ("SEARCH_RATE_PER_MINUTE", "2"),
    ])
    .await;
    let slug = city_room(bridge.pool(), "Пристань").await;
    let alice = jwt(&format!("user:{}", unique("alice")), &[]);
    let (status, _, message) = post(
        &alice,
        &format!("/api/messaging/channels/{slug}/messages"),
        json!({"text": "спершу"}),
    )
    .await;
    assert_eq!(status, 201, "{message}");
    let path = format!(
        "/api/messaging/channels/{slug}/messages/{}",
        encode(message["matrix_event_id"].as_str().unwrap())
    );

    // Edits, reactions and deletions share a budget.
    let (status, _, body) = post(&alice, &format!("{path}/reactions"), json!({"key": "🔥"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = api_with_headers(
        Method::PATCH,
        &path,
        Some(&alice),
        &[],
        Some(json!({"text": "потім"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_limited(
        "a reaction taken back",
        api_with_headers(
            Method::DELETE,
            &format!("{path}/reactions/{}", encode("🔥")),
            Some(&alice),
            &[],
            None,
        )
        .await,
    );
    assert_limited(
        "a deletion",
        api_with_headers(Method::DELETE, &path, Some(&alice), &[], None).await,
    );
    assert_limited(
        "a reaction",
        post(&alice, &format!("{path}/reactions"), json!({"key": "👍"})).await,
    );

    // Channel creation.
    let create = |slug: String| {
        let alice = alice.clone();
        async move {
            post(
                &alice,
                "/api/messaging/channels",
                json!({"slug": slug, "name": "Своя", "visibility": "private"}),
            )
            .await
        }
    };
    let own = unique("ch");
    let (status, _, body) = create(own.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_limited("a second channel", create(unique("ch")).await);

    // Invitations (to her own channel, where she may invite).
    let members = format!("/api/messaging/channels/{own}/members");
    let (status, _, body) = post(
        &alice,
        &members,
        json!({"member_id": format!("user:{}", unique("bob"))}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_limited(
        "a second invitation",
        post(
            &alice,
            &members,
            json!({"member_id": format!("user:{}", unique("carol"))}),
        )
        .await,
    );

    // Search.
    for _ in 0..2 {
        let (status, _, body) = api_with_headers(
            Method::GET,
            "/api/messaging/search?q=спершу",
            Some(&alice),
            &[],
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_limited(
        "a third search",
        api_with_headers(
            Method::GET,
            "/api/messaging/search?q=спершу",
            Some(&alice),
            &[],
            None,
        )
        .await,
    );
    // Someone else still searches.
    let bob = jwt(&format!("user:{}", unique("bob")), &[]);
    let (status, _, body) = api_with_headers(
        Method::GET,
        "/api/messaging/search?q=спершу",
        Some(&bob),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    bridge.stop().await;
}

/// `messaging.member.invited` rows written for `member_id` in `channel_id`.
async fn invited_events(pool: &sqlx::PgPool, channel_id: &str, member_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE subject = 'messaging.member.invited' \
         AND channel_id = $1 AND payload->>'member_id' = $2",
    )
    .bind(channel_id)
    .bind(member_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn invite(token: &str, slug: &str, member_id: &str, role: Option<&str>) -> (u16, Value) {
    let mut body = json!({ "member_id": member_id });
    if let Some(role) = role {
        body["role"] = json!(role);
    }
    api(
        Method::POST,
        &format!("/api/messaging/channels/{slug}/members"),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn member_invited_is_published_only_for_invitations_synapse_accepted() {
    let bridge = Bridge::start().await;
    let name = unique("sofia");
    let agent = format!("agent:{name}");
    sqlx::query("INSERT INTO agents (id, display_name) VALUES ($1, 'Sofia')")
        .bind(&agent)
        .execute(bridge.pool())
        .await
        .unwrap();
    let alice = MatrixUser::register("alice").await;
    let slug = unique("ch");
    let (status, body) = create_channel(
        &token_of(&alice),
        json!({"slug": slug, "name": "Агенти", "visibility": "private"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let channel_id = format!("room_city_{slug}");

    let (status, body) = invite(&token_of(&alice), &slug, &agent, None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(invited_events(bridge.pool(), &channel_id, &agent).await, 1);
    // Invited again: Synapse refuses (the agent has joined), so nobody was invited.
    let (status, body) = invite(&token_of(&alice), &slug, &agent, None).await;
    assert!(status < 300, "the agent is a member: {status} {body}");
    assert_eq!(body["membership"], "join", "{body}");
    assert_eq!(
        invited_events(bridge.pool(), &channel_id, &agent).await,
        1,
        "no second member.invited"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn roles_are_given_only_to_users_below_the_giver() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let bob = MatrixUser::register("bob").await;
    let dave = MatrixUser::register("dave").await;
    let carol = MatrixUser::register("carol").await;
    let user_of = |u: &MatrixUser| format!("user:{}", u.localpart());
    let slug = unique("ch");
    let (status, body) = create_channel(
        &token_of(&alice),
        json!({"slug": slug, "name": "Рада", "visibility": "private"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let room_id = body["matrix_room_id"].as_str().unwrap().to_owned();

    // Alice makes Bob and Dave admins (power 100) like herself; Bob joins.
    for peer in [&bob, &dave] {
        let (status, body) = invite(&token_of(&alice), &slug, &user_of(peer), Some("admin")).await;
        assert_eq!(status, 201, "{body}");
    }
    bob.join(&room_id).await.unwrap();

    // Bob may not lower Dave, his equal, nor Alice.
    for peer in [&dave, &alice] {
        let (status, body) =
            invite(&token_of(&bob), &slug, &user_of(peer), Some("moderator")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden")),
            "{}: {body}",
            peer.user_id
        );
    }
    let levels = alice.state(&room_id, "m.room.power_levels").await.unwrap();
    assert_eq!(levels["users"][&dave.user_id], 100, "{levels}");
    assert_eq!(levels["users"][&alice.user_id], 100, "{levels}");
    // Below him, he may.
    let (status, body) = invite(&token_of(&bob), &slug, &user_of(&carol), Some("moderator")).await;
    assert_eq!(status, 201, "{body}");
    let levels = alice.state(&room_id, "m.room.power_levels").await.unwrap();
    assert_eq!(levels["users"][&carol.user_id], 50, "{levels}");
    bridge.stop().await;
}

#[tokio::test]
async fn replies_and_threads_name_a_message_of_the_same_channel() {
    let bridge = Bridge::start().await;
    let here = city_room(bridge.pool(), "Тут").await;
    let there = city_room(bridge.pool(), "Там").await;
    let token = jwt(&format!("user:{}", unique("alice")), &[]);
    let (status, elsewhere) = send(&token, &there, json!({"text": "деінде"})).await;
    assert_eq!(status, 201, "{elsewhere}");
    let (status, root) = send(&token, &here, json!({"text": "корінь"})).await;
    assert_eq!(status, 201, "{root}");
    let elsewhere = elsewhere["matrix_event_id"].as_str().unwrap();
    let root = root["matrix_event_id"].as_str().unwrap();
    let nowhere = format!("${}", unique("nothing"));

    for field in ["reply_to", "thread_root"] {
        for target in [elsewhere, nowhere.as_str()] {
            let (status, body) =
                send(&token, &here, json!({"text": "відповідь", field: target})).await;
            assert_eq!(
                (status, body["error"].as_str(), body["field"].as_str()),
                (422, Some("invalid"), Some(field)),
                "{field} {target}: {body}"
            );
        }
        let (status, body) = send(&token, &here, json!({"text": "відповідь", field: root})).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body[field], root, "{body}");
    }
    bridge.stop().await;
}
