//! Creating tables that several instances may create at the same moment.

use sqlx::PgPool;

/// The first key of the advisory locks taken around table creation (the second is the
/// statement's hash), apart from the locks applications take with one `bigint` key.
const DDL_LOCK_SPACE: i32 = 0x5242_4444; // "RBDD"

/// Runs `ddl` (a `CREATE ... IF NOT EXISTS`) under a transaction-level advisory lock. Two
/// sessions creating the same table at once otherwise race in PostgreSQL's catalog, and one of
/// them fails with `duplicate key value violates unique constraint
/// "pg_type_typname_nsp_index"`: instances of one pipeline started together would not start.
pub async fn create_serialized(pool: &PgPool, ddl: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(DDL_LOCK_SPACE)
        .bind(ddl)
        .execute(&mut *tx)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(ddl))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
