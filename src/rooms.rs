//! City rooms and their Matrix rooms: which Matrix room is which city room
//! (`directory.rs`), making a city room's Matrix room exist exactly once (`ensure.rs`,
//! with `creations.rs` for ingestion to meet creations under way), the lifecycle asked for
//! through the API (`lifecycle.rs`: create, rename, archive, backfill, with
//! `power_levels.rs`), the reconciler of rooms left pending (`reconciler.rs`), the
//! discovery of city rooms Synapse has but the bridge never recorded (`discovery.rs`), the
//! reading back of what Synapse did not push (`history.rs`, `catch_up.rs`), and the city
//! as a Matrix Space with a sub-space per microDAO (`space.rs`).

mod catch_up;
mod creations;
mod directory;
mod discovery;
mod ensure;
mod history;
mod lifecycle;
mod power_levels;
mod reconciler;
mod space;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::OwnedMutexGuard;

pub use self::{
    catch_up::CatchUp,
    creations::{Creation, CreationsInFlight},
    directory::{MappedRoom, RoomDirectory},
    discovery::Discovery,
    ensure::Ensured,
    lifecycle::{Backfill, RoomPatch},
    power_levels::{
        Role, level_to_change_power_levels, read_only_power_levels, typed_power_levels, user_level,
    },
    reconciler::reconcile,
    space::{CitySpace, SpaceSync, children as space_children},
};
use ruma::{OwnedServerName, OwnedUserId};
use tokio::sync::Notify;

use crate::{
    domain::Slug, ingest::Indexer, matrix::Homeserver, presence::PresenceHub, store::Store,
    workers::Workers,
};

/// One turn per city room: creating its Matrix room and changing its lifecycle never run
/// at once for the same room on this instance. (Across instances, Synapse's alias is the
/// arbiter: a second `createRoom` with the alias fails and the first room is adopted.)
#[derive(Debug, Default)]
pub struct RoomLocks {
    locks: Mutex<HashMap<Slug, Arc<tokio::sync::Mutex<()>>>>,
}

impl RoomLocks {
    /// Waits for the room's turn; it lasts until the guard is dropped.
    pub async fn lock(&self, slug: &Slug) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().expect("not poisoned");
            // Forget the turns nobody holds or waits for.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            Arc::clone(locks.entry(slug.clone()).or_default())
        };
        lock.lock_owned().await
    }
}

/// City rooms and their Matrix rooms: what creating, adopting and changing them works with.
#[derive(Debug, Clone)]
pub struct Rooms {
    /// The database.
    pub store: Store,
    /// The bridge's own client.
    pub homeserver: Homeserver,
    /// The homeserver's name.
    pub server_name: OwnedServerName,
    /// The bridge's own user.
    pub sender: OwnedUserId,
    /// Matrix room → city room.
    pub directory: Arc<RoomDirectory>,
    /// Creations under way.
    pub creations: Arc<CreationsInFlight>,
    /// One turn per city room.
    pub locks: Arc<RoomLocks>,
    /// The room catalog of the presence hub, told of changes.
    pub hub: Arc<PresenceHub>,
    /// Wakes the reconciler of pending Matrix rooms.
    pub reconciler: Arc<Notify>,
    /// Where background work (an adopted room's history) runs.
    pub workers: Workers,
    /// Indexes an adopted room's history.
    pub indexer: Arc<Indexer>,
    /// The city's Space.
    pub space: Arc<CitySpace>,
}
