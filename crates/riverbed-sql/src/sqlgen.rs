//! SQL text for table sinks, for SQLite and PostgreSQL. Identifiers are validated and quoted;
//! values are always bound, never formatted into SQL.

use crate::spec::{ColumnType, TableSpec, WriteMode};

/// The SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.35+.
    Sqlite,
    /// PostgreSQL 12+.
    Postgres,
}

impl Dialect {
    /// The column type in this dialect.
    pub fn type_name(self, ty: ColumnType) -> &'static str {
        match (self, ty) {
            (_, ColumnType::Text) => "TEXT",
            (Dialect::Sqlite, ColumnType::Integer) => "INTEGER",
            (Dialect::Postgres, ColumnType::Integer) => "BIGINT",
            (Dialect::Sqlite, ColumnType::Real) => "REAL",
            (Dialect::Postgres, ColumnType::Real) => "DOUBLE PRECISION",
            (_, ColumnType::Numeric) => "NUMERIC",
            (_, ColumnType::Boolean) => "BOOLEAN",
            (Dialect::Sqlite, ColumnType::Json) => "TEXT",
            (Dialect::Postgres, ColumnType::Json) => "JSONB",
            (Dialect::Sqlite, ColumnType::Bytes) => "BLOB",
            (Dialect::Postgres, ColumnType::Bytes) => "BYTEA",
            (Dialect::Sqlite, ColumnType::Timestamp) => "INTEGER",
            (Dialect::Postgres, ColumnType::Timestamp) => "TIMESTAMPTZ",
        }
    }

    /// The placeholder for parameter `n` (1-based), with the cast its column type needs.
    pub fn placeholder(self, n: usize, ty: ColumnType) -> String {
        match self {
            Dialect::Sqlite => "?".to_owned(),
            Dialect::Postgres => match ty {
                ColumnType::Numeric => format!("${n}::numeric"),
                ColumnType::Json => format!("${n}::jsonb"),
                ColumnType::Timestamp => format!("to_timestamp(${n}::bigint / 1000.0)"),
                _ => format!("${n}"),
            },
        }
    }

    /// Most parameters one statement may carry.
    pub fn max_params(self) -> usize {
        match self {
            Dialect::Sqlite => 32_766,
            Dialect::Postgres => 65_535,
        }
    }
}

/// `CREATE TABLE IF NOT EXISTS` for the spec.
pub fn create_table(spec: &TableSpec, d: Dialect) -> String {
    let mut cols: Vec<String> = spec
        .columns
        .iter()
        .map(|c| {
            let not_null = if c.required || spec.key.contains(&c.name) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{} {}{}", c.name.quoted(), d.type_name(c.ty), not_null)
        })
        .collect();
    if !spec.key.is_empty() {
        let key: Vec<String> = spec.key.iter().map(|k| k.quoted()).collect();
        cols.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        spec.table_sql(),
        cols.join(", ")
    )
}

/// Rows per statement for this spec.
pub fn rows_per_statement(spec: &TableSpec, d: Dialect) -> usize {
    (d.max_params() / spec.columns.len().max(1)).clamp(1, 500)
}

/// A multi-row `INSERT` of `rows` rows, idempotent on the key (or a versioned upsert).
pub fn insert(spec: &TableSpec, d: Dialect, rows: usize) -> String {
    let names: Vec<String> = spec.columns.iter().map(|c| c.name.quoted()).collect();
    let mut sql = format!(
        "INSERT INTO {} AS tgt ({}) VALUES ",
        spec.table_sql(),
        names.join(", ")
    );
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (i, c) in spec.columns.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            n += 1;
            sql.push_str(&d.placeholder(n, c.ty));
        }
        sql.push(')');
    }
    sql.push_str(&conflict_clause(spec));
    sql
}

fn conflict_clause(spec: &TableSpec) -> String {
    if spec.key.is_empty() {
        return String::new();
    }
    let key: Vec<String> = spec.key.iter().map(|k| k.quoted()).collect();
    let target = format!(" ON CONFLICT ({})", key.join(", "));
    let updates: Vec<String> = spec
        .columns
        .iter()
        .filter(|c| !spec.key.contains(&c.name))
        .map(|c| format!("{0} = excluded.{0}", c.name.quoted()))
        .collect();
    match &spec.mode {
        WriteMode::Insert => format!("{target} DO NOTHING"),
        WriteMode::Upsert { .. } if updates.is_empty() => format!("{target} DO NOTHING"),
        WriteMode::Upsert { version } => {
            let guard = version
                .as_ref()
                .map(|v| {
                    format!(
                        " WHERE tgt.{0} IS NULL OR tgt.{0} < excluded.{0}",
                        v.quoted()
                    )
                })
                .unwrap_or_default();
            format!("{target} DO UPDATE SET {}{guard}", updates.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Column, Ident, ValueSource};

    fn spec(mode: WriteMode) -> TableSpec {
        let col = |n: &str, ty| Column {
            name: Ident::new(n).unwrap(),
            ty,
            from: ValueSource::Pointer(format!("/{n}")),
            required: false,
        };
        TableSpec {
            table: vec![Ident::new("orders").unwrap()],
            columns: vec![
                col("id", ColumnType::Text),
                col("amount", ColumnType::Numeric),
                col("version", ColumnType::Integer),
            ],
            key: vec![Ident::new("id").unwrap()],
            mode,
            create: true,
        }
    }

    #[test]
    fn generates_idempotent_inserts_and_versioned_upserts() {
        let s = spec(WriteMode::Insert);
        assert_eq!(
            insert(&s, Dialect::Sqlite, 2),
            r#"INSERT INTO "orders" AS tgt ("id", "amount", "version") VALUES (?, ?, ?), (?, ?, ?) ON CONFLICT ("id") DO NOTHING"#
        );
        let u = spec(WriteMode::Upsert {
            version: Some(Ident::new("version").unwrap()),
        });
        assert_eq!(
            insert(&u, Dialect::Postgres, 1),
            r#"INSERT INTO "orders" AS tgt ("id", "amount", "version") VALUES ($1, $2::numeric, $3) ON CONFLICT ("id") DO UPDATE SET "amount" = excluded."amount", "version" = excluded."version" WHERE tgt."version" IS NULL OR tgt."version" < excluded."version""#
        );
        assert_eq!(
            create_table(&s, Dialect::Postgres),
            r#"CREATE TABLE IF NOT EXISTS "orders" ("id" TEXT NOT NULL, "amount" NUMERIC, "version" BIGINT, PRIMARY KEY ("id"))"#
        );
    }
}
