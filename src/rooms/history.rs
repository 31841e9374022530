//! Reading a room's timeline back from Synapse and indexing it through the ingest
//! pipeline, oldest first: the whole history of a room the bridge adopts
//! (`discovery.rs`), or the last minutes of every room after Synapse's recovery from an
//! outage of the bridge (`catch_up.rs`). Idempotent per event, like every ingestion.

use ruma::{MilliSecondsSinceUnixEpoch, RoomId, events::AnyTimelineEvent, serde::Raw};
use serde::Deserialize;
use tracing::info;

use super::Rooms;
use crate::Result;

/// Timeline events read back from one room, at most.
const HISTORY_LIMIT: usize = 10_000;
/// Events per page, and per ingested batch.
const PAGE: u32 = 100;

#[derive(Deserialize, Default)]
struct Unsigned {
    #[serde(default)]
    redacted_because: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct TimelineEnvelope {
    #[serde(default)]
    state_key: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    unsigned: Option<Unsigned>,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
}

/// How much of a room's timeline to read back.
#[derive(Debug, Clone, Copy)]
pub enum Window {
    /// All of it (up to 10,000 events), and the room's current state.
    Whole,
    /// The events sent at or after this time; and the room's current state only if one of
    /// them is a state event.
    Since(MilliSecondsSinceUnixEpoch),
}

impl Window {
    fn since(self) -> Option<MilliSecondsSinceUnixEpoch> {
        match self {
            Self::Whole => None,
            Self::Since(at) => Some(at),
        }
    }
}

impl Rooms {
    /// Reads back what was said in a room the bridge just adopted — its current state and
    /// up to 10,000 timeline events — and indexes it.
    pub async fn index_history(&self, room_id: &RoomId) -> Result<()> {
        let created = index_timeline(self, room_id, Window::Whole).await?;
        info!(%room_id, created, "indexed the history of an adopted room");
        Ok(())
    }
}

/// Reads `window` of the room's timeline back and indexes it: the messages the index did
/// not have, counted. Redacted events are left out (their redaction says what is left of
/// them), and so are the timeline's state events: the room's current state is applied
/// instead, since an older state event could otherwise undo a newer push.
pub async fn index_timeline(rooms: &Rooms, room_id: &RoomId, window: Window) -> Result<usize> {
    let homeserver = &rooms.homeserver;
    let since = window.since();
    let mut timeline = Vec::new();
    let mut state_changed = since.is_none();
    let mut from = None;
    'pages: while timeline.len() < HISTORY_LIMIT {
        let (chunk, next) = homeserver.history_page(room_id, from, PAGE).await?;
        for raw in chunk {
            let Ok(event) = raw.deserialize_as_unchecked::<TimelineEnvelope>() else {
                continue;
            };
            if since.is_some_and(|since| event.origin_server_ts < since) {
                break 'pages;
            }
            if event.state_key.is_some() {
                state_changed = true;
            } else if event.unsigned.is_none_or(|u| u.redacted_because.is_none()) {
                timeline.push(raw);
            }
        }
        match next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    timeline.reverse();
    let current: Vec<Raw<AnyTimelineEvent>> = if state_changed {
        homeserver
            .room_state(room_id)
            .await?
            .into_iter()
            .map(Raw::cast_unchecked)
            .collect()
    } else {
        Vec::new()
    };
    let txn_id = match since {
        None => format!("history:{room_id}"),
        Some(_) => format!("catch-up:{room_id}"),
    };
    let mut created = 0;
    for batch in [current, timeline] {
        for chunk in batch.chunks(PAGE as usize) {
            created += rooms.indexer.apply_raw(&txn_id, chunk).await?.created;
        }
    }
    Ok(created)
}
