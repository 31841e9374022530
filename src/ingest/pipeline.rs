//! The ingest pipeline of one batch of timeline events (a pushed transaction, or a page
//! of an adopted room's history): envelopes → route to city rooms → read → one Postgres
//! transaction → room upgrades and encryption → live messaging feeds and `messaging.*`
//! events → agents accept invites → live presence. [`apply`] takes the ingest turn
//! ([`super::Turn`]) for the whole batch, so batches apply one at a time, in the order
//! they take it; no caller can forget it.

use std::{collections::HashMap, time::Duration};

use ruma::{
    OwnedRoomId, RoomId,
    events::{AnyTimelineEvent, room::member::MembershipState},
    serde::Raw,
};
use tracing::warn;

use super::{Change, Context, DeadLetter, Envelope, Incoming, Read, RoomStateField, read_event};
use crate::{
    Result,
    app::AppState,
    domain::Slug,
    rooms::MappedRoom,
    store::{Applied, Batch},
};

/// How long ingestion waits for a room creation under way that has not returned yet,
/// before deciding that a room of the bridge's own it has not seen is not a city room.
const CREATION_WAIT: Duration = Duration::from_secs(30);

/// Reads and applies the events of one transaction, all named `txn_id` in dead letters.
pub async fn apply_raw(
    state: &AppState,
    txn_id: &str,
    events: &[Raw<AnyTimelineEvent>],
) -> Result<Applied> {
    apply(state, &Incoming::of(txn_id, events), None).await
}

/// Reads and applies one batch of events, in order. With `journal_pos`, the batch is the
/// journal up to that position, and the index records it in the same commit.
pub async fn apply(
    state: &AppState,
    events: &[Incoming<'_>],
    journal_pos: Option<i64>,
) -> Result<Applied> {
    let _turn = state.turn.take().await;
    let mut batch = Batch {
        journal_pos,
        ..Batch::default()
    };
    let mut envelopes = Vec::with_capacity(events.len());
    for (index, incoming) in events.iter().enumerate() {
        match Envelope::parse(incoming.json) {
            Ok(envelope) => envelopes.push((index, envelope)),
            Err(e) => {
                crate::metrics::metrics().event("other", "malformed");
                warn!(txn_id = incoming.txn_id, error = %e, "malformed event skipped");
                batch.dead_letters.push(DeadLetter::new(
                    *incoming,
                    None,
                    format!("malformed event: {e}"),
                ));
            }
        }
    }
    route(state, &envelopes).await?;

    let ctx = Context {
        server_name: &state.config.server_name,
        agents: &state.namespaces.users,
        sender: &state.sender,
    };
    let metrics = crate::metrics::metrics();
    let mut upgrades = Vec::new();
    // Rooms encrypted by an event of this batch: the events after it are metadata only.
    let mut encrypted: Vec<OwnedRoomId> = Vec::new();
    // Every event of a mapped room is activity: the room's `last_event`.
    let mut activity: Vec<(OwnedRoomId, u64)> = Vec::new();
    for (index, envelope) in &envelopes {
        let Some(mut room) = state.directory.get(&envelope.room_id) else {
            metrics.event(&envelope.kind, "unmapped_room");
            continue;
        };
        room.encrypted |= encrypted.contains(&envelope.room_id);
        let ts = u64::from(envelope.origin_server_ts.get());
        match activity.iter_mut().find(|(r, _)| *r == envelope.room_id) {
            Some((_, last)) => *last = (*last).max(ts),
            None => activity.push((envelope.room_id.clone(), ts)),
        }
        match read_event(envelope, &room, &ctx) {
            Read::Change(change) => {
                if let Change::RoomState(s) = &change
                    && let RoomStateField::Tombstone(new_room) = &s.field
                {
                    upgrades.push((s.matrix_room_id.clone(), new_room.clone(), room.clone()));
                }
                if let Change::RoomState(s) = &change
                    && s.field == RoomStateField::Encryption
                    && !room.encrypted
                {
                    encrypted.push(s.matrix_room_id.clone());
                }
                metrics.event(&envelope.kind, "applied");
                batch.changes.push((*index, change));
            }
            Read::Ignored => metrics.event(&envelope.kind, "ignored"),
            Read::Invalid(reason) => {
                metrics.event(&envelope.kind, "dead_lettered");
                warn!(txn_id = events[*index].txn_id, event_id = %envelope.event_id, %reason, "unprocessable event skipped");
                batch.dead_letters.push(DeadLetter::new(
                    events[*index],
                    Some(envelope.fields()),
                    reason,
                ));
            }
        }
    }

    let invited_agents: Vec<_> = batch
        .changes
        .iter()
        .filter_map(|(_, change)| match change {
            Change::Membership(m)
                if m.membership == MembershipState::Invite
                    && state
                        .namespaces
                        .users
                        .is_exclusive_match(m.user_id.as_str()) =>
            {
                Some((m.matrix_room_id.clone(), m.user_id.clone()))
            }
            _ => None,
        })
        .collect();
    let memberships: Vec<_> = batch
        .changes
        .iter()
        .filter_map(|(_, change)| match change {
            Change::Membership(m) => Some((
                m.matrix_room_id.clone(),
                m.user_id.clone(),
                m.membership.clone(),
            )),
            _ => None,
        })
        .collect();
    if journal_pos.is_some() {
        batch.may_repeat = state
            .journal
            .indexed_directly_any(batch.changes.iter().filter_map(|(_, c)| match c {
                Change::Message(m) => Some(m.event_id.as_str()),
                _ => None,
            }));
    }
    let applied = state.store.apply_transaction(events, &batch).await?;
    if journal_pos.is_none() {
        state
            .journal
            .note_indexed_directly(applied.effects.created.iter().map(|(id, _)| id.as_str()));
    }
    metrics
        .dead_letters
        .inc_by(u64::try_from(applied.dead_letters).unwrap_or(0));
    let messages = batch
        .changes
        .iter()
        .filter(|(_, c)| matches!(c, Change::Message(_)))
        .count();
    let duplicates = messages.saturating_sub(applied.effects.created.len());
    if duplicates > 0 {
        // Counted as applied above; the index already had them.
        metrics
            .events
            .get_or_create(&crate::metrics::EventLabels {
                r#type: "m.room.message",
                outcome: "duplicate",
            })
            .inc_by(u64::try_from(duplicates).unwrap_or(0));
    }
    for (old, new, room) in upgrades {
        // Only if the tombstone was applied (it may have been dead-lettered).
        let applied = state.store.rooms_by_matrix_ids(&[&new]).await?;
        if applied.iter().any(|(_, mapped)| mapped.id == room.id) {
            state.directory.remove(&old);
            state.live.unmap_room(&old);
            state.directory.insert(new, room);
        }
    }
    for room_id in encrypted {
        if let Some(mut room) = state.directory.get(&room_id) {
            room.encrypted = true;
            state.directory.insert(room_id, room);
        }
    }
    crate::messaging::wake_readers(&state.relay_due, &state.search_due, &applied.effects);
    for (room_id, agent) in invited_agents {
        crate::agents::accept_invite(state, room_id, agent);
    }
    if !memberships.is_empty() || !activity.is_empty() {
        state
            .live
            .apply_room_events(&memberships, &activity, &state.directory);
    }
    Ok(applied)
}

/// Makes sure the directory knows every city room of the batch: rooms it has not seen are
/// looked up in Postgres, then among the creations under way; what is left is counted and
/// offered to discovery (a city room whose mapping was never stored is found there),
/// unless it is known not to be a city room.
async fn route(state: &AppState, envelopes: &[(usize, Envelope<'_>)]) -> Result<()> {
    let mut unknown: HashMap<&RoomId, Unknown> = HashMap::new();
    for (_, envelope) in envelopes {
        let room_id: &RoomId = &envelope.room_id;
        if state.directory.contains(room_id) {
            continue;
        }
        let entry = unknown.entry(room_id).or_default();
        entry.events += 1;
        entry.sent_by_bridge |= envelope.sender == state.sender;
        if envelope.kind == "m.room.canonical_alias" && alias_names_a_city_room(envelope, state) {
            entry.city_alias = true;
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let ids: Vec<&RoomId> = unknown.keys().copied().collect();
    for (matrix_room_id, room) in state.store.rooms_by_matrix_ids(&ids).await? {
        unknown.remove(&*matrix_room_id);
        state.directory.insert(matrix_room_id, room);
    }
    for (room_id, seen) in unknown {
        // A room the bridge is creating is populated by its own user first; only then is
        // it worth waiting for a creation that has not returned yet.
        if seen.sent_by_bridge
            && let Some(room) = creation_of(state, room_id).await
        {
            state.directory.insert(room_id.to_owned(), room);
            continue;
        }
        if seen.city_alias {
            state.directory.forget_not_city(room_id);
        }
        if state.directory.is_not_city(room_id) {
            continue;
        }
        state.discovery.offer(room_id, seen.events);
    }
    Ok(())
}

#[derive(Default)]
struct Unknown {
    events: usize,
    sent_by_bridge: bool,
    city_alias: bool,
}

async fn creation_of(state: &AppState, room_id: &RoomId) -> Option<MappedRoom> {
    state.creations.resolve(room_id, CREATION_WAIT).await
}

fn alias_names_a_city_room(envelope: &Envelope<'_>, state: &AppState) -> bool {
    #[derive(serde::Deserialize)]
    struct Content {
        alias: Option<ruma::OwnedRoomAliasId>,
    }
    serde_json::from_str::<Content>(envelope.content.get())
        .ok()
        .and_then(|c| c.alias)
        .is_some_and(|alias| Slug::of_alias(&alias, &state.config.server_name).is_some())
}
