//! Fixtures: the test environment, the bridge in-process, a Matrix user speaking the
//! client-server API, and a stand-in for Synapse pushing hand-made transactions.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::OnceLock, time::Duration};

use city_bridge::{
    app::{self, AppState},
    config::Config,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::{
    net::TcpListener,
    sync::{Mutex, MutexGuard, oneshot},
    task::JoinHandle,
};

/// Where the servers of the test run are.
#[derive(Debug)]
pub struct TestEnv {
    pub database_url: String,
    pub synapse_url: String,
    pub server_name: String,
    pub bridge_addr: SocketAddr,
    pub registration: PathBuf,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set. The integration tests need a real Synapse and Postgres: \
             run them with scripts/test.sh, which starts both."
        )
    })
}

pub fn env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(|| TestEnv {
        database_url: var("CITY_BRIDGE_TEST_DATABASE_URL"),
        synapse_url: var("CITY_BRIDGE_TEST_SYNAPSE_URL"),
        server_name: var("CITY_BRIDGE_TEST_SERVER_NAME"),
        bridge_addr: var("CITY_BRIDGE_TEST_BRIDGE_ADDR")
            .parse()
            .expect("CITY_BRIDGE_TEST_BRIDGE_ADDR"),
        registration: var("CITY_BRIDGE_TEST_REGISTRATION").into(),
    })
}

/// The bridge's environment variables for this test run.
pub fn bridge_vars() -> Vec<(&'static str, String)> {
    let env = env();
    vec![
        ("DATABASE_URL", env.database_url.clone()),
        ("SYNAPSE_URL", env.synapse_url.clone()),
        ("MATRIX_SERVER_NAME", env.server_name.clone()),
        (
            "APPSERVICE_REGISTRATION",
            env.registration.display().to_string(),
        ),
        ("LISTEN_ADDR", env.bridge_addr.to_string()),
        ("MATRIX_GATEWAY_SECRET", "test-gateway-secret".to_owned()),
        ("JWT_SECRET", "test-jwt-secret".to_owned()),
        (
            "PUPPET_REGISTRATION",
            var("CITY_BRIDGE_TEST_PUPPET_REGISTRATION"),
        ),
    ]
}

pub fn config_with(overrides: &[(&str, &str)]) -> Config {
    let vars = bridge_vars();
    Config::from_lookup(|name| {
        overrides
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
            })
    })
    .expect("test configuration")
}

pub fn hs_token() -> String {
    config_with(&[]).registration.hs_token.expose().to_owned()
}

/// Only one bridge may hold the registered address at a time. (An async mutex: each test
/// has its own runtime, and the turn is held across awaits.)
pub async fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::const_new(());
    SERIAL.lock().await
}

pub async fn bind(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("cannot bind {addr}: is another bridge running there?");
}

/// The bridge, running in this process on the registered address.
pub struct Bridge {
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _serial: MutexGuard<'static, ()>,
}

impl Bridge {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with some environment variables overridden.
    pub async fn start_with(overrides: &[(&str, &str)]) -> Self {
        Self::launch(overrides, serial().await).await
    }

    async fn launch(overrides: &[(&str, &str)], serial: MutexGuard<'static, ()>) -> Self {
        // The bridge's logs, shown for failing tests (RUST_LOG overrides the filter).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "city_bridge=info".into());
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(filter)
            .try_init();
        let state = AppState::new(config_with(overrides))
            .await
            .expect("bridge state");
        let listener = bind(env().bridge_addr).await;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app::run(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Self {
            state,
            stop: Some(stop),
            task: Some(task),
            _serial: serial,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", env().bridge_addr)
    }

    pub fn pool(&self) -> &PgPool {
        self.state.store.pool()
    }

    /// Stops gracefully and waits until the address is free.
    pub async fn stop(mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("bridge task").expect("bridge served");
        }
    }

    /// Stops, lets `meanwhile` run while no bridge is there, and starts a new one on the
    /// same address, keeping the turn (no other test's bridge slips in between).
    pub async fn restart_with<F: Future<Output = ()>>(
        mut self,
        overrides: &[(&str, &str)],
        meanwhile: impl FnOnce() -> F,
    ) -> Self {
        self.halt().await;
        meanwhile().await;
        Self::launch(overrides, self._serial).await
    }
}

/// A city room made for one test, with a slug no other test uses.
pub async fn city_room(pool: &PgPool, name: &str) -> String {
    let slug = unique("t");
    sqlx::query("INSERT INTO city_rooms (id, slug, name, description) VALUES ($1, $2, $3, $4)")
        .bind(format!("room_city_{slug}"))
        .bind(&slug)
        .bind(name)
        .bind(format!("About {name}"))
        .execute(pool)
        .await
        .expect("insert city room");
    slug
}

pub fn alias(slug: &str) -> String {
    format!("#city_{slug}:{}", env().server_name)
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

/// Polls `check` until it gives a value (at most 30 s).
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(Duration::from_secs(30), what, check).await
}

/// Polls `check` until it gives a value, at most `limit`.
pub async fn eventually_within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_explained(limit, what, || {
        let checked = check();
        async move { checked.await.ok_or_else(String::new) }
    })
    .await
}

/// Polls `check` until it gives a value, at most `limit`; a check not met yet says what
/// it found instead, and the last of those is in the failure.
pub async fn eventually_explained<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let found = match check().await {
            Ok(value) => return value,
            Err(found) => found,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}{}{found}",
            if found.is_empty() { "" } else { ": " }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Percent-encodes a path segment.
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Matrix error as a client sees it.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub errcode: String,
}

/// A person with a Matrix client: plain client-server calls, as Element makes them.
#[derive(Clone)]
pub struct MatrixUser {
    pub user_id: String,
    token: String,
    http: reqwest::Client,
    masquerade: bool,
}

impl MatrixUser {
    pub async fn register(prefix: &str) -> Self {
        let http = reqwest::Client::new();
        let username = unique(prefix);
        let response: Value = http
            .post(format!("{}/_matrix/client/v3/register", env().synapse_url))
            .json(&json!({
                "username": username, "password": "correct horse battery staple",
                "auth": {"type": "m.login.dummy"}, "inhibit_login": false,
            }))
            .send()
            .await
            .expect("Synapse reachable")
            .json()
            .await
            .expect("register response");
        let token = response["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("register: {response}"));
        Self {
            user_id: response["user_id"].as_str().unwrap().to_owned(),
            token: token.to_owned(),
            http,
            masquerade: false,
        }
    }

    /// An appservice user (an agent), through the `as_token` and `?user_id=`.
    pub fn masquerading(user_id: &str) -> Self {
        let mut user = Self::appservice();
        user.user_id = user_id.to_owned();
        user.masquerade = true;
        user
    }

    /// The appservice's own user (the creator of city rooms), with the `as_token`.
    pub fn appservice() -> Self {
        let config = config_with(&[]);
        Self {
            user_id: config.sender().to_string(),
            token: config.registration.as_token.expose().to_owned(),
            http: reqwest::Client::new(),
            masquerade: false,
        }
    }

    pub fn localpart(&self) -> &str {
        self.user_id[1..].split(':').next().unwrap()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Refused> {
        let mut request = self
            .http
            .request(
                method,
                format!("{}/_matrix/client{path}", env().synapse_url),
            )
            .bearer_auth(&self.token);
        if self.masquerade {
            request = request.query(&[("user_id", &self.user_id)]);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("Synapse reachable");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            Err(Refused {
                status,
                errcode: body["errcode"].as_str().unwrap_or_default().to_owned(),
            })
        }
    }

    /// Joins a room by alias or id; the room id on success.
    pub async fn join(&self, room: &str) -> Result<String, Refused> {
        let body = self
            .call(
                reqwest::Method::POST,
                &format!("/v3/join/{}", encode(room)),
                Some(json!({})),
            )
            .await?;
        Ok(body["room_id"].as_str().expect("room_id").to_owned())
    }

    pub async fn leave(&self, room_id: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/v3/rooms/{}/leave", encode(room_id)),
            Some(json!({})),
        )
        .await
        .expect("leave");
    }

    pub async fn invite(&self, room_id: &str, user_id: &str) -> Result<(), Refused> {
        let path = format!("/v3/rooms/{}/invite", encode(room_id));
        self.call(
            reqwest::Method::POST,
            &path,
            Some(json!({"user_id": user_id})),
        )
        .await
        .map(drop)
    }

    /// Sends an event; its id.
    pub async fn send(&self, room_id: &str, kind: &str, content: Value) -> Result<String, Refused> {
        let txn = unique("txn");
        let path = format!("/v3/rooms/{}/send/{kind}/{txn}", encode(room_id));
        let body = self
            .call(reqwest::Method::PUT, &path, Some(content))
            .await?;
        Ok(body["event_id"].as_str().expect("event_id").to_owned())
    }

    pub async fn send_text(&self, room_id: &str, body: &str) -> String {
        self.send(
            room_id,
            "m.room.message",
            json!({"msgtype": "m.text", "body": body}),
        )
        .await
        .expect("send message")
    }

    pub async fn redact(&self, room_id: &str, event_id: &str) -> String {
        let path = format!(
            "/v3/rooms/{}/redact/{}/{}",
            encode(room_id),
            encode(event_id),
            unique("r")
        );
        let body = self
            .call(reqwest::Method::PUT, &path, Some(json!({"reason": "test"})))
            .await
            .expect("redact");
        body["event_id"].as_str().unwrap().to_owned()
    }

    /// Creates a public room with this alias localpart; its id.
    pub async fn create_room(&self, alias_localpart: &str) -> String {
        let body = json!({"room_alias_name": alias_localpart, "preset": "public_chat"});
        let created = self
            .call(reqwest::Method::POST, "/v3/createRoom", Some(body))
            .await
            .expect("createRoom");
        created["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn state(&self, room_id: &str, kind: &str) -> Result<Value, Refused> {
        self.call(
            reqwest::Method::GET,
            &format!("/v3/rooms/{}/state/{kind}/", encode(room_id)),
            None,
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, Refused> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Sets this user's presence (`online`, `offline`, `unavailable`).
    pub async fn set_presence(&self, presence: &str) {
        self.put(
            &format!("/v3/presence/{}/status", encode(&self.user_id)),
            json!({"presence": presence}),
        )
        .await
        .expect("set presence");
    }

    /// Starts (for 60 s at most) or stops typing in `room_id`.
    pub async fn typing(&self, room_id: &str, on: bool) {
        let path = format!(
            "/v3/rooms/{}/typing/{}",
            encode(room_id),
            encode(&self.user_id)
        );
        self.put(&path, json!({"typing": on, "timeout": 60000}))
            .await
            .expect("typing");
    }

    /// Uploads `bytes` to the media repository, as a Matrix client does; the mxc URI.
    pub async fn upload(&self, content_type: &str, name: &str, bytes: Vec<u8>) -> String {
        let response: Value = self
            .http
            .post(format!("{}/_matrix/media/v3/upload", env().synapse_url))
            .query(&[("filename", name)])
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .expect("Synapse reachable")
            .json()
            .await
            .expect("upload response");
        response["content_uri"]
            .as_str()
            .unwrap_or_else(|| panic!("upload: {response}"))
            .to_owned()
    }

    /// The file of `mxc` as this user's client downloads it (the authenticated media API):
    /// the status and the bytes.
    pub async fn download(&self, mxc: &str) -> (StatusCode, Vec<u8>) {
        let path = mxc.strip_prefix("mxc://").expect("an mxc URI");
        let response = self
            .http
            .get(format!(
                "{}/_matrix/client/v1/media/download/{path}",
                env().synapse_url
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("Synapse reachable");
        let status = response.status();
        (status, response.bytes().await.expect("body").to_vec())
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<Value, Refused> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Result<Value, Refused> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// Plays Synapse: pushes a hand-made transaction with the given token and, once it is
/// acknowledged, waits until the suite's database has indexed it.
pub async fn push(txn_id: &str, body: &Value, token: Option<&str>) -> (StatusCode, Value) {
    let (status, answer) = push_only(txn_id, body, token).await;
    if status == StatusCode::OK && body["events"].as_array().is_some_and(|e| !e.is_empty()) {
        journal_indexed().await;
    }
    (status, answer)
}

/// [`push`] without the wait: for a bridge on a database of its own, whose test checks
/// its index itself (the suite's database may hold another test's journal, which no
/// bridge is indexing meanwhile).
pub async fn push_only(txn_id: &str, body: &Value, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .put(format!(
            "http://{}/_matrix/app/v1/transactions/{}",
            env().bridge_addr,
            encode(txn_id)
        ))
        .json(body)
        .timeout(ANSWER_WITHIN);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("bridge reachable");
    let status = response.status();
    let answer = response.json().await.unwrap_or(Value::Null);
    (status, answer)
}

/// Waits until the bridge's indexer has applied every journaled transaction: a 200 means
/// durable, and the index follows within moments.
pub async fn journal_indexed() {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(&env().database_url)
        .await
        .expect("database reachable");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done: bool = sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM ingest_journal \
                                WHERE pos > (SELECT pos FROM ingest_progress))",
        )
        .fetch_one(&mut conn)
        .await
        .expect("journal readable");
        if done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the journal was not indexed within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A message event as Synapse would push it.
pub fn message_event(room_id: &str, event_id: &str, sender: &str, body: &str) -> Value {
    json!({
        "type": "m.room.message", "event_id": event_id, "room_id": room_id, "sender": sender,
        "origin_server_ts": 1_763_000_000_000_u64,
        "content": {"msgtype": "m.text", "body": body},
    })
}

pub async fn count(pool: &PgPool, sql: &str, arg: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(arg)
        .fetch_one(pool)
        .await
        .expect("count query")
}

pub const GATEWAY_SECRET: &str = "test-gateway-secret";

/// A user JWT signed with the test secret.
pub fn jwt(sub: &str, roles: &[&str]) -> String {
    let claims = json!({"sub": sub, "roles": roles, "exp": chrono::Utc::now().timestamp() + 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"test-jwt-secret"),
    )
    .unwrap()
}

/// How long a request to the bridge may take before the test fails with the request's
/// error (a bridge that stopped answering fails the test rather than hanging it).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// A REST call to the bridge; the status and the JSON body.
pub async fn api(
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("http://{}{path}", env().bridge_addr))
        .timeout(ANSWER_WITHIN);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("bridge reachable");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn synapse_script(action: &str) {
    synapse_script_with(action, &[]).await;
}

/// Runs synapse.sh without blocking the runtime: the bridge under test runs on it, and
/// must go on answering while Synapse stops and starts (a push it left unanswered would
/// hold Synapse's appservice queue for a minute).
async fn synapse_script_with(action: &str, extra: &[(&str, &str)]) {
    let dir = var("CITY_BRIDGE_TEST_SYNAPSE_DIR");
    let status =
        tokio::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/synapse/synapse.sh"))
            .args([action, dir.as_str()])
            .envs(extra.iter().copied())
            .env("SERVER_NAME", &env().server_name)
            .env("SYNAPSE_PORT", var("CITY_BRIDGE_TEST_SYNAPSE_PORT"))
            .env("REGISTRATION", &env().registration)
            .env(
                "PUPPET_REGISTRATION",
                var("CITY_BRIDGE_TEST_PUPPET_REGISTRATION"),
            )
            .status()
            .await
            .expect("run synapse.sh");
    assert!(status.success(), "synapse.sh {action} failed");
}

/// Runs `sql` (with `?` parameters) on the running test Synapse's own database (SQLite)
/// and gives the rows. Only for the failure mode Synapse cannot be made to show on purpose,
/// a transaction its recovery leaves queued, which a test then makes by hand.
pub async fn synapse_sql(sql: &str, params: &[&str]) -> Vec<Vec<Value>> {
    const SCRIPT: &str = "import json, sqlite3, sys\n\
        db = sqlite3.connect(sys.argv[1], timeout=30)\n\
        rows = db.execute(sys.argv[2], sys.argv[3:]).fetchall()\n\
        db.commit()\n\
        print(json.dumps(rows))";
    let database = format!("{}/homeserver.db", var("CITY_BRIDGE_TEST_SYNAPSE_DIR"));
    let output = tokio::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/synapse/.venv/bin/python"
    ))
    .args(["-c", SCRIPT, database.as_str(), sql])
    .args(params)
    .output()
    .await
    .expect("run Synapse's Python");
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("rows as JSON")
}

/// Stops the test Synapse (really: the process ends).
pub async fn stop_synapse() {
    synapse_script("stop").await;
}

/// Starts it again and waits until it answers.
pub async fn start_synapse() {
    synapse_script("start").await;
}

/// Starts it again with some of `synapse.sh`'s settings (e.g. `SYNAPSE_STOCK_DIRECTORY`).
pub async fn start_synapse_with(settings: &[(&str, &str)]) {
    synapse_script_with("start", settings).await;
}

/// The shared NATS server of the test run (with JetStream).
pub fn nats_url() -> String {
    var("CITY_BRIDGE_TEST_NATS_URL")
}

/// A user JWT signed with the test secret that expires `valid_for` from now; its `exp`
/// (seconds since the Unix epoch) too.
pub fn jwt_expiring(sub: &str, roles: &[&str], valid_for: Duration) -> (String, i64) {
    let exp = chrono::Utc::now().timestamp() + i64::try_from(valid_for.as_secs()).unwrap();
    let claims = json!({"sub": sub, "roles": roles, "exp": exp});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"test-jwt-secret"),
    )
    .unwrap();
    (token, exp)
}

/// Whether Synapse has an account `user_id` (its profile exists: an account registered
/// through an appservice has one, with the localpart as display name).
pub async fn synapse_has_user(user_id: &str) -> bool {
    MatrixUser::appservice()
        .get(&format!("/v3/profile/{}", encode(user_id)))
        .await
        .is_ok()
}

/// A `BRIDGE_ROLE=api` instance on a port of its own, beside the one Synapse pushes to.
pub struct ApiInstance {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl ApiInstance {
    pub async fn start(nats: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = config_with(&[
            ("NATS_URL", nats),
            ("BRIDGE_ROLE", "api"),
            ("LISTEN_ADDR", &addr.to_string()),
        ]);
        let state = AppState::new(config).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app::run(listener, state, async {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A REST call to the bridge with extra request headers; the status, the headers and the
/// JSON body.
pub async fn api_with_headers(
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("http://{}{path}", env().bridge_addr))
        .timeout(ANSWER_WITHIN);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("bridge reachable");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// A Matrix client's `/sync` of one room, from its first call on: each later call gives
/// what changed since the one before (an initial sync may be answered from Synapse's
/// cache, so only the first call is one).
pub struct MatrixSync<'a> {
    user: &'a MatrixUser,
    room_id: String,
    since: Option<String>,
    /// What the first call said, not looked at yet.
    initial: Vec<Value>,
}

impl<'a> MatrixSync<'a> {
    pub async fn start(user: &'a MatrixUser, room_id: &str) -> Self {
        let mut sync = Self {
            user,
            room_id: room_id.to_owned(),
            since: None,
            initial: Vec::new(),
        };
        sync.initial = sync.next().await;
        sync
    }

    /// The room's ephemeral events of the next answer (long-polled up to 5 s).
    pub async fn next(&mut self) -> Vec<Value> {
        let filter = json!({"room": {"rooms": [self.room_id], "timeline": {"limit": 0}},
                            "presence": {"types": []}});
        let mut path = format!(
            "/v3/sync?timeout=5000&filter={}",
            encode(&filter.to_string())
        );
        if let Some(since) = &self.since {
            path.push_str(&format!("&since={}", encode(since)));
        }
        let sync = self.user.get(&path).await.expect("sync");
        self.since = sync["next_batch"].as_str().map(str::to_owned);
        sync["rooms"]["join"][&self.room_id]["ephemeral"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Syncs until an ephemeral event of the room satisfies `check` (at most 30 s).
    pub async fn until(&mut self, what: &str, check: impl Fn(&Value) -> bool) {
        if std::mem::take(&mut self.initial).iter().any(&check) {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if self.next().await.iter().any(&check) {
                return;
            }
        }
        panic!("timed out syncing for {what}");
    }
}

/// Whether `event` is an `m.typing` in which `user` types (or does not, `typing` false).
pub fn typing_event(event: &Value, user: &str, typing: bool) -> bool {
    event["type"] == "m.typing"
        && event["content"]["user_ids"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|id| id == user) == typing)
}

/// A client WebSocket to the bridge.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads `socket`'s frames until a JSON one satisfies `check` (at most 30 s; a close
/// before it fails the test with its frame).
pub async fn until_frame(socket: &mut Socket, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = tokio::time::timeout(left, socket.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("socket open")
            .expect("frame");
        match frame {
            Message::Text(text) => {
                if let Ok(value) = serde_json::from_str::<Value>(&text)
                    && check(&value)
                {
                    return value;
                }
            }
            Message::Close(frame) => panic!("closed while waiting for {what}: {frame:?}"),
            _ => {}
        }
    }
}
