//! The ingest journal: pushed transactions as received, appended before Synapse's 200
//! and applied to the index by the indexer (`ingest::indexer`).

use bytes::Bytes;

use super::Store;
use crate::Result;

/// A journal row.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    /// Its position: the order transactions arrived in.
    pub pos: i64,
    /// Synapse's transaction id.
    pub txn_id: String,
    /// The request body as received.
    pub body: Bytes,
}

impl Store {
    /// Appends a transaction and commits it (durable when this returns); its position.
    ///
    /// The position is one past the last one taken (rows trimmed behind the mark count
    /// through the mark), so a failed append leaves no gap. Appends are made one at a time
    /// (the ingest journal holds a lock from one append to the next); one abandoned mid-insert may still
    /// commit, and the next append then waits on the primary key for it, fails, and takes
    /// the position after it.
    pub async fn journal_append(&self, txn_id: &str, body: &[u8]) -> Result<i64> {
        let txn_id = super::model::pg_text(txn_id);
        let mut attempts = 0;
        loop {
            let appended = sqlx::query_scalar(
                "INSERT INTO ingest_journal (pos, txn_id, body) \
                 SELECT greatest((SELECT max(pos) FROM ingest_journal), \
                                 (SELECT pos FROM ingest_progress)) + 1, $1, $2 \
                 RETURNING pos",
            )
            .bind(txn_id.as_ref())
            .bind(body)
            .fetch_one(&self.pool)
            .await;
            match appended {
                Err(sqlx::Error::Database(error))
                    if error.is_unique_violation() && attempts < 3 =>
                {
                    attempts += 1;
                }
                appended => return Ok(appended?),
            }
        }
    }

    /// The last journal position applied to the index.
    pub async fn journal_mark(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT pos FROM ingest_progress")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Up to `limit` entries after `after`, in order.
    pub async fn journal_after(&self, after: i64, limit: i64) -> Result<Vec<JournalEntry>> {
        let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT pos, txn_id, body FROM ingest_journal WHERE pos > $1 ORDER BY pos LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(pos, txn_id, body)| JournalEntry {
                pos,
                txn_id,
                body: Bytes::from(body),
            })
            .collect())
    }

    /// Deletes the entries the index has applied; how many.
    pub async fn journal_trim(&self) -> Result<u64> {
        Ok(
            sqlx::query(
                "DELETE FROM ingest_journal WHERE pos <= (SELECT pos FROM ingest_progress)",
            )
            .execute(&self.pool)
            .await?
            .rows_affected(),
        )
    }
}
