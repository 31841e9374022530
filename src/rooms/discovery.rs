//! City rooms Synapse has but the bridge never recorded. If the bridge stops (or Postgres
//! fails, or the alias query is cancelled) after `createRoom` and before the mapping is
//! stored, Synapse knows the alias and never asks again; the room's events arrive as
//! events of a room the bridge does not know. Each such room is looked at once: created
//! by the bridge's own user, with a `#city_<slug>` canonical alias of an unmapped city
//! room → adopted, and what was said in it is read back and indexed.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, serde::Raw};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Rooms;
use crate::{Result, domain::Slug};

/// Rooms waiting to be looked at, at most this many.
const QUEUE: usize = 1024;

/// Unknown rooms, offered by ingestion, looked at by one worker.
#[derive(Debug)]
pub struct Discovery {
    tx: mpsc::Sender<OwnedRoomId>,
    queued: Mutex<HashSet<OwnedRoomId>>,
    /// Events of rooms the bridge did not know, since start.
    unmapped_events: AtomicU64,
}

/// The rooms offered to discovery, for its one worker ([`Discovery::run`]), never shared.
#[derive(Debug)]
pub struct Offered(mpsc::Receiver<OwnedRoomId>);

impl Discovery {
    /// Discovery, and the end of its queue that its worker reads.
    pub fn new() -> (Self, Offered) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let discovery = Self {
            tx,
            queued: Mutex::default(),
            unmapped_events: AtomicU64::new(0),
        };
        (discovery, Offered(rx))
    }

    /// Counts `events` of `room_id`, a room the bridge does not know, and has the room
    /// looked at unless it is already queued.
    pub fn offer(&self, room_id: &RoomId, events: usize) {
        let total = self
            .unmapped_events
            .fetch_add(events as u64, Ordering::Relaxed)
            + events as u64;
        debug!(%room_id, events, total, "events of a room that is not a city room");
        let mut queued = self.queued.lock().expect("not poisoned");
        if queued.contains(room_id) {
            return;
        }
        if self.tx.try_send(room_id.to_owned()).is_ok() {
            queued.insert(room_id.to_owned());
        } else {
            warn!(%room_id, "discovery queue full; the room will be looked at on its next event");
        }
    }

    /// Events of rooms the bridge did not know, since start.
    pub fn unmapped_events(&self) -> u64 {
        self.unmapped_events.load(Ordering::Relaxed)
    }

    /// Looks at offered rooms until the bridge shuts down.
    pub async fn run(self: Arc<Self>, Offered(mut rx): Offered, rooms: Rooms) {
        while let Some(room_id) = rx.recv().await {
            if let Err(error) = discover(&rooms, &room_id).await {
                // Not remembered as "not a city room": the next event tries again.
                warn!(%room_id, %error, "could not look at an unknown room");
            }
            self.queued.lock().expect("not poisoned").remove(&room_id);
        }
    }
}

#[derive(Deserialize)]
struct StateEnvelope {
    #[serde(rename = "type")]
    kind: String,
    sender: OwnedUserId,
    #[serde(default)]
    state_key: Option<String>,
    content: serde_json::Value,
}

/// What the room's state says about it.
fn city_alias_of(
    state: &[Raw<ruma::events::AnyStateEvent>],
    bridge: &OwnedUserId,
) -> Option<OwnedRoomAliasId> {
    let mut created_by_bridge = false;
    let mut alias = None;
    for raw in state {
        let Ok(event) = raw.deserialize_as_unchecked::<StateEnvelope>() else {
            continue;
        };
        if event.state_key.as_deref() != Some("") {
            continue;
        }
        match event.kind.as_str() {
            "m.room.create" => created_by_bridge = &event.sender == bridge,
            "m.room.canonical_alias" => {
                alias = event.content["alias"]
                    .as_str()
                    .and_then(|a| OwnedRoomAliasId::try_from(a).ok());
            }
            _ => {}
        }
    }
    alias.filter(|_| created_by_bridge)
}

async fn discover(rooms: &Rooms, room_id: &RoomId) -> Result<()> {
    if rooms.directory.contains(room_id) {
        return Ok(());
    }
    let room_state = match rooms.homeserver.room_state(room_id).await {
        Ok(room_state) => room_state,
        Err(e) if !e.is_unavailable() => {
            // Not a member (a room an agent was invited to, say): not ours.
            debug!(%room_id, error = %e, "room state not readable; not a city room");
            rooms.directory.mark_not_city(room_id.to_owned());
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let server = &rooms.server_name;
    let slug = city_alias_of(&room_state, &rooms.sender).and_then(|a| Slug::of_alias(&a, server));
    let Some(slug) = slug else {
        rooms.directory.mark_not_city(room_id.to_owned());
        return Ok(());
    };
    let _turn = rooms.locks.lock(&slug).await;
    let room = match rooms.store.room_by_slug(&slug).await? {
        // Unrecorded; or recorded by another instance (an API-only one created it) after
        // this room's first events were routed here: either way those events were not
        // indexed, and the history read after recording finds them.
        Some(room)
            if room.archived_at.is_none()
                && room
                    .matrix_room_id
                    .as_deref()
                    .is_none_or(|recorded| recorded == room_id) =>
        {
            room
        }
        _ => {
            rooms.directory.mark_not_city(room_id.to_owned());
            return Ok(());
        }
    };
    info!(%room_id, %slug, "found the unrecorded Matrix room of a city room; adopting it");
    rooms.record(&room, room_id, false).await?;
    Ok(())
}
