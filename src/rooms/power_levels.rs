//! The power levels of archived rooms.

use ruma::UserId;
use serde_json::{Value, json};

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
}
