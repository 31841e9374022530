//! After a committed batch: the relay is woken for what it changed in the message index
//! (the outbox rows were written in the same transaction; new messages are read from the
//! index itself); typing goes on the bus for every instance's channel listeners.

use std::sync::Arc;

use bytes::Bytes;

use tokio::sync::Notify;

use crate::{
    bus::Bus,
    domain::events::{Typing, subjects::TYPING_PREFIX},
    ingest::Subscription,
};

/// Follows the index: wakes the relay for what each committed batch changed, until the
/// indexer is gone. (Search needs no wake-up: a message is searchable in the commit that
/// indexes it.)
pub async fn wake_readers(mut commits: Subscription, relay: Arc<Notify>) {
    while let Some(committed) = commits.recv().await {
        if !committed.effects.is_empty() {
            relay.notify_one();
        }
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
