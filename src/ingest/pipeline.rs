//! The ingest pipeline of one batch of timeline events (a pushed transaction, or a page
//! of an adopted room's history): envelopes → route to city rooms → read → one Postgres
//! transaction → room upgrades and encryption in the room directory → what was committed
//! published to the index's followers ([`Commits`]: the relay wake-up, live
//! presence, agents accepting invites). [`Indexer::apply`] takes the ingest turn for the
//! whole batch, so batches apply one at a time, in the order they take it; no caller can
//! forget it, and the indexer holds what it works with.

use std::{collections::HashMap, sync::Arc, time::Duration};

use ruma::{
    OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, ServerName,
    events::{AnyTimelineEvent, room::member::MembershipState},
    serde::Raw,
};
use tracing::warn;

use super::{
    Change, Context, DeadLetter, Envelope, Incoming, Read, RoomStateField, Turn,
    committed::{Commits, Committed, Subscription},
    journal::Journal,
    read_event,
};
use crate::{
    Result,
    config::NamespaceSet,
    domain::Slug,
    rooms::{CatchUp, CreationsInFlight, Discovery, RoomDirectory},
    store::{Batch, MessageView, Store},
};

/// The new messages of `batch` as written: `created` (event id, position) follows the
/// batch's order, and skips what the index already had.
fn written(batch: &Batch, created: &[(String, i64)]) -> Vec<(Arc<MessageView>, i64)> {
    let mut created = created.iter().peekable();
    batch
        .changes
        .iter()
        .filter_map(|(_, change)| match change {
            Change::Message(m) => Some(m),
            _ => None,
        })
        .filter_map(|m| {
            let (_, seq) = created.next_if(|(id, _)| id.as_str() == m.event_id.as_str())?;
            Some((Arc::new(MessageView::indexed(m, *seq)), *seq))
        })
        .collect()
}

/// How long ingestion waits for a room creation under way that has not returned yet,
/// before deciding that a room of the bridge's own it has not seen is not a city room.
const CREATION_WAIT: Duration = Duration::from_secs(30);

/// The indexer: applies batches of events to the index one at a time (it holds the ingest
/// turn), with what it needs to route, read, store and tell what changed.
#[derive(Debug)]
pub struct Indexer {
    turn: Turn,
    store: Store,
    directory: Arc<RoomDirectory>,
    creations: Arc<CreationsInFlight>,
    receiving: Option<Receiving>,
    commits: Commits,
    server_name: OwnedServerName,
    agents: NamespaceSet,
    sender: OwnedUserId,
}

/// What a batch did to the index (what it changed goes to the index's followers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indexed {
    /// Row changes applied (a replayed event's change applies as a no-op).
    pub changes: usize,
    /// Messages the index did not have before.
    pub created: usize,
    /// Events recorded as dead letters.
    pub dead_letters: usize,
}

/// What only the instance Synapse pushes to has: the journal of pushed transactions, and
/// discovery of rooms it does not know. An API-only instance has neither.
#[derive(Debug, Clone)]
pub struct Receiving {
    /// The ingest journal (what was indexed outside it).
    pub journal: Arc<Journal>,
    /// Rooms to look at.
    pub discovery: Arc<Discovery>,
    /// Signs of Synapse's recoveries, after which the rooms are read back.
    pub catch_up: Arc<CatchUp>,
}

/// What the [`Indexer`] is built from.
#[derive(Debug)]
pub struct IndexerParts {
    /// The database.
    pub store: Store,
    /// Matrix room → city room.
    pub directory: Arc<RoomDirectory>,
    /// Room creations under way.
    pub creations: Arc<CreationsInFlight>,
    /// On the instance Synapse pushes to: the journal and discovery.
    pub receiving: Option<Receiving>,
    /// The homeserver's name.
    pub server_name: OwnedServerName,
    /// The appservice's user namespace (agents).
    pub agents: NamespaceSet,
    /// The appservice's own user.
    pub sender: OwnedUserId,
}

impl Indexer {
    /// An indexer of `parts`.
    pub fn new(parts: IndexerParts) -> Self {
        Self {
            turn: Turn::default(),
            store: parts.store,
            directory: parts.directory,
            creations: parts.creations,
            receiving: parts.receiving,
            commits: Commits::default(),
            server_name: parts.server_name,
            agents: parts.agents,
            sender: parts.sender,
        }
    }

    /// Every batch committed from now on: what it changed.
    pub fn subscribe(&self) -> Subscription {
        self.commits.subscribe()
    }

    /// Reads and applies the events of one transaction, all named `txn_id` in dead letters.
    pub async fn apply_raw(
        &self,
        txn_id: &str,
        events: &[Raw<AnyTimelineEvent>],
    ) -> Result<Indexed> {
        self.apply(&Incoming::of(txn_id, events), None).await
    }

    /// Reads and applies one batch of events, in order. With `journal_pos`, the batch is
    /// the journal up to that position, and the index records it in the same commit.
    pub async fn apply(
        &self,
        events: &[Incoming<'_>],
        journal_pos: Option<i64>,
    ) -> Result<Indexed> {
        let _turn = self.turn.take().await;
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
        self.route(&envelopes).await?;

        let ctx = Context {
            server_name: &self.server_name,
            agents: &self.agents,
            sender: &self.sender,
        };
        let metrics = crate::metrics::metrics();
        let mut upgrades = Vec::new();
        // Rooms encrypted by an event of this batch: the events after it are metadata only.
        let mut encrypted: Vec<OwnedRoomId> = Vec::new();
        // Every event of a mapped room is activity: the room's `last_event`.
        let mut activity: Vec<(OwnedRoomId, u64)> = Vec::new();
        for (index, envelope) in &envelopes {
            let Some(mut room) = self.directory.get(&envelope.room_id) else {
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
                        && self.agents.is_exclusive_match(m.user_id.as_str()) =>
                {
                    Some((m.matrix_room_id.clone(), m.user_id.clone()))
                }
                _ => None,
            })
            .collect();
        let local_members: Vec<_> = batch
            .changes
            .iter()
            .filter_map(|(_, change)| match change {
                Change::Membership(m)
                    if m.user_id.server_name() == self.server_name
                        && m.user_id != self.sender
                        && !self.agents.is_exclusive_match(m.user_id.as_str()) =>
                {
                    Some(m)
                }
                _ => None,
            })
            .map(|m| (m.room_id.clone(), m.user_id.clone(), m.membership.clone()))
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
        if journal_pos.is_some()
            && let Some(receiving) = &self.receiving
        {
            batch.may_repeat =
                receiving
                    .journal
                    .indexed_directly_any(batch.changes.iter().filter_map(|(_, c)| match c {
                        Change::Message(m) => Some(m.event_id.as_str()),
                        _ => None,
                    }));
        }
        let applied = self.store.apply_transaction(events, &batch).await?;
        if journal_pos.is_none()
            && let Some(receiving) = &self.receiving
        {
            receiving
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
        let mut replaced_rooms = Vec::new();
        for (old, new, room) in upgrades {
            // Only if the tombstone was applied (it may have been dead-lettered).
            let applied = self.store.rooms_by_matrix_ids(&[&new]).await?;
            if applied.iter().any(|(_, mapped)| mapped.id == room.id) {
                self.directory.remove(&old);
                self.directory.insert(new, room);
                replaced_rooms.push(old);
            }
        }
        for room_id in encrypted {
            if let Some(mut room) = self.directory.get(&room_id) {
                room.encrypted = true;
                self.directory.insert(room_id, room);
            }
        }
        let created = applied.effects.created.len();
        let messages = written(&batch, &applied.effects.created);
        self.commits.publish(Committed {
            effects: applied.effects,
            messages,
            memberships,
            activity,
            invited_agents,
            replaced_rooms,
            local_members,
        });
        Ok(Indexed {
            changes: applied.changes,
            created,
            dead_letters: applied.dead_letters,
        })
    }

    /// Makes sure the directory knows every city room of the batch: rooms it has not seen are
    /// looked up in Postgres, then among the creations under way; what is left is counted and
    /// offered to discovery (a city room whose mapping was never stored is found there),
    /// unless it is known not to be a city room.
    async fn route(&self, envelopes: &[(usize, Envelope<'_>)]) -> Result<()> {
        let mut unknown: HashMap<&RoomId, Unknown> = HashMap::new();
        for (_, envelope) in envelopes {
            let room_id: &RoomId = &envelope.room_id;
            if self.directory.contains(room_id) {
                continue;
            }
            let entry = unknown.entry(room_id).or_default();
            entry.events += 1;
            entry.sent_by_bridge |= envelope.sender == self.sender;
            if envelope.kind == "m.room.canonical_alias"
                && alias_names_a_city_room(envelope, &self.server_name)
            {
                entry.city_alias = true;
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let ids: Vec<&RoomId> = unknown.keys().copied().collect();
        for (matrix_room_id, room) in self.store.rooms_by_matrix_ids(&ids).await? {
            unknown.remove(&*matrix_room_id);
            self.directory.insert(matrix_room_id, room);
        }
        for (room_id, seen) in unknown {
            if seen.city_alias {
                self.directory.forget_not_city(room_id);
            }
            // Known not to be a city room (the bridge's own Spaces, say): never a creation
            // under way either, so never waited for.
            if self.directory.is_not_city(room_id) {
                continue;
            }
            // A room the bridge is creating is populated by its own user first; only then is
            // it worth waiting for a creation that has not returned yet.
            if seen.sent_by_bridge
                && let Some(room) = self.creations.resolve(room_id, CREATION_WAIT).await
            {
                self.directory.insert(room_id.to_owned(), room);
                continue;
            }
            if let Some(receiving) = &self.receiving {
                receiving.discovery.offer(room_id, seen.events);
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Unknown {
    events: usize,
    sent_by_bridge: bool,
    city_alias: bool,
}

fn alias_names_a_city_room(envelope: &Envelope<'_>, server_name: &ServerName) -> bool {
    #[derive(serde::Deserialize)]
    struct Content {
        alias: Option<ruma::OwnedRoomAliasId>,
    }
    serde_json::from_str::<Content>(envelope.content.get())
        .ok()
        .and_then(|c| c.alias)
        .is_some_and(|alias| Slug::of_alias(&alias, server_name).is_some())
}
