//! Odd but possible values reach PostgreSQL and SQLite exactly as sent (read back as the
//! database's own text), and impossible ones are dead-lettered as `invalid_field` naming the
//! column and the value, while the rest of their batch is written.

mod support;

use std::sync::Arc;

use riverbed_core::{Message, Outcome, Sink};
use riverbed_sql::{
    Column, ColumnType, Ident, InsertStyle, PostgresWriter, SqliteWriter, TableSpec, WriteMode,
    sqlite_pool,
};
use serde_json::json;
use sqlx::Row;
use support::*;

const COLUMNS: [(&str, ColumnType); 10] = [
    ("id", ColumnType::Text),
    ("ts", ColumnType::Timestamp),
    ("amount", ColumnType::Numeric),
    ("small", ColumnType::SmallInt),
    ("medium", ColumnType::Int),
    ("big", ColumnType::Integer),
    ("day", ColumnType::Date),
    ("at", ColumnType::Time),
    ("ratio", ColumnType::Real),
    ("flag", ColumnType::Boolean),
];

fn spec(table: &str) -> Arc<TableSpec> {
    let columns = COLUMNS
        .iter()
        .map(|(name, ty)| Column {
            name: Ident::new(name).unwrap(),
            ty: *ty,
            from: format!("/{name}").parse().unwrap(),
            required: false,
        })
        .collect();
    Arc::new(TableSpec {
        table: vec![Ident::new(table).unwrap()],
        columns,
        key: vec![Ident::new("id").unwrap()],
        mode: WriteMode::Insert,
        create: true,
    })
}

/// A message whose payload is `text` exactly (so a number keeps the digits written).
fn raw(text: &str) -> Message {
    Message::new(text.as_bytes().to_vec())
}

/// The odd but valid row, as a producer writes it.
const ODD: &str = r#"{"id": "odd", "ts": "2024-02-29T23:59:59.999999-01:00",
    "amount": 0.1000000000000000055, "small": -32768, "medium": 2147483647,
    "big": 9223372036854775807, "day": "2024-02-29", "at": "23:59:59.999999",
    "ratio": 0.1, "flag": "false"}"#;

/// Impossible values, one per message, with the column each must name.
fn impossible() -> Vec<(Message, &'static str, &'static str)> {
    let one = |id: &str, field: &str, v: serde_json::Value| {
        let mut body = json!({"id": id});
        body[field] = v;
        Message::from_json(body)
    };
    vec![
        (
            one("feb30", "ts", json!("2024-02-30T00:00:00Z")),
            "ts",
            "2024-02-30",
        ),
        (
            one("hour25", "ts", json!("2024-01-01T25:00:00Z")),
            "ts",
            "25:00",
        ),
        (
            one("offset", "ts", json!("2024-01-01T10:00:00+02:99")),
            "ts",
            "+02:99",
        ),
        (one("short", "small", json!(32768)), "small", "32768"),
        (
            one("medium", "medium", json!(2147483648_i64)),
            "medium",
            "2147483648",
        ),
        (
            raw(r#"{"id": "frac", "big": 7.0000000000000001}"#),
            "big",
            "7.0000000000000001",
        ),
        (one("day", "day", json!("2023-02-29")), "day", "2023-02-29"),
        (
            one("huge", "amount", json!("1e200000")),
            "amount",
            "1e200000",
        ),
    ]
}

async fn write_postgres(style: InsertStyle) {
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("odd_values");
    let sink = PostgresWriter::new(pool.clone(), spec(&table), None, style)
        .await
        .unwrap()
        .into_sink("odd");
    let bad = impossible();
    let mut batch = vec![raw(ODD)];
    batch.extend(bad.iter().map(|(m, _, _)| m.clone()));
    batch.push(Message::from_json(
        json!({"id": "nul", "day": null, "amount": "1", "flag": true}),
    ));
    let outcome = sink.write(&batch).await;
    assert!(outcome.get(0).is_ok(), "{outcome:?}");
    for (i, (_, column, value)) in bad.iter().enumerate() {
        let Outcome::Permanent(f) = outcome.get(i + 1) else {
            panic!("{column} {value}: {outcome:?}")
        };
        assert_eq!(f.reason, "invalid_field", "{}", f.error);
        assert!(
            f.error.contains(&format!("column `{column}`")),
            "{}",
            f.error
        );
        assert!(f.error.contains(value), "{}", f.error);
    }
    let got = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT (ts AT TIME ZONE 'UTC')::text, amount::text, small::text, medium::text,
                big::text, day::text, at::text, ratio::text, flag::text
         FROM \"{table}\" WHERE id = 'odd'"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    let texts: Vec<String> = (0..9).map(|i| got.get(i)).collect();
    assert_eq!(
        texts,
        [
            "2024-03-01 00:59:59.999999",
            "0.1000000000000000055",
            "-32768",
            "2147483647",
            "9223372036854775807",
            "2024-02-29",
            "23:59:59.999999",
            "0.1",
            "false"
        ]
    );
    let rows: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{table}\""
    )))
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(
        rows, 2,
        "the odd row and the one with NULLs; no impossible one"
    );
    drop_tables(&pool, &[&table]).await;
}

#[tokio::test]
async fn postgres_receives_odd_values_exactly_and_refuses_impossible_ones_unnest() {
    if postgres_available() {
        write_postgres(InsertStyle::Unnest).await;
    }
}

#[tokio::test]
async fn postgres_receives_odd_values_exactly_and_refuses_impossible_ones_values() {
    if postgres_available() {
        write_postgres(InsertStyle::Values).await;
    }
}

#[tokio::test]
async fn sqlite_keeps_odd_values_exactly_and_refuses_what_it_would_round() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("out.db")).await.unwrap();
    let sink = SqliteWriter::new(pool.clone(), spec("items"), None)
        .await
        .unwrap()
        .into_sink("items");
    let exact = raw(r#"{"id": "exact", "ts": "2024-02-29T23:59:59.999-01:00",
        "amount": 9223372036854775807, "day": "2024-02-29", "at": "07:05"}"#);
    let rounded = raw(r#"{"id": "rounded", "amount": 0.1000000000000000055}"#);
    let sub_ms = raw(r#"{"id": "sub_ms", "ts": "2024-01-01T00:00:00.0001Z"}"#);
    let outcome = sink.write(&[exact, rounded, sub_ms]).await;
    assert!(outcome.get(0).is_ok(), "{outcome:?}");
    for i in 1..3 {
        let Outcome::Permanent(f) = outcome.get(i) else {
            panic!("{outcome:?}")
        };
        assert_eq!(f.reason, "invalid_field", "{}", f.error);
    }
    let row = sqlx::query(
        "SELECT ts, typeof(amount), CAST(amount AS TEXT), day, at FROM items WHERE id = 'exact'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.get::<i64, _>(0), 1_709_254_799_999);
    assert_eq!(row.get::<String, _>(1), "integer");
    assert_eq!(row.get::<String, _>(2), "9223372036854775807");
    assert_eq!(row.get::<String, _>(3), "2024-02-29");
    assert_eq!(row.get::<String, _>(4), "07:05:00");
}
