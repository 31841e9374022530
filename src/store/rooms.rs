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
    /// Stores the Matrix room and releases the lock.
    pub async fn set_matrix_room(mut self, room_id: &str, alias: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE city_rooms SET matrix_room_id = $2, matrix_room_alias = $3, updated_at = now() \
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

impl Store {
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
