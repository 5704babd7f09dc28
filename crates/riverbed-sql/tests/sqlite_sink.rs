//! The SQLite table sink against a real SQLite file: idempotent inserts, versioned upserts under
//! shuffled redelivery, a refused row isolated from its batch, offsets stored with the data.

use std::sync::Arc;

use riverbed_core::{BatchOutcome, Message, Outcome, Sink};
use riverbed_sql::{
    Column, ColumnType, Ident, OffsetStore, SqliteWriter, TableSpec, ValueSource, WriteMode,
    sqlite_pool,
};
use sqlx::Row;

fn col(name: &str, ty: ColumnType, from: &str) -> Column {
    Column {
        name: Ident::new(name).unwrap(),
        ty,
        from: from.parse().unwrap(),
        required: false,
    }
}

fn spec(mode: WriteMode, create: bool) -> Arc<TableSpec> {
    Arc::new(TableSpec {
        table: vec![Ident::new("items").unwrap()],
        columns: vec![
            col("id", ColumnType::Text, "/id"),
            col("amount", ColumnType::Real, "/amount"),
            col("version", ColumnType::Integer, "/version"),
        ],
        key: vec![Ident::new("id").unwrap()],
        mode,
        create,
    })
}

fn msg(id: &str, amount: f64, version: i64) -> Message {
    Message::from_json(serde_json::json!({"id": id, "amount": amount, "version": version}))
}

async fn count(pool: &sqlx::SqlitePool) -> i64 {
    sqlx::query("SELECT count(*) FROM items")
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn inserts_are_idempotent_under_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("out.db")).await.unwrap();
    let sink = SqliteWriter::new(pool.clone(), spec(WriteMode::Insert, true), None)
        .await
        .unwrap()
        .into_sink("items");
    let batch: Vec<Message> = (0..300)
        .map(|i| msg(&format!("i{i}"), i as f64, 1))
        .collect();
    assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);
    // The same messages again, plus duplicates inside one batch: still 300 rows, first wins.
    let mut again = batch[100..].to_vec();
    again.push(msg("i5", 999.0, 2));
    assert_eq!(sink.write(&again).await, BatchOutcome::Committed);
    assert_eq!(count(&pool).await, 300);
    let a: f64 = sqlx::query("SELECT amount FROM items WHERE id = 'i5'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(a, 5.0);
}

#[tokio::test]
async fn versioned_upserts_keep_the_newest_under_shuffled_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("out.db")).await.unwrap();
    let version = Some(Ident::new("version").unwrap());
    let sink = SqliteWriter::new(
        pool.clone(),
        spec(
            WriteMode::Upsert {
                version,
                tombstone: None,
            },
            true,
        ),
        None,
    )
    .await
    .unwrap()
    .into_sink("items");
    // 20 entities x 10 versions, delivered in a scrambled order, in batches of 7, twice.
    let mut updates: Vec<Message> = (0..20)
        .flat_map(|e| (1..=10).map(move |v| msg(&format!("e{e}"), (e * 100 + v) as f64, v)))
        .collect();
    let mut state = 12345u64;
    for i in (1..updates.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        updates.swap(i, (state >> 33) as usize % (i + 1));
    }
    for round in 0..2 {
        for chunk in updates.chunks(7) {
            assert!(
                matches!(sink.write(chunk).await, BatchOutcome::Committed),
                "round {round}"
            );
        }
    }
    let rows = sqlx::query("SELECT id, amount, version FROM items ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 20);
    for r in rows {
        let id: String = r.get(0);
        let e: i64 = id[1..].parse().unwrap();
        assert_eq!(r.get::<i64, _>(2), 10, "{id} holds its newest version");
        assert_eq!(r.get::<f64, _>(1), (e * 100 + 10) as f64);
    }
}

#[tokio::test]
async fn one_refused_row_is_isolated_from_its_batch_of_500() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("out.db")).await.unwrap();
    sqlx::query("CREATE TABLE items (id TEXT PRIMARY KEY, amount REAL CHECK (amount >= 0), version INTEGER)")
        .execute(&pool)
        .await
        .unwrap();
    let sink = SqliteWriter::new(pool.clone(), spec(WriteMode::Insert, false), None)
        .await
        .unwrap()
        .into_sink("items");
    let mut batch: Vec<Message> = (0..500)
        .map(|i| msg(&format!("i{i}"), i as f64, 1))
        .collect();
    batch[321] = msg("i321", -1.0, 1);
    batch[77] = Message::from_json(serde_json::json!({"amount": 1.0}));
    let BatchOutcome::Each(outcomes) = sink.write(&batch).await else {
        panic!("expected per-message outcomes")
    };
    let refused: Vec<(usize, &Outcome)> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| !o.is_ok())
        .collect();
    assert_eq!(refused.len(), 2);
    match refused[0].1 {
        Outcome::Permanent(f) => {
            assert_eq!((refused[0].0, f.reason.as_ref()), (77, "missing_field"))
        }
        o => panic!("{o:?}"),
    }
    match refused[1].1 {
        Outcome::Permanent(f) => {
            assert_eq!(refused[1].0, 321);
            assert!(f.error.contains("CHECK constraint failed"), "{}", f.error);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(count(&pool).await, 498);
}

#[tokio::test]
async fn offsets_commit_with_the_rows_and_resume_at_the_lowest_partition() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("out.db")).await.unwrap();
    let sink = SqliteWriter::new(
        pool.clone(),
        spec(WriteMode::Insert, true),
        Some("orders-svc"),
    )
    .await
    .unwrap()
    .into_sink("items");
    let store = OffsetStore::sqlite(pool.clone(), "orders-svc")
        .await
        .unwrap();
    assert_eq!(store.resume_position(2).await.unwrap(), None);
    let at = |id: &str, pos: u64, partition: u32| {
        let mut m = msg(id, 1.0, 1);
        m.meta.position = Some(pos);
        m.meta.partition = partition;
        m
    };
    sink.write(&[at("a", 10, 0), at("b", 12, 0)]).await;
    sink.write(&[at("c", 7, 1)]).await;
    assert_eq!(store.resume_position(2).await.unwrap(), Some(7));
    sink.write(&[at("d", 20, 1)]).await;
    assert_eq!(store.resume_position(2).await.unwrap(), Some(12));
    // A third partition that never committed holds the minimum at the resume point.
    assert_eq!(store.resume_position(3).await.unwrap(), Some(12));
    sink.write(&[at("e", 30, 0), at("f", 31, 1)]).await;
    assert_eq!(store.resume_position(3).await.unwrap(), Some(12));
}

#[test]
fn value_sources_parse() {
    assert_eq!(
        "$header.tenant".parse::<ValueSource>().unwrap(),
        ValueSource::Header("tenant".into())
    );
    assert!("amount".parse::<ValueSource>().is_err());
    assert!(Ident::new("x; DROP TABLE y").is_err());
}

#[tokio::test]
async fn tombstones_keep_deleted_entities_deleted_on_sqlite_too() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("out.db")).await.unwrap();
    let mut spec = (*spec(
        WriteMode::Upsert {
            version: Some(Ident::new("version").unwrap()),
            tombstone: Some(Ident::new("deleted").unwrap()),
        },
        true,
    ))
    .clone();
    spec.columns.push(Column {
        name: Ident::new("deleted").unwrap(),
        ty: ColumnType::Boolean,
        from: ValueSource::Equals {
            pointer: "/op".into(),
            value: "delete".into(),
        },
        required: false,
    });
    let sink = SqliteWriter::new(pool.clone(), Arc::new(spec), None)
        .await
        .unwrap()
        .into_sink("items");
    let delete = |id: &str, v: i64| {
        Message::from_json(serde_json::json!({"id": id, "version": v, "op": "delete"}))
    };
    // Delete first, then the older update arrives late; an equal-version update loses too.
    for batch in [
        vec![delete("a", 3)],
        vec![msg("a", 1.0, 2), msg("a", 5.0, 3)],
        vec![msg("b", 1.0, 1), delete("b", 2), msg("b", 9.0, 2)],
        vec![msg("c", 1.0, 1), delete("c", 2), msg("c", 7.0, 3)],
    ] {
        assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);
    }
    let rows = sqlx::query("SELECT id, amount, version, deleted FROM items ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let got: Vec<(String, Option<f64>, i64, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), None, 3, true),
            ("b".into(), None, 2, true),
            ("c".into(), Some(7.0), 3, false),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_share_commits_and_a_refused_row_stays_alone() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("out.db")).await.unwrap();
    sqlx::query("CREATE TABLE items (id TEXT PRIMARY KEY, amount REAL CHECK (amount >= 0), version INTEGER)")
        .execute(&pool)
        .await
        .unwrap();
    let sink = Arc::new(
        SqliteWriter::new(pool.clone(), spec(WriteMode::Insert, false), None)
            .await
            .unwrap()
            .into_sink("items"),
    );
    let writes = (0..8).map(|w| {
        let sink = sink.clone();
        tokio::spawn(async move {
            let batch: Vec<Message> = (0..100)
                .map(|i| {
                    msg(
                        &format!("w{w}-{i}"),
                        if w == 5 && i == 42 { -1.0 } else { i as f64 },
                        1,
                    )
                })
                .collect();
            sink.write(&batch).await
        })
    });
    let mut refused = 0;
    for w in writes {
        match w.await.unwrap() {
            BatchOutcome::Committed => {}
            BatchOutcome::Each(o) => refused += o.iter().filter(|o| !o.is_ok()).count(),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 1);
    assert_eq!(count(&pool).await, 799);
}
