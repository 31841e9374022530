//! Applying a batch of pushed events (journal rows, an API send, a page of a discovered
//! room's history): every change and dead letter in one Postgres transaction, with the
//! journal mark the batch brings the index to.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, Transaction};
use tracing::warn;

use self::inserts::{Conflicts, insert_messages, insert_messages_at, is_unique_violation};
use super::model::{
    Change, DeadLetter, Effects, Incoming, MembershipChange, MessageEdit, NewMessage, NewReaction,
    Redaction,
};
use super::{Store, is_data_error, room_state::apply_room_state};

mod inserts;

/// The changes of one transaction, in the order Synapse sent their events.
#[derive(Debug, Default)]
pub struct Batch {
    /// Each change with the index of its event in the transaction.
    pub changes: Vec<(usize, Change)>,
    /// Events already known to be unusable.
    pub dead_letters: Vec<DeadLetter>,
    /// The journal position this batch brings the index to, recorded in its commit.
    pub journal_pos: Option<i64>,
    /// Whether some of its messages may be in the index already (a replay, a send the API
    /// indexed before Synapse pushed it). When not, new messages are inserted without the
    /// `ON CONFLICT` probe (≈ 3–4 µs a row), and inserted again with it if a key was
    /// taken after all.
    pub may_repeat: bool,
}

/// What applying a transaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Row changes applied (a replayed event's change applies as a no-op).
    pub changes: usize,
    /// Events recorded as dead letters.
    pub dead_letters: usize,
    /// What changed in the message index, for the live feeds.
    pub effects: Effects,
}

impl Effects {
    /// The outbox rows these changes make: (subject, message, reaction key).
    fn outbox_changes(&self) -> Vec<(&'static str, &str, Option<&str>)> {
        use crate::domain::events::subjects;
        self.updated
            .iter()
            .map(|e| (subjects::MESSAGE_UPDATED, e.as_str(), None))
            .chain(
                self.deleted
                    .iter()
                    .map(|e| (subjects::MESSAGE_DELETED, e.as_str(), None)),
            )
            .chain(
                self.reactions
                    .iter()
                    .map(|(e, k)| (subjects::REACTION_UPDATED, e.as_str(), Some(k.as_str()))),
            )
            .collect()
    }
}

impl Store {
    /// Applies `batch` (read from `events`) atomically. Replays are harmless: every
    /// change is idempotent per event (transaction ids are not unique over time, so they
    /// are not trusted to skip anything). A change the database refuses
    /// (a value or constraint error) is dead-lettered and the rest still lands; only an
    /// unreachable database fails the whole transaction.
    pub async fn apply_transaction(
        &self,
        events: &[Incoming<'_>],
        batch: &Batch,
    ) -> crate::Result<Applied> {
        if batch.dead_letters.is_empty()
            && batch
                .changes
                .iter()
                .all(|(_, c)| matches!(c, Change::Message(_)))
        {
            match self
                .apply_messages_only(&batch.changes, batch.journal_pos, batch.may_repeat)
                .await
            {
                Ok(applied) => return Ok(applied),
                Err(e) if is_data_error(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut tx = self.pool.begin().await?;
        let mut refused = Vec::new();
        let effects = match apply_grouped(&mut tx, &batch.changes).await {
            Ok(effects) => effects,
            Err(e) if is_data_error(&e) => {
                warn!(error = %e, "a change was refused; applying one by one");
                tx.rollback().await?;
                tx = self.pool.begin().await?;
                let (effects, dead) = apply_one_by_one(&mut tx, &batch.changes, events).await?;
                refused = dead;
                effects
            }
            Err(e) => return Err(e.into()),
        };
        super::outbox::record_changes(&mut tx, &effects.outbox_changes()).await?;
        let changes = batch.changes.len() - refused.len();
        let mut dead = batch.dead_letters.clone();
        dead.extend(refused);
        let stored = insert_dead_letters(&mut tx, &dead).await?;
        if let Some(pos) = batch.journal_pos {
            advance_journal(&mut tx, pos).await?;
        }
        tx.commit().await?;
        Ok(Applied {
            changes,
            dead_letters: stored,
            effects,
        })
    }

    /// The common case — nothing but new messages — as one statement: one round trip,
    /// one commit.
    async fn apply_messages_only(
        &self,
        changes: &[(usize, Change)],
        journal_pos: Option<i64>,
        may_repeat: bool,
    ) -> Result<Applied, sqlx::Error> {
        let messages: Vec<&NewMessage> = changes
            .iter()
            .filter_map(|(_, c)| match c {
                Change::Message(m) => Some(m),
                _ => None,
            })
            .collect();
        let mut conn = self.pool.acquire().await?;
        let created = match journal_pos {
            None => insert_messages(&mut conn, &messages).await?,
            Some(pos) if may_repeat => {
                insert_messages_at(&mut conn, &messages, pos, Conflicts::Skip).await?
            }
            Some(pos) => {
                match insert_messages_at(&mut conn, &messages, pos, Conflicts::Fail).await {
                    Err(e) if is_unique_violation(&e) => {
                        insert_messages_at(&mut conn, &messages, pos, Conflicts::Skip).await?
                    }
                    result => result?,
                }
            }
        };
        Ok(Applied {
            changes: messages.len(),
            dead_letters: 0,
            effects: Effects {
                created,
                ..Effects::default()
            },
        })
    }

    /// Dead letters recorded for a transaction, oldest first (for operators and tests).
    pub async fn dead_letters(&self, txn_id: &str) -> crate::Result<Vec<DeadLetter>> {
        Ok(sqlx::query_as(
            "SELECT txn_id, event_id, room_id, event_type, sender, reason, event \
             FROM dead_letters WHERE txn_id = $1 ORDER BY id",
        )
        .bind(txn_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes dead letters older than `days`; how many.
    pub async fn prune_dead_letters(&self, days: u32) -> crate::Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM dead_letters WHERE recorded_at < now() - make_interval(days => $1)",
        )
        .bind(i32::try_from(days).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

/// The fast path: one statement per kind of change.
async fn apply_grouped(
    conn: &mut PgConnection,
    changes: &[(usize, Change)],
) -> Result<Effects, sqlx::Error> {
    let mut messages = Vec::new();
    let mut reactions = Vec::new();
    let mut edits: Vec<&MessageEdit> = Vec::new();
    let mut redactions = Vec::new();
    let mut members: Vec<&MembershipChange> = Vec::new();
    let mut states = Vec::new();
    // A later event for the same key supersedes an earlier one in the same batch. Edits
    // are keyed by target *and* sender: someone else's edit of the same message (which
    // the update refuses) must not replace the author's.
    let mut edit_at: HashMap<(&str, &str), usize> = HashMap::new();
    let mut member_at: HashMap<(&str, &str), usize> = HashMap::new();
    for (_, change) in changes {
        match change {
            Change::Message(m) => messages.push(m),
            Change::Edit(e) => {
                let key = (e.target.as_str(), e.sender_matrix_id.as_str());
                match edit_at.get(&key) {
                    Some(&i) => edits[i] = e,
                    None => {
                        edit_at.insert(key, edits.len());
                        edits.push(e);
                    }
                }
            }
            Change::Redaction(r) => redactions.push(r),
            Change::Reaction(r) => reactions.push(r),
            Change::Membership(m) => {
                let key = (m.matrix_room_id.as_str(), m.user_id.as_str());
                match member_at.get(&key) {
                    Some(&i) => members[i] = m,
                    None => {
                        member_at.insert(key, members.len());
                        members.push(m);
                    }
                }
            }
            Change::RoomState(s) => states.push(s),
        }
    }
    let mut effects = Effects {
        created: insert_messages(conn, &messages).await?,
        updated: apply_edits(conn, &edits).await?,
        ..Effects::default()
    };
    effects.reactions = insert_reactions(conn, &reactions).await?;
    effects.extend(apply_redactions(conn, &redactions).await?);
    upsert_members(conn, &members).await?;
    for state in states {
        effects.extend(apply_room_state(conn, state).await?);
    }
    Ok(effects)
}

/// The careful path: each change under its own savepoint; refused ones become dead letters.
async fn apply_one_by_one(
    tx: &mut Transaction<'static, Postgres>,
    changes: &[(usize, Change)],
    events: &[Incoming<'_>],
) -> Result<(Effects, Vec<DeadLetter>), sqlx::Error> {
    let mut dead = Vec::new();
    let mut effects = Effects::default();
    for (index, change) in changes {
        sqlx::query("SAVEPOINT change").execute(&mut **tx).await?;
        let result = match change {
            Change::Message(m) => insert_messages(tx, &[m]).await.map(|created| Effects {
                created,
                ..Effects::default()
            }),
            Change::Edit(e) => apply_edits(tx, &[e]).await.map(|updated| Effects {
                updated,
                ..Effects::default()
            }),
            Change::Redaction(r) => apply_redactions(tx, &[r]).await,
            Change::Reaction(r) => insert_reactions(tx, &[r]).await.map(|reactions| Effects {
                reactions,
                ..Effects::default()
            }),
            Change::Membership(m) => upsert_members(tx, &[m]).await.map(|()| Effects::default()),
            Change::RoomState(s) => apply_room_state(tx, s).await,
        };
        match result {
            Ok(done) => {
                effects.extend(done);
                sqlx::query("RELEASE SAVEPOINT change")
                    .execute(&mut **tx)
                    .await?;
            }
            Err(e) if is_data_error(&e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT change")
                    .execute(&mut **tx)
                    .await?;
                let letter =
                    DeadLetter::new(events[*index], None, format!("database refused it: {e}"));
                warn!(event_id = ?letter.event_id, error = %e, "event refused by the database; dead-lettered");
                dead.push(letter);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((effects, dead))
}

/// Records in `tx` that the index has applied the journal up to `pos`.
async fn advance_journal(
    tx: &mut Transaction<'static, Postgres>,
    pos: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE ingest_progress SET pos = GREATEST(pos, $1)")
        .bind(pos)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Counts reactions; the (message, key) pairs whose count changed.
async fn insert_reactions(
    conn: &mut PgConnection,
    reactions: &[&NewReaction],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if reactions.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: fn(&NewReaction) -> &str| reactions.iter().map(|r| f(r)).collect::<Vec<&str>>();
    let times: Vec<DateTime<Utc>> = reactions.iter().map(|r| r.created_at).collect();
    sqlx::query_as(
        "INSERT INTO reactions (event_id, channel_id, matrix_room_id, target_event_id, key, \
                                sender_matrix_id, created_at) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::timestamptz[]) \
         ON CONFLICT (event_id) DO NOTHING \
         RETURNING target_event_id, key",
    )
    .bind(col(|r| r.event_id.as_str()))
    .bind(col(|r| r.channel_id.as_str()))
    .bind(col(|r| r.matrix_room_id.as_str()))
    .bind(col(|r| r.target.as_str()))
    .bind(col(|r| &r.key))
    .bind(col(|r| r.sender_matrix_id.as_str()))
    .bind(times)
    .fetch_all(conn)
    .await
}

async fn apply_edits(
    conn: &mut PgConnection,
    edits: &[&MessageEdit],
) -> Result<Vec<String>, sqlx::Error> {
    if edits.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: fn(&MessageEdit) -> &str| edits.iter().map(|e| f(e)).collect::<Vec<&str>>();
    let times: Vec<DateTime<Utc>> = edits.iter().map(|e| e.edited_at).collect();
    let updated: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "UPDATE messages m SET content_preview = u.preview, edited_at = u.ts \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) \
              AS u(target, sender, preview, ts, room) \
         WHERE m.matrix_event_id = u.target AND m.sender_matrix_id = u.sender AND m.matrix_room_id = u.room \
           AND m.redacted_at IS NULL AND m.msgtype IS NOT NULL \
           AND (m.edited_at IS NULL OR m.edited_at <= u.ts) \
         RETURNING m.matrix_event_id, m.content_preview, m.media->>'name'",
    )
    .bind(col(|e| e.target.as_str()))
    .bind(col(|e| e.sender_matrix_id.as_str()))
    .bind(col(|e| &e.preview))
    .bind(times)
    .bind(col(|e| e.matrix_room_id.as_str()))
    .fetch_all(&mut *conn)
    .await?;
    if !updated.is_empty() {
        // Found by the new text (and still by its file's name).
        let ids: Vec<&str> = updated.iter().map(|(id, ..)| id.as_str()).collect();
        let search: Vec<Option<super::search::TsVector>> = updated
            .iter()
            .map(|(_, preview, name)| super::search::document(preview, name.as_deref()))
            .collect();
        sqlx::query(
            "UPDATE messages m SET search = u.sv \
             FROM UNNEST($1::text[], $2::tsvector[]) AS u(id, sv) WHERE m.matrix_event_id = u.id",
        )
        .bind(&ids)
        .bind(&search)
        .execute(conn)
        .await?;
    }
    let updated = updated.into_iter().map(|(id, ..)| id).collect();
    Ok(updated)
}

/// Redacts messages and removes redacted reactions.
async fn apply_redactions(
    conn: &mut PgConnection,
    redactions: &[&Redaction],
) -> Result<Effects, sqlx::Error> {
    if redactions.is_empty() {
        return Ok(Effects::default());
    }
    let col = |f: fn(&Redaction) -> &str| redactions.iter().map(|r| f(r)).collect::<Vec<&str>>();
    let local: Vec<bool> = redactions.iter().map(|r| r.sender_is_local).collect();
    let times: Vec<DateTime<Utc>> = redactions.iter().map(|r| r.redacted_at).collect();
    let targets = col(|r| r.target.as_str());
    let rooms = col(|r| r.matrix_room_id.as_str());
    let senders = col(|r| r.sender_matrix_id.as_str());
    let deleted: Vec<String> = sqlx::query_scalar(
        "UPDATE messages m SET content_preview = '', media = NULL, search = NULL, redacted_at = u.ts \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[]) \
              AS u(target, room, sender, local, ts) \
         WHERE m.matrix_event_id = u.target AND m.matrix_room_id = u.room \
           AND (m.sender_matrix_id = u.sender OR u.local) AND m.redacted_at IS NULL \
         RETURNING m.matrix_event_id",
    )
    .bind(&targets)
    .bind(&rooms)
    .bind(&senders)
    .bind(&local)
    .bind(times)
    .fetch_all(&mut *conn)
    .await?;
    let reactions: Vec<(String, String)> = sqlx::query_as(
        "DELETE FROM reactions r \
         USING UNNEST($1::text[], $2::text[], $3::text[], $4::bool[]) AS u(target, room, sender, local) \
         WHERE r.event_id = u.target AND r.matrix_room_id = u.room \
           AND (r.sender_matrix_id = u.sender OR u.local) \
         RETURNING r.target_event_id, r.key",
    )
    .bind(&targets)
    .bind(&rooms)
    .bind(&senders)
    .bind(&local)
    .fetch_all(&mut *conn)
    .await?;
    // A dead letter keeps the event as received: once the event is redacted, keep only
    // its envelope, never what was said.
    sqlx::query(
        "UPDATE dead_letters d SET \
             event = json_build_object('event_id', d.event_id, 'room_id', d.room_id, \
                                       'type', d.event_type, 'redacted', true)::text, \
             reason = d.reason || ' (content removed: the event was redacted)' \
         FROM UNNEST($1::text[], $2::text[]) AS u(target, room) \
         WHERE d.event_id = u.target AND d.room_id = u.room \
           AND d.reason NOT LIKE '%(content removed: the event was redacted)'",
    )
    .bind(&targets)
    .bind(&rooms)
    .execute(conn)
    .await?;
    Ok(Effects {
        deleted,
        reactions,
        ..Effects::default()
    })
}

async fn upsert_members(
    conn: &mut PgConnection,
    members: &[&MembershipChange],
) -> Result<(), sqlx::Error> {
    if members.is_empty() {
        return Ok(());
    }
    let col =
        |f: fn(&MembershipChange) -> &str| members.iter().map(|m| f(m)).collect::<Vec<&str>>();
    let names: Vec<Option<&str>> = members.iter().map(|m| m.display_name.as_deref()).collect();
    let times: Vec<i64> = members.iter().map(|m| m.event_ts).collect();
    sqlx::query(
        "INSERT INTO room_members (matrix_room_id, user_id, room_id, membership, display_name, event_id, event_ts) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[]) \
         ON CONFLICT (matrix_room_id, user_id) DO UPDATE SET \
             room_id = EXCLUDED.room_id, membership = EXCLUDED.membership, \
             display_name = EXCLUDED.display_name, event_id = EXCLUDED.event_id, \
             event_ts = EXCLUDED.event_ts, updated_at = now() \
         WHERE room_members.event_id IS DISTINCT FROM EXCLUDED.event_id",
    )
    .bind(col(|m| m.matrix_room_id.as_str()))
    .bind(col(|m| m.user_id.as_str()))
    .bind(col(|m| m.room_id.as_str()))
    .bind(col(|m| m.membership.as_str()))
    .bind(names)
    .bind(col(|m| m.event_id.as_str()))
    .bind(times)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records dead letters. They must never stall the stream: a dead letter the database
/// refuses even so is logged (without its content) and skipped. `tx` is still usable
/// afterwards. How many were stored.
async fn insert_dead_letters(
    tx: &mut Transaction<'static, Postgres>,
    dead: &[DeadLetter],
) -> Result<usize, sqlx::Error> {
    if dead.is_empty() {
        return Ok(0);
    }
    sqlx::query("SAVEPOINT dead_letters")
        .execute(&mut **tx)
        .await?;
    match insert_dead_letter_rows(tx, dead).await {
        Ok(()) => return Ok(dead.len()),
        Err(e) if is_data_error(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT dead_letters")
                .execute(&mut **tx)
                .await?;
        }
        Err(e) => return Err(e),
    }
    let mut stored = 0;
    for letter in dead {
        sqlx::query("SAVEPOINT dead_letter")
            .execute(&mut **tx)
            .await?;
        match insert_dead_letter_rows(tx, std::slice::from_ref(letter)).await {
            Ok(()) => stored += 1,
            Err(e) if is_data_error(&e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT dead_letter")
                    .execute(&mut **tx)
                    .await?;
                tracing::error!(
                    txn_id = %letter.txn_id, event_id = ?letter.event_id, error = %e,
                    "a dead letter could not be stored; skipped"
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(stored)
}

async fn insert_dead_letter_rows(
    tx: &mut Transaction<'static, Postgres>,
    dead: &[DeadLetter],
) -> Result<(), sqlx::Error> {
    let opt =
        |f: fn(&DeadLetter) -> Option<&str>| dead.iter().map(f).collect::<Vec<Option<&str>>>();
    sqlx::query(
        "INSERT INTO dead_letters (txn_id, event_id, room_id, event_type, sender, reason, event) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(dead.iter().map(|d| d.txn_id.as_str()).collect::<Vec<_>>())
    .bind(opt(|d| d.event_id.as_deref()))
    .bind(opt(|d| d.room_id.as_deref()))
    .bind(opt(|d| d.event_type.as_deref()))
    .bind(opt(|d| d.sender.as_deref()))
    .bind(dead.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>())
    .bind(dead.iter().map(|d| d.event.as_str()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A dead letter with its id and when it was recorded (for operators).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct StoredDeadLetter {
    /// Its id.
    pub id: i64,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The dead letter.
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub letter: DeadLetter,
}

impl Store {
    /// Dead letters, newest first (at most `limit`), or those of `ids`.
    pub async fn stored_dead_letters(
        &self,
        ids: Option<&[i64]>,
        limit: i64,
    ) -> crate::Result<Vec<StoredDeadLetter>> {
        Ok(sqlx::query_as(
            "SELECT id, recorded_at, txn_id, event_id, room_id, event_type, sender, reason, \
                    event FROM dead_letters WHERE $1::bigint[] IS NULL OR id = ANY($1) \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(ids)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes the dead letters `ids`, or all older than `days` days; how many.
    pub async fn purge_dead_letters(
        &self,
        ids: Option<&[i64]>,
        older_than_days: Option<u32>,
    ) -> crate::Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM dead_letters WHERE ($1::bigint[] IS NOT NULL AND id = ANY($1)) \
             OR ($2::int IS NOT NULL AND recorded_at < now() - make_interval(days => $2))",
        )
        .bind(ids)
        .bind(older_than_days.map(|d| i32::try_from(d).unwrap_or(i32::MAX)))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
