//! Messages and membership as a user: the appservice's own agents (with the bridge's
//! `as_token`) or the homeserver's people (with the puppet registration's).

use ruma::{
    OwnedEventId, OwnedTransactionId, OwnedUserId, RoomId, UserId,
    api::client::{
        membership::{ban_user, invite_user, join_room_by_id, kick_user, leave_room},
        message::send_message_event,
        read_marker::set_read_marker,
        redact::redact_event,
        state::{get_state_event_for_key, send_state_event},
        typing::create_typing_event,
    },
    events::{
        AnyMessageLikeEventContent, EmptyStateKey, MessageLikeEventType, StateEventType,
        room::pinned_events::RoomPinnedEventsEventContent,
    },
    serde::Raw,
};

use super::{Homeserver, HomeserverError};

impl Homeserver {
    /// Sends a message-like event of `event_type` with `content` as `user`. The same
    /// `txn_id` again is answered with the first event (Synapse deduplicates it).
    pub async fn send_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        txn_id: &str,
        content: &serde_json::Value,
        user: &UserId,
    ) -> Result<OwnedEventId, HomeserverError> {
        let raw = serde_json::value::to_raw_value(content)
            .map_err(|e| HomeserverError::Request(e.to_string()))?;
        let request = send_message_event::v3::Request::new_raw(
            room_id.to_owned(),
            OwnedTransactionId::from(txn_id),
            MessageLikeEventType::from(event_type),
            Raw::<AnyMessageLikeEventContent>::from_json(raw),
        );
        Ok(self.send(request, Some(user)).await?.event_id)
    }

    /// Redacts `event_id` as `user`.
    pub async fn redact(
        &self,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        txn_id: &str,
        user: &UserId,
    ) -> Result<OwnedEventId, HomeserverError> {
        let request = redact_event::v3::Request::new(
            room_id.to_owned(),
            event_id.to_owned(),
            OwnedTransactionId::from(txn_id),
        );
        Ok(self.send(request, Some(user)).await?.event_id)
    }

    /// Joins `room_id` as `user`.
    pub async fn join(&self, room_id: &RoomId, user: &UserId) -> Result<(), HomeserverError> {
        self.send(
            join_room_by_id::v3::Request::new(room_id.to_owned()),
            Some(user),
        )
        .await?;
        Ok(())
    }

    /// Invites `invitee` to `room_id` as `user` (the appservice's sender when `None`).
    pub async fn invite(
        &self,
        room_id: &RoomId,
        invitee: OwnedUserId,
        user: Option<&UserId>,
    ) -> Result<(), HomeserverError> {
        let recipient = invite_user::v3::InvitationRecipient::UserId(
            invite_user::v3::InviteUserId::new(invitee),
        );
        self.send(
            invite_user::v3::Request::new(room_id.to_owned(), recipient),
            user,
        )
        .await?;
        Ok(())
    }

    /// Leaves `room_id` as `user` (or declines an invitation).
    pub async fn leave(&self, room_id: &RoomId, user: &UserId) -> Result<(), HomeserverError> {
        self.send(leave_room::v3::Request::new(room_id.to_owned()), Some(user))
            .await?;
        Ok(())
    }

    /// Removes `target` from `room_id` as `user`: a kick, or with `ban` a ban. Synapse
    /// decides whether `user` may.
    pub async fn remove(
        &self,
        room_id: &RoomId,
        target: OwnedUserId,
        ban: bool,
        reason: Option<String>,
        user: &UserId,
    ) -> Result<(), HomeserverError> {
        if ban {
            let mut request = ban_user::v3::Request::new(room_id.to_owned(), target);
            request.reason = reason;
            self.send(request, Some(user)).await?;
        } else {
            let mut request = kick_user::v3::Request::new(room_id.to_owned(), target);
            request.reason = reason;
            self.send(request, Some(user)).await?;
        }
        Ok(())
    }

    /// The room's pinned events (`m.room.pinned_events`), read as `user`; none when the
    /// room has never had any.
    pub async fn pinned_events(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Vec<OwnedEventId>, HomeserverError> {
        let request = get_state_event_for_key::v3::Request::new(
            room_id.to_owned(),
            StateEventType::RoomPinnedEvents,
            String::new(),
        );
        match self.send(request, Some(user)).await {
            Ok(response) => {
                let content: RoomPinnedEventsEventContent =
                    serde_json::from_str(response.event_or_content.get())
                        .map_err(|e| HomeserverError::InvalidResponse(e.to_string()))?;
                Ok(content.pinned)
            }
            Err(e) if matches!(e.kind(), Some(ruma::api::error::ErrorKind::NotFound)) => {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Replaces the room's pinned events as `user` (Synapse's power levels decide).
    pub async fn set_pinned_events(
        &self,
        room_id: &RoomId,
        pinned: Vec<OwnedEventId>,
        user: &UserId,
    ) -> Result<(), HomeserverError> {
        let request = send_state_event::v3::Request::new(
            room_id.to_owned(),
            &EmptyStateKey,
            &RoomPinnedEventsEventContent::new(pinned),
        )
        .map_err(|e| HomeserverError::Request(e.to_string()))?;
        self.send(request, Some(user)).await?;
        Ok(())
    }

    /// Moves `user`'s read receipt (`m.read`) and fully-read marker (`m.fully_read`) in
    /// `room_id` to `event_id`, as Element does when its user has seen the room.
    pub async fn mark_read(
        &self,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        user: &UserId,
    ) -> Result<(), HomeserverError> {
        let mut request = set_read_marker::v3::Request::new(room_id.to_owned());
        request.fully_read = Some(event_id.to_owned());
        request.read_receipt = Some(event_id.to_owned());
        self.send(request, Some(user)).await?;
        Ok(())
    }

    /// Says `user` types in `room_id` for `timeout` from now, or stopped (`None`).
    pub async fn typing(
        &self,
        room_id: &RoomId,
        user: &UserId,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), HomeserverError> {
        let state = match timeout {
            Some(timeout) => create_typing_event::v3::Typing::Yes(
                create_typing_event::v3::TypingInfo::new(timeout),
            ),
            None => create_typing_event::v3::Typing::No,
        };
        self.send(
            create_typing_event::v3::Request::new(user.to_owned(), room_id.to_owned(), state),
            Some(user),
        )
        .await?;
        Ok(())
    }
}
