//! Read receipts and typing of people: what moves a read position (the API's own receipts,
//! and the `m.read` receipts Synapse pushes from any client), what the per-user feeds are
//! told of it, and typing sent as the user, throttled.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use bytes::Bytes;
use ruma::{
    OwnedEventId, OwnedUserId, ServerName, api::appservice::event::push_events::v1::EphemeralData,
    events::receipt::ReceiptType, serde::Raw,
};

use crate::{
    bus::Bus,
    domain::{
        CityRoomId,
        events::{
            MemberChanged, ReadMoved,
            subjects::{MEMBER_PREFIX, READ_PREFIX},
        },
    },
    rooms::RoomDirectory,
    store::Store,
};

/// How long Synapse shows a person typing after the page said so, unless it says again.
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(10);

/// The least time between two "typing" the bridge sends for one person in one channel:
/// a page says it at every key press, Synapse needs it once per [`TYPING_TIMEOUT`].
pub const TYPING_RESEND: Duration = Duration::from_secs(4);

/// A public read receipt Synapse pushed: `user` (a local person) has read `channel` up to
/// `event_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The channel.
    pub channel: CityRoomId,
    /// The reader.
    pub user: OwnedUserId,
    /// The event read up to.
    pub event_id: OwnedEventId,
}

/// The `m.read` receipts of local people in city rooms among pushed ephemeral data (the
/// bridge's own user and remote users have no read positions here).
pub fn receipts(
    data: &[Raw<EphemeralData>],
    directory: &RoomDirectory,
    server_name: &ServerName,
) -> Vec<Receipt> {
    let mut out = Vec::new();
    for raw in data {
        // Most ephemeral data is presence and typing: only receipts are read whole.
        if raw.get_field::<String>("type").ok().flatten().as_deref() != Some("m.receipt") {
            continue;
        }
        let Ok(EphemeralData::Receipt(event)) = raw.deserialize() else {
            continue;
        };
        let Some(room) = directory.get(&event.room_id) else {
            continue;
        };
        for (event_id, receipts) in event.content.iter() {
            let Some(readers) = receipts.get(&ReceiptType::Read) else {
                continue;
            };
            for user in readers.keys() {
                if user.server_name() == server_name {
                    out.push(Receipt {
                        channel: room.id.clone(),
                        user: user.clone(),
                        event_id: event_id.clone(),
                    });
                }
            }
        }
    }
    out
}

/// How long pushed receipts wait for the index to apply what was pushed before them:
/// Synapse pushes a message before any receipt of it, but the index follows the journal a
/// moment later.
pub const RECEIPT_WAITS_FOR_INDEX: Duration = Duration::from_secs(2);

/// Moves the reader's position to a pushed receipt and tells the feeds (once the index has
/// what was pushed before it: see [`RECEIPT_WAITS_FOR_INDEX`]). A receipt of an event
/// that is no indexed message (a membership, a state event) counts as reading up to the
/// channel's last message.
pub async fn record_receipt(store: &Store, bus: &Bus, receipt: &Receipt) {
    let event = receipt.event_id.as_str();
    let user = receipt.user.as_str();
    match store.set_read_position(&receipt.channel, user, event).await {
        Ok(true) => read_moved(bus, &receipt.channel, user, event),
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, "a read receipt is not recorded"),
    }
}

/// Tells every instance's per-user feeds that `user` read `channel` up to `event_id`.
pub fn read_moved(bus: &Bus, channel: &CityRoomId, user: &str, event_id: &str) {
    publish(
        bus,
        format!("{READ_PREFIX}{channel}"),
        &ReadMoved {
            kind: "read.updated".to_owned(),
            channel_id: channel.to_string(),
            user_id: user.to_owned(),
            event_id: event_id.to_owned(),
        },
    );
}

/// Tells every instance's per-user feeds that a local person's membership of `channel`
/// is now `membership`.
pub fn member_changed(
    bus: &Bus,
    channel: &CityRoomId,
    user: &ruma::UserId,
    membership: &ruma::events::room::member::MembershipState,
) {
    publish(
        bus,
        format!("{MEMBER_PREFIX}{channel}"),
        &MemberChanged {
            kind: "member.changed".to_owned(),
            channel_id: channel.to_string(),
            user_id: user.to_string(),
            membership: membership.as_str().to_owned(),
        },
    );
}

/// Follows the index: every membership change of the homeserver's people goes to the
/// per-user feeds of every instance, until the indexer is gone.
pub async fn follow_members(mut commits: crate::ingest::Subscription, bus: Bus) {
    while let Some(committed) = commits.recv().await {
        for (channel, user, membership) in &committed.local_members {
            member_changed(&bus, channel, user, membership);
        }
    }
}

fn publish(bus: &Bus, subject: String, payload: &impl serde::Serialize) {
    bus.publish(
        subject,
        Bytes::from(serde_json::to_vec(payload).expect("payloads serialize")),
    );
}

/// When each person last had "typing" sent in each channel, so that a page saying it at
/// every key press sends it to Synapse once every [`TYPING_RESEND`].
#[derive(Debug, Default)]
pub struct TypingThrottle {
    sent: Mutex<HashMap<(String, String), Instant>>,
}

impl TypingThrottle {
    /// Whether `typing` from `user` in `channel` at `now` goes to Synapse: "stopped"
    /// always, "typing" unless it went less than [`TYPING_RESEND`] ago.
    pub fn admit(&self, user: &str, channel: &str, typing: bool, now: Instant) -> bool {
        let mut sent = self.sent.lock().expect("not poisoned");
        let key = (user.to_owned(), channel.to_owned());
        if !typing {
            sent.remove(&key);
            return true;
        }
        if sent
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < TYPING_RESEND)
        {
            return false;
        }
        if sent.len() >= 10_000 {
            // Forget what Synapse has timed out anyway: the map stays as large as the
            // number of people typing now.
            sent.retain(|_, at| now.saturating_duration_since(*at) < TYPING_TIMEOUT);
        }
        sent.insert(key, now);
        true
    }

    /// Forgets that "typing" of `user` in `channel` went out (it did not reach Synapse):
    /// the next one is sent.
    pub fn forget(&self, user: &str, channel: &str) {
        let mut sent = self.sent.lock().expect("not poisoned");
        sent.remove(&(user.to_owned(), channel.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_is_sent_once_per_resend_interval_and_stopping_always() {
        let throttle = TypingThrottle::default();
        let t0 = Instant::now();
        assert!(throttle.admit("@a:x", "c", true, t0));
        assert!(!throttle.admit("@a:x", "c", true, t0 + Duration::from_secs(1)));
        assert!(throttle.admit("@b:x", "c", true, t0), "per person");
        assert!(throttle.admit("@a:x", "d", true, t0), "per channel");
        assert!(throttle.admit("@a:x", "c", true, t0 + TYPING_RESEND));
        assert!(throttle.admit("@a:x", "c", false, t0 + TYPING_RESEND));
        assert!(
            throttle.admit("@a:x", "c", true, t0 + TYPING_RESEND),
            "typing again after stopping goes at once"
        );
    }

    #[test]
    fn only_local_read_receipts_of_city_rooms_are_read() {
        let directory = RoomDirectory::default();
        let room: ruma::OwnedRoomId = "!r:example.org".try_into().unwrap();
        directory.insert(
            room.clone(),
            crate::store::model::MappedRoom {
                id: CityRoomId::parse("room_city_general").unwrap(),
                slug: crate::domain::Slug::parse("general").unwrap(),
                visibility: crate::domain::Visibility::Public,
                encrypted: false,
            },
        );
        let data: Vec<Raw<EphemeralData>> = serde_json::from_value(serde_json::json!([
            {"type": "m.typing", "room_id": "!r:example.org", "content": {"user_ids": []}},
            {"type": "m.receipt", "room_id": "!r:example.org", "content": {
                "$e1": {"m.read": {"@alice:example.org": {"ts": 1},
                                   "@bob:elsewhere.org": {"ts": 1}},
                        "m.read.private": {"@carol:example.org": {"ts": 1}}}}},
            {"type": "m.receipt", "room_id": "!other:example.org", "content": {
                "$e2": {"m.read": {"@alice:example.org": {"ts": 1}}}}}
        ]))
        .unwrap();
        let server: &ServerName = "example.org".try_into().unwrap();
        let found = receipts(&data, &directory, server);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].user.as_str(), "@alice:example.org");
        assert_eq!(found[0].event_id.as_str(), "$e1");
        assert_eq!(found[0].channel.as_str(), "room_city_general");
    }

    #[test]
    fn a_typing_that_did_not_reach_synapse_holds_no_throttle() {
        let throttle = TypingThrottle::default();
        let t0 = Instant::now();
        assert!(throttle.admit("@a:x", "c", true, t0));
        throttle.forget("@a:x", "c");
        assert!(throttle.admit("@a:x", "c", true, t0 + Duration::from_secs(1)));
    }
}
