//! Seeding a totals table from the rows already in the sink's table, once: history that never
//! came through the sink (loaded by other means before Riverbed ran) must count too.
//!
//! The seed runs in one transaction that first locks the sink's table in `SHARE ROW
//! EXCLUSIVE` mode: writers (this sink in other instances) wait, so the rows counted and the
//! totals match exactly; a second instance seeding at the same moment waits too, then finds
//! the record of the first seed and does nothing. The seed replaces whatever the totals table
//! held and is recorded in `riverbed_totals_seeded` in the same transaction: a later start
//! never seeds again (the totals are kept by the sink from then on).

use std::time::Instant;

use sqlx::PgPool;

use crate::totals::TotalsSpec;

/// The table recording which totals tables were seeded.
pub const SEEDED_TABLE: &str = "riverbed_totals_seeded";

/// What a seed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeded {
    /// Seeded earlier (by this or another instance): nothing done.
    Already,
    /// Seeded now from this many rows, into this many groups, in this many milliseconds.
    Now {
        /// Rows of history counted.
        rows: i64,
        /// Groups written.
        groups: u64,
        /// How long it took (the sink's table was locked against writes that long).
        took_ms: u64,
    },
}

async fn recorded(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM {SEEDED_TABLE} WHERE totals_table = $1"
    )))
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(found.is_some())
}

/// Seeds `totals` from `source` (the sink's table, quoted) unless that was done before.
pub async fn seed_once(
    pool: &PgPool,
    totals: &TotalsSpec,
    source: &str,
) -> Result<Seeded, sqlx::Error> {
    crate::ddl::create_serialized(
        pool,
        &format!(
            "CREATE TABLE IF NOT EXISTS {SEEDED_TABLE} (totals_table TEXT PRIMARY KEY, \
             source_table TEXT NOT NULL, source_rows BIGINT NOT NULL, took_ms BIGINT NOT NULL, \
             seeded_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ),
    )
    .await?;
    let name = totals.table_sql();
    if recorded(pool, &name).await? {
        return Ok(Seeded::Already);
    }
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {source} IN SHARE ROW EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await?;
    let again: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM {SEEDED_TABLE} WHERE totals_table = $1 FOR UPDATE"
    )))
    .bind(&name)
    .fetch_optional(&mut *tx)
    .await?;
    if again.is_some() {
        return Ok(Seeded::Already);
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {name}")))
        .execute(&mut *tx)
        .await?;
    let groups = sqlx::query(sqlx::AssertSqlSafe(totals.seed_insert(source)))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(sum({}), 0)::bigint FROM {name}",
        totals.count.quoted()
    )))
    .fetch_one(&mut *tx)
    .await?;
    let took_ms = started.elapsed().as_millis() as u64;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {SEEDED_TABLE} (totals_table, source_table, source_rows, took_ms) \
         VALUES ($1, $2, $3, $4)"
    )))
    .bind(&name)
    .bind(source)
    .bind(rows)
    .bind(took_ms as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Seeded::Now {
        rows,
        groups,
        took_ms,
    })
}
