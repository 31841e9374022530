//! Typing goes on the bus for every instance's channel listeners.

use bytes::Bytes;

use crate::{
    bus::Bus,
    domain::events::{Typing, subjects::TYPING_PREFIX},
};

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
