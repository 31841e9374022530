//! The serving side of presence, on every instance: the latest state of each room as the
//! bus carries it, for WebSocket snapshots and the REST room list, and the fan-out of
//! updates to WebSocket clients.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use axum::extract::ws::Utf8Bytes;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tracing::warn;

use super::RoomPresence;
use crate::bus::BusMessage;

/// How far a WebSocket client may fall behind before it is resynchronised with a snapshot.
/// One shared ring buffer, not a queue per client.
pub const CLIENT_QUEUE: usize = 256;

/// Latest room states and the update stream.
#[derive(Debug)]
pub struct PresenceHub {
    latest: RwLock<BTreeMap<String, RoomPresence>>,
    updates: broadcast::Sender<Utf8Bytes>,
}

impl PresenceHub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            latest: RwLock::default(),
            updates: broadcast::channel(CLIENT_QUEUE).0,
        })
    }

    /// Feeds the hub from a bus subscription to `city.presence.room.>` until it ends.
    pub async fn run(self: Arc<Self>, mut messages: mpsc::Receiver<BusMessage>) {
        while let Some(message) = messages.recv().await {
            self.receive(&message.payload);
        }
    }

    /// Takes one `room.presence` payload.
    pub fn receive(&self, payload: &[u8]) {
        let room: RoomPresence = match serde_json::from_slice(payload) {
            Ok(room) => room,
            Err(error) => {
                warn!(%error, "unreadable presence message on the bus");
                return;
            }
        };
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        self.latest
            .write()
            .expect("not poisoned")
            .insert(room.room_slug.clone(), room);
        // Serialised once; every client's queue holds the same bytes.
        let _ = self.updates.send(Utf8Bytes::from(text));
    }

    /// Updates from now on; a receiver that falls [`CLIENT_QUEUE`] behind sees `Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Utf8Bytes> {
        self.updates.subscribe()
    }

    /// The latest state of a room.
    pub fn room(&self, slug: &str) -> Option<RoomPresence> {
        self.latest.read().expect("not poisoned").get(slug).cloned()
    }

    /// `{"type":"snapshot","rooms":[{room_slug, online_count, typing_count}, …]}`.
    pub fn snapshot(&self) -> String {
        let latest = self.latest.read().expect("not poisoned");
        let rooms: Vec<_> = latest.values().map(RoomPresence::summary).collect();
        json!({ "type": "snapshot", "rooms": rooms }).to_string()
    }
}
