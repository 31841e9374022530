//! The live feed of each person for `/ws/messaging`: one shared queue per person with a
//! socket open on this instance, fed from the bus like the channel feeds (so an API-only
//! instance serves it too): new, edited and deleted messages of a channel (the relay's
//! `messaging.message.*`), read positions moved (`city.read.<channel>`) and local people's
//! memberships as indexed (`city.member.<channel>`). Counts are read back from the index
//! for the people watching here, once per channel for everything that arrived together.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::broadcast;
use tracing::warn;

use super::RESYNC;
use crate::{
    bus::{Bus, BusMessage},
    domain::{
        CityRoomId,
        events::{
            MemberChanged, ReadMoved,
            subjects::{MEMBER_PREFIX, MESSAGING, READ_PREFIX},
        },
    },
    store::{Store, Unread},
};

/// How far a person's socket may fall behind before it is told to resync.
const USER_CAPACITY: usize = 256;

/// The most bus messages taken together before the index is read.
const GATHER: usize = 512;

/// Person (Matrix id) → their live queue, while a socket of theirs is open here.
#[derive(Debug, Default)]
pub struct UserHub {
    users: Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>,
}

impl UserHub {
    /// The live frames of `user` from now on.
    pub fn subscribe(&self, user: &str) -> broadcast::Receiver<Utf8Bytes> {
        let mut users = self.users.lock().expect("not poisoned");
        users
            .entry(user.to_owned())
            .or_insert_with(|| broadcast::channel(USER_CAPACITY).0)
            .subscribe()
    }

    /// The people with a socket open here; forgets those whose last socket closed.
    pub fn watched(&self) -> Vec<String> {
        let mut users = self.users.lock().expect("not poisoned");
        users.retain(|_, tx| tx.receiver_count() > 0);
        users.keys().cloned().collect()
    }

    /// Whether anyone has a socket open here (forgets those whose last socket closed).
    pub fn any_watched(&self) -> bool {
        let mut users = self.users.lock().expect("not poisoned");
        users.retain(|_, tx| tx.receiver_count() > 0);
        !users.is_empty()
    }

    /// Whether `user` has a socket open here.
    pub fn is_watched(&self, user: &str) -> bool {
        let users = self.users.lock().expect("not poisoned");
        users.get(user).is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Sends a frame to `user`'s sockets.
    pub fn send(&self, user: &str, frame: Utf8Bytes) {
        let mut users = self.users.lock().expect("not poisoned");
        if let Some(tx) = users.get(user)
            && tx.send(frame).is_err()
        {
            users.remove(user);
        }
    }

    /// Tells every socket here to read its channel list again: frames were lost.
    pub fn resync_all(&self) {
        let users = self.users.lock().expect("not poisoned");
        for tx in users.values() {
            let _ = tx.send(Utf8Bytes::from_static(RESYNC));
        }
    }
}

/// `unread.updated`: what a person has not read of a channel now.
#[derive(Serialize)]
struct UnreadUpdated<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel_id: &'a str,
    #[serde(flatten)]
    unread: &'a Unread,
}

/// `channel.joined`, `channel.left` (with the membership: `leave` or `ban`) and `invite`.
#[derive(Serialize)]
struct MembershipFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    membership: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

fn frame(payload: &impl Serialize) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(payload).expect("frames serialize"))
}

/// What arrived together: channels whose messages changed (everyone watching recounts),
/// (channel, person) pairs to recount, and membership changes in order.
#[derive(Default)]
struct Gathered {
    channels: BTreeSet<String>,
    people: BTreeMap<String, BTreeSet<String>>,
    members: Vec<MemberChanged>,
    lagged: bool,
}

#[derive(serde::Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<String>,
    channel_id: Option<String>,
}

impl Gathered {
    fn take(&mut self, message: &BusMessage, hub: &UserHub) {
        if message.is_lagged() {
            self.lagged = true;
        } else if message.subject.starts_with(READ_PREFIX) {
            if let Ok(read) = serde_json::from_slice::<ReadMoved>(&message.payload)
                && hub.is_watched(&read.user_id)
            {
                self.people
                    .entry(read.channel_id)
                    .or_default()
                    .insert(read.user_id);
            }
        } else if message.subject.starts_with(MEMBER_PREFIX) {
            if let Ok(member) = serde_json::from_slice::<MemberChanged>(&message.payload)
                && hub.is_watched(&member.user_id)
            {
                self.members.push(member);
            }
        } else if let Ok(Head {
            kind: Some(kind),
            channel_id: Some(channel),
        }) = serde_json::from_slice::<Head>(&message.payload)
            && matches!(
                kind.as_str(),
                "message.created" | "message.updated" | "message.deleted"
            )
        {
            self.channels.insert(channel);
        }
    }
}

/// Feeds the per-user sockets of this instance (`hub`) from `bus`, reading counts from
/// `store`. Runs on every instance until the bridge stops.
pub async fn feed_users(bus: Bus, hub: Arc<UserHub>, store: Store) {
    let mut subscriptions = Vec::new();
    for pattern in [
        MESSAGING.to_owned(),
        format!("{READ_PREFIX}>"),
        format!("{MEMBER_PREFIX}>"),
    ] {
        match bus.subscribe(&pattern).await {
            Ok(subscription) => subscriptions.push(subscription),
            Err(error) => {
                warn!(%error, pattern, "cannot subscribe; the per-user feeds are off");
                return;
            }
        }
    }
    let [mut messages, mut reads, mut members]: [_; 3] =
        subscriptions.try_into().expect("three subscriptions");
    loop {
        let first = tokio::select! {
            Some(m) = messages.recv() => m,
            Some(m) = reads.recv() => m,
            Some(m) = members.recv() => m,
            else => return,
        };
        // Nobody has a feed here: nothing to read (the common case under load).
        if !hub.any_watched() {
            continue;
        }
        let mut gathered = Gathered::default();
        gathered.take(&first, &hub);
        // Everything already waiting, so that a burst costs one count per channel.
        for _ in 0..GATHER {
            let next = messages
                .try_recv()
                .or_else(|_| reads.try_recv())
                .or_else(|_| members.try_recv());
            match next {
                Ok(m) => gathered.take(&m, &hub),
                Err(_) => break,
            }
        }
        if gathered.lagged {
            hub.resync_all();
            continue;
        }
        deliver(&hub, &store, gathered).await;
    }
}

async fn deliver(hub: &UserHub, store: &Store, mut gathered: Gathered) {
    for member in &gathered.members {
        let kind = match member.membership.as_str() {
            "join" => "channel.joined",
            "invite" => "invite",
            "leave" | "ban" => "channel.left",
            _ => continue,
        };
        let name = if kind == "invite" {
            store
                .channel_room(&member.channel_id)
                .await
                .ok()
                .flatten()
                .map(|room| room.name)
        } else {
            None
        };
        hub.send(
            &member.user_id,
            frame(&MembershipFrame {
                kind,
                channel_id: &member.channel_id,
                membership: (kind == "channel.left").then_some(member.membership.as_str()),
                name: name.as_deref(),
            }),
        );
        if kind == "channel.joined" {
            gathered
                .people
                .entry(member.channel_id.clone())
                .or_default()
                .insert(member.user_id.clone());
        }
    }
    let watched = hub.watched();
    let mut counts: Vec<(String, Vec<String>)> = gathered
        .channels
        .into_iter()
        .map(|channel| (channel, watched.clone()))
        .collect();
    for (channel, people) in gathered.people {
        if !counts.iter().any(|(c, _)| *c == channel) {
            counts.push((channel, people.into_iter().collect()));
        }
    }
    for (channel, people) in counts {
        let Ok(id) = CityRoomId::parse(channel.as_str()) else {
            continue;
        };
        let people: Vec<&str> = people.iter().map(String::as_str).collect();
        match store.unread_of(&id, &people).await {
            Ok(rows) => {
                for (user, unread) in rows {
                    hub.send(
                        &user,
                        frame(&UnreadUpdated {
                            kind: "unread.updated",
                            channel_id: &channel,
                            unread: &unread,
                        }),
                    );
                }
            }
            Err(error) => {
                warn!(%error, %channel, "cannot count unread messages; feeds told to resync");
                for user in people {
                    hub.send(user, Utf8Bytes::from_static(RESYNC));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_reach_their_person_only() {
        let hub = UserHub::default();
        let mut alice = hub.subscribe("@alice:x");
        let mut bob = hub.subscribe("@bob:x");
        assert_eq!(hub.watched().len(), 2);
        assert!(hub.any_watched());
        hub.send("@alice:x", Utf8Bytes::from_static("one"));
        assert_eq!(alice.recv().await.unwrap().as_str(), "one");
        assert!(bob.try_recv().is_err());
        drop(bob);
        assert_eq!(hub.watched(), vec!["@alice:x".to_owned()]);
        hub.resync_all();
        assert_eq!(alice.recv().await.unwrap().as_str(), RESYNC);
    }
}
