//! Randomised requests: every path and method of `/openapi.json` with hostile values, and
//! pushed transactions full of garbage. Nothing answers 5xx, every error is a JSON body,
//! and good events next to bad ones still land. Seeded: set CITY_BRIDGE_FUZZ_SEED to replay.

use rand::{Rng, SeedableRng, rngs::StdRng};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    Bridge, GATEWAY_SECRET, MatrixUser, alias, city_room, env, hs_token, jwt, message_event, push,
    unique,
};

fn seed() -> u64 {
    std::env::var("CITY_BRIDGE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// A hostile string: NUL and control characters, Ukrainian, dots, percent junk, long.
fn nasty(rng: &mut StdRng) -> String {
    const PIECES: &[&str] = &[
        "\0",
        "\u{1}",
        "\n",
        "..",
        "/",
        "%",
        "%00",
        "%zz",
        "київ",
        "Ї",
        "😀",
        " ",
        "'",
        "\"",
        "\\",
        "room_city_",
        "general",
        "agent:",
        "#city_x:localhost",
        "?",
        "&",
        "=",
        "-",
        "\u{202e}",
        "\u{feff}",
    ];
    let mut s = String::new();
    for _ in 0..rng.random_range(0..8) {
        s.push_str(PIECES[rng.random_range(0..PIECES.len())]);
    }
    if rng.random_bool(0.05) {
        s.push_str(&"x".repeat(rng.random_range(100..5000)));
    }
    s
}

/// Percent-encodes every byte that is not unreserved.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>()),
        4 => json!(nasty(rng)),
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| value(rng, depth + 1))
                .collect(),
        ),
        _ => object(rng, depth + 1),
    }
}

fn object(rng: &mut StdRng, depth: u32) -> Value {
    const KEYS: &[&str] = &[
        "slug",
        "name",
        "description",
        "visibility",
        "is_default",
        "archived",
        "presence",
        "status_msg",
        "alias",
        "type",
        "event_id",
        "room_id",
        "sender",
        "content",
        "body",
        "msgtype",
        "state_key",
        "origin_server_ts",
    ];
    let mut map = serde_json::Map::new();
    for _ in 0..rng.random_range(0..5) {
        let key = if rng.random_bool(0.8) {
            KEYS[rng.random_range(0..KEYS.len())].to_owned()
        } else {
            nasty(rng)
        };
        map.insert(key, value(rng, depth));
    }
    Value::Object(map)
}

#[tokio::test]
async fn random_requests_to_every_documented_path_never_get_a_5xx() {
    let bridge = Bridge::start().await;
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let base = format!("http://{}", env().bridge_addr);
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tokens = [
        None,
        Some(GATEWAY_SECRET.to_owned()),
        Some(jwt("user:fuzz", &["admin"])),
        Some(jwt("user:fuzz", &[])),
        Some("garbage".to_owned()),
    ];
    let mut sent = 0;
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        // Backfill has no input to fuzz, and each call would create a Matrix room for
        // every pending city room of every other test.
        if path == "/internal/city/matrix/backfill" {
            continue;
        }
        for method in methods.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut cases: Vec<String> = (0..25)
                .map(|_| {
                    let mut p = path.clone();
                    while let (Some(a), Some(b)) = (p.find('{'), p.find('}')) {
                        p.replace_range(a..=b, &encode(&nasty(&mut rng)));
                    }
                    if rng.random_bool(0.3) {
                        p.push_str(&format!(
                            "?alias={}&microdao_id={}",
                            encode(&nasty(&mut rng)),
                            encode(&nasty(&mut rng))
                        ));
                    }
                    p
                })
                .collect();
            // Known to have reached Postgres once.
            if path.contains("{slug}") {
                cases.push(path.replace("{slug}", "%00"));
            }
            for case in cases {
                let mut request = http.request(method.clone(), format!("{base}{case}"));
                if let Some(token) = &tokens[rng.random_range(0..tokens.len())] {
                    request = request.bearer_auth(token);
                }
                request = match rng.random_range(0..4) {
                    0 => request,
                    1 => request
                        .header("content-type", "application/json")
                        .body(nasty(&mut rng)),
                    2 => request.body(object(&mut rng, 0).to_string()),
                    _ => request.json(&object(&mut rng, 0)),
                };
                let response = request.send().await.expect("bridge reachable");
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                assert!(
                    !status.is_server_error(),
                    "seed {seed}: {method} {case} → {status} {text}"
                );
                if status.is_client_error() {
                    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
                        panic!("seed {seed}: {method} {case} → {status}, body not JSON: {text:?}")
                    });
                    assert!(
                        body["error"].is_string(),
                        "seed {seed}: {method} {case} → {status} {body}"
                    );
                }
                sent += 1;
            }
        }
    }
    assert!(sent > 100, "seed {seed}: only {sent} requests");
    bridge.stop().await;
}

#[tokio::test]
async fn random_garbage_in_pushed_transactions_never_blocks_good_events() {
    let bridge = Bridge::start().await;
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let alice = MatrixUser::register("alice").await;
    let slug = city_room(bridge.pool(), "Fuzz").await;
    let room_id = alice.join(&alias(&slug)).await.unwrap();
    for round in 0..30 {
        let good = format!("${}", unique("good"));
        let mut events = vec![message_event(&room_id, &good, &alice.user_id, "still fine")];
        for _ in 0..rng.random_range(1..8) {
            let mut event = match rng.random_range(0..3) {
                0 => value(&mut rng, 0),
                1 => object(&mut rng, 0),
                _ => message_event(
                    &room_id,
                    &format!("${}", unique("x")),
                    &alice.user_id,
                    &nasty(&mut rng),
                ),
            };
            if let Some(map) = event.as_object_mut()
                && rng.random_bool(0.5)
            {
                let key = [
                    "type",
                    "event_id",
                    "room_id",
                    "sender",
                    "content",
                    "state_key",
                    "redacts",
                ][rng.random_range(0..7)];
                map.insert(key.to_owned(), value(&mut rng, 0));
            }
            let at = rng.random_range(0..=events.len());
            events.insert(at, event);
        }
        let txn = if rng.random_bool(0.2) {
            nasty(&mut rng)
        } else {
            unique("txn")
        };
        // An empty id, or `.` and `..`, which every HTTP client resolves out of the path
        // (the request would be for another URL), cannot be a transaction's id.
        let txn = if matches!(txn.as_str(), "" | "." | "..") {
            unique("txn")
        } else {
            txn
        };
        let (status, body) = push(&txn, &json!({"events": events}), Some(&hs_token())).await;
        assert_eq!(
            status, 200,
            "seed {seed}, round {round}: {body} for {events:?}"
        );
        let indexed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM messages WHERE matrix_event_id = $1")
                .bind(&good)
                .fetch_one(bridge.pool())
                .await
                .unwrap();
        assert_eq!(
            indexed, 1,
            "seed {seed}, round {round}: the good event landed"
        );
    }
    bridge.stop().await;
}
