//! The serving side of presence, on every instance: the latest state of each room as the
//! bus carries it, the catalog of city rooms (which exist, which are private), WebSocket
//! snapshots and the fan-out of updates, each client seeing only the rooms it may.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tracing::warn;

use super::{
    RoomPresence,
    sockets::Sockets,
    wire::{RoomSummary, Snapshot},
};
use crate::{bus::BusMessage, domain::Visibility, store::Store};

/// How often the catalog is read again even when nothing said it changed (rooms created
/// on another instance).
const CATALOG_REFRESH: Duration = Duration::from_secs(30);

/// Who is watching: decides which rooms a client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// Admins see private rooms too.
    pub admin: bool,
}

impl Viewer {
    /// Whether this viewer may see a room of this visibility.
    pub fn may_see(self, visibility: Visibility) -> bool {
        self.admin || visibility == Visibility::Public
    }
}

/// One update as clients receive it: framed once, tagged so each socket can be passed
/// over without parsing.
#[derive(Debug, Clone)]
pub struct Update {
    /// The room's visibility (private when the catalog does not know it yet).
    pub visibility: Visibility,
    /// The `room.presence` payload as a WebSocket text frame.
    pub frame: Bytes,
}

/// Latest room states, the catalog and the sockets updates go to.
#[derive(Debug)]
pub struct PresenceHub {
    latest: RwLock<BTreeMap<String, RoomPresence>>,
    /// Active city rooms by slug.
    catalog: RwLock<BTreeMap<String, Visibility>>,
    catalog_changed: Notify,
    sockets: Sockets,
}

impl PresenceHub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            latest: RwLock::default(),
            catalog: RwLock::default(),
            catalog_changed: Notify::new(),
            sockets: Sockets::default(),
        })
    }

    /// Feeds the hub from a bus subscription to `city.presence.room.>` until it ends. A
    /// room the catalog does not know yet (created a moment ago) makes it read the
    /// catalog again first, so the update goes to the right clients.
    pub async fn run(self: Arc<Self>, mut messages: mpsc::Receiver<BusMessage>, store: Store) {
        while let Some(message) = messages.recv().await {
            let slug = message
                .subject
                .strip_prefix(super::wire::ROOM_SUBJECT_PREFIX);
            let known = slug.is_some_and(|slug| {
                self.catalog
                    .read()
                    .expect("not poisoned")
                    .contains_key(slug)
            });
            if !known {
                match store.room_catalog().await {
                    Ok(rooms) => self.set_catalog(rooms),
                    Err(error) => warn!(%error, "cannot read the room catalog"),
                }
            }
            self.take(&message.payload).await;
        }
    }

    /// Takes one `room.presence` payload and writes it to every socket that may see it.
    pub async fn take(&self, payload: &[u8]) {
        let Some(update) = self.receive(payload) else {
            return;
        };
        let delivered = self.sockets.deliver(&update.frame, update.visibility).await;
        let metrics = crate::metrics::metrics();
        metrics.frames("presence", "sent", delivered.sent);
        metrics.frames("presence", "resynced", delivered.resynced);
    }

    /// Keeps the catalog of city rooms current: read now, then whenever
    /// [`Self::catalog_changed`] is called and every 30 s.
    pub async fn keep_catalog(self: Arc<Self>, store: Store) {
        loop {
            match store.room_catalog().await {
                Ok(rooms) => self.set_catalog(rooms),
                Err(error) => warn!(%error, "cannot read the room catalog"),
            }
            tokio::select! {
                () = self.catalog_changed.notified() => {}
                () = tokio::time::sleep(CATALOG_REFRESH) => {}
            }
        }
    }

    /// Rooms were created, archived or restored: read the catalog again.
    pub fn catalog_changed(&self) {
        self.catalog_changed.notify_one();
    }

    /// Replaces the catalog: the active city rooms with their visibility.
    pub fn set_catalog(&self, rooms: Vec<(String, Visibility)>) {
        *self.catalog.write().expect("not poisoned") = rooms.into_iter().collect();
    }

    /// Takes one `room.presence` payload as the room's latest state, without writing it
    /// to the sockets (at start, before there are any): the update for them, unless the
    /// payload is unreadable.
    pub fn receive(&self, payload: &[u8]) -> Option<Update> {
        let room: RoomPresence = match serde_json::from_slice(payload) {
            Ok(room) => room,
            Err(error) => {
                warn!(%error, "unreadable presence message on the bus");
                return None;
            }
        };
        let text = std::str::from_utf8(payload).ok()?;
        // Unknown to the catalog yet (created a moment ago elsewhere): private until known.
        let visibility = self
            .catalog
            .read()
            .expect("not poisoned")
            .get(&room.room_slug)
            .copied()
            .unwrap_or(Visibility::Private);
        let rooms = {
            let mut latest = self.latest.write().expect("not poisoned");
            latest.insert(room.room_slug.clone(), room);
            latest.len()
        };
        crate::metrics::metrics()
            .presence_rooms
            .set(i64::try_from(rooms).unwrap_or(i64::MAX));
        // Framed once; every socket is written the same bytes.
        Some(Update {
            visibility,
            frame: crate::websocket::text(text),
        })
    }

    /// The sockets updates are written to.
    pub fn sockets(&self) -> &Sockets {
        &self.sockets
    }

    /// The latest state of a room.
    pub fn room(&self, slug: &str) -> Option<RoomPresence> {
        self.latest.read().expect("not poisoned").get(slug).cloned()
    }

    /// `{"type":"snapshot","rooms":[…]}`: every active city room `viewer` may see, with
    /// zero counts where nobody is (or the Matrix room does not exist yet).
    pub fn snapshot(&self, viewer: Viewer) -> String {
        let catalog = self.catalog.read().expect("not poisoned");
        let latest = self.latest.read().expect("not poisoned");
        let rooms: Vec<RoomSummary> = catalog
            .iter()
            .filter(|(_, visibility)| viewer.may_see(**visibility))
            .map(|(slug, _)| match latest.get(slug) {
                Some(room) => room.summary(),
                None => RoomSummary {
                    room_slug: slug.clone(),
                    online_count: 0,
                    typing_count: 0,
                },
            })
            .collect();
        Snapshot::new(&rooms).to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(slug: &str, online: usize) -> Vec<u8> {
        serde_json::to_vec(&RoomPresence {
            room_slug: slug.to_owned(),
            matrix_room_id: format!("!{slug}:city.org"),
            matrix_room_alias: None,
            online_count: online,
            typing_count: 0,
            typing_users: vec![],
            last_event_ts: None,
        })
        .unwrap()
    }

    #[test]
    fn private_rooms_only_for_those_who_may_see_them() {
        let hub = PresenceHub::new();
        hub.set_catalog(vec![
            ("general".to_owned(), Visibility::Public),
            ("council".to_owned(), Visibility::Private),
            ("quiet".to_owned(), Visibility::Public),
        ]);
        let general = hub.receive(&presence("general", 2)).unwrap();
        let council = hub.receive(&presence("council", 1)).unwrap();
        let citizen = Viewer { admin: false };
        let admin = Viewer { admin: true };
        let seen: serde_json::Value = serde_json::from_str(&hub.snapshot(citizen)).unwrap();
        let slugs: Vec<&str> = seen["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["room_slug"].as_str().unwrap())
            .collect();
        assert_eq!(
            slugs,
            ["general", "quiet"],
            "every public room, none private"
        );
        assert_eq!(seen["rooms"][1]["online_count"], 0);
        assert!(hub.snapshot(admin).contains("council"));
        assert_eq!(general.visibility, Visibility::Public);
        assert!(!citizen.may_see(council.visibility) && admin.may_see(council.visibility));
    }
}
