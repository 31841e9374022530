//! Who may do what in a channel: read it (public channels to anyone, private ones to their
//! members and admins), write to it (not once archived), and give roles (the Matrix rules of
//! power levels). The API asks these before it acts; Synapse checks the rest as the user.

use http::StatusCode;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, UserId, events::room::power_levels::RoomPowerLevelsEventContent};

use crate::{
    Result,
    domain::Visibility,
    error::ApiError,
    matrix::Homeserver,
    rooms::{level_to_change_power_levels, user_level},
    store::{CityRoom, Store},
};

/// 403 with `code`: a rule refusing.
pub fn forbidden(code: crate::error::ErrorCode, detail: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code).with_detail(detail.to_owned())
}

/// A channel the caller may read.
pub struct Readable {
    /// The channel.
    pub room: CityRoom,
    /// Its Matrix room, once it has one.
    pub matrix_room_id: Option<OwnedRoomId>,
    /// Whether the reader has joined it.
    pub joined: bool,
}

/// The channel named by `id` (its id or slug) if `reader` may read it: public channels to
/// anyone, private ones to their members and admins.
pub async fn readable(
    store: &Store,
    homeserver: &Homeserver,
    id: &str,
    reader: &UserId,
    admin: bool,
) -> Result<Readable, ApiError> {
    let (room, membership) = store
        .channel_for(id, reader.as_str())
        .await?
        .ok_or_else(ApiError::not_found)?;
    // The index first; the homeserver only for a private channel it says is not joined.
    let mut joined = membership == Some(MembershipState::Join);
    if room.visibility == Visibility::Private && !joined {
        joined = is_joined(store, homeserver, &room, reader).await?;
    }
    if room.visibility == Visibility::Private && !joined && !admin {
        return Err(forbidden(
            crate::error::ErrorCode::Forbidden,
            "a private channel: only its members may read it",
        ));
    }
    Ok(Readable {
        matrix_room_id: room.matrix_room_id.clone(),
        room,
        joined,
    })
}

/// Whether `user` has joined the channel: the index says so, or — for a join it has not
/// been pushed yet (a moment ago in a client, or by the API itself) — the homeserver does.
pub async fn is_joined(
    store: &Store,
    homeserver: &Homeserver,
    room: &CityRoom,
    user: &UserId,
) -> Result<bool> {
    if store.membership(&room.id, user.as_str()).await? == Some(MembershipState::Join) {
        return Ok(true);
    }
    let Some(room_id) = &room.matrix_room_id else {
        return Ok(false);
    };
    Ok(homeserver.membership(room_id, user).await? == Some(MembershipState::Join))
}

/// Whether `user` may give `member` the `level` under the room's power levels `levels`
/// (the Matrix rules: one's own level bounds what one gives, the level of a user at or
/// above one's own is not one's to change, and changing power levels is a state event
/// needing its own level).
pub fn may_grant(
    levels: &RoomPowerLevelsEventContent,
    user: &UserId,
    member: &UserId,
    level: i64,
) -> bool {
    let own = user_level(levels, user);
    own >= level
        && own >= level_to_change_power_levels(levels)
        && member != user
        && user_level(levels, member) < own
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rooms::typed_power_levels;

    #[test]
    fn only_those_who_hold_a_level_and_may_change_levels_give_it() {
        let alice = UserId::parse("@alice:example.org").unwrap();
        let bob = UserId::parse("@bob:example.org").unwrap();
        let levels = typed_power_levels(&json!({
            "users": {"@alice:example.org": 100, "@bob:example.org": 50},
            "users_default": 0,
            "events": {"m.room.power_levels": 100},
        }))
        .unwrap();
        let carol = UserId::parse("@carol:example.org").unwrap();
        assert!(may_grant(&levels, &alice, &carol, 100));
        assert!(
            !may_grant(&levels, &bob, &carol, 50),
            "bob may not change power levels"
        );
        let moderators_may =
            typed_power_levels(&json!({"users": {"@bob:example.org": 50}, "state_default": 50}))
                .unwrap();
        assert!(may_grant(&moderators_may, &bob, &carol, 50));
        assert!(
            !may_grant(&moderators_may, &bob, &carol, 100),
            "not above one's own level"
        );
        assert!(
            !may_grant(&moderators_may, &carol, &alice, 50),
            "users_default is 0"
        );
        let peers = typed_power_levels(
            &json!({"users": {"@alice:example.org": 100, "@bob:example.org": 100}}),
        )
        .unwrap();
        assert!(
            !may_grant(&peers, &bob, &alice, 50),
            "not to a member at one's own level"
        );
        assert!(!may_grant(&peers, &bob, &bob, 50), "not to oneself");
        assert!(may_grant(&peers, &bob, &carol, 50));
    }
}
