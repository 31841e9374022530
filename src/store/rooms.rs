//! `city_rooms`.

use chrono::{DateTime, Utc};
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use sqlx::{Row as _, postgres::PgRow};

use super::Store;
use super::model::MappedRoom;
use crate::{
    Result,
    domain::{
        CityRoomId, Slug, Visibility,
        events::{RoomArchived, RoomCreated, subjects},
    },
};

/// A city room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CityRoom {
    /// `room_city_<slug>`.
    pub id: CityRoomId,
    /// The slug.
    pub slug: Slug,
    /// The name, without the Matrix prefix.
    pub name: String,
    /// The description (Matrix topic).
    pub description: Option<String>,
    /// The room the UI opens first.
    pub is_default: bool,
    /// Who may see it.
    pub visibility: Visibility,
    /// When it was archived.
    pub archived_at: Option<DateTime<Utc>>,
    /// The Matrix room, once it exists.
    pub matrix_room_id: Option<OwnedRoomId>,
    /// The Matrix alias, once it exists.
    pub matrix_room_alias: Option<OwnedRoomAliasId>,
    /// The microDAO the room (channel) belongs to; such rooms are not the city's.
    pub microdao_id: Option<String>,
    /// Whether the Matrix room is end-to-end encrypted (indexed as metadata only).
    pub encrypted: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl CityRoom {
    /// The directory entry of the room.
    pub fn mapped(&self) -> MappedRoom {
        MappedRoom {
            id: self.id.clone(),
            slug: self.slug.clone(),
            visibility: self.visibility,
            encrypted: self.encrypted,
        }
    }
}

fn decode<T, E: std::fmt::Display>(column: &str, value: Result<T, E>) -> Result<T, sqlx::Error> {
    value.map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: e.to_string().into(),
    })
}

impl<'r> sqlx::FromRow<'r, PgRow> for CityRoom {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let matrix_room_id: Option<String> = row.try_get("matrix_room_id")?;
        let matrix_room_alias: Option<String> = row.try_get("matrix_room_alias")?;
        Ok(Self {
            id: decode("id", CityRoomId::parse(row.try_get::<String, _>("id")?))?,
            slug: decode("slug", Slug::parse(row.try_get::<String, _>("slug")?))?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            is_default: row.try_get("is_default")?,
            visibility: decode(
                "visibility",
                Visibility::try_from(row.try_get::<String, _>("visibility")?),
            )?,
            archived_at: row.try_get("archived_at")?,
            matrix_room_id: matrix_room_id
                .map(|id| decode("matrix_room_id", OwnedRoomId::try_from(id)))
                .transpose()?,
            matrix_room_alias: matrix_room_alias
                .map(|a| decode("matrix_room_alias", OwnedRoomAliasId::try_from(a)))
                .transpose()?,
            microdao_id: row.try_get("microdao_id")?,
            encrypted: row.try_get("encrypted")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

pub(super) const COLUMNS: &str = "id, slug, name, description, is_default, visibility, \
                       archived_at, matrix_room_id, matrix_room_alias, microdao_id, encrypted, \
                       created_at, updated_at";

/// What recording a Matrix room found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The room is now the city room's.
    Mapped {
        /// Whether the city room is archived (it was archived during the creation).
        archived: bool,
    },
    /// The city room already has another Matrix room (mapped by another instance).
    Other(OwnedRoomId),
    /// There is no such city room.
    Gone,
}

/// A city room to create.
#[derive(Debug, Clone)]
pub struct NewRoom<'a> {
    /// The slug.
    pub slug: &'a Slug,
    /// The name.
    pub name: &'a str,
    /// The description.
    pub description: Option<&'a str>,
    /// Who may see it.
    pub visibility: Visibility,
    /// Whether it becomes the default room (the previous default stops being it).
    pub is_default: bool,
    /// The microDAO it belongs to (a messaging channel).
    pub microdao_id: Option<&'a str>,
    /// Whether its Matrix room is created end-to-end encrypted.
    pub encrypted: bool,
    /// The person creating it through the messaging API (Matrix user, JWT subject): made
    /// its admin once its Matrix room exists.
    pub creator: Option<(&'a UserId, &'a str)>,
}

/// A channel whose creator has yet to be joined and made admin of its Matrix room.
#[derive(Debug, Clone)]
pub struct UnsettledCreator {
    /// The channel.
    pub id: CityRoomId,
    /// Its Matrix room.
    pub matrix_room_id: OwnedRoomId,
    /// The creator.
    pub user_id: OwnedUserId,
    /// The creator's JWT subject.
    pub sub: String,
    /// The microDAO of the channel.
    pub microdao_id: Option<String>,
    /// Whether the room is invite-only (the creator is invited before joining).
    pub private: bool,
}

/// Changes to a city room's own fields.
#[derive(Debug, Clone, Default)]
pub struct RoomUpdate<'a> {
    /// A new name.
    pub name: Option<&'a str>,
    /// A new description (`Some(None)` clears it).
    pub description: Option<Option<&'a str>>,
    /// Whether it is the default room.
    pub is_default: Option<bool>,
}

impl Store {
    /// Stores a new city room, pending its Matrix room. `None` if the slug is taken.
    pub async fn insert_room(&self, room: &NewRoom<'_>) -> Result<Option<CityRoom>> {
        let mut tx = self.pool.begin().await?;
        let inserted: Option<CityRoom> = sqlx::query_as(&format!(
            "INSERT INTO city_rooms (id, slug, name, description, visibility, microdao_id, \
                                     encrypted, creator_user_id, creator_sub, created_by, \
                                     matrix_pending_since) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8, now()) \
             ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
        ))
        .bind(room.slug.city_room_id().as_str())
        .bind(room.slug.as_str())
        .bind(room.name)
        .bind(room.description)
        .bind(room.visibility.as_str())
        .bind(room.microdao_id)
        .bind(room.encrypted)
        .bind(room.creator.map(|(user, _)| user.as_str()))
        .bind(room.creator.map(|(_, sub)| sub))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mut inserted) = inserted else {
            tx.rollback().await?;
            return Ok(None);
        };
        super::outbox::record_event(
            &mut tx,
            subjects::ROOM_CREATED,
            inserted.id.as_str(),
            &serde_json::to_value(RoomCreated {
                room_id: inserted.id.as_str(),
                slug: inserted.slug.as_str(),
                name: &inserted.name,
                visibility: inserted.visibility.as_str(),
                microdao_id: inserted.microdao_id.as_deref(),
            })
            .expect("payloads serialize"),
        )
        .await?;
        if room.is_default {
            // Only once the room exists: a refused create leaves the default alone.
            // Two statements: one default at every step, for the partial unique index.
            sqlx::query(
                "UPDATE city_rooms SET is_default = false, updated_at = now() WHERE is_default",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE city_rooms SET is_default = true WHERE slug = $1")
                .bind(room.slug.as_str())
                .execute(&mut *tx)
                .await?;
            inserted.is_default = true;
        }
        tx.commit().await?;
        Ok(Some(inserted))
    }

    /// How many channels `user` created through the messaging API that are not archived.
    pub async fn channels_created_by(&self, user: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM city_rooms WHERE created_by = $1 AND archived_at IS NULL",
        )
        .bind(user)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Reserves `user`'s `Idempotency-Key` `key` for a send to `channel`, before anything
    /// is sent: `None` when this request holds it now (it was free, or its holder has been
    /// sending for longer than `stale_after` — a request cut off — and it is taken over),
    /// else what holds it: `(channel, event)`, with no event while a send is under way and
    /// no channel for keys kept from before channels were recorded.
    pub async fn reserve_send_key(
        &self,
        user: &str,
        key: &str,
        channel: &str,
        stale_after: std::time::Duration,
    ) -> Result<Option<(Option<String>, Option<String>)>> {
        // A row deleted between the statements (released by its holder) is tried again.
        for _ in 0..3 {
            let reserved: Option<i32> = sqlx::query_scalar(
                "INSERT INTO send_requests (user_id, key, channel_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, key) DO UPDATE SET reserved_at = now() \
                 WHERE send_requests.event_id IS NULL \
                   AND send_requests.channel_id = EXCLUDED.channel_id \
                   AND send_requests.reserved_at < now() - make_interval(secs => $4) \
                 RETURNING 1",
            )
            .bind(user)
            .bind(key)
            .bind(channel)
            .bind(stale_after.as_secs_f64())
            .fetch_optional(&self.pool)
            .await?;
            if reserved.is_some() {
                return Ok(None);
            }
            let held: Option<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT channel_id, event_id FROM send_requests WHERE user_id = $1 AND key = $2",
            )
            .bind(user)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(held) = held {
                return Ok(Some(held));
            }
        }
        Ok(Some((Some(channel.to_owned()), None)))
    }

    /// The send holding `user`'s `key` made `event_id`.
    pub async fn send_key_sent(&self, user: &str, key: &str, event_id: &str) -> Result<()> {
        sqlx::query("UPDATE send_requests SET event_id = $3 WHERE user_id = $1 AND key = $2")
            .bind(user)
            .bind(key)
            .bind(event_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Frees `user`'s `key`: its send was refused or failed before Synapse answered with an
    /// event. (A retry sends with the same transaction id, so a send that reached Synapse
    /// all the same is answered with its event, not made twice.)
    pub async fn release_send_key(&self, user: &str, key: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM send_requests WHERE user_id = $1 AND key = $2 AND event_id IS NULL",
        )
        .bind(user)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every city room (not the microDAOs' channels), the default first, then by name;
    /// private ones only if asked.
    pub async fn list_rooms(&self, include_private: bool) -> Result<Vec<CityRoom>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM city_rooms \
             WHERE ($1 OR visibility = 'public') AND microdao_id IS NULL \
             ORDER BY is_default DESC, name, slug"
        ))
        .bind(include_private)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Applies `update` to the room `slug`; the room as it is afterwards.
    pub async fn update_room(
        &self,
        slug: &Slug,
        update: &RoomUpdate<'_>,
    ) -> Result<Option<CityRoom>> {
        let mut tx = self.pool.begin().await?;
        if update.is_default == Some(true) {
            sqlx::query("UPDATE city_rooms SET is_default = false, updated_at = now() WHERE is_default AND slug <> $1")
                .bind(slug.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let room: Option<CityRoom> = sqlx::query_as(&format!(
            "UPDATE city_rooms SET \
                 name = COALESCE($2, name), \
                 description = CASE WHEN $3 THEN $4 ELSE description END, \
                 is_default = COALESCE($5, is_default), \
                 updated_at = now() \
             WHERE slug = $1 RETURNING {COLUMNS}"
        ))
        .bind(slug.as_str())
        .bind(update.name)
        .bind(update.description.is_some())
        .bind(update.description.flatten())
        .bind(update.is_default)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(room)
    }

    /// Keeps the power levels a room had before it was archived, unless some are kept
    /// already: a retried archive never replaces the original levels with read-only ones.
    /// The levels kept afterwards.
    pub async fn keep_power_levels(
        &self,
        slug: &Slug,
        levels: &serde_json::Value,
    ) -> Result<Option<serde_json::Value>> {
        Ok(sqlx::query_scalar(
            "UPDATE city_rooms SET pre_archive_power_levels = COALESCE(pre_archive_power_levels, $2) \
             WHERE slug = $1 RETURNING pre_archive_power_levels",
        )
        .bind(slug.as_str())
        .bind(levels)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// Marks the room archived, or active again (which drops the kept power levels: they
    /// were put back).
    /// Announces `city.room.archived` (in the same transaction) when the room was active.
    pub async fn set_archived(&self, slug: &Slug, archived: bool) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let was_active: Option<bool> = sqlx::query_scalar(
            "UPDATE city_rooms c SET \
                 archived_at = CASE WHEN $2 THEN COALESCE(c.archived_at, now()) ELSE NULL END, \
                 pre_archive_power_levels = CASE WHEN $2 THEN c.pre_archive_power_levels ELSE NULL END, \
                 updated_at = now() \
             FROM city_rooms old WHERE old.slug = c.slug AND c.slug = $1 \
             RETURNING old.archived_at IS NULL",
        )
        .bind(slug.as_str())
        .bind(archived)
        .fetch_optional(&mut *tx)
        .await?;
        if archived && was_active == Some(true) {
            super::outbox::record_event(
                &mut tx,
                subjects::ROOM_ARCHIVED,
                slug.city_room_id().as_str(),
                &serde_json::to_value(RoomArchived {
                    room_id: slug.city_room_id().as_str(),
                    slug: slug.as_str(),
                })
                .expect("payloads serialize"),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The power levels kept when the room was archived.
    pub async fn saved_power_levels(&self, slug: &Slug) -> Result<Option<serde_json::Value>> {
        Ok(
            sqlx::query_scalar("SELECT pre_archive_power_levels FROM city_rooms WHERE slug = $1")
                .bind(slug.as_str())
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    /// Active rooms without a Matrix room; `pending_only` keeps those waiting for the
    /// reconciler (created while Synapse was unavailable, or whose creation was cut off).
    pub async fn rooms_without_matrix(&self, pending_only: bool) -> Result<Vec<CityRoom>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM city_rooms \
             WHERE matrix_room_id IS NULL AND archived_at IS NULL \
               AND (NOT $1 OR matrix_pending_since IS NOT NULL) ORDER BY slug"
        ))
        .bind(pending_only)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The room with this slug.
    pub async fn room_by_slug(&self, slug: &Slug) -> Result<Option<CityRoom>> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM city_rooms WHERE slug = $1"))
                .bind(slug.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Notes that the Matrix room of `slug` is being created (one short statement, no lock
    /// held across the Matrix call): if the bridge stops before it is recorded, the
    /// reconciler finds the room pending and adopts what Synapse made.
    pub async fn claim_creation(&self, slug: &Slug) -> Result<()> {
        sqlx::query(
            "UPDATE city_rooms SET matrix_pending_since = COALESCE(matrix_pending_since, now()) \
             WHERE slug = $1 AND matrix_room_id IS NULL",
        )
        .bind(slug.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the Matrix room of `slug`, unless it has another one already.
    pub async fn record_matrix_room(
        &self,
        slug: &Slug,
        room_id: &RoomId,
        alias: &RoomAliasId,
    ) -> Result<Recorded> {
        let row: Option<(Option<String>, bool)> = sqlx::query_as(
            "WITH updated AS ( \
                 UPDATE city_rooms SET matrix_room_id = $2, matrix_room_alias = $3, \
                     matrix_pending_since = NULL, updated_at = now() \
                 WHERE slug = $1 AND (matrix_room_id IS NULL OR matrix_room_id = $2) \
                 RETURNING matrix_room_id, archived_at IS NOT NULL AS archived) \
             SELECT matrix_room_id, archived FROM updated \
             UNION ALL \
             SELECT matrix_room_id, archived_at IS NOT NULL FROM city_rooms \
             WHERE slug = $1 AND NOT EXISTS (SELECT 1 FROM updated)",
        )
        .bind(slug.as_str())
        .bind(room_id.as_str())
        .bind(alias.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => Recorded::Gone,
            Some((Some(id), archived)) if id == room_id.as_str() => Recorded::Mapped { archived },
            Some((Some(id), _)) => match OwnedRoomId::try_from(id) {
                Ok(other) => Recorded::Other(other),
                Err(_) => Recorded::Gone,
            },
            Some((None, _)) => Recorded::Gone,
        })
    }

    /// Channels with a Matrix room whose creator is not settled yet (`slug`: that one
    /// only).
    pub async fn unsettled_creators(&self, slug: Option<&Slug>) -> Result<Vec<UnsettledCreator>> {
        let rows: Vec<(String, String, String, String, Option<String>, String)> = sqlx::query_as(
            "SELECT id, matrix_room_id, creator_user_id, creator_sub, microdao_id, visibility \
             FROM city_rooms WHERE creator_user_id IS NOT NULL AND matrix_room_id IS NOT NULL \
             AND ($1::text IS NULL OR slug = $1) ORDER BY created_at",
        )
        .bind(slug.map(Slug::as_str))
        .fetch_all(&self.pool)
        .await?;
        let mut unsettled = Vec::with_capacity(rows.len());
        for (id, room_id, user_id, sub, microdao_id, visibility) in rows {
            unsettled.push(UnsettledCreator {
                id: decode("id", CityRoomId::parse(id))?,
                matrix_room_id: decode("matrix_room_id", OwnedRoomId::try_from(room_id))?,
                user_id: decode("creator_user_id", OwnedUserId::try_from(user_id))?,
                sub,
                microdao_id,
                private: visibility == Visibility::Private.as_str(),
            });
        }
        Ok(unsettled)
    }

    /// The creator of `channel` is joined and its admin: writes `messaging.channel.created`
    /// and forgets the creator, in one transaction (once, however many times it is called).
    pub async fn creator_settled(&self, channel: &UnsettledCreator, subject: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let cleared = sqlx::query(
            "UPDATE city_rooms SET creator_user_id = NULL, creator_sub = NULL \
             WHERE id = $1 AND creator_user_id IS NOT NULL",
        )
        .bind(channel.id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if cleared == 1 {
            super::outbox::record_event(
                &mut tx,
                subject,
                channel.id.as_str(),
                &serde_json::json!({
                    "type": "channel.created",
                    "channel_id": channel.id,
                    "microdao_id": channel.microdao_id,
                    "matrix_room_id": channel.matrix_room_id,
                    "created_by": channel.sub,
                }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every active city room's slug and visibility, for the presence catalog (not the
    /// microDAOs' channels).
    pub async fn room_catalog(&self) -> Result<Vec<(String, Visibility)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT slug, visibility FROM city_rooms \
             WHERE archived_at IS NULL AND microdao_id IS NULL ORDER BY slug",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(slug, v)| Some((slug, Visibility::try_from(v).ok()?)))
            .collect())
    }

    /// Every mapped Matrix room with its city room.
    pub async fn mapped_rooms(&self) -> Result<Vec<(OwnedRoomId, MappedRoom)>> {
        let rooms: Vec<CityRoom> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM city_rooms WHERE matrix_room_id IS NOT NULL"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(with_matrix_ids(rooms))
    }

    /// The mapped ones among `matrix_room_ids`.
    pub async fn rooms_by_matrix_ids(
        &self,
        matrix_room_ids: &[&RoomId],
    ) -> Result<Vec<(OwnedRoomId, MappedRoom)>> {
        let ids: Vec<&str> = matrix_room_ids.iter().map(|id| id.as_str()).collect();
        let rooms: Vec<CityRoom> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM city_rooms WHERE matrix_room_id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(with_matrix_ids(rooms))
    }
}

fn with_matrix_ids(rooms: Vec<CityRoom>) -> Vec<(OwnedRoomId, MappedRoom)> {
    rooms
        .into_iter()
        .filter_map(|room| Some((room.matrix_room_id.clone()?, room.mapped())))
        .collect()
}
