//! `/metrics`: the Prometheus text exposition, read with a text-format parser, moving with
//! what the bridge does.

use std::collections::HashMap;

use serde_json::json;

use crate::support::{
    Bridge, MatrixUser, alias, city_room, eventually, hs_token, message_event, push, unique,
};

/// Every sample of a scrape: `name{labels}` (labels sorted) → value.
pub(crate) async fn scrape(url: &str) -> HashMap<String, f64> {
    let response = reqwest::get(url).await.expect("metrics reachable");
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect()
}

pub(crate) fn get(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_transactions_dead_letters_and_homeserver_calls() {
    let bridge = Bridge::start().await;
    let url = format!("{}/metrics", bridge.url());
    // The registry is the process's: every test's bridge moves it. What this test checks is
    // how far each value moved around what it did, while its bridge is the only one.
    let before = scrape(&url).await;
    let alice = MatrixUser::register("alice").await;
    let slug = city_room(bridge.pool(), "Metrics").await;
    let room_id = alice.join(&alias(&slug)).await.unwrap();
    let joined = scrape(&url).await;
    let moved = |from: &HashMap<String, f64>, to: &HashMap<String, f64>, key: &str| {
        get(to, key) - get(from, key)
    };
    // The join by alias: Synapse asked the bridge, which created the room (a homeserver
    // call) and said so.
    assert_eq!(
        moved(
            &before,
            &joined,
            "city_bridge_alias_queries_total{outcome=created}"
        ),
        1.0,
        "one alias query, answered by a creation"
    );
    assert!(
        moved(
            &before,
            &joined,
            "city_bridge_homeserver_calls_total{endpoint=room::create_room::v3,status=200}"
        ) >= 1.0,
        "{:?}",
        joined
            .keys()
            .filter(|k| k.contains("homeserver_calls"))
            .collect::<Vec<_>>()
    );

    let good = message_event(&room_id, &format!("${}", unique("m")), &alice.user_id, "hi");
    let bad = json!({"type": "m.room.message", "event_id": format!("${}", unique("b")),
                     "room_id": room_id, "sender": alice.user_id,
                     "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": 5}});
    let (status, _) = push(
        &unique("t"),
        &json!({"events": [good, bad]}),
        Some(&hs_token()),
    )
    .await;
    assert_eq!(status, 200);
    let after = scrape(&url).await;

    let delta = |key: &str| moved(&joined, &after, key);
    assert!(delta("city_bridge_transactions_total{}") >= 1.0);
    assert_eq!(
        delta("city_bridge_events_total{outcome=applied,type=m.room.message}"),
        1.0,
        "the good message, once: {after:?}"
    );
    assert_eq!(
        delta("city_bridge_events_total{outcome=dead_lettered,type=m.room.message}"),
        1.0,
        "the bad one"
    );
    assert_eq!(delta("city_bridge_dead_letters_total{}"), 1.0);
    assert!(
        delta("city_bridge_ack_seconds{}") >= 1.0,
        "the acknowledgement histogram counts it: {:?}",
        after.get("city_bridge_ack_seconds{}")
    );
    // The health checks call whoami every 5 s.
    eventually("a health check's whoami counted", || {
        let (url, before) = (url.clone(), before.clone());
        async move {
            let now = scrape(&url).await;
            let key = "city_bridge_homeserver_calls_total{endpoint=account::whoami::v3,status=200}";
            (moved(&before, &now, key) >= 1.0).then_some(())
        }
    })
    .await;
    assert!(
        after
            .iter()
            .any(|(k, v)| k.starts_with("city_bridge_build_info{version=") && *v == 1.0)
    );
    bridge.stop().await;
}

#[tokio::test]
async fn metrics_can_have_their_own_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let bridge = Bridge::start_with(&[("METRICS_ADDR", &addr)]).await;
    let url = format!("http://{addr}/metrics");
    eventually("the metrics listener", || async {
        reqwest::get(&url).await.ok().map(drop)
    })
    .await;
    let samples = scrape(&url).await;
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("city_bridge_build_info"))
    );
    let response = reqwest::get(format!("{}/metrics", bridge.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "not on the API's address then");
    bridge.stop().await;
}
