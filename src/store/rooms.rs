//! `city_rooms`.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::Store;
use crate::ingest::MappedRoom;

/// A city room.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CityRoom {
    /// `room_city_<slug>`.
    pub id: String,
    /// The slug.
    pub slug: String,
    /// The name, without the Matrix prefix.
    pub name: String,
    /// The description (Matrix topic).
    pub description: Option<String>,
    /// The room the UI opens first.
    pub is_default: bool,
    /// `public` or `private`.
    pub visibility: String,
    /// When it was archived.
    pub archived_at: Option<DateTime<Utc>>,
    /// The Matrix room, once it exists.
    pub matrix_room_id: Option<String>,
    /// The Matrix alias, once it exists.
    pub matrix_room_alias: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, slug, name, description, is_default, visibility, archived_at, \
                       matrix_room_id, matrix_room_alias, created_at, updated_at";

/// A city room locked (`FOR UPDATE`) while its Matrix room is made, so that concurrent
/// callers on any instance create one Matrix room, not two.
#[derive(Debug)]
pub struct RoomLock {
    tx: Transaction<'static, Postgres>,
    /// The room as it was when locked.
    pub room: CityRoom,
}

impl RoomLock {
    /// Releases the lock without changing anything, at once rather than whenever the
    /// dropped transaction's connection is next handled by the pool.
    pub async fn release(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }

    /// Stores the Matrix room and releases the lock.
    pub async fn set_matrix_room(mut self, room_id: &str, alias: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE city_rooms SET matrix_room_id = $2, matrix_room_alias = $3, \
                 matrix_pending_since = NULL, updated_at = now() \
             WHERE id = $1",
        )
        .bind(&self.room.id)
        .bind(room_id)
        .bind(alias)
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await
    }
}

/// A city room to create.
#[derive(Debug, Clone)]
pub struct NewRoom<'a> {
    /// The slug.
    pub slug: &'a str,
    /// The name.
    pub name: &'a str,
    /// The description.
    pub description: Option<&'a str>,
    /// `public` or `private`.
    pub visibility: &'a str,
    /// Whether it becomes the default room (the previous default stops being it).
    pub is_default: bool,
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
    pub async fn insert_room(&self, room: &NewRoom<'_>) -> Result<Option<CityRoom>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let inserted: Option<CityRoom> = sqlx::query_as(&format!(
            "INSERT INTO city_rooms (id, slug, name, description, visibility, matrix_pending_since) \
             VALUES ('room_city_' || $1, $1, $2, $3, $4, now()) \
             ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
        ))
        .bind(room.slug)
        .bind(room.name)
        .bind(room.description)
        .bind(room.visibility)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mut inserted) = inserted else {
            tx.rollback().await?;
            return Ok(None);
        };
        if room.is_default {
            // Only once the room exists: a refused create leaves the default alone.
            // Two statements: one default at every step, for the partial unique index.
            sqlx::query(
                "UPDATE city_rooms SET is_default = false, updated_at = now() WHERE is_default",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE city_rooms SET is_default = true WHERE slug = $1")
                .bind(room.slug)
                .execute(&mut *tx)
                .await?;
            inserted.is_default = true;
        }
        tx.commit().await?;
        Ok(Some(inserted))
    }

    /// Every city room, the default first, then by name; private ones only if asked.
    pub async fn list_rooms(&self, include_private: bool) -> Result<Vec<CityRoom>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM city_rooms WHERE $1 OR visibility = 'public' \
             ORDER BY is_default DESC, name, slug"
        ))
        .bind(include_private)
        .fetch_all(&self.pool)
        .await
    }

    /// Applies `update` to the room `slug`; the room as it is afterwards.
    pub async fn update_room(
        &self,
        slug: &str,
        update: &RoomUpdate<'_>,
    ) -> Result<Option<CityRoom>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if update.is_default == Some(true) {
            sqlx::query("UPDATE city_rooms SET is_default = false, updated_at = now() WHERE is_default AND slug <> $1")
                .bind(slug)
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
        .bind(slug)
        .bind(update.name)
        .bind(update.description.is_some())
        .bind(update.description.flatten())
        .bind(update.is_default)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(room)
    }

    /// Marks the room archived, keeping the power levels it had to restore later, or
    /// active again.
    pub async fn set_archived(
        &self,
        slug: &str,
        archived: bool,
        saved_power_levels: Option<&serde_json::Value>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE city_rooms SET \
                 archived_at = CASE WHEN $2 THEN COALESCE(archived_at, now()) ELSE NULL END, \
                 pre_archive_power_levels = CASE WHEN $2 THEN COALESCE(pre_archive_power_levels, $3) ELSE NULL END, \
                 updated_at = now() \
             WHERE slug = $1",
        )
        .bind(slug)
        .bind(archived)
        .bind(saved_power_levels)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The power levels saved when the room was archived.
    pub async fn saved_power_levels(
        &self,
        slug: &str,
    ) -> Result<Option<serde_json::Value>, sqlx::Error> {
        Ok(
            sqlx::query_scalar("SELECT pre_archive_power_levels FROM city_rooms WHERE slug = $1")
                .bind(slug)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    /// Active rooms without a Matrix room; `pending_only` keeps those waiting for the
    /// reconciler (created while Synapse was unavailable).
    pub async fn rooms_without_matrix(
        &self,
        pending_only: bool,
    ) -> Result<Vec<CityRoom>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM city_rooms \
             WHERE matrix_room_id IS NULL AND archived_at IS NULL \
               AND (NOT $1 OR matrix_pending_since IS NOT NULL) ORDER BY slug"
        ))
        .bind(pending_only)
        .fetch_all(&self.pool)
        .await
    }

    /// The room with this slug.
    pub async fn room_by_slug(&self, slug: &str) -> Result<Option<CityRoom>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM city_rooms WHERE slug = $1"))
            .bind(slug)
            .fetch_optional(&self.pool)
            .await
    }

    /// Locks the room with this slug until the returned lock is dropped or used.
    pub async fn lock_room(&self, slug: &str) -> Result<Option<RoomLock>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let room: Option<CityRoom> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM city_rooms WHERE slug = $1 FOR UPDATE"
        ))
        .bind(slug)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(room.map(|room| RoomLock { tx, room }))
    }

    /// Every mapped Matrix room with its city room.
    pub async fn mapped_rooms(&self) -> Result<Vec<(String, MappedRoom)>, sqlx::Error> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT matrix_room_id, id, slug FROM city_rooms WHERE matrix_room_id IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(m, id, slug)| (m, MappedRoom { id, slug }))
            .collect())
    }

    /// The mapped ones among `matrix_room_ids`.
    pub async fn rooms_by_matrix_ids(
        &self,
        matrix_room_ids: &[&str],
    ) -> Result<Vec<(String, MappedRoom)>, sqlx::Error> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT matrix_room_id, id, slug FROM city_rooms WHERE matrix_room_id = ANY($1)",
        )
        .bind(matrix_room_ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(m, id, slug)| (m, MappedRoom { id, slug }))
            .collect())
    }
}
