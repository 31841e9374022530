//! The store's own model: what the pipeline hands it to write (row changes, dead letters,
//! the events they came from) and the rooms it maps. Plain data, shared with `ingest`, which
//! reads events into it, so that the store imports nothing above it.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use ruma::{
    OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId,
    events::{AnyTimelineEvent, room::member::MembershipState},
    serde::Raw,
};

use crate::domain::{CityRoomId, Slug, Visibility};

/// Longest preview kept, in characters.
pub const PREVIEW_CHARS: usize = 500;

/// The city room a Matrix room maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedRoom {
    /// `city_rooms.id`.
    pub id: CityRoomId,
    /// `city_rooms.slug`.
    pub slug: Slug,
    /// Who may see it.
    pub visibility: Visibility,
    /// Encrypted: its events are indexed as metadata only.
    pub encrypted: bool,
}

/// One timeline event to apply: its JSON as received, borrowed from the request body or
/// journal row it came in, and the transaction that brought it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The transaction (or batch) id, kept with its dead letters.
    pub txn_id: &'a str,
    /// The event, as received.
    pub json: &'a str,
}

impl<'a> Incoming<'a> {
    /// The events of `raws`, all from `txn_id`.
    pub fn of(txn_id: &'a str, raws: &'a [Raw<AnyTimelineEvent>]) -> Vec<Self> {
        raws.iter()
            .map(|raw| Self {
                txn_id,
                json: raw.json().get(),
            })
            .collect()
    }
}

/// One row change derived from one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new message in the index.
    Message(NewMessage),
    /// An edit of an indexed message.
    Edit(MessageEdit),
    /// A redaction of an indexed message or reaction.
    Redaction(Redaction),
    /// A reaction to a message.
    Reaction(NewReaction),
    /// A membership change.
    Membership(MembershipChange),
    /// A change of the room's name, topic, alias or a tombstone.
    RoomState(RoomStateChange),
}

/// `human` or `agent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderType {
    /// A person.
    Human,
    /// An AI agent (or the bridge itself).
    Agent,
}

impl SenderType {
    /// The value stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::Agent => "agent",
        }
    }
}

/// A message for the index.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// `city_rooms.id`.
    pub channel_id: CityRoomId,
    /// The Matrix room.
    pub matrix_room_id: OwnedRoomId,
    /// The Matrix event.
    pub event_id: OwnedEventId,
    /// DAARION entity id of the sender.
    pub sender_id: String,
    /// Matrix id of the sender.
    pub sender_matrix_id: OwnedUserId,
    /// Human or agent.
    pub sender_type: SenderType,
    /// `m.text`, `m.notice`, `m.emote`, `m.image`, `m.video`, `m.audio` or `m.file`;
    /// `None` in an encrypted room (metadata only).
    pub msgtype: Option<&'static str>,
    /// The body, cut to [`PREVIEW_CHARS`] (a file's caption, else its name); empty in an
    /// encrypted room.
    pub preview: String,
    /// The file of a media message (boxed: most messages are text).
    pub media: Option<Box<Media>>,
    /// `origin_server_ts`.
    pub created_at: DateTime<Utc>,
    /// The message this one replies to (`m.in_reply_to`).
    pub reply_to: Option<OwnedEventId>,
    /// The thread root (`rel_type: m.thread`).
    pub thread_root: Option<OwnedEventId>,
    /// The users its `m.mentions` names.
    pub mentions: Vec<OwnedUserId>,
}

/// The file a media message carries, as the index keeps it (and the API shows it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Media {
    /// `mxc://<server>/<media id>`.
    pub mxc: String,
    /// The type the event declares (`info.mimetype`).
    pub mimetype: Option<String>,
    /// Bytes (`info.size`).
    pub size: Option<i64>,
    /// The file name (`filename`, else the body).
    pub name: Option<String>,
    /// Pixels (`info.w`), images and videos.
    pub width: Option<i64>,
    /// Pixels (`info.h`), images and videos.
    pub height: Option<i64>,
    /// Milliseconds (`info.duration`), audio and video.
    pub duration: Option<i64>,
}

/// An `m.annotation` (reaction) to a message.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReaction {
    /// `city_rooms.id`.
    pub channel_id: CityRoomId,
    /// The Matrix room.
    pub matrix_room_id: OwnedRoomId,
    /// The reaction event (redacting it removes the reaction).
    pub event_id: OwnedEventId,
    /// The message reacted to.
    pub target: OwnedEventId,
    /// The key, usually an emoji.
    pub key: String,
    /// Who reacted.
    pub sender_matrix_id: OwnedUserId,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An `m.replace` edit of an indexed message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageEdit {
    /// The edited message's event id.
    pub target: OwnedEventId,
    /// The room of the edit: only a message of the same room is edited.
    pub matrix_room_id: OwnedRoomId,
    /// Who edited: only the original sender's edits apply.
    pub sender_matrix_id: OwnedUserId,
    /// The new preview.
    pub preview: String,
    /// When.
    pub edited_at: DateTime<Utc>,
}

/// A redaction of an indexed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Redaction {
    /// The redacted event's id.
    pub target: OwnedEventId,
    /// The room of the redaction: only a message of the same room is redacted.
    pub matrix_room_id: OwnedRoomId,
    /// Who redacted.
    pub sender_matrix_id: OwnedUserId,
    /// Whether the redactor is a user of this homeserver. Synapse accepts a remote
    /// user's redaction of anyone's event into the room and only checks it when serving
    /// the event; the index takes a redaction from the message's own sender or from a
    /// local user (whose power Synapse did check).
    pub sender_is_local: bool,
    /// When.
    pub redacted_at: DateTime<Utc>,
}

/// The membership of one user in one room, as of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    /// The Matrix room.
    pub matrix_room_id: OwnedRoomId,
    /// `city_rooms.id`.
    pub room_id: CityRoomId,
    /// The member (the event's `state_key`).
    pub user_id: OwnedUserId,
    /// `join`, `leave`, `invite`, `ban` or `knock`.
    pub membership: MembershipState,
    /// The member's display name in the room.
    pub display_name: Option<String>,
    /// The event.
    pub event_id: OwnedEventId,
    /// Its `origin_server_ts`.
    pub event_ts: i64,
}

/// Which field of the city room a state event sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomStateField {
    /// `m.room.name` → `name` (without [`ROOM_NAME_PREFIX`]).
    Name(String),
    /// `m.room.topic` → `description`.
    Topic(Option<String>),
    /// `m.room.canonical_alias` → `matrix_room_alias`.
    CanonicalAlias(OwnedRoomAliasId),
    /// `m.room.tombstone` → the room was upgraded: `matrix_room_id` moves to the new room.
    Tombstone(OwnedRoomId),
    /// `m.room.encryption` → `encrypted`: from this event on, metadata only. (Encryption
    /// cannot be turned off in Matrix.)
    Encryption,
    /// `m.room.pinned_events` → `pinned_events`: the pinned messages, in pin order, at
    /// most [`MAX_PINS`].
    Pinned(Vec<String>),
}

/// The most pinned events kept of a room.
pub const MAX_PINS: usize = 100;

/// A state change of a mapped room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomStateChange {
    /// `city_rooms.id`.
    pub room_id: CityRoomId,
    /// The Matrix room.
    pub matrix_room_id: OwnedRoomId,
    /// The event type, the key of "latest state" bookkeeping.
    pub event_type: &'static str,
    /// The event.
    pub event_id: OwnedEventId,
    /// Its `origin_server_ts`.
    pub event_ts: i64,
    /// What it sets.
    pub field: RoomStateField,
}

/// An event that could not be applied, kept with the reason.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct DeadLetter {
    /// The transaction it came in.
    pub txn_id: String,
    /// The event id, when it could be read.
    pub event_id: Option<String>,
    /// The room id, when it could be read.
    pub room_id: Option<String>,
    /// The event type, when it could be read.
    pub event_type: Option<String>,
    /// The sender, when it could be read.
    pub sender: Option<String>,
    /// Why it was skipped.
    pub reason: String,
    /// The event as received.
    pub event: String,
}

/// The longest envelope field a dead letter keeps (ids are at most 255 bytes).
const DEAD_LETTER_FIELD: usize = 255;

impl DeadLetter {
    /// A dead letter for `incoming`, with the envelope fields given (event id, room, type,
    /// sender) when the event could be read, else each field that is a string on its own
    /// (an event with a malformed `sender` still names its event id, room and type).
    pub fn new(
        incoming: Incoming<'_>,
        envelope: Option<[&str; 4]>,
        reason: impl Into<String>,
    ) -> Self {
        // Postgres TEXT holds no NUL: a dead letter must always be storable, or the stream
        // would stall on it.
        let text = |s: &str| pg_text(s).into_owned();
        let (event_id, room_id, event_type, sender) = match envelope {
            Some([event_id, room_id, kind, sender]) => (
                Some(text(event_id)),
                Some(text(room_id)),
                Some(text(kind)),
                Some(text(sender)),
            ),
            None => {
                let loose =
                    serde_json::from_str::<LooseEnvelope<'_>>(incoming.json).unwrap_or_default();
                let field = |v: Option<Cow<'_, str>>| {
                    v.map(|v| {
                        let end = (0..=DEAD_LETTER_FIELD.min(v.len()))
                            .rev()
                            .find(|&i| v.is_char_boundary(i))
                            .unwrap_or(0);
                        text(&v[..end])
                    })
                };
                (
                    field(loose.event_id.and_then(Loose::into_str)),
                    field(loose.room_id.and_then(Loose::into_str)),
                    field(loose.kind.and_then(Loose::into_str)),
                    field(loose.sender.and_then(Loose::into_str)),
                )
            }
        };
        Self {
            txn_id: text(incoming.txn_id),
            event_id,
            room_id,
            event_type,
            sender,
            reason: text(&reason.into()),
            event: text(incoming.json),
        }
    }
}

/// The envelope fields of an event that is not a valid one, each read on its own.
#[derive(Default, serde::Deserialize)]
struct LooseEnvelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Loose<'a>>,
    #[serde(borrow)]
    event_id: Option<Loose<'a>>,
    #[serde(borrow)]
    room_id: Option<Loose<'a>>,
    #[serde(borrow)]
    sender: Option<Loose<'a>>,
}

/// A JSON value that is kept when it is a string.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Loose<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Other(serde::de::IgnoredAny),
}

impl<'a> Loose<'a> {
    fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Self::Text(text) => Some(text),
            Self::Other(_) => None,
        }
    }
}

/// Postgres TEXT cannot hold NUL; Matrix strings can.
pub fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', ""))
    } else {
        Cow::Borrowed(s)
    }
}

/// The message index rows a transaction really changed (a replayed event changes none):
/// what the live feeds and the bus announce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// New messages: event id and stream position.
    pub created: Vec<(String, i64)>,
    /// Messages whose preview an edit changed.
    pub updated: Vec<String>,
    /// Messages redacted.
    pub deleted: Vec<String>,
    /// Reactions counted or uncounted: the message and the key.
    pub reactions: Vec<(String, String)>,
    /// Channels whose pinned events changed (their `messaging.pins.updated` is written).
    pub pins: Vec<String>,
}

impl Effects {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.updated.is_empty()
            && self.deleted.is_empty()
            && self.reactions.is_empty()
            && self.pins.is_empty()
    }

    /// Adds what `other` changed.
    pub(crate) fn extend(&mut self, other: Self) {
        self.created.extend(other.created);
        self.updated.extend(other.updated);
        self.deleted.extend(other.deleted);
        self.reactions.extend(other.reactions);
        self.pins.extend(other.pins);
    }
}
