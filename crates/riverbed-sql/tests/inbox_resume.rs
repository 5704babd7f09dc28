//! A stream resumes after what an inbox sink committed: the positions it stores in the inbox's
//! transaction are found under the sink's `offsets` name, not only its inbox `consumer`.

mod support;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use riverbed_core::testing::{Journal, MemoryDeadLetters, MemorySource, numbered_messages};
use riverbed_core::{KeySpec, Pipeline};
use riverbed_sql::{OffsetStore, PostgresSinkConfig};
use support::*;

#[tokio::test]
async fn a_stream_resumes_after_the_positions_an_inbox_sink_stored() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let (table, offsets, inbox) = (unique("inboxed"), unique("offsets"), unique("inbox"));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"{table}\" (id BIGINT PRIMARY KEY)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let config: PostgresSinkConfig = toml::from_str(&format!(
        r#"
        mode = "inbox"
        statement = 'INSERT INTO "{table}" (id) VALUES (:id)'
        params = [{{ name = "id", type = "integer", from = "/id", required = true }}]
        offsets = "{offsets}"
        consumer = "{inbox}"
        [connection]
        url = "{PG_URL}"
        "#
    ))
    .unwrap();
    let store = OffsetStore::postgres(pool.clone(), &offsets).await.unwrap();
    assert_eq!(store.resume_position(1).await.unwrap(), None, "first start");
    let mut messages = numbered_messages(20, 1);
    for (i, m) in messages.iter_mut().enumerate() {
        m.meta.position = Some(1000 + i as u64);
    }
    let sink = config.build_with("inboxed", None).await.unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        Pipeline::builder()
            .source(MemorySource::new(messages, Journal::default()))
            .partitions(NonZeroUsize::new(1).unwrap())
            .key(KeySpec::JsonPointer("/key".into()))
            .sink_with("inboxed", "main", sink, None)
            .dead_letters(Arc::new(MemoryDeadLetters::new(Journal::default())))
            .build()
            .unwrap()
            .run(std::future::pending()),
    )
    .await
    .expect("the pipeline drains within 30s")
    .unwrap();
    assert_eq!(report.stats.acked, 20, "{report:?}");
    let resume = store.resume_position(1).await.unwrap();
    for sql in [
        "DELETE FROM riverbed_offsets WHERE consumer = $1 OR consumer = $2",
        "DELETE FROM riverbed_inbox WHERE consumer = $1 OR consumer = $2",
    ] {
        sqlx::query(sql)
            .bind(&offsets)
            .bind(&inbox)
            .execute(&pool)
            .await
            .unwrap();
    }
    drop_tables(&pool, &[&table]).await;
    assert_eq!(
        resume,
        Some(1019),
        "a restart must resume after the inbox's last committed position"
    );
}
