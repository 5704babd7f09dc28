//! What the run is checked against: the source tables, the replica, the arrival log.

use std::collections::BTreeMap;

use sqlx::{PgPool, Row};

use crate::files::{KINDS, Names};

/// An entity's state: version, deleted, data (as jsonb text).
pub type State = (i64, bool, Option<String>);

/// `<entity>:<id>` -> (version, deleted, data as jsonb text) of `sql`'s rows.
async fn states(pg: &PgPool, sql: String) -> BTreeMap<String, State> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pg)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

/// What the source tables hold: the truth.
pub async fn truth(pg: &PgPool, names: &Names) -> BTreeMap<String, State> {
    let union: Vec<String> = KINDS
        .iter()
        .map(|k| {
            format!(
                "SELECT '{k}:' || id, version, deleted, data::text FROM {}_{k}",
                names.sources
            )
        })
        .collect();
    states(pg, union.join(" UNION ALL ")).await
}

/// What the consumers replicated.
pub async fn replica(pg: &PgPool, names: &Names) -> BTreeMap<String, State> {
    states(
        pg,
        format!(
            "SELECT entity || ':' || id, version, deleted, data::jsonb::text FROM {}",
            names.replica
        ),
    )
    .await
}
