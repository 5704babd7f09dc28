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

/// Versions of an entity applied after a newer one, by the arrival log.
pub async fn reorderings(pg: &PgPool, names: &Names) -> usize {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT entity || ':' || id, version FROM {} ORDER BY arrival",
        names.arrivals
    )))
    .fetch_all(pg)
    .await
    .unwrap();
    let mut newest = BTreeMap::<String, i64>::new();
    let mut late = 0;
    for r in rows {
        let (key, version): (String, i64) = (r.get(0), r.get(1));
        let top = newest.entry(key).or_insert(version);
        if version < *top {
            late += 1;
        }
        *top = (*top).max(version);
    }
    late
}
