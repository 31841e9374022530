//! The city page in a real browser: headless Chromium, driven by `tests/browser/city.mjs`
//! (playwright-core), against the bridge and Synapse of the test run. This side sets the
//! stack up and acts in Matrix; the script acts and looks as a person in the page. They
//! speak in lines: the script prints `STEP <name> <json>` and waits for `GO <json>`.
//! The test writes `docs/screenshots/city.png`, `room.png` and `channels.png`.

use std::{path::PathBuf, process::Stdio, time::Duration};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use crate::support::{
    Bridge, GATEWAY_SECRET, MatrixSync, MatrixUser, alias, api, encode, eventually, jwt,
    typing_event, unique,
};

/// Fast presence updates; room for the seeded history in the send rate limits (one user's,
/// and one user's in one channel).
const OVERRIDES: &[(&str, &str)] = &[
    ("ROOM_PRESENCE_THROTTLE_MS", "50"),
    ("MESSAGE_RATE_PER_MINUTE", "1000"),
    ("USER_CHANNEL_RATE_PER_MINUTE", "1000"),
];

/// More than a page (50), so the page has to scroll for the oldest.
const SEEDS: usize = 55;

/// The longest the script may take between two lines (a restart and Synapse's retry).
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from)
}

/// What the browser test needs is there, or the test fails saying what to install.
fn preflight() {
    let chromium = chromium();
    assert!(
        chromium.exists(),
        "Chromium is missing at {}: the browser tests need it (scripts/test.sh installs \
         Debian's `chromium` with apt-get)",
        chromium.display()
    );
    // playwright-core needs Node.js 20 or later.
    let major = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| {
            let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            version
                .strip_prefix('v')?
                .split('.')
                .next()?
                .parse::<u32>()
                .ok()
        });
    assert!(
        major.is_some_and(|major| major >= 20),
        "node is missing, broken or older than 20 (major version {major:?}): the browser \
         tests need Node.js 20 or later and npm on the PATH"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: run `npm ci` in tests/browser \
         (scripts/test.sh does)"
    );
}

/// The page's script, waiting at its steps.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    fn launch(vars: &[(&str, String)]) -> Self {
        let mut child = Command::new("node")
            .arg("city.mjs")
            .current_dir(browser_dir())
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .env("CHROMIUM", chromium())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// The next step the page waits at, or `None` when it is done (and passed).
    async fn next_step(&mut self) -> Option<(String, Value)> {
        loop {
            let line = tokio::time::timeout(STEP_TIMEOUT, self.stdout.next_line())
                .await
                .expect("the browser script said nothing for too long")
                .expect("reading the browser script");
            let Some(line) = line else {
                let status = self.child.wait().await.expect("browser script status");
                panic!(
                    "the browser script ended before it was done ({status}); see its output above"
                );
            };
            if line == "DONE" {
                let status = tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
                    .await
                    .expect("the browser script exits")
                    .expect("browser script status");
                assert!(status.success(), "the browser script failed: {status}");
                return None;
            }
            if let Some(rest) = line.strip_prefix("STEP ") {
                let (name, data) = rest.split_once(' ').unwrap_or((rest, "{}"));
                let data = serde_json::from_str(data).expect("a step's JSON");
                return Some((name.to_owned(), data));
            }
            eprintln!("browser: {line}");
        }
    }

    /// The step `name` is next.
    async fn expect_step(&mut self, name: &str) -> Value {
        match self.next_step().await {
            Some((step, data)) if step == name => data,
            other => panic!("expected the page at step {name}, got {other:?}"),
        }
    }

    async fn go(&mut self, data: Value) {
        self.stdin
            .write_all(format!("GO {data}\n").as_bytes())
            .await
            .expect("the browser script reads");
        self.stdin.flush().await.expect("flush");
    }
}

/// Sends through the API as the JWT's user; the message.
async fn send_as(token: &str, slug: &str, body: Value) -> Value {
    let (status, sent) = api(
        Method::POST,
        &format!("/api/messaging/channels/{slug}/messages"),
        Some(token),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    sent
}

#[tokio::test]
async fn the_city_page_shows_rooms_and_a_room_live_in_a_real_browser() {
    preflight();
    let mut bridge = Bridge::start_with(OVERRIDES).await;

    // A city room with its Matrix room, and a history longer than a page.
    let slug = unique("page-");
    let name = "Ринкова площа";
    let (status, room) = api(
        Method::POST,
        "/api/city/rooms",
        Some(GATEWAY_SECRET),
        Some(json!({"slug": slug, "name": name, "description": format!("About {name}")})),
    )
    .await;
    assert_eq!(status, 201, "{room}");
    let room_id = room["matrix_room_id"].as_str().expect("room id").to_owned();
    let carol = MatrixUser::register("carol").await;
    let carol_jwt = jwt(&format!("user:{}", carol.localpart()), &[]);
    let mut seeds = Vec::new();
    for i in 1..=SEEDS {
        let sent = send_as(&carol_jwt, &slug, json!({"text": format!("seed {i}")})).await;
        seeds.push(sent["matrix_event_id"].as_str().unwrap().to_owned());
    }
    // An agent of the city speaks too: Carol, a moderator of the room (the bridge's user
    // made her one: inviting takes power 50), invites it and it joins by itself.
    let bot = MatrixUser::appservice();
    let mut levels = bot
        .state(&room_id, "m.room.power_levels")
        .await
        .expect("power levels");
    levels["users"][&carol.user_id] = json!(50);
    bot.put(
        &format!("/v3/rooms/{}/state/m.room.power_levels/", encode(&room_id)),
        levels,
    )
    .await
    .expect("Carol a moderator");
    let agent = format!("agent:{}", unique("sofia"));
    sqlx::query("INSERT INTO agents (id, display_name) VALUES ($1, 'Sofia')")
        .bind(&agent)
        .execute(bridge.pool())
        .await
        .expect("an agent");
    let (status, invited) = api(
        Method::POST,
        &format!("/api/messaging/channels/{slug}/members"),
        Some(&carol_jwt),
        Some(json!({"member_id": agent})),
    )
    .await;
    assert_eq!(status, 201, "{invited}");
    eventually("the agent posts once joined", || {
        let (agent, slug) = (agent.clone(), slug.clone());
        async move {
            let (status, _) = api(
                Method::POST,
                &format!("/internal/agents/{agent}/post-to-channel"),
                Some(GATEWAY_SECRET),
                Some(json!({"channel_id": slug, "text": "Я Софія, агентка міста."})),
            )
            .await;
            (status == 201).then_some(())
        }
    })
    .await;
    send_as(
        &carol_jwt,
        &slug,
        json!({"text": "a reply to the last seed", "reply_to": seeds[SEEDS - 1]}),
    )
    .await;
    send_as(
        &carol_jwt,
        &slug,
        json!({"text": "in the thread of seed 53", "thread_root": seeds[SEEDS - 3]}),
    )
    .await;
    let (status, reacted) = api(
        Method::POST,
        &format!(
            "/api/messaging/channels/{slug}/messages/{}/reactions",
            encode(&seeds[SEEDS - 2])
        ),
        Some(&carol_jwt),
        Some(json!({"key": "👍"})),
    )
    .await;
    assert_eq!(status, 200, "{reacted}");

    // The page's user, and Dave with a Matrix client.
    let page_user = MatrixUser::register("page").await;
    let page_jwt = jwt(&format!("user:{}", page_user.localpart()), &[]);
    let dave = MatrixUser::register("dave").await;
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    // Kept until replaced (a failing run leaves the committed ones), so they must be newer.
    let started = std::time::SystemTime::now();
    let mut browser = Browser::launch(&[
        ("BRIDGE_URL", bridge.url()),
        ("PAGE_TOKEN", page_jwt.clone()),
        ("PAGE_USER_ID", page_user.user_id.clone()),
        ("ROOM_SLUG", slug.clone()),
        ("ROOM_NAME", name.to_owned()),
        ("ROOM_ALIAS", alias(&slug)),
        ("SEED_COUNT", SEEDS.to_string()),
        // The seeds, the agent's message, the reply and the thread reply.
        ("HISTORY_COUNT", (SEEDS + 3).to_string()),
        ("SCREENSHOT_DIR", shots.display().to_string()),
    ]);

    // The city is shown: Dave comes online and joins, then types, then stops.
    browser.expect_step("city").await;
    dave.set_presence("online").await;
    dave.join(&alias(&slug)).await.expect("dave joins");
    browser.go(json!({})).await;
    browser.expect_step("joined").await;
    dave.typing(&room_id, true).await;
    browser.go(json!({})).await;
    browser.expect_step("typing").await;
    dave.typing(&room_id, false).await;
    browser.go(json!({})).await;

    // The page sent a message: Synapse has it from the page's user, as Dave reads it.
    let sent = browser.expect_step("sent").await;
    let event_id = sent["event_id"].as_str().expect("event id").to_owned();
    let event = eventually("the page's message in Synapse", || {
        let dave = dave.clone();
        let (room_id, event_id) = (room_id.clone(), event_id.clone());
        async move {
            let page = dave
                .get(&format!(
                    "/v3/rooms/{}/messages?dir=b&limit=50",
                    encode(&room_id)
                ))
                .await
                .ok()?;
            page["chunk"]
                .as_array()?
                .iter()
                .find(|e| e["event_id"] == event_id.as_str())
                .cloned()
        }
    })
    .await;
    assert_eq!(event["sender"], page_user.user_id.as_str(), "{event}");
    assert_eq!(event["content"]["body"], sent["text"], "{event}");
    browser.go(json!({})).await;

    // Dave says something in Matrix: the page shows it live.
    browser.expect_step("matrix-message").await;
    let from_matrix = format!("Вітаю з Element! {}", unique("m"));
    dave.send_text(&room_id, &from_matrix).await;
    browser.go(json!({"text": from_matrix})).await;

    // The bridge restarts. While it is away Dave speaks in Matrix (Synapse pushes it once
    // the bridge is back); right after, Carol sends through the API. The page is kept
    // offline until both are indexed.
    browser.expect_step("restart").await;
    let while_away = format!("sent while the bridge was away {}", unique("w"));
    let after_restart = format!("sent right after the restart {}", unique("a"));
    {
        let (browser, dave, room_id, while_away) = (&mut browser, &dave, &room_id, &while_away);
        bridge = bridge
            .restart_with(OVERRIDES, move || async move {
                browser.go(json!({})).await;
                browser.expect_step("offline").await;
                dave.send_text(room_id, while_away).await;
            })
            .await;
    }
    send_as(&carol_jwt, &slug, json!({"text": after_restart})).await;
    eventually("Synapse's push of what Dave said, indexed", || {
        let (token, slug, while_away) = (carol_jwt.clone(), slug.clone(), while_away.clone());
        async move {
            let (_, history) = api(
                Method::GET,
                &format!("/api/messaging/channels/{slug}/messages?limit=5"),
                Some(&token),
                None,
            )
            .await;
            history["messages"]
                .as_array()?
                .iter()
                .any(|m| m["content_preview"] == while_away.as_str())
                .then_some(())
        }
    })
    .await;
    browser
        .go(json!({"texts": [while_away, after_restart]}))
        .await;

    // The page's user composes: Dave's client sees them typing.
    let mut daves_sync = MatrixSync::start(&dave, &room_id).await;
    browser.expect_step("composing").await;
    daves_sync
        .until("the page's user typing", |e| {
            typing_event(e, &page_user.user_id, true)
        })
        .await;
    browser.go(json!({})).await;

    // Away from the room, the page sees Dave mention its user; opening the room reads it,
    // and the read position is the page user's own receipt.
    browser.expect_step("unread").await;
    let mention = format!("{}: подивись, будь ласка", page_user.localpart());
    let mentioned = dave.send_text(&room_id, &mention).await;
    browser.go(json!({"text": mention})).await;
    browser.expect_step("read").await;
    let (status, list) = api(
        Method::GET,
        "/api/messaging/channels",
        Some(&page_jwt),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let entry = list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["slug"] == slug.as_str())
        .cloned()
        .expect("the room listed");
    assert_eq!(entry["unread_count"], 0, "{entry}");
    assert_eq!(entry["last_read_event_id"], mentioned.as_str(), "{entry}");
    daves_sync
        .until("the page user's receipt", |e| {
            e["type"] == "m.receipt"
                && !e["content"][&mentioned]["m.read"][&page_user.user_id].is_null()
        })
        .await;
    let bob = MatrixUser::register("bob").await;
    let channel_name = unique("Browser channel ");
    browser
        .go(json!({
            "name": channel_name,
            "me": format!("user:{}", page_user.localpart()),
            "invitee": format!("user:{}", bob.localpart()),
        }))
        .await;

    // The page made a private channel, pinned a message there and invited Bob: Synapse's
    // room state has the pin and the invitation, made by the page's user.
    let made = browser.expect_step("messenger").await;
    let channel_slug = made["slug"].as_str().expect("the channel's slug");
    let (status, channel) = api(
        Method::GET,
        &format!("/api/messaging/channels/{channel_slug}"),
        Some(&page_jwt),
        None,
    )
    .await;
    assert_eq!(status, 200, "{channel}");
    assert_eq!(channel["visibility"], "private", "{channel}");
    let channel_room = channel["matrix_room_id"].as_str().expect("its Matrix room");
    let pins = page_user
        .state(channel_room, "m.room.pinned_events")
        .await
        .expect("the room's pins");
    assert_eq!(pins["pinned"], json!([made["pinned"]]), "{pins}");
    let invitation = page_user
        .get(&format!(
            "/v3/rooms/{}/state/m.room.member/{}",
            encode(channel_room),
            encode(&bob.user_id)
        ))
        .await
        .expect("Bob's member event");
    assert_eq!(invitation["membership"], "invite", "{invitation}");
    browser.go(json!({})).await;

    assert!(
        browser.next_step().await.is_none(),
        "the page has no more steps"
    );
    for shot in ["city.png", "room.png", "channels.png", "messenger.png"] {
        let path = shots.join(shot);
        let written = std::fs::metadata(&path).and_then(|m| m.modified());
        assert!(
            written.is_ok_and(|at| at >= started),
            "{shot} was written by this run"
        );
        let bytes = std::fs::read(&path).expect("the screenshot");
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
            "{shot} is a real PNG"
        );
    }
    bridge.stop().await;
}

#[tokio::test]
async fn the_page_is_served_to_anyone_with_its_types_and_without_cors() {
    let bridge = Bridge::start_with(&[("CORS_ALLOWED_ORIGINS", "https://city.example.org")]).await;
    let http = reqwest::Client::new();
    let get = |path: &str, origin: &str| {
        http.get(format!("{}{path}", bridge.url()))
            .header("Origin", origin)
            // A token the bridge would refuse: the page never looks at it.
            .bearer_auth("not-a-jwt")
            .send()
    };
    for (path, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/web/app.js", "text/javascript; charset=utf-8"),
        ("/web/api.js", "text/javascript; charset=utf-8"),
        ("/web/i18n.js", "text/javascript; charset=utf-8"),
        ("/web/style.css", "text/css; charset=utf-8"),
    ] {
        let response = get(path, "https://city.example.org").await.expect(path);
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], kind, "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert!(
            headers.get("access-control-allow-origin").is_none(),
            "{path} is not behind CORS"
        );
        let etag = headers["etag"].to_str().unwrap().to_owned();
        assert!(!response.bytes().await.unwrap().is_empty(), "{path}");
        let again = http
            .get(format!("{}{path}", bridge.url()))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path} revalidates with its ETag");
    }
    let page = get("/", "https://elsewhere.example").await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<script type="module" src="/web/app.js">"#),
        "{html}"
    );
    let missing = get("/web/nope.js", "https://city.example.org")
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // CORS itself still works where it belongs.
    let rooms = get("/api/city/rooms", "https://city.example.org")
        .await
        .unwrap();
    assert_eq!(
        rooms.headers()["access-control-allow-origin"],
        "https://city.example.org"
    );
    bridge.stop().await;
}
