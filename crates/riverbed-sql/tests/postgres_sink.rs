//! The PostgreSQL sinks against the real server: idempotent appends, versioned upserts with
//! tombstones under shuffled redelivery, a refused row isolated from its batch of 500, the
//! inbox under redelivery, offsets stored with the data.

mod support;

use std::sync::Arc;

use riverbed_core::{BatchOutcome, Message, Outcome, Sink};
use riverbed_sql::{
    Column, ColumnType, Ident, InboxWriter, InsertStyle, OffsetStore, PostgresWriter, TableSpec,
    ValueSource, WriteMode,
};
use sqlx::Row;
use support::*;

fn col(name: &str, ty: ColumnType, from: &str) -> Column {
    Column {
        name: Ident::new(name).unwrap(),
        ty,
        from: from.parse().unwrap(),
        required: false,
    }
}

fn ledger_spec(table: &str, mode: WriteMode) -> Arc<TableSpec> {
    let mut columns = vec![
        col("id", ColumnType::Text, "/id"),
        col("amount", ColumnType::Numeric, "/amount"),
        col("version", ColumnType::Integer, "/version"),
    ];
    if let WriteMode::Upsert {
        tombstone: Some(t), ..
    } = &mode
    {
        columns.push(Column {
            name: t.clone(),
            ty: ColumnType::Boolean,
            from: ValueSource::Equals {
                pointer: "/op".into(),
                value: "delete".into(),
            },
            required: false,
        });
    }
    Arc::new(TableSpec {
        table: vec![Ident::new(table).unwrap()],
        columns,
        key: vec![Ident::new("id").unwrap()],
        mode,
        create: true,
    })
}

fn tx(id: &str, amount: &str, version: i64) -> Message {
    Message::from_json(serde_json::json!({"id": id, "amount": amount, "version": version}))
}

async fn count(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{table}\""
    )))
    .fetch_one(pool)
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn appends_are_idempotent_under_redelivery_in_both_insert_styles() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    for style in [InsertStyle::Unnest, InsertStyle::Values] {
        let table = unique("append");
        let spec = ledger_spec(&table, WriteMode::Insert);
        let sink = PostgresWriter::new(pool.clone(), spec, None, style)
            .await
            .unwrap()
            .into_sink("ledger");
        let batch: Vec<Message> = (0..500)
            .map(|i| tx(&format!("t{i}"), &format!("{i}.25"), 1))
            .collect();
        assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);
        let mut again = batch[250..].to_vec();
        again.push(tx("t3", "999.99", 2));
        again.push(tx("t3", "999.98", 3));
        assert_eq!(sink.write(&again).await, BatchOutcome::Committed);
        assert_eq!(count(&pool, &table).await, 500, "{style:?}");
        let amount: String = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT amount::text FROM \"{table}\" WHERE id = 't3'"
        )))
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
        assert_eq!(amount, "3.25", "the first write of a key stays ({style:?})");
        drop_tables(&pool, &[&table]).await;
    }
}

#[tokio::test]
async fn versions_and_tombstones_win_under_shuffled_redelivery() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("entities");
    let spec = ledger_spec(
        &table,
        WriteMode::Upsert {
            version: Some(Ident::new("version").unwrap()),
            tombstone: Some(Ident::new("deleted").unwrap()),
        },
    );
    let sink = PostgresWriter::new(pool.clone(), spec, None, InsertStyle::Unnest)
        .await
        .unwrap()
        .into_sink("entities");
    // 300 entities x 8 versions; every third entity is deleted at version 6 and updated no more
    // (its versions 7 and 8 never exist); every fifth is deleted at 5 and recreated at 8.
    let mut updates = Vec::new();
    for e in 0..300 {
        for v in 1..=8i64 {
            let id = format!("e{e}");
            let m = match (e % 3, e % 5, v) {
                (0, _, 6) | (_, 0, 5) => {
                    Message::from_json(serde_json::json!({"id": id, "version": v, "op": "delete"}))
                }
                (0, _, 7..) => continue,
                _ => tx(&id, &format!("{}.{v}", e), v),
            };
            updates.push(m);
        }
    }
    let first_pass = updates.clone();
    updates.extend(first_pass);
    shuffle(&mut updates, 42);
    for chunk in updates.chunks(97) {
        assert_eq!(sink.write(chunk).await, BatchOutcome::Committed);
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, amount::text, version, deleted FROM \"{table}\""
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 300);
    for r in rows {
        let id: String = r.get(0);
        let e: i64 = id[1..].parse().unwrap();
        let (amount, version, deleted): (Option<String>, i64, bool) =
            (r.get(1), r.get(2), r.get(3));
        if e % 3 == 0 {
            assert_eq!(
                (amount, version, deleted),
                (None, 6, true),
                "{id} stays deleted"
            );
        } else {
            let want = format!("{e}.8");
            assert_eq!((amount, version, deleted), (Some(want), 8, false), "{id}");
        }
    }
    // A late, older update never resurrects a tombstone; an equal-version delete beats an update.
    sink.write(&[tx("e3", "1.0", 5)]).await;
    sink.write(&[Message::from_json(
        serde_json::json!({"id": "e1", "version": 8, "op": "delete"}),
    )])
    .await;
    let r = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT deleted FROM \"{table}\" WHERE id = 'e3'), (SELECT deleted FROM \"{table}\" WHERE id = 'e1')"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((r.get::<bool, _>(0), r.get::<bool, _>(1)), (true, true));
    drop_tables(&pool, &[&table]).await;
}

#[tokio::test]
async fn one_refused_row_in_500_is_isolated_with_the_database_error() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("checked");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"{table}\" (id TEXT PRIMARY KEY, amount NUMERIC CHECK (amount >= 0), version BIGINT)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let mut spec = (*ledger_spec(&table, WriteMode::Insert)).clone();
    spec.create = false;
    let sink = PostgresWriter::new(pool.clone(), Arc::new(spec), None, InsertStyle::Unnest)
        .await
        .unwrap()
        .into_sink("checked");
    let mut batch: Vec<Message> = (0..500).map(|i| tx(&format!("t{i}"), "10.5", 1)).collect();
    batch[437] = tx("t437", "-3", 1);
    let BatchOutcome::Each(outcomes) = sink.write(&batch).await else {
        panic!("expected per-message outcomes")
    };
    let refused: Vec<(usize, &Outcome)> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| !o.is_ok())
        .collect();
    assert_eq!(refused.len(), 1);
    let (i, Outcome::Permanent(f)) = refused[0] else {
        panic!("{:?}", refused[0])
    };
    assert_eq!(i, 437);
    assert!(f.error.contains("violates check constraint"), "{}", f.error);
    assert!(f.error.contains("23514"), "{}", f.error);
    assert_eq!(count(&pool, &table).await, 499);
    drop_tables(&pool, &[&table]).await;
}

#[tokio::test]
async fn the_inbox_runs_user_sql_once_per_message_under_redelivery() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("balances");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"{table}\" (account TEXT PRIMARY KEY, balance NUMERIC NOT NULL, moves BIGINT NOT NULL)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let statement = format!(
        "INSERT INTO \"{table}\" AS b (account, balance, moves) VALUES (:account, :amount, 1)
         ON CONFLICT (account) DO UPDATE SET balance = b.balance + excluded.balance, moves = b.moves + 1"
    );
    let params = vec![
        col("account", ColumnType::Text, "/account"),
        col("amount", ColumnType::Numeric, "/amount"),
    ];
    let consumer = unique("inbox");
    let sink = InboxWriter::new(
        pool.clone(),
        &consumer,
        &statement,
        ValueSource::MessageId,
        params,
        None,
    )
    .await
    .unwrap()
    .into_sink("balances");
    let mut moves: Vec<Message> = (0..400)
        .map(|i| {
            let mut m = Message::from_json(
                serde_json::json!({"account": format!("a{}", i % 7), "amount": format!("{}.01", i)}),
            );
            m.meta.message_id = Some(format!("move-{i}"));
            m
        })
        .collect();
    let once = moves.clone();
    moves.extend(once.iter().cloned());
    moves.extend(once[..100].iter().cloned());
    shuffle(&mut moves, 7);
    for chunk in moves.chunks(64) {
        assert_eq!(sink.write(chunk).await, BatchOutcome::Committed);
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT account, balance::text, moves FROM \"{table}\" ORDER BY account"
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 7);
    for r in rows {
        let a: i64 = r.get::<String, _>(0)[1..].parse().unwrap();
        let ids: Vec<i64> = (0..400).filter(|i| i % 7 == a).collect();
        let cents: i64 = ids.iter().map(|i| i * 100 + 1).sum();
        let want = format!("{}.{:02}", cents / 100, cents % 100);
        assert_eq!(r.get::<String, _>(1), want, "account a{a}");
        assert_eq!(r.get::<i64, _>(2), ids.len() as i64);
    }
    sqlx::query("DELETE FROM riverbed_inbox WHERE consumer = $1")
        .bind(&consumer)
        .execute(&pool)
        .await
        .unwrap();
    drop_tables(&pool, &[&table]).await;
}

#[tokio::test]
async fn offsets_commit_with_the_rows_and_resume_at_the_lowest_partition() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("positioned");
    let consumer = unique("consumer");
    let sink = PostgresWriter::new(
        pool.clone(),
        ledger_spec(&table, WriteMode::Insert),
        Some(&consumer),
        InsertStyle::Unnest,
    )
    .await
    .unwrap()
    .into_sink("positioned");
    let store = OffsetStore::postgres(pool.clone(), &consumer)
        .await
        .unwrap();
    assert_eq!(store.resume_position(2).await.unwrap(), None);
    let at = |id: &str, pos: u64, partition: u32| {
        let mut m = tx(id, "1", 1);
        m.meta.position = Some(pos);
        m.meta.partition = partition;
        m
    };
    assert!(sink.write(&[at("a", 10, 0), at("b", 12, 0)]).await == BatchOutcome::Committed);
    assert!(sink.write(&[at("c", 7, 1)]).await == BatchOutcome::Committed);
    assert_eq!(store.resume_position(2).await.unwrap(), Some(7));
    sink.write(&[at("d", 20, 1)]).await;
    assert_eq!(store.resume_position(2).await.unwrap(), Some(12));
    assert_eq!(store.resume_position(3).await.unwrap(), Some(12));
    // One batch comes from one partition: the first row's.
    sink.write(&[at("e", 30, 0), at("f", 31, 0)]).await;
    assert_eq!(store.resume_position(3).await.unwrap(), Some(12));
    // The database refuses one row (text may not hold NUL): its transaction commits no
    // position, while the other half of the split batch commits its own.
    let bad = at("g\u{0}", 60, 2);
    let outcome = sink.write(&[at("h", 50, 2), bad]).await;
    assert!(
        outcome.get(0).is_ok() && !outcome.get(1).is_ok(),
        "{outcome:?}"
    );
    assert_eq!(store.resume_position(3).await.unwrap(), Some(20));
    let p2: i64 = sqlx::query(
        "SELECT \"position\" FROM riverbed_offsets WHERE consumer = $1 AND \"partition\" = 2",
    )
    .bind(&consumer)
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(p2, 50);
    sqlx::query("DELETE FROM riverbed_offsets WHERE consumer = $1")
        .bind(&consumer)
        .execute(&pool)
        .await
        .unwrap();
    drop_tables(&pool, &[&table]).await;
}

#[tokio::test]
async fn instances_starting_at_once_create_the_table_once_without_failing() {
    if !postgres_available() {
        return;
    }
    let _lock = postgres_lock(false).await;
    let pool = pool("riverbed-test-create").await;
    let table = unique("created_at_once");
    let spec = ledger_spec(&table, WriteMode::Insert);
    // Several instances of one pipeline start together and each creates the table (with its
    // offsets table): PostgreSQL's catalog refuses concurrent CREATE ... IF NOT EXISTS of one
    // name unless they are serialised.
    for _round in 0..5 {
        let _ = drop_tables(&pool, &[table.as_str()]).await;
        let writers: Vec<_> = (0..6)
            .map(|_| {
                let (pool, spec) = (pool.clone(), spec.clone());
                tokio::spawn(async move {
                    PostgresWriter::new(pool, spec, Some("created-at-once"), InsertStyle::Unnest)
                        .await
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap().expect("every instance starts");
        }
    }
    drop_tables(&pool, &[table.as_str()]).await;
}
