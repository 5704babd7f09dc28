//! Shared helpers of the PostgreSQL tests: connection, unique names, the service lock.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool};

/// The test database.
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Takes the PostgreSQL lock (a file lock, so across test binaries too): tests that disturb
/// PostgreSQL take it exclusively, the others share it.
pub async fn postgres_lock(exclusive: bool) -> riverbed_core::testing::ServiceLock {
    riverbed_core::testing::lock_service("postgres", exclusive).await
}

/// Whether PostgreSQL is there (or fails under `RIVERBED_REQUIRE_SERVICES=1`).
pub fn postgres_available() -> bool {
    riverbed_core::testing::require_service("PostgreSQL", "127.0.0.1:5432")
}

/// A name unique to this process and call: `prefix_<pid>_<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A pool on the test database whose connections are named `app` in `pg_stat_activity`.
pub async fn pool(app: &str) -> PgPool {
    let options: PgConnectOptions = PG_URL.parse().unwrap();
    riverbed_sql::postgres_pool(
        options.application_name(app),
        4,
        Duration::from_secs(5),
        Duration::from_secs(30),
    )
    .await
    .unwrap()
}

/// Drops the tables.
pub async fn drop_tables(pool: &PgPool, tables: &[&str]) {
    for t in tables {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS \"{t}\"")))
            .execute(pool)
            .await
            .unwrap();
    }
}

/// A deterministic shuffle (no test depends on luck).
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (state >> 33) as usize % (i + 1));
    }
}
