//! The creator of a channel made through the API becomes its admin and a member, and
//! `messaging.channel.created` is written, once its Matrix room exists — at once, or after
//! the reconciler created it (the channel was made while Synapse was unavailable). Every
//! step is safe to repeat, so a failure half-way is retried as a whole.

use ruma::UserId;
use ruma::events::room::member::MembershipState;
use serde_json::{Value, json};
use tracing::info;

use super::{Actor, Messenger, subjects};
use crate::{Result, domain::Slug, store::UnsettledCreator};

/// Settles the creators of the channels that have a Matrix room and an unsettled creator
/// (`slug`: only that channel). Without the puppet registration nothing can be done as the
/// creator; they stay unsettled until it is configured.
pub async fn settle_creators(messenger: &Messenger, slug: Option<&Slug>) -> Result<()> {
    if messenger.puppets.is_none() {
        return Ok(());
    }
    for channel in messenger.store.unsettled_creators(slug).await? {
        settle(messenger, &channel).await?;
        info!(channel = %channel.id, creator = %channel.user_id, "channel creator is its admin");
    }
    Ok(())
}

async fn settle(messenger: &Messenger, channel: &UnsettledCreator) -> Result<()> {
    let actor = Actor::Person(channel.user_id.clone());
    actor.ensure_exists(messenger).await?;
    let Some(as_creator) = actor.homeserver(messenger) else {
        return Ok(());
    };
    let room_id = &channel.matrix_room_id;
    let levels = messenger.homeserver.power_levels(room_id).await?;
    if let Some(levels) = with_level(levels, &channel.user_id, 100) {
        messenger
            .homeserver
            .set_power_levels(room_id, &levels)
            .await?;
    }
    let membership = messenger
        .homeserver
        .membership(room_id, &channel.user_id)
        .await?;
    if membership != Some(MembershipState::Join) {
        if channel.private && membership != Some(MembershipState::Invite) {
            messenger
                .homeserver
                .invite(room_id, channel.user_id.clone(), None)
                .await?;
        }
        as_creator.join(room_id, &channel.user_id).await?;
    }
    messenger
        .store
        .creator_settled(channel, subjects::CHANNEL_CREATED)
        .await?;
    messenger.relay_due.notify_one();
    Ok(())
}

/// Power levels `levels` with `user` at `level`, or `None` when it is so already.
pub fn with_level(mut levels: Value, user: &UserId, level: i64) -> Option<Value> {
    if levels["users"][user.as_str()] == json!(level) {
        return None;
    }
    if !levels["users"].is_object() {
        levels["users"] = json!({});
    }
    levels["users"][user.as_str()] = json!(level);
    Some(levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_creator_is_raised_to_admin_once() {
        let alice = UserId::parse("@alice:example.org").unwrap();
        let raised = with_level(json!({"users": {"@bot:example.org": 100}}), &alice, 100).unwrap();
        assert_eq!(raised["users"]["@alice:example.org"], 100);
        assert_eq!(raised["users"]["@bot:example.org"], 100);
        assert!(with_level(raised, &alice, 100).is_none());
        assert_eq!(
            with_level(json!({}), &alice, 50).unwrap()["users"]["@alice:example.org"],
            50
        );
    }
}
