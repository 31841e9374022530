//! The live feed of each channel for `/ws/messaging/{channel_id}`: one shared queue per
//! channel with someone watching, fed in stream order from the bus (`outbox::feed_channels`).
//!
//! And the memberships those feeds rest on: a member's socket on a private channel is
//! watched ([`ChannelHub::watch_membership`]), and [`ChannelHub::check_memberships`] ends
//! it once the index says the member left, was kicked or banned. One batched query per
//! instance every [`MEMBERSHIP_CHECK`] (jittered), whatever the number of sockets:
//! membership events are not on the bus, and every instance, API-only ones too, reads the
//! same index.

use ruma::events::room::member::MembershipState;
use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use ruma::{RoomId, UserId};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The frame that tells a client to read its channel again from the API.
pub const RESYNC: &str = r#"{"type":"resync"}"#;

/// How far a client may fall behind its channel before it is told to resync.
const CHANNEL_CAPACITY: usize = 1024;

/// How often, on average, the watched memberships are read back from the index: a member
/// dropped from a private channel loses its feed this long after the event is indexed, at
/// most (each wait is drawn between 0.75× and 1.25× of it, so instances spread their reads).
pub const MEMBERSHIP_CHECK: Duration = Duration::from_secs(2);

/// (Matrix room, user) of a watched membership.
type MemberKey = (String, String);

/// The watched memberships of this instance: each (room, user) → its sockets.
#[derive(Debug, Default)]
struct Members {
    next: u64,
    sockets: HashMap<MemberKey, HashMap<u64, CancellationToken>>,
}

/// Channel → its live queue (only while someone listens); and the memberships watched.
#[derive(Debug, Default)]
pub struct ChannelHub {
    channels: Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>,
    members: Arc<Mutex<Members>>,
}

/// One socket's membership of a private channel, watched while the socket lives: it
/// ends when [`ChannelHub::end_membership`] (or [`ChannelHub::check_memberships`]) says
/// so, and is forgotten when dropped.
#[derive(Debug)]
struct Membership {
    key: MemberKey,
    id: u64,
    ended: CancellationToken,
    members: Arc<Mutex<Members>>,
}

impl Membership {
    /// Resolves once the membership has ended.
    async fn ended(&self) {
        self.ended.cancelled().await;
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut members = self.members.lock().expect("not poisoned");
        if let Some(sockets) = members.sockets.get_mut(&self.key) {
            sockets.remove(&self.id);
            if sockets.is_empty() {
                members.sockets.remove(&self.key);
            }
        }
    }
}

impl ChannelHub {
    /// The live frames of `channel` from now on.
    pub fn subscribe(&self, channel: &str) -> broadcast::Receiver<Utf8Bytes> {
        let mut channels = self.channels.lock().expect("not poisoned");
        channels
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Whether anyone listens to any channel. Forgets the channels whose last listener
    /// left (a queue is only ever dropped here or by a failed send).
    pub fn any_watched(&self) -> bool {
        let mut channels = self.channels.lock().expect("not poisoned");
        channels.retain(|_, tx| tx.receiver_count() > 0);
        !channels.is_empty()
    }

    /// Whether anyone listens to `channel`.
    pub fn is_watched(&self, channel: &str) -> bool {
        let channels = self.channels.lock().expect("not poisoned");
        channels
            .get(channel)
            .is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Sends a frame to the listeners of `channel`; forgets channels nobody listens to.
    pub fn send(&self, channel: &str, frame: Utf8Bytes) {
        let mut channels = self.channels.lock().expect("not poisoned");
        if let Some(tx) = channels.get(channel)
            && tx.send(frame).is_err()
        {
            channels.remove(channel);
        }
    }

    /// Tells every listener of this instance to read its channel again
    /// (`{"type":"resync"}`): frames were lost before they reached the hub.
    pub fn resync_all(&self) {
        let channels = self.channels.lock().expect("not poisoned");
        for tx in channels.values() {
            let _ = tx.send(Utf8Bytes::from_static(RESYNC));
        }
    }

    /// Watches `user`'s membership of the Matrix room `room` for one socket: the future
    /// resolves once the membership has ended; dropping it ends the watch.
    pub fn watch_membership(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let membership = self.watch(room, user);
        Box::pin(async move { membership.ended().await })
    }

    fn watch(&self, room: &RoomId, user: &UserId) -> Membership {
        let key = (room.as_str().to_owned(), user.as_str().to_owned());
        let ended = CancellationToken::new();
        let mut members = self.members.lock().expect("not poisoned");
        members.next += 1;
        let id = members.next;
        members
            .sockets
            .entry(key.clone())
            .or_default()
            .insert(id, ended.clone());
        Membership {
            key,
            id,
            ended,
            members: Arc::clone(&self.members),
        }
    }

    /// The (Matrix room, user) pairs watched on this instance, each once.
    fn watched_members(&self) -> Vec<MemberKey> {
        let members = self.members.lock().expect("not poisoned");
        members.sockets.keys().cloned().collect()
    }

    /// Ends `user`'s membership of `room` for every socket watching it; how many.
    pub fn end_membership(&self, room: &str, user: &str) -> usize {
        let mut members = self.members.lock().expect("not poisoned");
        let sockets = members
            .sockets
            .remove(&(room.to_owned(), user.to_owned()))
            .unwrap_or_default();
        for ended in sockets.values() {
            ended.cancel();
        }
        sockets.len()
    }

    /// Reads the watched memberships back from the index every [`MEMBERSHIP_CHECK`]
    /// (jittered) and ends those that are no longer `join` (left, kicked, banned), once the
    /// homeserver agrees: a socket admitted on the homeserver's word while the index was
    /// behind is not cut off by an older row (that row is not acted on again until it
    /// changes). When the homeserver cannot answer, the index's word stands. Nothing is
    /// read while no member's socket is open. Runs on every instance until the bridge
    /// stops, reading `store` and asking `homeserver`.
    pub async fn check_memberships(
        hub: std::sync::Arc<Self>,
        store: crate::store::Store,
        homeserver: crate::matrix::Homeserver,
    ) {
        // Rows the homeserver contradicted: (room, user) → the row's event.
        let mut contradicted: HashMap<MemberKey, String> = HashMap::new();
        loop {
            tokio::time::sleep(MEMBERSHIP_CHECK.mul_f64(rand::random_range(0.75..1.25))).await;
            let watched = hub.watched_members();
            contradicted.retain(|key, _| watched.contains(key));
            if watched.is_empty() {
                continue;
            }
            let ended = match store.not_joined(&watched).await {
                Ok(ended) => ended,
                Err(error) => {
                    warn!(%error, "cannot read the memberships of watched channels");
                    continue;
                }
            };
            for (room, user, event_id) in ended {
                let key = (room, user);
                if contradicted.get(&key) == Some(&event_id) {
                    continue;
                }
                if still_joined(&homeserver, &key.0, &key.1).await {
                    contradicted.insert(key, event_id);
                    continue;
                }
                let closed = hub.end_membership(&key.0, &key.1);
                info!(room = %key.0, user = %key.1, closed, "membership ended: channel sockets closed");
            }
        }
    }
}

/// Whether the homeserver says `user` is joined to `room` (false when it cannot say).
async fn still_joined(homeserver: &crate::matrix::Homeserver, room: &str, user: &str) -> bool {
    let (Ok(room), Ok(user)) = (RoomId::parse(room), UserId::parse(user)) else {
        return false;
    };
    match homeserver.membership(&room, &user).await {
        Ok(membership) => membership == Some(MembershipState::Join),
        Err(error) => {
            warn!(%error, "cannot confirm a membership with the homeserver; the index's word stands");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_reach_listeners_of_their_channel_only() {
        let hub = ChannelHub::default();
        assert!(!hub.is_watched("a"));
        let mut a = hub.subscribe("a");
        let mut b = hub.subscribe("b");
        assert!(hub.is_watched("a"));
        hub.send("a", Utf8Bytes::from_static("one"));
        assert_eq!(a.recv().await.unwrap().as_str(), "one");
        assert!(b.try_recv().is_err());
        drop(a);
        hub.send("a", Utf8Bytes::from_static("two"));
        assert!(!hub.is_watched("a"), "forgotten once nobody listens");
    }

    #[tokio::test]
    async fn an_ended_membership_ends_its_sockets_only() {
        let hub = ChannelHub::default();
        let room: &RoomId = "!room:example.org".try_into().unwrap();
        let (alice, bob): (&UserId, &UserId) = (
            "@alice:example.org".try_into().unwrap(),
            "@bob:example.org".try_into().unwrap(),
        );
        let first = hub.watch(room, alice);
        let second = hub.watch(room, alice);
        let other = hub.watch(room, bob);
        assert_eq!(hub.watched_members().len(), 2, "each pair once");
        assert_eq!(hub.end_membership(room.as_str(), alice.as_str()), 2);
        first.ended().await;
        second.ended().await;
        assert!(!other.ended.is_cancelled());
        assert_eq!(
            hub.watched_members(),
            vec![(room.as_str().to_owned(), bob.as_str().to_owned())]
        );
        drop(other);
        assert!(hub.watched_members().is_empty(), "forgotten when dropped");
        drop((first, second));
        assert_eq!(hub.end_membership(room.as_str(), alice.as_str()), 0);
    }

    #[test]
    fn any_channel_is_watched_while_a_listener_stays() {
        let hub = ChannelHub::default();
        assert!(!hub.any_watched());
        let listener = hub.subscribe("a");
        assert!(hub.any_watched());
        drop(listener);
        assert!(!hub.any_watched(), "the last listener left");
        assert!(
            hub.channels.lock().unwrap().is_empty(),
            "and its queue is gone"
        );
    }
}
