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
pub mod media;
mod reads;
mod send;
mod users;

pub use self::{
    creators::{settle_creators, with_level},
    hub::{ChannelHub, RESYNC},
    limits::RateLimits,
    live::{typing, wake_readers},
    reads::{
        RECEIPT_WAITS_FOR_INDEX, Receipt, TYPING_RESEND, TYPING_TIMEOUT, TypingThrottle,
        follow_members, member_changed, read_moved, receipts, record_receipt,
    },
    send::{Actor, Messenger, Outgoing, Puppets, redact, send},
    users::{UserHub, feed_users},
};

pub use crate::domain::events::subjects;

/// How long, each time it wakes, the search indexer gives way to pushed transactions.
const SEARCH_DEFERRAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes new messages searchable, off the path of Synapse's acknowledgement: a quarter of
/// a second after a batch that indexed messages, and every second in any case (catching up
/// after a restart). While pushed transactions flow, it first waits (up to
/// [`SEARCH_DEFERRAL`] each time it wakes): the history comes first. Then it indexes
/// everything new, batch after batch, so search is never more than a few seconds behind,
/// whatever the load. Runs until the bridge shuts down, woken by `due`, giving way while
/// `journal` is busy.
pub async fn index_search(
    store: crate::store::Store,
    journal: std::sync::Arc<crate::ingest::journal::Journal>,
    due: std::sync::Arc<tokio::sync::Notify>,
) {
    use std::time::Duration;
    const BATCH: i64 = 2000;
    loop {
        tokio::select! {
            () = due.notified() => {
                // Let a burst gather: fewer, larger batches, and out of the way of the
                // sends and pushes that woke it.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Out of the way of pushed transactions for at most 5 s a wake-up, not 5 s a batch:
        // under a sustained load, waiting before every batch of 2,000 made search fall
        // behind without end (at most 400 messages a second).
        let deferred = std::time::Instant::now();
        loop {
            while journal.busy(Duration::from_millis(250)) && deferred.elapsed() < SEARCH_DEFERRAL {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match store.index_search(BATCH).await {
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
