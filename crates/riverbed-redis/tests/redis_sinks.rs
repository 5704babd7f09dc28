//! The Redis sinks against the real Redis: redelivery never double counts, a refused message
//! is isolated, the latest state wins under shuffled order. (Totals taken from PostgreSQL are
//! tested in the daemon crate, which joins the two connectors.)

mod support;

use std::collections::HashMap;

use riverbed_core::{BatchOutcome, Message, Outcome, Sink};
use riverbed_redis::{
    Amount, DedupConfig, DeleteConfig, HashIncrConfig, HashIncrSink, LatestConfig, LatestSink,
};
use support::*;

fn hash_incr_config(prefix: &str, dedup: bool) -> HashIncrConfig {
    HashIncrConfig {
        redis: redis_config(),
        key: format!("{prefix}:by_provider"),
        field: "/provider".into(),
        amount: "/cents".into(),
        kind: Amount::Integer,
        dedup: DedupConfig {
            enabled: dedup,
            prefix: Some(format!("{prefix}:seen:")),
            ..DedupConfig::default()
        },
    }
}

fn payment(i: u64) -> Message {
    let mut m = Message::from_json(
        serde_json::json!({"id": format!("tx-{i}"), "provider": format!("p{}", i % 5), "cents": i * 3 + 1}),
    );
    m.meta.message_id = Some(format!("tx-{i}"));
    m
}

async fn hash(key: &str) -> HashMap<String, i64> {
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut redis().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn redelivered_increments_are_never_counted_twice() {
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    let prefix = unique("incr");
    let sink = HashIncrSink::from_config("counters", &hash_incr_config(&prefix, true))
        .await
        .unwrap();
    let mut deliveries: Vec<Message> = (0..500).map(payment).collect();
    deliveries.extend((0..500).step_by(3).map(payment));
    deliveries.extend((100..300).map(payment));
    shuffle(&mut deliveries, 11);
    for chunk in deliveries.chunks(37) {
        assert_eq!(sink.write(chunk).await, BatchOutcome::Committed);
    }
    let mut want: HashMap<String, i64> = HashMap::new();
    for i in 0..500u64 {
        *want.entry(format!("p{}", i % 5)).or_default() += (i * 3 + 1) as i64;
    }
    assert_eq!(hash(&format!("{prefix}:by_provider")).await, want);
    // Without the guard the same redelivery is counted again: the guard is what prevents it.
    let plain = HashIncrSink::from_config("plain", &hash_incr_config(&format!("{prefix}x"), false))
        .await
        .unwrap();
    plain.write(&[payment(1), payment(1)]).await;
    assert_eq!(hash(&format!("{prefix}x:by_provider")).await["p1"], 8);
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn a_refused_increment_is_isolated_from_its_batch() {
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    let prefix = unique("wrongtype");
    let mut c = redis().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:by_provider"))
        .arg("a string")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut config = hash_incr_config(&prefix, true);
    config.key = format!("{prefix}:{{/provider}}");
    let sink = HashIncrSink::from_config("counters", &config)
        .await
        .unwrap();
    let mut batch: Vec<Message> = (0..40).map(payment).collect();
    // Message 17 targets the string key: WRONGTYPE, permanent, for it alone.
    batch[17] = {
        let mut m = Message::from_json(serde_json::json!({"provider": "by_provider", "cents": 1}));
        m.meta.message_id = Some("bad".into());
        m
    };
    batch[23] = Message::from_json(serde_json::json!({"provider": "p1", "cents": "ten"}));
    let outcome = sink.write(&batch).await;
    let refused: Vec<usize> = (0..40).filter(|i| !outcome.get(*i).is_ok()).collect();
    assert_eq!(refused, vec![17, 23]);
    let Outcome::Permanent(f) = outcome.get(17) else {
        panic!("{outcome:?}")
    };
    assert!(f.error.contains("WRONGTYPE"), "{}", f.error);
    // The rest was counted once, even though the split re-ran some of the batch.
    let mut total = 0;
    for p in 0..5 {
        total += hash(&format!("{prefix}:p{p}")).await.values().sum::<i64>();
    }
    let want: i64 = (0..40u64)
        .filter(|i| *i != 17 && *i != 23)
        .map(|i| (i * 3 + 1) as i64)
        .sum();
    assert_eq!(total, want);
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn the_latest_state_wins_under_shuffled_redelivery_and_tombstones_stay() {
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    let prefix = unique("latest");
    let sink = LatestSink::from_config(
        "accounts",
        &LatestConfig {
            redis: redis_config(),
            key: format!("{prefix}:{{/id}}"),
            version: "/version".into(),
            value: Some("/balance".into()),
            delete: Some(DeleteConfig {
                field: "/op".into(),
                value: "delete".into(),
            }),
        },
    )
    .await
    .unwrap();
    // 100 entities x 10 versions; every fourth is deleted at version 10.
    let mut updates = Vec::new();
    for e in 0..100 {
        for v in 1..=10 {
            let body = if e % 4 == 0 && v == 10 {
                serde_json::json!({"id": e, "version": v, "op": "delete"})
            } else {
                serde_json::json!({"id": e, "version": v, "balance": e * 1000 + v})
            };
            updates.push(Message::from_json(body));
        }
    }
    let again = updates.clone();
    updates.extend(again);
    shuffle(&mut updates, 3);
    for chunk in updates.chunks(50) {
        assert_eq!(sink.write(chunk).await, BatchOutcome::Committed);
    }
    // A late, older update after the delete.
    sink.write(&[Message::from_json(
        serde_json::json!({"id": 0, "version": 9, "balance": 1}),
    )])
    .await;
    let mut c = redis().await;
    for e in 0..100 {
        let state: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{prefix}:{e}"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(state["version"], "10", "entity {e}");
        if e % 4 == 0 {
            assert_eq!((state.get("value"), state["deleted"].as_str()), (None, "1"));
        } else {
            assert_eq!(state["value"], (e * 1000 + 10).to_string());
            assert_eq!(state["deleted"], "0");
        }
    }
    delete_prefix(&prefix).await;
}
