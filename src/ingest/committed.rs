//! What a committed batch changed, told to whoever follows the index. The [`Indexer`]
//! publishes one [`Committed`] after each commit on one in-process channel ([`Commits`]);
//! the relay wake-up, live presence and the agents' invitations each subscribe
//! to it and take what they need, so the indexer calls none of them.
//!
//! Each subscriber has its own unbounded queue: publishing never waits on a subscriber, and
//! a subscriber never misses a batch (what it does with one is cheap: a wake-up, a presence
//! update, a spawned join). A subscriber that has gone away is dropped on the next publish.
//!
//! [`Indexer`]: super::Indexer

use std::sync::{Arc, Mutex};

use ruma::{OwnedRoomId, OwnedUserId, events::room::member::MembershipState};
use tokio::sync::mpsc;

use crate::{
    domain::CityRoomId,
    store::{Effects, MessageView},
};

/// What one committed batch changed.
#[derive(Debug, Default)]
pub struct Committed {
    /// The message index rows it really changed.
    pub effects: Effects,
    /// The new messages as written, with their positions (handed to the relay, which
    /// then need not read them back).
    pub messages: Vec<(Arc<MessageView>, i64)>,
    /// Memberships it recorded: room, user, membership.
    pub memberships: Vec<(OwnedRoomId, OwnedUserId, MembershipState)>,
    /// Activity per mapped room: the newest event's time (ms).
    pub activity: Vec<(OwnedRoomId, u64)>,
    /// Agents (of the bridge's exclusive namespace) invited to a mapped room.
    pub invited_agents: Vec<(OwnedRoomId, OwnedUserId)>,
    /// Matrix rooms replaced by their upgrade: no longer a city room's.
    pub replaced_rooms: Vec<OwnedRoomId>,
    /// Memberships of the homeserver's people (not agents, not the bridge) by channel,
    /// for their per-user feeds.
    pub local_members: Vec<(CityRoomId, OwnedUserId, MembershipState)>,
}

impl Committed {
    /// Whether there is nothing to tell.
    pub fn is_empty(&self) -> bool {
        self.effects.is_empty()
            && self.memberships.is_empty()
            && self.activity.is_empty()
            && self.invited_agents.is_empty()
            && self.replaced_rooms.is_empty()
            && self.local_members.is_empty()
    }
}

/// The channel of committed batches: one sender (the indexer), a queue per subscriber.
#[derive(Debug, Default)]
pub struct Commits {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<Committed>>>>,
}

/// A subscriber's end of [`Commits`].
pub type Subscription = mpsc::UnboundedReceiver<Arc<Committed>>;

impl Commits {
    /// Every batch committed from now on.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().push(tx);
        rx
    }

    /// Tells every subscriber of `committed`.
    pub(super) fn publish(&self, committed: Committed) {
        if committed.is_empty() {
            return;
        }
        let committed = Arc::new(committed);
        self.lock()
            .retain(|subscriber| subscriber.send(Arc::clone(&committed)).is_ok());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<Arc<Committed>>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_gets_every_batch_and_gone_ones_are_dropped() {
        let commits = Commits::default();
        let mut first = commits.subscribe();
        let second = commits.subscribe();
        drop(second);
        commits.publish(Committed::default());
        let room: OwnedRoomId = "!r:example.org".try_into().unwrap();
        for ts in [1, 2] {
            commits.publish(Committed {
                activity: vec![(room.clone(), ts)],
                ..Committed::default()
            });
        }
        assert_eq!(
            first.recv().await.unwrap().activity[0].1,
            1,
            "empty skipped"
        );
        assert_eq!(first.recv().await.unwrap().activity[0].1, 2);
        assert_eq!(commits.lock().len(), 1, "the dropped subscriber is gone");
    }
}
