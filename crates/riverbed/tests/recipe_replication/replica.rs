//! What the replication tests check, whichever broker carries the events: the run's names,
//! the arrival log (every event in commit order), the replica against the truth.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::{PgPool, Row};

pub use super::arrival_log::{arrival_sink, create_arrivals, reorderings};
use super::events::Final;

pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Names only this run uses.
pub struct Names {
    pub queue: String,
    pub table: String,
    pub arrivals: String,
}

impl Names {
    pub fn new(mode: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let s = format!("{mode}{}_{nanos}", std::process::id());
        Names {
            queue: format!("replication_{s}"),
            table: format!("replicated_entities_{s}"),
            arrivals: format!("arrivals_{s}"),
        }
    }
}

pub async fn count(pg: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pg)
        .await
        .unwrap_or(0)
}

/// Polls until `table` holds `n` rows.
pub async fn wait_rows(pg: &PgPool, table: &str, n: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let c = count(pg, table).await;
        if c >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{table}: {c} of {n} rows after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The replica: `<entity>:<id>` -> its version and tombstone.
pub async fn replica(pg: &PgPool, names: &Names) -> BTreeMap<String, Final> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT entity || ':' || id, version, deleted FROM {}",
        names.table
    )))
    .fetch_all(pg)
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| {
            let f = Final {
                version: r.get(1),
                deleted: r.get(2),
            };
            (r.get(0), f)
        })
        .collect()
}
