//! The event table the instance and outage tests write to, with an `arrival` column that
//! records commit order, and the checks made on it; `riverbed declare` for their files.

// Shared by several test binaries; each uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::{PgPool, Row};

/// Creates `table (id, entity, seq, arrival bigserial)`: `arrival` records commit order.
pub async fn create(pg: &PgPool, table: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id text PRIMARY KEY, entity text NOT NULL, seq bigint NOT NULL, arrival bigserial)"
    )))
    .execute(pg)
    .await
    .unwrap();
}

/// Fails unless every entity's events were committed in `seq` order.
pub async fn assert_entity_order(pg: &PgPool, table: &str) {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT entity, seq FROM {table} ORDER BY arrival"
    )))
    .fetch_all(pg)
    .await
    .unwrap();
    let mut last = BTreeMap::<String, i64>::new();
    for r in rows {
        let (entity, seq): (String, i64) = (r.get(0), r.get(1));
        if let Some(prev) = last.insert(entity.clone(), seq) {
            assert!(prev < seq, "{entity}: seq {seq} committed after {prev}");
        }
    }
}

/// Runs `riverbed declare config`; fails with its error output.
pub fn declare(config: &Path) {
    succeeds("declare", config);
}

/// Runs `riverbed validate config`; fails with its error output.
#[allow(dead_code)] // not every test binary that includes this module validates
pub fn validate(config: &Path) {
    succeeds("validate", config);
}

/// Runs `riverbed <command> config`; fails with its error output.
fn succeeds(command: &str, config: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .arg(command)
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "riverbed {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
