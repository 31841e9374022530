//! City rooms and their Matrix rooms: the in-memory map from Matrix room to city room, and
//! making the Matrix room of a city room exist exactly once.

use std::{collections::HashMap, sync::RwLock, time::Duration};

use ruma::{OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, ServerName, api::error::ErrorKind};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    Result,
    homeserver::{Homeserver, NewMatrixRoom},
    ingest::{MappedRoom, NAME_PREFIX},
    store::Store,
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
}

impl Rooms<'_> {
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
        if lock.room.archived_at.is_some() {
            return Ok(Ensured::Archived);
        }
        let alias = alias_of_slug(slug, self.server_name);
        if let Some(room_id) = lock
            .room
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
            return Ok(Ensured::Existing(room_id));
        }
        let room = &lock.room;
        let created = self
            .homeserver
            .create_room(NewMatrixRoom {
                alias_localpart: &format!("city_{slug}"),
                name: &format!("{NAME_PREFIX}{}", room.name),
                topic: room.description.as_deref(),
                public: room.visibility == "public",
            })
            .await;
        let (room_id, fresh) = match created {
            Ok(room_id) => {
                info!(%alias, %room_id, "created the Matrix room of a city room");
                (room_id, true)
            }
            // The alias exists (made by a run that crashed before storing it, say): adopt
            // its room. Synapse knows the alias, so resolving it does not ask us back.
            Err(e) if matches!(e.kind(), Some(ErrorKind::RoomInUse)) => {
                match self.homeserver.resolve_alias(&alias).await? {
                    Some(room_id) => {
                        info!(%alias, %room_id, "adopted the existing room of a city alias");
                        (room_id, false)
                    }
                    None => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
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
        Ok(if fresh {
            Ensured::Created(room_id)
        } else {
            Ensured::Existing(room_id)
        })
    }
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
