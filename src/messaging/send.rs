//! Acting in Matrix as a person (through the puppet registration) or as an agent (through
//! the bridge's own), and indexing what Synapse accepted through the ingest pipeline at
//! once, so the answer already shows it.

use std::{collections::HashSet, sync::Mutex};

use ruma::{
    EventId, OwnedEventId, OwnedUserId, RoomId, UserId,
    api::client::room::get_room_event,
    events::{
        reaction::ReactionEventContent,
        relation::{Annotation, InReplyTo, Reply, Thread},
        room::message::{
            Relation, ReplacementMetadata, RoomMessageEventContent,
            RoomMessageEventContentWithoutRelation,
        },
    },
};
use serde_json::{Value, json};

use crate::{Result, config::Role, ingest::Indexer, matrix::Homeserver, store::Store};

/// What acting in Matrix and indexing what was sent works with.
#[derive(Debug, Clone)]
pub struct Messenger {
    /// The bridge's own client (agents act through it).
    pub homeserver: Homeserver,
    /// People, when the puppet registration is configured.
    pub puppets: Option<std::sync::Arc<Puppets>>,
    /// The database.
    pub store: Store,
    /// Indexes what was sent (on the receiving instance).
    pub indexer: std::sync::Arc<Indexer>,
    /// The instance's role: an API-only one waits for the receiver's index instead.
    pub role: Role,
    /// Woken when events were written for the relay.
    pub relay_due: std::sync::Arc<tokio::sync::Notify>,
}

/// The homeserver's people, as the puppet registration lets the bridge act for them.
#[derive(Debug)]
pub struct Puppets {
    homeserver: Homeserver,
    /// Users known to exist in Synapse (registered now or before).
    known: Mutex<HashSet<OwnedUserId>>,
}

impl Puppets {
    /// Puppets through the client `homeserver` (holding the puppet `as_token`).
    pub fn new(homeserver: Homeserver) -> Self {
        Self {
            homeserver,
            known: Mutex::default(),
        }
    }

    /// Makes sure Synapse knows `user` (a person of this homeserver): registers it on
    /// first use. A user that exists already is fine.
    pub async fn ensure(&self, user: &UserId) -> Result<()> {
        if self.known.lock().expect("not poisoned").contains(user) {
            return Ok(());
        }
        self.homeserver.register_user(user.localpart()).await?;
        self.known
            .lock()
            .expect("not poisoned")
            .insert(user.to_owned());
        Ok(())
    }
}

/// Who acts in Matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A person of the homeserver, through the puppet registration.
    Person(OwnedUserId),
    /// An agent, the bridge's own virtual user.
    Agent(OwnedUserId),
}

impl Actor {
    /// The Matrix user.
    pub fn user(&self) -> &UserId {
        match self {
            Self::Person(user) | Self::Agent(user) => user,
        }
    }

    /// The client to act through; `None` for a person when puppeting is disabled.
    pub fn homeserver<'a>(&self, messenger: &'a Messenger) -> Option<&'a Homeserver> {
        match self {
            Self::Person(_) => messenger.puppets.as_deref().map(|p| &p.homeserver),
            Self::Agent(_) => Some(&messenger.homeserver),
        }
    }

    /// Sends `outgoing` as this actor under the idempotency transaction id `txn_id`; the
    /// event id Synapse answers. The same transaction id again is answered with the first
    /// event (a retry, or a concurrent request with the same key), whose content may not be
    /// `outgoing`'s: index it with [`Actor::index_stored`], never from `outgoing`.
    pub async fn send_keyed(
        &self,
        homeserver: &Homeserver,
        room_id: &RoomId,
        txn_id: &str,
        outgoing: &Outgoing,
    ) -> Result<OwnedEventId> {
        Ok(homeserver
            .send_event(
                room_id,
                outgoing.event_type,
                txn_id,
                &outgoing.content,
                self.user(),
            )
            .await?)
    }

    /// Indexes `event_id` as Synapse stored it, read back as this actor (on an API-only
    /// instance: waits for the receiver to index it, at most 10 s).
    pub async fn index_stored(
        &self,
        messenger: &Messenger,
        homeserver: &Homeserver,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<()> {
        let request = get_room_event::v3::Request::new(room_id.to_owned(), event_id.to_owned());
        let stored = homeserver.send(request, Some(self.user())).await?.event;
        let mut event: Value = serde_json::from_str(stored.json().get()).map_err(|e| {
            crate::matrix::HomeserverError::InvalidResponse(format!("the stored event: {e}"))
        })?;
        // What the index keys and routes by is what Synapse said, whatever the body holds.
        event["event_id"] = json!(event_id);
        event["room_id"] = json!(room_id);
        if event["origin_server_ts"].as_i64().is_none() {
            event["origin_server_ts"] = json!(chrono::Utc::now().timestamp_millis());
        }
        apply_or_wait(messenger, event_id, event).await
    }

    /// Makes sure the acting user exists in Synapse. (Agents are provisioned by the
    /// agents API.)
    pub async fn ensure_exists(&self, messenger: &Messenger) -> Result<()> {
        match (self, messenger.puppets.as_deref()) {
            (Self::Person(user), Some(puppets)) => puppets.ensure(user).await,
            _ => Ok(()),
        }
    }
}

/// A message-like event to send: its content built from ruma's typed content
/// ([`RoomMessageEventContent`] with its [`Relation`], [`ReactionEventContent`]), held
/// serialized for the send and the index.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `m.room.message` or `m.reaction`.
    pub event_type: &'static str,
    /// The content.
    pub content: Value,
}

impl Outgoing {
    /// An `m.room.message` of `content`.
    pub fn message(content: &RoomMessageEventContent) -> Self {
        Self {
            event_type: "m.room.message",
            content: serde_json::to_value(content).expect("message content serializes"),
        }
    }

    /// A text (`m.text`, `m.emote`, `m.notice`), maybe a reply, maybe in a thread.
    pub fn text(
        msgtype: &str,
        text: &str,
        reply_to: Option<&EventId>,
        thread_root: Option<&EventId>,
    ) -> Self {
        let mut content = plain(msgtype, text);
        content.relates_to = relation(reply_to, thread_root);
        Self::message(&content)
    }

    /// A file message (`m.image`, `m.video`, `m.audio`, `m.file`) of `content` as
    /// `messaging::media` writes it, read as ruma's typed content; maybe a reply, maybe in
    /// a thread.
    pub fn file(
        content: Value,
        reply_to: Option<&EventId>,
        thread_root: Option<&EventId>,
    ) -> Result<Self> {
        let mut content = typed(content)?;
        content.relates_to = relation(reply_to, thread_root);
        Ok(Self::message(&content))
    }

    /// An `m.replace` edit of `target` (the body carries the `* ` fallback).
    pub fn edit(target: &EventId, msgtype: &str, text: &str) -> Self {
        Self::message(
            &plain(msgtype, text)
                .make_replacement(ReplacementMetadata::new(target.to_owned(), None)),
        )
    }

    /// An `m.replace` edit of `target` whose new content is `new_content` (a file's keeps
    /// its `url` and `info`: only the caption changes).
    pub fn replace(target: &EventId, new_content: Value) -> Result<Self> {
        Ok(Self::message(&typed(new_content)?.make_replacement(
            ReplacementMetadata::new(target.to_owned(), None),
        )))
    }

    /// An `m.annotation` of `target` with `key`.
    pub fn reaction(target: &EventId, key: &str) -> Self {
        let content = ReactionEventContent::new(Annotation::new(target.to_owned(), key.to_owned()));
        Self {
            event_type: "m.reaction",
            content: serde_json::to_value(&content).expect("reaction content serializes"),
        }
    }
}

/// The relation of a message that replies to `reply_to` and/or is in the thread of
/// `thread_root`: in a thread, `m.in_reply_to` is the reply, or a fallback to the root for
/// clients without threads.
fn relation(
    reply_to: Option<&EventId>,
    thread_root: Option<&EventId>,
) -> Option<Relation<RoomMessageEventContentWithoutRelation>> {
    match (thread_root, reply_to) {
        (Some(root), Some(reply)) => Some(Relation::Thread(Thread::reply(
            root.to_owned(),
            reply.to_owned(),
        ))),
        (Some(root), None) => Some(Relation::Thread(Thread::plain(
            root.to_owned(),
            root.to_owned(),
        ))),
        (None, Some(reply)) => Some(Relation::Reply(Reply::new(InReplyTo::new(
            reply.to_owned(),
        )))),
        (None, None) => None,
    }
}

/// Message content built as JSON (a file's), read as ruma's typed content.
fn typed(content: Value) -> Result<RoomMessageEventContent> {
    serde_json::from_value(content)
        .map_err(|e| crate::Error::Internal(format!("message content: {e}")))
}

/// A plain-text message of `msgtype` (`m.emote`, `m.notice`, else `m.text`).
fn plain(msgtype: &str, text: &str) -> RoomMessageEventContent {
    match msgtype {
        "m.emote" => RoomMessageEventContent::emote_plain(text),
        "m.notice" => RoomMessageEventContent::notice_plain(text),
        _ => RoomMessageEventContent::text_plain(text),
    }
}

/// Sends `outgoing` to `room_id` as `actor` (Synapse deduplicates `txn_id`), then indexes
/// the event.
pub async fn send(
    messenger: &Messenger,
    actor: &Actor,
    homeserver: &Homeserver,
    room_id: &RoomId,
    txn_id: &str,
    outgoing: &Outgoing,
) -> Result<OwnedEventId> {
    let event_id = homeserver
        .send_event(
            room_id,
            outgoing.event_type,
            txn_id,
            &outgoing.content,
            actor.user(),
        )
        .await?;
    let event = json!({
        "type": outgoing.event_type,
        "content": outgoing.content,
    });
    index_sent(messenger, room_id, &event_id, actor.user(), event).await?;
    Ok(event_id)
}

/// Redacts `target` as `actor`, then indexes the redaction.
pub async fn redact(
    messenger: &Messenger,
    actor: &Actor,
    homeserver: &Homeserver,
    room_id: &RoomId,
    target: &EventId,
    txn_id: &str,
) -> Result<OwnedEventId> {
    let event_id = homeserver
        .redact(room_id, target, txn_id, actor.user())
        .await?;
    let event = json!({
        "type": "m.room.redaction",
        "redacts": target,
        "content": {"redacts": target},
    });
    index_sent(messenger, room_id, &event_id, actor.user(), event).await?;
    Ok(event_id)
}

/// Runs an event Synapse accepted through the ingest pipeline, as if pushed: the push
/// that follows finds it indexed and changes nothing. (`origin_server_ts` is the bridge's
/// clock here; Synapse's differs by the send's round trip.)
async fn index_sent(
    messenger: &Messenger,
    room_id: &RoomId,
    event_id: &EventId,
    sender: &UserId,
    mut event: Value,
) -> Result<()> {
    event["event_id"] = json!(event_id);
    event["room_id"] = json!(room_id);
    event["sender"] = json!(sender);
    event["origin_server_ts"] = json!(chrono::Utc::now().timestamp_millis());
    apply_or_wait(messenger, event_id, event).await
}

/// Indexes `event` (complete, as Synapse would push it) through the pipeline; on an
/// API-only instance, waits for the receiver to index a new row instead.
async fn apply_or_wait(messenger: &Messenger, event_id: &EventId, event: Value) -> Result<()> {
    if messenger.role == Role::Api {
        // The index has one writer, the instance Synapse pushes to: wait for its push of
        // a new row (edits and redactions change rows, and show when they are applied).
        let changes_a_row = event["type"] == "m.room.redaction"
            || event["content"]["m.relates_to"]["rel_type"] == "m.replace";
        if changes_a_row {
            return Ok(());
        }
        return wait_for_push(messenger, event_id).await;
    }
    let raw = serde_json::value::to_raw_value(&event).expect("a JSON value serialises");
    let events = [ruma::serde::Raw::from_json(raw)];
    messenger.indexer.apply_raw("api", &events).await?;
    Ok(())
}

/// On an API-only instance: until the receiver has indexed `event_id` (at most 10 s;
/// after that the answer goes out without it).
async fn wait_for_push(messenger: &Messenger, event_id: &EventId) -> Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if messenger.store.is_indexed(event_id.as_str()).await? {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tracing::warn!(%event_id, "the receiver has not indexed an event sent 10 s ago");
    Ok(())
}

#[cfg(test)]
mod tests {
    use ruma::event_id;
    use serde_json::json;

    use super::Outgoing;

    #[test]
    fn outgoing_content_is_what_matrix_clients_read() {
        let root = event_id!("$root:example.org");
        let reply = event_id!("$reply:example.org");
        assert_eq!(
            Outgoing::text("m.text", "hi", None, Some(root)).content,
            json!({"msgtype": "m.text", "body": "hi", "m.relates_to": {
                "rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                "m.in_reply_to": {"event_id": root}}})
        );
        assert_eq!(
            Outgoing::text("m.emote", "waves", Some(reply), Some(root)).content,
            json!({"msgtype": "m.emote", "body": "waves", "m.relates_to": {
                "rel_type": "m.thread", "event_id": root,
                "m.in_reply_to": {"event_id": reply}}})
        );
        assert_eq!(
            Outgoing::text("m.notice", "ok", Some(reply), None).content,
            json!({"msgtype": "m.notice", "body": "ok",
                "m.relates_to": {"m.in_reply_to": {"event_id": reply}}})
        );
        assert_eq!(
            Outgoing::edit(root, "m.text", "fixed").content,
            json!({"msgtype": "m.text", "body": "* fixed",
                "m.new_content": {"msgtype": "m.text", "body": "fixed"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": root}})
        );
        let reaction = Outgoing::reaction(root, "👍");
        assert_eq!(reaction.event_type, "m.reaction");
        assert_eq!(
            reaction.content,
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
        );
    }

    #[test]
    fn a_file_keeps_every_field_through_rumas_typed_content() {
        let root = event_id!("$root:example.org");
        let image = json!({"msgtype": "m.image", "body": "a cat", "filename": "cat.png",
            "url": "mxc://example.org/abc",
            "info": {"mimetype": "image/png", "size": 1234, "w": 640, "h": 480}});
        let mut expected = image.clone();
        expected["m.relates_to"] = json!({"m.in_reply_to": {"event_id": root}});
        assert_eq!(
            Outgoing::file(image.clone(), Some(root), None)
                .unwrap()
                .content,
            expected
        );
        let audio = json!({"msgtype": "m.audio", "body": "voice.ogg", "filename": "voice.ogg",
            "url": "mxc://example.org/def",
            "info": {"mimetype": "audio/ogg", "size": 99, "duration": 4200}});
        assert_eq!(
            Outgoing::file(audio.clone(), None, None).unwrap().content,
            audio
        );
        let mut recaptioned = image.clone();
        recaptioned["body"] = json!("a new caption");
        let edit = Outgoing::replace(root, recaptioned.clone())
            .unwrap()
            .content;
        assert_eq!(edit["body"], "* a new caption");
        assert_eq!(edit["url"], image["url"]);
        assert_eq!(edit["m.new_content"], recaptioned);
        assert_eq!(
            edit["m.relates_to"],
            json!({"rel_type": "m.replace", "event_id": root})
        );
        assert!(Outgoing::file(json!({"msgtype": "m.image"}), None, None).is_err());
    }
}
