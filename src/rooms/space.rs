//! The city as a Matrix Space: `#city:<server>` ("DAARION City") lists every public city
//! room that has its Matrix room and is not archived (`m.space.child` in the Space, the
//! matching `m.space.parent` in the room), and a sub-space per microDAO
//! (`#city_microdao.<id>:<server>`, itself a child of the city's) lists its public
//! channels. Private rooms are listed nowhere.
//!
//! Creating a city room never waits for the Space: the reconciler compares where each
//! room belongs with where it was last listed (`city_rooms.space_room_id`) and sends only
//! what differs, so a Space that could not be changed (Synapse down) is caught up later.
//! A backfill reads the Spaces' actual state and repairs whatever differs.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use ruma::{
    OwnedRoomId, RoomId,
    api::error::ErrorKind,
    events::{
        StateEventType,
        space::{child::SpaceChildEventContent, parent::SpaceParentEventContent},
    },
};
use tracing::{info, warn};

use super::Rooms;
use crate::{
    Error, Result,
    domain::{CITY_SPACE_NAME, ROOM_NAME_PREFIX, space_alias, space_alias_localpart},
    matrix::{HomeserverError, NewSpace},
    store::SpaceMember,
};

/// The city's Space: whether the bridge may have one, and one turn for changing it.
#[derive(Debug, Default)]
pub struct CitySpace {
    /// The registration reserves `#city:<server>` for the bridge (Synapse lets an
    /// appservice create only the aliases of its namespaces). Without it there is no
    /// Space, and `city-bridge check` says what to add.
    pub enabled: bool,
    turn: tokio::sync::Mutex<()>,
}

impl CitySpace {
    /// The Space, `enabled` when the registration reserves its alias.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            turn: tokio::sync::Mutex::default(),
        }
    }
}

/// What a backfill did to the Spaces.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpaceSync {
    /// The city's Space; `None` when the registration does not reserve its alias.
    pub space: Option<OwnedRoomId>,
    /// `m.space.child` events sent to list a room or a sub-space.
    pub children_added: usize,
    /// `m.space.child` events withdrawn (archived or private rooms).
    pub children_removed: usize,
    /// `m.space.parent` events sent in rooms.
    pub parents_added: usize,
    /// Rooms where Synapse refuses the bridge their `m.space.parent` (it has no power
    /// there): listed without it.
    pub parents_refused: usize,
    /// Spaces put back in the room directory.
    pub published: usize,
    /// Spaces whose deleted alias was pointed at them again.
    pub aliases_restored: usize,
    /// Rooms whose listing failed (the cause is logged).
    pub failed: usize,
}

impl Rooms {
    /// The Space of a microDAO (`None`: the city's), created if needed: recorded, or
    /// created with its alias, or — the alias taken by an earlier run that never recorded
    /// it — adopted. A sub-space is listed in the city's Space before it is recorded, so
    /// a recorded sub-space is always in it. `Ok(None)` when the Space is disabled.
    async fn ensure_space(&self, microdao_id: Option<&str>) -> Result<Option<OwnedRoomId>> {
        if !self.space.enabled {
            return Ok(None);
        }
        if let Some(space) = self.store.space(microdao_id).await? {
            return Ok(Some(space));
        }
        let city = match microdao_id {
            Some(_) => Box::pin(self.ensure_space(None)).await?,
            None => None,
        };
        let alias = space_alias(microdao_id, &self.server_name);
        let (name, topic) = match microdao_id {
            None => (
                CITY_SPACE_NAME.to_owned(),
                "The public rooms of DAARION City".to_owned(),
            ),
            Some(id) => (
                format!("{ROOM_NAME_PREFIX}microDAO {id}"),
                format!("The public channels of the microDAO {id}"),
            ),
        };
        let created = self
            .homeserver
            .create_space(NewSpace {
                alias_localpart: &space_alias_localpart(microdao_id),
                name: &name,
                topic: &topic,
            })
            .await;
        let space = match created {
            Ok(space) => {
                info!(%alias, %space, "created a Space");
                space
            }
            // Made by a run that stopped before recording it, or by another instance:
            // Synapse knows the alias, so resolving it does not ask us back.
            Err(e) if matches!(e.kind(), Some(ErrorKind::RoomInUse)) => {
                let Some(space) = self.homeserver.resolve_alias(&alias).await? else {
                    return Err(e.into());
                };
                self.check_is_space(&space, &alias).await?;
                info!(%alias, %space, "adopted the existing Space of its alias");
                space
            }
            Err(e) => return Err(e.into()),
        };
        // Not a city room: ingestion need not look at its events.
        self.directory.mark_not_city(space.clone());
        if let Some(city) = &city {
            self.list_child(city, &space).await?;
            self.set_parent(&space, city).await?;
        }
        self.store.record_space(microdao_id, &space).await?;
        Ok(Some(space))
    }

    /// The city's Space, made now if it does not exist yet (Synapse asks for
    /// `#city:<server>` when someone joins it first). `Ok(None)` when it is disabled.
    /// Synapse asks only for an alias it does not know: a recorded Space whose alias was
    /// deleted gets it back.
    pub async fn ensure_city_space(&self) -> Result<Option<OwnedRoomId>> {
        let _turn = self.space.turn.lock().await;
        let Some(space) = self.ensure_space(None).await? else {
            return Ok(None);
        };
        self.restore_alias(None, &space).await?;
        // Its rooms follow at once.
        self.reconciler.notify_one();
        Ok(Some(space))
    }

    /// Points the alias of a microDAO's Space (`None`: the city's) at `space`; an alias
    /// that exists already is left as it is. Never a lookup of the alias: for one Synapse
    /// does not know it would ask the bridge back, and wait for this turn.
    async fn restore_alias(&self, microdao_id: Option<&str>, space: &RoomId) -> Result<bool> {
        let alias = space_alias(microdao_id, &self.server_name);
        match self.homeserver.set_alias(alias.clone(), space).await {
            Ok(()) => {
                info!(%alias, %space, "restored the alias of a Space");
                Ok(true)
            }
            Err(e) if e.status() == Some(http::StatusCode::CONFLICT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// An adopted alias must name a Space the bridge can change; anything else (a room a
    /// person made before the namespace was the bridge's) is refused, not taken over.
    async fn check_is_space(&self, room: &RoomId, alias: &ruma::RoomAliasId) -> Result<()> {
        let create = self
            .homeserver
            .state_for_key(room, StateEventType::RoomCreate, "")
            .await;
        match create {
            Ok(Some(content)) if content["type"] == "m.space" => Ok(()),
            Ok(_) => Err(HomeserverError::InvalidResponse(format!(
                "{alias} names {room}, which is not a Space"
            ))
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    /// `m.space.child` of `child` in `space`, with this server to join through.
    async fn list_child(&self, space: &RoomId, child: &RoomId) -> Result<()> {
        let content = SpaceChildEventContent::new(vec![self.server_name.clone()]);
        self.homeserver
            .set_state_for_key(space, child, &content)
            .await?;
        Ok(())
    }

    /// `m.space.parent` of `space` in `room`, canonical.
    async fn set_parent(&self, room: &RoomId, space: &RoomId) -> Result<()> {
        let mut content = SpaceParentEventContent::new(vec![self.server_name.clone()]);
        content.canonical = true;
        self.homeserver
            .set_state_for_key(room, space, &content)
            .await?;
        Ok(())
    }

    /// Withdraws the `m.space.child` of `child` from `space` (an empty content).
    async fn unlist_child(&self, space: &RoomId, child: &RoomId) -> Result<()> {
        self.homeserver
            .clear_state(space, StateEventType::SpaceChild, child.as_str())
            .await?;
        Ok(())
    }

    /// Lists (or withdraws) one room where it belongs and records it.
    async fn place(&self, member: &SpaceMember) -> Result<()> {
        let home = if member.listed {
            match self.ensure_space(member.microdao_id.as_deref()).await? {
                Some(home) => Some(home),
                None => return Ok(()),
            }
        } else {
            None
        };
        if let Some(listed) = &member.space_room_id
            && Some(listed) != home.as_ref()
        {
            self.unlist_child(listed, &member.matrix_room_id).await?;
            info!(slug = %member.slug, space = %listed, "room withdrawn from its Space");
        }
        if let Some(home) = &home {
            self.list_child(home, &member.matrix_room_id).await?;
            match self.set_parent(&member.matrix_room_id, home).await {
                Ok(()) => {}
                // A room the bridge has no power in (one a person upgraded, say) is listed
                // all the same; the Space's child event is what clients read.
                Err(e) if refused(&e) => {
                    warn!(slug = %member.slug, error = %e, "the bridge may not set the room's m.space.parent; listed without it");
                }
                Err(e) => return Err(e),
            }
            info!(slug = %member.slug, space = %home, "room listed in its Space");
        }
        self.store.set_space_of(&member.slug, home.as_deref()).await
    }

    /// Brings the Spaces in step with the rooms, from what the bridge recorded: the
    /// city's Space exists, and every room whose listing differs from where it belongs
    /// is listed or withdrawn. Cheap when nothing differs (one query). Errors of single
    /// rooms are logged; `Ok(false)` when some failed.
    pub async fn catch_up_spaces(&self) -> Result<bool> {
        if !self.space.enabled {
            return Ok(true);
        }
        let _turn = self.space.turn.lock().await;
        self.ensure_space(None).await?;
        // Kept in the directory's "not a city room" answers (which it forgets when they
        // grow too many): ingestion never waits for their events.
        for (_, space) in self.store.spaces().await? {
            self.directory.mark_not_city(space);
        }
        let mut all_placed = true;
        for member in self.store.space_members(true).await? {
            if let Err(e) = self.place(&member).await {
                warn!(slug = %member.slug, error = %e, "cannot list the room in its Space yet");
                all_placed = false;
                if matches!(&e, Error::Homeserver(h) if h.is_unavailable()) {
                    break;
                }
            }
        }
        Ok(all_placed)
    }

    /// Rebuilds the Spaces from their actual state in Matrix: every Space's children are
    /// read, and what differs from the rooms is sent (children listed or withdrawn, a
    /// missing `m.space.parent` set); what the bridge recorded is made true. Idempotent:
    /// a second run sends nothing. Children the bridge knows nothing of are left alone.
    pub async fn sync_spaces(&self) -> Result<SpaceSync> {
        let mut sync = SpaceSync::default();
        let _turn = self.space.turn.lock().await;
        let Some(city) = self.ensure_space(None).await? else {
            return Ok(sync);
        };
        sync.space = Some(city.clone());
        let members = self.store.space_members(false).await?;
        // Where each listed room belongs.
        let mut wanted: BTreeMap<OwnedRoomId, BTreeSet<OwnedRoomId>> = BTreeMap::new();
        wanted.entry(city.clone()).or_default();
        let mut homes = Vec::with_capacity(members.len());
        for member in &members {
            let home = if member.listed {
                match self.ensure_space(member.microdao_id.as_deref()).await {
                    Ok(home) => home,
                    Err(e) => {
                        warn!(slug = %member.slug, error = %e, "cannot make the room's Space");
                        sync.failed += 1;
                        homes.push(Err(()));
                        continue;
                    }
                }
            } else {
                None
            };
            if let Some(home) = &home {
                wanted
                    .entry(home.clone())
                    .or_default()
                    .insert(member.matrix_room_id.clone());
            }
            homes.push(Ok(home));
        }
        let spaces = self.store.spaces().await?;
        for (microdao, space) in &spaces {
            if self.restore_alias(microdao.as_deref(), space).await? {
                sync.aliases_restored += 1;
            }
            wanted.entry(space.clone()).or_default();
            if microdao.is_some() {
                wanted
                    .entry(city.clone())
                    .or_default()
                    .insert(space.clone());
            }
        }
        // Withdrawn only if the bridge knows the child: a room or a Space of its own.
        let known: HashSet<&RoomId> = members
            .iter()
            .map(|m| &*m.matrix_room_id)
            .chain(spaces.iter().map(|(_, s)| &**s))
            .collect();
        for (space, children) in &wanted {
            let listed = self.space_children(space).await?;
            for child in children.difference(&listed) {
                self.list_child(space, child).await?;
                sync.children_added += 1;
            }
            for child in listed.difference(children) {
                if known.contains(&**child) {
                    self.unlist_child(space, child).await?;
                    sync.children_removed += 1;
                }
            }
        }
        for (member, home) in members.iter().zip(homes) {
            let Ok(home) = home else { continue };
            if let Err(e) = self.repair_parent(member, home.as_deref(), &mut sync).await {
                warn!(slug = %member.slug, error = %e, "cannot set the room's Space parent");
                sync.failed += 1;
            }
        }
        for (microdao, space) in &spaces {
            if microdao.is_some() && !self.has_parent(space, &city).await? {
                self.set_parent(space, &city).await?;
                sync.parents_added += 1;
            }
            if self.publish(space).await? {
                sync.published += 1;
            }
        }
        info!(?sync, "Spaces in step with the city rooms");
        Ok(sync)
    }

    /// Sets the room's `m.space.parent` of its Space when it lacks it, and records where
    /// the room is listed.
    async fn repair_parent(
        &self,
        member: &SpaceMember,
        home: Option<&RoomId>,
        sync: &mut SpaceSync,
    ) -> Result<()> {
        if let Some(home) = home {
            let room = &member.matrix_room_id;
            let parent = match self.has_parent(room, home).await {
                Ok(true) => Ok(false),
                Ok(false) => self.set_parent(room, home).await.map(|()| true),
                Err(e) => Err(e),
            };
            match parent {
                Ok(added) => sync.parents_added += usize::from(added),
                Err(e) if refused(&e) => {
                    warn!(slug = %member.slug, error = %e, "the bridge may not set the room's m.space.parent; listed without it");
                    sync.parents_refused += 1;
                }
                Err(e) => return Err(e),
            }
        }
        if member.space_room_id.as_deref() != home {
            self.store.set_space_of(&member.slug, home).await?;
        }
        Ok(())
    }

    /// Puts a Space in the room directory if it is not there (made while Synapse's
    /// publication rules refused it); `Ok(true)` when it was put back. A refusal is
    /// logged, not failed: `city-bridge check` names the rule to add.
    async fn publish(&self, space: &RoomId) -> Result<bool> {
        use ruma::api::client::{
            directory::{get_room_visibility, set_room_visibility},
            room::Visibility,
        };
        let listed = self
            .homeserver
            .send(
                get_room_visibility::v3::Request::new(space.to_owned()),
                None,
            )
            .await?;
        if listed.visibility == Visibility::Public {
            return Ok(false);
        }
        let request = set_room_visibility::v3::Request::new(space.to_owned(), Visibility::Public);
        match self.homeserver.send(request, None).await {
            Ok(_) => {
                info!(%space, "Space put back in the room directory");
                Ok(true)
            }
            Err(e) if e.status() == Some(http::StatusCode::FORBIDDEN) => {
                warn!(%space, error = %e, "Synapse refuses to list the Space in the room directory");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `room` names `space` as a parent (a content with `via`).
    async fn has_parent(&self, room: &RoomId, space: &RoomId) -> Result<bool> {
        let parent = self
            .homeserver
            .state_for_key(room, StateEventType::SpaceParent, space.as_str())
            .await?;
        Ok(parent.is_some_and(|c| c["via"].as_array().is_some_and(|v| !v.is_empty())))
    }

    /// The rooms the Space lists now: its `m.space.child` events with a `via`.
    pub async fn space_children(&self, space: &RoomId) -> Result<BTreeSet<OwnedRoomId>> {
        Ok(children(&self.homeserver.room_state(space).await?))
    }
}

/// Whether the homeserver refused the request for good (as opposed to being unavailable).
fn refused(error: &Error) -> bool {
    matches!(error, Error::Homeserver(HomeserverError::Refused { .. }))
}

/// The children of a Space's state: `m.space.child` events whose content has a non-empty
/// `via` (an empty content withdraws a child).
pub fn children(state: &[ruma::serde::Raw<ruma::events::AnyStateEvent>]) -> BTreeSet<OwnedRoomId> {
    state
        .iter()
        .filter_map(|raw| {
            let event: serde_json::Value = raw.deserialize_as().ok()?;
            if event["type"] != "m.space.child" {
                return None;
            }
            event["content"]["via"]
                .as_array()
                .is_some_and(|via| !via.is_empty())
                .then(|| OwnedRoomId::try_from(event["state_key"].as_str()?).ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdrawn_and_other_events_are_not_children() {
        let raw = |v: serde_json::Value| {
            ruma::serde::Raw::from_json(serde_json::value::to_raw_value(&v).unwrap())
        };
        let state = vec![
            raw(
                serde_json::json!({"type": "m.space.child", "state_key": "!a:x",
                "content": {"via": ["x"]}}),
            ),
            raw(
                serde_json::json!({"type": "m.space.child", "state_key": "!b:x",
                "content": {}}),
            ),
            raw(
                serde_json::json!({"type": "m.space.child", "state_key": "!c",
                "content": {"via": []}}),
            ),
            raw(serde_json::json!({"type": "m.room.name", "state_key": "",
                "content": {"name": "n"}})),
            raw(
                serde_json::json!({"type": "m.space.child", "state_key": "!d",
                "content": {"via": ["x"], "order": "1"}}),
            ),
        ];
        let got: Vec<String> = children(&state)
            .into_iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(got, ["!a:x", "!d"]);
    }
}
