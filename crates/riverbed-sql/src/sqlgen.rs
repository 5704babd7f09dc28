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
            (Dialect::Sqlite, ColumnType::SmallInt | ColumnType::Int) => "INTEGER",
            (Dialect::Postgres, ColumnType::SmallInt) => "SMALLINT",
            (Dialect::Postgres, ColumnType::Int) => "INTEGER",
            (Dialect::Sqlite, ColumnType::Date | ColumnType::Time) => "TEXT",
            (Dialect::Postgres, ColumnType::Date) => "DATE",
            (Dialect::Postgres, ColumnType::Time) => "TIME",
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
                ColumnType::Timestamp => format!("${n}::timestamptz"),
                ColumnType::Date => format!("${n}::date"),
                ColumnType::Time => format!("${n}::time"),
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
        .enumerate()
        .map(|(i, c)| {
            // A tombstone leaves every other column NULL, so only what it keeps may be NOT NULL.
            let nullable_in_tombstone =
                spec.tombstone_index().is_some() && !spec.kept_in_tombstone(i);
            let not_null = if spec.key.contains(&c.name) || (c.required && !nullable_in_tombstone) {
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
        WriteMode::Upsert { version, tombstone } => {
            let tie = tombstone
                .as_ref()
                .map(|t| {
                    format!(
                        " OR (tgt.{v} = excluded.{v} AND excluded.{t} AND tgt.{t} IS NOT TRUE)",
                        v = version.as_ref().map(|v| v.quoted()).unwrap_or_default(),
                        t = t.quoted()
                    )
                })
                .unwrap_or_default();
            let guard = version
                .as_ref()
                .map(|v| {
                    format!(
                        " WHERE tgt.{0} IS NULL OR tgt.{0} < excluded.{0}{tie}",
                        v.quoted()
                    )
                })
                .unwrap_or_default();
            format!("{target} DO UPDATE SET {}{guard}", updates.join(", "))
        }
    }
}

/// The array type a PostgreSQL `UNNEST` parameter of this column type is bound as, and the
/// expression that turns the unnested element `u.col` into the column's type.
fn unnest_types(ty: ColumnType, col: &str) -> (&'static str, String) {
    match ty {
        ColumnType::Text => ("text[]", col.to_owned()),
        ColumnType::SmallInt => ("int2[]", col.to_owned()),
        ColumnType::Int => ("int4[]", col.to_owned()),
        ColumnType::Integer => ("int8[]", col.to_owned()),
        ColumnType::Real => ("float8[]", col.to_owned()),
        ColumnType::Numeric => ("text[]", format!("{col}::numeric")),
        ColumnType::Boolean => ("bool[]", col.to_owned()),
        ColumnType::Json => ("text[]", format!("{col}::jsonb")),
        ColumnType::Bytes => ("bytea[]", col.to_owned()),
        ColumnType::Timestamp => ("text[]", format!("{col}::timestamptz")),
        ColumnType::Date => ("text[]", format!("{col}::date")),
        ColumnType::Time => ("text[]", format!("{col}::time")),
    }
}

/// A PostgreSQL `INSERT ... SELECT ... FROM UNNEST($1, $2, ...)`: one array parameter per
/// column, so one statement (prepared once) serves every batch size.
pub fn insert_unnest(spec: &TableSpec) -> String {
    let names: Vec<String> = spec.columns.iter().map(|c| c.name.quoted()).collect();
    let mut arrays = Vec::with_capacity(names.len());
    let mut exprs = Vec::with_capacity(names.len());
    for (i, c) in spec.columns.iter().enumerate() {
        let (array, expr) = unnest_types(c.ty, &format!("u.{}", c.name.quoted()));
        arrays.push(format!("${}::{array}", i + 1));
        exprs.push(expr);
    }
    format!(
        "INSERT INTO {} AS tgt ({}) SELECT {} FROM UNNEST({}) AS u({}){}",
        spec.table_sql(),
        names.join(", "),
        exprs.join(", "),
        arrays.join(", "),
        names.join(", "),
        conflict_clause(spec)
    )
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
            tombstone: None,
        });
        assert_eq!(
            insert(&u, Dialect::Postgres, 1),
            r#"INSERT INTO "orders" AS tgt ("id", "amount", "version") VALUES ($1, $2::numeric, $3) ON CONFLICT ("id") DO UPDATE SET "amount" = excluded."amount", "version" = excluded."version" WHERE tgt."version" IS NULL OR tgt."version" < excluded."version""#
        );
        assert_eq!(
            create_table(&s, Dialect::Postgres),
            r#"CREATE TABLE IF NOT EXISTS "orders" ("id" TEXT NOT NULL, "amount" NUMERIC, "version" BIGINT, PRIMARY KEY ("id"))"#
        );
        assert_eq!(
            insert_unnest(&s),
            r#"INSERT INTO "orders" AS tgt ("id", "amount", "version") SELECT u."id", u."amount"::numeric, u."version" FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS u("id", "amount", "version") ON CONFLICT ("id") DO NOTHING"#
        );
    }

    #[test]
    fn tombstones_win_ties_and_leave_data_columns_nullable() {
        let mut s = spec(WriteMode::Upsert {
            version: Some(Ident::new("version").unwrap()),
            tombstone: Some(Ident::new("deleted").unwrap()),
        });
        s.columns[1].required = true;
        s.columns.push(Column {
            name: Ident::new("deleted").unwrap(),
            ty: ColumnType::Boolean,
            from: ValueSource::Equals {
                pointer: "/op".into(),
                value: "delete".into(),
            },
            required: false,
        });
        s.check().unwrap();
        assert!(insert(&s, Dialect::Postgres, 1).ends_with(
            r#"WHERE tgt."version" IS NULL OR tgt."version" < excluded."version" OR (tgt."version" = excluded."version" AND excluded."deleted" AND tgt."deleted" IS NOT TRUE)"#
        ));
        assert!(create_table(&s, Dialect::Sqlite).contains(r#""amount" NUMERIC, "#));
    }
}
