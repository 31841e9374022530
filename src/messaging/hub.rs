//! The live feed of each channel for `/ws/messaging/{channel_id}`: one shared queue per
//! channel with someone watching, fed in stream order from the bus (`outbox::feed_channels`).

use std::{collections::HashMap, sync::Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;

/// How far a client may fall behind its channel before it is told to resync.
const CHANNEL_CAPACITY: usize = 1024;

/// Channel → its live queue (only while someone listens).
#[derive(Debug, Default)]
pub struct ChannelHub {
    channels: Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>,
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
