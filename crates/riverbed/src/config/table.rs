//! Checking a SQLite table sink's section into a [`TableSpec`]: identifiers, columns, key,
//! version and tombstones (the same tombstone settings as the PostgreSQL sink).

use riverbed_sql::{Column, Ident, TableSpec, ValueSource, WriteMode};

use super::check::Checker;
use super::load::ConfigError;
use super::raw::{ModeName, SqliteSection};

pub(super) fn check_table(c: &Checker<'_>, q: &SqliteSection) -> Result<TableSpec, ConfigError> {
    let table = q
        .table
        .get_ref()
        .split('.')
        .map(|part| Ident::new(part).or_else(|e| c.err(q.table.span(), format!("`table`: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut columns = Vec::with_capacity(q.columns.len());
    for col in &q.columns {
        let name = c.ident(&col.name, "columns.name")?;
        if columns.iter().any(|x: &Column| x.name == name) {
            return c.err(
                col.name.span(),
                format!("column `{name}` is declared twice"),
            );
        }
        let from: ValueSource = col
            .from
            .get_ref()
            .parse()
            .or_else(|e: String| c.err(col.from.span(), format!("`columns.from`: {e}")))?;
        columns.push(Column {
            name,
            ty: col.ty,
            from,
            required: col.required,
        });
    }
    let key = q
        .key
        .iter()
        .map(|k| c.ident(k, "key"))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(offsets) = &q.offsets
        && key.is_empty()
    {
        // Stored positions stay at the source's settled prefix, so a restart after a crash
        // routinely reads committed messages again: only a key makes that harmless.
        return c.err(
            offsets.span(),
            "`offsets` needs `key`: a restart reads again messages committed after the stored \
             position, and a table without a key would insert them twice",
        );
    }
    let version = q
        .version
        .as_ref()
        .map(|v| c.ident(v, "version"))
        .transpose()?;
    let mode = match q.mode {
        ModeName::Insert if version.is_some() => {
            let span = q.version.as_ref().map(|v| v.span()).unwrap_or(0..0);
            return c.err(span, "`version` applies to mode = \"upsert\" only");
        }
        ModeName::Insert if q.tombstone.is_some() => {
            let span = q.tombstone.as_ref().map(|t| t.span()).unwrap_or(0..0);
            return c.err(span, "`tombstone` applies to mode = \"upsert\" only");
        }
        ModeName::Insert => WriteMode::Insert,
        ModeName::Upsert => {
            let tombstone = match &q.tombstone {
                None => None,
                Some(t) if version.is_none() => {
                    return c.err(
                        t.span(),
                        "`tombstone` needs `version` (a delete wins only over older versions)",
                    );
                }
                Some(t) => {
                    let column = t
                        .get_ref()
                        .column(&columns)
                        .or_else(|e| c.err(t.span(), e))?;
                    let name = column.name.clone();
                    columns.push(column);
                    Some(name)
                }
            };
            WriteMode::Upsert { version, tombstone }
        }
    };
    let spec = TableSpec {
        table,
        columns,
        key,
        mode,
        create: q.create,
    };
    spec.check().or_else(|e| {
        c.err(
            q.table.span(),
            format!("table `{}`: {e}", q.table.get_ref()),
        )
    })?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use riverbed_embedded::{Durability, EmbeddedLog, Record};
    use serde_json::json;
    use sqlx::Row;

    use super::super::{build, load_str};

    fn config(dir: &Path) -> String {
        format!(
            r#"[pipeline]
partitions = 2
key = "/id"

[source]
kind = "embedded"
path = "{dir}/log.db"
topic = "accounts"
consumer = "accounts"
follow = false

[[sinks]]
name = "accounts"
kind = "sqlite"
path = "{dir}/out.db"
table = "accounts"
mode = "upsert"
key = ["id"]
version = "version"
tombstone = {{ column = "gone", field = "/op" }}
columns = [
  {{ name = "id", type = "text", from = "/id" }},
  {{ name = "version", type = "integer", from = "/version" }},
  {{ name = "balance", type = "integer", from = "/balance" }},
]
"#,
            dir = dir.display()
        )
    }

    #[test]
    fn sqlite_tombstones_parse_and_are_checked() {
        let text = config(Path::new("/tmp/x"));
        let plan = load_str(&text).unwrap();
        let super::super::SinkPlanKind::Sqlite { spec, .. } = &plan.sinks[0].kind else {
            panic!("a SQLite sink")
        };
        assert_eq!(spec.tombstone_index(), Some(3));
        let e = load_str(
            &text
                .replace("mode = \"upsert\"", "mode = \"insert\"")
                .replace("version = \"version\"\n", ""),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("line 19, column 13: `tombstone` applies to mode = \"upsert\" only"),
            "{e}"
        );
        let e = load_str(&text.replace("version = \"version\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tombstone` needs `version`"), "{e}");
        let e = load_str(&text.replace("column = \"gone\"", "column = \"balance\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tombstone.column `balance` is also in `columns`"),
            "{e}"
        );
    }

    async fn run(text: &str, log: &EmbeddedLog, records: &[serde_json::Value]) {
        let records = records
            .iter()
            .map(|r| Record::new(None, serde_json::to_vec(r).unwrap()))
            .collect();
        log.append("accounts", records).await.unwrap();
        let built = build(load_str(text).unwrap()).await.unwrap();
        let report = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            built.pipeline.run(std::future::pending()),
        )
        .await
        .expect("the pipeline reaches the end of the log")
        .unwrap();
        assert!(
            report.exhausted && report.stats.dead_lettered == 0,
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn a_delete_leaves_a_tombstone_that_a_late_older_update_cannot_undo() {
        let dir = tempfile::tempdir().unwrap();
        let text = config(dir.path());
        let log = EmbeddedLog::open(dir.path().join("log.db"), Durability::Normal)
            .await
            .unwrap();
        run(
            &text,
            &log,
            &[
                json!({"id": "a", "version": 1, "balance": 10}),
                json!({"id": "a", "version": 3, "op": "delete"}),
                json!({"id": "b", "version": 1, "balance": 5}),
            ],
        )
        .await;
        // A later run gets an update older than the delete, late.
        run(
            &text,
            &log,
            &[json!({"id": "a", "version": 2, "balance": 99})],
        )
        .await;
        let pool = riverbed_sql::sqlite_pool(&dir.path().join("out.db"))
            .await
            .unwrap();
        let rows = sqlx::query("SELECT id, version, balance, gone FROM accounts ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
        let got: Vec<(String, i64, Option<i64>, bool)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        assert_eq!(
            got,
            [("a".into(), 3, None, true), ("b".into(), 1, Some(5), false)]
        );
    }
}
