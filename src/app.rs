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
    Result, api, appservice,
    config::{CompiledNamespaces, Config},
    error::{ApiError, MatrixError},
    homeserver::{Homeserver, RetryPolicy},
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
        let store = Store::connect(&config.database_url).await?;
        let homeserver = Homeserver::new(
            &config.synapse_url,
            &config.registration.as_token,
            RetryPolicy::default(),
        );
        let directory = RoomDirectory::default();
        directory.load(store.mapped_rooms().await?);
        info!(mapped_rooms = directory.len(), "state loaded");
        Ok(Self(Arc::new(Shared {
            namespaces: CompiledNamespaces::new(&config.registration.namespaces),
            sender: config.sender(),
            config,
            store,
            homeserver,
            directory,
            creations: CreationsInFlight::default(),
            ingest: tokio::sync::Mutex::new(()),
            reconciler: tokio::sync::Notify::new(),
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
        crate::api::CityRoomView::new(room)
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
