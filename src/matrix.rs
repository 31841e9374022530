//! Outbound to the homeserver: client-server calls as the appservice (or as one of its
//! users), with one retry policy. `client.rs` holds the client and the policy; the other
//! files add the calls of one concern each.

mod client;
mod media;
mod messages;
mod rooms;
mod users;

pub use self::{
    client::{Homeserver, HomeserverError, RetryPolicy},
    media::{Thumbnail, is_too_large},
    rooms::{NewMatrixRoom, NewSpace},
};
