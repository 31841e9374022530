//! City rooms and their Matrix rooms: the in-memory map from Matrix room to city room, and
//! making the Matrix room of a city room exist exactly once.

use std::{collections::HashMap, sync::RwLock, time::Duration};

use ruma::{
    OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, ServerName, UserId,
    api::error::ErrorKind,
    events::room::{name::RoomNameEventContent, topic::RoomTopicEventContent},
};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::{
    Error, Result,
    ingest::{MappedRoom, NAME_PREFIX},
    matrix::{Homeserver, NewMatrixRoom},
    store::{CityRoom, NewRoom, RoomUpdate, Store},
};

/// Which Matrix rooms are city rooms. Read on every pushed event, so it lives in memory;
/// Postgres stays the source of truth and fills it on start and on a miss.
#[derive(Debug, Default)]
pub struct RoomDirectory {
    rooms: RwLock<HashMap<String, MappedRoom>>,
}

impl RoomDirectory {
    /// The city room of a Matrix room, if it is mapped.
    pub fn get(&self, matrix_room_id: &str) -> Option<MappedRoom> {
        self.rooms
            .read()
            .expect("not poisoned")
            .get(matrix_room_id)
            .cloned()
    }

    /// Every mapped room.
    pub fn all(&self) -> Vec<(String, MappedRoom)> {
        let rooms = self.rooms.read().expect("not poisoned");
        rooms
            .iter()
            .map(|(id, room)| (id.clone(), room.clone()))
            .collect()
    }

    /// Whether a Matrix room is mapped.
    pub fn contains(&self, matrix_room_id: &str) -> bool {
        self.rooms
            .read()
            .expect("not poisoned")
            .contains_key(matrix_room_id)
    }

    /// Maps `matrix_room_id` to `room`.
    pub fn insert(&self, matrix_room_id: String, room: MappedRoom) {
        self.rooms
            .write()
            .expect("not poisoned")
            .insert(matrix_room_id, room);
    }

    /// Forgets a Matrix room (it was replaced by an upgrade).
    pub fn remove(&self, matrix_room_id: &str) {
        self.rooms
            .write()
            .expect("not poisoned")
            .remove(matrix_room_id);
    }

    /// Replaces the whole map.
    pub fn load(&self, rooms: Vec<(String, MappedRoom)>) {
        *self.rooms.write().expect("not poisoned") = rooms.into_iter().collect();
    }

    /// How many rooms are mapped.
    pub fn len(&self) -> usize {
        self.rooms.read().expect("not poisoned").len()
    }

    /// Whether no room is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts Matrix room creations under way. Synapse may push a new room's first events
/// before the creation call has returned and the mapping is stored; ingestion waits for
/// the count to reach zero before it decides such a room is not a city room.
#[derive(Debug)]
pub struct CreationsInFlight {
    count: watch::Sender<usize>,
}

impl Default for CreationsInFlight {
    fn default() -> Self {
        Self {
            count: watch::channel(0).0,
        }
    }
}

/// Held while a creation is under way.
#[derive(Debug)]
pub struct CreationGuard<'a>(&'a CreationsInFlight);

impl Drop for CreationGuard<'_> {
    fn drop(&mut self) {
        self.0.count.send_modify(|n| *n -= 1);
    }
}

impl CreationsInFlight {
    /// Marks a creation as under way until the guard is dropped.
    pub fn start(&self) -> CreationGuard<'_> {
        self.count.send_modify(|n| *n += 1);
        CreationGuard(self)
    }

    /// Waits (at most `limit`) until no creation is under way.
    pub async fn settled(&self, limit: Duration) {
        let mut rx = self.count.subscribe();
        if tokio::time::timeout(limit, rx.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            warn!("room creations still under way after {limit:?}; going on");
        }
    }
}

/// What a backfill did.
#[derive(Debug, Default)]
pub struct Backfill {
    /// Rooms without a Matrix room looked at.
    pub checked: usize,
    /// Matrix rooms found by their alias.
    pub found: usize,
    /// Matrix rooms created.
    pub created: usize,
    /// Rooms that failed, with the reason.
    pub failed: Vec<(String, String)>,
}

/// Creates the Matrix rooms of rooms left pending while the homeserver was unavailable,
/// with exponential backoff, until `shutdown` is notified. Woken at once by
/// [`Rooms::reconciler`].
pub async fn reconcile(state: crate::app::AppState) {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(10);
    let mut delay = MIN;
    loop {
        let pending = match state.store.rooms_without_matrix(true).await {
            Ok(pending) => pending,
            Err(e) => {
                warn!(error = %e, "reconciler cannot read pending rooms");
                Vec::new()
            }
        };
        debug!(pending = pending.len(), "reconciling pending Matrix rooms");
        let mut failed = false;
        for room in &pending {
            match state.rooms().ensure_matrix_room(&room.slug).await {
                Ok(ensured) => info!(slug = %room.slug, ?ensured, "pending Matrix room reconciled"),
                Err(e) => {
                    warn!(slug = %room.slug, error = %e, "pending Matrix room still failing");
                    failed = true;
                }
            }
        }
        delay = if failed { (delay * 2).min(MAX) } else { MIN };
        let wait = if failed { delay } else { MAX };
        tokio::select! {
            () = state.reconciler.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The slug of a `#city_<slug>:<server>` alias, if it is one of ours.
pub fn slug_of_alias<'a>(alias: &'a RoomAliasId, server: &ServerName) -> Option<&'a str> {
    if alias.server_name() != server {
        return None;
    }
    alias
        .alias()
        .strip_prefix("city_")
        .filter(|slug| is_valid_slug(slug))
}

/// `^[a-z0-9][a-z0-9_-]{0,63}$`.
pub fn is_valid_slug(slug: &str) -> bool {
    let bytes = slug.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// The alias of a slug, `#city_<slug>:<server>`.
pub fn alias_of_slug(slug: &str, server: &ServerName) -> OwnedRoomAliasId {
    RoomAliasId::parse(format!("#city_{slug}:{server}")).expect("a valid slug makes a valid alias")
}

/// What [`ensure_matrix_room`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The Matrix room was created now.
    Created(OwnedRoomId),
    /// It already existed (mapped before, or found by its alias).
    Existing(OwnedRoomId),
    /// No city room has this slug.
    UnknownSlug,
    /// The city room is archived; its Matrix room is not (re)created.
    Archived,
}

/// What [`ensure_matrix_room`] needs.
#[derive(Debug, Clone, Copy)]
pub struct Rooms<'a> {
    /// The database.
    pub store: &'a Store,
    /// The homeserver.
    pub homeserver: &'a Homeserver,
    /// The Matrix-to-city map to keep up to date.
    pub directory: &'a RoomDirectory,
    /// Creation tracking for ingestion.
    pub creations: &'a CreationsInFlight,
    /// The homeserver's name.
    pub server_name: &'a ServerName,
    /// The appservice's own user, the one that keeps power in archived rooms.
    pub sender: &'a UserId,
    /// Wakes the reconciler when a room is left pending.
    pub reconciler: &'a Notify,
}

/// Changes asked of a city room.
#[derive(Debug, Clone, Default)]
pub struct RoomPatch {
    /// A new name.
    pub name: Option<String>,
    /// A new description; `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// Whether it is the default room.
    pub is_default: Option<bool>,
    /// Archive (true) or restore (false).
    pub archived: Option<bool>,
}

/// Power levels that leave only the appservice able to post or change anything: kept
/// for archived rooms. Room creators (the appservice, from room version 12) keep their
/// power whatever the levels say; in older versions the appservice's own entry stays.
pub fn read_only_power_levels(mut levels: serde_json::Value, sender: &UserId) -> serde_json::Value {
    use serde_json::{Value, json};
    let own = levels["users"].get(sender.as_str()).cloned();
    levels["users"] = own.map_or_else(|| json!({}), |level| json!({ sender.as_str(): level }));
    for key in [
        "events_default",
        "state_default",
        "invite",
        "kick",
        "ban",
        "redact",
    ] {
        levels[key] = json!(100);
    }
    levels["users_default"] = json!(0);
    if let Some(events) = levels.get_mut("events").and_then(Value::as_object_mut) {
        events.values_mut().for_each(|level| *level = json!(100));
    }
    levels
}

impl Rooms<'_> {
    /// Stores a new city room and creates its Matrix room at once. `Ok(None)` when the
    /// slug is taken. When the homeserver is unavailable the room is kept pending (the
    /// boolean is false) and the reconciler creates its Matrix room later.
    pub async fn create_city_room(&self, new: &NewRoom<'_>) -> Result<Option<(CityRoom, bool)>> {
        let Some(room) = self.store.insert_room(new).await? else {
            return Ok(None);
        };
        match self.ensure_matrix_room(&room.slug).await {
            Ok(_) => {}
            Err(Error::Homeserver(e)) if e.is_unavailable() => {
                warn!(slug = %room.slug, error = %e, "homeserver unavailable; Matrix room pending");
                self.reconciler.notify_one();
                return Ok(Some((room, false)));
            }
            Err(e) => return Err(e),
        }
        let room = self.store.room_by_slug(&room.slug).await?.unwrap_or(room);
        Ok(Some((room, true)))
    }

    /// Applies `patch` to the room `slug`, in Matrix first (name, topic, power levels)
    /// and then in Postgres. `Ok(None)` when there is no such room.
    pub async fn update_city_room(
        &self,
        slug: &str,
        patch: &RoomPatch,
    ) -> Result<Option<CityRoom>> {
        let Some(room) = self.store.room_by_slug(slug).await? else {
            return Ok(None);
        };
        let matrix_room = room
            .matrix_room_id
            .as_deref()
            .and_then(|id| RoomId::parse(id).ok());
        if let Some(room_id) = &matrix_room {
            if let Some(name) = patch.name.as_deref().filter(|n| *n != room.name) {
                let content = RoomNameEventContent::new(format!("{NAME_PREFIX}{name}"));
                self.homeserver.set_state(room_id, &content).await?;
            }
            if let Some(description) = &patch.description
                && description.as_deref() != room.description.as_deref()
            {
                let content = RoomTopicEventContent::new(description.clone().unwrap_or_default());
                self.homeserver.set_state(room_id, &content).await?;
            }
        }
        match (patch.archived, room.archived_at.is_some()) {
            (Some(true), false) => {
                let saved = match &matrix_room {
                    Some(room_id) => {
                        let levels = self.homeserver.power_levels(room_id).await?;
                        let read_only = read_only_power_levels(levels.clone(), self.sender);
                        self.homeserver
                            .set_power_levels(room_id, &read_only)
                            .await?;
                        Some(levels)
                    }
                    None => None,
                };
                self.store.set_archived(slug, true, saved.as_ref()).await?;
                info!(slug, "city room archived");
            }
            (Some(false), true) => {
                if let (Some(room_id), Some(levels)) =
                    (&matrix_room, self.store.saved_power_levels(slug).await?)
                {
                    self.homeserver.set_power_levels(room_id, &levels).await?;
                }
                self.store.set_archived(slug, false, None).await?;
                info!(slug, "city room restored");
            }
            _ => {}
        }
        let update = RoomUpdate {
            name: patch.name.as_deref(),
            description: patch.description.as_ref().map(Option::as_deref),
            is_default: patch.is_default,
        };
        Ok(self.store.update_room(slug, &update).await?)
    }

    /// Gives every active room without a Matrix room one: found by its alias or created.
    /// Running it twice changes nothing.
    pub async fn backfill(&self) -> Result<Backfill> {
        let mut summary = Backfill::default();
        for room in self.store.rooms_without_matrix(false).await? {
            summary.checked += 1;
            match self.ensure_matrix_room(&room.slug).await {
                Ok(Ensured::Created(_)) => summary.created += 1,
                Ok(Ensured::Existing(_)) => summary.found += 1,
                Ok(Ensured::UnknownSlug | Ensured::Archived) => {}
                Err(e) => {
                    warn!(slug = %room.slug, error = %e, "backfill failed for a room");
                    // A code for the caller; the cause is in the log.
                    let code = match &e {
                        Error::Homeserver(h) if h.is_unavailable() => "matrix_unavailable",
                        Error::Homeserver(_) => "matrix_error",
                        Error::Database(_) | Error::Bus(_) => "internal_error",
                    };
                    summary.failed.push((room.slug, code.to_owned()));
                }
            }
        }
        Ok(summary)
    }

    /// Makes sure the city room `slug` has its Matrix room with its alias, creating it if
    /// needed. Concurrent calls, on this instance or another, create one room.
    ///
    /// It never asks the homeserver to resolve an alias it may not know: for an alias in
    /// our exclusive namespace Synapse would ask us back, and that query would wait for
    /// the lock this call holds.
    pub async fn ensure_matrix_room(&self, slug: &str) -> Result<Ensured> {
        let _creating = self.creations.start();
        let Some(lock) = self.store.lock_room(slug).await? else {
            return Ok(Ensured::UnknownSlug);
        };
        let found = match self.find_or_create(&lock.room).await {
            Ok(found) => found,
            Err(e) => {
                lock.release().await?;
                return Err(e);
            }
        };
        match found {
            Found::Mapped(ensured) => {
                lock.release().await?;
                Ok(ensured)
            }
            Found::New { room_id, created } => {
                let alias = alias_of_slug(slug, self.server_name);
                let city_room_id = lock.room.id.clone();
                lock.set_matrix_room(room_id.as_str(), alias.as_str())
                    .await?;
                self.directory.insert(
                    room_id.to_string(),
                    MappedRoom {
                        id: city_room_id,
                        slug: slug.to_owned(),
                    },
                );
                Ok(if created {
                    Ensured::Created(room_id)
                } else {
                    Ensured::Existing(room_id)
                })
            }
        }
    }

    /// The Matrix side of [`Self::ensure_matrix_room`], under the room's lock.
    async fn find_or_create(&self, room: &CityRoom) -> Result<Found> {
        if room.archived_at.is_some() {
            return Ok(Found::Mapped(Ensured::Archived));
        }
        let alias = alias_of_slug(&room.slug, self.server_name);
        if let Some(room_id) = room
            .matrix_room_id
            .as_deref()
            .and_then(|id| RoomId::parse(id).ok())
        {
            // Mapped, yet asked for: the alias was removed. Point it back at the room.
            match self.homeserver.set_alias(alias.clone(), &room_id).await {
                Ok(()) => info!(%alias, %room_id, "restored the alias of a mapped room"),
                Err(e) if e.status() == Some(http::StatusCode::CONFLICT) => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Found::Mapped(Ensured::Existing(room_id)));
        }
        let created = self
            .homeserver
            .create_room(NewMatrixRoom {
                alias_localpart: &format!("city_{}", room.slug),
                name: &format!("{NAME_PREFIX}{}", room.name),
                topic: room.description.as_deref(),
                public: room.visibility == "public",
            })
            .await;
        match created {
            Ok(room_id) => {
                info!(%alias, %room_id, "created the Matrix room of a city room");
                Ok(Found::New {
                    room_id,
                    created: true,
                })
            }
            // The alias exists (made by a run that crashed before storing it, say): adopt
            // its room. Synapse knows the alias, so resolving it does not ask us back.
            Err(e) if matches!(e.kind(), Some(ErrorKind::RoomInUse)) => {
                match self.homeserver.resolve_alias(&alias).await? {
                    Some(room_id) => {
                        info!(%alias, %room_id, "adopted the existing room of a city alias");
                        Ok(Found::New {
                            room_id,
                            created: false,
                        })
                    }
                    None => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// What [`Rooms::find_or_create`] found.
enum Found {
    /// Nothing to store: the room is mapped already, or archived.
    Mapped(Ensured),
    /// A Matrix room to store as the city room's.
    New { room_id: OwnedRoomId, created: bool },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_aliases() {
        let server = ServerName::parse("example.org").unwrap();
        let alias = |s: &str| RoomAliasId::parse(s).unwrap();
        assert_eq!(
            slug_of_alias(&alias("#city_general:example.org"), &server),
            Some("general")
        );
        assert_eq!(
            slug_of_alias(&alias("#city_general:other.org"), &server),
            None
        );
        assert_eq!(slug_of_alias(&alias("#general:example.org"), &server), None);
        assert_eq!(
            slug_of_alias(&alias("#city_Bad:example.org"), &server),
            None
        );
        assert_eq!(slug_of_alias(&alias("#city_:example.org"), &server), None);
        assert!(is_valid_slug("energy-2_x"));
        assert!(!is_valid_slug("-energy"));
        assert!(!is_valid_slug(&"a".repeat(65)));
        assert_eq!(
            alias_of_slug("general", &server).as_str(),
            "#city_general:example.org"
        );
    }
}
