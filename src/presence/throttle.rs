//! Per-room trailing-edge throttle, so a busy room publishes at most once per
//! window while its latest state is never lost.
//!
//! The clock is passed in, which keeps the rules testable without sleeping and
//! leaves timers to the caller.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the caller should do with an offered payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer<T> {
    /// Publish this payload now.
    Publish(T),
    /// The payload is held and will be returned by [`RoomThrottle::due`] at `at`.
    Deferred {
        /// When the held payload becomes due.
        at: Instant,
        /// True only for the offer that started the wait, so the caller arms one
        /// timer per window instead of one per change.
        newly_scheduled: bool,
    },
}

#[derive(Debug, Clone)]
struct Slot<T> {
    last_published: Instant,
    pending: Option<(Instant, T)>,
}

/// Trailing-edge throttle keyed by room.
///
/// The first change after a quiet window is published at once; further changes
/// within the window collapse into one publication of the latest payload at the
/// end of the window.
#[derive(Debug, Clone)]
pub struct RoomThrottle<K, T> {
    window: Duration,
    /// Ordered so that [`RoomThrottle::due`] returns keys in a stable order.
    slots: BTreeMap<K, Slot<T>>,
}

impl<K: Ord, T> RoomThrottle<K, T> {
    /// A throttle allowing one publication per key per `window`; a zero window
    /// publishes everything at once.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            slots: BTreeMap::new(),
        }
    }

    /// The window this throttle enforces.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Offers a new payload for `key` at `now`.
    pub fn offer(&mut self, key: K, payload: T, now: Instant) -> Offer<T> {
        let window = self.window;
        let Some(slot) = self.slots.get_mut(&key) else {
            self.slots.insert(
                key,
                Slot {
                    last_published: now,
                    pending: None,
                },
            );
            return Offer::Publish(payload);
        };

        if let Some((at, held)) = &mut slot.pending {
            if *at > now {
                *held = payload;
                return Offer::Deferred {
                    at: *at,
                    newly_scheduled: false,
                };
            }
            // The timer is late: the newer payload supersedes the held one, and
            // publishing it now is what the timer would have done.
            slot.pending = None;
            slot.last_published = now;
            return Offer::Publish(payload);
        }

        if now.saturating_duration_since(slot.last_published) >= window {
            slot.last_published = now;
            return Offer::Publish(payload);
        }

        // A deadline past what Instant can hold degrades to "due now" rather than
        // holding the payload forever.
        let at = slot.last_published.checked_add(window).unwrap_or(now);
        slot.pending = Some((at, payload));
        Offer::Deferred {
            at,
            newly_scheduled: true,
        }
    }

    /// Takes every held payload whose time has come, in key order, and counts
    /// them as published at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<(K, T)>
    where
        K: Clone,
    {
        let window = self.window;
        let mut ready = Vec::new();
        self.slots.retain(|key, slot| {
            if slot.pending.as_ref().is_some_and(|(at, _)| *at <= now)
                && let Some((_, payload)) = slot.pending.take()
            {
                slot.last_published = now;
                ready.push((key.clone(), payload));
                return true;
            }
            // A quiet slot past its window behaves like a missing one, so drop it
            // to keep memory bounded by the rooms active in the last window.
            slot.pending.is_some() || now.saturating_duration_since(slot.last_published) < window
        });
        ready
    }

    /// The earliest time a held payload becomes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter_map(|slot| slot.pending.as_ref().map(|(at, _)| *at))
            .min()
    }

    /// Drops all state for `key`, e.g. when its room is unmapped, so a held
    /// payload for it is never returned.
    pub fn forget<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.slots.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(500);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn throttle() -> RoomThrottle<String, u32> {
        RoomThrottle::new(WINDOW)
    }

    #[test]
    fn first_change_publishes_at_once() {
        let mut t = throttle();
        let now = Instant::now();
        assert_eq!(t.offer("energy".into(), 1, now), Offer::Publish(1));
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn burst_yields_one_trailing_publication_of_last_payload() {
        let mut t = throttle();
        let t0 = Instant::now();
        let end = t0 + WINDOW;
        assert_eq!(t.offer("energy".into(), 1, t0), Offer::Publish(1));
        assert_eq!(
            t.offer("energy".into(), 2, t0 + ms(10)),
            Offer::Deferred {
                at: end,
                newly_scheduled: true
            }
        );
        for (i, p) in [3, 4, 5].into_iter().enumerate() {
            assert_eq!(
                t.offer("energy".into(), p, t0 + ms(100 * (i as u64 + 1))),
                Offer::Deferred {
                    at: end,
                    newly_scheduled: false
                }
            );
        }
        assert_eq!(t.next_due(), Some(end));
        assert!(t.due(end - ms(1)).is_empty());
        assert_eq!(t.due(end), vec![("energy".to_owned(), 5)]);
        assert!(t.due(end + ms(1)).is_empty());
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn trailing_publication_starts_a_new_window() {
        let mut t = throttle();
        let t0 = Instant::now();
        t.offer("energy".into(), 1, t0);
        t.offer("energy".into(), 2, t0 + ms(10));
        let fired = t0 + WINDOW + ms(5);
        assert_eq!(t.due(fired).len(), 1);
        assert_eq!(
            t.offer("energy".into(), 3, fired + ms(10)),
            Offer::Deferred {
                at: fired + WINDOW,
                newly_scheduled: true
            }
        );
    }

    #[test]
    fn quiet_window_lets_the_next_change_publish_at_once() {
        let mut t = throttle();
        let t0 = Instant::now();
        t.offer("energy".into(), 1, t0);
        assert_eq!(t.offer("energy".into(), 2, t0 + WINDOW), Offer::Publish(2));
        // Also after the idle slot has been pruned by `due`.
        let later = t0 + WINDOW * 3;
        assert!(t.due(later).is_empty());
        assert!(t.slots.is_empty());
        assert_eq!(t.offer("energy".into(), 3, later), Offer::Publish(3));
    }

    #[test]
    fn keys_are_independent() {
        let mut t = throttle();
        let t0 = Instant::now();
        assert_eq!(t.offer("energy".into(), 1, t0), Offer::Publish(1));
        assert_eq!(
            t.offer("water".into(), 10, t0 + ms(100)),
            Offer::Publish(10)
        );
        assert!(matches!(
            t.offer("energy".into(), 2, t0 + ms(200)),
            Offer::Deferred {
                newly_scheduled: true,
                ..
            }
        ));
        assert!(matches!(
            t.offer("water".into(), 11, t0 + ms(300)),
            Offer::Deferred {
                newly_scheduled: true,
                ..
            }
        ));
        assert_eq!(t.next_due(), Some(t0 + WINDOW));
        assert_eq!(t.due(t0 + WINDOW), vec![("energy".to_owned(), 2)]);
        assert_eq!(t.next_due(), Some(t0 + ms(100) + WINDOW));
        assert_eq!(t.due(t0 + ms(100) + WINDOW), vec![("water".to_owned(), 11)]);
    }

    #[test]
    fn zero_window_publishes_everything_at_once() {
        let mut t: RoomThrottle<String, u32> = RoomThrottle::new(Duration::ZERO);
        let now = Instant::now();
        for p in 0..5 {
            assert_eq!(t.offer("energy".into(), p, now), Offer::Publish(p));
        }
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn late_timer_lets_a_new_offer_publish_at_once() {
        let mut t = throttle();
        let t0 = Instant::now();
        t.offer("energy".into(), 1, t0);
        t.offer("energy".into(), 2, t0 + ms(10));
        let late = t0 + WINDOW + ms(50);
        assert_eq!(t.offer("energy".into(), 3, late), Offer::Publish(3));
        assert!(t.due(late).is_empty());
    }

    #[test]
    fn forget_drops_pending_payload() {
        let mut t = throttle();
        let t0 = Instant::now();
        t.offer("energy".into(), 1, t0);
        t.offer("energy".into(), 2, t0 + ms(10));
        t.forget("energy");
        assert_eq!(t.next_due(), None);
        assert!(t.due(t0 + WINDOW).is_empty());
    }
}
