//! Who may do what through the messaging API, against the real stack: JWT subjects that
//! are Matrix users, who may create which channels, idempotent sends that cannot be
//! confused, fair rate limits, invitations, role grants, replies and threads.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Bridge, api, city_room, env, jwt, synapse_has_user, unique};

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
