//! Pushed transactions: parsed leniently, applied in one Postgres transaction, answered
//! only once committed.

use std::time::Duration;

use axum::extract::State;
use ruma::{
    api::appservice::event::push_events::{self, v1::EphemeralData},
    events::AnyTimelineEvent,
    serde::Raw,
};
use tracing::{debug, warn};

use super::{Ruma, RumaResponse};
use crate::{
    Result,
    app::AppState,
    error::MatrixError,
    ingest::{self, Change, Context, DeadLetter, Envelope, Read, RoomStateField},
    store::{Applied, Batch},
};

/// How long ingestion waits for room creations under way before deciding that a room it
/// has not seen is not a city room.
const CREATION_WAIT: Duration = Duration::from_secs(30);

/// # `PUT /_matrix/app/v1/transactions/{txnId}`
///
/// 200 means durable: the answer comes after the commit, so a crash before it makes
/// Synapse resend, and the event id keeps the resend from adding rows.
pub async fn push_events(
    State(state): State<AppState>,
    Ruma { request, body }: Ruma<push_events::v1::Request>,
) -> Result<RumaResponse<push_events::v1::Response>, MatrixError> {
    // Synapse sends one transaction at a time; a resend racing a slow first attempt must
    // still be applied after it, in order.
    let _in_order = state.ingest.lock().await;
    let applied = apply(&state, request.txn_id.as_str(), &request.events).await?;
    let ephemeral = if request.ephemeral.is_empty() {
        legacy_ephemeral(&body)
    } else {
        request.ephemeral
    };
    if !ephemeral.is_empty() {
        state
            .live
            .apply_ephemeral(&ephemeral, &state.directory)
            .await;
    }
    debug!(txn_id = %request.txn_id, events = request.events.len(), ?applied, "transaction applied");
    Ok(RumaResponse(push_events::v1::Response::new()))
}

/// Reads and applies the events of one transaction.
pub async fn apply(
    state: &AppState,
    txn_id: &str,
    events: &[Raw<AnyTimelineEvent>],
) -> Result<Applied> {
    let mut batch = Batch::default();
    let mut envelopes = Vec::with_capacity(events.len());
    for (index, raw) in events.iter().enumerate() {
        match Envelope::parse(raw) {
            Ok(envelope) => envelopes.push((index, envelope)),
            Err(e) => {
                warn!(txn_id, error = %e, "malformed event skipped");
                batch.dead_letters.push(DeadLetter::new(
                    raw.json(),
                    None,
                    format!("malformed event: {e}"),
                ));
            }
        }
    }
    let mut unknown: Vec<&str> = envelopes
        .iter()
        .map(|(_, e)| e.room_id.as_str())
        .filter(|id| !state.directory.contains(id))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        unknown.dedup();
        state.creations.settled(CREATION_WAIT).await;
        for (matrix_room_id, room) in state.store.rooms_by_matrix_ids(&unknown).await? {
            state.directory.insert(matrix_room_id, room);
        }
    }

    let ctx = Context {
        server_name: &state.config.server_name,
        agents: &state.namespaces.users,
        sender: &state.sender,
    };
    let mut upgrades = Vec::new();
    // Every event of a mapped room is activity: the room's `last_event`.
    let mut activity: Vec<(String, u64)> = Vec::new();
    for (index, envelope) in &envelopes {
        let Some(room) = state.directory.get(envelope.room_id.as_str()) else {
            continue;
        };
        let ts = u64::from(envelope.origin_server_ts.get());
        match activity
            .iter_mut()
            .find(|(r, _)| r == envelope.room_id.as_str())
        {
            Some((_, last)) => *last = (*last).max(ts),
            None => activity.push((envelope.room_id.to_string(), ts)),
        }
        match ingest::read_event(envelope, &room, &ctx) {
            Read::Change(change) => {
                if let Change::RoomState(s) = &change
                    && let RoomStateField::Tombstone(new_room) = &s.field
                {
                    upgrades.push((s.matrix_room_id.clone(), new_room.clone(), room.clone()));
                }
                batch.changes.push((*index, change));
            }
            Read::Ignored => {}
            Read::Invalid(reason) => {
                warn!(txn_id, event_id = %envelope.event_id, %reason, "unprocessable event skipped");
                batch.dead_letters.push(DeadLetter::new(
                    events[*index].json(),
                    Some(envelope),
                    reason,
                ));
            }
        }
    }

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
    let applied = state.store.apply_transaction(txn_id, events, batch).await?;
    for (old, new, room) in upgrades {
        // Only if the tombstone was applied (it may have been dead-lettered).
        let applied = state.store.rooms_by_matrix_ids(&[new.as_str()]).await?;
        if applied.iter().any(|(_, mapped)| mapped.id == room.id) {
            state.directory.remove(&old);
            state.live.unmap_room(&old);
            state.directory.insert(new, room);
        }
    }
    if !memberships.is_empty() || !activity.is_empty() {
        state
            .live
            .apply_room_events(&memberships, &activity, &state.directory)
            .await;
    }
    Ok(applied)
}

/// Ephemeral data under the legacy key, read only when the stable `ephemeral` key is
/// empty (never both), and only parsed when the key is present at all.
fn legacy_ephemeral(body: &[u8]) -> Vec<Raw<EphemeralData>> {
    const KEY: &[u8] = b"\"de.sorunome.msc2409.ephemeral\"";
    if !body.windows(KEY.len()).any(|w| w == KEY) {
        return Vec::new();
    }
    #[derive(serde::Deserialize)]
    struct Legacy {
        #[serde(rename = "de.sorunome.msc2409.ephemeral", default)]
        ephemeral: Vec<Raw<EphemeralData>>,
    }
    serde_json::from_slice::<Legacy>(body)
        .map(|l| l.ephemeral)
        .unwrap_or_default()
}
