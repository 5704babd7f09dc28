//! PostgreSQL connections killed with `pg_terminate_backend` in the middle of a batch: the
//! write is unavailable (waited out without using up attempts), nothing of it (rows or position) is committed, and the retry succeeds.
//! Only this test's own connections (by application name) are killed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use riverbed_core::{BatchOutcome, Message, Outcome, Sink};
use riverbed_sql::{
    Column, ColumnType, Ident, InsertStyle, OffsetStore, PostgresWriter, TableSpec, WriteMode,
};
use sqlx::Row;
use support::*;

#[tokio::test]
async fn a_connection_killed_mid_batch_is_unavailable_and_the_retry_commits_once() {
    if !postgres_available() {
        return;
    }
    let _exclusive = postgres_lock(true).await;
    let app = unique("riverbed-chaos");
    let pool = pool(&app).await;
    let admin = support::pool("riverbed-admin").await;
    let table = unique("killed");
    let consumer = unique("killed");
    // A statement-level trigger that sleeps keeps the batch's INSERT running long enough.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"{table}\" (id TEXT PRIMARY KEY, amount NUMERIC)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION \"{table}_slow\"() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF current_setting('application_name') = '{app}' THEN PERFORM pg_sleep(30); END IF; RETURN NULL; END $$;
         CREATE TRIGGER slow AFTER INSERT ON \"{table}\" FOR EACH STATEMENT EXECUTE FUNCTION \"{table}_slow\"();"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let col = |n: &str, ty| Column {
        name: Ident::new(n).unwrap(),
        ty,
        from: format!("/{n}").parse().unwrap(),
        required: false,
    };
    let spec = Arc::new(TableSpec {
        table: vec![Ident::new(&table).unwrap()],
        columns: vec![
            col("id", ColumnType::Text),
            col("amount", ColumnType::Numeric),
        ],
        key: vec![Ident::new("id").unwrap()],
        mode: WriteMode::Insert,
        create: false,
    });
    let sink = PostgresWriter::new(pool.clone(), spec, Some(&consumer), InsertStyle::Unnest)
        .await
        .unwrap()
        .into_sink("killed");
    let batch: Vec<Message> = (0..500)
        .map(|i| {
            let mut m = Message::from_json(serde_json::json!({"id": format!("t{i}"), "amount": i}));
            m.meta.position = Some(i + 1);
            m
        })
        .collect();
    let writing = {
        let batch = batch.clone();
        tokio::spawn(async move { sink.write(&batch).await })
    };
    // Wait until the batch's statement runs, then kill every connection of the sink's pool.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let active: i64 = sqlx::query(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE 'INSERT INTO%'",
        )
        .bind(&app)
        .fetch_one(&admin)
        .await
        .unwrap()
        .get(0);
        if active > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed: i64 = sqlx::query(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) k",
    )
    .bind(&app)
    .fetch_one(&admin)
    .await
    .unwrap()
    .get(0);
    assert!(killed >= 1);
    let outcome = tokio::time::timeout(Duration::from_secs(20), writing)
        .await
        .expect("the write returns once its connection is gone")
        .unwrap();
    let BatchOutcome::Each(outcomes) = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Unavailable(_))),
        "{:?}",
        outcomes[0]
    );
    let store = OffsetStore::postgres(admin.clone(), &consumer)
        .await
        .unwrap();
    let rows: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{table}\""
    )))
    .fetch_one(&admin)
    .await
    .unwrap()
    .get(0);
    assert_eq!((rows, store.resume_position(1).await.unwrap()), (0, None));
    // The retry (the trigger no longer sleeps) commits rows and position together, once.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP TRIGGER slow ON \"{table}\""
    )))
    .execute(&admin)
    .await
    .unwrap();
    let retry_sink = PostgresWriter::new(
        pool.clone(),
        Arc::new(TableSpec {
            table: vec![Ident::new(&table).unwrap()],
            columns: vec![
                col("id", ColumnType::Text),
                col("amount", ColumnType::Numeric),
            ],
            key: vec![Ident::new("id").unwrap()],
            mode: WriteMode::Insert,
            create: false,
        }),
        Some(&consumer),
        InsertStyle::Unnest,
    )
    .await
    .unwrap()
    .into_sink("killed");
    assert_eq!(retry_sink.write(&batch).await, BatchOutcome::Committed);
    assert_eq!(retry_sink.write(&batch).await, BatchOutcome::Committed);
    let rows: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{table}\""
    )))
    .fetch_one(&admin)
    .await
    .unwrap()
    .get(0);
    assert_eq!(
        (rows, store.resume_position(1).await.unwrap()),
        (500, Some(500))
    );
    sqlx::query("DELETE FROM riverbed_offsets WHERE consumer = $1")
        .bind(&consumer)
        .execute(&admin)
        .await
        .unwrap();
    drop_tables(&admin, &[&table]).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP FUNCTION \"{table}_slow\"()"
    )))
    .execute(&admin)
    .await
    .unwrap();
}
