//! Source positions stored with the sink's data, in the same transaction, so a restart resumes
//! exactly where the committed data ends.
//!
//! One row per (consumer, partition) holds the highest position committed by that partition.
//! Partitions commit in order, so every position at or below the lowest row is committed;
//! resuming after that lowest position loses nothing (what lies above is rewritten idempotently).
//! At start every partition gets a row at the resume position, so a partition that has not yet
//! committed holds the minimum down.

use sqlx::sqlite::{Sqlite, SqlitePool};
use sqlx::{Row, Transaction};

use crate::table::OffsetUpdate;

/// The offsets table.
pub const OFFSETS_TABLE: &str = "CREATE TABLE IF NOT EXISTS riverbed_offsets (
    consumer TEXT NOT NULL,
    partition INTEGER NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (consumer, partition)
)";

/// Reads and writes one consumer's stored positions.
#[derive(Clone)]
pub struct OffsetStore {
    pool: SqlitePool,
    consumer: String,
}

impl OffsetStore {
    /// The store of `consumer` in a SQLite database (the table is created if missing).
    pub async fn sqlite(pool: SqlitePool, consumer: &str) -> Result<Self, sqlx::Error> {
        sqlx::query(OFFSETS_TABLE).execute(&pool).await?;
        Ok(OffsetStore {
            pool,
            consumer: consumer.to_owned(),
        })
    }

    /// Where to resume: the position after which nothing is missing, or `None` when nothing was
    /// ever committed. Also gives every one of `partitions` a row (at that position) so the
    /// minimum stays safe while some partition has not committed yet.
    pub async fn resume_position(&self, partitions: u32) -> Result<Option<u64>, sqlx::Error> {
        let min: Option<i64> =
            sqlx::query("SELECT min(position) FROM riverbed_offsets WHERE consumer = ?")
                .bind(&self.consumer)
                .fetch_one(&self.pool)
                .await?
                .get(0);
        let Some(min) = min else { return Ok(None) };
        for p in 0..partitions {
            sqlx::query("INSERT INTO riverbed_offsets (consumer, partition, position) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(&self.consumer)
                .bind(p as i64)
                .bind(min)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(min as u64))
    }

    /// Records a batch's position inside the batch's transaction.
    pub async fn commit_sqlite(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        o: OffsetUpdate,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO riverbed_offsets (consumer, partition, position) VALUES (?, ?, ?)
             ON CONFLICT (consumer, partition) DO UPDATE SET position = max(position, excluded.position)",
        )
        .bind(&self.consumer)
        .bind(o.partition as i64)
        .bind(o.position as i64)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
