//! Live presence for city rooms: who is online, who is typing and when a room last saw activity, folded from Matrix events into per-room states that are throttled before being published.

mod aggregator;
mod hub;
mod live;
pub mod sockets;
mod throttle;
pub mod wire;

pub use aggregator::{
    PresenceAggregator, PresenceChange, PresenceStatus, RoomPresence, RoomSummary, UserPresence,
    UserPresenceEvent,
};
pub use hub::{PresenceHub, Update, Viewer};
pub use live::LivePresence;
pub use throttle::{Offer, RoomThrottle};
