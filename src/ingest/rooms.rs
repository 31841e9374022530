//! Room state of mapped rooms: name, topic, canonical alias, tombstone, encryption and
//! pinned events.

use ruma::events::room::{
    canonical_alias::RoomCanonicalAliasEventContent, name::RoomNameEventContent,
    pinned_events::RoomPinnedEventsEventContent, tombstone::RoomTombstoneEventContent,
    topic::RoomTopicEventContent,
};
use serde::de::DeserializeOwned;

use super::{Change, Envelope, MappedRoom, Read, RoomStateChange, RoomStateField, pg_text};
use crate::domain::{MAX_NAME_CHARS, ROOM_NAME_PREFIX};

fn content<T: DeserializeOwned>(envelope: &Envelope<'_>) -> Result<T, String> {
    serde_json::from_str(envelope.content.get())
        .map_err(|e| format!("{} content: {e}", envelope.kind))
}

fn field(envelope: &Envelope<'_>) -> Result<Option<(&'static str, RoomStateField)>, String> {
    Ok(match envelope.kind.as_ref() {
        "m.room.name" => {
            let name = content::<RoomNameEventContent>(envelope)?.name;
            let name = name.strip_prefix(ROOM_NAME_PREFIX).unwrap_or(&name).trim();
            if name.is_empty() {
                None
            } else {
                let name: String = pg_text(name).chars().take(MAX_NAME_CHARS).collect();
                Some(("m.room.name", RoomStateField::Name(name)))
            }
        }
        "m.room.topic" => {
            let topic = content::<RoomTopicEventContent>(envelope)?.topic;
            let topic = (!topic.is_empty()).then(|| pg_text(&topic).into_owned());
            Some(("m.room.topic", RoomStateField::Topic(topic)))
        }
        "m.room.canonical_alias" => content::<RoomCanonicalAliasEventContent>(envelope)?
            .alias
            .map(|alias| {
                (
                    "m.room.canonical_alias",
                    RoomStateField::CanonicalAlias(alias),
                )
            }),
        "m.room.tombstone" => {
            let replacement = content::<RoomTombstoneEventContent>(envelope)?.replacement_room;
            Some(("m.room.tombstone", RoomStateField::Tombstone(replacement)))
        }
        "m.room.encryption" => Some(("m.room.encryption", RoomStateField::Encryption)),
        "m.room.pinned_events" => {
            let pinned = content::<RoomPinnedEventsEventContent>(envelope)?.pinned;
            let mut kept: Vec<String> = Vec::new();
            for event_id in pinned {
                if kept.len() == crate::store::model::MAX_PINS {
                    break;
                }
                if !kept.iter().any(|e| e == event_id.as_str()) {
                    kept.push(event_id.to_string());
                }
            }
            Some(("m.room.pinned_events", RoomStateField::Pinned(kept)))
        }
        _ => None,
    })
}

pub(super) fn read_state(envelope: &Envelope<'_>, room: &MappedRoom) -> Read {
    if envelope.state_key.as_deref() != Some("") {
        return Read::Ignored;
    }
    match field(envelope) {
        Ok(Some((event_type, field))) => Read::Change(Change::RoomState(RoomStateChange {
            room_id: room.id.clone(),
            matrix_room_id: envelope.room_id.clone(),
            event_type,
            event_id: envelope.event_id.clone(),
            event_ts: envelope.origin_server_ts.get().into(),
            field,
        })),
        Ok(None) => Read::Ignored,
        Err(reason) => Read::Invalid(reason),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ingest::tests::{event, read};

    fn state(kind: &str, content: serde_json::Value) -> Read {
        let mut e = event(kind, "@a:example.org", content);
        e["state_key"] = json!("");
        read(e)
    }

    #[test]
    fn state_events() {
        let name = state("m.room.name", json!({"name": "DAARION City — Енергія"}));
        assert!(
            matches!(name, Read::Change(Change::RoomState(RoomStateChange { field: RoomStateField::Name(n), .. })) if n == "Енергія")
        );
        let topic = state("m.room.topic", json!({"topic": "about"}));
        assert!(
            matches!(topic, Read::Change(Change::RoomState(RoomStateChange { field: RoomStateField::Topic(Some(t)), .. })) if t == "about")
        );
        let tomb = state(
            "m.room.tombstone",
            json!({"body": "moved", "replacement_room": "!new:example.org"}),
        );
        assert!(
            matches!(tomb, Read::Change(Change::RoomState(RoomStateChange { field: RoomStateField::Tombstone(r), .. })) if r.as_str() == "!new:example.org")
        );
        assert!(matches!(
            state("m.room.name", json!({"name": 7})),
            Read::Invalid(_)
        ));
        let long = state("m.room.name", json!({"name": "x".repeat(300)}));
        assert!(
            matches!(long, Read::Change(Change::RoomState(RoomStateChange { field: RoomStateField::Name(n), .. })) if n.len() == 100)
        );
    }

    #[test]
    fn pinned_events_are_kept_once_each_in_order_and_bounded() {
        let many: Vec<String> = (0..150).map(|n| format!("$e{n}:example.org")).collect();
        let mut pinned = vec!["$b:example.org".to_owned(), "$a:example.org".to_owned()];
        pinned.push("$b:example.org".to_owned());
        pinned.extend(many);
        let Read::Change(Change::RoomState(RoomStateChange {
            field: RoomStateField::Pinned(kept),
            ..
        })) = state("m.room.pinned_events", json!({"pinned": pinned}))
        else {
            panic!("pinned events read")
        };
        assert_eq!(kept.len(), crate::store::model::MAX_PINS);
        assert_eq!(
            kept[..3],
            ["$b:example.org", "$a:example.org", "$e0:example.org"]
        );
        assert!(matches!(
            state("m.room.pinned_events", json!({"pinned": "$a:example.org"})),
            Read::Invalid(_)
        ));
    }
}
