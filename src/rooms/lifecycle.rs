//! What the API asks of city rooms: create, rename, archive and restore, backfill.
//! Matrix first, then Postgres; every step can be retried, and one room's changes take
//! turns with its creation.

use ruma::{
    RoomId,
    events::room::{name::RoomNameEventContent, topic::RoomTopicEventContent},
};
use tracing::{info, warn};

use super::{Ensured, Rooms, SpaceSync, read_only_power_levels};
use crate::{
    Error, Result,
    domain::{ROOM_NAME_PREFIX, Slug},
    store::{CityRoom, NewRoom, RoomUpdate},
};

/// What a backfill did.
#[derive(Debug, Default)]
pub struct Backfill {
    /// Rooms without a Matrix room looked at.
    pub checked: usize,
    /// Matrix rooms found by their alias.
    pub found: usize,
    /// Matrix rooms created.
    pub created: usize,
    /// Rooms that failed, with the error code.
    pub failed: Vec<(Slug, crate::error::ErrorCode)>,
    /// What was sent to bring the Spaces in step.
    pub space: SpaceSync,
    /// Why the Spaces could not be brought in step (the cause is logged).
    pub space_error: Option<crate::error::ErrorCode>,
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

impl Rooms {
    /// Stores a new city room and creates its Matrix room at once. `Ok(None)` when the
    /// slug is taken. When the homeserver is unavailable the room is kept pending (the
    /// boolean is false) and the reconciler creates its Matrix room later.
    pub async fn create_city_room(&self, new: &NewRoom<'_>) -> Result<Option<(CityRoom, bool)>> {
        let Some(room) = self.store.insert_room(new).await? else {
            return Ok(None);
        };
        self.hub.catalog_changed();
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
    /// and then in Postgres. `Ok(None)` when there is no such room. Safe to retry after
    /// any failure: archiving keeps the room's original power levels before it changes
    /// them, and never replaces kept ones.
    pub async fn update_city_room(
        &self,
        slug: &Slug,
        patch: &RoomPatch,
    ) -> Result<Option<CityRoom>> {
        let _turn = self.locks.lock(slug).await;
        let Some(room) = self.store.room_by_slug(slug).await? else {
            return Ok(None);
        };
        let homeserver = &self.homeserver;
        if let Some(room_id) = &room.matrix_room_id {
            if let Some(name) = patch.name.as_deref().filter(|n| *n != room.name) {
                let content = RoomNameEventContent::new(format!("{ROOM_NAME_PREFIX}{name}"));
                homeserver.set_state(room_id, &content).await?;
            }
            if let Some(description) = &patch.description
                && description.as_deref() != room.description.as_deref()
            {
                let content = RoomTopicEventContent::new(description.clone().unwrap_or_default());
                homeserver.set_state(room_id, &content).await?;
            }
        }
        match patch.archived {
            Some(true) => {
                if let Some(room_id) = &room.matrix_room_id {
                    self.apply_read_only(slug, room_id).await?;
                }
                self.store.set_archived(slug, true).await?;
                info!(%slug, "city room archived");
            }
            Some(false) => {
                if let (Some(room_id), Some(levels)) = (
                    &room.matrix_room_id,
                    self.store.saved_power_levels(slug).await?,
                ) {
                    homeserver.set_power_levels(room_id, &levels).await?;
                }
                self.store.set_archived(slug, false).await?;
                if room.archived_at.is_some() {
                    info!(%slug, "city room restored");
                }
            }
            None => {}
        }
        if patch.archived.is_some() {
            self.hub.catalog_changed();
            // Withdrawn from its Space, or listed again, by the reconciler.
            self.reconciler.notify_one();
        }
        let update = RoomUpdate {
            name: patch.name.as_deref(),
            description: patch.description.as_ref().map(Option::as_deref),
            is_default: patch.is_default,
        };
        self.store.update_room(slug, &update).await
    }

    /// Keeps the room's power levels (once: a kept copy is never replaced) and makes the
    /// Matrix room read-only for all but the bridge. Idempotent.
    pub(super) async fn apply_read_only(&self, slug: &Slug, room_id: &RoomId) -> Result<()> {
        let homeserver = &self.homeserver;
        let original = match self.store.saved_power_levels(slug).await? {
            Some(kept) => kept,
            None => {
                let current = homeserver.power_levels(room_id).await?;
                self.store
                    .keep_power_levels(slug, &current)
                    .await?
                    .unwrap_or(current)
            }
        };
        let read_only = read_only_power_levels(original, &self.sender);
        homeserver.set_power_levels(room_id, &read_only).await?;
        Ok(())
    }

    /// Gives every active room without a Matrix room one (found by its alias or created),
    /// then brings the Spaces in step with the rooms from their actual state in Matrix.
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
                    summary.failed.push((room.slug, e.code()));
                }
            }
        }
        match self.sync_spaces().await {
            Ok(space) => summary.space = space,
            Err(e) => {
                warn!(error = %e, "backfill could not bring the Spaces in step");
                summary.space_error = Some(e.code());
            }
        }
        Ok(summary)
    }
}
