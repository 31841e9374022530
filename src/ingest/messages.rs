//! `m.room.message` into the message index with its reply and thread; edits
//! (`m.replace`), reactions (`m.annotation`), `m.room.redaction`, and the metadata of
//! encrypted messages.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use ruma::{OwnedEventId, events::room::redaction::RoomRedactionEventContent};

use super::{
    Change, Context, Envelope, MappedRoom, Media, MessageEdit, NewMessage, NewReaction,
    PREVIEW_CHARS, Read, Redaction, pg_text,
};

/// The body cut to at most [`PREVIEW_CHARS`] characters, never inside a character.
pub fn preview(body: &str) -> String {
    let body = pg_text(body);
    match body.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => body[..cut].to_owned(),
        None => body.into_owned(),
    }
}

fn time(envelope: &Envelope<'_>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(envelope.origin_server_ts.get().into()).unwrap_or_default()
}

/// The parts of `m.room.message` content the index keeps, read by borrowing (no typed
/// tree of every message type: the index keeps texts, notices, emotes and files).
#[derive(Debug, serde::Deserialize)]
struct MessageContent<'a> {
    #[serde(borrow)]
    msgtype: Cow<'a, str>,
    #[serde(borrow)]
    body: Cow<'a, str>,
    /// A file's name, when the body is its caption.
    #[serde(default, deserialize_with = "lenient")]
    filename: Option<String>,
    /// A file's mxc URI (unencrypted).
    #[serde(default, deserialize_with = "lenient")]
    url: Option<String>,
    /// An encrypted file (its `url` is the mxc URI).
    #[serde(default, deserialize_with = "lenient")]
    file: Option<EncryptedFile>,
    #[serde(default, deserialize_with = "lenient")]
    info: Option<FileInfo>,
    #[serde(rename = "m.relates_to", default, deserialize_with = "lenient")]
    relates_to: Option<RelatesTo>,
    #[serde(rename = "m.new_content", default, deserialize_with = "lenient")]
    new_content: Option<NewContent>,
    #[serde(rename = "m.mentions", default, deserialize_with = "lenient")]
    mentions: Option<Mentions>,
}

/// `m.mentions`: the users a message mentions (the room mention is not anyone's).
#[derive(Debug, serde::Deserialize)]
struct Mentions {
    #[serde(default)]
    user_ids: Vec<ruma::OwnedUserId>,
}

/// The most mentioned users a message keeps: enough for any real message, and a bound on
/// what one event can make the index hold.
pub const MAX_MENTIONS: usize = 50;

/// The distinct users `mentions` names, at most [`MAX_MENTIONS`].
fn mentioned(mentions: Option<Mentions>) -> Vec<ruma::OwnedUserId> {
    let mut users = mentions.map(|m| m.user_ids).unwrap_or_default();
    users.sort();
    users.dedup();
    users.truncate(MAX_MENTIONS);
    users
}

/// The replacement content of an `m.replace` edit.
#[derive(Debug, serde::Deserialize)]
struct NewContent {
    msgtype: String,
    body: String,
    #[serde(default, deserialize_with = "lenient")]
    filename: Option<String>,
}

/// The `file` of an encrypted attachment: only its URI is of use to the index.
#[derive(Debug, serde::Deserialize)]
struct EncryptedFile {
    url: String,
}

/// `info` of a file, each field read leniently (clients disagree on its shapes).
#[derive(Debug, Default, serde::Deserialize)]
struct FileInfo {
    #[serde(default, deserialize_with = "lenient")]
    mimetype: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    size: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    w: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    h: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    duration: Option<u64>,
}

/// Longest file name or type kept, in characters.
const MEDIA_TEXT_CHARS: usize = 255;

fn media_text(text: &str) -> String {
    pg_text(text).chars().take(MEDIA_TEXT_CHARS).collect()
}

/// The caption of a file message: its body, when a `filename` is given apart and differs
/// (Matrix 1.10); otherwise the body is the file name.
fn caption<'a>(body: &'a str, filename: Option<&str>) -> Option<&'a str> {
    filename.filter(|name| *name != body).map(|_| body)
}

/// A file message's preview: its caption, else its name.
fn media_preview(body: &str, filename: Option<&str>) -> String {
    preview(caption(body, filename).unwrap_or_else(|| filename.unwrap_or(body)))
}

/// The file of a media message; `Err` when it names no usable mxc URI.
fn media_of(content: &MessageContent<'_>) -> Result<Media, String> {
    let url = content
        .url
        .as_deref()
        .or(content.file.as_ref().map(|f| f.url.as_str()))
        .ok_or_else(|| format!("{} without an mxc url", content.msgtype))?;
    let mxc = <&ruma::MxcUri>::from(url);
    if mxc.validate().is_err() || url.contains('\0') || url.len() > 512 {
        return Err(format!("{} with an invalid mxc url", content.msgtype));
    }
    let info = content.info.as_ref();
    let number = |n: Option<u64>| n.and_then(|n| i64::try_from(n).ok());
    Ok(Media {
        mxc: url.to_owned(),
        mimetype: info.and_then(|i| i.mimetype.as_deref()).map(media_text),
        size: number(info.and_then(|i| i.size)),
        name: Some(media_text(
            content.filename.as_deref().unwrap_or(&content.body),
        )),
        width: number(info.and_then(|i| i.w)),
        height: number(info.and_then(|i| i.h)),
        duration: number(info.and_then(|i| i.duration)),
    })
}

/// `m.relates_to`: a reply (`m.in_reply_to`), a thread, or an edit. Read leniently: a
/// field of the wrong shape is as good as absent, so an odd relation never costs the
/// message its place in the index.
#[derive(Debug, serde::Deserialize)]
struct RelatesTo {
    #[serde(default, deserialize_with = "lenient")]
    rel_type: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    event_id: Option<OwnedEventId>,
    #[serde(rename = "m.in_reply_to", default, deserialize_with = "lenient")]
    in_reply_to: Option<InReplyTo>,
    #[serde(default, deserialize_with = "lenient")]
    is_falling_back: Option<bool>,
    /// The unstable thread prefix's way of saying the reply is real.
    #[serde(
        rename = "io.element.show_reply",
        default,
        deserialize_with = "lenient"
    )]
    show_reply: Option<bool>,
}

#[derive(Debug, serde::Deserialize)]
struct InReplyTo {
    event_id: OwnedEventId,
}

/// Any JSON value; `None` unless it reads as a `T`.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = <serde_json::Value as serde::Deserialize>::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

fn indexed_msgtype(msgtype: &str) -> Option<&'static str> {
    match msgtype {
        "m.text" => Some("m.text"),
        "m.notice" => Some("m.notice"),
        "m.emote" => Some("m.emote"),
        "m.image" => Some("m.image"),
        "m.video" => Some("m.video"),
        "m.audio" => Some("m.audio"),
        "m.file" => Some("m.file"),
        _ => None,
    }
}

/// Whether messages of `msgtype` carry a file.
pub fn is_media(msgtype: &str) -> bool {
    matches!(msgtype, "m.image" | "m.video" | "m.audio" | "m.file")
}

/// The reply target and thread root of a message's relation.
fn reply_and_thread(relation: Option<RelatesTo>) -> (Option<OwnedEventId>, Option<OwnedEventId>) {
    let Some(relation) = relation else {
        return (None, None);
    };
    let reply = relation.in_reply_to.map(|r| r.event_id);
    match (relation.rel_type.as_deref(), relation.event_id) {
        // A thread message's `m.in_reply_to` is a fallback for clients without threads
        // unless `is_falling_back` is false or absent (`io.element.show_reply` true, unstable):
        // only
        // then is it a real reply.
        (Some("m.thread"), Some(root)) => (
            reply.filter(|_| !relation.is_falling_back.unwrap_or(false)),
            Some(root),
        ),
        (Some("io.element.thread"), Some(root)) => (
            reply.filter(|_| relation.show_reply == Some(true)),
            Some(root),
        ),
        // Any other relation (or none) with `m.in_reply_to` is a reply.
        _ => (reply, None),
    }
}

fn metadata_only(envelope: &Envelope<'_>, room: &MappedRoom, ctx: &Context<'_>) -> Read {
    let (sender_id, sender_type) = ctx.classify_sender(&envelope.sender);
    Read::Change(Change::Message(NewMessage {
        channel_id: room.id.clone(),
        matrix_room_id: envelope.room_id.clone(),
        event_id: envelope.event_id.clone(),
        sender_id,
        sender_matrix_id: envelope.sender.clone(),
        sender_type,
        msgtype: None,
        preview: String::new(),
        created_at: time(envelope),
        reply_to: None,
        thread_root: None,
        media: None,
        mentions: Vec::new(),
    }))
}

/// `m.room.encrypted`: who sent something when, and nothing of what.
pub(super) fn read_encrypted(
    envelope: &Envelope<'_>,
    room: &MappedRoom,
    ctx: &Context<'_>,
) -> Read {
    metadata_only(envelope, room, ctx)
}

/// `m.reaction` with an `m.annotation` relation.
pub(super) fn read_reaction(envelope: &Envelope<'_>, room: &MappedRoom) -> Read {
    #[derive(serde::Deserialize)]
    struct Content {
        #[serde(rename = "m.relates_to")]
        relates_to: Option<Annotation>,
    }
    #[derive(serde::Deserialize)]
    struct Annotation {
        rel_type: String,
        event_id: OwnedEventId,
        key: String,
    }
    let content: Content = match serde_json::from_str(envelope.content.get()) {
        Ok(content) => content,
        Err(e) => return Read::Invalid(format!("m.reaction content: {e}")),
    };
    match content.relates_to {
        Some(a) if a.rel_type == "m.annotation" && !a.key.is_empty() => {
            Read::Change(Change::Reaction(NewReaction {
                channel_id: room.id.clone(),
                matrix_room_id: envelope.room_id.clone(),
                event_id: envelope.event_id.clone(),
                target: a.event_id,
                key: pg_text(&a.key).chars().take(REACTION_KEY_CHARS).collect(),
                sender_matrix_id: envelope.sender.clone(),
                created_at: time(envelope),
            }))
        }
        _ => Read::Ignored,
    }
}

/// Longest reaction key kept, in characters.
pub const REACTION_KEY_CHARS: usize = 64;

pub(super) fn read_message(envelope: &Envelope<'_>, room: &MappedRoom, ctx: &Context<'_>) -> Read {
    // Redacted before it was pushed (Synapse was catching up): still a message of the
    // room's history, with nothing of what it said; its redaction follows it.
    if envelope.redacted() {
        return metadata_only(envelope, room, ctx);
    }
    let content: MessageContent<'_> = match serde_json::from_str(envelope.content.get()) {
        Ok(content) => content,
        Err(e) => return Read::Invalid(format!("m.room.message content: {e}")),
    };
    let edit_of = content
        .relates_to
        .as_ref()
        .filter(|r| r.rel_type.as_deref() == Some("m.replace"));
    if let Some(edit) = edit_of {
        if room.encrypted {
            return Read::Ignored;
        }
        // An edit without its target or new content changes nothing (and its fallback
        // body is no new message).
        let (Some(target), Some(new)) = (&edit.event_id, &content.new_content) else {
            return Read::Ignored;
        };
        if indexed_msgtype(&new.msgtype).is_none() {
            return Read::Ignored;
        }
        let preview = if is_media(&new.msgtype) {
            media_preview(&new.body, new.filename.as_deref())
        } else {
            preview(&new.body)
        };
        return Read::Change(Change::Edit(MessageEdit {
            target: target.clone(),
            matrix_room_id: envelope.room_id.clone(),
            sender_matrix_id: envelope.sender.clone(),
            preview,
            edited_at: time(envelope),
        }));
    }
    let Some(msgtype) = indexed_msgtype(&content.msgtype) else {
        return Read::Ignored;
    };
    if room.encrypted {
        return metadata_only(envelope, room, ctx);
    }
    let (media, preview) = if is_media(msgtype) {
        match media_of(&content) {
            Ok(media) => (
                Some(Box::new(media)),
                media_preview(&content.body, content.filename.as_deref()),
            ),
            Err(reason) => return Read::Invalid(reason),
        }
    } else {
        (None, preview(&content.body))
    };
    let (sender_id, sender_type) = ctx.classify_sender(&envelope.sender);
    let (reply_to, thread_root) = reply_and_thread(content.relates_to);
    Read::Change(Change::Message(NewMessage {
        channel_id: room.id.clone(),
        matrix_room_id: envelope.room_id.clone(),
        event_id: envelope.event_id.clone(),
        sender_id,
        sender_matrix_id: envelope.sender.clone(),
        sender_type,
        msgtype: Some(msgtype),
        preview,
        created_at: time(envelope),
        reply_to,
        thread_root,
        media,
        mentions: mentioned(content.mentions),
    }))
}

pub(super) fn read_redaction(envelope: &Envelope<'_>, server_name: &ruma::ServerName) -> Read {
    // Room version 11 moved `redacts` into the content; read both.
    let from_content =
        match serde_json::from_str::<RoomRedactionEventContent>(envelope.content.get()) {
            Ok(content) => content.redacts,
            Err(e) => return Read::Invalid(format!("m.room.redaction content: {e}")),
        };
    match from_content.or_else(|| envelope.redacts.clone()) {
        Some(target) => Read::Change(Change::Redaction(Redaction {
            target,
            matrix_room_id: envelope.room_id.clone(),
            sender_matrix_id: envelope.sender.clone(),
            sender_is_local: envelope.sender.server_name() == server_name,
            redacted_at: time(envelope),
        })),
        None => Read::Invalid("m.room.redaction without redacts".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ingest::{
        SenderType,
        tests::{event, read},
    };

    #[test]
    fn preview_cuts_on_a_character_boundary() {
        let long = "ї".repeat(PREVIEW_CHARS + 10);
        let cut = preview(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS);
        assert!(cut.chars().all(|c| c == 'ї'));
        assert_eq!(preview("short"), "short");
    }

    #[test]
    fn text_notice_emote_are_indexed_others_ignored() {
        for (msgtype, sender, sender_type) in [
            ("m.text", "@alice:example.org", SenderType::Human),
            ("m.notice", "@agent_sofia:example.org", SenderType::Agent),
            ("m.emote", "@alice:example.org", SenderType::Human),
        ] {
            let e = event(
                "m.room.message",
                sender,
                json!({"msgtype": msgtype, "body": "hi"}),
            );
            match read(e) {
                Read::Change(Change::Message(m)) => {
                    assert_eq!(m.msgtype, Some(msgtype));
                    assert_eq!(m.sender_type, sender_type);
                    assert_eq!(m.preview, "hi");
                    assert_eq!(m.channel_id.as_str(), "room_city_general");
                }
                other => panic!("{msgtype}: {other:?}"),
            }
        }
        let location = event(
            "m.room.message",
            "@a:example.org",
            json!({"msgtype": "m.location", "body": "here", "geo_uri": "geo:1,2"}),
        );
        assert!(matches!(read(location), Read::Ignored));
    }

    #[test]
    fn media_messages_are_indexed_with_their_file() {
        let image = event(
            "m.room.message",
            "@a:example.org",
            json!({"msgtype": "m.image", "body": "city-plan.png", "url": "mxc://example.org/abc",
                   "info": {"mimetype": "image/png", "size": 1234, "w": 640, "h": 480}}),
        );
        match read(image) {
            Read::Change(Change::Message(m)) => {
                assert_eq!(m.msgtype, Some("m.image"));
                assert_eq!(m.preview, "city-plan.png");
                let media = m.media.expect("an image has media");
                assert_eq!(media.mxc, "mxc://example.org/abc");
                assert_eq!(media.mimetype.as_deref(), Some("image/png"));
                assert_eq!(
                    (media.size, media.width, media.height, media.duration),
                    (Some(1234), Some(640), Some(480), None)
                );
                assert_eq!(media.name.as_deref(), Some("city-plan.png"));
            }
            other => panic!("{other:?}"),
        }
        // A caption (the body, when a filename is given apart) is the preview.
        let captioned = event(
            "m.room.message",
            "@a:example.org",
            json!({"msgtype": "m.file", "body": "the minutes", "filename": "minutes.pdf",
                   "url": "mxc://example.org/pdf", "info": {"size": "big", "mimetype": 5}}),
        );
        match read(captioned) {
            Read::Change(Change::Message(m)) => {
                assert_eq!(
                    (m.msgtype, m.preview.as_str()),
                    (Some("m.file"), "the minutes")
                );
                let media = m.media.unwrap();
                assert_eq!(media.name.as_deref(), Some("minutes.pdf"));
                assert_eq!(
                    (media.size, media.mimetype),
                    (None, None),
                    "odd info is absent"
                );
            }
            other => panic!("{other:?}"),
        }
        for msgtype in ["m.video", "m.audio"] {
            let e = event(
                "m.room.message",
                "@a:example.org",
                json!({"msgtype": msgtype, "body": "clip", "url": "mxc://example.org/v",
                       "info": {"duration": 3000}}),
            );
            assert!(
                matches!(read(e), Read::Change(Change::Message(m)) if m.media.as_ref().and_then(|f| f.duration) == Some(3000)),
                "{msgtype}"
            );
        }
        // Without a usable mxc URI: malformed, recorded (a dead letter), never indexed.
        for url in [
            json!(null),
            json!(5),
            json!("https://example.org/x.png"),
            json!("mxc://"),
        ] {
            let bad = event(
                "m.room.message",
                "@a:example.org",
                json!({"msgtype": "m.image", "body": "x.png", "url": url}),
            );
            assert!(matches!(read(bad), Read::Invalid(_)), "{url}");
        }
    }

    #[test]
    fn malformed_content_is_invalid() {
        let e = event(
            "m.room.message",
            "@a:example.org",
            json!({"msgtype": "m.text", "body": 5}),
        );
        assert!(matches!(read(e), Read::Invalid(_)));
    }

    #[test]
    fn edits_and_redactions() {
        let edit = event(
            "m.room.message",
            "@a:example.org",
            json!({
                "msgtype": "m.text", "body": "* fixed",
                "m.new_content": {"msgtype": "m.text", "body": "fixed"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}
            }),
        );
        match read(edit) {
            Read::Change(Change::Edit(e)) => {
                assert_eq!((e.target.as_str(), e.preview.as_str()), ("$orig", "fixed"));
            }
            other => panic!("{other:?}"),
        }
        let v11 = event(
            "m.room.redaction",
            "@a:example.org",
            json!({"redacts": "$orig"}),
        );
        assert!(matches!(read(v11), Read::Change(Change::Redaction(r)) if r.target == "$orig"));
        let mut legacy = event("m.room.redaction", "@a:example.org", json!({}));
        legacy["redacts"] = json!("$old");
        assert!(matches!(read(legacy), Read::Change(Change::Redaction(r)) if r.target == "$old"));
        let none = event("m.room.redaction", "@a:example.org", json!({}));
        assert!(matches!(read(none), Read::Invalid(_)));
    }

    #[test]
    fn an_edit_without_its_new_content_or_target_changes_nothing() {
        for relates_to in [
            json!({"rel_type": "m.replace", "event_id": "$orig"}),
            json!({"rel_type": "m.replace"}),
        ] {
            let edit = event(
                "m.room.message",
                "@a:example.org",
                json!({"msgtype": "m.text", "body": "* fixed", "m.relates_to": relates_to}),
            );
            // Neither an edit nor a new message (its body is only a fallback).
            assert!(matches!(read(edit), Read::Ignored), "{relates_to}");
        }
        let bad_new_content = event(
            "m.room.message",
            "@a:example.org",
            json!({"msgtype": "m.text", "body": "* fixed",
                   "m.new_content": {"msgtype": "m.text", "body": 5},
                   "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}}),
        );
        assert!(matches!(read(bad_new_content), Read::Ignored));
        // An odd relation costs the message nothing but the relation.
        for relates_to in [
            json!({"m.in_reply_to": {"event_id": "no sigil"}}),
            json!({"rel_type": 5, "event_id": "no sigil", "is_falling_back": null}),
            json!("not an object"),
        ] {
            let odd = event(
                "m.room.message",
                "@a:example.org",
                json!({"msgtype": "m.text", "body": "x", "m.relates_to": relates_to}),
            );
            assert!(
                matches!(read(odd), Read::Change(Change::Message(m)) if m.reply_to.is_none() && m.preview == "x"),
                "{relates_to}"
            );
        }
    }

    #[test]
    fn replies_threads_reactions_and_encryption() {
        let reply = event(
            "m.room.message",
            "@a:example.org",
            json!({"msgtype": "m.text", "body": "yes",
                   "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}}}),
        );
        assert!(
            matches!(read(reply), Read::Change(Change::Message(m)) if m.reply_to.as_ref().is_some_and(|r| r == "$q") && m.thread_root.is_none())
        );
        let threaded = event(
            "m.room.message",
            "@a:example.org",
            json!({"msgtype": "m.text", "body": "in thread",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                                    "is_falling_back": true, "m.in_reply_to": {"event_id": "$last"}}}),
        );
        match read(threaded) {
            Read::Change(Change::Message(m)) => {
                assert_eq!(m.thread_root.as_ref().map(|r| r.as_str()), Some("$root"));
                assert_eq!(m.reply_to, None, "a fallback reply is no reply");
            }
            other => panic!("{other:?}"),
        }
        let real_reply_in_thread = event(
            "m.room.message",
            "@a:example.org",
            json!({"msgtype": "m.text", "body": "to you",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                                    "m.in_reply_to": {"event_id": "$you"}}}),
        );
        assert!(
            matches!(read(real_reply_in_thread), Read::Change(Change::Message(m)) if m.reply_to.as_ref().is_some_and(|r| r == "$you")),
            "without is_falling_back the reply is real"
        );
        let unstable = event(
            "m.room.message",
            "@a:example.org",
            json!({"msgtype": "m.text", "body": "old client",
                   "m.relates_to": {"rel_type": "io.element.thread", "event_id": "$root",
                                    "m.in_reply_to": {"event_id": "$last"}, "io.element.show_reply": true}}),
        );
        assert!(
            matches!(read(unstable), Read::Change(Change::Message(m)) if m.thread_root.as_ref().is_some_and(|r| r == "$root") && m.reply_to.as_ref().is_some_and(|r| r == "$last"))
        );
        let other_relation = event(
            "m.room.message",
            "@a:example.org",
            json!({"msgtype": "m.text", "body": "see above",
                   "m.relates_to": {"rel_type": "m.reference", "event_id": "$x",
                                    "m.in_reply_to": {"event_id": "$q"}}}),
        );
        assert!(
            matches!(read(other_relation), Read::Change(Change::Message(m)) if m.reply_to.as_ref().is_some_and(|r| r == "$q") && m.thread_root.is_none())
        );
        let reaction = event(
            "m.reaction",
            "@a:example.org",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$m", "key": "👍"}}),
        );
        assert!(
            matches!(read(reaction), Read::Change(Change::Reaction(r)) if r.key == "👍" && r.target == "$m")
        );
        let encrypted = event(
            "m.room.encrypted",
            "@a:example.org",
            json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "xyz"}),
        );
        match read(encrypted) {
            Read::Change(Change::Message(m)) => {
                assert_eq!((m.msgtype, m.preview.as_str()), (None, ""));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_message_pushed_after_its_redaction_is_indexed_without_content() {
        // Synapse prunes a message redacted before it was pushed: `content: {}` and
        // `unsigned.redacted_because`. It is still a message of the room's history.
        let mut e = event("m.room.message", "@alice:example.org", json!({}));
        e["unsigned"] = json!({"redacted_because": {"type": "m.room.redaction"}});
        match read(e) {
            Read::Change(Change::Message(m)) => {
                assert_eq!((m.msgtype, m.preview.as_str()), (None, ""));
                assert_eq!(m.media, None);
            }
            other => panic!("indexed, not {other:?}"),
        }
        // Without the mark, empty content is a malformed message, as before.
        assert!(matches!(
            read(event("m.room.message", "@alice:example.org", json!({}))),
            Read::Invalid(_)
        ));
    }
}
