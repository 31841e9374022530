//! `m.room.member` into the membership table.

use ruma::{UserId, events::room::member::RoomMemberEventContent};

use super::{Change, Envelope, MappedRoom, MembershipChange, Read, pg_text};

pub(super) fn read_member(envelope: &Envelope<'_>, room: &MappedRoom) -> Read {
    let Some(state_key) = envelope.state_key.as_deref() else {
        return Read::Invalid("m.room.member without state_key".to_owned());
    };
    let user_id = match UserId::parse(state_key) {
        Ok(user_id) => user_id,
        Err(e) => return Read::Invalid(format!("m.room.member state_key: {e}")),
    };
    let content: RoomMemberEventContent = match serde_json::from_str(envelope.content.get()) {
        Ok(content) => content,
        Err(e) => return Read::Invalid(format!("m.room.member content: {e}")),
    };
    Read::Change(Change::Membership(MembershipChange {
        matrix_room_id: envelope.room_id.clone(),
        room_id: room.id.clone(),
        user_id: user_id.to_owned(),
        membership: content.membership,
        display_name: content
            .displayname
            .as_deref()
            .map(|n| pg_text(n).into_owned()),
        event_id: envelope.event_id.clone(),
        event_ts: envelope.origin_server_ts.get().into(),
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use ruma::events::room::member::MembershipState;

    use super::*;
    use crate::ingest::tests::{event, read};

    #[test]
    fn member_events() {
        let mut e = event(
            "m.room.member",
            "@alice:example.org",
            json!({"membership": "join", "displayname": "Alice"}),
        );
        e["state_key"] = json!("@alice:example.org");
        match read(e) {
            Read::Change(Change::Membership(m)) => {
                assert_eq!(m.membership, MembershipState::Join);
                assert_eq!(m.display_name.as_deref(), Some("Alice"));
                assert_eq!(m.user_id.as_str(), "@alice:example.org");
            }
            other => panic!("{other:?}"),
        }
        let mut bad = event(
            "m.room.member",
            "@alice:example.org",
            json!({"membership": "join"}),
        );
        bad["state_key"] = json!("not a user");
        assert!(matches!(read(bad), Read::Invalid(_)));
    }
}
