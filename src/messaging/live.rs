//! After a committed batch: the relay is woken for what it changed in the message index
//! (the outbox rows were written in the same transaction; new messages are read from the
//! index itself) and the search indexer for new messages; typing goes on the bus for every
//! instance's channel listeners.

use std::sync::Arc;

use bytes::Bytes;

use tokio::sync::Notify;

use crate::{
    bus::Bus,
    domain::events::{Typing, subjects::TYPING_PREFIX},
    ingest::Subscription,
    store::Effects,
};

/// Follows the index: wakes the relay and the search indexer for what each committed
/// batch changed, until the indexer is gone.
pub async fn wake_readers(mut commits: Subscription, relay: Arc<Notify>, search: Arc<Notify>) {
    while let Some(committed) = commits.recv().await {
        wake_for(&relay, &search, &committed.effects);
    }
}

fn wake_for(relay: &Notify, search: &Notify, effects: &Effects) {
    if effects.is_empty() {
        return;
    }
    relay.notify_one();
    if !effects.created.is_empty() {
        search.notify_one();
    }
}

/// Who is typing in a channel now, for its listeners on every instance (ephemeral: core
/// NATS, never the stream).
pub fn typing(bus: &Bus, channel: &str, user_ids: &[String]) {
    bus.publish(
        format!("{TYPING_PREFIX}{channel}"),
        Bytes::from(
            serde_json::to_vec(&Typing {
                kind: "typing",
                channel_id: channel,
                user_ids,
            })
            .expect("payloads serialize"),
        ),
    );
}
