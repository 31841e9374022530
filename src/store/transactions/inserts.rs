//! Inserting new messages: one `UNNEST` statement for a batch, with or without the journal
//! mark and the `ON CONFLICT` probe.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres};

use crate::store::{model::NewMessage, search::TsVector};

/// The columns of a batch of messages, as arrays for `UNNEST`.
struct MessageColumns<'a> {
    channel_id: Vec<&'a str>,
    matrix_room_id: Vec<&'a str>,
    event_id: Vec<&'a str>,
    sender_id: Vec<&'a str>,
    sender_matrix_id: Vec<&'a str>,
    sender_type: Vec<&'static str>,
    msgtype: Vec<Option<&'static str>>,
    preview: Vec<&'a str>,
    created_at: Vec<DateTime<Utc>>,
    reply_to: Vec<Option<&'a str>>,
    thread_root: Vec<Option<&'a str>>,
    /// JSON text, cast to `jsonb` in the statement.
    media: Vec<Option<String>>,
    /// Each message's mentioned users joined by spaces (no user id has one), or NULL.
    mentions: Vec<Option<String>>,
    /// The search vectors, in Postgres's binary form.
    search: Vec<Option<TsVector>>,
}

impl<'a> MessageColumns<'a> {
    fn new(messages: &[&'a NewMessage]) -> Self {
        let col =
            |f: fn(&'a NewMessage) -> &'a str| messages.iter().map(|m| f(m)).collect::<Vec<_>>();
        Self {
            channel_id: col(|m| m.channel_id.as_str()),
            matrix_room_id: col(|m| m.matrix_room_id.as_str()),
            event_id: col(|m| m.event_id.as_str()),
            sender_id: col(|m| &m.sender_id),
            sender_matrix_id: col(|m| m.sender_matrix_id.as_str()),
            sender_type: messages.iter().map(|m| m.sender_type.as_str()).collect(),
            msgtype: messages.iter().map(|m| m.msgtype).collect(),
            preview: col(|m| &m.preview),
            created_at: messages.iter().map(|m| m.created_at).collect(),
            reply_to: messages
                .iter()
                .map(|m| m.reply_to.as_ref().map(|e| e.as_str()))
                .collect(),
            thread_root: messages
                .iter()
                .map(|m| m.thread_root.as_ref().map(|e| e.as_str()))
                .collect(),
            media: messages
                .iter()
                .map(|m| {
                    m.media
                        .as_ref()
                        .map(|f| serde_json::to_string(f).expect("media serialises"))
                })
                .collect(),
            mentions: messages
                .iter()
                .map(|m| {
                    (!m.mentions.is_empty()).then(|| {
                        let ids: Vec<&str> = m.mentions.iter().map(|u| u.as_str()).collect();
                        ids.join(" ")
                    })
                })
                .collect(),
            search: messages.iter().map(|m| searchable(m)).collect(),
        }
    }
}

/// What search finds `message` by: the words of its preview and of its file's name (none
/// for an encrypted or pre-redacted message).
fn searchable(message: &NewMessage) -> Option<TsVector> {
    if message.msgtype.is_none() || message.preview.is_empty() {
        return None;
    }
    let name = message.media.as_ref().and_then(|m| m.name.as_deref());
    crate::store::search::document(&message.preview, name)
}

/// Inserts new messages in the order given (their stream positions follow it); the ones
/// really inserted, with their positions.
pub(super) async fn insert_messages(
    conn: &mut PgConnection,
    messages: &[&NewMessage],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    bind_messages(sqlx::query_as(INSERT_MESSAGES), messages)
        .fetch_all(conn)
        .await
}

/// [`insert_messages`] and the journal mark in one statement (one round trip, one commit).
pub(super) async fn insert_messages_at(
    conn: &mut PgConnection,
    messages: &[&NewMessage],
    journal_pos: i64,
    conflicts: Conflicts,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let insert = match conflicts {
        Conflicts::Skip => INSERT_MESSAGES,
        Conflicts::Fail => INSERT_NEW_MESSAGES,
    };
    let sql = format!(
        "WITH inserted AS ({insert}), \
              mark AS (UPDATE ingest_progress SET pos = GREATEST(pos, $15)) \
         SELECT matrix_event_id, seq FROM inserted ORDER BY seq"
    );
    bind_messages(sqlx::query_as(&sql), messages)
        .bind(journal_pos)
        .fetch_all(conn)
        .await
}

/// What an insert of messages does with an event id the index has.
#[derive(Debug, Clone, Copy)]
pub(super) enum Conflicts {
    /// Skips it (`ON CONFLICT DO NOTHING`): a replay adds nothing.
    Skip,
    /// Fails the statement (no probe before each row); the caller inserts again with
    /// [`Conflicts::Skip`].
    Fail,
}

pub(super) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505"))
}

macro_rules! insert_messages_sql {
    () => {
        "INSERT INTO messages (channel_id, matrix_room_id, matrix_event_id, sender_id, \
                           sender_matrix_id, sender_type, msgtype, content_preview, created_at, \
                           reply_to, thread_root, media, mentions, search) \
     SELECT c, r, e, s, sm, st, mt, p, t, rt, th, md::jsonb, string_to_array(mn, ' '), \
            sv \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::text[], \
                 $12::text[], $13::text[], $14::tsvector[]) \
          WITH ORDINALITY AS u(c, r, e, s, sm, st, mt, p, t, rt, th, md, mn, sv, n) \
     ORDER BY n"
    };
}
const INSERT_MESSAGES: &str = concat!(
    insert_messages_sql!(),
    " ON CONFLICT (matrix_event_id) DO NOTHING RETURNING matrix_event_id, seq"
);
const INSERT_NEW_MESSAGES: &str =
    concat!(insert_messages_sql!(), " RETURNING matrix_event_id, seq");

type MessagesQuery<'q> =
    sqlx::query::QueryAs<'q, Postgres, (String, i64), sqlx::postgres::PgArguments>;

fn bind_messages<'q>(query: MessagesQuery<'q>, messages: &[&'q NewMessage]) -> MessagesQuery<'q> {
    let columns = MessageColumns::new(messages);
    query
        .bind(columns.channel_id)
        .bind(columns.matrix_room_id)
        .bind(columns.event_id)
        .bind(columns.sender_id)
        .bind(columns.sender_matrix_id)
        .bind(columns.sender_type)
        .bind(columns.msgtype)
        .bind(columns.preview)
        .bind(columns.created_at)
        .bind(columns.reply_to)
        .bind(columns.thread_root)
        .bind(columns.media)
        .bind(columns.mentions)
        .bind(columns.search)
}
