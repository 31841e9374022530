//! Rooms as the appservice's sender: creation, aliases, state, power levels, history.

use ruma::events::room::member::MembershipState;
use ruma::{
    OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, UInt,
    api::{
        client::{
            alias::{create_alias, get_alias},
            message::get_message_events,
            room::{Visibility, create_room},
            state,
        },
        error::ErrorKind,
    },
    events::{AnyStateEvent, AnyTimelineEvent, StateEventType},
    serde::Raw,
};

use super::{Homeserver, HomeserverError};

/// A room for [`Homeserver::create_room`].
#[derive(Debug, Clone)]
pub struct NewMatrixRoom<'a> {
    /// Localpart of the alias, `city_<slug>`.
    pub alias_localpart: &'a str,
    /// The room name.
    pub name: &'a str,
    /// The room topic.
    pub topic: Option<&'a str>,
    /// Public (`public_chat`, in the directory) or private (`private_chat`).
    pub public: bool,
    /// End-to-end encrypted from the start (`m.room.encryption` in the initial state).
    pub encrypted: bool,
}

/// A Space for [`Homeserver::create_space`]: public, world-readable, in the directory.
#[derive(Debug, Clone)]
pub struct NewSpace<'a> {
    /// Localpart of its alias.
    pub alias_localpart: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its topic.
    pub topic: &'a str,
}

impl Homeserver {
    /// Creates a Space (`m.space` room type) as the appservice's sender: anyone may join
    /// it and read it without joining, it is published in the room directory, and only
    /// the sender (its creator, level 100) may list rooms in it or post.
    pub async fn create_space(&self, space: NewSpace<'_>) -> Result<OwnedRoomId, HomeserverError> {
        use ruma::events::room::history_visibility::{
            HistoryVisibility, RoomHistoryVisibilityEventContent,
        };
        let mut request = create_room::v3::Request::new();
        request.room_alias_name = Some(space.alias_localpart.to_owned());
        request.name = Some(space.name.to_owned());
        request.topic = Some(space.topic.to_owned());
        request.preset = Some(create_room::v3::RoomPreset::PublicChat);
        request.visibility = Visibility::Public;
        let mut creation = create_room::v3::CreationContent::new();
        creation.room_type = Some(ruma::room::RoomType::Space);
        request.creation_content =
            Some(Raw::new(&creation).map_err(|e| HomeserverError::Request(e.to_string()))?);
        request.initial_state = vec![
            ruma::events::InitialStateEvent::new(
                ruma::events::EmptyStateKey,
                RoomHistoryVisibilityEventContent::new(HistoryVisibility::WorldReadable),
            )
            .to_raw_any(),
        ];
        // A Space is a list, not a chat: members may not post in it.
        let levels = serde_json::value::to_raw_value(&serde_json::json!({"events_default": 100}))
            .map_err(|e| HomeserverError::Request(e.to_string()))?;
        request.power_level_content_override = Some(Raw::from_json(levels));
        Ok(self.send(request, None).await?.room_id)
    }

    /// Creates a room as the appservice's sender and returns its id.
    pub async fn create_room(
        &self,
        room: NewMatrixRoom<'_>,
    ) -> Result<OwnedRoomId, HomeserverError> {
        let mut request = create_room::v3::Request::new();
        request.room_alias_name = Some(room.alias_localpart.to_owned());
        request.name = Some(room.name.to_owned());
        request.topic = room.topic.map(ToOwned::to_owned);
        if room.public {
            request.preset = Some(create_room::v3::RoomPreset::PublicChat);
            request.visibility = Visibility::Public;
        } else {
            request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
            request.visibility = Visibility::Private;
        }
        if room.encrypted {
            let content = ruma::events::room::encryption::RoomEncryptionEventContent::with_recommended_defaults();
            let state = ruma::events::InitialStateEvent::new(ruma::events::EmptyStateKey, content)
                .to_raw_any();
            request.initial_state = vec![state];
        }
        Ok(self.send(request, None).await?.room_id)
    }

    /// Resolves an alias; `None` when the homeserver does not know it.
    pub async fn resolve_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<Option<OwnedRoomId>, HomeserverError> {
        match self
            .send(get_alias::v3::Request::new(alias.to_owned()), None)
            .await
        {
            Ok(response) => Ok(Some(response.room_id)),
            Err(e) if matches!(e.kind(), Some(ErrorKind::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Points `alias` at `room_id`.
    pub async fn set_alias(
        &self,
        alias: OwnedRoomAliasId,
        room_id: &RoomId,
    ) -> Result<(), HomeserverError> {
        self.send(
            create_alias::v3::Request::new(alias, room_id.to_owned()),
            None,
        )
        .await?;
        Ok(())
    }

    /// Sends a state event with an empty state key as the appservice's sender.
    pub async fn set_state<C>(&self, room_id: &RoomId, content: &C) -> Result<(), HomeserverError>
    where
        C: ruma::events::StateEventContent<StateKey = ruma::events::EmptyStateKey>,
    {
        let request = state::send_state_event::v3::Request::new(
            room_id.to_owned(),
            &ruma::events::EmptyStateKey,
            content,
        )
        .map_err(|e| HomeserverError::Request(e.to_string()))?;
        self.send(request, None).await?;
        Ok(())
    }

    /// Sends a state event with a state key (`m.space.child` names its child room) as the
    /// appservice's sender.
    pub async fn set_state_for_key<C, K>(
        &self,
        room_id: &RoomId,
        state_key: &K,
        content: &C,
    ) -> Result<(), HomeserverError>
    where
        C: ruma::events::StateEventContent,
        C::StateKey: std::borrow::Borrow<K>,
        K: AsRef<str> + ?Sized,
    {
        let request =
            state::send_state_event::v3::Request::new(room_id.to_owned(), state_key, content)
                .map_err(|e| HomeserverError::Request(e.to_string()))?;
        self.send(request, None).await?;
        Ok(())
    }

    /// Sends an empty state event (`{}`): how an `m.space.child` is withdrawn.
    pub async fn clear_state(
        &self,
        room_id: &RoomId,
        event_type: StateEventType,
        state_key: &str,
    ) -> Result<(), HomeserverError> {
        let request = state::send_state_event::v3::Request::new_raw(
            room_id.to_owned(),
            event_type,
            state_key.to_owned(),
            Raw::from_json(
                serde_json::value::RawValue::from_string("{}".to_owned()).expect("JSON"),
            ),
        );
        self.send(request, None).await?;
        Ok(())
    }

    /// The content of one state event of the room, as JSON; `None` when there is none.
    pub async fn state_for_key(
        &self,
        room_id: &RoomId,
        event_type: StateEventType,
        state_key: &str,
    ) -> Result<Option<serde_json::Value>, HomeserverError> {
        let request = state::get_state_event_for_key::v3::Request::new(
            room_id.to_owned(),
            event_type,
            state_key.to_owned(),
        );
        match self.send(request, None).await {
            Ok(response) => serde_json::from_str(response.event_or_content.get())
                .map(Some)
                .map_err(|e| HomeserverError::InvalidResponse(e.to_string())),
            Err(e) if matches!(e.kind(), Some(ErrorKind::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The content of the room's `m.room.power_levels`, as JSON.
    pub async fn power_levels(
        &self,
        room_id: &RoomId,
    ) -> Result<serde_json::Value, HomeserverError> {
        let request = state::get_state_event_for_key::v3::Request::new(
            room_id.to_owned(),
            StateEventType::RoomPowerLevels,
            String::new(),
        );
        let response = self.send(request, None).await?;
        serde_json::from_str(response.event_or_content.get())
            .map_err(|e| HomeserverError::InvalidResponse(e.to_string()))
    }

    /// The membership of `user` in the room as the homeserver has it now (`None`: never
    /// a member), read as the appservice's sender.
    pub async fn membership(
        &self,
        room_id: &RoomId,
        user: &ruma::UserId,
    ) -> Result<Option<MembershipState>, HomeserverError> {
        let request = state::get_state_event_for_key::v3::Request::new(
            room_id.to_owned(),
            StateEventType::RoomMember,
            user.to_string(),
        );
        match self.send(request, None).await {
            Ok(response) => {
                let content: serde_json::Value =
                    serde_json::from_str(response.event_or_content.get())
                        .map_err(|e| HomeserverError::InvalidResponse(e.to_string()))?;
                Ok(content["membership"].as_str().map(MembershipState::from))
            }
            Err(e) if matches!(e.kind(), Some(ErrorKind::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the room's `m.room.power_levels` content.
    pub async fn set_power_levels(
        &self,
        room_id: &RoomId,
        content: &serde_json::Value,
    ) -> Result<(), HomeserverError> {
        let raw = serde_json::value::to_raw_value(content)
            .map_err(|e| HomeserverError::Request(e.to_string()))?;
        let request = state::send_state_event::v3::Request::new_raw(
            room_id.to_owned(),
            StateEventType::RoomPowerLevels,
            String::new(),
            Raw::from_json(raw),
        );
        self.send(request, None).await?;
        Ok(())
    }

    /// The room's current state, as the appservice's sender (a member of every room it
    /// created).
    pub async fn room_state(
        &self,
        room_id: &RoomId,
    ) -> Result<Vec<Raw<AnyStateEvent>>, HomeserverError> {
        let request = state::get_state_events::v3::Request::new(room_id.to_owned());
        Ok(self.send(request, None).await?.room_state)
    }

    /// One page of the room's timeline, newest first, from `from` (the end when `None`):
    /// the events and the token of the next (older) page, `None` at the room's start.
    pub async fn history_page(
        &self,
        room_id: &RoomId,
        from: Option<String>,
        limit: u32,
    ) -> Result<(Vec<Raw<AnyTimelineEvent>>, Option<String>), HomeserverError> {
        let mut request = get_message_events::v3::Request::backward(room_id.to_owned());
        request.from = from;
        request.limit = UInt::from(limit);
        let response = self.send(request, None).await?;
        let end = response.end.filter(|_| !response.chunk.is_empty());
        Ok((response.chunk, end))
    }
}
