//! Applying pushed events. [`Indexer::apply`] (`pipeline.rs`) is the pipeline: envelopes → route
//! each event to its city room → read it into a row change or a [`DeadLetter`] → one
//! Postgres transaction → what was committed, published to the index's followers
//! (`committed.rs`). The readers (`messages.rs`, `membership.rs`,
//! `rooms.rs`) are pure: they turn one event of a mapped room into a [`Change`],
//! leniently — an event that cannot be understood becomes a dead letter and the rest goes on.

mod committed;
pub mod journal;
mod membership;
mod messages;
mod pipeline;
mod rooms;

use std::borrow::Cow;

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, ServerName, UserId,
};
use serde::Deserialize;
use serde_json::value::RawValue;

pub use self::{
    committed::{Committed, Subscription},
    messages::{REACTION_KEY_CHARS, preview},
    pipeline::{Indexed, Indexer, IndexerParts, Receiving},
};
pub use crate::store::model::{
    Change, DeadLetter, Incoming, MappedRoom, Media, MembershipChange, MessageEdit, NewMessage,
    NewReaction, PREVIEW_CHARS, Redaction, RoomStateChange, RoomStateField, SenderType, pg_text,
};
use crate::{
    config::NamespaceSet,
    domain::{AgentId, USER_ID_PREFIX},
};

/// The ingest turn: one batch of events is applied at a time, so that stream positions are
/// committed in order. Only the [`Indexer`] holds it, and takes it for each batch.
#[derive(Debug, Default)]
struct Turn(tokio::sync::Mutex<()>);

impl Turn {
    async fn take(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.lock().await
    }
}

/// The fields every timeline event has, read without touching `content`: enough to route
/// the event, so events of unmapped rooms cost one shallow parse.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    /// The event type.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// The event id.
    pub event_id: OwnedEventId,
    /// The room.
    pub room_id: OwnedRoomId,
    /// The sender.
    pub sender: OwnedUserId,
    /// When the sender's server received it.
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// Present on state events.
    #[serde(default, borrow)]
    pub state_key: Option<Cow<'a, str>>,
    /// The content, still raw.
    #[serde(borrow)]
    pub content: &'a RawValue,
    /// `m.room.redaction` before room version 11 carries its target here.
    #[serde(default)]
    pub redacts: Option<OwnedEventId>,
    /// What the homeserver adds: whether the event was redacted before it was pushed.
    #[serde(default)]
    pub unsigned: Option<Unsigned>,
}

/// The part of an event's `unsigned` the bridge reads.
#[derive(Debug, Deserialize)]
pub struct Unsigned {
    /// Present when the event was redacted (its content then pruned by the homeserver).
    #[serde(default)]
    redacted_because: Option<serde::de::IgnoredAny>,
}

impl<'a> Envelope<'a> {
    /// Reads the envelope of an event's JSON.
    pub fn parse(json: &'a str) -> serde_json::Result<Self> {
        serde_json::from_str(json)
    }

    /// Whether the homeserver redacted the event before it pushed it (its content pruned).
    pub fn redacted(&self) -> bool {
        self.unsigned
            .as_ref()
            .is_some_and(|u| u.redacted_because.is_some())
    }

    /// Event id, room, type and sender, as a dead letter keeps them.
    pub fn fields(&self) -> [&str; 4] {
        [
            self.event_id.as_str(),
            self.room_id.as_str(),
            &self.kind,
            self.sender.as_str(),
        ]
    }
}

/// Who the bridge is, for classifying senders.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The homeserver's name.
    pub server_name: &'a ServerName,
    /// The appservice's user namespace (agents).
    pub agents: &'a NamespaceSet,
    /// The appservice's own user.
    pub sender: &'a UserId,
}

impl Context<'_> {
    /// DAARION entity id and sender type of a Matrix user.
    pub fn classify_sender(&self, user: &UserId) -> (String, SenderType) {
        if self.agents.is_match(user.as_str())
            && let Some(agent) = AgentId::of_user(user, self.server_name)
        {
            return (agent.to_string(), SenderType::Agent);
        }
        if user == self.sender {
            return (user.to_string(), SenderType::Agent);
        }
        if user.server_name() == self.server_name {
            (
                format!("{USER_ID_PREFIX}{}", user.localpart()),
                SenderType::Human,
            )
        } else {
            (user.to_string(), SenderType::Human)
        }
    }
}

/// The outcome of reading one event of a mapped room.
#[derive(Debug)]
pub enum Read {
    /// The event changes these rows.
    Change(Change),
    /// The event is of no interest (another type, another msgtype).
    Ignored,
    /// The event is malformed: dead-letter it.
    Invalid(String),
}

/// Reads one event of a mapped room into the row change it makes.
pub fn read_event(envelope: &Envelope<'_>, room: &MappedRoom, ctx: &Context<'_>) -> Read {
    match envelope.kind.as_ref() {
        "m.room.message" => messages::read_message(envelope, room, ctx),
        "m.room.redaction" => messages::read_redaction(envelope, ctx.server_name),
        "m.room.member" => membership::read_member(envelope, room),
        "m.room.encrypted" => messages::read_encrypted(envelope, room, ctx),
        "m.reaction" => messages::read_reaction(envelope, room),
        "m.room.name"
        | "m.room.topic"
        | "m.room.canonical_alias"
        | "m.room.tombstone"
        | "m.room.encryption"
        | "m.room.pinned_events" => rooms::read_state(envelope, room),
        _ => Read::Ignored,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use ruma::{ServerName, UserId};
    use serde_json::json;

    use super::*;
    use crate::config::NamespaceSet;

    pub fn agents() -> NamespaceSet {
        NamespaceSet::compile(&[ruma::api::appservice::Namespace::new(
            true,
            r"^@agent_.*:example\.org$".to_owned(),
        )])
        .unwrap()
    }

    pub fn room() -> MappedRoom {
        let slug = crate::domain::Slug::parse("general").unwrap();
        MappedRoom {
            id: slug.city_room_id(),
            slug,
            visibility: crate::domain::Visibility::Public,
            encrypted: false,
        }
    }

    pub fn raw(value: serde_json::Value) -> ruma::serde::Raw<ruma::events::AnyTimelineEvent> {
        use ruma::serde::Raw;
        Raw::from_json(serde_json::value::to_raw_value(&value).unwrap())
    }

    pub fn event(kind: &str, sender: &str, content: serde_json::Value) -> serde_json::Value {
        json!({
            "type": kind, "event_id": "$e1", "room_id": "!r:example.org", "sender": sender,
            "origin_server_ts": 1_700_000_000_000_u64, "content": content,
        })
    }

    pub fn read(value: serde_json::Value) -> Read {
        let agents = agents();
        let server = ServerName::parse("example.org").unwrap();
        let sender = UserId::parse("@city-bridge:example.org").unwrap();
        let ctx = Context {
            server_name: &server,
            agents: &agents,
            sender: &sender,
        };
        let raw = raw(value);
        let envelope = Envelope::parse(raw.json().get()).expect("valid envelope");
        read_event(&envelope, &room(), &ctx)
    }

    #[test]
    fn envelope_accepts_both_room_id_shapes_and_rejects_garbage() {
        for room_id in ["!abc:example.org", "!abcdefOpaqueV12"] {
            let mut e = event("m.room.message", "@a:example.org", json!({}));
            e["room_id"] = json!(room_id);
            let raw = raw(e);
            assert_eq!(
                Envelope::parse(raw.json().get()).unwrap().room_id.as_str(),
                room_id
            );
        }
        let raw = raw(json!({"type": "m.room.message", "event_id": 5}));
        assert!(Envelope::parse(raw.json().get()).is_err());
    }

    #[test]
    fn senders_are_classified() {
        let agents = agents();
        let server = ServerName::parse("example.org").unwrap();
        let bot = UserId::parse("@city-bridge:example.org").unwrap();
        let ctx = Context {
            server_name: &server,
            agents: &agents,
            sender: &bot,
        };
        let classify = |u: &str| ctx.classify_sender(&UserId::parse(u).unwrap());
        assert_eq!(
            classify("@agent_sofia:example.org"),
            ("agent:sofia".into(), SenderType::Agent)
        );
        assert_eq!(
            classify("@alice:example.org"),
            ("user:alice".into(), SenderType::Human)
        );
        assert_eq!(
            classify("@agent_x:other.org"),
            ("@agent_x:other.org".into(), SenderType::Human)
        );
        assert_eq!(classify("@city-bridge:example.org").1, SenderType::Agent);
    }

    #[test]
    fn nul_is_stripped() {
        assert_eq!(pg_text("a\0b"), "ab");
        assert!(matches!(pg_text("ab"), Cow::Borrowed(_)));
    }
}
