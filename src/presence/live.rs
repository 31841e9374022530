//! The live side of presence, on the instance Synapse pushes to: folds pushed ephemeral
//! data and membership into the aggregator, throttles per room, publishes on the bus.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use ruma::{
    OwnedRoomId, OwnedUserId, UserId,
    api::{
        appservice::event::push_events::v1::EphemeralData,
        client::{membership::joined_members, presence::get_presence},
    },
    events::room::member::MembershipState,
    serde::Raw,
};
use tokio::{sync::Semaphore, task::JoinSet};
use tracing::{debug, info, warn};

use super::{
    Offer, PresenceAggregator, PresenceStatus, RoomPresence, RoomThrottle, UserPresenceEvent, wire,
};
use crate::{
    bus::Bus,
    matrix::Homeserver,
    rooms::{MappedRoom, RoomDirectory},
    workers::Workers,
};

/// How many homeserver calls a rebuild makes at once.
const REBUILD_CONCURRENCY: usize = 8;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct State {
    aggregator: PresenceAggregator,
    throttle: RoomThrottle<String, RoomPresence>,
}

/// The presence of every mapped room, kept live and published.
pub struct LivePresence {
    state: Mutex<State>,
    /// Consecutive rebuilds that failed, for their backoff.
    retries: std::sync::atomic::AtomicU32,
    bus: Bus,
    homeserver: Homeserver,
    server_name: ruma::OwnedServerName,
    workers: Workers,
}

impl std::fmt::Debug for LivePresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePresence").finish_non_exhaustive()
    }
}

/// Subject and payload of one publication.
type Outgoing = Vec<(String, Bytes)>;

impl LivePresence {
    /// Live presence that never counts `sender`, publishing at most once per `window`
    /// per room.
    pub fn new(
        sender: &UserId,
        bus: Bus,
        window: Duration,
        homeserver: Homeserver,
        server_name: ruma::OwnedServerName,
        workers: Workers,
    ) -> Arc<Self> {
        Arc::new(Self {
            retries: std::sync::atomic::AtomicU32::new(0),
            state: Mutex::new(State {
                aggregator: PresenceAggregator::new(sender.as_str()),
                throttle: RoomThrottle::new(window),
            }),
            bus,
            homeserver,
            server_name,
            workers,
        })
    }

    /// The presence this instance last saw for `user_id` (Synapse pushes it to the
    /// receiving instance only), if any.
    pub fn presence_of(&self, user_id: &str) -> Option<super::PresenceStatus> {
        self.lock().aggregator.user(user_id).map(|u| u.status)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("presence state is not poisoned")
    }

    /// Makes sure the aggregator knows a mapped room. A room new to it is noted in
    /// `new_rooms`, to load its members from the homeserver.
    fn ensure_room(
        &self,
        state: &mut State,
        matrix_room_id: &ruma::RoomId,
        directory: &RoomDirectory,
        new_rooms: &mut Vec<(OwnedRoomId, MappedRoom)>,
    ) {
        if state.aggregator.room(matrix_room_id.as_str()).is_some() {
            return;
        }
        let Some(room) = directory.get(matrix_room_id) else {
            return;
        };
        let alias = room.slug.alias(&self.server_name).to_string();
        state
            .aggregator
            .map_room(matrix_room_id.as_str(), room.slug.to_string(), Some(alias));
        new_rooms.push((matrix_room_id.to_owned(), room));
    }

    /// Loads the members of rooms that became mapped, in the background.
    fn rebuild_new(self: &Arc<Self>, new_rooms: Vec<(OwnedRoomId, MappedRoom)>) {
        if !new_rooms.is_empty() {
            let this = Arc::clone(self);
            self.workers.spawn(
                "presence rebuild",
                async move { this.rebuild(new_rooms).await },
            );
        }
    }

    /// Offers changed rooms to the throttle; what may go out now is returned, what must
    /// wait gets a timer.
    fn offer(self: &Arc<Self>, state: &mut State, rooms: Vec<RoomPresence>, out: &mut Outgoing) {
        let now = Instant::now();
        for room in rooms {
            match state.throttle.offer(room.room_slug.clone(), room, now) {
                Offer::Publish(room) => out.push(room_message(&room)),
                Offer::Deferred {
                    at,
                    newly_scheduled,
                } => {
                    if newly_scheduled {
                        let this = Arc::clone(self);
                        self.workers.spawn("presence throttle", async move {
                            tokio::time::sleep_until(at.into()).await;
                            this.flush_due();
                        });
                    }
                }
            }
        }
    }

    fn flush_due(&self) {
        let due = self.lock().throttle.due(Instant::now());
        for (_, room) in due {
            let (subject, payload) = room_message(&room);
            self.bus.publish(subject, payload);
        }
    }

    fn send(&self, out: Outgoing) {
        for (subject, payload) in out {
            self.bus.publish(subject, payload);
        }
    }

    /// Applies the ephemeral data of one transaction: `m.presence`, `m.typing`, `m.receipt`.
    /// Returns who is typing in each mapped room a typing event was about.
    pub fn apply_ephemeral(
        self: &Arc<Self>,
        data: &[Raw<EphemeralData>],
        directory: &RoomDirectory,
    ) -> Vec<(crate::domain::CityRoomId, Vec<String>)> {
        let mut typing = Vec::new();
        let mut out = Vec::new();
        let mut new_rooms = Vec::new();
        {
            let mut state = self.lock();
            let now = now_ms();
            for raw in data {
                let event = match raw.deserialize() {
                    Ok(event) => event,
                    Err(error) => {
                        warn!(%error, event = raw.json().get(), "malformed ephemeral event skipped");
                        continue;
                    }
                };
                match event {
                    EphemeralData::Presence(event) => {
                        let Some(status) = PresenceStatus::of(&event.content.presence) else {
                            continue;
                        };
                        let ago = event.content.last_active_ago.map_or(0, u64::from);
                        let change = state.aggregator.apply_presence(
                            event.sender.as_str(),
                            status,
                            now.saturating_sub(ago),
                        );
                        if let Some(user) = change.user {
                            out.push(self.user_message(&user));
                        }
                        self.offer(&mut state, change.rooms, &mut out);
                    }
                    EphemeralData::Typing(event) => {
                        self.ensure_room(&mut state, &event.room_id, directory, &mut new_rooms);
                        let users: Vec<String> = event
                            .content
                            .user_ids
                            .iter()
                            .map(ToString::to_string)
                            .collect();
                        if let Some(room) = directory.get(&event.room_id) {
                            typing.push((room.id, users.clone()));
                        }
                        if let Some(room) =
                            state.aggregator.apply_typing(event.room_id.as_str(), users)
                        {
                            self.offer(&mut state, vec![room], &mut out);
                        }
                    }
                    EphemeralData::Receipt(event) => {
                        self.ensure_room(&mut state, &event.room_id, directory, &mut new_rooms);
                        state.aggregator.touch(event.room_id.as_str(), now);
                    }
                    _ => {}
                }
            }
        }
        self.send(out);
        self.rebuild_new(new_rooms);
        typing
    }

    /// Follows the index: what each committed batch did to membership and activity, and
    /// the rooms its upgrades replaced, until the indexer is gone.
    pub async fn follow(
        self: Arc<Self>,
        mut commits: crate::ingest::Subscription,
        directory: Arc<RoomDirectory>,
    ) {
        while let Some(committed) = commits.recv().await {
            for old in &committed.replaced_rooms {
                self.unmap_room(old);
            }
            if !committed.memberships.is_empty() || !committed.activity.is_empty() {
                self.apply_room_events(&committed.memberships, &committed.activity, &directory);
            }
        }
    }

    /// Applies what a committed transaction did to membership and activity.
    fn apply_room_events(
        self: &Arc<Self>,
        memberships: &[(OwnedRoomId, OwnedUserId, MembershipState)],
        activity: &[(OwnedRoomId, u64)],
        directory: &RoomDirectory,
    ) {
        let mut out = Vec::new();
        let mut new_rooms = Vec::new();
        let mut unknown = Vec::new();
        {
            let mut state = self.lock();
            for (room, ts) in activity {
                self.ensure_room(&mut state, room, directory, &mut new_rooms);
                state.aggregator.touch(room.as_str(), *ts);
            }
            for (room, user, membership) in memberships {
                self.ensure_room(&mut state, room, directory, &mut new_rooms);
                // Synapse pushes presence only while a user shares a room with us: what a
                // newcomer set before joining must be asked for.
                if *membership == MembershipState::Join
                    && state.aggregator.user(user.as_str()).is_none()
                {
                    unknown.push(user.to_string());
                }
                if let Some(changed) =
                    state
                        .aggregator
                        .apply_membership(room.as_str(), user.as_str(), membership)
                {
                    self.offer(&mut state, vec![changed], &mut out);
                }
            }
        }
        self.send(out);
        self.rebuild_new(new_rooms);
        if !unknown.is_empty() {
            let this = Arc::clone(self);
            self.workers.spawn("presence lookup", async move {
                this.load_presence(unknown).await
            });
        }
    }

    /// Asks the homeserver for the presence of `users` and applies it.
    async fn load_presence(self: &Arc<Self>, users: Vec<String>) {
        let limit = Arc::new(Semaphore::new(REBUILD_CONCURRENCY));
        let mut presences = JoinSet::new();
        for user in users {
            let Ok(user) = OwnedUserId::try_from(user) else {
                continue;
            };
            let (homeserver, limit) = (self.homeserver.clone(), Arc::clone(&limit));
            presences.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let response = homeserver
                    .send(get_presence::v3::Request::new(user.clone()), None)
                    .await;
                (user, response)
            });
        }
        let results = presences.join_all().await;
        let now = now_ms();
        let mut out = Vec::new();
        {
            let mut state = self.lock();
            for (user, response) in results {
                match response {
                    Ok(p) => {
                        if let Some(status) = PresenceStatus::of(&p.presence) {
                            let ago = p
                                .last_active_ago
                                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
                            let change = state.aggregator.apply_presence(
                                user.as_str(),
                                status,
                                now.saturating_sub(ago),
                            );
                            // Learnt here first, the push that follows is "no change":
                            // the user's subject must carry it now.
                            if let Some(user) = change.user {
                                out.push(self.user_message(&user));
                            }
                            self.offer(&mut state, change.rooms, &mut out);
                        }
                    }
                    Err(error) => debug!(%user, %error, "no presence for user"),
                }
            }
        }
        self.send(out);
    }

    /// Sets a user's presence (an agent's, set through the API) and publishes it.
    pub fn set_presence(self: &Arc<Self>, user: &UserId, status: PresenceStatus) {
        let mut out = Vec::new();
        {
            let mut state = self.lock();
            let change = state
                .aggregator
                .apply_presence(user.as_str(), status, now_ms());
            if let Some(user) = change.user {
                out.push(self.user_message(&user));
            }
            self.offer(&mut state, change.rooms, &mut out);
        }
        self.send(out);
    }

    /// Forgets a Matrix room (replaced by an upgrade).
    pub fn unmap_room(&self, matrix_room_id: &ruma::RoomId) {
        let mut state = self.lock();
        // A held update of the old room must not go out after it.
        if let Some(room) = state.aggregator.room(matrix_room_id.as_str()) {
            state.throttle.forget(room.room_slug.as_str());
        }
        state.aggregator.unmap_room(matrix_room_id.as_str());
    }

    /// Rebuilds the state of `rooms` from the homeserver — joined members, then their
    /// presence — since Synapse keeps no ephemeral data for an appservice that was down.
    /// Publishes every room afterwards.
    pub fn rebuild(
        self: &Arc<Self>,
        rooms: Vec<(OwnedRoomId, MappedRoom)>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.rebuild_once(rooms))
    }

    async fn rebuild_once(self: &Arc<Self>, rooms: Vec<(OwnedRoomId, MappedRoom)>) {
        let homeserver = &self.homeserver;
        let started = Instant::now();
        let limit = Arc::new(Semaphore::new(REBUILD_CONCURRENCY));
        let mut members = JoinSet::new();
        for (room_id, _) in &rooms {
            let room_id = room_id.clone();
            let (homeserver, limit) = (homeserver.clone(), Arc::clone(&limit));
            members.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let response = homeserver
                    .send(joined_members::v3::Request::new(room_id.clone()), None)
                    .await;
                (room_id, response)
            });
        }
        let mut users = std::collections::BTreeSet::<OwnedUserId>::new();
        let mut updated = Vec::new();
        let mut failed = Vec::new();
        for (room_id, response) in members.join_all().await {
            match response {
                Ok(response) => {
                    users.extend(response.joined.keys().cloned());
                    updated.push((
                        room_id,
                        response
                            .joined
                            .into_keys()
                            .map(String::from)
                            .collect::<Vec<_>>(),
                    ));
                }
                Err(error) => {
                    warn!(%room_id, %error, "cannot load joined members; will retry");
                    if let Some(room) = rooms.iter().find(|(id, _)| *id == room_id) {
                        failed.push(room.clone());
                    }
                }
            }
        }
        if failed.is_empty() {
            self.retries.store(0, std::sync::atomic::Ordering::Relaxed);
        } else {
            // Synapse may still be starting: try those rooms again, backing off, until they load.
            let this = Arc::clone(self);
            self.workers.spawn("presence rebuild retry", async move {
                let attempt = this
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    .min(4);
                tokio::time::sleep(Duration::from_secs(5 << attempt)).await;
                this.rebuild(failed).await;
            });
        }
        {
            let mut state = self.lock();
            for (matrix_room_id, room) in &rooms {
                let alias = room.slug.alias(&self.server_name).to_string();
                state.aggregator.map_room(
                    matrix_room_id.to_string(),
                    room.slug.to_string(),
                    Some(alias),
                );
            }
            for (room_id, joined) in updated {
                state.aggregator.set_members(room_id.as_str(), joined);
            }
        }
        self.load_presence(users.into_iter().map(String::from).collect())
            .await;
        let mut out = Vec::new();
        {
            let mut state = self.lock();
            let snapshot = rooms
                .iter()
                .filter_map(|(id, _)| state.aggregator.room(id.as_str()))
                .collect();
            self.offer(&mut state, snapshot, &mut out);
        }
        info!(rooms = rooms.len(), elapsed = ?started.elapsed(), "presence rebuilt");
        self.send(out);
    }
}

/// `city.presence.room.<slug>` with the room's state.
fn room_message(room: &RoomPresence) -> (String, Bytes) {
    let payload = serde_json::to_vec(room).expect("presence serialises");
    (wire::room_subject(&room.room_slug), Bytes::from(payload))
}

impl LivePresence {
    /// `city.presence.user.<token>` with the user's status.
    fn user_message(&self, user: &UserPresenceEvent) -> (String, Bytes) {
        let payload = serde_json::to_vec(user).expect("presence serialises");
        (
            wire::user_subject(&user.matrix_user_id, &self.server_name),
            Bytes::from(payload),
        )
    }
}
