//! The arrival log of the replication tests: an append-only table the pipeline under test
//! writes every event to, in commit order, and the count of versions it committed after a
//! newer one of their entity.

use std::collections::BTreeMap;

use sqlx::{PgPool, Row};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The arrival log sink appended to a consumer file: every event as the pipeline commits it.
pub fn arrival_sink(arrivals: &str) -> String {
    format!(
        r#"
# The test's arrival log: every event as this pipeline commits it, in commit order.
[[sinks]]
name = "arrivals"
kind = "postgres"
mode = "append"
table = "{}"
key = ["entity", "id", "version"]
create_table = false
connection = {{ url = "{}" }}
columns = [
  {{ name = "entity", type = "text", from = "/entity", required = true }},
  {{ name = "id", type = "text", from = "/id", required = true }},
  {{ name = "version", type = "integer", from = "/version", required = true }},
]
"#,
        arrivals, PG_URL
    )
}

/// Creates the arrival log table (its `arrival` column numbers commits).
pub async fn create_arrivals(pg: &PgPool, arrivals: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {arrivals} (entity text, id text, version bigint, arrival bigserial, PRIMARY KEY (entity, id, version))"
    )))
    .execute(pg)
    .await
    .unwrap();
}

/// Events of an entity committed after a newer one, by the arrival log.
pub async fn reorderings(pg: &PgPool, arrivals: &str) -> usize {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT entity || ':' || id, version FROM {arrivals} ORDER BY arrival"
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
