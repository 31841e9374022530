//! Making the Matrix room of a city room exist exactly once — without holding a database
//! connection across a Matrix call: claim in one statement, `createRoom`, record in
//! another.

use ruma::{OwnedRoomId, RoomId, api::error::ErrorKind};
use tracing::{info, warn};

use super::Rooms;
use crate::{
    Result,
    domain::{ROOM_NAME_PREFIX, Slug, Visibility},
    matrix::NewMatrixRoom,
    store::{CityRoom, Recorded},
};

/// What [`Rooms::ensure_matrix_room`] found or did.
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

impl Rooms {
    /// Makes sure the city room `slug` has its Matrix room with its alias, creating it if
    /// needed. Concurrent calls on this instance take turns; on another instance, the
    /// second `createRoom` finds the alias taken and adopts the first room.
    ///
    /// It never asks the homeserver to resolve an alias it may not know: for an alias in
    /// our exclusive namespace Synapse would ask us back, and that query would wait for
    /// this room's turn.
    pub async fn ensure_matrix_room(&self, slug: &Slug) -> Result<Ensured> {
        let _turn = self.locks.lock(slug).await;
        let Some(room) = self.store.room_by_slug(slug).await? else {
            return Ok(Ensured::UnknownSlug);
        };
        if room.archived_at.is_some() {
            return Ok(Ensured::Archived);
        }
        let alias = slug.alias(&self.server_name);
        if let Some(room_id) = room.matrix_room_id.clone() {
            // Mapped, yet asked for: the alias was removed. Point it back at the room.
            match self.homeserver.set_alias(alias.clone(), &room_id).await {
                Ok(()) => info!(%alias, %room_id, "restored the alias of a mapped room"),
                Err(e) if e.status() == Some(http::StatusCode::CONFLICT) => {}
                Err(e) => return Err(e.into()),
            }
            self.directory.insert(room_id.clone(), room.mapped());
            return Ok(Ensured::Existing(room_id));
        }
        // If the bridge stops between createRoom and the record, the claim leaves the
        // room pending: the reconciler adopts what Synapse made.
        self.store.claim_creation(slug).await?;
        let creation = self.creations.start();
        let created = self
            .homeserver
            .create_room(NewMatrixRoom {
                alias_localpart: &slug.alias_localpart(),
                name: &format!("{ROOM_NAME_PREFIX}{}", room.name),
                topic: room.description.as_deref(),
                public: room.visibility == Visibility::Public,
                encrypted: room.encrypted,
            })
            .await;
        let (room_id, new) = match created {
            Ok(room_id) => {
                info!(%alias, %room_id, "created the Matrix room of a city room");
                (room_id, true)
            }
            // The alias exists (made by a run that stopped before recording it, or by
            // another instance): adopt its room. Synapse knows the alias, so resolving it
            // does not ask us back.
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
        creation.created(room_id.clone(), room.mapped());
        self.record(&room, &room_id, new).await
    }

    /// Stores `room_id` as the Matrix room of `room` and maps it. A room that was not
    /// created now (adopted) may have had events the bridge never indexed: its history is
    /// read in the background. The caller holds the room's turn.
    pub(super) async fn record(
        &self,
        room: &CityRoom,
        room_id: &RoomId,
        created: bool,
    ) -> Result<Ensured> {
        let alias = room.slug.alias(&self.server_name);
        match self
            .store
            .record_matrix_room(&room.slug, room_id, &alias)
            .await?
        {
            Recorded::Mapped { archived } => {
                self.directory.insert(room_id.to_owned(), room.mapped());
                // Listed in its Space by the reconciler: never waited for here.
                self.reconciler.notify_one();
                if archived {
                    // Archived while its room was being created: make it read-only now.
                    warn!(slug = %room.slug, "archived during its creation; applying read-only levels");
                    self.apply_read_only(&room.slug, room_id).await?;
                }
                if !created {
                    let (rooms, room_id) = (self.clone(), room_id.to_owned());
                    self.workers.spawn("history", async move {
                        if let Err(error) = rooms.index_history(&room_id).await {
                            warn!(%room_id, %error, "could not index the history of an adopted room");
                        }
                    });
                }
                Ok(if created {
                    Ensured::Created(room_id.to_owned())
                } else {
                    Ensured::Existing(room_id.to_owned())
                })
            }
            Recorded::Other(other) => {
                warn!(slug = %room.slug, %room_id, %other, "the city room has another Matrix room; keeping it");
                self.directory.insert(other.clone(), room.mapped());
                Ok(Ensured::Existing(other))
            }
            Recorded::Gone => Ok(Ensured::UnknownSlug),
        }
    }
}
