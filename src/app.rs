//! The application: shared state, the router, and `run` with graceful shutdown. Tests start
//! the whole app with [`run`] on a listener of their own.

use std::{future::Future, ops::Deref, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    Error, Result, api, appservice,
    bus::Bus,
    config::{CompiledNamespaces, Config},
    error::{ApiError, MatrixError},
    matrix::{Homeserver, RetryPolicy},
    presence::{LivePresence, PresenceHub},
    rooms::{CreationsInFlight, RoomDirectory, Rooms},
    store::Store,
};

/// What every handler and worker shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The registration's namespaces, compiled.
    pub namespaces: CompiledNamespaces,
    /// The database.
    pub store: Store,
    /// The homeserver.
    pub homeserver: Homeserver,
    /// Matrix room → city room.
    pub directory: RoomDirectory,
    /// Room creations under way.
    pub creations: CreationsInFlight,
    /// Held while a transaction is applied, so transactions apply in order.
    pub ingest: tokio::sync::Mutex<()>,
    /// Wakes the reconciler of pending Matrix rooms.
    pub reconciler: tokio::sync::Notify,
    /// The appservice's own user.
    pub sender: ruma::OwnedUserId,
    /// The bus to the platform.
    pub bus: Bus,
    /// Live presence of the rooms, fed by Synapse's pushes.
    pub live: Arc<LivePresence>,
    /// Latest presence per room as the bus carries it, and the WebSocket fan-out.
    pub hub: Arc<PresenceHub>,
}

/// The state handed to handlers: cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Connects to Postgres (applying migrations) and loads the room map.
    pub async fn new(config: Config) -> Result<Self> {
        let store = Store::connect(config.database_url.expose()).await?;
        let homeserver = Homeserver::new(
            &config.synapse_url,
            config.registration.as_token.clone(),
            RetryPolicy::default(),
        );
        let directory = RoomDirectory::default();
        directory.load(store.mapped_rooms().await?);
        info!(mapped_rooms = directory.len(), "state loaded");
        let bus = Bus::connect(config.nats_url.as_deref())
            .await
            .map_err(|e| Error::Bus(format!("cannot connect to NATS: {e}")))?;
        let hub = PresenceHub::new();
        let presence_updates = bus
            .subscribe("city.presence.room.>")
            .await
            .map_err(|e| Error::Bus(format!("cannot subscribe: {e}")))?;
        tokio::spawn(Arc::clone(&hub).run(presence_updates));
        let sender = config.sender();
        let live = LivePresence::new(
            &sender,
            bus.clone(),
            config.presence_throttle,
            homeserver.clone(),
            config.server_name.clone(),
        );
        Ok(Self(Arc::new(Shared {
            namespaces: CompiledNamespaces::new(&config.registration.namespaces),
            sender,
            config,
            store,
            homeserver,
            directory,
            creations: CreationsInFlight::default(),
            ingest: tokio::sync::Mutex::new(()),
            reconciler: tokio::sync::Notify::new(),
            bus,
            live,
            hub,
        })))
    }

    /// City rooms and their Matrix rooms.
    pub fn rooms(&self) -> Rooms<'_> {
        Rooms {
            store: &self.store,
            homeserver: &self.homeserver,
            directory: &self.directory,
            creations: &self.creations,
            server_name: &self.config.server_name,
            sender: &self.sender,
            reconciler: &self.reconciler,
        }
    }

    /// The UI's view of a room, with live presence.
    pub fn live_view(&self, room: crate::store::CityRoom) -> crate::api::CityRoomView {
        let live = self.hub.room(&room.slug);
        let mut view = crate::api::CityRoomView::new(room);
        if let Some(live) = live {
            view.members_online = Some(live.online_count);
            view.last_event = live
                .last_event_ts
                .and_then(|ts| chrono::DateTime::from_timestamp_millis(i64::try_from(ts).ok()?));
        }
        view
    }
}

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    Router::new()
        .nest("/_matrix/app/v1", appservice::router())
        .merge(api::router(&state.config.cors_origins))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(state)
}

/// Serves `listener` until `shutdown` resolves, then finishes the requests in flight (a
/// transaction being applied is committed and answered) and returns.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    info!(addr = %listener.local_addr()?, "listening");
    let workers = [
        tokio::spawn(startup_ping(state.clone())),
        tokio::spawn(crate::rooms::reconcile(state.clone())),
        tokio::spawn({
            let state = state.clone();
            async move { state.live.rebuild(state.directory.all()).await }
        }),
    ];
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    workers.iter().for_each(tokio::task::JoinHandle::abort);
    info!("stopped");
    served
}

/// Pings the homeserver once we listen: it answers by pinging back and retrying the
/// transactions it queued while we were down. Never fatal.
async fn startup_ping(state: AppState) {
    match state.homeserver.ping(&state.config.registration.id).await {
        Ok(rtt) => info!(?rtt, "homeserver ping answered"),
        Err(error) => warn!(%error, "homeserver ping failed; Synapse will retry on its own"),
    }
}

/// # `GET /healthz`
async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let homeserver = state.homeserver.with_retry(RetryPolicy::ONCE);
    let synapse = match tokio::time::timeout(Duration::from_secs(3), homeserver.whoami()).await {
        Ok(Ok(_)) => "connected",
        _ => "unreachable",
    };
    let database = if state.store.ping().await {
        "connected"
    } else {
        "unreachable"
    };
    Json(json!({ "status": "ok", "synapse": synapse, "database": database }))
}

async fn not_found(request: Request) -> Response {
    if request.uri().path().starts_with("/_matrix/") {
        MatrixError::unrecognized().into_response()
    } else {
        ApiError::not_found().into_response()
    }
}
