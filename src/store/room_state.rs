//! Room state of mapped rooms, applied in a batch's transaction: name, topic, canonical
//! alias, tombstone, encryption and pinned events, the latest event of each type winning
//! (`matrix_room_state`); new pins are announced in the same transaction.

use sqlx::PgConnection;

use super::model::{Effects, RoomStateChange, RoomStateField};

/// Applies one state change; what it changed for the live feeds (pins).
pub(super) async fn apply_room_state(
    conn: &mut PgConnection,
    state: &RoomStateChange,
) -> Result<Effects, sqlx::Error> {
    let pinned;
    let (set, value): (&str, Option<&str>) = match &state.field {
        RoomStateField::Name(name) => ("name = $5", Some(name)),
        RoomStateField::Topic(topic) => ("description = $5", topic.as_deref()),
        RoomStateField::CanonicalAlias(alias) => ("matrix_room_alias = $5", Some(alias.as_str())),
        RoomStateField::Tombstone(room) => ("matrix_room_id = $5", Some(room.as_str())),
        RoomStateField::Encryption => ("encrypted = true", None),
        RoomStateField::Pinned(events) => {
            pinned = serde_json::to_string(events).expect("event ids serialize");
            (
                "pinned_events = ARRAY(SELECT jsonb_array_elements_text($5::jsonb))",
                Some(pinned.as_str()),
            )
        }
    };
    // Events apply in the order Synapse sends them (senders' clocks may be skewed, so
    // origin_server_ts is no order); the same event again changes nothing.
    let applied = sqlx::query(&format!(
        "WITH newer AS ( \
             INSERT INTO matrix_room_state (matrix_room_id, event_type, event_id, origin_server_ts) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (matrix_room_id, event_type) DO UPDATE SET \
                 event_id = EXCLUDED.event_id, origin_server_ts = EXCLUDED.origin_server_ts \
             WHERE matrix_room_state.event_id IS DISTINCT FROM EXCLUDED.event_id \
             RETURNING 1) \
         UPDATE city_rooms SET {set}, updated_at = now() \
         WHERE id = $6 AND matrix_room_id = $1 AND EXISTS (SELECT 1 FROM newer)"
    ))
    .bind(state.matrix_room_id.as_str())
    .bind(state.event_type)
    .bind(state.event_id.as_str())
    .bind(state.event_ts)
    .bind(value)
    .bind(state.room_id.as_str())
    .execute(&mut *conn)
    .await?;
    if let RoomStateField::Pinned(events) = &state.field
        && applied.rows_affected() > 0
    {
        let channel = state.room_id.as_str();
        super::outbox::record_event(
            conn,
            crate::domain::events::subjects::PINS_UPDATED,
            channel,
            &serde_json::json!({"type": "pins.updated", "channel_id": channel, "pinned": events}),
        )
        .await?;
        return Ok(Effects {
            pins: vec![channel.to_owned()],
            ..Effects::default()
        });
    }
    Ok(Effects::default())
}
