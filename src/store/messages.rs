//! The message index as the messaging API reads it: channels, history pages, one message,
//! members, search, and the `Idempotency-Key`s of sends.

use chrono::{DateTime, Utc};
use ruma::events::room::member::MembershipState;
use serde::Serialize;
use sqlx::{Row as _, postgres::PgRow};

use super::{Store, rooms::COLUMNS};
use crate::{
    Result,
    domain::{CityRoomId, Slug},
    store::{
        CityRoom,
        model::{Media, NewMessage},
    },
};

/// A position in a channel's stream, opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub i64);

impl Cursor {
    /// The cursor as clients see it.
    pub fn encode(self) -> String {
        format!("1-{:x}", self.0)
    }

    /// A cursor a client sent back; `None` if it is not one of ours.
    pub fn decode(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("1-")?;
        if hex.is_empty() || hex.len() > 16 {
            return None;
        }
        i64::from_str_radix(hex, 16)
            .ok()
            .filter(|n| *n >= 0)
            .map(Self)
    }
}

/// One reaction key on a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ReactionCount {
    /// The key, usually an emoji.
    pub key: String,
    /// How many people reacted with it.
    pub count: i64,
    /// Whether the caller is one of them (always false on the WebSocket, which is shared).
    pub mine: bool,
}

/// A message of the index, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// The message's id: its Matrix event id.
    pub id: String,
    /// The channel (`room_city_<slug>`).
    pub channel_id: String,
    /// The Matrix event id.
    pub matrix_event_id: String,
    /// `user:<name>`, `agent:<name>`, or the Matrix id of a remote sender.
    pub sender_id: String,
    /// The sender's Matrix id.
    pub sender_matrix_id: String,
    /// `human` or `agent`.
    pub sender_type: String,
    /// `m.text`, `m.notice`, `m.emote`, `m.image`, `m.video`, `m.audio` or `m.file`;
    /// absent (null) in an encrypted channel, and for a message the homeserver had
    /// redacted before it pushed it.
    pub msgtype: Option<String>,
    /// The body's first 500 characters (a file's caption, else its name); empty once
    /// redacted and in encrypted channels.
    pub content_preview: String,
    /// The file of `m.image`, `m.video`, `m.audio` and `m.file` (download it from
    /// `/api/messaging/media/{server_name}/{media_id}`); null for text and once redacted.
    pub media: Option<Media>,
    /// When the sender's server received it.
    pub created_at: DateTime<Utc>,
    /// When it was last edited.
    pub edited_at: Option<DateTime<Utc>>,
    /// Whether it was redacted (deleted).
    pub redacted: bool,
    /// The message it replies to.
    pub reply_to: Option<String>,
    /// The root of its thread.
    pub thread_root: Option<String>,
    /// Whether it is pinned in its channel.
    pub pinned: bool,
    /// Reactions, most frequent first: at most [`MAX_REACTION_KEYS`] keys, so that no view
    /// grows with what users do (the totals below count them all).
    pub reactions: Vec<ReactionCount>,
    /// How many reactions the message has, over every key.
    pub reaction_count: i64,
    /// How many distinct keys it has been reacted with.
    pub reaction_keys: i64,
    /// Its position: `after=<cursor>` gives what came later, `before=` what came earlier.
    pub cursor: String,
}

impl<'r> sqlx::FromRow<'r, PgRow> for MessageView {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let event_id: String = row.try_get("matrix_event_id")?;
        let reactions: sqlx::types::Json<Reactions> = row.try_get("reactions")?;
        Ok(Self {
            id: event_id.clone(),
            channel_id: row.try_get("channel_id")?,
            matrix_event_id: event_id,
            sender_id: row.try_get("sender_id")?,
            sender_matrix_id: row.try_get("sender_matrix_id")?,
            sender_type: row.try_get("sender_type")?,
            msgtype: row.try_get("msgtype")?,
            content_preview: row.try_get("content_preview")?,
            media: row
                .try_get::<Option<sqlx::types::Json<Media>>, _>("media")?
                .map(|m| m.0),
            created_at: row.try_get("created_at")?,
            edited_at: row.try_get("edited_at")?,
            redacted: row.try_get("redacted")?,
            reply_to: row.try_get("reply_to")?,
            thread_root: row.try_get("thread_root")?,
            pinned: row.try_get("pinned")?,
            reactions: reactions.0.top,
            reaction_count: reactions.0.total,
            reaction_keys: reactions.0.keys,
            cursor: Cursor(row.try_get("seq")?).encode(),
        })
    }
}

impl MessageView {
    /// `message` as the index has it once written at `seq`, before anything happened to
    /// it (no edit, redaction or reaction; not pinned): what [`sqlx::FromRow`] reads back
    /// for it then.
    pub fn indexed(message: &NewMessage, seq: i64) -> Self {
        let event_id = message.event_id.to_string();
        Self {
            id: event_id.clone(),
            channel_id: message.channel_id.as_str().to_owned(),
            matrix_event_id: event_id,
            sender_id: message.sender_id.clone(),
            sender_matrix_id: message.sender_matrix_id.to_string(),
            sender_type: message.sender_type.as_str().to_owned(),
            msgtype: message.msgtype.map(str::to_owned),
            content_preview: message.preview.clone(),
            media: message.media.as_deref().cloned(),
            created_at: message.created_at,
            edited_at: None,
            redacted: false,
            reply_to: message.reply_to.as_ref().map(ToString::to_string),
            thread_root: message.thread_root.as_ref().map(ToString::to_string),
            pinned: false,
            reactions: Vec::new(),
            reaction_count: 0,
            reaction_keys: 0,
            cursor: Cursor(seq).encode(),
        }
    }
}

/// The columns of [`MessageView`] but its reactions.
macro_rules! view_fields {
    () => {
        "m.channel_id, m.matrix_event_id, m.sender_id, m.sender_matrix_id, \
         m.sender_type, m.msgtype, m.content_preview, m.created_at, m.edited_at, \
         m.redacted_at IS NOT NULL AS redacted, m.reply_to, m.thread_root, m.seq, m.media, \
         EXISTS (SELECT 1 FROM city_rooms pc WHERE pc.id = m.channel_id \
                 AND m.matrix_event_id = ANY(pc.pinned_events)) AS pinned"
    };
}
/// The most reaction keys a message view lists.
pub const MAX_REACTION_KEYS: i64 = 20;

/// The reactions of a message as read: the top keys and the totals.
#[derive(serde::Deserialize)]
struct Reactions {
    top: Vec<ReactionCount>,
    total: i64,
    keys: i64,
}

/// The reactions of message `m`: the [`MAX_REACTION_KEYS`] most frequent keys, the number
/// of reactions and of keys; `$1` is the viewer's Matrix id.
macro_rules! reactions_of_m {
    () => {
        "(SELECT json_build_object( \
               'top', COALESCE(json_agg(json_build_object('key', k.key, 'count', k.n, 'mine', k.mine) \
                                        ORDER BY k.n DESC, k.key) FILTER (WHERE k.rank <= 20), '[]'::json), \
               'total', COALESCE(sum(k.n), 0), 'keys', count(*)) \
          FROM (SELECT r.key, count(DISTINCT r.sender_matrix_id) AS n, \
                       bool_or(r.sender_matrix_id = $1) AS mine, \
                       row_number() OVER (ORDER BY count(DISTINCT r.sender_matrix_id) DESC, r.key) AS rank \
                FROM reactions r WHERE r.target_event_id = m.matrix_event_id \
                GROUP BY r.key) k)"
    };
}
/// The columns of [`MessageView`]; `$1` is the viewer's Matrix id (for `mine`).
pub(super) const MESSAGE_COLUMNS: &str =
    concat!(view_fields!(), ", ", reactions_of_m!(), " AS reactions");
/// [`MESSAGE_COLUMNS`] for messages that mostly have no reactions (just indexed): the
/// reactions are gathered only when there are some.
pub(super) const NEW_MESSAGE_COLUMNS: &str = concat!(
    view_fields!(),
    ", CASE WHEN EXISTS (SELECT 1 FROM reactions r WHERE r.target_event_id = m.matrix_event_id) \
       THEN ",
    reactions_of_m!(),
    " ELSE '{\"top\": [], \"total\": 0, \"keys\": 0}'::json END AS reactions"
);

/// Which page of a history.
#[derive(Debug, Clone, Copy)]
pub enum Page {
    /// The newest messages, or those before a cursor.
    Before(Option<Cursor>),
    /// The oldest messages after a cursor (catching up).
    After(Cursor),
}

/// A channel as the messaging API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    /// `room_city_<slug>`.
    pub id: String,
    /// The slug.
    pub slug: String,
    /// The name.
    pub name: String,
    /// The description.
    pub description: Option<String>,
    /// The microDAO the channel belongs to.
    pub microdao_id: Option<String>,
    /// `public` or `private`.
    pub visibility: crate::domain::Visibility,
    /// End-to-end encrypted (indexed as metadata only).
    pub encrypted: bool,
    /// The Matrix room, once it exists.
    pub matrix_room_id: Option<String>,
    /// The Matrix alias, once it exists.
    pub matrix_room_alias: Option<String>,
    /// Joined members (people and agents; not the bridge itself).
    pub member_count: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl ChannelView {
    pub(super) fn new(room: CityRoom, member_count: i64) -> Self {
        Self {
            id: room.id.to_string(),
            slug: room.slug.to_string(),
            name: room.name,
            description: room.description,
            microdao_id: room.microdao_id,
            visibility: room.visibility,
            encrypted: room.encrypted,
            matrix_room_id: room.matrix_room_id.map(Into::into),
            matrix_room_alias: room.matrix_room_alias.map(Into::into),
            member_count,
            created_at: room.created_at,
        }
    }
}

/// A member of a channel.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct MemberRow {
    /// The Matrix user.
    pub matrix_user_id: String,
    /// `join`, `invite`, `leave`, `ban` or `knock`.
    pub membership: String,
    /// The display name the member event carries.
    pub display_name: Option<String>,
}

/// A search hit.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    /// The message.
    #[serde(flatten)]
    pub message: MessageView,
    /// The preview with the matches between `<b>` and `</b>` (the rest HTML-escaped).
    pub highlight: String,
}

impl Store {
    /// A channel by id or slug, with its member count.
    pub async fn channel(&self, id: &CityRoomId, bridge: &str) -> Result<Option<ChannelView>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, (SELECT count(*) FROM room_members rm \
                                WHERE rm.room_id = c.id AND rm.membership = 'join' \
                                  AND rm.user_id <> $2) AS member_count \
             FROM city_rooms c WHERE id = $1"
        ))
        .bind(id.as_str())
        .bind(bridge)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| -> Result<ChannelView, sqlx::Error> {
            let room = <CityRoom as sqlx::FromRow<PgRow>>::from_row(&row)?;
            Ok(ChannelView::new(room, row.try_get("member_count")?))
        })
        .transpose()
        .map_err(Into::into)
    }

    /// The membership of `user` in the channel, as the last member event said.
    pub async fn membership(
        &self,
        channel: &CityRoomId,
        user: &str,
    ) -> Result<Option<MembershipState>> {
        let membership: Option<String> = sqlx::query_scalar(
            "SELECT membership FROM room_members WHERE room_id = $1 AND user_id = $2 \
             ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(channel.as_str())
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        Ok(membership.as_deref().map(MembershipState::from))
    }

    /// One page of a channel's history, newest first, and whether there is more beyond
    /// it (older for [`Page::Before`], newer for [`Page::After`]).
    pub async fn history(
        &self,
        channel: &CityRoomId,
        page: Page,
        limit: i64,
        viewer: &str,
    ) -> Result<(Vec<MessageView>, bool)> {
        let (condition, order, cursor) = match page {
            Page::Before(cursor) => ("m.seq < $3", "DESC", cursor.map_or(i64::MAX, |c| c.0)),
            Page::After(cursor) => ("m.seq > $3", "ASC", cursor.0),
        };
        let mut rows: Vec<MessageView> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m \
             WHERE m.channel_id = $2 AND {condition} ORDER BY m.seq {order} LIMIT $4"
        ))
        .bind(viewer)
        .bind(channel.as_str())
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        if matches!(page, Page::After(_)) {
            rows.reverse();
        }
        Ok((rows, more))
    }

    /// Whether an event is in the index (as a message, or a reaction).
    pub async fn is_indexed(&self, event_id: &str) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE matrix_event_id = $1) \
                 OR EXISTS (SELECT 1 FROM reactions WHERE event_id = $1)",
        )
        .bind(event_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Messages by event id (in no particular order).
    pub async fn messages(&self, event_ids: &[&str], viewer: &str) -> Result<Vec<MessageView>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.matrix_event_id = ANY($2)"
        ))
        .bind(viewer)
        .bind(event_ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One message of a channel.
    pub async fn message(
        &self,
        channel: &CityRoomId,
        event_id: &str,
        viewer: &str,
    ) -> Result<Option<MessageView>> {
        Ok(self
            .messages(&[event_id], viewer)
            .await?
            .into_iter()
            .find(|m| m.channel_id == channel.as_str()))
    }

    /// The reaction event of `user` with `key` on `target`, if there is one.
    pub async fn reaction_event(
        &self,
        target: &str,
        key: &str,
        user: &str,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM reactions \
             WHERE target_event_id = $1 AND key = $2 AND sender_matrix_id = $3 LIMIT 1",
        )
        .bind(target)
        .bind(key)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The members of a channel (not the bridge itself), joined first.
    pub async fn members(&self, channel: &CityRoomId, bridge: &str) -> Result<Vec<MemberRow>> {
        Ok(sqlx::query_as(
            "SELECT user_id AS matrix_user_id, membership, display_name FROM room_members \
             WHERE room_id = $1 AND user_id <> $2 \
             ORDER BY membership <> 'join', membership, user_id",
        )
        .bind(channel.as_str())
        .bind(bridge)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Of the `watched` (Matrix room, user) pairs, those whose latest indexed membership is
    /// not `join`, with the event that set it. Primary-key lookups, one statement.
    pub async fn not_joined(
        &self,
        watched: &[(String, String)],
    ) -> Result<Vec<(String, String, String)>> {
        let (rooms, users): (Vec<&str>, Vec<&str>) = watched
            .iter()
            .map(|(room, user)| (room.as_str(), user.as_str()))
            .unzip();
        Ok(sqlx::query_as(
            "SELECT rm.matrix_room_id, rm.user_id, rm.event_id \
             FROM UNNEST($1::text[], $2::text[]) AS w(matrix_room_id, user_id) \
             JOIN room_members rm USING (matrix_room_id, user_id) \
             WHERE rm.membership <> 'join'",
        )
        .bind(rooms)
        .bind(users)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The channels where the file `mxc` was posted in a message not redacted since (a
    /// file may be posted more than once).
    pub async fn media_channels(&self, mxc: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT channel_id FROM messages \
             WHERE media IS NOT NULL AND media->>'mxc' = $1 AND redacted_at IS NULL LIMIT 50",
        )
        .bind(mxc)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Full-text search over the previews of the channels `viewer` may read (never
    /// encrypted ones), best first. Words match as prefixes (`міст` finds `місто`),
    /// with the `simple` configuration: no stemming, so Ukrainian and English alike.
    pub async fn search(
        &self,
        query: &str,
        channel: Option<&CityRoomId>,
        viewer: &str,
        admin: bool,
        limit: i64,
    ) -> Result<Vec<SearchHit>> {
        let Some(query) = super::search::Query::parse(query) else {
            return Ok(Vec::new());
        };
        let views: Vec<MessageView> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} \
             FROM messages m \
             JOIN city_rooms c ON c.id = m.channel_id \
             WHERE m.search @@ $2::tsquery \
               AND m.redacted_at IS NULL AND m.msgtype IS NOT NULL \
               AND NOT c.encrypted AND c.archived_at IS NULL \
               AND ($3::text IS NULL OR m.channel_id = $3) \
               AND ($4 OR c.visibility = 'public' OR EXISTS ( \
                   SELECT 1 FROM room_members rm WHERE rm.room_id = c.id \
                   AND rm.user_id = $1 AND rm.membership = 'join')) \
             ORDER BY ts_rank(m.search, $2::tsquery) DESC, m.seq DESC \
             LIMIT $5"
        ))
        .bind(viewer)
        .bind(query.tsquery())
        .bind(channel.map(CityRoomId::as_str))
        .bind(admin)
        .bind(limit)
        .fetch_all(&self.search)
        .await
        .map_err(search_error)?;
        Ok(views
            .into_iter()
            .map(|message| SearchHit {
                highlight: query.highlight(&message.content_preview),
                message,
            })
            .collect())
    }

    /// The event a user's earlier send with this `Idempotency-Key` made.
    pub async fn sent_with_key(&self, user: &str, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar(
                "SELECT event_id FROM send_requests WHERE user_id = $1 AND key = $2",
            )
            .bind(user)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// Remembers the event a send with this `Idempotency-Key` made.
    pub async fn remember_send(&self, user: &str, key: &str, event_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO send_requests (user_id, key, event_id) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, key) DO NOTHING",
        )
        .bind(user)
        .bind(key)
        .bind(event_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets `Idempotency-Key`s older than a day; how many.
    pub async fn prune_send_requests(&self) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM send_requests WHERE created_at < now() - interval '1 day'")
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// A channel by id or slug, and the membership of `user` in it as the index has it:
    /// one round trip.
    pub async fn channel_for(
        &self,
        id_or_slug: &str,
        user: &str,
    ) -> Result<Option<(CityRoom, Option<MembershipState>)>> {
        let Some(id) = channel_id(id_or_slug) else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, (SELECT membership FROM room_members rm \
                                WHERE rm.room_id = c.id AND rm.user_id = $2 \
                                ORDER BY updated_at DESC LIMIT 1) AS membership \
             FROM city_rooms c WHERE id = $1"
        ))
        .bind(id.as_str())
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| -> Result<_, sqlx::Error> {
            let room = <CityRoom as sqlx::FromRow<PgRow>>::from_row(&row)?;
            let membership: Option<String> = row.try_get("membership")?;
            Ok((room, membership.as_deref().map(MembershipState::from)))
        })
        .transpose()
        .map_err(Into::into)
    }

    /// A channel by id or slug: the slug works wherever an id does.
    pub async fn channel_room(&self, id_or_slug: &str) -> Result<Option<CityRoom>> {
        let Some(id) = channel_id(id_or_slug) else {
            return Ok(None);
        };
        self.room_by_slug(&id.slug()).await
    }
}

/// The city room id an API path names: `room_city_<slug>` or the bare slug.
pub fn channel_id(id_or_slug: &str) -> Option<CityRoomId> {
    CityRoomId::parse(id_or_slug)
        .ok()
        .or_else(|| Slug::parse(id_or_slug).ok().map(|s| s.city_room_id()))
}

/// Whether `query` has something to search for (a word of two letters or more).
pub fn searchable(query: &str) -> bool {
    super::search::Query::parse(query).is_some()
}

/// A search that waited too long for its pool or ran past its statement timeout is the
/// caller's to retry later; anything else is the database's.
fn search_error(error: sqlx::Error) -> crate::Error {
    let timed_out = match &error {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(e) => e.code().as_deref() == Some("57014"),
        _ => false,
    };
    if timed_out {
        crate::Error::Busy("search")
    } else {
        error.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_list_at_most_the_top_reaction_keys() {
        let limit = format!("k.rank <= {MAX_REACTION_KEYS})");
        assert!(MESSAGE_COLUMNS.contains(&limit));
        assert!(NEW_MESSAGE_COLUMNS.contains(&limit));
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for n in [0, 1, 255, i64::MAX] {
            assert_eq!(Cursor::decode(&Cursor(n).encode()), Some(Cursor(n)));
        }
        for bad in ["", "1-", "2-ff", "1-zz", "1--1", "1-ffffffffffffffffff"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn channel_ids_and_slugs() {
        assert_eq!(
            channel_id("room_city_general").unwrap().as_str(),
            "room_city_general"
        );
        assert_eq!(channel_id("general").unwrap().as_str(), "room_city_general");
        assert!(channel_id("Not A Slug").is_none());
    }
}
