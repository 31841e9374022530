//! A channel's pinned messages, as its last `m.room.pinned_events` said (written by the
//! ingest of room state, `transactions.rs`).

use super::{MessageView, Store, messages::MESSAGE_COLUMNS};
use crate::{Result, domain::CityRoomId};

/// The pins of a channel.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Pins {
    /// The pinned event ids, in pin order (as the room state lists them).
    pub pinned: Vec<String>,
    /// The pinned messages the index has, in pin order (a pin of an event the index does
    /// not have, or of another room's, is only in `pinned`).
    pub messages: Vec<MessageView>,
}

impl Store {
    /// The pins of `channel`, as `viewer` (a Matrix id) sees the messages.
    pub async fn pins(&self, channel: &CityRoomId, viewer: &str) -> Result<Pins> {
        let pinned: Vec<String> =
            sqlx::query_scalar("SELECT pinned_events FROM city_rooms WHERE id = $1")
                .bind(channel.as_str())
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or_default();
        let messages = if pinned.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m \
                 WHERE m.channel_id = $2 AND m.matrix_event_id = ANY($3) \
                 ORDER BY array_position($3, m.matrix_event_id)"
            ))
            .bind(viewer)
            .bind(channel.as_str())
            .bind(&pinned)
            .fetch_all(&self.pool)
            .await?
        };
        Ok(Pins { pinned, messages })
    }
}
