//! How the PostgreSQL sink classifies what the server refuses: a read-only server (a standby
//! after failover) is unavailable (no attempt used up); a batch whose every row is refused is dead-lettered with the
//! database error in a bounded number of statements.

mod support;

use std::sync::Arc;
use std::time::Duration;

use riverbed_core::{Message, Outcome, Sink};
use riverbed_sql::{Column, ColumnType, Ident, InsertStyle, PostgresWriter, TableSpec, WriteMode};
use sqlx::postgres::PgConnectOptions;
use support::*;

fn spec(table: &str) -> Arc<TableSpec> {
    let col = |name: &str, ty| Column {
        name: Ident::new(name).unwrap(),
        ty,
        from: format!("/{name}").parse().unwrap(),
        required: false,
    };
    Arc::new(TableSpec {
        table: vec![Ident::new(table).unwrap()],
        columns: vec![
            col("id", ColumnType::Text),
            col("amount", ColumnType::Numeric),
        ],
        key: vec![Ident::new("id").unwrap()],
        mode: WriteMode::Insert,
        create: false,
    })
}

fn row(i: usize, amount: &str) -> Message {
    Message::from_json(serde_json::json!({"id": format!("r{i}"), "amount": amount}))
}

async fn create(pool: &sqlx::PgPool, table: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"{table}\" (id TEXT PRIMARY KEY, amount NUMERIC CHECK (amount >= 0))"
    )))
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_read_only_server_is_unavailable_not_a_bad_row() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let admin = pool("riverbed-test").await;
    let table = unique("standby");
    create(&admin, &table).await;
    // What a standby answers after a failover: 25006 read_only_sql_transaction.
    let options: PgConnectOptions = PG_URL.parse().unwrap();
    let read_only = riverbed_sql::postgres_pool(
        options.options([("default_transaction_read_only", "on")]),
        2,
        Duration::from_secs(5),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let sink = PostgresWriter::new(read_only, spec(&table), None, InsertStyle::Unnest)
        .await
        .unwrap()
        .into_sink("standby");
    let batch: Vec<Message> = (0..20).map(|i| row(i, "1")).collect();
    let outcome = sink.write(&batch).await;
    for i in 0..20 {
        let Outcome::Unavailable(f) = outcome.get(i) else {
            panic!("message {i}: {outcome:?}")
        };
        assert!(f.error.contains("25006"), "{}", f.error);
    }
    drop_tables(&admin, &[&table]).await;
}

#[tokio::test]
async fn a_batch_whose_every_row_is_refused_is_dead_lettered_with_the_database_error() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("all_refused");
    create(&pool, &table).await;
    let sink = PostgresWriter::new(pool.clone(), spec(&table), None, InsertStyle::Unnest)
        .await
        .unwrap()
        .into_sink("all_refused");
    let batch: Vec<Message> = (0..500).map(|i| row(i, "-1")).collect();
    let outcome = sink.write(&batch).await;
    for i in 0..500 {
        let Outcome::Permanent(f) = outcome.get(i) else {
            panic!("message {i}: {outcome:?}")
        };
        assert!(f.error.contains("23514"), "{}", f.error);
    }
    drop_tables(&pool, &[&table]).await;
}
