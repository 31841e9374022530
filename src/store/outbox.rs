//! The outbox: rows written with the changes they describe, and what the relay reads
//! (new messages by `seq`, unsent rows by `pos`, one order) and marks.

use std::{collections::VecDeque, sync::Arc};

use sqlx::PgConnection;

use super::{MessageView, Store};
use crate::Result;

/// One event for the bus, at its position.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// A message indexed since the relay's mark (`messaging.message.created`).
    Created(Arc<MessageView>, i64),
    /// An outbox row.
    Row(OutboxRow),
}

impl Pending {
    /// The position: `messages.seq` or `outbox.pos` (one sequence).
    pub fn position(&self) -> i64 {
        match self {
            Self::Created(_, seq) => *seq,
            Self::Row(row) => row.pos,
        }
    }
}

/// A row of `outbox`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OutboxRow {
    /// Its position.
    pub pos: i64,
    /// The subject.
    pub subject: String,
    /// The channel (city room).
    pub channel_id: String,
    /// The message concerned.
    pub event_id: Option<String>,
    /// The reaction key.
    pub key: Option<String>,
    /// A payload fixed when written.
    pub payload: Option<serde_json::Value>,
}

/// Writes outbox rows for message changes (`subject`, message, key) in `conn`'s
/// transaction, in the order given; the channel is the message's.
pub(super) async fn record_changes(
    conn: &mut PgConnection,
    changes: &[(&str, &str, Option<&str>)],
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let subjects: Vec<&str> = changes.iter().map(|c| c.0).collect();
    let events: Vec<&str> = changes.iter().map(|c| c.1).collect();
    let keys: Vec<Option<&str>> = changes.iter().map(|c| c.2).collect();
    sqlx::query(
        "INSERT INTO outbox (subject, channel_id, event_id, key) \
         SELECT u.subject, m.channel_id, u.event_id, u.key \
         FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(subject, event_id, key, n) \
         JOIN messages m ON m.matrix_event_id = u.event_id \
         ORDER BY u.n",
    )
    .bind(subjects)
    .bind(events)
    .bind(keys)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes one outbox row with a fixed payload in `conn`'s transaction.
pub(super) async fn record_event(
    conn: &mut PgConnection,
    subject: &str,
    channel_id: &str,
    payload: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (subject, channel_id, payload) VALUES ($1, $2, $3)")
        .bind(subject)
        .bind(channel_id)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// Records an event with a fixed payload (a change made in Matrix, not in Postgres).
    pub async fn record_event(
        &self,
        subject: &str,
        channel_id: &str,
        payload: &serde_json::Value,
    ) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        record_event(&mut conn, subject, channel_id, payload).await?;
        Ok(())
    }

    /// Up to `limit` events not published yet, in position order: messages after the
    /// relay's mark merged with unsent outbox rows, read in one snapshot (a reaction
    /// committed between two reads could otherwise go out before its message).
    ///
    /// `handed` are messages this instance's indexer wrote, in position order, as it wrote
    /// them: the messages after the mark are taken from there, as far as they are the
    /// same, instead of being read back (only their positions and the channels' pins are
    /// read); when the first is not there, they are read back. Those behind the mark are
    /// dropped.
    pub async fn pending(&self, limit: i64, handed: &mut Handed) -> Result<Vec<Pending>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mark: i64 = sqlx::query_scalar("SELECT seq FROM relay_progress")
            .fetch_one(&mut *tx)
            .await?;
        while handed.front().is_some_and(|(_, seq)| *seq <= mark) {
            handed.pop_front();
        }
        let (created, not_taken, source) = match handed_after(&mut tx, mark, limit, handed).await? {
            Some(Taken { created, next }) => (created, next, "handed"),
            None => (
                messages_after(&mut tx, mark, limit).await?,
                None,
                "read_back",
            ),
        };
        if !created.is_empty() {
            crate::metrics::metrics()
                .relay_messages
                .get_or_create(&crate::metrics::SourceLabel { source })
                .inc_by(u64::try_from(created.len()).unwrap_or(u64::MAX));
        }
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT pos, subject, channel_id, event_id, key, payload FROM outbox \
             WHERE sent_at IS NULL ORDER BY pos LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        // Both lists are complete up to their last position only when they are full, and
        // the messages only up to the first one not taken.
        let full = |n: usize| i64::try_from(n).unwrap_or(i64::MAX) >= limit;
        let mut bound = not_taken.map_or(i64::MAX, |next| next - 1);
        if full(created.len()) {
            bound = bound.min(created.last().map_or(i64::MAX, |(_, seq)| *seq));
        }
        if full(rows.len()) {
            bound = bound.min(rows.last().map_or(i64::MAX, |r| r.pos));
        }
        let mut pending: Vec<Pending> = created
            .into_iter()
            .map(|(view, seq)| Pending::Created(view, seq))
            .chain(rows.into_iter().map(Pending::Row))
            .filter(|p| p.position() <= bound)
            .collect();
        pending.sort_by_key(Pending::position);
        Ok(pending)
    }

    /// Records that `event` cannot be published (`reason`; its payload had `size`
    /// bytes). The relay then marks it as if published, and goes on.
    pub async fn outbox_dead_letter(
        &self,
        event: &Pending,
        subject: &str,
        reason: &str,
        size: usize,
    ) -> Result<()> {
        let (channel, event_id) = match event {
            Pending::Created(view, _) => (
                view.channel_id.as_str(),
                Some(view.matrix_event_id.as_str()),
            ),
            Pending::Row(row) => (row.channel_id.as_str(), row.event_id.as_deref()),
        };
        sqlx::query(
            "INSERT INTO outbox_dead_letters (pos, subject, channel_id, event_id, reason, size) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (pos) DO NOTHING",
        )
        .bind(event.position())
        .bind(subject)
        .bind(channel)
        .bind(event_id)
        .bind(reason)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many people reacted to each (message, key) of `pairs`.
    pub async fn reaction_counts(
        &self,
        pairs: &[(&str, &str)],
    ) -> Result<std::collections::HashMap<(String, String), i64>> {
        let (events, keys): (Vec<&str>, Vec<&str>) = pairs.iter().copied().unzip();
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT r.target_event_id, r.key, count(DISTINCT r.sender_matrix_id) \
             FROM reactions r JOIN UNNEST($1::text[], $2::text[]) AS u(event_id, key) \
               ON r.target_event_id = u.event_id AND r.key = u.key \
             GROUP BY r.target_event_id, r.key",
        )
        .bind(events)
        .bind(keys)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(e, k, n)| ((e, k), n)).collect())
    }

    /// Marks `published` as sent: the relay's mark moves to the last message, the rows
    /// get `sent_at`. One transaction.
    pub async fn mark_published(&self, published: &[Pending]) -> Result<()> {
        let last_message = published
            .iter()
            .filter_map(|p| match p {
                Pending::Created(_, seq) => Some(*seq),
                Pending::Row(_) => None,
            })
            .max();
        let rows: Vec<i64> = published
            .iter()
            .filter_map(|p| match p {
                Pending::Row(row) => Some(row.pos),
                Pending::Created(..) => None,
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        // No flush of its own (the next durable commit, or the WAL writer within
        // 3 × wal_writer_delay, flushes it): only a crash of Postgres itself loses the
        // mark, and then what it covered is published again — dropped by JetStream within
        // its duplicate window (NATS_DUPLICATE_WINDOW_SECS), sent twice past it or on the
        // in-process bus.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        if let Some(seq) = last_message {
            sqlx::query("UPDATE relay_progress SET seq = GREATEST(seq, $1)")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        if !rows.is_empty() {
            sqlx::query("UPDATE outbox SET sent_at = now() WHERE pos = ANY($1)")
                .bind(rows)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes rows sent more than `hours` ago; how many.
    pub async fn prune_outbox(&self, hours: u32) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM outbox WHERE sent_at < now() - make_interval(hours => $1)")
                .bind(i32::try_from(hours).unwrap_or(i32::MAX))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// The epoch of this database's outbox (the prefix of its `Nats-Msg-Id`s).
    pub async fn outbox_epoch(&self) -> Result<String> {
        Ok(sqlx::query_scalar("SELECT epoch FROM relay_progress")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Events not published yet: the relay's lag.
    pub async fn outbox_lag(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL) + \
                    (SELECT count(*) FROM messages \
                     WHERE seq > (SELECT seq FROM relay_progress))",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Whether the relay's lease connection still answers (its lock still held).
    pub async fn lease_alive(lease: &mut PgConnection) -> bool {
        sqlx::query("SELECT 1").execute(lease).await.is_ok()
    }

    /// Tries to become the one relay: a session advisory lock on a connection kept for
    /// as long as the relay runs. `None` when another instance holds it.
    /// (The connection leaves the pool: closing it releases the lock.)
    pub async fn relay_lease(&self) -> Result<Option<PgConnection>> {
        let mut conn = self.pool.acquire().await?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then_some(conn))
    }
}

/// Messages written by this instance's indexer, with their positions, oldest first.
pub type Handed = VecDeque<(Arc<MessageView>, i64)>;

/// What of the messages after the mark was handed over.
struct Taken {
    /// The first of `handed`, taken out, with their pins as they are now.
    created: Vec<(Arc<MessageView>, i64)>,
    /// The position of the first message after them not handed over (yet): it and what
    /// follows wait for the next round.
    next: Option<i64>,
}

/// The messages after `mark` (up to `limit`) that `handed` holds, in order, from the
/// first on: the indexer may have committed more than it has handed over yet, and those
/// wait. `None` when the first is not handed (written by another instance, or not kept):
/// the round reads them back.
async fn handed_after(
    conn: &mut PgConnection,
    mark: i64,
    limit: i64,
    handed: &mut Handed,
) -> Result<Option<Taken>> {
    if handed.is_empty() {
        return Ok(None);
    }
    let mut channels: Vec<&str> = handed
        .iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|(view, _)| view.channel_id.as_str())
        .collect();
    channels.sort_unstable();
    channels.dedup();
    let (positions, pinned): (Vec<i64>, Vec<String>) = sqlx::query_as(
        "SELECT ARRAY(SELECT seq FROM messages WHERE seq > $1 ORDER BY seq LIMIT $2), \
                ARRAY(SELECT unnest(pinned_events) FROM city_rooms WHERE id = ANY($3))",
    )
    .bind(mark)
    .bind(limit)
    .bind(&channels)
    .fetch_one(conn)
    .await?;
    let Some(same) = handed_prefix(&positions, handed.iter().map(|(_, seq)| *seq)) else {
        return Ok(None);
    };
    let created = handed
        .drain(..same)
        .map(|(mut view, seq)| {
            if pinned.contains(&view.matrix_event_id) {
                Arc::make_mut(&mut view).pinned = true;
            }
            (view, seq)
        })
        .collect();
    Ok(Some(Taken {
        created,
        next: positions.get(same).copied(),
    }))
}

/// How many of the messages at `positions` (after the mark, in order) are the first of
/// `handed` (their positions): `None` when the first of them is not.
fn handed_prefix(positions: &[i64], handed: impl Iterator<Item = i64>) -> Option<usize> {
    let same = positions
        .iter()
        .zip(handed)
        .take_while(|(position, seq)| **position == *seq)
        .count();
    (same > 0 || positions.is_empty()).then_some(same)
}

/// Messages after `mark`, up to `limit`, with their positions. (In position order by
/// `messages_seq`: the next rows, then stop.)
async fn messages_after(
    conn: &mut PgConnection,
    mark: i64,
    limit: i64,
) -> Result<Vec<(Arc<MessageView>, i64)>> {
    let views: Vec<MessageView> = sqlx::query_as(&format!(
        "SELECT {} FROM messages m WHERE m.seq > $2 ORDER BY m.seq LIMIT $3",
        super::messages::NEW_MESSAGE_COLUMNS
    ))
    .bind("")
    .bind(mark)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(views
        .into_iter()
        .map(|v| {
            let seq = super::Cursor::decode(&v.cursor).map_or(0, |c| c.0);
            (Arc::new(v), seq)
        })
        .collect())
}

/// The advisory lock key of the relay ("city-bridge relay").
const RELAY_LOCK: i64 = 0x6369_7479_7265_6c61;

#[cfg(test)]
mod tests {
    use super::handed_prefix;

    #[test]
    fn handed_messages_are_taken_as_far_as_they_are_the_messages_after_the_mark() {
        let take =
            |positions: &[i64], handed: &[i64]| handed_prefix(positions, handed.iter().copied());
        assert_eq!(take(&[4, 5, 7], &[4, 5, 7]), Some(3), "all of them");
        assert_eq!(
            take(&[4, 5, 7, 8], &[4, 5]),
            Some(2),
            "committed, not handed over yet: the next round"
        );
        assert_eq!(take(&[4, 5], &[4, 5, 9]), Some(2), "handed beyond the page");
        assert_eq!(
            take(&[4, 5, 6, 7], &[4, 5, 7]),
            Some(2),
            "another's message (6) after two: those two, then 6 is read back"
        );
        assert_eq!(
            take(&[3, 4, 5], &[4, 5]),
            None,
            "another's first: read back"
        );
        assert_eq!(take(&[4, 5], &[]), None, "nothing handed: read back");
        assert_eq!(take(&[], &[4, 5]), Some(0), "nothing after the mark");
    }
}
