//! Read positions and what they leave unread: the channels a person sees with their unread
//! and mention counts and last message, and the counts of one channel for the people the
//! per-user feeds of an instance serve.
//!
//! A count is the channel's message rows after the reader's position (`messages_channel_seq`,
//! `(channel_id, seq)`, walked backwards from the newest), not sent by the reader and not
//! redacted; it stops at [`UNREAD_CAP`] so that no channel costs more than that many rows
//! however long it went unread.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Row as _, postgres::PgRow};

use super::{ChannelView, Store, rooms::COLUMNS};
use crate::{Result, domain::CityRoomId, store::CityRoom};

/// The most unread messages counted in a channel: a count of this many means "at least".
pub const UNREAD_CAP: i64 = 1000;

/// The counts of user `$1` in channel `c` (whose membership row of theirs is `me`), as the
/// columns `unread_count` and `mention_count`. The range is also written as a row
/// comparison, which only `messages_channel_seq` can serve: with `seq > …` alone,
/// Postgres estimates the channel's share of the table from no value (the channel is the
/// outer row's) and walks the global `messages_seq` through every channel's newer rows
/// instead; with the row comparison alone it reads the whole channel. Beyond
/// [`UNREAD_CAP`], which rows are looked at for mentions is the scan's order: the mention
/// count is then "at least". A mention is the user in `m.mentions`, or
/// their display name or localpart in the text (case-insensitive).
macro_rules! unread_counts {
    () => {
        "LEFT JOIN LATERAL (SELECT r.event_id AS read_event_id, r.seq AS read_seq \
             FROM read_positions r WHERE r.user_id = $1 AND r.room_id = c.id) rp ON true \
         LEFT JOIN LATERAL ( \
             SELECT count(*) AS unread_count, count(*) FILTER (WHERE x.mentioned) AS mention_count \
             FROM (SELECT ($1 = ANY (m.mentions) \
                           OR strpos(lower(m.content_preview), lower(split_part(substr($1, 2), ':', 1))) > 0 \
                           OR (me.display_name <> '' \
                               AND strpos(lower(m.content_preview), lower(me.display_name)) > 0)) AS mentioned \
                   FROM messages m \
                   WHERE me.membership = 'join' AND m.channel_id = c.id \
                     AND m.seq > COALESCE(rp.read_seq, 0) \
                     AND (m.channel_id, m.seq) > (c.id, COALESCE(rp.read_seq, 0)) \
                     AND m.sender_matrix_id <> $1 AND m.redacted_at IS NULL \
                   LIMIT 1000) x \
         ) u ON true"
    };
}

/// The last message of channel `c`, as `lm`. The channel as a range rather than an
/// equality keeps the order `messages_channel_seq`'s own (an equality to the outer row
/// reduces it to `seq`, which Postgres then reads from `messages_seq` backwards, through
/// every later row of the other channels, for a quiet channel).
macro_rules! last_message {
    () => {
        "LEFT JOIN LATERAL ( \
             SELECT m.matrix_event_id AS lm_event_id, m.sender_id AS lm_sender_id, \
                    m.sender_matrix_id AS lm_sender_matrix_id, m.content_preview AS lm_preview, \
                    m.created_at AS lm_created_at, m.seq AS lm_seq \
             FROM messages m \
             WHERE m.channel_id >= c.id AND m.channel_id <= c.id AND m.redacted_at IS NULL \
             ORDER BY m.channel_id DESC, m.seq DESC LIMIT 1) lm ON true"
    };
}

/// The last message of a channel, as a channel list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LastMessage {
    /// The message.
    pub matrix_event_id: String,
    /// `user:<name>`, `agent:<name>`, or a remote Matrix id.
    pub sender_id: String,
    /// The sender's Matrix id.
    pub sender_matrix_id: String,
    /// The body's first 500 characters (empty in an encrypted channel).
    pub preview: String,
    /// When the sender's server received it.
    pub created_at: DateTime<Utc>,
}

/// What a reader has not read of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Unread {
    /// Messages after the reader's read position, not their own (at most 1000; 0 in a
    /// channel they have not joined).
    pub unread_count: i64,
    /// How many of those mention the reader.
    pub mention_count: i64,
    /// The event of the reader's latest read receipt (through the API or any Matrix client).
    pub last_read_event_id: Option<String>,
    /// The newest message not deleted.
    pub last_message: Option<LastMessage>,
}

/// A channel as its list shows it to one person.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelSummary {
    /// The channel.
    #[serde(flatten)]
    pub channel: ChannelView,
    /// Whether the caller has joined it.
    pub joined: bool,
    /// What the caller has not read of it.
    #[serde(flatten)]
    pub unread: Unread,
}

fn last_message(row: &PgRow) -> Result<Option<LastMessage>, sqlx::Error> {
    let Some(event_id) = row.try_get::<Option<String>, _>("lm_event_id")? else {
        return Ok(None);
    };
    Ok(Some(LastMessage {
        matrix_event_id: event_id,
        sender_id: row.try_get("lm_sender_id")?,
        sender_matrix_id: row.try_get("lm_sender_matrix_id")?,
        preview: row.try_get("lm_preview")?,
        created_at: row.try_get("lm_created_at")?,
    }))
}

fn unread(row: &PgRow) -> Result<Unread, sqlx::Error> {
    Ok(Unread {
        unread_count: row.try_get("unread_count")?,
        mention_count: row.try_get("mention_count")?,
        last_read_event_id: row.try_get("last_read_event_id")?,
        last_message: last_message(row)?,
    })
}

const SUMMARY_FIELDS: &str = "COALESCE(me.membership = 'join', false) AS joined, \
     rp.read_event_id AS last_read_event_id, \
     COALESCE(u.unread_count, 0) AS unread_count, COALESCE(u.mention_count, 0) AS mention_count, \
     lm.lm_event_id, lm.lm_sender_id, lm.lm_sender_matrix_id, lm.lm_preview, lm.lm_created_at";

/// The membership row of user `$1` in channel `c`, as `me`.
const MY_MEMBERSHIP: &str = "LEFT JOIN LATERAL (SELECT rm.membership, rm.display_name \
     FROM room_members rm WHERE rm.room_id = c.id AND rm.user_id = $1 \
     ORDER BY rm.updated_at DESC LIMIT 1) me ON true";

impl Store {
    /// [`Store::channels`] with what `viewer` has not read of each; by last activity
    /// (newest first, channels without messages last) when `by_activity`.
    pub async fn channel_summaries(
        &self,
        viewer: &str,
        admin: bool,
        microdao_id: Option<&str>,
        bridge: &str,
        by_activity: bool,
    ) -> Result<Vec<ChannelSummary>> {
        let order = if by_activity {
            "lm.lm_seq DESC NULLS LAST, is_default DESC, name, slug"
        } else {
            "is_default DESC, name, slug"
        };
        let rows = sqlx::query(&format!(
            concat!(
                "SELECT {columns}, (SELECT count(*) FROM room_members rm \
                                    WHERE rm.room_id = c.id AND rm.membership = 'join' \
                                      AND rm.user_id <> $4) AS member_count, {fields} \
                 FROM city_rooms c {me} ",
                unread_counts!(),
                " ",
                last_message!(),
                " WHERE archived_at IS NULL \
                   AND ($3::text IS NULL OR microdao_id = $3) \
                   AND ($2 OR visibility = 'public' OR me.membership = 'join') \
                 ORDER BY {order}"
            ),
            columns = COLUMNS,
            fields = SUMMARY_FIELDS,
            me = MY_MEMBERSHIP,
            order = order,
        ))
        .bind(viewer)
        .bind(admin)
        .bind(microdao_id)
        .bind(bridge)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let room = <CityRoom as sqlx::FromRow<PgRow>>::from_row(row)?;
                Ok(ChannelSummary {
                    channel: ChannelView::new(room, row.try_get("member_count")?),
                    joined: row.try_get("joined")?,
                    unread: unread(row)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// What each of `users` who has joined `channel` has not read of it (the others are
    /// left out).
    pub async fn unread_of(
        &self,
        channel: &CityRoomId,
        users: &[&str],
    ) -> Result<Vec<(String, Unread)>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            concat!(
                "SELECT who.user_id, {fields} \
                 FROM city_rooms c CROSS JOIN LATERAL unnest($1::text[]) AS who(user_id) \
                 LEFT JOIN LATERAL (SELECT rm.membership, rm.display_name \
                     FROM room_members rm WHERE rm.room_id = c.id AND rm.user_id = who.user_id \
                     ORDER BY rm.updated_at DESC LIMIT 1) me ON true ",
                "{counts} ",
                last_message!(),
                " WHERE c.id = $2 AND me.membership = 'join'"
            ),
            fields = SUMMARY_FIELDS,
            // The counts for each user of the list rather than one `$1`.
            counts = unread_counts!().replace("$1", "who.user_id"),
        ))
        .bind(users)
        .bind(channel.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("user_id")?, unread(row)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Moves `user`'s read position in `channel` to `event_id`: the message's own stream
    /// position, or for an event that is no message of the index the channel's last
    /// message now. Only forward; whether it moved.
    pub async fn set_read_position(
        &self,
        channel: &CityRoomId,
        user: &str,
        event_id: &str,
    ) -> Result<bool> {
        let moved = sqlx::query(
            "INSERT INTO read_positions (user_id, room_id, event_id, seq) \
             SELECT $1, $2, $3, COALESCE( \
                 (SELECT seq FROM messages WHERE matrix_event_id = $3 AND channel_id = $2), \
                 (SELECT max(seq) FROM messages WHERE channel_id = $2), 0) \
             ON CONFLICT (user_id, room_id) DO UPDATE \
                 SET event_id = EXCLUDED.event_id, seq = EXCLUDED.seq, updated_at = now() \
                 WHERE read_positions.seq < EXCLUDED.seq",
        )
        .bind(user)
        .bind(channel.as_str())
        .bind(event_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(moved > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stop_at_the_cap() {
        assert!(unread_counts!().contains(&format!("LIMIT {UNREAD_CAP})")));
    }
}
