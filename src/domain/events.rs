//! The platform's events: every bus subject the bridge publishes or reads, and the payloads
//! of the events other services consume. One place, so that the outbox, presence and
//! messaging name them alike (the presence payloads, which carry presence's own types, are
//! in `presence/wire.rs` and take their subjects from here).

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Bus subjects.
pub mod subjects {
    /// A message was indexed (from Matrix or the API).
    pub const MESSAGE_CREATED: &str = "messaging.message.created";
    /// A message was edited.
    pub const MESSAGE_UPDATED: &str = "messaging.message.updated";
    /// A message was redacted.
    pub const MESSAGE_DELETED: &str = "messaging.message.deleted";
    /// A reaction was counted or uncounted.
    pub const REACTION_UPDATED: &str = "messaging.reaction.updated";
    /// A channel was created through the API.
    pub const CHANNEL_CREATED: &str = "messaging.channel.created";
    /// A member was invited through the API.
    pub const MEMBER_INVITED: &str = "messaging.member.invited";
    /// A member left a channel through the API.
    pub const MEMBER_LEFT: &str = "messaging.member.left";
    /// A member was removed (kicked or banned) through the API.
    pub const MEMBER_REMOVED: &str = "messaging.member.removed";
    /// A channel's pinned messages changed (in the API or in Matrix).
    pub const PINS_UPDATED: &str = "messaging.pins.updated";
    /// Every messaging event (the channel feeds read them).
    pub const MESSAGING: &str = "messaging.>";
    /// A city room was created.
    pub const ROOM_CREATED: &str = "city.room.created";
    /// A city room was archived.
    pub const ROOM_ARCHIVED: &str = "city.room.archived";
    /// What the JetStream stream of the outbox keeps.
    pub const STREAM: &[&str] = &[MESSAGING, "city.room.>"];
    /// Who types in a channel: `city.presence.typing.<channel>` (core NATS, not stored).
    pub const TYPING_PREFIX: &str = "city.presence.typing.";
    /// A person's read position in a channel moved: `city.read.<channel>` (core NATS, not
    /// stored: every instance's per-user feeds recount).
    pub const READ_PREFIX: &str = "city.read.";
    /// A local person's membership of a channel changed, as indexed:
    /// `city.member.<channel>` (core NATS, not stored: the per-user feeds).
    pub const MEMBER_PREFIX: &str = "city.member.";
    /// Every room's presence: `city.presence.room.<slug>` (slugs are NATS-safe tokens).
    pub const ROOM_PRESENCE: &str = "city.presence.room.>";
    /// What a room's presence subject starts with.
    pub const ROOM_PRESENCE_PREFIX: &str = "city.presence.room.";
    /// What a user's presence subject starts with.
    pub const USER_PRESENCE_PREFIX: &str = "city.presence.user.";
}

/// `messaging.message.created`: the seed's fields, plus the whole message (`V`, as the
/// history API shows it) for live views.
#[derive(Serialize)]
pub struct MessageCreated<'a, V, M> {
    /// `message.created`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The channel.
    pub channel_id: &'a str,
    /// The message.
    pub matrix_event_id: &'a str,
    /// `user:<name>`, `agent:<name>` or a remote Matrix id.
    pub sender_id: &'a str,
    /// `human` or `agent`.
    pub sender_type: &'a str,
    /// The preview.
    pub preview: &'a str,
    /// When the sender's server received it.
    pub created_at: &'a DateTime<Utc>,
    /// Its msgtype (null in encrypted channels).
    pub msgtype: Option<&'a str>,
    /// The message it replies to.
    pub reply_to: Option<&'a str>,
    /// Its thread's root.
    pub thread_root: Option<&'a str>,
    /// The file of a media message (`M`: mxc, mimetype, size, name, width, height,
    /// duration); null for text.
    pub media: Option<&'a M>,
    /// The message.
    pub message: &'a V,
}

/// `messaging.message.updated|deleted` and `messaging.reaction.updated`: what changed, and
/// the message (`V`) as it is now.
#[derive(Serialize)]
pub struct MessageChanged<'a, V> {
    /// `message.updated`, `message.deleted` or `reaction.updated`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The channel.
    pub channel_id: &'a str,
    /// The message.
    pub matrix_event_id: &'a str,
    /// What changed.
    #[serde(flatten)]
    pub detail: ChangeDetail<'a>,
    /// The message as it is now.
    pub message: &'a V,
}

/// What a [`MessageChanged`] says changed.
#[derive(Serialize)]
#[serde(untagged)]
pub enum ChangeDetail<'a> {
    /// The new preview, and when.
    Updated {
        /// The new preview.
        preview: &'a str,
        /// When it was edited.
        edited_at: Option<&'a DateTime<Utc>>,
    },
    /// Nothing more to say.
    Deleted {},
    /// The key, and how many reacted with it now.
    Reaction {
        /// The reaction key.
        key: Option<&'a str>,
        /// How many people reacted with it.
        count: i64,
    },
}

/// A message event whose view would make it too large for the bus: what it is about, and
/// `truncated: true` (`message` is null; the consumer reads it from the API).
#[derive(Serialize)]
pub struct MessageTruncated<'a> {
    /// The event's type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The channel.
    pub channel_id: &'a str,
    /// The message.
    pub matrix_event_id: &'a str,
    /// Always null.
    pub message: Option<()>,
    /// Always true.
    pub truncated: bool,
}

/// `city.room.created`.
#[derive(Serialize)]
pub struct RoomCreated<'a> {
    /// `room_city_<slug>`.
    pub room_id: &'a str,
    /// The slug.
    pub slug: &'a str,
    /// Its name.
    pub name: &'a str,
    /// `public` or `private`.
    pub visibility: &'a str,
    /// The microDAO it belongs to.
    pub microdao_id: Option<&'a str>,
}

/// `city.room.archived`.
#[derive(Serialize)]
pub struct RoomArchived<'a> {
    /// `room_city_<slug>`.
    pub room_id: &'a str,
    /// The slug.
    pub slug: &'a str,
}

/// Who types in a channel now (on `city.presence.typing.<channel>`).
#[derive(Serialize)]
pub struct Typing<'a> {
    /// `typing`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The channel.
    pub channel_id: &'a str,
    /// Who types.
    pub user_ids: &'a [String],
}

/// A person's read position moved (on `city.read.<channel>`).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ReadMoved {
    /// `read.updated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The channel.
    pub channel_id: String,
    /// The reader's Matrix id.
    pub user_id: String,
    /// The event read up to.
    pub event_id: String,
}

/// A local person's membership of a channel, as the index now has it (on
/// `city.member.<channel>`).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct MemberChanged {
    /// `member.changed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The channel.
    pub channel_id: String,
    /// The member's Matrix id.
    pub user_id: String,
    /// `join`, `invite`, `leave`, `ban` or `knock`.
    pub membership: String,
}
