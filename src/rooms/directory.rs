//! Which Matrix rooms are city rooms. Read on every pushed event, so it lives in memory;
//! Postgres stays the source of truth and fills it on start and on a miss.

use std::{
    collections::{HashMap, HashSet},
    sync::RwLock,
};

use ruma::{OwnedRoomId, RoomId};

use crate::domain::Slug;
pub use crate::store::model::MappedRoom;

/// Most "not a city room" answers kept; the cache is emptied when it would grow past this.
const NOT_CITY_LIMIT: usize = 10_000;

/// Matrix room → city room, and the rooms known not to be city rooms.
#[derive(Debug, Default)]
pub struct RoomDirectory {
    rooms: RwLock<HashMap<OwnedRoomId, MappedRoom>>,
    not_city: RwLock<HashSet<OwnedRoomId>>,
}

impl RoomDirectory {
    /// The city room of a Matrix room, if it is mapped.
    pub fn get(&self, matrix_room_id: &RoomId) -> Option<MappedRoom> {
        self.rooms
            .read()
            .expect("not poisoned")
            .get(matrix_room_id)
            .cloned()
    }

    /// Every mapped room.
    pub fn all(&self) -> Vec<(OwnedRoomId, MappedRoom)> {
        let rooms = self.rooms.read().expect("not poisoned");
        rooms
            .iter()
            .map(|(id, room)| (id.clone(), room.clone()))
            .collect()
    }

    /// Whether a Matrix room is mapped.
    pub fn contains(&self, matrix_room_id: &RoomId) -> bool {
        self.rooms
            .read()
            .expect("not poisoned")
            .contains_key(matrix_room_id)
    }

    /// The Matrix room of a city room, if it is mapped.
    pub fn matrix_room_of(&self, slug: &Slug) -> Option<OwnedRoomId> {
        let rooms = self.rooms.read().expect("not poisoned");
        rooms
            .iter()
            .find(|(_, room)| &room.slug == slug)
            .map(|(id, _)| id.clone())
    }

    /// Maps `matrix_room_id` to `room` (and forgets that it was thought not to be one).
    pub fn insert(&self, matrix_room_id: OwnedRoomId, room: MappedRoom) {
        self.not_city
            .write()
            .expect("not poisoned")
            .remove(&matrix_room_id);
        self.rooms
            .write()
            .expect("not poisoned")
            .insert(matrix_room_id, room);
    }

    /// Forgets a Matrix room (it was replaced by an upgrade).
    pub fn remove(&self, matrix_room_id: &RoomId) {
        self.rooms
            .write()
            .expect("not poisoned")
            .remove(matrix_room_id);
    }

    /// Replaces the whole map.
    pub fn load(&self, rooms: Vec<(OwnedRoomId, MappedRoom)>) {
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

    /// Remembers that a Matrix room was looked at and is not a city room.
    pub fn mark_not_city(&self, matrix_room_id: OwnedRoomId) {
        let mut not_city = self.not_city.write().expect("not poisoned");
        if not_city.len() >= NOT_CITY_LIMIT {
            not_city.clear();
        }
        not_city.insert(matrix_room_id);
    }

    /// Whether a Matrix room is known not to be a city room.
    pub fn is_not_city(&self, matrix_room_id: &RoomId) -> bool {
        self.not_city
            .read()
            .expect("not poisoned")
            .contains(matrix_room_id)
    }

    /// Forgets a "not a city room" answer (its canonical alias changed, say).
    pub fn forget_not_city(&self, matrix_room_id: &RoomId) {
        self.not_city
            .write()
            .expect("not poisoned")
            .remove(matrix_room_id);
    }
}
