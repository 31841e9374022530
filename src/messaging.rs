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
    live::typing,
    reads::{
        RECEIPT_WAITS_FOR_INDEX, Receipt, TYPING_RESEND, TYPING_TIMEOUT, TypingThrottle,
        follow_members, member_changed, read_moved, receipts, record_receipt,
    },
    send::{Actor, Messenger, Outgoing, Puppets, redact, send},
    users::{UserHub, feed_users},
};

pub use crate::domain::events::subjects;

/// Longest text a send accepts, in characters.
pub const MAX_TEXT_CHARS: usize = 16_000;
