//! Source positions stored with the sink's data, in the same transaction, so a restart resumes
//! exactly where the committed data ends.
//!
//! One row per (consumer, partition) holds the highest position that partition has committed
//! (a partition commits in order, and a batch records only a position below which all of its
//! messages are committed). Resuming after the lowest row loses nothing, provided every
//! partition that may hold uncommitted messages has a row:
//! - On a first start, every partition gets a row saying "nothing committed yet" ([`NOTHING_COMMITTED`]);
//!   while any partition still says so, [`OffsetStore::resume_position`] answers `None` and
//!   the source starts from its configured start (a crash during the first run, before every
//!   partition committed, does not skip the slow partitions' messages).
//! - On later starts, partitions without a row (the partition count grew) get the resume
//!   position, and rows of partitions that no longer exist are dropped once the resume
//!   position is computed.
//! - A partition that receives nothing would hold the resume point where its run began, and a
//!   sink that receives nothing at all would keep saying "nothing committed" (a restart after
//!   a crash would then start from the source's configured start, skipping what was in
//!   flight). With a [`SettledPosition`](crate::SettledPosition) the sink moves every row up
//!   to the source's settled prefix ([`OffsetStore::advance_all`]) every second from a timer,
//!   after its writes and when it closes: every message at or below that prefix is committed
//!   by every sink (or dead-lettered), so any partition may claim it. A recorded position then
//!   also never passes the settled prefix; without it, a later batch can record a position
//!   past a message refused here or by another sink whose dead letter is not stored yet.
//!
//! SQLite and PostgreSQL behave the same.

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

/// The stored position of a partition that has committed nothing yet.
pub const NOTHING_COMMITTED: i64 = -1;

/// The resume position of these stored rows: their minimum, unless there is none or some
/// partition has committed nothing yet.
fn resume_of(rows: impl Iterator<Item = i64>) -> Option<u64> {
    let min = rows.min()?;
    u64::try_from(min).ok()
}

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
        crate::ddl::create_serialized(&pool, OFFSETS_TABLE).await?;
        Ok(OffsetStore {
            backend: Backend::Postgres(pool),
            consumer: consumer.to_owned(),
        })
    }

    /// Where to resume: the position after which nothing is missing, or `None` when some
    /// partition has not committed anything yet (start from the source's configured start).
    /// Also gives every one of `partitions` a row (see the module docs) and drops the rows of
    /// partitions past them.
    pub async fn resume_position(&self, partitions: u32) -> Result<Option<u64>, sqlx::Error> {
        let select = "SELECT \"partition\", \"position\" FROM riverbed_offsets WHERE consumer = $1";
        let fill = "INSERT INTO riverbed_offsets (consumer, \"partition\", \"position\") \
                    VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        let prune = "DELETE FROM riverbed_offsets WHERE consumer = $1 AND \"partition\" >= $2";
        macro_rules! run {
            ($pool:expr, $int:ty) => {{
                let mut tx = $pool.begin().await?;
                let rows: Vec<(i64, i64)> = sqlx::query(select)
                    .bind(&self.consumer)
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| (r.get::<$int, _>(0) as i64, r.get::<i64, _>(1)))
                    .collect();
                let resume = resume_of(rows.iter().map(|(_, p)| *p));
                let value = resume.map_or(NOTHING_COMMITTED, |p| p as i64);
                for p in 0..partitions {
                    sqlx::query(fill)
                        .bind(&self.consumer)
                        .bind(p as $int)
                        .bind(value)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(prune)
                    .bind(&self.consumer)
                    .bind(partitions as $int)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                resume
            }};
        }
        Ok(match &self.backend {
            Backend::Sqlite(pool) => run!(pool, i64),
            Backend::Postgres(pool) => run!(pool, i32),
        })
    }

    /// Moves every partition's row up to `position` (those below it): everything at or below
    /// `position` is settled by every sink. Runs in its own short transaction.
    pub async fn advance_all(&self, position: u64) -> Result<(), sqlx::Error> {
        let sql = "UPDATE riverbed_offsets SET \"position\" = $2 WHERE consumer = $1 AND \"position\" < $2";
        match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query(sql)
                    .bind(&self.consumer)
                    .bind(position as i64)
                    .execute(pool)
                    .await?;
            }
            Backend::Postgres(pool) => {
                sqlx::query(sql)
                    .bind(&self.consumer)
                    .bind(position as i64)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_that_committed_nothing_means_the_configured_start() {
        assert_eq!(resume_of([].into_iter()), None);
        assert_eq!(resume_of([100, NOTHING_COMMITTED].into_iter()), None);
        assert_eq!(resume_of([100, 7, 12].into_iter()), Some(7));
    }
}
