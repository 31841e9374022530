//! The presence wire: the JSON payloads published on the presence subjects (named in
//! `domain::events`) and sent to WebSocket clients, and the subject of each room and user.

use ruma::{ServerName, UserId};
use serde::{Deserialize, Serialize};

use super::PresenceStatus;

use crate::domain::events::subjects::USER_PRESENCE_PREFIX;
pub use crate::domain::events::subjects::{
    ROOM_PRESENCE as ROOM_SUBJECTS, ROOM_PRESENCE_PREFIX as ROOM_SUBJECT_PREFIX,
};

/// `city.presence.room.<slug>`.
pub fn room_subject(slug: &str) -> String {
    format!("{ROOM_SUBJECT_PREFIX}{slug}")
}

/// `city.presence.user.<token>`: the localpart for a user of this homeserver whose
/// localpart is a plain token (`[a-z0-9_=-]+`), as the platform names its accounts;
/// otherwise `~` and the full user id in unpadded base64url, so that a remote
/// `@alice:other.org` never publishes as the local `@alice`, and no `.`, `*`, `>` or space
/// in a localpart makes extra or wildcard tokens. A plain token never starts with `~`.
pub fn user_subject(user: &str, server: &ServerName) -> String {
    let plain = UserId::parse(user).ok().and_then(|u| {
        let local = u.localpart();
        (u.server_name() == server
            && !local.is_empty()
            && local
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_=-".contains(&b)))
        .then(|| local.to_owned())
    });
    match plain {
        Some(local) => format!("{USER_PRESENCE_PREFIX}{local}"),
        None => format!("{USER_PRESENCE_PREFIX}~{}", base64url(user.as_bytes())),
    }
}

/// Unpadded base64url (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// The published state of one city room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "room.presence")]
pub struct RoomPresence {
    /// Slug of the city room.
    pub room_slug: String,
    /// Matrix room the city room is mapped to.
    pub matrix_room_id: String,
    /// Canonical alias, when one is known.
    pub matrix_room_alias: Option<String>,
    /// Joined members who are online, the appservice sender excluded.
    pub online_count: usize,
    /// Number of users currently typing.
    pub typing_count: usize,
    /// Users currently typing, in the order the homeserver listed them.
    pub typing_users: Vec<String>,
    /// Timestamp of the latest event seen in the room, in milliseconds since the Unix epoch.
    pub last_event_ts: Option<u64>,
}

impl RoomPresence {
    /// The short form sent in WebSocket snapshots, where clients only need the counts.
    pub fn summary(&self) -> RoomSummary {
        RoomSummary {
            room_slug: self.room_slug.clone(),
            online_count: self.online_count,
            typing_count: self.typing_count,
        }
    }
}

/// One entry of a WebSocket snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomSummary {
    /// Slug of the city room.
    pub room_slug: String,
    /// Joined members who are online, the appservice sender excluded.
    pub online_count: usize,
    /// Number of users currently typing.
    pub typing_count: usize,
}

/// A user's status changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename = "user.presence")]
pub struct UserPresenceEvent {
    /// Full Matrix user id.
    pub matrix_user_id: String,
    /// The new status.
    pub status: PresenceStatus,
    /// Last activity, in milliseconds since the Unix epoch.
    pub last_active_ts: u64,
}

/// `{"type":"snapshot","rooms":[…]}`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    rooms: &'a [RoomSummary],
}

impl<'a> Snapshot<'a> {
    /// A snapshot of `rooms`.
    pub fn new(rooms: &'a [RoomSummary]) -> Self {
        Self {
            kind: "snapshot",
            rooms,
        }
    }

    /// As sent.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a snapshot serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_subjects_are_unambiguous_and_nats_safe() {
        let server = ServerName::parse("city.org").unwrap();
        assert_eq!(
            user_subject("@alice:city.org", &server),
            "city.presence.user.alice"
        );
        assert_eq!(
            user_subject("@agent_sofia:city.org", &server),
            "city.presence.user.agent_sofia"
        );
        let remote = user_subject("@alice:other.org", &server);
        assert_ne!(remote, "city.presence.user.alice");
        assert_eq!(remote, "city.presence.user.~QGFsaWNlOm90aGVyLm9yZw");
        for odd in [
            "@a.b:city.org",
            "@a*:city.org",
            "@a>:city.org",
            "@x/y:city.org",
        ] {
            let subject = user_subject(odd, &server);
            let token = subject.strip_prefix("city.presence.user.").unwrap();
            assert!(token.starts_with('~'), "{subject}");
            assert!(
                token[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{subject}"
            );
        }
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
