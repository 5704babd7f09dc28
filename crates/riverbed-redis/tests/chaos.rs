//! Redis down makes writes unavailable (waited out, no attempt used up), never lost. (The
//! ledger chaos run, PostgreSQL and Redis together, is in the daemon crate, which joins them.)
//! These tests restart services: they hold the service lock exclusively.

mod support;

use std::time::Duration;

use riverbed_core::{BatchOutcome, Message, Outcome, Sink};
use riverbed_redis::{Amount, DedupConfig, HashIncrConfig, HashIncrSink};
use support::*;

#[tokio::test]
async fn increments_while_redis_is_down_are_unavailable_and_counted_once_after() {
    if !services_available() {
        return;
    }
    let _exclusive = redis_lock(true).await;
    let prefix = unique("down");
    let sink = HashIncrSink::from_config(
        "counters",
        &HashIncrConfig {
            redis: redis_config(),
            key: format!("{prefix}:sum"),
            field: "/provider".into(),
            amount: "/cents".into(),
            kind: Amount::Integer,
            dedup: DedupConfig {
                prefix: Some(format!("{prefix}:seen:")),
                ..DedupConfig::default()
            },
        },
    )
    .await
    .unwrap();
    let batch: Vec<Message> = (0..50)
        .map(|i| {
            let mut m = Message::from_json(serde_json::json!({"provider": "acme", "cents": i}));
            m.meta.message_id = Some(format!("m{i}"));
            m
        })
        .collect();
    assert_eq!(sink.write(&batch[..10]).await, BatchOutcome::Committed);
    let redis_down = stop_redis();
    let down = tokio::time::timeout(Duration::from_secs(20), sink.write(&batch))
        .await
        .unwrap();
    assert!(
        (0..50).all(|i| matches!(down.get(i), Outcome::Unavailable(_))),
        "{down:?}"
    );
    redis_down.start();
    // Redis came back empty (no persistence): the retry counts everything once, the 10 that
    // were counted before the restart included (their markers went with the counter).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match sink.write(&batch).await {
            BatchOutcome::Committed => break,
            other => assert!(tokio::time::Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);
    let sum: i64 = redis::cmd("HGET")
        .arg(format!("{prefix}:sum"))
        .arg("acme")
        .query_async(&mut redis().await)
        .await
        .unwrap();
    assert_eq!(sum, (0..50).sum::<i64>());
    delete_prefix(&prefix).await;
}
