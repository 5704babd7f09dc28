//! Source positions stored with the sink's data, in the same transaction, so a restart resumes
//! exactly where the committed data ends.
//!
//! One row per (consumer, partition) holds the highest position committed by that partition.
//! Partitions commit in order, so every position at or below the lowest row is committed;
//! resuming after that lowest position loses nothing (what lies above is rewritten idempotently).
//! At start every partition gets a row at the resume position, so a partition that has not yet
//! committed holds the minimum down. SQLite and PostgreSQL behave the same.

use sqlx::postgres::{PgPool, Postgres};
use sqlx::sqlite::{Sqlite, SqlitePool};
use sqlx::{Row, Transaction};

use crate::table::OffsetUpdate;

/// The offsets table (the same DDL serves SQLite and PostgreSQL).
pub const OFFSETS_TABLE: &str = "CREATE TABLE IF NOT EXISTS riverbed_offsets (
    consumer TEXT NOT NULL,
    \"partition\" INTEGER NOT NULL,
    \"position\" BIGINT NOT NULL,
    PRIMARY KEY (consumer, \"partition\")
)";

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Reads and writes one consumer's stored positions.
#[derive(Clone)]
pub struct OffsetStore {
    backend: Backend,
    consumer: String,
}

impl std::fmt::Debug for OffsetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let db = match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        };
        f.debug_struct("OffsetStore")
            .field("database", &db)
            .field("consumer", &self.consumer)
            .finish()
    }
}

impl OffsetStore {
    /// The store of `consumer` in a SQLite database (the table is created if missing).
    pub async fn sqlite(pool: SqlitePool, consumer: &str) -> Result<Self, sqlx::Error> {
        sqlx::query(OFFSETS_TABLE).execute(&pool).await?;
        Ok(OffsetStore {
            backend: Backend::Sqlite(pool),
            consumer: consumer.to_owned(),
        })
    }

    /// The store of `consumer` in a PostgreSQL database (the table is created if missing).
    pub async fn postgres(pool: PgPool, consumer: &str) -> Result<Self, sqlx::Error> {
        sqlx::query(OFFSETS_TABLE).execute(&pool).await?;
        Ok(OffsetStore {
            backend: Backend::Postgres(pool),
            consumer: consumer.to_owned(),
        })
    }

    /// Where to resume: the position after which nothing is missing, or `None` when nothing was
    /// ever committed. Also gives every one of `partitions` a row (at that position) so the
    /// minimum stays safe while some partition has not committed yet.
    pub async fn resume_position(&self, partitions: u32) -> Result<Option<u64>, sqlx::Error> {
        let min: Option<i64> = match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query("SELECT min(\"position\") FROM riverbed_offsets WHERE consumer = ?")
                    .bind(&self.consumer)
                    .fetch_one(pool)
                    .await?
                    .get(0)
            }
            Backend::Postgres(pool) => {
                sqlx::query("SELECT min(\"position\") FROM riverbed_offsets WHERE consumer = $1")
                    .bind(&self.consumer)
                    .fetch_one(pool)
                    .await?
                    .get(0)
            }
        };
        let Some(min) = min else { return Ok(None) };
        let fill = "INSERT INTO riverbed_offsets (consumer, \"partition\", \"position\") \
                    VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        for p in 0..partitions {
            match &self.backend {
                Backend::Sqlite(pool) => {
                    sqlx::query(fill)
                        .bind(&self.consumer)
                        .bind(p as i64)
                        .bind(min)
                        .execute(pool)
                        .await?;
                }
                Backend::Postgres(pool) => {
                    sqlx::query(fill)
                        .bind(&self.consumer)
                        .bind(p as i32)
                        .bind(min)
                        .execute(pool)
                        .await?;
                }
            }
        }
        Ok(Some(min as u64))
    }

    /// Records a batch's position inside the batch's SQLite transaction.
    pub async fn commit_sqlite(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        o: OffsetUpdate,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO riverbed_offsets (consumer, \"partition\", \"position\") VALUES (?, ?, ?)
             ON CONFLICT (consumer, \"partition\") DO UPDATE SET \"position\" = max(\"position\", excluded.\"position\")",
        )
        .bind(&self.consumer)
        .bind(o.partition as i64)
        .bind(o.position as i64)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Records a batch's position inside the batch's PostgreSQL transaction.
    pub async fn commit_postgres(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        o: OffsetUpdate,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO riverbed_offsets AS o (consumer, \"partition\", \"position\") VALUES ($1, $2, $3)
             ON CONFLICT (consumer, \"partition\") DO UPDATE SET \"position\" = greatest(o.\"position\", excluded.\"position\")",
        )
        .bind(&self.consumer)
        .bind(o.partition as i32)
        .bind(o.position as i64)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
