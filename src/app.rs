//! The application: shared state, the router, and `run` with graceful shutdown. Tests start
//! the whole app with [`run`] on a listener of their own.

use std::{future::Future, ops::Deref, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::Request,
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    Error, Result, api, appservice,
    bus::Bus,
    config::{CompiledNamespaces, Config, Role},
    error::{ApiError, MatrixError},
    ingest::Receiving,
    matrix::{Homeserver, RetryPolicy},
    messaging::{ChannelHub, Puppets, RateLimits},
    presence::{LivePresence, PresenceHub},
    rooms::{CatchUp, CitySpace, CreationsInFlight, Discovery, RoomDirectory, RoomLocks, Rooms},
    store::Store,
    workers::Workers,
};

/// How long shutdown waits for background tasks before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
    pub directory: Arc<RoomDirectory>,
    /// Room creations under way.
    pub creations: Arc<CreationsInFlight>,
    /// One turn per city room for creation and lifecycle changes.
    pub room_locks: Arc<RoomLocks>,
    /// Every background task.
    pub workers: Workers,
    /// Applies batches of events to the index, one at a time.
    pub indexer: Arc<crate::ingest::Indexer>,
    /// On the instance Synapse pushes to (`BRIDGE_ROLE=all`), and only there: the ingest
    /// journal (pushed transactions appended, handed to the indexer) and discovery of the
    /// rooms pushed to the bridge that it does not know.
    pub receiving: Option<Receiving>,
    /// Wakes the reconciler of pending Matrix rooms.
    pub reconciler: Arc<tokio::sync::Notify>,
    /// The appservice's own user.
    pub sender: ruma::OwnedUserId,
    /// The bus to the platform.
    pub bus: Bus,
    /// Live presence of the rooms, fed by Synapse's pushes.
    pub live: Arc<LivePresence>,
    /// Latest presence per room as the bus carries it, and the WebSocket fan-out.
    pub hub: Arc<PresenceHub>,
    /// City rooms and their Matrix rooms.
    pub rooms: Rooms,
    /// The agents' Matrix users.
    pub agents: crate::agents::Agents,
    /// Acting in Matrix as people and agents, and indexing what was sent.
    pub messenger: crate::messaging::Messenger,
    /// The live feed of each watched channel.
    pub channels: Arc<ChannelHub>,
    /// The live feed of each person with `/ws/messaging` open here.
    pub users: Arc<crate::messaging::UserHub>,
    /// "Typing" sent to Synapse at most once every few seconds per person and channel.
    pub typing: crate::messaging::TypingThrottle,
    /// Send rate limits per user and per channel.
    pub limits: RateLimits,
    /// Wakes the outbox relay: events were written.
    pub relay_due: Arc<tokio::sync::Notify>,
    /// The new messages the indexer wrote, kept for the relay.
    pub relay_handoff: Arc<crate::outbox::Handoff>,
    /// The last health checks.
    pub health: crate::health::Health,
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
        let workers = Workers::new();
        let store = Store::connect(config.database_url.expose()).await?;
        let homeserver = Homeserver::new(
            &config.synapse_url,
            config.registration.as_token.clone(),
            RetryPolicy::default(),
        );
        let directory = Arc::new(RoomDirectory::default());
        directory.load(store.mapped_rooms().await?);
        // The bridge's Spaces are not city rooms: their events are neither waited for nor
        // looked into.
        for (_, space) in store.spaces().await? {
            directory.mark_not_city(space);
        }
        info!(mapped_rooms = directory.len(), "state loaded");
        let bus = Bus::connect(config.nats_url.as_deref(), &workers)
            .await
            .map_err(|e| Error::Bus(format!("cannot connect to NATS: {e}")))?;
        let hub = PresenceHub::new();
        // The catalog before the first client: a snapshot never misses a room.
        hub.set_catalog(store.room_catalog().await?);
        // What the bus last said of each room, so that this instance's clients see the
        // right counts before the next update.
        for payload in bus.presence_snapshot().await {
            hub.receive(&payload);
        }
        let presence_updates = bus
            .subscribe(crate::presence::wire::ROOM_SUBJECTS)
            .await
            .map_err(|e| Error::Bus(format!("cannot subscribe: {e}")))?;
        workers.spawn(
            "presence hub",
            Arc::clone(&hub).run(presence_updates, store.clone()),
        );
        workers.spawn("room catalog", Arc::clone(&hub).keep_catalog(store.clone()));
        let sender = config.sender();
        let live = LivePresence::new(
            &sender,
            bus.clone(),
            config.presence_throttle,
            homeserver.clone(),
            config.server_name.clone(),
            workers.clone(),
        );
        let puppets = config.puppet.as_ref().map(|puppet| {
            Arc::new(Puppets::new(Homeserver::new(
                &config.synapse_url,
                puppet.as_token.clone(),
                RetryPolicy::default(),
            )))
        });
        let limits = RateLimits::new(config.message_rate_per_minute);
        let creations = Arc::new(CreationsInFlight::default());
        // What only the receiving instance has, with the ends its workers read.
        let receiver = (config.role == Role::All).then(|| {
            let (discovery, offered) = Discovery::new();
            let (journal, handed) = crate::ingest::journal::Journal::new();
            let receiving = Receiving {
                journal: Arc::new(journal),
                discovery: Arc::new(discovery),
                catch_up: Arc::new(CatchUp::new(&config.server_name)),
            };
            (receiving, offered, handed)
        });
        let relay_due = Arc::new(tokio::sync::Notify::new());
        let namespaces = CompiledNamespaces::new(&config.registration.namespaces);
        let indexer = Arc::new(crate::ingest::Indexer::new(crate::ingest::IndexerParts {
            store: store.clone(),
            directory: Arc::clone(&directory),
            creations: Arc::clone(&creations),
            receiving: receiver.as_ref().map(|(receiving, _, _)| receiving.clone()),
            server_name: config.server_name.clone(),
            agents: namespaces.users.clone(),
            sender: sender.clone(),
        }));
        // The index's followers.
        let handoff = Arc::new(crate::outbox::Handoff::default());
        workers.spawn(
            "index followers: relay",
            crate::outbox::hand_over(
                indexer.subscribe(),
                Arc::clone(&handoff),
                Arc::clone(&relay_due),
            ),
        );
        workers.spawn(
            "index followers: people's memberships",
            crate::messaging::follow_members(indexer.subscribe(), bus.clone()),
        );
        workers.spawn(
            "index followers: presence",
            Arc::clone(&live).follow(indexer.subscribe(), Arc::clone(&directory)),
        );
        let agents = crate::agents::Agents::new(
            store.clone(),
            homeserver.clone(),
            config.server_name.clone(),
            workers.clone(),
        );
        workers.spawn(
            "index followers: agents' invitations",
            agents.clone().follow(indexer.subscribe()),
        );
        let (receiving, offered) = match receiver {
            Some((receiving, offered, handed)) => {
                // The indexer of what Synapse pushes: only the receiving instance has one.
                workers.spawn(
                    "indexer",
                    crate::ingest::journal::run_indexer(
                        handed,
                        Arc::clone(&receiving.journal),
                        store.clone(),
                        Arc::clone(&indexer),
                    ),
                );
                (Some(receiving), Some(offered))
            }
            None => (None, None),
        };
        let messenger = crate::messaging::Messenger {
            homeserver: homeserver.clone(),
            puppets,
            store: store.clone(),
            indexer: Arc::clone(&indexer),
            role: config.role,
            relay_due: Arc::clone(&relay_due),
        };
        let room_locks = Arc::new(RoomLocks::default());
        // Synapse lets an appservice create only the aliases of its namespaces.
        let space_alias = crate::domain::space_alias(None, &config.server_name);
        let space_reserved = namespaces.aliases.is_match(space_alias.as_str());
        if !space_reserved {
            warn!(
                %space_alias,
                "the registration does not reserve the city Space's alias: no Space \
                 (city-bridge check says what to add)"
            );
        }
        let reconciler = Arc::new(tokio::sync::Notify::new());
        let rooms = Rooms {
            store: store.clone(),
            homeserver: homeserver.clone(),
            server_name: config.server_name.clone(),
            sender: sender.clone(),
            directory: Arc::clone(&directory),
            creations: Arc::clone(&creations),
            locks: Arc::clone(&room_locks),
            hub: Arc::clone(&hub),
            reconciler: Arc::clone(&reconciler),
            workers: workers.clone(),
            indexer: Arc::clone(&indexer),
            space: Arc::new(CitySpace::new(space_reserved)),
        };
        let state = Self(Arc::new(Shared {
            namespaces,
            sender,
            config,
            store,
            homeserver,
            directory,
            creations,
            room_locks,
            workers,
            indexer,
            receiving,
            reconciler,
            rooms,
            agents,
            bus,
            live,
            hub,
            messenger,
            channels: Arc::default(),
            users: Arc::default(),
            typing: crate::messaging::TypingThrottle::default(),
            limits,
            relay_due,
            relay_handoff: handoff,
            health: crate::health::Health::default(),
        }));
        if let (Some(receiving), Some(offered)) = (&state.receiving, offered) {
            state.workers.spawn(
                "discovery",
                Arc::clone(&receiving.discovery).run(offered, state.rooms.clone()),
            );
            state.workers.spawn(
                "catch-up after Synapse's recoveries",
                Arc::clone(&receiving.catch_up).run(state.rooms.clone()),
            );
        }
        Ok(state)
    }

    /// City rooms and their Matrix rooms.
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }
}

// Handlers take the service they use: its sub-state of the router's `AppState`.
impl axum::extract::FromRef<AppState> for Rooms {
    fn from_ref(state: &AppState) -> Self {
        state.rooms.clone()
    }
}

impl axum::extract::FromRef<AppState> for crate::agents::Agents {
    fn from_ref(state: &AppState) -> Self {
        state.agents.clone()
    }
}

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    let routes = match state.config.role {
        // Synapse pushes to the one instance of its registration; others answer 404.
        Role::All => Router::new().nest("/_matrix/app/v1", appservice::router()),
        Role::Api => Router::new(),
    };
    // Never behind CORS; on its own address when METRICS_ADDR is set.
    let routes = if state.config.metrics_addr.is_none() {
        routes.route("/metrics", get(crate::metrics::serve))
    } else {
        routes
    };
    routes
        .merge(api::router(&state.config))
        .route("/healthz", get(crate::health::healthz))
        .route("/readyz", get(crate::health::readyz))
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
    let workers = state.workers.clone();
    workers.spawn(
        "channel feeds",
        crate::outbox::feed_channels(state.bus.clone(), Arc::clone(&state.channels)),
    );
    workers.spawn(
        "per-user feeds",
        crate::messaging::feed_users(
            state.bus.clone(),
            Arc::clone(&state.users),
            state.store.clone(),
        ),
    );
    workers.spawn(
        "channel memberships",
        ChannelHub::check_memberships(
            Arc::clone(&state.channels),
            state.store.clone(),
            state.homeserver.clone(),
        ),
    );
    workers.spawn("health checks", crate::health::keep_checking(state.clone()));
    if let Some(addr) = state.config.metrics_addr {
        let metrics = tokio::net::TcpListener::bind(addr).await?;
        info!(%addr, "metrics listening");
        let cancelled = workers.cancelled();
        workers.spawn("metrics", async move {
            let router = Router::new().route("/metrics", get(crate::metrics::serve));
            if let Err(error) = axum::serve(metrics, router)
                .with_graceful_shutdown(cancelled.cancelled_owned())
                .await
            {
                warn!(%error, "the metrics listener stopped");
            }
        });
    }
    if state.receiving.is_some() {
        workers.spawn(
            "homeserver check",
            crate::health::check_homeserver(state.clone()),
        );
        workers.spawn(
            "reconciler",
            crate::rooms::reconcile(state.rooms.clone(), state.messenger.clone()),
        );
        workers.spawn("dead-letter retention", prune_dead_letters(state.clone()));
        let relay = crate::outbox::Relay::new(
            state.store.clone(),
            state.bus.clone(),
            state.config.stream.clone(),
            Arc::clone(&state.relay_due),
            Arc::clone(&state.relay_handoff),
        );
        workers.spawn("outbox relay", relay.run());
        workers.spawn(
            "outbox retention",
            crate::outbox::prune(state.store.clone(), state.config.outbox_retention_hours),
        );
        workers.spawn(
            "agent presence",
            crate::agents::keep_presence(
                state.store.clone(),
                state.homeserver.clone(),
                state.config.server_name.clone(),
                Arc::clone(&state.live),
                state.config.agent_presence_refresh,
            ),
        );
        workers.spawn("presence rebuild", {
            let state = state.clone();
            async move { state.live.rebuild(state.directory.all()).await }
        });
    }
    let served = serve(listener, router(state), shutdown).await;
    workers.shutdown(SHUTDOWN_GRACE).await;
    info!("stopped");
    served
}

/// How long a client may take to send a request's headers before its connection is
/// closed: a client trickling them a byte at a time holds nothing for long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown`, then lets open requests finish. HTTP/1
/// with upgrades (the WebSockets), and a [`HEADER_READ_TIMEOUT`] that `axum::serve` does
/// not set. Each connection is hyper's own over the `TcpStream` (no wrapper in between),
/// so an upgraded connection hands the socket itself to the presence fan-out
/// (`websocket`).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper::server::conn::http1;
    use hyper_util::{
        rt::{TokioIo, TokioTimer},
        service::TowerToHyperService,
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // Told to stop by a new value; every connection holds a receiver, so the sender's
    // `closed()` is when the last one has finished.
    let (stop, stopped) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Frames and answers go out when written, as Node's servers do: a small frame
        // held back until the client acknowledges the previous one (Nagle's algorithm
        // against a delayed ACK) waits up to 40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let mut connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let ended = tokio::select! {
                ended = &mut connection => ended,
                _ = stopped.changed() => {
                    // Finish the request in flight, take no other.
                    std::pin::Pin::new(&mut connection).graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::trace!(%error, "connection ended");
            }
        });
    }
    drop(listener);
    drop(stopped);
    let _ = stop.send(());
    // A request whose body never comes does not hold the stop up for ever.
    if tokio::time::timeout(SHUTDOWN_GRACE, stop.closed())
        .await
        .is_err()
    {
        warn!("requests still open after the grace period: stopping without them");
    }
    Ok(())
}

/// Deletes dead letters past `DEAD_LETTER_RETENTION_DAYS`, and `Idempotency-Key`s past a
/// day, at start and every hour.
async fn prune_dead_letters(state: AppState) {
    let days = state.config.dead_letter_retention_days;
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match state.store.prune_dead_letters(days).await {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, days, "old dead letters deleted"),
            Err(error) => warn!(%error, "cannot delete old dead letters"),
        }
        if let Err(error) = state.store.prune_send_requests().await {
            warn!(%error, "cannot delete old idempotency keys");
        }
    }
}

async fn not_found(request: Request) -> Response {
    if request.uri().path().starts_with("/_matrix/") {
        MatrixError::unrecognized().into_response()
    } else {
        ApiError::not_found().into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::routing::get;
    use tokio::sync::{Notify, oneshot};

    use super::*;

    #[tokio::test]
    async fn a_stop_finishes_the_request_in_flight_and_waits_for_no_idle_connection() {
        let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let handler = {
            let (started, release) = (Arc::clone(&started), Arc::clone(&release));
            move || async move {
                started.notify_one();
                release.notified().await;
                "done"
            }
        };
        let router = Router::new().route("/slow", get(handler));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, router, async {
            let _ = stopped.await;
        }));
        // An idle connection, opened and never used.
        let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
        started.notified().await;

        stop.send(()).unwrap();
        release.notify_one();
        let answer = request
            .await
            .unwrap()
            .expect("the request in flight is answered");
        assert_eq!(answer.text().await.unwrap(), "done");
        tokio::time::timeout(SHUTDOWN_GRACE / 2, served)
            .await
            .expect("the idle connection does not hold the stop up")
            .unwrap()
            .unwrap();
    }
}
