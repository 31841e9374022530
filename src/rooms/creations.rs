//! Matrix room creations under way. Synapse may push a new room's first events before
//! `createRoom` has returned and the mapping is stored; ingestion of a room it does not
//! know waits only while a creation that could be that room has not returned yet, and
//! then takes the mapping from here.

use std::{collections::HashMap, time::Duration};

use ruma::{OwnedRoomId, RoomId};
use tokio::sync::watch;
use tracing::warn;

use super::MappedRoom;

/// Creations under way: each is `None` until its `createRoom` returns, then the room.
#[derive(Debug)]
pub struct CreationsInFlight {
    state: watch::Sender<Creations>,
}

#[derive(Debug, Default)]
struct Creations {
    next: u64,
    running: HashMap<u64, Option<(OwnedRoomId, MappedRoom)>>,
}

impl Default for CreationsInFlight {
    fn default() -> Self {
        Self {
            state: watch::channel(Creations::default()).0,
        }
    }
}

/// One creation, registered until dropped (whatever way it ends).
#[derive(Debug)]
pub struct Creation<'a> {
    creations: &'a CreationsInFlight,
    key: u64,
}

impl Creation<'_> {
    /// `createRoom` returned this room: ingestion may map its events at once.
    pub fn created(&self, room_id: OwnedRoomId, room: MappedRoom) {
        self.creations.state.send_modify(|c| {
            c.running.insert(self.key, Some((room_id, room)));
        });
    }
}

impl Drop for Creation<'_> {
    fn drop(&mut self) {
        self.creations.state.send_modify(|c| {
            c.running.remove(&self.key);
        });
    }
}

impl CreationsInFlight {
    /// How many are waiting for a creation to return its room (ingestion, for a room of
    /// the bridge's own user it does not know yet).
    pub fn waiting(&self) -> usize {
        self.state.receiver_count()
    }

    /// Registers a creation until the returned guard is dropped.
    pub fn start(&self) -> Creation<'_> {
        let mut key = 0;
        self.state.send_modify(|c| {
            key = c.next;
            c.next += 1;
            c.running.insert(key, None);
        });
        Creation {
            creations: self,
            key,
        }
    }

    /// How many creations are under way.
    pub fn len(&self) -> usize {
        self.state.borrow().running.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some creation has not learnt its room yet.
    pub fn any_unresolved(&self) -> bool {
        self.state.borrow().running.values().any(Option::is_none)
    }

    /// The city room of `room_id` if a creation under way made it; waits (at most
    /// `limit`) while a creation has not returned its room yet.
    pub async fn resolve(&self, room_id: &RoomId, limit: Duration) -> Option<MappedRoom> {
        let find = |c: &Creations| {
            c.running
                .values()
                .flatten()
                .find(|(id, _)| id == room_id)
                .map(|(_, room)| room.clone())
        };
        let mut rx = self.state.subscribe();
        let settled = tokio::time::timeout(
            limit,
            rx.wait_for(|c| find(c).is_some() || c.running.values().all(Option::is_some)),
        )
        .await;
        // The settled state is read through the guard `wait_for` returned: borrowing the
        // channel again while holding it would wait behind a creation ending on another
        // thread, which itself waits for this guard.
        match settled {
            Ok(Ok(creations)) => find(&creations),
            Ok(Err(_)) => None,
            Err(_) => {
                warn!(%room_id, "room creations still under way after {limit:?}; going on");
                find(&self.state.borrow())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Slug, Visibility};

    fn mapped(slug: &str) -> MappedRoom {
        let slug = Slug::parse(slug).unwrap();
        MappedRoom {
            id: slug.city_room_id(),
            slug,
            visibility: Visibility::Public,
            encrypted: false,
        }
    }

    #[tokio::test]
    async fn waits_only_for_creations_that_have_not_returned() {
        let creations = CreationsInFlight::default();
        let room: OwnedRoomId = "!new:example.org".try_into().unwrap();
        let other: OwnedRoomId = "!dm:example.org".try_into().unwrap();
        // Nothing under way: an unknown room is answered at once.
        assert_eq!(
            creations.resolve(&other, Duration::from_secs(30)).await,
            None
        );

        let first = creations.start();
        first.created(room.clone(), mapped("general"));
        // Every creation knows its room: no wait for a room that is none of them.
        let started = std::time::Instant::now();
        assert_eq!(
            creations.resolve(&other, Duration::from_secs(30)).await,
            None
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            creations.resolve(&room, Duration::from_secs(30)).await,
            Some(mapped("general"))
        );

        // A creation that has not returned: the wait ends when it does.
        let second = creations.start();
        let resolve = creations.resolve(&other, Duration::from_secs(30));
        let finish = async {
            tokio::task::yield_now().await;
            second.created(other.clone(), mapped("welcome"));
        };
        let (found, ()) = tokio::join!(resolve, finish);
        assert_eq!(found, Some(mapped("welcome")));
        drop(first);
        drop(second);
        assert!(creations.is_empty());
    }

    /// Ingestion resolves rooms on one thread while room creations end on another, as on
    /// the bridge's multi-thread runtime: neither ever waits for the other for good.
    #[test]
    fn resolving_a_room_while_creations_end_on_another_thread_never_deadlocks() {
        let creations = std::sync::Arc::new(CreationsInFlight::default());
        let room: OwnedRoomId = "!new:example.org".try_into().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ending = std::thread::spawn({
            let (creations, room, stop) = (creations.clone(), room.clone(), stop.clone());
            move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let creation = creations.start();
                    creation.created(room.clone(), mapped("general"));
                }
            }
        });
        let (done, resolved) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime.block_on(async {
                for _ in 0..20_000 {
                    creations.resolve(&room, Duration::from_secs(30)).await;
                }
            });
            let _ = done.send(());
        });
        let finished = resolved.recv_timeout(Duration::from_secs(60));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(
            finished.is_ok(),
            "resolving and a creation's end wait for each other"
        );
        ending.join().unwrap();
    }
}
