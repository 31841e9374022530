//! `agents`.

use super::Store;

/// An AI agent of the platform.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Agent {
    /// `agent:<name>`.
    pub id: String,
    /// Shown as the Matrix display name.
    pub display_name: Option<String>,
    /// Set once its Matrix user is registered.
    pub matrix_user_id: Option<String>,
}

impl Store {
    /// The agent with this id.
    pub async fn agent(&self, id: &str) -> crate::Result<Option<Agent>> {
        Ok(
            sqlx::query_as("SELECT id, display_name, matrix_user_id FROM agents WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records that the agent's Matrix user exists.
    pub async fn mark_agent_registered(&self, id: &str, user_id: &str) -> crate::Result<()> {
        sqlx::query("UPDATE agents SET matrix_user_id = $2, registered_at = now() WHERE id = $1")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keeps the presence the platform set for an agent.
    pub async fn set_agent_presence(
        &self,
        id: &str,
        presence: &str,
        status_msg: Option<&str>,
    ) -> crate::Result<()> {
        sqlx::query(
            "UPDATE agents SET presence = $2, status_msg = $3, presence_set_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(presence)
        .bind(status_msg)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Registered agents whose kept presence is not offline: id, presence, status message.
    pub async fn agents_present(&self) -> crate::Result<Vec<(String, String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT id, presence, status_msg FROM agents \
             WHERE presence IN ('online', 'unavailable') AND matrix_user_id IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
