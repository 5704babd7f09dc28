//! Resuming from stored offsets: a crash during the first run before every partition has
//! committed must not skip the slow partitions' messages; partitions that receive nothing must
//! not hold the resume point back (the source's settled position moves them).

mod support;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use riverbed_core::testing::{Journal, MemoryDeadLetters, MemorySource, numbered_messages};
use riverbed_core::{BatchOutcome, KeySpec, Message, Pipeline, Sink};
use riverbed_sql::{
    Column, ColumnType, Ident, InsertStyle, OffsetStore, PostgresWriter, SqliteWriter, TableSpec,
    TrackSettled, ValueSource, WriteMode, sqlite_pool,
};
use support::*;

fn spec(table: &str) -> Arc<TableSpec> {
    let col = |name: &str, from: ValueSource| Column {
        name: Ident::new(name).unwrap(),
        ty: ColumnType::Integer,
        from,
        required: true,
    };
    Arc::new(TableSpec {
        table: vec![Ident::new(table).unwrap()],
        columns: vec![
            col("id", ValueSource::Pointer("/id".into())),
            col("pos", ValueSource::Position),
        ],
        key: vec![Ident::new("id").unwrap()],
        mode: WriteMode::Insert,
        create: true,
    })
}

/// Message `id` at stream position `id`, handled by `partition`.
fn at(id: u64, partition: u32) -> Message {
    let mut m = Message::from_json(serde_json::json!({ "id": id }));
    m.meta.position = Some(id);
    m.meta.partition = partition;
    m
}

/// The first run: partition 0 commits up to 100 while partition 1 still holds 50..=89 in
/// flight; then the process dies. The restart must not resume after 100.
async fn first_run_crash(sink: &dyn Sink, store: &OffsetStore) {
    assert_eq!(store.resume_position(2).await.unwrap(), None, "first start");
    let batch: Vec<Message> = (90..=100).map(|i| at(i, 0)).collect();
    assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);
    // Crash. Partition 1 never committed: start again from the configured start.
    assert_eq!(store.resume_position(2).await.unwrap(), None);
    let batch: Vec<Message> = (50..=60).map(|i| at(i, 1)).collect();
    assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);
    assert_eq!(store.resume_position(2).await.unwrap(), Some(60));
}

#[tokio::test]
async fn a_first_run_crash_before_every_partition_committed_skips_nothing_on_postgres() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let (table, consumer) = (unique("resumed"), unique("consumer"));
    let sink = PostgresWriter::new(
        pool.clone(),
        spec(&table),
        Some(&consumer),
        Default::default(),
    )
    .await
    .unwrap()
    .into_sink("resumed");
    let store = OffsetStore::postgres(pool.clone(), &consumer)
        .await
        .unwrap();
    first_run_crash(&sink, &store).await;
    delete_offsets(&pool, &consumer).await;
    drop_tables(&pool, &[&table]).await;
}

#[tokio::test]
async fn a_first_run_crash_before_every_partition_committed_skips_nothing_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("out.db")).await.unwrap();
    let sink = SqliteWriter::new(pool.clone(), spec("resumed"), Some("svc"))
        .await
        .unwrap()
        .into_sink("resumed");
    let store = OffsetStore::sqlite(pool, "svc").await.unwrap();
    first_run_crash(&sink, &store).await;
}

#[tokio::test]
async fn partitions_that_receive_nothing_do_not_hold_the_resume_point() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let (table, consumer) = (unique("idle"), unique("consumer"));
    let store = OffsetStore::postgres(pool.clone(), &consumer)
        .await
        .unwrap();
    assert_eq!(store.resume_position(4).await.unwrap(), None);
    // One key: one partition of four receives everything.
    let mut messages = numbered_messages(200, 1);
    for (i, m) in messages.iter_mut().enumerate() {
        m.meta.position = Some(1000 + i as u64);
    }
    let (source, settled) = TrackSettled::new(MemorySource::new(messages, Journal::default()));
    let sink = PostgresWriter::new(
        pool.clone(),
        spec(&table),
        Some(&consumer),
        InsertStyle::Unnest,
    )
    .await
    .unwrap()
    .into_sink("idle")
    .with_settled(settled.clone());
    let pipeline = Pipeline::builder()
        .source(source)
        .partitions(NonZeroUsize::new(4).unwrap())
        .key(KeySpec::JsonPointer("/key".into()))
        .sink("idle", sink)
        .dead_letters(Arc::new(MemoryDeadLetters::new(Journal::default())))
        .build()
        .unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        pipeline.run(std::future::pending()),
    )
    .await
    .expect("the pipeline drains within 30s")
    .unwrap();
    assert!(report.drained && report.exhausted, "{report:?}");
    assert_eq!(settled.get(), Some(1199));
    // Without the settled position, the three idle partitions would still say "nothing".
    assert_eq!(store.resume_position(4).await.unwrap(), Some(1199));
    delete_offsets(&pool, &consumer).await;
    drop_tables(&pool, &[&table]).await;
}

async fn delete_offsets(pool: &sqlx::PgPool, consumer: &str) {
    sqlx::query("DELETE FROM riverbed_offsets WHERE consumer = $1")
        .bind(consumer)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stored_position_never_passes_a_message_whose_dead_letter_is_not_stored() {
    use riverbed_core::testing::MemorySink;
    use riverbed_core::{Failure, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("out.db")).await.unwrap();
    let mut messages = numbered_messages(200, 1);
    for (i, m) in messages.iter_mut().enumerate() {
        m.meta.position = Some(1000 + i as u64);
    }
    let (source, settled) = TrackSettled::new(MemorySource::new(messages, Journal::default()));
    let store = OffsetStore::sqlite(pool.clone(), "svc").await.unwrap();
    assert_eq!(store.resume_position(1).await.unwrap(), None, "first start");
    // The table commits everything; another sink refuses m50 (position 1050), whose dead
    // letter cannot be stored (the dead-letter queue is down).
    let table = SqliteWriter::new(pool.clone(), spec("rows"), Some("svc"))
        .await
        .unwrap()
        .into_sink("rows")
        .with_settled(settled.clone());
    let picky = MemorySink::failing("picky", Journal::default(), |m, _| {
        if m.meta.message_id.as_deref() == Some("m50") {
            Outcome::Permanent(Failure::rejected("no"))
        } else {
            Outcome::Ok
        }
    });
    let rows = pool.clone();
    let all_written = async move {
        loop {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rows")
                .fetch_one(&rows)
                .await
                .unwrap_or(0);
            if n == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        Pipeline::builder()
            .source(source)
            .partitions(NonZeroUsize::new(1).unwrap())
            .key(KeySpec::JsonPointer("/key".into()))
            .sink("rows", table)
            .sink("picky", picky)
            .dead_letters(Arc::new(
                MemoryDeadLetters::new(Journal::default()).failing_first(u32::MAX),
            ))
            .shutdown_grace(Duration::from_millis(500))
            .build()
            .unwrap()
            .run(all_written),
    )
    .await
    .expect("the pipeline stops")
    .unwrap();
    assert!(!report.drained, "m50's dead letter was never stored");
    assert_eq!(settled.get(), Some(1049));
    let resume = store.resume_position(1).await.unwrap();
    assert!(
        resume.is_some_and(|p| p < 1050),
        "a restart must read m50 again, not resume after {resume:?}"
    );
}

#[tokio::test]
async fn a_sink_that_is_never_written_still_raises_its_stored_rows_to_the_settled_position() {
    use riverbed_core::{Settled, Settlement, Source};
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("out.db")).await.unwrap();
    let store = OffsetStore::sqlite(pool.clone(), "side").await.unwrap();
    assert_eq!(store.resume_position(2).await.unwrap(), None, "first start");
    let mut messages = numbered_messages(5, 1);
    for (i, m) in messages.iter_mut().enumerate() {
        m.meta.position = Some(500 + i as u64);
    }
    let (mut source, settled) = TrackSettled::new(MemorySource::new(messages, Journal::default()));
    // The sink reads a side stream that had nothing yet: it is never written to.
    let _sink = SqliteWriter::new(pool.clone(), spec("side"), Some("side"))
        .await
        .unwrap()
        .into_sink("side")
        .with_settled(settled.clone());
    let mut out = Vec::new();
    while out.len() < 5 {
        source.recv(&mut out, 5).await.unwrap();
    }
    let acks = out.iter().map(|d| Settled {
        token: d.token,
        settlement: Settlement::Ack,
        message: None,
    });
    source.acker().settle(acks.collect());
    assert_eq!(settled.get(), Some(504));
    // No write and no close (a crash comes next): the rows still move within seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lowest: i64 = sqlx::query_scalar(
            "SELECT min(\"position\") FROM riverbed_offsets WHERE consumer = 'side'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if lowest == 504 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stored rows still say {lowest}: a restart would skip what was in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.resume_position(2).await.unwrap(), Some(504));
}
