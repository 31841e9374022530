//! Power levels: a room's `m.room.power_levels` read as ruma's `RoomPowerLevelsEventContent`
//! for the arithmetic on them (a user's level, the level needed to change them, the role a
//! level is), and the read-only levels of archived rooms.

use ruma::{
    UserId,
    events::{TimelineEventType, room::power_levels::RoomPowerLevelsEventContent},
};
use serde::Deserialize as _;
use serde_json::{Value, json};

/// A room's `m.room.power_levels` content as ruma reads it; what it leaves out has the
/// Matrix defaults (`users_default` 0, `state_default` 50).
pub fn typed_power_levels(
    content: &Value,
) -> Result<RoomPowerLevelsEventContent, serde_json::Error> {
    RoomPowerLevelsEventContent::deserialize(content)
}

/// The level of `user`: their own entry, else `users_default`.
pub fn user_level(levels: &RoomPowerLevelsEventContent, user: &UserId) -> i64 {
    levels
        .users
        .get(user)
        .copied()
        .unwrap_or(levels.users_default)
        .into()
}

/// The level needed to change the power levels (a state event of its own: its entry in
/// `events`, else `state_default`).
pub fn level_to_change_power_levels(levels: &RoomPowerLevelsEventContent) -> i64 {
    levels
        .events
        .get(&TimelineEventType::RoomPowerLevels)
        .copied()
        .unwrap_or(levels.state_default)
        .into()
}

/// What a power level makes a member of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Below 50.
    Member,
    /// 50 to 99.
    Moderator,
    /// 100 and above.
    Admin,
}

impl Role {
    /// The role of a member at `level`.
    pub fn of_level(level: i64) -> Self {
        match level {
            100.. => Self::Admin,
            50.. => Self::Moderator,
            _ => Self::Member,
        }
    }

    /// The role of `user` under `levels`; `member` when there are none to read.
    pub fn of_user(levels: Option<&RoomPowerLevelsEventContent>, user: &UserId) -> Self {
        Self::of_level(levels.map_or(0, |levels| user_level(levels, user)))
    }

    /// The role called `name` (`member`, `moderator` or `admin`).
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "member" => Some(Self::Member),
            "moderator" => Some(Self::Moderator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// The level given to a member made this role.
    pub fn level(self) -> i64 {
        match self {
            Self::Member => 0,
            Self::Moderator => 50,
            Self::Admin => 100,
        }
    }

    /// `member`, `moderator` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Moderator => "moderator",
            Self::Admin => "admin",
        }
    }
}

/// Power levels that leave only the appservice able to post or change anything: kept
/// for archived rooms. Room creators (the appservice, from room version 12) keep their
/// power whatever the levels say; in older versions the appservice's own entry stays.
pub fn read_only_power_levels(mut levels: Value, sender: &UserId) -> Value {
    let own = levels["users"].get(sender.as_str()).cloned();
    levels["users"] = own.map_or_else(|| json!({}), |level| json!({ sender.as_str(): level }));
    for key in [
        "events_default",
        "state_default",
        "invite",
        "kick",
        "ban",
        "redact",
    ] {
        levels[key] = json!(100);
    }
    levels["users_default"] = json!(0);
    if let Some(events) = levels.get_mut("events").and_then(Value::as_object_mut) {
        events.values_mut().for_each(|level| *level = json!(100));
    }
    levels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bridge_keeps_power() {
        let bridge = UserId::parse("@city-bridge:example.org").unwrap();
        let levels = json!({
            "users": {"@city-bridge:example.org": 100, "@alice:example.org": 50},
            "events": {"m.room.name": 50}, "events_default": 0, "users_default": 0,
        });
        let read_only = read_only_power_levels(levels, &bridge);
        assert_eq!(read_only["users"], json!({"@city-bridge:example.org": 100}));
        assert_eq!(read_only["events_default"], 100);
        assert_eq!(read_only["events"]["m.room.name"], 100);
    }

    #[test]
    fn levels_and_roles_with_the_matrix_defaults() {
        let levels = typed_power_levels(&json!({
            "users": {"@a:x": 100, "@m:x": 50}, "events": {"m.room.power_levels": 100},
        }))
        .unwrap();
        let user = |id: &str| UserId::parse(id).unwrap();
        assert_eq!(user_level(&levels, &user("@m:x")), 50);
        assert_eq!(user_level(&levels, &user("@n:x")), 0);
        assert_eq!(level_to_change_power_levels(&levels), 100);
        let defaults = typed_power_levels(&json!({"users_default": 10})).unwrap();
        assert_eq!(user_level(&defaults, &user("@n:x")), 10);
        assert_eq!(level_to_change_power_levels(&defaults), 50);
        assert_eq!(Role::of_user(Some(&levels), &user("@a:x")), Role::Admin);
        assert_eq!(Role::of_user(Some(&levels), &user("@m:x")), Role::Moderator);
        assert_eq!(Role::of_user(Some(&levels), &user("@n:x")), Role::Member);
        assert_eq!(Role::of_user(None, &user("@a:x")), Role::Member);
        for role in [Role::Member, Role::Moderator, Role::Admin] {
            assert_eq!(Role::named(role.as_str()), Some(role));
            assert_eq!(Role::of_level(role.level()), role);
        }
        assert_eq!(Role::named("owner"), None);
    }
}
