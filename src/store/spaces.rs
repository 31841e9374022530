//! `city_spaces` and where each city room is listed (`city_rooms.space_room_id`).

use ruma::{OwnedRoomId, RoomId};
use sqlx::{Row as _, postgres::PgRow};

use super::Store;
use crate::{Result, domain::Slug};

/// A city room with a Matrix room, seen from the Spaces: where it belongs and where the
/// bridge last listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceMember {
    /// The room.
    pub slug: Slug,
    /// Its Matrix room.
    pub matrix_room_id: OwnedRoomId,
    /// Its microDAO: it belongs in that microDAO's Space, else in the city's.
    pub microdao_id: Option<String>,
    /// Whether it is listed at all: public and not archived.
    pub listed: bool,
    /// The Space whose `m.space.child` lists it, as the bridge last set it.
    pub space_room_id: Option<OwnedRoomId>,
    /// The Space it belongs in, when that Space exists.
    pub home_space: Option<OwnedRoomId>,
}

impl<'r> sqlx::FromRow<'r, PgRow> for SpaceMember {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let optional = |column: &str| -> Result<Option<OwnedRoomId>, sqlx::Error> {
            row.try_get::<Option<String>, _>(column)?
                .map(|id| room_id(column, id))
                .transpose()
        };
        Ok(Self {
            slug: Slug::parse(row.try_get::<String, _>("slug")?).map_err(|e| {
                sqlx::Error::ColumnDecode {
                    index: "slug".to_owned(),
                    source: e.to_string().into(),
                }
            })?,
            matrix_room_id: room_id("matrix_room_id", row.try_get("matrix_room_id")?)?,
            microdao_id: row.try_get("microdao_id")?,
            listed: row.try_get("listed")?,
            space_room_id: optional("space_room_id")?,
            home_space: optional("home_space")?,
        })
    }
}

/// `''` stands for the city in `city_spaces.microdao_id`.
fn key(microdao_id: Option<&str>) -> &str {
    microdao_id.unwrap_or("")
}

fn room_id(column: &str, id: String) -> Result<OwnedRoomId, sqlx::Error> {
    OwnedRoomId::try_from(id).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: e.to_string().into(),
    })
}

impl Store {
    /// The Space of a microDAO (`None`: the city's), if the bridge has recorded it.
    pub async fn space(&self, microdao_id: Option<&str>) -> Result<Option<OwnedRoomId>> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT matrix_room_id FROM city_spaces WHERE microdao_id = $1")
                .bind(key(microdao_id))
                .fetch_optional(&self.pool)
                .await?;
        Ok(id.map(|id| room_id("matrix_room_id", id)).transpose()?)
    }

    /// Every recorded Space: the microDAO it is for (`None`: the city) and its room.
    pub async fn spaces(&self) -> Result<Vec<(Option<String>, OwnedRoomId)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT microdao_id, matrix_room_id FROM city_spaces ORDER BY microdao_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(microdao, id)| {
                Ok((
                    (!microdao.is_empty()).then_some(microdao),
                    room_id("matrix_room_id", id)?,
                ))
            })
            .collect()
    }

    /// Records `room_id` as the Space of a microDAO (`None`: the city's), replacing a
    /// row that named another room (its alias now points here).
    pub async fn record_space(&self, microdao_id: Option<&str>, room_id: &RoomId) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // A room is one Space: a stale row naming it for another key goes.
        sqlx::query("DELETE FROM city_spaces WHERE matrix_room_id = $2 AND microdao_id <> $1")
            .bind(key(microdao_id))
            .bind(room_id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO city_spaces (microdao_id, matrix_room_id) VALUES ($1, $2) \
             ON CONFLICT (microdao_id) DO UPDATE SET matrix_room_id = EXCLUDED.matrix_room_id",
        )
        .bind(key(microdao_id))
        .bind(room_id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The city rooms with a Matrix room, with where they belong in the Spaces;
    /// `out_of_step_only` keeps those the Spaces do not list where they belong.
    pub async fn space_members(&self, out_of_step_only: bool) -> Result<Vec<SpaceMember>> {
        Ok(sqlx::query_as(
            "SELECT slug, matrix_room_id, microdao_id, listed, space_room_id, home_space \
             FROM (SELECT r.slug, r.matrix_room_id, r.microdao_id, \
                     r.visibility = 'public' AND r.archived_at IS NULL AS listed, \
                     r.space_room_id, s.matrix_room_id AS home_space \
                   FROM city_rooms r \
                   LEFT JOIN city_spaces s ON s.microdao_id = COALESCE(r.microdao_id, '') \
                   WHERE r.matrix_room_id IS NOT NULL) m \
             WHERE NOT $1 \
                OR (listed AND (home_space IS NULL OR space_room_id IS DISTINCT FROM home_space)) \
                OR (NOT listed AND space_room_id IS NOT NULL) \
             ORDER BY slug",
        )
        .bind(out_of_step_only)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Notes which Space lists the room `slug` now (`None`: none).
    pub async fn set_space_of(&self, slug: &Slug, space: Option<&RoomId>) -> Result<()> {
        sqlx::query("UPDATE city_rooms SET space_room_id = $2 WHERE slug = $1")
            .bind(slug.as_str())
            .bind(space.map(RoomId::as_str))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
