//! Messaging: channels (city rooms), their history, sending as the user's own Matrix
//! identity, edits, reactions, threads, members, agents posting, the live per-channel
//! feed and search. The index itself is written by the ingest pipeline only — a send
//! through the API runs the accepted event through the same pipeline, so a message is
//! indexed once whether Synapse's push or the API's own write comes first.

pub mod access;
mod creators;
mod hub;
mod limits;
mod live;
mod send;

pub use self::{
    creators::{settle_creators, with_level},
    hub::{ChannelHub, RESYNC},
    limits::RateLimits,
    live::{announce, typing},
    send::{Actor, Outgoing, Puppets, redact, send},
};

/// Bus subjects of messaging events.
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
}

/// Makes new messages searchable, off the path of Synapse's acknowledgement: a quarter of
/// a second after a batch that indexed messages, and every second in any case (catching up after a
/// restart). While pushed transactions flow, it waits (up to 5 s a batch): the history
/// comes first, and search catches up after a burst. Runs until the bridge shuts down.
pub async fn index_search(state: crate::app::AppState) {
    use std::time::Duration;
    const BATCH: i64 = 2000;
    loop {
        tokio::select! {
            () = state.search_due.notified() => {
                // Let a burst gather: fewer, larger batches, and out of the way of the
                // sends and pushes that woke it.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        loop {
            let deferred = std::time::Instant::now();
            while state.journal.busy(Duration::from_millis(250))
                && deferred.elapsed() < Duration::from_secs(5)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match state.store.index_search(BATCH).await {
                Ok(n) if n < BATCH => break,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot make new messages searchable; retrying");
                    break;
                }
            }
        }
    }
}

/// Longest text a send accepts, in characters.
pub const MAX_TEXT_CHARS: usize = 16_000;
