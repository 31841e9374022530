//! The Application Service API as Synapse (or an impostor) meets it: tokens, bad bodies,
//! unknown paths, ping, health.

use serde_json::{Value, json};

use crate::support::{Bridge, config_with, encode, env, eventually, hs_token, push};
use city_bridge::app::{self, AppState};

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn token_rules() {
    let bridge = Bridge::start().await;
    let body = json!({"events": []});
    let (status, reply) = push("t1", &body, None).await;
    assert_eq!(
        (status.as_u16(), reply["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN"))
    );
    let (status, reply) = push("t1", &body, Some("wrong")).await;
    assert_eq!(
        (status.as_u16(), reply["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );

    // The legacy query parameter is not accepted.
    let url = format!(
        "{}/_matrix/app/v1/transactions/t1?access_token={}",
        bridge.url(),
        encode(&hs_token())
    );
    let response = reqwest::Client::new()
        .put(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let (status, reply) = push("t1", &body, Some(&hs_token())).await;
    assert_eq!((status.as_u16(), reply), (200, json!({})));

    let user = format!(
        "{}/_matrix/app/v1/users/{}",
        bridge.url(),
        encode("@agent_x:localhost")
    );
    assert_eq!(get(&user, Some("wrong")).await.0, 403);
    assert_eq!(get(&user, None).await.0, 401);
    bridge.stop().await;
}

#[tokio::test]
async fn bad_bodies_and_unknown_paths() {
    let bridge = Bridge::start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/_matrix/app/v1/transactions/{}", bridge.url(), "bad1");

    let response = client
        .put(&url)
        .bearer_auth(hs_token())
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["errcode"], "M_NOT_JSON");

    let response = client
        .put(&url)
        .bearer_auth(hs_token())
        .json(&json!({"no": "events"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["errcode"], "M_BAD_JSON");

    // Synapse's worst case, 100 events of 64 KiB, passes...
    let big_event = |i: usize| {
        json!({"type": "m.room.message", "event_id": format!("$big{i}"), "room_id": "!unmapped:x",
               "sender": "@a:x", "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "x".repeat(64 * 1024 - 200)}})
    };
    let worst = json!({"events": (0..100).map(big_event).collect::<Vec<_>>()});
    let (status, _) = push("worst-case", &worst, Some(&hs_token())).await;
    assert_eq!(status, 200);
    // ...and something far larger is refused.
    let huge = vec![b' '; 40 * 1024 * 1024];
    let response = client
        .put(&url)
        .bearer_auth(hs_token())
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["errcode"], "M_TOO_LARGE");

    let (status, reply) = get(
        &format!("{}/_matrix/app/v1/nonsense", bridge.url()),
        Some(&hs_token()),
    )
    .await;
    assert_eq!(
        (status, reply["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED"))
    );
    let (status, reply) = get(
        &format!("{}/_matrix/app/unstable/whatever", bridge.url()),
        None,
    )
    .await;
    assert_eq!(
        (status, reply["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED"))
    );
    let (status, reply) = get(&format!("{}/nowhere", bridge.url()), None).await;
    assert_eq!((status, reply), (404, json!({"error": "not_found"})));

    let ping = client
        .post(format!("{}/_matrix/app/v1/ping", bridge.url()))
        .bearer_auth(hs_token())
        .json(&json!({"transaction_id": "p1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200);
    let (status, reply) = get(
        &format!("{}/_matrix/app/v1/thirdparty/protocol/irc", bridge.url()),
        Some(&hs_token()),
    )
    .await;
    assert_eq!(
        (status, reply["errcode"].as_str()),
        (404, Some("M_NOT_FOUND"))
    );
    bridge.stop().await;
}

#[tokio::test]
async fn synapse_pings_the_bridge_through_the_real_homeserver() {
    let bridge = Bridge::start().await;
    // The same call the bridge makes at start-up: Synapse pings us back and reports success.
    let rtt = bridge
        .state
        .homeserver
        .ping(&bridge.state.config.registration.id)
        .await;
    assert!(rtt.is_ok(), "{rtt:?}");
    bridge.stop().await;
}

#[tokio::test]
async fn health_reports_synapse_reachability() {
    let bridge = Bridge::start().await;
    let url = bridge.url();
    let reply = eventually("the first checks", || async {
        let (status, reply) = get(&format!("{url}/healthz"), None).await;
        assert_eq!(status, 200);
        (reply["synapse"] != "unknown").then_some(reply)
    })
    .await;
    assert_eq!(
        (&reply["status"], &reply["synapse"], &reply["database"]),
        (&json!("ok"), &json!("connected"), &json!("connected"))
    );
    assert!(reply["checked_at"].is_string(), "{reply}");
    // Ready once Synapse answered the appservice ping (it calls the bridge back).
    let ready = eventually("ready", || async {
        let (status, reply) = get(&format!("{url}/readyz"), None).await;
        (status == 200).then_some(reply)
    })
    .await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["appservice_ping"], "ok");

    // A second instance pointed at a homeserver that is not there: alive, never ready.
    let config = config_with(&[("SYNAPSE_URL", "http://127.0.0.1:9")]);
    let state = AppState::new(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(app::run(listener, state, std::future::pending()));
    eventually("the unreachable homeserver noticed", || async {
        let (status, reply) = get(&format!("http://{addr}/healthz"), None).await;
        assert_eq!(status, 200);
        (reply["synapse"] == "unreachable").then_some(())
    })
    .await;
    let (status, reply) = get(&format!("http://{addr}/readyz"), None).await;
    assert_eq!(
        (status, &reply["status"]),
        (503, &json!("not_ready")),
        "{reply}"
    );
    assert_eq!(reply["checks"]["database"], "ok");
    assert!(
        reply["checks"]["appservice_ping"]
            .as_str()
            .unwrap()
            .starts_with("waiting"),
        "{reply}"
    );
    server.abort();
    let _ = env();
    bridge.stop().await;
}

#[tokio::test]
async fn postgres_gone_means_a_500_without_internals_and_synapse_resends() {
    let admin = sqlx::PgPool::connect(&env().database_url).await.unwrap();
    let db = crate::support::unique("gone");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{}/{db}", env().database_url.rsplit_once('/').unwrap().0);
    let bridge = Bridge::start_with(&[("DATABASE_URL", &url)]).await;
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();

    let event = crate::support::message_event("!r:localhost", "$lost", "@a:localhost", "hi");
    let (status, reply) = push("pg-gone", &json!({"events": [event]}), Some(&hs_token())).await;
    // Not 200: the events are not durable, so Synapse must keep them and resend.
    assert_eq!(
        (status.as_u16(), reply),
        (
            500,
            json!({"errcode": "M_UNKNOWN", "error": "Internal error"})
        )
    );
    let url = bridge.url();
    eventually("the database reported unreachable", || async {
        let (status, health) = get(&format!("{url}/healthz"), None).await;
        assert_eq!(status, 200);
        (health["database"] == "unreachable").then_some(())
    })
    .await;
    let (status, ready) = get(&format!("{url}/readyz"), None).await;
    assert_eq!(
        (status, &ready["checks"]["database"]),
        (503, &json!("unreachable"))
    );
    let (status, body) =
        crate::support::api(reqwest::Method::GET, "/api/city/rooms", None, None).await;
    assert_eq!((status, body), (500, json!({"error": "internal_error"})));
    bridge.stop().await;
}
